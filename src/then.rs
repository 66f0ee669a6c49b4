//! Continuations and combinators: `cf_future_then` and `cf_when`.

use crate::{
    executor::{cf_executor, executor_pool},
    ffi::handle::{future_into_raw, future_ref},
    future::cf_future,
    rt::{
        many::ReturnWhen,
        then::{ThenError, then},
        when::when,
    },
    status::*,
    wait::{CF_ALL_COMPLETED, CF_FIRST_COMPLETED, CF_FIRST_EXCEPTION, cf_return_when},
};
use std::ffi::c_void;

/// A continuation: runs once `antecedent` is done, whatever its outcome (finished with a
/// result or an error, or cancelled), and its return value becomes the result of the
/// future that `cf_future_then` gave. It fails that future by calling `cf_raise`, as a
/// task does.
///
/// `antecedent` is borrowed for the call: read it with `cf_future_result`,
/// `cf_future_exception` or `cf_future_cancelled` (it is done, so they do not block);
/// take a reference with `cf_future_retain` to keep it longer. It must not unwind out of
/// its frame.
pub type cf_then_fn = Option<
    unsafe extern "C-unwind" fn(arg: *mut c_void, antecedent: *mut cf_future) -> *mut c_void,
>;

/// Chains `fn(arg, antecedent)` to run once `antecedent` is done, and gives the future
/// of its result (folly's and Boost.Thread's `then`).
///
/// Where it runs:
/// - `ex` a thread pool: once `antecedent` is done (at once if it already is),
///   `fn(arg, antecedent)` is submitted to `ex` and runs on one of its workers like any
///   task (`cf_executor_shutdown` with `cancel_futures` cancels it while queued).
/// - `ex` NULL: it runs in the thread that finishes or cancels `antecedent`, like a done
///   callback (in the order callbacks were added), or at once in this thread, before the
///   call returns, if `antecedent` is already done. When such inline continuations
///   finish futures that have inline continuations of their own, the first 16 levels
///   run nested and deeper ones run after the outer ones return, still in the same
///   thread before its outermost completion returns: a chain of any length runs in
///   bounded stack. (So a continuation more than 16 levels deep must not wait for the
///   continuations it triggers itself.)
///
/// The new future (`*out`, one reference for the caller, released with
/// `cf_future_release`) is pending until `fn` starts; cancelling it before then means
/// `fn` never runs. Its outcome is `fn`'s return value (`CF_OK`) or its `cf_raise`
/// (`CF_TASK_FAILED`). If `ex` is shut down while `antecedent` is not done, the new
/// future finishes with `CF_SHUTDOWN` at that moment, in the thread that shuts it down
/// (`cf_future_exception` gives `CF_SHUTDOWN`, code 0 and a message; `cf_wait` with
/// `CF_FIRST_EXCEPTION` counts it as an exception); `fn` never runs and `ex` is never
/// used again, so `ex` may be freed at once. If `ex` is broken by then, it finishes
/// with `CF_BROKEN`.
///
/// References: `antecedent` is borrowed for the call; the library keeps it alive (one
/// reference) from the moment it is done until `fn` has returned, so the caller may
/// release its own at once. While `antecedent` is pending, it holds the continuation
/// (not the other way round): if `antecedent` is freed without ever finishing (a
/// promise nobody completes), the continuation never runs and stays pending, and the
/// library's references to it are dropped. `arg` is passed through untouched.
///
/// Returns `CF_OK`; `CF_SHUTDOWN` if `ex` was already shut down and `CF_BROKEN` if it is
/// broken (no future made, as `cf_submit`); `CF_INVALID_ARGUMENT` for NULL `antecedent`,
/// `fn` or `out`, or for a process pool (`fn` gets a pointer into this process);
/// `CF_NO_MEMORY` when the future or its registration cannot be allocated (nothing
/// done). Nothing is written on failure.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cf_future_then(
    antecedent: *mut cf_future,
    ex: *mut cf_executor,
    r#fn: cf_then_fn,
    arg: *mut c_void,
    out: *mut *mut cf_future,
) -> cf_status {
    ffi_boundary! {
        try_nonnull!(out);
        let Some(f) = r#fn else { return CF_INVALID_ARGUMENT };
        let f = engine_then_fn(f);
        // SAFETY: `antecedent` is NULL or a live handle.
        let Some(ante) = (unsafe { future_ref(antecedent) }) else { return CF_INVALID_ARGUMENT };
        // SAFETY: `ex` is NULL or a live executor.
        let pool = unsafe { executor_pool(ex) };
        if pool.is_some_and(|p| p.is_process()) {
            return CF_INVALID_ARGUMENT;
        }
        match then(ante, pool, f, arg) {
            Ok(cont) => {
                // SAFETY: `out` is non-NULL and writable (contract).
                unsafe { *out = future_into_raw(cont) };
                CF_OK
            }
            Err(ThenError::Refused(e)) => e.status(),
            Err(ThenError::NoMemory) => CF_NO_MEMORY,
        }
    }
}

/// A future that finishes, with `CF_OK`, exactly when `cf_wait(fs, n, return_when, ...)`
/// would return (folly's `collect`, Boost.Thread's `when_all` / `when_any`): without a
/// thread, from the completions of `fs` themselves.
///
/// Its result (`cf_future_result`) is `(void *)(uintptr_t)i`, the index in `fs` of the
/// future that completed the condition, in the order they finished: the first done for
/// `CF_FIRST_COMPLETED`; for `CF_FIRST_EXCEPTION` the first that failed
/// (`CF_TASK_FAILED`, `CF_BROKEN`, `CF_SHUTDOWN`, `CF_NO_MEMORY`; cancelled does not
/// count), or the last done if none failed; the last done for `CF_ALL_COMPLETED`.
/// Futures already done at the call count as done together, named by the lowest index
/// among them; a future listed more than once is named by its first index. `n == 0`
/// gives a future already finished with result 0 (`fs` may then be NULL). It finishes
/// in the thread that completes the deciding future (or in this thread, before the call
/// returns, when the condition already holds), and its own callbacks run there.
///
/// `*out` holds one reference for the caller (`cf_future_release`). Until it is done,
/// it holds a reference to each future of `fs` and one registration on each that is not
/// done (so the caller may release `fs` at once); once done, whether finished or
/// cancelled (`cf_future_cancel`), it drops them. It costs O(n) at the call and O(1)
/// per completion.
///
/// Returns `CF_OK`; `CF_INVALID_ARGUMENT` for NULL `out`, a NULL `fs` with `n > 0`, a
/// NULL entry, or an unknown `return_when`; `CF_NO_MEMORY` (nothing kept, nothing
/// registered) when memory runs out. `fs` is only read during the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cf_when(
    fs: *const *mut cf_future,
    n: usize,
    return_when: cf_return_when,
    out: *mut *mut cf_future,
) -> cf_status {
    ffi_boundary! {
        try_nonnull!(out);
        let mode = match return_when {
            CF_FIRST_COMPLETED => ReturnWhen::FirstCompleted,
            CF_FIRST_EXCEPTION => ReturnWhen::FirstException,
            CF_ALL_COMPLETED => ReturnWhen::AllCompleted,
            _ => return CF_INVALID_ARGUMENT,
        };
        // SAFETY: `fs` is NULL or `n` entries (contract).
        let fs = try_status!(unsafe { crate::wait::futures(fs, n) });
        match when(&fs, mode) {
            Ok(f) => {
                // SAFETY: `out` is non-NULL and writable (contract).
                unsafe { *out = future_into_raw(f) };
                CF_OK
            }
            Err(_) => CF_NO_MEMORY,
        }
    }
}

/// A C continuation as the engine's `ThenFn`: the same function, no wrapper.
fn engine_then_fn(
    f: unsafe extern "C-unwind" fn(*mut c_void, *mut cf_future) -> *mut c_void,
) -> crate::rt::then::ThenFn {
    type CThen = unsafe extern "C-unwind" fn(*mut c_void, *mut cf_future) -> *mut c_void;
    // SAFETY: the two types differ only in the pointee of the second parameter
    // (`cf_future` and `Core`, both sized; raw pointers to sized types are ABI-compatible),
    // and the pointer the engine passes is a `Core`'s address, which is what a
    // `cf_future *` is (`ffi::handle`).
    unsafe { std::mem::transmute::<CThen, crate::rt::then::ThenFn>(f) }
}
