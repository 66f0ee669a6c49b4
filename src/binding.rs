//! What a language binding (the C++ header, `include/cfutures.hpp`) needs besides the
//! rest of the C API: failures that carry a payload (`cf_raise_payload`,
//! `cf_future_set_exception_payload`, `cf_future_exception_payload`), so that an object
//! of its own (a `std::exception_ptr`) travels through a failed future and is freed
//! exactly once with it; and the address of a future's pointer result
//! (`cf_future_result_ref`), so that a value stored in the pointer itself can be lent out
//! by reference for as long as the future lives.

use crate::{
    ffi::handle::future_ref,
    future::cf_future,
    rt::{context, owned::OwnedValue, task::OutcomeRef, time::Deadline},
    status::*,
    task::cf_free_fn,
};
use std::ffi::{c_char, c_int, c_void};

/// `payload` owned by `payload_free`, if there is one to call.
fn owned(payload: *mut c_void, payload_free: cf_free_fn) -> Option<OwnedValue> {
    payload_free.map(|free| OwnedValue::new(payload, free))
}

/// Fails the running task (or initializer) like `cf_raise(code, message)`, and attaches
/// `payload`, an object of the caller's, to the failure.
///
/// The failure owns the payload: `payload_free(payload)` is called exactly once, when the
/// failure is dropped: when the future's last reference is released, when a later
/// `cf_raise` or `cf_raise_payload` in the same task replaces this failure (the last call
/// wins), or, outside a task or initializer (where `cf_raise` does nothing), at once,
/// in this thread, before the call returns. `payload_free` may be NULL (nothing is then
/// called; the payload is still readable). `cf_future_exception_payload` reads it back.
///
/// The payload is a pointer into this process: it does not cross a process boundary. A
/// task on a process pool that calls this fails with `code` and `message` in the parent,
/// without a payload (`cf_future_exception_payload` gives NULL there), and the payload is
/// freed in the worker, once the failure has been sent. In an initializer the payload is
/// freed with the failure that breaks the executor. Always returns NULL.
///
/// `message` may be NULL; otherwise it must be a NUL-terminated string, which is copied.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cf_raise_payload(
    code: c_int,
    message: *const c_char,
    payload: *mut c_void,
    payload_free: cf_free_fn,
) -> *mut c_void {
    ffi_boundary! {
        // SAFETY: `message` is NULL or NUL-terminated, per this function's contract.
        unsafe { context::raise_payload(code, message, owned(payload, payload_free)) };
        std::ptr::null_mut()
    }
}

/// Finishes the promise `f` as failed, like `cf_future_set_exception(f, code, message)`,
/// with `payload` attached: readers get `CF_TASK_FAILED`, and
/// `cf_future_exception_payload` gives `payload`. Waiters wake and done callbacks run in
/// this thread before the call returns.
///
/// The library owns the payload from this call on, whatever it returns except
/// `CF_INVALID_ARGUMENT`: `payload_free(payload)` is called exactly once, when the
/// future's last reference is released; or, when the call fails with `CF_INVALID_STATE`
/// (`f` already done) or `CF_NO_MEMORY` (the error or its message could not be
/// allocated; `f` is left as it was), at once, in this thread. `CF_INVALID_ARGUMENT`
/// (NULL `f`): nothing is called. `payload_free` may be NULL (nothing to free).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cf_future_set_exception_payload(
    f: *mut cf_future,
    code: c_int,
    message: *const c_char,
    payload: *mut c_void,
    payload_free: cf_free_fn,
) -> cf_status {
    ffi_boundary! {
        // SAFETY: `f` is NULL or a live handle.
        let Some(core) = (unsafe { future_ref(f) }) else { return CF_INVALID_ARGUMENT };
        // From here on the payload is ours: dropping it frees it.
        let payload = owned(payload, payload_free);
        // SAFETY: `message` is NULL or NUL-terminated (contract).
        unsafe { crate::future::set_failure(core, code, message, payload) }
    }
}

/// Waits like `cf_future_exception`, then gives the failure's payload (the `payload` of
/// `cf_raise_payload` or `cf_future_set_exception_payload`) and the function that frees
/// it, which tells a binding whose payload it is.
///
/// Returns the same status as `cf_future_result`. With `CF_TASK_FAILED` it writes
/// `*payload`, and `*payload_free` when `payload_free` is not NULL: the payload and its
/// free function, or NULL and NULL when the failure has none (a plain `cf_raise`, a
/// failure that came from a process-pool worker). The payload is owned by the future,
/// valid while the future lives; do not free it. With any other status nothing is
/// written. `f` and `payload` must not be NULL (`CF_INVALID_ARGUMENT`, nothing written).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cf_future_exception_payload(
    f: *mut cf_future,
    timeout: f64,
    payload: *mut *mut c_void,
    payload_free: *mut cf_free_fn,
) -> cf_status {
    ffi_boundary! {
        try_nonnull!(payload);
        // SAFETY: `payload_free` is NULL or writable (contract).
        let write_free = |free: cf_free_fn| {
            if !payload_free.is_null() {
                unsafe { *payload_free = free };
            }
        };
        // SAFETY: `f` is NULL or a live handle.
        let Some(core) = (unsafe { future_ref(f) }) else { return CF_INVALID_ARGUMENT };
        let Some(d) = Deadline::from_timeout(timeout) else { return CF_INVALID_ARGUMENT };
        if !core.wait(d) {
            return CF_TIMEOUT;
        }
        let Some(outcome) = core.outcome() else { return CF_CANCELLED };
        match outcome {
            OutcomeRef::Failed(e) => {
                if e.status == CF_TASK_FAILED {
                    // SAFETY: non-NULL and writable (contract).
                    unsafe { *payload = e.payload_ptr() };
                    write_free(e.payload_free());
                }
                e.status
            }
            other => match other.error() {
                Some((status, _, _)) => {
                    if status == CF_TASK_FAILED {
                        // SAFETY: as above; a failure recorded without memory has none.
                        unsafe { *payload = std::ptr::null_mut() };
                        write_free(None);
                    }
                    status
                }
                None => CF_OK,
            },
        }
    }
}

/// Waits like `cf_future_result`, then lends out where the future keeps its result:
/// `*result` points at the pointer-sized value the task returned (or the promise was set
/// to), inside the future, so that the value can be read by reference. The address is
/// valid, and the value unchanged, while the future lives.
///
/// Statuses as `cf_future_result`; `*result` is written only with `CF_OK`. Returns
/// `CF_INVALID_ARGUMENT` also for a byte-task future (read it with
/// `cf_future_result_bytes`) or a map's; for NULL `f` or `result`, or a NaN timeout.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cf_future_result_ref(
    f: *mut cf_future,
    timeout: f64,
    result: *mut *const *mut c_void,
) -> cf_status {
    ffi_boundary! {
        try_nonnull!(result);
        // SAFETY: `f` is NULL or a live handle.
        let Some(core) = (unsafe { future_ref(f) }) else { return CF_INVALID_ARGUMENT };
        let Some(d) = Deadline::from_timeout(timeout) else { return CF_INVALID_ARGUMENT };
        if !core.wait(d) {
            return CF_TIMEOUT;
        }
        if let Some(slot) = core.value_slot() {
            // SAFETY: non-NULL and writable (contract).
            unsafe { *result = slot };
            return CF_OK;
        }
        let Some(outcome) = core.outcome() else { return CF_CANCELLED };
        match outcome.error() {
            Some((status, _, _)) => status,
            None => CF_INVALID_ARGUMENT, // a byte or map result: not a pointer
        }
    }
}
