//! What a worker runs: a task function with its argument, a byte task with its copied
//! input, or a chunk of map items; and the outcome it leaves in the future.

use super::{
    context::{UserError, call_each, call_task},
    map::Items,
    shared::{try_box, try_cstring},
};
use crate::status::{CF_NO_MEMORY, CF_TASK_FAILED, cf_status};
use std::{
    ffi::{CStr, CString, c_char, c_int, c_void},
    ops::Deref,
};

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

/// The message of an error outcome when memory ran out while recording the outcome
/// (see `Outcome::Degraded`).
pub(crate) const NO_MEMORY_MESSAGE: &CStr =
    c"cfutures: out of memory while recording this outcome (the original message, if any, is lost)";

/// The message of a `cf_raise` whose message could not be copied for lack of memory.
pub(crate) const RAISE_NO_MEMORY_MESSAGE: &CStr =
    c"cfutures: out of memory while copying the cf_raise message (the message is lost)";

/// An error message: a copy the library owns, or a fixed text of its own (used when
/// memory runs out, so that no allocation is needed).
#[derive(Clone, Debug)]
pub(crate) enum Message {
    Owned(CString),
    Static(&'static CStr),
}

impl Deref for Message {
    type Target = CStr;

    fn deref(&self) -> &CStr {
        match self {
            Message::Owned(s) => s,
            Message::Static(s) => s,
        }
    }
}

impl From<CString> for Message {
    fn from(s: CString) -> Message {
        Message::Owned(s)
    }
}

impl Message {
    /// The bytes without the terminating NUL.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        self.to_bytes()
    }
}

/// Why a future failed: `CF_TASK_FAILED` or `CF_BROKEN`, with the task's code and message.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) status: cf_status,
    pub(crate) code: c_int,
    pub(crate) message: Option<Message>,
}

impl Failure {
    /// A failure with a message of our own (aborts when memory runs out: for the process
    /// pools' supervision, see `Outcome::failed` for the fallible form).
    pub(crate) fn new(status: cf_status, code: c_int, message: &str) -> Box<Failure> {
        Box::new(Failure {
            status,
            code,
            message: CString::new(message.replace('\0', " "))
                .ok()
                .map(Message::Owned),
        })
    }

    fn from_user(e: UserError) -> Outcome {
        match e {
            UserError::Raised(r) => Outcome::failed_with(CF_TASK_FAILED, r.code, r.message),
            UserError::Unwound => Outcome::failed(
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
    /// An error outcome that could not be recorded in full because memory ran out: the
    /// status and code are kept (`CF_TASK_FAILED` or `CF_BROKEN` with the task's code, or
    /// `CF_NO_MEMORY` with `ENOMEM` when a result could not be stored), the message is
    /// `NO_MEMORY_MESSAGE`. Needs no allocation, so a future always finishes.
    Degraded(cf_status, c_int),
}

impl Outcome {
    /// The outcome for a result that could not be stored for lack of memory.
    pub(crate) fn no_memory() -> Outcome {
        Outcome::Degraded(CF_NO_MEMORY, libc::ENOMEM)
    }

    /// A failure with a message of our own; `Degraded` when memory runs out.
    pub(crate) fn failed(status: cf_status, code: c_int, message: &str) -> Outcome {
        match try_cstring(message.as_bytes()) {
            Some(m) => Outcome::failed_with(status, code, Some(Message::Owned(m))),
            None => Outcome::Degraded(status, code),
        }
    }

    /// A failure with the given message; `Degraded` when memory runs out.
    pub(crate) fn failed_with(status: cf_status, code: c_int, message: Option<Message>) -> Outcome {
        match try_box(Failure {
            status,
            code,
            message,
        }) {
            Ok(f) => Outcome::Failed(f),
            Err(_) => Outcome::Degraded(status, code),
        }
    }

    /// An error outcome's status, code and message (NULL if none; owned by the outcome or
    /// static); `None` for a value.
    pub(crate) fn error(&self) -> Option<(cf_status, c_int, *const c_char)> {
        match self {
            Outcome::Failed(e) => Some((e.status, e.code, e.message_ptr())),
            Outcome::Degraded(status, code) => Some((*status, *code, NO_MEMORY_MESSAGE.as_ptr())),
            _ => None,
        }
    }
}

impl Failure {
    /// The message as a C string (NULL if none), owned by the failure.
    pub(crate) fn message_ptr(&self) -> *const c_char {
        self.message
            .as_deref()
            .map_or(std::ptr::null(), CStr::as_ptr)
    }
}

/// `v` as a boxed slice without a reallocation that could abort: a vector with spare
/// room is copied into an exact one instead of shrunk. `None` when memory runs out.
fn exact<T>(mut v: Vec<T>) -> Option<Box<[T]>> {
    if v.len() == v.capacity() {
        return Some(v.into_boxed_slice());
    }
    let mut e = Vec::new();
    e.try_reserve_exact(v.len()).ok()?;
    e.append(&mut v);
    Some(e.into_boxed_slice())
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
        Err(e) => Failure::from_user(e),
    }
}

fn run_bytes(f: BytesFn, input: &[u8]) -> Outcome {
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
        Err(e) => Failure::from_user(e),
    }
}

impl Task {
    /// Runs the task on the current thread and returns its outcome. Never aborts for
    /// lack of memory: what cannot be recorded becomes `Outcome::Degraded`.
    pub(crate) fn run(self) -> Outcome {
        match self {
            Task::Call(f, arg) => run_call(f, arg),
            Task::Bytes(f, input) => run_bytes(f, &input),
            Task::Chunk(chunk) => match *chunk {
                Chunk::Calls(f, args) => {
                    // One task context for the whole chunk: the per-item cost is the call
                    // itself and one check of whether it raised. The room is made first,
                    // so that the pushes never allocate.
                    let mut values = Vec::new();
                    if values.try_reserve_exact(args.len()).is_err() {
                        return Outcome::no_memory();
                    }
                    let failed = call_each(&args, |&arg| {
                        // SAFETY: as for `run_call`.
                        values.push(unsafe { f(arg) });
                    });
                    let failure = match failed {
                        None => None,
                        Some(e) => {
                            if matches!(e, UserError::Raised(_)) {
                                values.pop(); // the failed item's return value, ignored
                            }
                            match Failure::from_user(e) {
                                Outcome::Failed(b) => Some(b),
                                degraded => return degraded,
                            }
                        }
                    };
                    let Some(values) = exact(values) else {
                        return Outcome::no_memory();
                    };
                    match try_box(Values { values, failure }) {
                        Ok(v) => Outcome::Values(v),
                        Err(_) => Outcome::no_memory(),
                    }
                }
                Chunk::Bytes(f, inputs) => {
                    let mut out = Vec::new();
                    if out.try_reserve_exact(inputs.len()).is_err() {
                        return Outcome::no_memory();
                    }
                    for input in inputs.iter() {
                        let o = run_bytes(f, input);
                        let stop = o.error().is_some();
                        out.push(o);
                        if stop {
                            break;
                        }
                    }
                    match exact(out) {
                        Some(items) => Outcome::Chunk(items),
                        None => Outcome::no_memory(),
                    }
                }
            },
        }
    }
}

/// The tasks of a map: one per item when `chunksize` is 0 or 1, else one per chunk of
/// `chunksize` items. `None` when memory runs out (then nothing was submitted; the items
/// are dropped).
pub(crate) fn tasks_of(items: Items, chunksize: usize) -> Option<Vec<Task>> {
    let chunksize = chunksize.max(1);
    let n = match &items {
        Items::Calls(_, v) => v.len(),
        Items::Bytes(_, v) => v.len(),
    };
    let mut tasks = Vec::new();
    tasks.try_reserve_exact(n.div_ceil(chunksize)).ok()?;
    match items {
        Items::Calls(f, args) if chunksize == 1 => {
            tasks.extend(args.into_iter().map(|a| Task::Call(f, a)));
        }
        Items::Bytes(f, inputs) if chunksize == 1 => {
            tasks.extend(inputs.into_iter().map(|i| Task::Bytes(f, i)));
        }
        Items::Calls(f, args) => {
            for c in args.chunks(chunksize) {
                let mut copy = Vec::new();
                copy.try_reserve_exact(c.len()).ok()?;
                copy.extend_from_slice(c);
                let chunk = try_box(Chunk::Calls(f, copy.into_boxed_slice())).ok()?;
                tasks.push(Task::Chunk(chunk));
            }
        }
        Items::Bytes(f, inputs) => {
            let mut it = inputs.into_iter();
            while it.len() > 0 {
                let mut c = Vec::new();
                c.try_reserve_exact(chunksize.min(it.len())).ok()?;
                c.extend(it.by_ref().take(chunksize));
                let chunk = try_box(Chunk::Bytes(f, c.into_boxed_slice())).ok()?;
                tasks.push(Task::Chunk(chunk));
            }
        }
    }
    Some(tasks)
}
