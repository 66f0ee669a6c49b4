//! Conversions between handles and the Rust objects behind them. These are the only
//! places that cast pointers from C.
//!
//! - A `cf_future *` is the pointer `Shared::into_raw` gives for the engine's
//!   `rt::future::Core` (the `cf_future` type itself is an opaque marker, never built), so
//!   `cf_future_retain`/`_release` are reference-count operations (`rt::shared`).
//! - `cf_executor`, `cf_as_completed` and `cf_map` are `Box`es owned by the caller, made
//!   with `try_box_into_raw` so that running out of memory is `CF_NO_MEMORY`.

use std::mem::MaybeUninit;

use crate::{
    future::cf_future,
    rt::{
        future::{Core, CoreRef},
        shared::{Shared, try_box},
    },
};

/// Hands one strong reference to C.
pub(crate) fn future_into_raw(core: CoreRef) -> *mut cf_future {
    Shared::into_raw(core) as *mut cf_future
}

/// Borrows the core behind a handle; `None` for NULL.
///
/// # Safety
/// `f` is NULL or a live `cf_future` handle (one the caller holds a reference to).
pub(crate) unsafe fn future_ref<'a>(f: *const cf_future) -> Option<&'a Core> {
    // SAFETY: every non-NULL `cf_future *` came from `future_into_raw`, so it points at
    // a `Core` in a `Shared`; the reference the caller holds keeps it alive for the borrow.
    unsafe { f.cast::<Core>().as_ref() }
}

/// Takes a new strong reference to the core behind a live handle.
///
/// # Safety
/// `f` is a non-NULL live `cf_future` handle.
pub(crate) unsafe fn future_clone(f: *const cf_future) -> CoreRef {
    let p = f.cast::<Core>();
    // SAFETY: `p` came from `Shared::into_raw` (future_into_raw) and is still alive, so
    // incrementing and then re-owning one count is balanced.
    unsafe {
        Shared::increment_strong_count(p);
        Shared::from_raw(p)
    }
}

/// Drops one strong reference held by C.
///
/// # Safety
/// `f` is a non-NULL handle whose reference the caller gives up.
pub(crate) unsafe fn future_release(f: *const cf_future) {
    // SAFETY: the caller owns one count, which this consumes.
    unsafe { drop(Shared::from_raw(f.cast::<Core>())) }
}

/// Boxes an owned object for C; `Err` gives it back when memory runs out.
pub(crate) fn try_box_into_raw<T>(value: T) -> Result<*mut T, T> {
    try_box(value).map(Box::into_raw)
}

/// Room for a boxed object, made before the work whose result it will hold, so that a
/// call can fail with `CF_NO_MEMORY` before it has done anything. `None` when memory
/// runs out. Fill it with `box_fill_into_raw`.
pub(crate) fn try_box_uninit<T>() -> Option<Box<MaybeUninit<T>>> {
    try_box(MaybeUninit::uninit()).ok()
}

/// Moves `value` into room from `try_box_uninit` and hands the box to C.
pub(crate) fn box_fill_into_raw<T>(room: Box<MaybeUninit<T>>, value: T) -> *mut T {
    let p = Box::into_raw(room).cast::<T>();
    // SAFETY: `p` is the box's allocation, valid for a `T` (`MaybeUninit<T>` has `T`'s
    // layout); after the write it holds an initialised `T`, which `Box::<T>::from_raw`
    // (in `box_take`) may own.
    unsafe { p.write(value) };
    p
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
