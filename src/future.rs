//! Futures, promises, done callbacks and `cf_raise`.

use crate::{
    ffi::handle::{future_clone, future_into_raw, future_ref, future_release},
    rt::{
        context,
        future::{CallbackFn, Core, Phase},
        shared::{try_box, try_cstring},
        task::{Failure, Message, Outcome, OutcomeRef},
        time::Deadline,
    },
    status::*,
};
use std::ffi::{CStr, c_char, c_int, c_void};

/// The eventual outcome of a task or a promise: Python's `Future`.
///
/// Reference-counted: `cf_submit`, `cf_submit_bytes` and `cf_future_new` give the caller
/// one reference; `cf_future_retain` adds one; each reference is dropped once with
/// `cf_future_release`, and the last one frees the future. Releasing a future does not
/// cancel it: its task still runs and its callbacks still fire. A future outlives the
/// executor that made it. Safe to use from any thread.
///
/// Methods: `cf_future_state`, `cf_future_done`, `cf_future_running`,
/// `cf_future_cancelled`, `cf_future_cancel`, `cf_future_wait`, `cf_future_result`,
/// `cf_future_exception`, `cf_future_add_done_callback`, `cf_future_retain`,
/// `cf_future_release`; for promises `cf_future_new`,
/// `cf_future_set_running_or_notify_cancel`, `cf_future_set_result`,
/// `cf_future_set_exception`; and, owning what they are given,
/// `cf_future_set_result_owned` and `cf_future_add_done_callback_owned`.
pub struct cf_future {
    // Never instantiated: a `cf_future *` points at the engine's future core inside an
    // `Arc` (see `ffi::handle`). The zero-sized field keeps the type opaque to C.
    _opaque: [u8; 0],
}

/// Where a future is in its life: a fixed-width integer with the `CF_STATE_*` values.
pub type cf_state = u32;
/// Not started: queued in an executor, or a promise not yet marked running.
pub const CF_STATE_PENDING: cf_state = 0;
/// A worker is running its task (or a promise was marked running).
pub const CF_STATE_RUNNING: cf_state = 1;
/// Cancelled before it started.
pub const CF_STATE_CANCELLED: cf_state = 2;
/// Finished: with a result, or failed (`CF_TASK_FAILED`, `CF_BROKEN`, `CF_DEADLINE`).
pub const CF_STATE_FINISHED: cf_state = 3;

/// Wait without a time limit: pass as any `timeout` argument.
pub const CF_FOREVER: f64 = -1.0;

/// A task: gets `arg` and returns the future's result, like a pthread start routine.
///
/// Runs once, on a worker thread of the executor (or, for a worker that waits on a future
/// of its own pool, on that worker while it waits). It fails by calling `cf_raise`; it
/// must not unwind (throw or `longjmp`) out of its frame.
pub type cf_fn = Option<unsafe extern "C-unwind" fn(arg: *mut c_void) -> *mut c_void>;

/// A done callback: called exactly once with the future (borrowed for the call) and the
/// `userdata` given to `cf_future_add_done_callback`.
///
/// It runs in the thread that finishes or cancels the future (a worker, a thread that
/// completes a promise, or the thread calling `cf_future_cancel` /
/// `cf_executor_shutdown`), after the future is done; or at once in the adding thread if
/// the future was already done. It must therefore be safe to call on any thread. It may
/// call any cfutures function, including submitting work and adding callbacks. To keep
/// the future past the call, take a reference with `cf_future_retain`.
pub type cf_callback =
    Option<unsafe extern "C-unwind" fn(f: *mut cf_future, userdata: *mut c_void)>;

/// Fails the running task (or initializer) with `code` and a copy of `message`.
///
/// Call it from inside a task; the future then finishes with `CF_TASK_FAILED`, and
/// `cf_future_exception` gives `code` and the message (NULL if `message` is NULL). The
/// task's return value is ignored (a byte task's buffer is freed). The last call in a task
/// wins. In an initializer it marks the initializer as failed, which breaks the executor.
/// Outside a task or initializer (for example in a done callback) it does nothing.
/// If memory runs out for the copy, the message becomes a fixed text saying so (the code
/// is kept).
/// Always returns NULL, so that `return cf_raise(EINVAL, "bad input");` reads naturally.
///
/// `message` may be NULL; otherwise it must be a NUL-terminated string, which is copied.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cf_raise(code: c_int, message: *const c_char) -> *mut c_void {
    ffi_boundary! {
        // SAFETY: `message` is NULL or NUL-terminated, per this function's contract.
        unsafe { context::raise(code, message) };
        std::ptr::null_mut()
    }
}

fn deadline(timeout: f64) -> Result<Deadline, cf_status> {
    Deadline::from_timeout(timeout).ok_or(CF_INVALID_ARGUMENT)
}

/// Waits for `f` within `timeout`, then maps its end to a status; `Ok` gives the outcome.
fn settle(f: &Core, timeout: f64) -> Result<OutcomeRef<'_>, cf_status> {
    let d = deadline(timeout)?;
    if !f.wait(d) {
        return Err(CF_TIMEOUT);
    }
    f.outcome().ok_or(CF_CANCELLED)
}

/// The state of `f`: `CF_STATE_PENDING`, `_RUNNING`, `_CANCELLED` or `_FINISHED`.
/// `f` is borrowed; NULL gives `CF_STATE_PENDING`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cf_future_state(f: *const cf_future) -> cf_state {
    let state = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: `f` is NULL or a live handle (the caller holds a reference).
        match unsafe { future_ref(f) }.map(Core::phase) {
            Some(Phase::Running) => CF_STATE_RUNNING,
            Some(Phase::Cancelled) => CF_STATE_CANCELLED,
            Some(Phase::Finished) => CF_STATE_FINISHED,
            Some(Phase::Pending) | None => CF_STATE_PENDING,
        }
    }));
    state.unwrap_or(CF_STATE_PENDING)
}

/// True if `f` is done: finished (with a result or an error) or cancelled. False for NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cf_future_done(f: *const cf_future) -> bool {
    // SAFETY: `f` is NULL or a live handle.
    ffi_boundary! { unsafe { future_ref(f) }.is_some_and(Core::is_done) }
}

/// True if `f`'s task is running now (or a promise was marked running and is not done).
/// False for NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cf_future_running(f: *const cf_future) -> bool {
    // SAFETY: `f` is NULL or a live handle.
    ffi_boundary! { unsafe { future_ref(f) }.is_some_and(|c| c.phase() == Phase::Running) }
}

/// True if `f` was cancelled. False for NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cf_future_cancelled(f: *const cf_future) -> bool {
    // SAFETY: `f` is NULL or a live handle.
    ffi_boundary! { unsafe { future_ref(f) }.is_some_and(|c| c.phase() == Phase::Cancelled) }
}

/// Cancels `f` if it has not started: Python's `Future.cancel()`.
///
/// Returns true if `f` is now cancelled (also when it already was): its task will never
/// run, waiters wake with `CF_CANCELLED`, and its done callbacks run in this thread before
/// the call returns. Returns false if it is running or finished, and for NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cf_future_cancel(f: *mut cf_future) -> bool {
    // SAFETY: `f` is NULL or a live handle.
    ffi_boundary! { unsafe { future_ref(f) }.is_some_and(Core::cancel) }
}

/// Waits until `f` is done (finished or cancelled), at most `timeout` seconds.
///
/// Returns `CF_OK` once done, `CF_TIMEOUT` if the time ran out first,
/// `CF_INVALID_ARGUMENT` for NULL `f` or a NaN timeout. On a worker thread of a thread
/// pool, the wait runs other queued tasks of that pool meanwhile, so it may return later
/// than `timeout` when one of those takes longer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cf_future_wait(f: *mut cf_future, timeout: f64) -> cf_status {
    ffi_boundary! {
        // SAFETY: `f` is NULL or a live handle.
        let Some(core) = (unsafe { future_ref(f) }) else { return CF_INVALID_ARGUMENT };
        let d = try_status!(deadline(timeout));
        if core.wait(d) { CF_OK } else { CF_TIMEOUT }
    }
}

/// Waits up to `timeout` seconds for `f`, then gives its outcome: Python's `result()`.
///
/// - `CF_OK`: `*result` is the task's return value (for a byte task, the data pointer,
///   which stays owned by the future).
/// - `CF_TASK_FAILED`: the task called `cf_raise` (see `cf_future_exception`).
/// - `CF_BROKEN`: the executor broke before or while running it.
/// - `CF_DEADLINE`: the task's own time limit (`cf_task.timeout`) passed first: an
///   outcome of the future, not the expiry of this wait (a loop that waits again on
///   `CF_TIMEOUT` ends).
/// - `CF_CANCELLED`: `f` was cancelled.
/// - `CF_NO_MEMORY`: the outcome could not be stored for lack of memory (only a map
///   chunk's results; see the preamble); `cf_future_exception` gives `ENOMEM`.
/// - `CF_TIMEOUT`: not done within `timeout`.
/// - `CF_INVALID_ARGUMENT`: `f` or `result` is NULL, or `timeout` is NaN.
///
/// `*result` is written only with `CF_OK`. Waiting on a worker thread runs queued tasks
/// of its pool meanwhile (see `cf_future_wait`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cf_future_result(
    f: *mut cf_future,
    timeout: f64,
    result: *mut *mut c_void,
) -> cf_status {
    ffi_boundary! {
        try_nonnull!(result);
        // SAFETY: `f` is NULL or a live handle.
        let Some(core) = (unsafe { future_ref(f) }) else { return CF_INVALID_ARGUMENT };
        let value = match try_status!(settle(core, timeout)) {
            OutcomeRef::Value(v) => v,
            OutcomeRef::Bytes(b) => b.ptr,
            OutcomeRef::Failed(e) => return e.status,
            OutcomeRef::Degraded(status, _) => return status,
            OutcomeRef::Chunk(_) | OutcomeRef::Values(_) => std::ptr::null_mut(),
        };
        // SAFETY: `result` is non-NULL and points to writable storage (contract).
        unsafe { *result = value };
        CF_OK
    }
}

/// Waits like `cf_future_result`, then gives the error instead of the value: Python's
/// `exception()`.
///
/// Returns the same status as `cf_future_result`. With `CF_OK` it writes `*code = 0` and
/// `*message = NULL`; with `CF_TASK_FAILED`, `CF_BROKEN`, `CF_DEADLINE` (code `ETIMEDOUT`,
/// a message saying which limit passed and where the task was) or `CF_NO_MEMORY` it writes
/// the error's code and message (the message may be NULL; when memory ran out while the
/// error was recorded, it is a fixed "cfutures: out of memory ..." text). The message is owned by the future and stays valid
/// while the future lives; do not free it. With `CF_CANCELLED` and `CF_TIMEOUT` nothing
/// is written. `f`, `code` and `message` must not be NULL (`CF_INVALID_ARGUMENT`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cf_future_exception(
    f: *mut cf_future,
    timeout: f64,
    code: *mut c_int,
    message: *mut *const c_char,
) -> cf_status {
    ffi_boundary! {
        try_nonnull!(code);
        try_nonnull!(message);
        // SAFETY: `f` is NULL or a live handle.
        let Some(core) = (unsafe { future_ref(f) }) else { return CF_INVALID_ARGUMENT };
        let outcome = try_status!(settle(core, timeout));
        let (status, c, m) = outcome.error().unwrap_or((CF_OK, 0, std::ptr::null()));
        // SAFETY: both are non-NULL and writable (contract).
        unsafe {
            *code = c;
            *message = m;
        }
        status
    }
}

/// Adds a done callback to `f`: Python's `add_done_callback`.
///
/// If `f` is already done, `fn(f, userdata)` runs at once in this thread, before the call
/// returns. Otherwise it runs exactly once, after `f` is done, in the thread that finishes
/// or cancels it, in the order callbacks were added (see `cf_callback`). A callback added
/// to a future that is then released still runs. `f` is borrowed for the call.
///
/// Returns `CF_OK`, `CF_INVALID_ARGUMENT` if `f` or `fn` is NULL, or `CF_NO_MEMORY` (the
/// callback was not added).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cf_future_add_done_callback(
    f: *mut cf_future,
    r#fn: cf_callback,
    userdata: *mut c_void,
) -> cf_status {
    ffi_boundary! {
        let Some(callback) = r#fn else { return CF_INVALID_ARGUMENT };
        // SAFETY: `f` is NULL or a live handle.
        let Some(core) = (unsafe { future_ref(f) }) else { return CF_INVALID_ARGUMENT };
        if core.add_callback(engine_callback(callback), userdata) { CF_OK } else { CF_NO_MEMORY }
    }
}

/// A C done callback as the engine's `CallbackFn`: the same function, no wrapper (a
/// callback node stays one 32-byte block).
pub(crate) fn engine_callback(
    f: unsafe extern "C-unwind" fn(*mut cf_future, *mut c_void),
) -> CallbackFn {
    type CCallback = unsafe extern "C-unwind" fn(*mut cf_future, *mut c_void);
    // SAFETY: the two types differ only in the pointee of the first parameter
    // (`cf_future` and `Core`, both sized), and raw pointers to sized types are
    // ABI-compatible, so calling `f` through `CallbackFn` passes the same arguments. The
    // pointer the engine passes is a `Core`'s address, which is what a `cf_future *` is
    // (`ffi::handle`).
    unsafe { std::mem::transmute::<CCallback, CallbackFn>(f) }
}

/// Takes one more reference to `f` and returns `f` (NULL for NULL). Each reference is
/// given up once with `cf_future_release`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cf_future_retain(f: *mut cf_future) -> *mut cf_future {
    ffi_boundary! {
        if f.is_null() {
            return std::ptr::null_mut();
        }
        // SAFETY: `f` is a live handle; the new reference goes to the caller.
        future_into_raw(unsafe { future_clone(f) })
    }
}

/// Gives up one reference to `f`; the last one frees it (with its message and byte
/// result). A pending future is not cancelled: its task still runs and its callbacks
/// still fire. NULL does nothing. Do not use `f` after releasing your last reference,
/// and do not release a reference twice.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cf_future_release(f: *mut cf_future) {
    ffi_boundary! {
        if !f.is_null() {
            // SAFETY: the caller gives up one reference it holds.
            unsafe { future_release(f) }
        }
    }
}

/// Creates a pending future that you complete yourself (a promise): Python's `Future()`.
///
/// The caller gets one reference (`cf_future_release`). Complete it with
/// `cf_future_set_result` or `cf_future_set_exception`, optionally after
/// `cf_future_set_running_or_notify_cancel`. It works everywhere an executor's future
/// does. Returns `CF_OK`, `CF_NO_MEMORY` if the future (one small allocation) cannot be
/// made, or `CF_INVALID_ARGUMENT` if `out` is NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cf_future_new(out: *mut *mut cf_future) -> cf_status {
    ffi_boundary! {
        try_nonnull!(out);
        let Some(core) = Core::try_promise() else { return CF_NO_MEMORY };
        // SAFETY: `out` is non-NULL and writable (contract).
        unsafe { *out = future_into_raw(core) };
        CF_OK
    }
}

/// Marks a pending promise as running, unless it was cancelled: Python's
/// `set_running_or_notify_cancel()`.
///
/// Returns `CF_OK` if `f` is now running (it can no longer be cancelled),
/// `CF_CANCELLED` if it was cancelled (its waiters and callbacks were already notified by
/// the cancel), `CF_INVALID_STATE` if it is already running or finished, and
/// `CF_INVALID_ARGUMENT` for NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cf_future_set_running_or_notify_cancel(f: *mut cf_future) -> cf_status {
    ffi_boundary! {
        // SAFETY: `f` is NULL or a live handle.
        let Some(core) = (unsafe { future_ref(f) }) else { return CF_INVALID_ARGUMENT };
        match core.set_running() {
            Ok(()) => CF_OK,
            Err(Phase::Cancelled) => CF_CANCELLED,
            Err(_) => CF_INVALID_STATE,
        }
    }
}

/// Finishes `f` with `result`: waiters wake and done callbacks run in this thread before
/// the call returns.
///
/// Returns `CF_OK`, `CF_INVALID_STATE` if `f` is already done (finished or cancelled),
/// or `CF_INVALID_ARGUMENT` for NULL. Works on a pending or running future.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cf_future_set_result(f: *mut cf_future, result: *mut c_void) -> cf_status {
    ffi_boundary! {
        // SAFETY: `f` is NULL or a live handle.
        let Some(core) = (unsafe { future_ref(f) }) else { return CF_INVALID_ARGUMENT };
        match core.finish(Outcome::Value(result)) {
            Ok(()) => CF_OK,
            Err(_) => CF_INVALID_STATE,
        }
    }
}

/// Finishes `f` as failed with `code` and a copy of `message` (NULL allowed): readers get
/// `CF_TASK_FAILED`. Waiters wake and done callbacks run in this thread before the call
/// returns.
///
/// Returns `CF_OK`, `CF_INVALID_STATE` if `f` is already done, `CF_NO_MEMORY` if the
/// error or its message cannot be allocated (`f` is left as it was), or
/// `CF_INVALID_ARGUMENT` for NULL `f`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cf_future_set_exception(
    f: *mut cf_future,
    code: c_int,
    message: *const c_char,
) -> cf_status {
    ffi_boundary! {
        // SAFETY: `f` is NULL or a live handle.
        let Some(core) = (unsafe { future_ref(f) }) else { return CF_INVALID_ARGUMENT };
        // SAFETY: `message` is NULL or NUL-terminated (contract).
        unsafe { set_failure(core, code, message, None) }
    }
}

/// Fails a promise with `CF_TASK_FAILED`, `code`, a copy of `message` (NULL: none) and
/// `payload` (`cf_future_set_exception`, `cf_future_set_exception_payload`).
/// `CF_INVALID_STATE` if it is done; `CF_NO_MEMORY` if the failure cannot be recorded.
/// The payload is dropped (freed) on every path that does not record it.
///
/// # Safety
/// `message` is NULL or NUL-terminated.
pub(crate) unsafe fn set_failure(
    core: &Core,
    code: c_int,
    message: *const c_char,
    payload: Option<crate::rt::owned::OwnedValue>,
) -> cf_status {
    if core.is_done() {
        return CF_INVALID_STATE;
    }
    let message = if message.is_null() {
        None
    } else {
        // SAFETY: a non-NULL message is NUL-terminated (the caller's guarantee).
        let bytes = unsafe { CStr::from_ptr(message) }.to_bytes();
        let Some(copy) = try_cstring(bytes) else {
            return CF_NO_MEMORY;
        };
        Some(Message::Owned(copy))
    };
    let failure = Failure {
        status: CF_TASK_FAILED,
        code,
        message,
        payload,
    };
    let Ok(failure) = try_box(failure) else {
        return CF_NO_MEMORY;
    };
    match core.finish(Outcome::Failed(failure)) {
        Ok(()) => CF_OK,
        Err(_) => CF_INVALID_STATE,
    }
}

/// Waits like `cf_future_result` for a byte-task future (`cf_submit_bytes`) and lends out
/// its result buffer.
///
/// On `CF_OK`, `out->data` and `out->len` are the task's buffer (NULL and 0 if it
/// returned NULL), owned by the future: valid while the future lives, freed with it; do
/// not free it. Other statuses as `cf_future_result`; `CF_INVALID_ARGUMENT` also when `f`
/// finished with a pointer result (it is not a byte task), or for NULL `f` or `out`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cf_future_result_bytes(
    f: *mut cf_future,
    timeout: f64,
    out: *mut crate::map::cf_bytes,
) -> cf_status {
    ffi_boundary! {
        try_nonnull!(out);
        // SAFETY: `f` is NULL or a live handle.
        let Some(core) = (unsafe { future_ref(f) }) else { return CF_INVALID_ARGUMENT };
        let bytes = match try_status!(settle(core, timeout)) {
            OutcomeRef::Bytes(b) => crate::map::cf_bytes { data: b.ptr, len: b.len },
            OutcomeRef::Failed(e) => return e.status,
            OutcomeRef::Degraded(status, _) => return status,
            OutcomeRef::Value(_) | OutcomeRef::Chunk(_) | OutcomeRef::Values(_) => {
                return CF_INVALID_ARGUMENT;
            }
        };
        // SAFETY: `out` is non-NULL and writable (contract).
        unsafe { *out = bytes };
        CF_OK
    }
}
