//! The per-thread task context that `cf_raise` writes to, and the wrapper every call into
//! user code goes through (`call_user`): it catches unwinding, so that a panic or a
//! foreign exception never crosses our frames, and it keeps `cf_raise` scoped to the task
//! or initializer being run (nested runs, e.g. a worker that helps while it waits, or a
//! done callback fired from inside a task, save and restore the outer context).

use super::{
    owned::OwnedValue,
    shared::try_cstring,
    sync::thread_local,
    task::{Message, RAISE_NO_MEMORY_MESSAGE},
};
use std::{
    cell::Cell,
    ffi::{CStr, c_char, c_int},
    panic::{AssertUnwindSafe, catch_unwind},
    ptr,
};

/// What a task reported through `cf_raise`: the last call wins.
#[derive(Debug, Default)]
pub(crate) struct Raised {
    pub(crate) code: c_int,
    pub(crate) message: Option<Message>,
    /// `cf_raise_payload`'s payload, freed when the failure that carries it is dropped.
    pub(crate) payload: Option<OwnedValue>,
}

thread_local! {
    /// The context of the task or initializer running on this thread, or NULL.
    static CURRENT: Cell<*mut Option<Raised>> = const { Cell::new(ptr::null_mut()) };
}

/// Why user code did not produce a value.
#[derive(Debug)]
pub(crate) enum UserError {
    /// It called `cf_raise`.
    Raised(Raised),
    /// It unwound (a Rust panic or a foreign exception): outside the contract, but caught.
    Unwound,
}

/// Runs a task or initializer with a fresh `cf_raise` context.
pub(crate) fn call_task<R>(f: impl FnOnce() -> R) -> Result<R, UserError> {
    let mut slot: Option<Raised> = None;
    let prev = CURRENT.with(|c| c.replace(&mut slot));
    let result = catch_unwind(AssertUnwindSafe(f));
    CURRENT.with(|c| c.set(prev));
    match (result, slot) {
        (Ok(_), Some(raised)) => Err(UserError::Raised(raised)),
        (Ok(value), None) => Ok(value),
        (Err(_), _) => Err(UserError::Unwound),
    }
}

/// Runs `f` on each item in one task context, stopping at the first item that calls
/// `cf_raise` or unwinds; returns that error. An item that raised has still returned
/// (its value was pushed by `f`); an item that unwound has not.
pub(crate) fn call_each<T>(items: &mut [T], mut f: impl FnMut(&mut T)) -> Option<UserError> {
    let mut slot: Option<Raised> = None;
    let slot_ptr: *mut Option<Raised> = &mut slot;
    let prev = CURRENT.with(|c| c.replace(slot_ptr));
    let result = catch_unwind(AssertUnwindSafe(|| {
        for item in items {
            f(item);
            // SAFETY: `slot` lives until after this closure; `cf_raise` writes it only
            // from inside `f`, on this thread, which has returned.
            if unsafe { (*slot_ptr).is_some() } {
                return;
            }
        }
    }));
    CURRENT.with(|c| c.set(prev));
    match (result, slot) {
        (Ok(()), Some(raised)) => Some(UserError::Raised(raised)),
        (Ok(()), None) => None,
        (Err(_), _) => Some(UserError::Unwound),
    }
}

/// Runs a done callback: outside any task context (`cf_raise` in a callback does
/// nothing), with unwinding caught so that the other callbacks still run.
pub(crate) fn call_callback(f: impl FnOnce()) {
    let prev = CURRENT.with(|c| c.replace(ptr::null_mut()));
    let _ = catch_unwind(AssertUnwindSafe(f));
    CURRENT.with(|c| c.set(prev));
}

/// `cf_raise`: records the error in the running task's context, if any.
///
/// # Safety
/// `message` is NULL or a NUL-terminated string.
pub(crate) unsafe fn raise(code: c_int, message: *const c_char) {
    // SAFETY: as this function's.
    unsafe { raise_payload(code, message, None) }
}

/// `cf_raise_payload`: as `raise`, with a payload the failure owns; outside a task the
/// payload is dropped (freed) at once.
///
/// # Safety
/// `message` is NULL or a NUL-terminated string.
pub(crate) unsafe fn raise_payload(
    code: c_int,
    message: *const c_char,
    payload: Option<OwnedValue>,
) {
    let slot = CURRENT.with(|c| c.get());
    if slot.is_null() {
        return;
    }
    let message = if message.is_null() {
        None
    } else {
        // SAFETY: the caller guarantees a NUL-terminated string.
        let bytes = unsafe { CStr::from_ptr(message) }.to_bytes();
        // Out of memory for the copy: a fixed message says so (the code is kept).
        Some(try_cstring(bytes).map_or(Message::Static(RAISE_NO_MEMORY_MESSAGE), Message::Owned))
    };
    // SAFETY: `slot` points at the `Option<Raised>` on the stack of `call_task`, which is
    // still running on this thread (it restores the previous pointer before returning).
    unsafe {
        *slot = Some(Raised {
            code,
            message,
            payload,
        })
    };
}
