//! Tasks that own their data (`cf_task`): a task with `arg_free`, `result_free` and a
//! deadline; the pointer result that frees itself; the done callback whose userdata is
//! freed.
//!
//! Every free function is called from a `Drop`, so that each path that ends a task
//! (ran, cancelled, shut down, broken, deadline, future released) calls it exactly once
//! without a case of its own: `OwnedTask` calls `arg_free` when it is dropped (after
//! running, or never run), `OwnedValue` calls `result_free` when the future's slot drops
//! it (the future's last reference) or when a late result is discarded,
//! `OwnedCallback` calls `userdata_free` when its listener node is dropped (after the
//! callback ran, or with a future that never finished). A submit that fails takes the
//! task back and `disarm`s it, so that nothing is called.

use super::{
    context::call_callback,
    sync::Arc,
    task::{Outcome, Task, run_bytes, run_call},
    timer::Timer,
};
use crate::status::CF_DEADLINE;
use std::{ffi::c_void, time::Instant};

/// `cf_free_fn`.
pub(crate) type FreeFn = unsafe extern "C-unwind" fn(p: *mut c_void);

/// A done callback: `fn(future, userdata)`.
type CallbackFn = super::future::CallbackFn;

/// Calls a user free function (outside any task context, unwinding caught).
fn call_free(f: FreeFn, p: *mut c_void) {
    // SAFETY: the caller's free function with the pointer it was given for it.
    call_callback(|| unsafe { f(p) });
}

/// A pointer result with the function that frees it, called when this is dropped.
#[derive(Debug)]
pub(crate) struct OwnedValue {
    pub(crate) value: *mut c_void,
    pub(crate) free: FreeFn,
}

impl OwnedValue {
    /// `value`, to be freed with `free` when dropped.
    pub(crate) fn new(value: *mut c_void, free: FreeFn) -> OwnedValue {
        OwnedValue { value, free }
    }
}

impl Drop for OwnedValue {
    fn drop(&mut self) {
        call_free(self.free, self.value);
    }
}

/// A done callback whose userdata is freed when this is dropped (after the call, or
/// without it).
pub(crate) struct OwnedCallback {
    pub(crate) f: CallbackFn,
    pub(crate) userdata: *mut c_void,
    free: FreeFn,
}

impl OwnedCallback {
    pub(crate) fn new(f: CallbackFn, userdata: *mut c_void, free: FreeFn) -> OwnedCallback {
        OwnedCallback { f, userdata, free }
    }

    /// Drops it without calling anything (it was never registered).
    pub(crate) fn disarm(mut self) {
        self.free = no_free;
    }
}

/// A free function that frees nothing.
unsafe extern "C-unwind" fn no_free(_: *mut c_void) {}

impl Drop for OwnedCallback {
    fn drop(&mut self) {
        call_free(self.free, self.userdata);
    }
}

/// A task's deadline: when, the `timeout` it came from (for the message), and its entry
/// in the pool's timer, if registered.
pub(crate) struct TaskDeadline {
    pub(crate) at: Instant,
    pub(crate) timeout: f64,
    pub(crate) entry: Option<(Arc<Timer>, u64)>,
}

/// A task of `cf_submit_task` or `cf_submit_bytes_task`: `work` (a `Task::Call` or
/// `Task::Bytes`), the functions that free its argument and result, and its deadline.
pub(crate) struct OwnedTask {
    pub(crate) work: Task,
    pub(crate) arg_free: Option<FreeFn>,
    pub(crate) result_free: Option<FreeFn>,
    pub(crate) deadline: Option<TaskDeadline>,
}

// SAFETY: the raw pointers inside are opaque C values the caller asked us to move
// between threads (the contract).
unsafe impl Send for OwnedCallback {}

impl OwnedTask {
    /// Whether the deadline has passed (so the task must not start).
    fn expired(&self) -> bool {
        self.deadline
            .as_ref()
            .is_some_and(|d| Instant::now() >= d.at)
    }

    /// The deadline's `timeout`, or 0 without one.
    fn timeout(&self) -> f64 {
        self.deadline.as_ref().map_or(0.0, |d| d.timeout)
    }

    /// Runs the task here (unless its deadline passed first), frees the argument, and
    /// gives the outcome, a result that frees itself when `result_free` is set.
    pub(crate) fn run(self: Box<Self>) -> Outcome {
        if self.expired() {
            return deadline_outcome(self.timeout(), Where::NotStarted);
        }
        let outcome = match &self.work {
            Task::Call(f, arg) => run_call(*f, *arg),
            Task::Bytes(f, input) => run_bytes(*f, input),
            _ => unreachable!("an owned task is a call or a byte task"),
        };
        let result_free = self.result_free;
        drop(self); // arg_free, and the timer entry goes
        own(outcome, result_free)
    }

    /// On submit failure: nothing is to be called any more (`arg` is the caller's).
    pub(crate) fn disarm(&mut self) {
        self.arg_free = None;
        self.result_free = None;
    }
}

/// `outcome`, its pointer result owned by `result_free` if set.
fn own(outcome: Outcome, result_free: Option<FreeFn>) -> Outcome {
    match (outcome, result_free) {
        (Outcome::Value(v), Some(free)) => Outcome::Owned(OwnedValue::new(v, free)),
        (o, _) => o,
    }
}

impl Drop for OwnedTask {
    fn drop(&mut self) {
        if let (Some(free), Task::Call(_, arg)) = (self.arg_free.take(), &self.work) {
            call_free(free, *arg);
        }
        if let Some((timer, id)) = self.deadline.as_mut().and_then(|d| d.entry.take()) {
            timer.remove(id);
        }
    }
}

/// Where a task was when its deadline passed.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Where {
    /// It had not started.
    NotStarted,
    /// It was running on a thread pool worker (it runs on; its result is discarded).
    OnThread,
    /// It was running in the worker process with this pid, which was killed.
    InProcess(i32),
    /// It was running in the worker process with this pid, which died of something else
    /// (killed from outside, crashed, or stopped by `cf_executor_kill_workers`).
    Died(i32),
    /// It had ended in the worker process with this pid, and its answer was on the way
    /// (the late result is discarded).
    Returning(i32),
}

/// The outcome of a future whose deadline passed: `CF_DEADLINE`, `ETIMEDOUT`, and a
/// message saying which limit passed and where the task was.
pub(crate) fn deadline_outcome(timeout: f64, at: Where) -> Outcome {
    let place = match at {
        Where::NotStarted => "before it started".to_owned(),
        Where::OnThread => {
            "while it ran on a thread pool worker; its result will be discarded".to_owned()
        }
        Where::InProcess(pid) => {
            format!("while it ran in worker process {pid}, which was killed (SIGKILL)")
        }
        Where::Died(pid) => format!("while it ran in worker process {pid}, which died"),
        Where::Returning(pid) => format!(
            "as its result came back from worker process {pid}; the result will be \
             discarded"
        ),
    };
    Outcome::failed(
        CF_DEADLINE,
        libc::ETIMEDOUT,
        &format!("cfutures: the task's deadline of {timeout} s passed {place}"),
    )
}

impl Task {
    /// What goes to a worker process: the task itself, or an owned task's work.
    pub(crate) fn wire(&self) -> &Task {
        match self {
            Task::Owned(o) => &o.work,
            other => other,
        }
    }

    /// A worker process's outcome for this task, its pointer result owned by the task's
    /// `result_free` if it has one.
    pub(crate) fn adopt(&self, outcome: Outcome) -> Outcome {
        match self {
            Task::Owned(o) => own(outcome, o.result_free),
            _ => outcome,
        }
    }

    /// For a process pool about to send a task it has started: the task, or, when its
    /// deadline has passed, the outcome to finish its future with (the task is dropped:
    /// it never runs).
    pub(crate) fn unless_expired(self) -> Result<Task, Outcome> {
        match self {
            Task::Owned(o) if o.expired() => Err(deadline_outcome(o.timeout(), Where::NotStarted)),
            other => Ok(other),
        }
    }
}
