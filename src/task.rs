//! Tasks that own their data and tasks with deadlines: `cf_task`, `cf_submit_task`,
//! `cf_submit_bytes_task`, and the owned forms of a promise's result and of a done
//! callback (`cf_future_set_result_owned`, `cf_future_add_done_callback_owned`).

use crate::{
    executor::{cf_bytes_fn, cf_executor, copy_bytes, executor_pool},
    ffi::handle::{future_into_raw, future_ref},
    future::{cf_callback, cf_fn, cf_future},
    rt::{
        owned::{OwnedCallback, OwnedTask, OwnedValue, TaskDeadline},
        pool::Pool,
        shared::try_box,
        task::{Outcome, Task},
    },
    status::*,
};
use std::{
    ffi::c_void,
    time::{Duration, Instant},
};

/// A function that frees what a pointer points to, such as `free`: called exactly once
/// with the pointer it was given for (`cf_task.arg_free`, `cf_task.result_free`,
/// `cf_future_set_result_owned`, `cf_future_add_done_callback_owned`).
///
/// It may run on any thread (a worker, the thread that cancels or releases a future, a
/// pool's timer thread), so it must be safe to call there. It must not unwind out of its
/// frame. `cf_raise` inside it does nothing.
pub type cf_free_fn = Option<unsafe extern "C-unwind" fn(p: *mut c_void)>;

/// A task described in full, for `cf_submit_task`: the function and its argument, how to
/// free the argument and the result, and the task's own time limit.
///
/// Initialise it with `CF_TASK_INIT` (`{NULL, NULL, NULL, NULL, CF_FOREVER}`) and set
/// what you need; `cf_submit_task` reads it during the call only.
#[repr(C)]
pub struct cf_task {
    /// The task, required: gets `arg`, returns the future's result (as for `cf_submit`).
    pub r#fn: cf_fn,
    /// Passed to `fn`.
    pub arg: *mut c_void,
    /// Called as `arg_free(arg)` exactly once, as soon as the task is done with `arg`:
    /// right after `fn(arg)` returns, or when the task ends without running (cancelled,
    /// cancelled by `cf_executor_shutdown` with `cancel_futures`, failed by a broken
    /// pool, its deadline passed first), in whichever thread that happens. On a process
    /// pool it is called in the parent on the parent's `arg`, once the task's outcome is
    /// known. NULL: nothing to free.
    pub arg_free: cf_free_fn,
    /// Called as `result_free(result)` exactly once on the result of a task that
    /// succeeded: when the future's last reference is released (after its done
    /// callbacks), or when the result is discarded (a thread-pool task that ran past its
    /// deadline, at its end, on its worker). Never for a task that failed, was cancelled
    /// or did not run. On a process pool it is called in the parent on the pointer-sized
    /// value the worker returned. NULL: nothing to free.
    pub result_free: cf_free_fn,
    /// The task's time limit in seconds from `cf_submit_task`; negative (`CF_FOREVER`),
    /// infinite or too large to represent: none; 0: already passed (the task never runs).
    /// NaN is `CF_INVALID_ARGUMENT`.
    /// A task that has not started when it passes never runs: its future finishes with
    /// `CF_DEADLINE`. A task still running then: on a thread pool its future finishes
    /// with `CF_DEADLINE` at once (waiters wake, callbacks run, on the pool's timer
    /// thread) while the task runs on to its end on its worker, which stays busy, and its
    /// result is then discarded through `result_free`. On a process pool its worker
    /// process is killed and the pool goes on with a new one (see `cf_submit_task`).
    pub timeout: f64,
}

/// The deadline of a `timeout`: `Ok(None)` for none (negative, or too far to represent),
/// `Err` for NaN.
fn task_deadline(timeout: f64) -> Result<Option<TaskDeadline>, cf_status> {
    if timeout.is_nan() {
        return Err(CF_INVALID_ARGUMENT);
    }
    if timeout < 0.0 {
        return Ok(None);
    }
    let at = Duration::try_from_secs_f64(timeout)
        .ok()
        .and_then(|d| Instant::now().checked_add(d));
    Ok(at.map(|at| TaskDeadline {
        at,
        timeout,
        entry: None,
    }))
}

/// Submits an owned task and writes its future.
fn submit_owned(
    pool: &std::sync::Arc<Pool>,
    owned: OwnedTask,
    out: *mut *mut cf_future,
) -> cf_status {
    let owned = match try_box(owned) {
        Ok(owned) => owned,
        Err(mut owned) => {
            owned.disarm();
            return CF_NO_MEMORY;
        }
    };
    match pool.submit_owned(owned) {
        Ok(core) => {
            // SAFETY: `out` was checked non-NULL by the caller and is writable (contract).
            unsafe { *out = future_into_raw(core) };
            CF_OK
        }
        Err(e) => e.status(),
    }
}

/// Schedules `task->fn(task->arg)` with the ownership and time limit `task` describes,
/// and gives its future. `cf_submit(ex, fn, arg, &f)` is this with
/// `{fn, arg, NULL, NULL, CF_FOREVER}`.
///
/// `task` is read during the call only. On `CF_OK`, `*out` is a new future holding one
/// reference for the caller (`cf_future_release`), and from then on the library calls
/// `task->arg_free` and `task->result_free` as `cf_task` says, each exactly once.
///
/// Deadlines (`task->timeout`) cost nothing while none is due: each pool keeps one heap
/// of them and one timer thread (started at the pool's first deadline, ended by
/// `cf_executor_shutdown` with wait), which sleeps until the earliest is due; a future
/// finishes within a few milliseconds of its deadline however many are pending. A
/// future whose deadline passed finishes with `CF_DEADLINE` (code `ETIMEDOUT`, a message
/// saying which limit passed and where the task was): at once for a `timeout` of 0 (the
/// task never runs); otherwise on the pool's timer thread, which then runs its done
/// callbacks. Where the task was when its deadline passed:
/// - not started (queued, or on a process pool sent ahead to a worker): it never runs
///   (a worker process skips a task whose deadline has passed);
/// - running on a thread pool: the future finishes at once, the task runs on to its end
///   on its worker, and its result is discarded through `result_free`;
/// - running in a worker process: the worker is killed (`SIGKILL`), the pool starts a
///   new one, and the tasks sent ahead to the killed worker are sent again (none lost);
/// - running on an MPI rank (`cfutures_mpi.h`): as on a thread pool (a rank is not
///   killed; its late result is discarded).
///
/// When the call fails it has done nothing: neither free function is called and `arg`
/// is still the caller's. Returns `CF_INVALID_ARGUMENT` for NULL `ex`, `task`,
/// `task->fn` or `out`, or a NaN `timeout`; otherwise the statuses of `cf_submit`
/// (`CF_SHUTDOWN`, `CF_BROKEN`, `CF_OS_ERROR`, `CF_NO_MEMORY`: the task's record is one
/// more small allocation, and a deadline an entry in the pool's timer). Nothing is
/// written on failure. May be called from tasks and done callbacks.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cf_submit_task(
    ex: *mut cf_executor,
    task: *const cf_task,
    out: *mut *mut cf_future,
) -> cf_status {
    ffi_boundary! {
        try_nonnull!(out);
        // SAFETY: `task` is NULL or points to a readable `cf_task` (contract).
        let Some(task) = (unsafe { task.as_ref() }) else { return CF_INVALID_ARGUMENT };
        let Some(f) = task.r#fn else { return CF_INVALID_ARGUMENT };
        // SAFETY: `ex` is NULL or a live executor.
        if !unsafe { crate::executor::fn_reaches(ex, f as usize) } { return CF_INVALID_ARGUMENT; }
        // SAFETY: `ex` is NULL or a live executor.
        let Some(pool) = (unsafe { executor_pool(ex) }) else { return CF_INVALID_ARGUMENT };
        let deadline = try_status!(task_deadline(task.timeout));
        if deadline.is_none() && task.arg_free.is_none() && task.result_free.is_none() {
            // Nothing to own and no deadline: `cf_submit`'s own path.
            return match pool.submit(Task::Call(f, task.arg)) {
                Ok(core) => {
                    // SAFETY: `out` is non-NULL and writable (contract).
                    unsafe { *out = future_into_raw(core) };
                    CF_OK
                }
                Err(e) => e.status(),
            };
        }
        let owned = OwnedTask {
            work: Task::Call(f, task.arg),
            arg_free: task.arg_free,
            result_free: task.result_free,
            deadline,
        };
        submit_owned(pool, owned, out)
    }
}

/// Schedules the byte task `fn` on a copy of `len` bytes at `data`, with a time limit of
/// `timeout` seconds as `cf_task.timeout` describes (negative: none; 0: already passed;
/// NaN: `CF_INVALID_ARGUMENT`), and gives its future.
///
/// As `cf_submit_bytes` otherwise: the input is copied before the call returns (`data`
/// may be NULL when `len` is 0); the result buffer is the future's, read with
/// `cf_future_result_bytes` and freed with the future. A future whose deadline passed
/// finishes with `CF_DEADLINE` (see `cf_submit_task`; on a thread pool the late buffer is
/// freed when the task ends). Statuses as `cf_submit_task`; also `CF_INVALID_ARGUMENT`
/// for a NULL `data` with `len > 0`. Nothing is submitted or written on failure.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cf_submit_bytes_task(
    ex: *mut cf_executor,
    r#fn: cf_bytes_fn,
    data: *const c_void,
    len: usize,
    timeout: f64,
    out: *mut *mut cf_future,
) -> cf_status {
    ffi_boundary! {
        try_nonnull!(out);
        let Some(f) = r#fn else { return CF_INVALID_ARGUMENT };
        // SAFETY: `ex` is NULL or a live executor.
        if !unsafe { crate::executor::fn_reaches(ex, f as usize) } { return CF_INVALID_ARGUMENT; }
        // SAFETY: `ex` is NULL or a live executor.
        let Some(pool) = (unsafe { executor_pool(ex) }) else { return CF_INVALID_ARGUMENT };
        let deadline = try_status!(task_deadline(timeout));
        // SAFETY: `data` is NULL or `len` readable bytes (contract).
        let input = try_status!(unsafe { copy_bytes(data, len) });
        let owned = OwnedTask {
            work: Task::Bytes(f, input),
            arg_free: None,
            result_free: None,
            deadline,
        };
        submit_owned(pool, owned, out)
    }
}

/// Finishes the promise `f` with `value`, which the future then owns: `value_free(value)`
/// is called exactly once, when the future's last reference is released (after its done
/// callbacks ran). Waiters wake and done callbacks run in this thread before the call
/// returns. `value_free` may be NULL (then this is `cf_future_set_result`).
///
/// Returns `CF_OK`; `CF_INVALID_STATE` if `f` is already done (finished or cancelled):
/// then `value_free(value)` has been called, at once, in this thread; `CF_INVALID_ARGUMENT`
/// for NULL `f`, and then nothing is called.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cf_future_set_result_owned(
    f: *mut cf_future,
    value: *mut c_void,
    value_free: cf_free_fn,
) -> cf_status {
    ffi_boundary! {
        // SAFETY: `f` is NULL or a live handle.
        let Some(core) = (unsafe { future_ref(f) }) else { return CF_INVALID_ARGUMENT };
        let outcome = match value_free {
            Some(free) => Outcome::Owned(OwnedValue::new(value, free)),
            None => Outcome::Value(value),
        };
        // A refused outcome is dropped here: its value is freed at once.
        match core.finish(outcome) {
            Ok(()) => CF_OK,
            Err(_) => CF_INVALID_STATE,
        }
    }
}

/// Adds a done callback, as `cf_future_add_done_callback`, whose `userdata` is freed:
/// `userdata_free(userdata)` is called exactly once, right after `fn` has run (in the
/// same thread), or, if the future is never done (a promise nobody completed), when its
/// last reference is released. So a callback's data never leaks. `userdata_free` may be
/// NULL (then this is `cf_future_add_done_callback`).
///
/// `f` is borrowed for the call. On a done future `fn` runs at once, in this thread,
/// before the call returns. Returns `CF_OK`; on failure nothing is called:
/// `CF_INVALID_ARGUMENT` for NULL `f` or `fn`, `CF_NO_MEMORY` if the callback's slot (one
/// small allocation) cannot be made on a future not yet done.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cf_future_add_done_callback_owned(
    f: *mut cf_future,
    r#fn: cf_callback,
    userdata: *mut c_void,
    userdata_free: cf_free_fn,
) -> cf_status {
    ffi_boundary! {
        // SAFETY: `f` is NULL or a live handle.
        let Some(core) = (unsafe { future_ref(f) }) else { return CF_INVALID_ARGUMENT };
        let Some(cb) = r#fn else { return CF_INVALID_ARGUMENT };
        let cb = crate::future::engine_callback(cb);
        let Some(free) = userdata_free else {
            return if core.add_callback(cb, userdata) { CF_OK } else { CF_NO_MEMORY };
        };
        let Ok(owned) = try_box(OwnedCallback::new(cb, userdata, free)) else {
            return CF_NO_MEMORY;
        };
        match core.add_owned_callback(owned) {
            Ok(()) => CF_OK,
            Err(cb) => {
                // Not registered: nothing is called.
                (*cb).disarm();
                CF_NO_MEMORY
            }
        }
    }
}
