//! Conversions between handles and the Rust objects behind them. These are the only
//! places that cast pointers from C.
//!
//! - A `cf_future *` is the pointer `Arc::into_raw` gives for the engine's
//!   `rt::future::Core` (the `cf_future` type itself is an opaque marker, never built), so
//!   `cf_future_retain`/`_release` are `Arc` strong-count operations.
//! - `cf_executor`, `cf_as_completed` and `cf_map` are `Box`es owned by the caller.

use crate::{future::cf_future, rt::future::Core};
use std::sync::Arc;

/// Hands one strong reference to C.
pub(crate) fn future_into_raw(core: Arc<Core>) -> *mut cf_future {
    Arc::into_raw(core) as *mut cf_future
}

/// Borrows the core behind a handle; `None` for NULL.
///
/// # Safety
/// `f` is NULL or a live `cf_future` handle (one the caller holds a reference to).
pub(crate) unsafe fn future_ref<'a>(f: *const cf_future) -> Option<&'a Core> {
    // SAFETY: every non-NULL `cf_future *` came from `future_into_raw`, so it points at
    // a `Core` in an `Arc`; the reference the caller holds keeps it alive for the borrow.
    unsafe { f.cast::<Core>().as_ref() }
}

/// Takes a new strong reference to the core behind a live handle.
///
/// # Safety
/// `f` is a non-NULL live `cf_future` handle.
pub(crate) unsafe fn future_clone(f: *const cf_future) -> Arc<Core> {
    let p = f.cast::<Core>();
    // SAFETY: `p` came from `Arc::into_raw` (future_into_raw) and is still alive, so
    // incrementing and then re-owning one count is balanced.
    unsafe {
        Arc::increment_strong_count(p);
        Arc::from_raw(p)
    }
}

/// Drops one strong reference held by C.
///
/// # Safety
/// `f` is a non-NULL handle whose reference the caller gives up.
pub(crate) unsafe fn future_release(f: *const cf_future) {
    // SAFETY: the caller owns one count, which this consumes.
    unsafe { drop(Arc::from_raw(f.cast::<Core>())) }
}

/// Boxes an owned object for C.
pub(crate) fn box_into_raw<T>(value: T) -> *mut T {
    Box::into_raw(Box::new(value))
}

/// Takes back ownership of a boxed handle; `None` for NULL.
///
/// # Safety
/// `p` is NULL or came from `box_into_raw` and has not been freed.
pub(crate) unsafe fn box_take<T>(p: *mut T) -> Option<Box<T>> {
    if p.is_null() {
        None
    } else {
        // SAFETY: by the caller's guarantee it is our live box.
        Some(unsafe { Box::from_raw(p) })
    }
}
