//! What a worker runs: a task function with its argument, a byte task with its copied
//! input, or a chunk of map items; and the outcome it leaves in the future.

use super::context::{UserError, call_each, call_task};
use crate::status::{CF_TASK_FAILED, cf_status};
use std::ffi::{CString, c_int, c_void};

/// `cf_fn`: a task taking and returning a pointer-sized value.
pub(crate) type TaskFn = unsafe extern "C-unwind" fn(arg: *mut c_void) -> *mut c_void;
/// `cf_bytes_fn`: a byte task.
pub(crate) type BytesFn = unsafe extern "C-unwind" fn(
    input: *const c_void,
    in_len: usize,
    out_len: *mut usize,
) -> *mut c_void;

/// A unit of work waiting in a future until a worker starts it.
pub(crate) enum Task {
    /// `fn(arg)`; the result is the returned pointer.
    Call(TaskFn, *mut c_void),
    /// `fn(input)` on a private copy of the caller's bytes.
    Bytes(BytesFn, Box<[u8]>),
    /// Several map items run one after the other by one worker.
    Chunk(Box<Chunk>),
}

/// The items of one map chunk.
pub(crate) enum Chunk {
    /// Pointer-value items.
    Calls(TaskFn, Box<[*mut c_void]>),
    /// Byte items.
    Bytes(BytesFn, Box<[Box<[u8]>]>),
}

/// A buffer from C's `malloc` that the library owns and frees with `free`.
#[derive(Debug)]
pub(crate) struct MallocBuf {
    pub(crate) ptr: *mut c_void,
    pub(crate) len: usize,
}

impl Drop for MallocBuf {
    fn drop(&mut self) {
        if !self.ptr.is_null() {
            // SAFETY: the task handed us a `malloc` buffer (the contract) and we free it
            // exactly once, here.
            unsafe { libc::free(self.ptr) }
        }
    }
}

/// Why a future failed: `CF_TASK_FAILED` or `CF_BROKEN`, with the task's code and message.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) status: cf_status,
    pub(crate) code: c_int,
    pub(crate) message: Option<CString>,
}

impl Failure {
    /// A failure with a message of our own.
    pub(crate) fn new(status: cf_status, code: c_int, message: &str) -> Box<Failure> {
        Box::new(Failure {
            status,
            code,
            message: CString::new(message.replace('\0', " ")).ok(),
        })
    }

    fn from_user(e: UserError) -> Box<Failure> {
        match e {
            UserError::Raised(r) => Box::new(Failure {
                status: CF_TASK_FAILED,
                code: r.code,
                message: r.message,
            }),
            UserError::Unwound => Failure::new(
                CF_TASK_FAILED,
                0,
                "the task unwound (a panic or a C++ exception escaped it)",
            ),
        }
    }
}

/// How a finished future ended.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// A task's or promise's pointer result.
    Value(*mut c_void),
    /// A byte task's result buffer.
    Bytes(MallocBuf),
    /// `CF_TASK_FAILED` or `CF_BROKEN`.
    Failed(Box<Failure>),
    /// One outcome per map item of a chunk, in order; it stops at the first failed item.
    Chunk(Box<[Outcome]>),
    /// A chunk of pointer-value map items: their values in order, then, if one failed,
    /// its failure (the items after it did not run). Contiguous, so that reading a chunk
    /// back costs an array index per item.
    Values(Box<Values>),
}

/// See `Outcome::Values`.
#[derive(Debug)]
pub(crate) struct Values {
    pub(crate) values: Box<[*mut c_void]>,
    pub(crate) failure: Option<Box<Failure>>,
}

fn run_call(f: TaskFn, arg: *mut c_void) -> Outcome {
    // SAFETY: `f` is the caller's task function; the contract makes calling it with its
    // `arg` the caller's responsibility.
    match call_task(|| unsafe { f(arg) }) {
        Ok(value) => Outcome::Value(value),
        Err(e) => Outcome::Failed(Failure::from_user(e)),
    }
}

pub(crate) fn run_bytes(f: BytesFn, input: &[u8]) -> Outcome {
    let mut out_len: usize = 0;
    let in_ptr: *const c_void = if input.is_empty() {
        std::ptr::null()
    } else {
        input.as_ptr().cast()
    };
    let mut returned: *mut c_void = std::ptr::null_mut();
    // SAFETY: as for `run_call`; `in_ptr` points at `input.len()` readable bytes (or is
    // NULL for none) and `out_len` is a valid place for the task to write.
    let result = call_task(|| unsafe {
        returned = f(in_ptr, input.len(), &mut out_len);
    });
    // The library takes the buffer over whatever happens, so it is freed exactly once.
    let len = if returned.is_null() { 0 } else { out_len };
    let buf = MallocBuf { ptr: returned, len };
    match result {
        Ok(()) => Outcome::Bytes(buf),
        Err(e) => Outcome::Failed(Failure::from_user(e)),
    }
}

impl Task {
    /// Runs the task on the current thread and returns its outcome.
    pub(crate) fn run(self) -> Outcome {
        match self {
            Task::Call(f, arg) => run_call(f, arg),
            Task::Bytes(f, input) => run_bytes(f, &input),
            Task::Chunk(chunk) => {
                let mut out = Vec::with_capacity(chunk.len());
                match *chunk {
                    Chunk::Calls(f, args) => {
                        // One task context for the whole chunk: the per-item cost is the
                        // call itself and one check of whether it raised.
                        let mut values = Vec::with_capacity(args.len());
                        let failed = call_each(&args, |&arg| {
                            // SAFETY: as for `run_call`.
                            values.push(unsafe { f(arg) });
                        });
                        let failure = failed.map(|e| {
                            if matches!(e, UserError::Raised(_)) {
                                values.pop(); // the failed item's return value, ignored
                            }
                            Failure::from_user(e)
                        });
                        return Outcome::Values(Box::new(Values {
                            values: values.into_boxed_slice(),
                            failure,
                        }));
                    }
                    Chunk::Bytes(f, inputs) => {
                        for input in inputs.iter() {
                            out.push(run_bytes(f, input));
                            if matches!(out.last(), Some(Outcome::Failed(_))) {
                                break;
                            }
                        }
                    }
                }
                Outcome::Chunk(out.into_boxed_slice())
            }
        }
    }
}

impl Chunk {
    /// How many items the chunk holds.
    pub(crate) fn len(&self) -> usize {
        match self {
            Chunk::Calls(_, a) => a.len(),
            Chunk::Bytes(_, a) => a.len(),
        }
    }
}
