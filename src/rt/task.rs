//! What a worker runs: a task function with its argument, a byte task with its copied
//! input, or a chunk of map items; and the outcome it leaves in the future.

use super::{
    context::{UserError, call_each, call_task},
    map::Items,
    shared::{Shared, try_box, try_cstring},
};
use crate::status::{CF_NO_MEMORY, CF_TASK_FAILED, cf_status};
use std::{
    ffi::{CStr, CString, c_char, c_int, c_void},
    ops::Deref,
    ptr::NonNull,
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
    /// `fn(input)` on a private copy of the caller's bytes (a `malloc` buffer, so that a
    /// process pool can return the task's result in it, see `process::wire::recv_outcome`).
    Bytes(BytesFn, MallocBuf),
    /// A chunk of pointer map items, run one after the other by one worker. Each value
    /// is written over its item, and the box itself becomes the outcome
    /// (`Outcome::Values`): a chunk costs one allocation, made and freed by the thread
    /// that runs the map, beside its future.
    Calls(TaskFn, Box<Values>),
    /// A chunk of byte map items, run one after the other by one worker.
    ByteChunk(BytesFn, Box<[MallocBuf]>),
    /// A call or byte task with free functions or a deadline (`cf_submit_task`).
    Owned(Box<super::owned::OwnedTask>),
    /// A continuation, `fn(arg, antecedent)` (`cf_future_then`); thread pools only.
    Then(Shared<super::then::ThenLink>),
}

/// A buffer from C's `malloc` that the library owns and frees with `free`.
#[derive(Debug)]
pub(crate) struct MallocBuf {
    pub(crate) ptr: *mut c_void,
    pub(crate) len: usize,
}

impl MallocBuf {
    /// No buffer (NULL, 0).
    pub(crate) const fn empty() -> MallocBuf {
        MallocBuf {
            ptr: std::ptr::null_mut(),
            len: 0,
        }
    }

    /// A new `malloc` buffer of `len` (> 0) bytes, not yet written, its pages populated
    /// first when large (`populate_for_write`): the caller writes all of it next. `None`
    /// when memory runs out.
    pub(crate) fn for_write(len: usize) -> Option<MallocBuf> {
        // SAFETY: plain allocation; checked for NULL.
        let p = unsafe { libc::malloc(len) };
        if p.is_null() {
            return None;
        }
        populate_for_write(p.cast(), len);
        Some(MallocBuf { ptr: p, len })
    }

    /// A new `malloc` buffer holding a copy of `bytes` (none for no bytes); `None` when
    /// memory runs out.
    pub(crate) fn copy_of(bytes: &[u8]) -> Option<MallocBuf> {
        if bytes.is_empty() {
            return Some(MallocBuf::empty());
        }
        let buf = MallocBuf::for_write(bytes.len())?;
        // SAFETY: a fresh buffer of `bytes.len()` bytes, disjoint from `bytes`.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), buf.ptr.cast(), bytes.len()) };
        Some(buf)
    }
}

impl Default for MallocBuf {
    fn default() -> MallocBuf {
        MallocBuf::empty()
    }
}

impl Deref for MallocBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        if self.ptr.is_null() || self.len == 0 {
            &[]
        } else {
            // SAFETY: we own `len` bytes at `ptr` (a `malloc` buffer).
            unsafe { std::slice::from_raw_parts(self.ptr.cast(), self.len) }
        }
    }
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
    /// What `cf_raise_payload` attached (freed with the failure); never crosses a
    /// process boundary.
    pub(crate) payload: Option<super::owned::OwnedValue>,
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
            payload: None,
        })
    }

    fn from_user(e: UserError) -> Outcome {
        match e {
            UserError::Raised(r) => Outcome::failed_raised(CF_TASK_FAILED, r),
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
    /// A pointer result freed by its `result_free` when dropped (`cf_submit_task`,
    /// `cf_future_set_result_owned`); reads as `OutcomeRef::Value`.
    Owned(super::owned::OwnedValue),
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
        Outcome::failed_raised(
            status,
            super::context::Raised {
                code,
                message,
                payload: None,
            },
        )
    }

    /// A failure from what a task raised (its payload included); `Degraded` when memory
    /// runs out (the payload is then freed).
    pub(crate) fn failed_raised(status: cf_status, r: super::context::Raised) -> Outcome {
        let super::context::Raised {
            code,
            message,
            payload,
        } = r;
        match try_box(Failure {
            status,
            code,
            message,
            payload,
        }) {
            Ok(f) => Outcome::Failed(f),
            Err(_) => Outcome::Degraded(status, code),
        }
    }

    /// An error outcome's status, code and message (NULL if none; owned by the outcome or
    /// static); `None` for a value.
    pub(crate) fn error(&self) -> Option<(cf_status, c_int, *const c_char)> {
        self.as_ref().error()
    }
}

/// A finished future's outcome, borrowed from the future (whose slot keeps it in a packed
/// form, see `rt::future`): `Outcome` with its payloads by reference.
#[derive(Clone, Copy, Debug)]
pub(crate) enum OutcomeRef<'a> {
    Value(*mut c_void),
    Bytes(&'a MallocBuf),
    Failed(&'a Failure),
    Chunk(&'a [Outcome]),
    Values(&'a Values),
    Degraded(cf_status, c_int),
}

impl Outcome {
    /// This outcome borrowed, as a future hands out its own.
    pub(crate) fn as_ref(&self) -> OutcomeRef<'_> {
        match self {
            Outcome::Value(v) => OutcomeRef::Value(*v),
            Outcome::Bytes(b) => OutcomeRef::Bytes(b),
            Outcome::Failed(e) => OutcomeRef::Failed(e),
            Outcome::Chunk(items) => OutcomeRef::Chunk(items),
            Outcome::Values(v) => OutcomeRef::Values(v),
            Outcome::Degraded(status, code) => OutcomeRef::Degraded(*status, *code),
            Outcome::Owned(v) => OutcomeRef::Value(v.value),
        }
    }
}

impl OutcomeRef<'_> {
    /// An error outcome's status, code and message (NULL if none; owned by the outcome or
    /// static); `None` for a value.
    pub(crate) fn error(self) -> Option<(cf_status, c_int, *const c_char)> {
        match self {
            OutcomeRef::Failed(e) => Some((e.status, e.code, e.message_ptr())),
            OutcomeRef::Degraded(status, code) => Some((status, code, NO_MEMORY_MESSAGE.as_ptr())),
            _ => None,
        }
    }
}

impl Failure {
    /// The function that frees the payload (`None` if none).
    pub(crate) fn payload_free(&self) -> Option<super::owned::FreeFn> {
        self.payload.as_ref().map(|p| p.free)
    }

    /// The payload of `cf_raise_payload` (NULL if none), owned by the failure.
    pub(crate) fn payload_ptr(&self) -> *mut c_void {
        self.payload
            .as_ref()
            .map_or(std::ptr::null_mut(), |p| p.value)
    }

    /// The message as a C string (NULL if none), owned by the failure.
    pub(crate) fn message_ptr(&self) -> *const c_char {
        self.message
            .as_deref()
            .map_or(std::ptr::null(), CStr::as_ptr)
    }
}

/// Copies a C buffer; NULL with a length is `CF_INVALID_ARGUMENT`, a copy that cannot be
/// allocated `CF_NO_MEMORY`.
///
/// # Safety
/// `data` is NULL or points to `len` readable bytes.
pub(crate) unsafe fn copy_bytes(data: *const c_void, len: usize) -> Result<MallocBuf, cf_status> {
    if len == 0 {
        return Ok(MallocBuf::empty());
    }
    if data.is_null() {
        return Err(crate::status::CF_INVALID_ARGUMENT);
    }
    // SAFETY: non-NULL and `len` readable bytes, by the caller's guarantee.
    let bytes = unsafe { std::slice::from_raw_parts(data.cast::<u8>(), len) };
    MallocBuf::copy_of(bytes).ok_or(CF_NO_MEMORY)
}

/// `v` as a boxed slice without a reallocation that could abort: a vector with spare
/// room is copied into an exact one instead of shrunk. `None` when memory runs out.
pub(crate) fn exact<T>(mut v: Vec<T>) -> Option<Box<[T]>> {
    if v.len() == v.capacity() {
        return Some(v.into_boxed_slice());
    }
    let mut e = Vec::new();
    e.try_reserve_exact(v.len()).ok()?;
    e.append(&mut v);
    Some(e.into_boxed_slice())
}

/// Copies of this many bytes or more have their destination's pages populated first.
const POPULATE_MIN: usize = 256 << 10;

/// Before `len` bytes are written at `p` (a fresh allocation): makes the pages it covers
/// present in one call (`MADV_POPULATE_WRITE`) rather than by one fault per page during
/// the copy. On this project's VM that copies 1 MiB into fresh memory in 0.35 ms instead
/// of 0.50. Pages already present cost a page-table walk; a refused advice (an older
/// kernel) changes nothing. Small copies are left alone.
pub(crate) fn populate_for_write(p: *mut u8, len: usize) {
    if len < POPULATE_MIN {
        return;
    }
    let start = p.addr().next_multiple_of(4096);
    let end = (p.addr() + len) & !4095;
    if end > start {
        // SAFETY: whole pages inside the caller's allocation; the advice only makes them
        // present (their content is unchanged: the caller overwrites it next).
        unsafe {
            libc::madvise(
                p.with_addr(start).cast(),
                end - start,
                libc::MADV_POPULATE_WRITE,
            )
        };
    }
}

/// See `Outcome::Values`.
#[derive(Debug)]
pub(crate) struct Values {
    pub(crate) values: Slots,
    pub(crate) failure: Option<Box<Failure>>,
}

#[inline]
pub(crate) fn run_call(f: TaskFn, arg: *mut c_void) -> Outcome {
    // SAFETY: `f` is the caller's task function; the contract makes calling it with its
    // `arg` the caller's responsibility.
    match call_task(|| unsafe { f(arg) }) {
        Ok(value) => Outcome::Value(value),
        Err(e) => Failure::from_user(e),
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
        Err(e) => Failure::from_user(e),
    }
}

impl Task {
    /// Runs the task on the current thread and returns its outcome. Never aborts for
    /// lack of memory: what cannot be recorded becomes `Outcome::Degraded`.
    pub(crate) fn run(self) -> Outcome {
        if let Task::Call(f, arg) = self {
            // Owns nothing: forgotten, so that no drop glue runs for it (see
            // `Core::with_task`).
            std::mem::forget(self);
            return run_call(f, arg);
        }
        match self {
            Task::Call(f, arg) => run_call(f, arg),
            Task::Bytes(f, input) => run_bytes(f, &input),
            Task::Calls(f, mut chunk) => {
                // One task context for the whole chunk: the per-item cost is the call
                // itself and one check of whether it raised. Each result is written over
                // its argument, so the chunk's copy of its inputs becomes its array of
                // values, and its box the outcome: no allocation for the results.
                let mut done = 0;
                let failed = call_each(chunk.values.as_mut_slice(), |slot| {
                    // SAFETY: as for `run_call`.
                    *slot = unsafe { f(*slot) };
                    done += 1;
                });
                if let Some(e) = failed {
                    if matches!(e, UserError::Raised(_)) {
                        done -= 1; // the failed item's return value, ignored
                    }
                    match Failure::from_user(e) {
                        Outcome::Failed(b) => chunk.failure = Some(b),
                        degraded => return degraded,
                    }
                }
                if done < chunk.values.len() && !chunk.values.try_truncate(done) {
                    return Outcome::no_memory();
                }
                Outcome::Values(chunk)
            }
            Task::Then(link) => match link.call() {
                Ok(value) => Outcome::Value(value),
                Err(e) => Failure::from_user(e),
            },
            Task::ByteChunk(f, inputs) => {
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
            Task::Owned(o) => o.run(),
        }
    }
}

/// The tasks of a map, except pointer items in chunks (which `MapIter::start` copies and
/// submits chunk by chunk): one per item when `chunksize` is 0 or 1, else one per chunk
/// of up to `chunksize` byte items, where a byte item of `alone_from` bytes or more is a
/// task of its own and ends the chunk before it (on a process pool such an item then
/// travels through shared memory, where a chunk travels through the socket).
///
/// Returns the tasks and, when a chunk was cut short that way, where each task's items
/// end (the index after its last one); else that list is empty and every task but the
/// last holds `chunksize` items. `None` when memory runs out (then nothing was
/// submitted; the items are dropped).
pub(crate) fn tasks_of(
    items: Items<'_>,
    chunksize: usize,
    alone_from: usize,
) -> Option<(Vec<Task>, Vec<usize>)> {
    let chunksize = chunksize.max(1);
    let n = match &items {
        Items::Calls(_, v) => v.len(),
        Items::Bytes(_, v) => v.len(),
    };
    let mut tasks = Vec::new();
    tasks.try_reserve_exact(n.div_ceil(chunksize)).ok()?;
    let mut ends = Vec::new();
    match items {
        Items::Calls(f, args) => {
            debug_assert!(chunksize == 1, "pointer chunks are made by MapIter::start");
            tasks.extend(args.iter().map(|&a| Task::Call(f, a)));
        }
        Items::Bytes(f, inputs) if chunksize == 1 => {
            tasks.extend(inputs.into_iter().map(|i| Task::Bytes(f, i)));
        }
        Items::Bytes(f, inputs) => {
            let uneven = inputs.iter().any(|i| i.len() >= alone_from);
            if uneven {
                ends.try_reserve_exact(n).ok()?;
            }
            let mut it = inputs.into_iter().peekable();
            while let Some(first) = it.next() {
                let task = if first.len() >= alone_from {
                    Task::Bytes(f, first)
                } else {
                    let mut c = Vec::new();
                    c.try_reserve_exact(chunksize.min(it.len() + 1)).ok()?;
                    c.push(first);
                    while c.len() < chunksize
                        && let Some(next) = it.next_if(|i| i.len() < alone_from)
                    {
                        c.push(next);
                    }
                    Task::ByteChunk(f, c.into_boxed_slice())
                };
                tasks.try_reserve(1).ok()?;
                tasks.push(task);
                if uneven {
                    // The index after this task's last item: those not yet taken follow.
                    ends.push(n - it.len());
                }
            }
        }
    }
    Some((tasks, ends))
}

/// A byte task for tests that only move tasks around: returns no bytes.
#[cfg(test)]
pub(crate) unsafe extern "C-unwind" fn no_bytes(
    _: *const c_void,
    _: usize,
    _: *mut usize,
) -> *mut c_void {
    std::ptr::null_mut()
}

mod args;
pub(crate) use args::{ArgFiller, Slots};

#[cfg(test)]
mod tests {
    use super::*;

    /// The item counts of `tasks_of`'s tasks for byte inputs of `sizes`.
    fn byte_tasks(
        sizes: &[usize],
        chunksize: usize,
        alone_from: usize,
    ) -> (Vec<usize>, Vec<usize>) {
        let inputs = sizes
            .iter()
            .map(|&n| MallocBuf::copy_of(&vec![7; n]).unwrap())
            .collect();
        let (tasks, ends) =
            tasks_of(Items::Bytes(no_bytes, inputs), chunksize, alone_from).unwrap();
        let lens = tasks
            .iter()
            .map(|t| match t {
                Task::Bytes(..) => 1,
                Task::ByteChunk(_, c) => c.len(),
                _ => unreachable!("a pointer task from byte items"),
            })
            .collect();
        (lens, ends)
    }

    /// A byte item of `alone_from` bytes or more is a task of its own and cuts its chunk
    /// short; the ends then say where each task's items end. Without one, chunks are even
    /// and the ends list is empty.
    #[test]
    fn large_byte_items_go_alone() {
        let sizes = [1, 2, 50, 3, 4, 5, 60, 70, 6];
        assert_eq!(
            byte_tasks(&sizes, 2, 50),
            (vec![2, 1, 2, 1, 1, 1, 1], vec![2, 3, 5, 6, 7, 8, 9])
        );
        assert_eq!(
            byte_tasks(&sizes, 2, usize::MAX),
            (vec![2, 2, 2, 2, 1], vec![])
        );
        assert_eq!(
            byte_tasks(&sizes, 100, 50),
            (vec![2, 1, 3, 1, 1, 1], vec![2, 3, 6, 7, 8, 9])
        );
        assert_eq!(byte_tasks(&[9, 9, 9], 2, 50), (vec![2, 1], vec![]));
        assert_eq!(byte_tasks(&[90, 90], 2, 50), (vec![1, 1], vec![1, 2]));
    }
}
