//! Waiting on many futures: `cf_wait` and `cf_as_completed_*`.

use crate::{
    ffi::handle::{box_take, future_clone, future_ref, try_box_into_raw},
    future::cf_future,
    rt::{
        future::{Core, CoreRef},
        many::{AsCompleted, Next, ReturnWhen, wait_many},
        shared::Shared,
        time::Deadline,
    },
    status::*,
};

/// What `cf_wait` waits for: a fixed-width integer with the `CF_*` values below; any
/// other value is `CF_INVALID_ARGUMENT`.
pub type cf_return_when = u32;
/// Return when any future is done (finished or cancelled).
pub const CF_FIRST_COMPLETED: cf_return_when = 0;
/// Return when any future fails (`CF_TASK_FAILED`, `CF_BROKEN` or `CF_DEADLINE`; a
/// cancelled one does not count), or when all are done.
pub const CF_FIRST_EXCEPTION: cf_return_when = 1;
/// Return when every future is done.
pub const CF_ALL_COMPLETED: cf_return_when = 2;

/// Borrows the `n` futures of `fs`; `CF_INVALID_ARGUMENT` for a NULL array with `n > 0`
/// or a NULL entry.
///
/// # Safety
/// `fs` is NULL or points to `n` readable entries, each NULL or a live handle.
pub(crate) unsafe fn futures<'a>(
    fs: *const *mut cf_future,
    n: usize,
) -> Result<Vec<&'a Core>, cf_status> {
    if n == 0 {
        return Ok(Vec::new());
    }
    if fs.is_null() {
        return Err(CF_INVALID_ARGUMENT);
    }
    // SAFETY: non-NULL and `n` readable entries, by the caller's guarantee.
    let entries = unsafe { std::slice::from_raw_parts(fs, n) };
    // Check every entry before allocating, so that a bad argument is reported as such.
    if entries.iter().any(|f| f.is_null()) {
        return Err(CF_INVALID_ARGUMENT);
    }
    let mut out = Vec::new();
    out.try_reserve_exact(n).map_err(|_| CF_NO_MEMORY)?;
    // SAFETY: each entry is a live handle (non-NULL, checked above).
    out.extend(entries.iter().filter_map(|&f| unsafe { future_ref(f) }));
    Ok(out)
}

/// Waits until some or all of `n` futures are done: Python's `concurrent.futures.wait`.
///
/// `when` is `CF_FIRST_COMPLETED`, `CF_FIRST_EXCEPTION` or `CF_ALL_COMPLETED`. A future
/// may appear more than once; cancelled futures count as done. Futures from executors
/// and promises mix freely. The futures are borrowed for the call.
///
/// Returns `CF_OK` once the condition holds, `CF_TIMEOUT` if `timeout` seconds passed
/// first. In both cases `done[i]` (when `done` is not NULL) says whether `fs[i]` is done
/// at return and `*n_done` (when `n_done` is not NULL) counts the done entries of `fs`
/// (duplicates counted each time). `n == 0` returns `CF_OK` at once (`fs` may then be
/// NULL). Returns `CF_INVALID_ARGUMENT`, writing nothing, for a NULL `fs` with `n > 0`,
/// a NULL entry, an unknown `when`, or a NaN timeout; `CF_NO_MEMORY`, writing nothing and
/// leaving no registration behind, when its bookkeeping (O(n), made before it waits)
/// cannot be allocated. A future whose outcome is `CF_NO_MEMORY` counts as an exception.
///
/// The wait is event-driven and costs O(n): the thread sleeps until one of its futures
/// completes. On a thread-pool worker it runs queued tasks of its pool meanwhile.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cf_wait(
    fs: *const *mut cf_future,
    n: usize,
    when: cf_return_when,
    timeout: f64,
    done: *mut bool,
    n_done: *mut usize,
) -> cf_status {
    ffi_boundary! {
        let when = match when {
            CF_FIRST_COMPLETED => ReturnWhen::FirstCompleted,
            CF_FIRST_EXCEPTION => ReturnWhen::FirstException,
            CF_ALL_COMPLETED => ReturnWhen::AllCompleted,
            _ => return CF_INVALID_ARGUMENT,
        };
        let Some(deadline) = Deadline::from_timeout(timeout) else { return CF_INVALID_ARGUMENT };
        // SAFETY: `fs` is NULL or `n` entries (contract).
        let fs = try_status!(unsafe { futures(fs, n) });
        let Ok(ok) = wait_many(&fs, when, deadline) else { return CF_NO_MEMORY };
        let mut count = 0;
        for (i, f) in fs.iter().enumerate() {
            let d = f.is_done();
            count += usize::from(d);
            if !done.is_null() {
                // SAFETY: a non-NULL `done` has room for `n` flags (contract).
                unsafe { *done.add(i) = d };
            }
        }
        if !n_done.is_null() {
            // SAFETY: non-NULL and writable (contract).
            unsafe { *n_done = count };
        }
        if ok { CF_OK } else { CF_TIMEOUT }
    }
}

/// An iteration over futures in the order they become done: Python's `as_completed`.
///
/// Owned by the caller: created by `cf_as_completed_new`, freed with
/// `cf_as_completed_free`. It holds a reference to each of its futures until freed. Use
/// one iterator from one thread at a time (any thread).
///
/// Methods: `cf_as_completed_next`, `cf_as_completed_free`.
pub struct cf_as_completed {
    inner: AsCompleted,
}

/// Starts iterating over `n` futures in completion order: those already done first
/// (in array order), then each as it becomes done. Each distinct future is yielded once.
///
/// The iterator takes its own reference to each future, so the caller may release its
/// references at once. The time limit `timeout` counts from this call. On `CF_OK`,
/// `*out` is a new iterator, freed with `cf_as_completed_free`. Returns
/// `CF_INVALID_ARGUMENT` for NULL `out`, a NULL `fs` with `n > 0`, a NULL entry, or a NaN
/// timeout; `CF_NO_MEMORY` (nothing kept, nothing registered) when memory runs out.
/// Creating it costs O(n) and allocates everything the iteration needs.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cf_as_completed_new(
    fs: *const *mut cf_future,
    n: usize,
    timeout: f64,
    out: *mut *mut cf_as_completed,
) -> cf_status {
    ffi_boundary! {
        try_nonnull!(out);
        let Some(deadline) = Deadline::from_timeout(timeout) else { return CF_INVALID_ARGUMENT };
        // SAFETY: `fs` is NULL or `n` entries (contract).
        let borrowed = try_status!(unsafe { futures(fs, n) });
        let mut owned: Vec<CoreRef> = Vec::new();
        if owned.try_reserve_exact(borrowed.len()).is_err() {
            return CF_NO_MEMORY;
        }
        // SAFETY: each is a live handle, checked above.
        owned.extend(borrowed.iter().map(|c| unsafe { future_clone((*c as *const Core).cast()) }));
        let Ok(inner) = AsCompleted::new(owned, deadline) else { return CF_NO_MEMORY };
        // Dropping the iterator when the box cannot be made undoes everything it did.
        let Ok(it) = try_box_into_raw(cf_as_completed { inner }) else { return CF_NO_MEMORY };
        // SAFETY: `out` is non-NULL and writable (contract).
        unsafe { *out = it };
        CF_OK
    }
}

/// Gives the next future to be done.
///
/// - `CF_OK`: `*f` is a done future, borrowed: valid until the iterator is freed (take a
///   reference with `cf_future_retain` to keep it longer; do not release it otherwise).
/// - `CF_TIMEOUT`: `timeout` seconds have passed since `cf_as_completed_new` and no
///   further future is done yet (a later call may still yield one that finishes).
/// - `CF_END`: every future has been yielded (and again on later calls).
/// - `CF_INVALID_ARGUMENT`: `it` or `f` is NULL.
///
/// Blocks until a future is done or the time is up; it never polls. On a thread-pool
/// worker it runs queued tasks of its pool meanwhile.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cf_as_completed_next(
    it: *mut cf_as_completed,
    f: *mut *mut cf_future,
) -> cf_status {
    ffi_boundary! {
        try_nonnull!(f);
        // SAFETY: `it` is NULL or a live iterator used by this thread only (contract).
        let Some(it) = (unsafe { it.as_mut() }) else { return CF_INVALID_ARGUMENT };
        match it.inner.next() {
            Next::Yield(core) => {
                // SAFETY: `f` is non-NULL and writable; the pointer stays valid while the
                // iterator holds its reference.
                unsafe { *f = Shared::as_ptr(core) as *mut cf_future };
                CF_OK
            }
            Next::Timeout => CF_TIMEOUT,
            Next::End => CF_END,
        }
    }
}

/// Frees the iterator and its references to the futures (which are not cancelled).
/// Futures not yet yielded keep running; their later completion touches nothing of the
/// freed iterator. NULL does nothing; do not free twice.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cf_as_completed_free(it: *mut cf_as_completed) {
    ffi_boundary! {
        // SAFETY: `it` is NULL or our live box, which the caller gives up.
        drop(unsafe { box_take(it) });
    }
}
