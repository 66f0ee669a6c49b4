//! Executors: thread pools, submitting tasks, shutdown.

use crate::{
    ffi::handle::{box_take, future_into_raw, try_box_into_raw},
    future::{cf_fn, cf_future},
    rt::{
        pool::{Config, Pool, Runner},
        process::ProcShared,
        task::Task,
    },
    status::*,
};
use std::ffi::{CStr, c_char, c_void};

/// The largest `max_workers` an executor accepts; more is `CF_INVALID_ARGUMENT`.
pub const CF_MAX_WORKERS: usize = 1024;

/// A pool of workers that runs tasks and hands back futures: Python's `Executor`.
///
/// Owned by the caller: created by `cf_thread_pool_new`, ended by `cf_executor_free`
/// (exactly once). Safe to use from any thread, including from its own tasks and from
/// done callbacks.
///
/// Methods: `cf_submit`, `cf_submit_bytes`, `cf_submit_task`, `cf_submit_bytes_task`,
/// `cf_map_new`, `cf_map_bytes_new`, `cf_executor_shutdown`, `cf_executor_worker_count`,
/// `cf_executor_broken_reason`, `cf_executor_terminate_workers`,
/// `cf_executor_kill_workers` (process pools), `cf_executor_free`.
///
/// **After `fork()`.** An executor belongs to the process that made it. In a child that
/// the program forks after making it, the executor has no workers (threads are not
/// copied by `fork`, and the worker processes are the parent's): every call that would
/// start work on it (`cf_submit`, `cf_submit_bytes`, `cf_submit_task`,
/// `cf_submit_bytes_task`, `cf_map_new`, `cf_map_bytes_new`, the lazy maps,
/// `cf_future_then` with it)
/// returns `CF_BROKEN` at once, and `cf_executor_broken_reason` says that the executor
/// belongs to process N and that a new one must be made after `fork()`. There,
/// `cf_executor_shutdown` returns `CF_OK` and does nothing, `cf_executor_worker_count`
/// is 0, and `cf_executor_free` releases the child's handle without touching the
/// parent's workers or processes (the child's copy of the executor's memory is left
/// alone, since a thread of the parent may have been changing it at the fork). A new
/// executor made in the child works as usual. (CPython's executors hang in such a
/// child.)
pub struct cf_executor {
    pool: std::sync::Arc<Pool>,
    /// The text `cf_executor_broken_reason` gives in a forked child, made there on first
    /// use.
    fork_reason: std::sync::OnceLock<std::ffi::CString>,
}

/// An initializer: called with `initarg` once in each new worker, before its first task.
/// It fails by calling `cf_raise`, which breaks the executor (see `cf_thread_pool_new`).
pub type cf_init_fn = Option<unsafe extern "C-unwind" fn(initarg: *mut c_void)>;

/// A byte task: gets a private copy of the submitted bytes (`input`, `in_len`; `input`
/// is NULL when `in_len` is 0) and returns a buffer from `malloc`, writing its length to
/// `*out_len`, or returns NULL (the length is then taken as 0). The library takes the
/// buffer over and frees it with `free` together with the future. It fails by calling
/// `cf_raise` (a buffer it returns anyway is freed).
pub type cf_bytes_fn = Option<
    unsafe extern "C-unwind" fn(
        input: *const c_void,
        in_len: usize,
        out_len: *mut usize,
    ) -> *mut c_void,
>;

/// Options for a new executor. A zero-initialised struct (or a NULL pointer) means all
/// defaults.
#[repr(C)]
pub struct cf_executor_options {
    /// Most workers at once. 0: for threads `min(32, cpus + 4)` as in Python, where cpus is
    /// the number of CPUs this process may run on. At most `CF_MAX_WORKERS`.
    pub max_workers: usize,
    /// Worker names are `"<prefix>_<n>"`, n counting from 0 in each executor, set at the
    /// OS level (visible in `top -H`, `ps -L`, gdb; Linux keeps the first 15 bytes).
    /// NULL: `"cfpool<k>"`, k numbering executors in this process. Copied at creation.
    pub name_prefix: *const c_char,
    /// Run in each new worker before its first task, with `initarg`. NULL: none.
    pub initializer: cf_init_fn,
    /// Passed to `initializer`.
    pub initarg: *mut c_void,
    /// Process pools only; must be 0 for thread pools.
    pub max_tasks_per_child: usize,
}

fn default_thread_workers() -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cpus + 4).min(32)
}

/// Creates a thread pool: Python's `ThreadPoolExecutor`.
///
/// `opts` may be NULL (all defaults) and is only read during the call. Workers start
/// lazily: a submit starts one only when no idle worker exists and fewer than
/// `max_workers` run; idle workers are reused and sleep without using CPU. Each runs
/// `opts->initializer` first; if that fails (`cf_raise`), the executor is broken: every
/// pending future finishes with `CF_BROKEN` and later submits return `CF_BROKEN`.
/// Worker threads have 8 MiB stacks.
///
/// A task that waits on a future of its own pool (`cf_future_wait`, `_result`,
/// `_exception`, `cf_wait`, `cf_as_completed_next`, `cf_map_next`) does not block its
/// worker idle: while it waits, the worker runs other queued tasks of the pool, so the
/// pool never deadlocks even when every worker waits at once (unlike CPython). A wait with
/// a timeout may then return late, once the task it ran meanwhile finishes.
///
/// On success `*out` is a new executor, freed with `cf_executor_free`. Returns
/// `CF_INVALID_ARGUMENT` if `out` is NULL, `max_workers > CF_MAX_WORKERS`, or
/// `max_tasks_per_child != 0`; `CF_NO_MEMORY` if the handle cannot be allocated (the
/// pool's own state is made with std's aborting allocations: see the preamble). No
/// thread is started here.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cf_thread_pool_new(
    opts: *const cf_executor_options,
    out: *mut *mut cf_executor,
) -> cf_status {
    ffi_boundary! {
        try_nonnull!(out);
        // SAFETY: `opts` is NULL or points to a readable options struct (contract).
        let opts = unsafe { opts.as_ref() };
        let mut config = Config { max_workers: default_thread_workers(), name_prefix: None, initializer: None };
        if let Some(o) = opts {
            if o.max_workers > CF_MAX_WORKERS || o.max_tasks_per_child != 0 {
                return CF_INVALID_ARGUMENT;
            }
            if o.max_workers != 0 {
                config.max_workers = o.max_workers;
            }
            if !o.name_prefix.is_null() {
                // SAFETY: a non-NULL prefix is a NUL-terminated string (contract).
                let prefix = unsafe { CStr::from_ptr(o.name_prefix) };
                config.name_prefix = Some(prefix.to_string_lossy().into_owned());
            }
            config.initializer = o.initializer.map(|f| (f, o.initarg));
        }
        let ex = cf_executor::new(Pool::new(config, Runner::Local));
        put_executor(ex, out)
    }
}

/// Creates a process pool: Python's `ProcessPoolExecutor`, for code that is not
/// thread-safe, may crash, or leaks.
///
/// Workers are processes of this program made with `fork`, started lazily (as for thread
/// pools) up to `max_workers` (0: the number of CPUs this process may run on). They are
/// forked from a single-threaded *fork server* that this call forks at once, so every
/// worker starts from the program as it is at this call: globals set before it are
/// visible in tasks, later changes are not; and no worker inherits a lock held by
/// another thread, even when this program has busy threads. Each worker is named
/// `"<prefix>_<n>"` (process name) and is driven by a parent thread of the same name.
///
/// `cf_submit` passes `arg` as a pointer-sized value and brings the result back as one:
/// fine for integers and for pointers into memory that existed at this call; use byte
/// tasks (`cf_submit_bytes`, `cf_map_bytes_new`) for real data (a zero-length byte result
/// arrives as NULL data). `cf_raise` in a worker carries its code and message back.
/// `opts->initializer` runs in each new worker; if it fails, the pool is broken (pending
/// futures finish with `CF_BROKEN`, later submits return `CF_BROKEN`).
/// `opts->max_tasks_per_child` (0: never) replaces a worker after that many tasks.
///
/// When every worker is busy and no more may be started, each worker is handed up to 8
/// queued tasks ahead, so that small tasks do not wait for a round trip each: like the
/// tasks in CPython's call queue, those count as running (`cf_future_running` is true)
/// and can no longer be cancelled, also not by `cf_executor_shutdown` with
/// `cancel_futures`. Their messages go to the worker only while the ones it may not have
/// read yet fit in half its socket's buffer; a larger message waits until the worker is
/// idle, so that neither side ever blocks writing to the other.
///
/// If a worker dies while running a task (a signal, `exit`), only that task's future
/// finishes, with `CF_BROKEN` and a message naming the signal or exit status; the pool
/// starts a new worker and goes on (CPython instead breaks the whole pool). Workers exit
/// when this process dies. Shutdown and `cf_executor_free` work as for thread pools and
/// leave no child process or zombie behind. Callbacks run on the parent-side thread that
/// drives the worker (or as for thread pools). Worker channels are private socket pairs;
/// byte inputs of 64 KiB or more (and their results, when no larger) travel instead
/// through a shared-memory arena private to the worker (an anonymous memfd, which the
/// worker maps and does not keep open), except in a byte-map chunk of more than one
/// item (see `cf_map_bytes_new`).
///
/// On success `*out` is a new executor, freed with `cf_executor_free`. Returns
/// `CF_INVALID_ARGUMENT` for NULL `out` or `max_workers > CF_MAX_WORKERS`,
/// `CF_OS_ERROR` (with `errno`) if the fork server could not be started, and
/// `CF_NO_MEMORY` if the handle cannot be allocated (the pool is then shut down again).
///
/// A worker that dies before it is ready (killed from outside) is started again; with an
/// initializer configured, such a death counts as the initializer failing. Under
/// AddressSanitizer, whose allocator (unlike glibc's malloc) is not reset by `fork`,
/// create process pools while no other thread may be inside `malloc`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cf_process_pool_new(
    opts: *const cf_executor_options,
    out: *mut *mut cf_executor,
) -> cf_status {
    ffi_boundary! {
        try_nonnull!(out);
        // SAFETY: `opts` is NULL or points to a readable options struct (contract).
        let opts = unsafe { opts.as_ref() };
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut config = Config { max_workers: cpus.min(CF_MAX_WORKERS), name_prefix: None, initializer: None };
        let mut init = None;
        let mut max_tasks_per_child = 0;
        if let Some(o) = opts {
            if o.max_workers > CF_MAX_WORKERS {
                return CF_INVALID_ARGUMENT;
            }
            if o.max_workers != 0 {
                config.max_workers = o.max_workers;
            }
            if !o.name_prefix.is_null() {
                // SAFETY: a non-NULL prefix is a NUL-terminated string (contract).
                let prefix = unsafe { CStr::from_ptr(o.name_prefix) };
                config.name_prefix = Some(prefix.to_string_lossy().into_owned());
            }
            init = o.initializer.map(|f| (f, o.initarg));
            max_tasks_per_child = o.max_tasks_per_child;
        }
        let shared = match ProcShared::new(init, max_tasks_per_child) {
            Ok(s) => s,
            Err(e) => return crate::rt::pool::SubmitError::Os(e).status(),
        };
        let pool = Pool::new(config, Runner::Process(shared));
        put_executor(cf_executor::new(pool), out)
    }
}

impl cf_executor {
    pub(crate) fn new(pool: std::sync::Arc<Pool>) -> cf_executor {
        cf_executor {
            pool,
            fork_reason: std::sync::OnceLock::new(),
        }
    }
}

/// Hands a new executor to C through `out` (checked non-NULL); `CF_NO_MEMORY` (after
/// shutting the executor down again) when its box cannot be made.
pub(crate) fn put_executor(ex: cf_executor, out: *mut *mut cf_executor) -> cf_status {
    match try_box_into_raw(ex) {
        Ok(p) => {
            // SAFETY: `out` is non-NULL and writable (contract).
            unsafe { *out = p };
            CF_OK
        }
        Err(ex) => {
            let _ = ex.pool.shutdown(true, false);
            CF_NO_MEMORY
        }
    }
}

/// Borrows the executor behind a handle.
///
/// # Safety
/// `ex` is NULL or a live executor handle.
unsafe fn executor_ref<'a>(ex: *const cf_executor) -> Option<&'a cf_executor> {
    // SAFETY: by the caller's guarantee.
    unsafe { ex.as_ref() }
}

/// The pool behind a handle.
///
/// # Safety
/// `ex` is NULL or a live executor handle.
pub(crate) unsafe fn executor_pool<'a>(ex: *const cf_executor) -> Option<&'a std::sync::Arc<Pool>> {
    // SAFETY: by the caller's guarantee.
    unsafe { executor_ref(ex) }.map(|e| &e.pool)
}

/// Whether a task of function `f` may go to `ex`: on an MPI executor, `f` must be in a
/// loaded object (`cfutures_mpi.h`); anything else takes any function. A NULL `ex` passes
/// (the caller reports it). Costs nothing in a build without the `mpi` feature.
///
/// # Safety
/// `ex` is NULL or a live executor handle.
#[inline(always)]
pub(crate) unsafe fn fn_reaches(ex: *const cf_executor, f: usize) -> bool {
    #[cfg(feature = "mpi")]
    {
        // SAFETY: by the caller's guarantee.
        unsafe { executor_ref(ex) }.is_none_or(|e| e.pool.accepts_fn(f))
    }
    #[cfg(not(feature = "mpi"))]
    {
        let _ = (ex, f);
        true
    }
}

/// Submits the internal task; writes the future on success.
fn submit_task(ex: &cf_executor, task: Task, out: *mut *mut cf_future) -> cf_status {
    match ex.pool.submit(task) {
        Ok(core) => {
            // SAFETY: `out` was checked non-NULL by the caller and is writable (contract).
            unsafe { *out = future_into_raw(core) };
            CF_OK
        }
        Err(e) => e.status(),
    }
}

/// Schedules `fn(arg)` and gives its future: Python's `submit`.
///
/// On `CF_OK`, `*out` is a new future holding one reference for the caller
/// (`cf_future_release`). `arg` is passed through untouched; keeping what it points to
/// alive until the task has run is the caller's business.
///
/// Returns `CF_SHUTDOWN` after `cf_executor_shutdown`, `CF_BROKEN` if an initializer
/// failed, `CF_OS_ERROR` (with `errno`) if no worker could be started and none is
/// running (with a worker running, the task waits in the queue instead),
/// `CF_NO_MEMORY` when the future (one small allocation) or room in the queue cannot be
/// allocated (nothing is submitted), `CF_INVALID_ARGUMENT` if `ex`, `fn` or `out` is
/// NULL. Nothing is written on failure.
/// May be called from tasks and done callbacks.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cf_submit(
    ex: *mut cf_executor,
    r#fn: cf_fn,
    arg: *mut c_void,
    out: *mut *mut cf_future,
) -> cf_status {
    ffi_boundary! {
        try_nonnull!(out);
        let Some(f) = r#fn else { return CF_INVALID_ARGUMENT };
        // SAFETY: `ex` is NULL or a live executor.
        if !unsafe { crate::executor::fn_reaches(ex, f as usize) } { return CF_INVALID_ARGUMENT; }
        // SAFETY: `ex` is NULL or a live executor.
        let Some(ex) = (unsafe { executor_ref(ex) }) else { return CF_INVALID_ARGUMENT };
        submit_task(ex, Task::Call(f, arg), out)
    }
}

/// Schedules the byte task `fn` on a copy of `in_len` bytes at `in`, and gives its
/// future.
///
/// The input is copied before the call returns, so the caller may reuse its buffer at
/// once; `in` may be NULL when `in_len` is 0. The task's result buffer is read with
/// `cf_future_result_bytes` (or `cf_future_result`, which gives the data pointer) and
/// freed with the future. Statuses as for `cf_submit`; also `CF_INVALID_ARGUMENT` for a
/// NULL `in` with `in_len > 0`, and `CF_NO_MEMORY`
/// when the copy or the future cannot be allocated (nothing is submitted).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cf_submit_bytes(
    ex: *mut cf_executor,
    r#fn: cf_bytes_fn,
    r#in: *const c_void,
    in_len: usize,
    out: *mut *mut cf_future,
) -> cf_status {
    ffi_boundary! {
        try_nonnull!(out);
        let Some(f) = r#fn else { return CF_INVALID_ARGUMENT };
        // SAFETY: `ex` is NULL or a live executor.
        if !unsafe { crate::executor::fn_reaches(ex, f as usize) } { return CF_INVALID_ARGUMENT; }
        // SAFETY: `ex` is NULL or a live executor.
        let Some(ex) = (unsafe { executor_ref(ex) }) else { return CF_INVALID_ARGUMENT };
        let input = try_status!(unsafe { copy_bytes(r#in, in_len) });
        submit_task(ex, Task::Bytes(f, input), out)
    }
}

pub(crate) use crate::rt::task::copy_bytes;

/// Shuts the executor down: Python's `shutdown(wait, cancel_futures)`.
///
/// No new work is accepted (`cf_submit` returns `CF_SHUTDOWN`). With `cancel_futures`,
/// every task not yet started is cancelled, and its callbacks run in this thread. With
/// `wait`, returns once every accepted task has finished and every worker has exited;
/// without it, returns at once while the workers finish the queue. May be called more
/// than once, from any thread.
///
/// Returns `CF_OK`; `CF_INVALID_STATE` when called with `wait` from one of this
/// executor's own workers (the shutdown and cancellation still happen, only the wait is
/// skipped, since a worker cannot wait for itself); `CF_INVALID_ARGUMENT` for NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cf_executor_shutdown(
    ex: *mut cf_executor,
    wait: bool,
    cancel_futures: bool,
) -> cf_status {
    ffi_boundary! {
        // SAFETY: `ex` is NULL or a live executor.
        let Some(ex) = (unsafe { executor_ref(ex) }) else { return CF_INVALID_ARGUMENT };
        ex.pool.shutdown(wait, cancel_futures)
    }
}

/// Stops a process pool's workers with `SIGTERM`: Python 3.14's
/// `ProcessPoolExecutor.terminate_workers()`.
///
/// Shuts the executor down (a later `cf_submit` returns `CF_SHUTDOWN`), cancels every
/// task that has not started (their done callbacks run in this thread, and `arg_free`
/// for `cf_submit_task` tasks), sends `SIGTERM` to every live worker process (also one
/// still starting or running its initializer), and returns once every worker has been
/// reaped and every proxy thread has exited. The futures of the tasks that were running,
/// including those handed to a worker ahead of time (`cf_future_running` true), finish
/// with `CF_BROKEN` and a message naming the signal ("... stopped with SIGTERM
/// (cf_executor_terminate_workers) ..."). Nothing stays pending, no worker is started
/// again, no zombie is left; after `cf_executor_free` no process the executor made
/// remains (the fork server too). Works after `cf_executor_shutdown` without wait (it
/// still cancels what is queued and signals the workers still running). A worker that
/// catches or ignores `SIGTERM` delays the return until it exits; use
/// `cf_executor_kill_workers` for a certain end.
///
/// Returns `CF_OK`, also when called again (it then does nothing more);
/// `CF_INVALID_ARGUMENT` for NULL, a thread pool or an MPI executor (its ranks are not
/// this process's children); `CF_BROKEN` in a child forked after
/// the executor was made (the workers are the parent's: nothing is signalled);
/// `CF_INVALID_STATE` when called from one of this executor's own threads (a done
/// callback run by it): everything above happens except the wait.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cf_executor_terminate_workers(ex: *mut cf_executor) -> cf_status {
    ffi_boundary! {
        // SAFETY: `ex` is NULL or a live executor.
        let Some(ex) = (unsafe { executor_ref(ex) }) else { return CF_INVALID_ARGUMENT };
        ex.pool.stop_workers(libc::SIGTERM)
    }
}

/// Stops a process pool's workers with `SIGKILL`: Python 3.14's
/// `ProcessPoolExecutor.kill_workers()`. Everything `cf_executor_terminate_workers`
/// says holds, with `SIGKILL` (which no worker can catch) for `SIGTERM`: the futures of
/// the tasks that were running finish with `CF_BROKEN` and a message naming `SIGKILL`.
///
/// Returns `CF_OK` (also when called again, or after `cf_executor_terminate_workers`:
/// nothing more is done); `CF_INVALID_ARGUMENT` for NULL, a thread pool or an MPI
/// executor; `CF_BROKEN`
/// in a child forked after the executor was made; `CF_INVALID_STATE` from one of this
/// executor's own threads (no wait).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cf_executor_kill_workers(ex: *mut cf_executor) -> cf_status {
    ffi_boundary! {
        // SAFETY: `ex` is NULL or a live executor.
        let Some(ex) = (unsafe { executor_ref(ex) }) else { return CF_INVALID_ARGUMENT };
        ex.pool.stop_workers(libc::SIGKILL)
    }
}

/// Ends the executor, like leaving Python's `with` block: shuts down with `wait`
/// (every accepted task runs to the end, every worker exits), then frees it.
///
/// Futures outlive their executor and stay valid. NULL does nothing. Do not use `ex`
/// afterwards, and do not free it twice. Called from one of its own workers it cannot
/// wait for itself: it shuts down without waiting, and the workers exit on their own
/// once the queue is empty.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cf_executor_free(ex: *mut cf_executor) {
    ffi_boundary! {
        // SAFETY: `ex` is NULL or our live box, which the caller gives up.
        if let Some(ex) = unsafe { box_take(ex) } {
            if ex.pool.is_foreign() {
                // A child forked after the executor was made: its copy of the pool may be
                // mid-change (a parent thread held its lock at the fork) and holds
                // references of threads that do not exist here. Leave it as it is.
                std::mem::forget(ex);
                return;
            }
            let _ = ex.pool.shutdown(true, false);
        }
    }
}

/// Why `ex` refuses new work with `CF_BROKEN`, or NULL when it does not (and for NULL).
///
/// - In a child forked after `ex` was made: "cfutures: this executor belongs to process
///   N, not to this one (a child forked after the executor was made); make a new
///   executor after fork()".
/// - After an initializer failed: "cfutures: a worker initializer failed; the executor
///   is broken" (the failing task's own code and message are in the futures that
///   finished with `CF_BROKEN`).
///
/// The text is owned by the executor and stays valid until `cf_executor_free`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cf_executor_broken_reason(ex: *const cf_executor) -> *const c_char {
    ffi_boundary! {
        // SAFETY: `ex` is NULL or a live executor.
        let Some(ex) = (unsafe { executor_ref(ex) }) else { return std::ptr::null() };
        if ex.pool.is_foreign() {
            let text = ex.fork_reason.get_or_init(|| {
                let text = format!(
                    "cfutures: this executor belongs to process {}, not to this one (a child \
                     forked after the executor was made); make a new executor after fork()",
                    ex.pool.origin_pid()
                );
                std::ffi::CString::new(text).unwrap_or_default()
            });
            return text.as_ptr();
        }
        if ex.pool.is_broken() {
            return c"cfutures: a worker initializer failed; the executor is broken".as_ptr();
        }
        std::ptr::null()
    }
}

/// How many workers are alive now (0 for NULL). Workers start lazily, so this is 0 for a
/// new executor, and 0 again after a shutdown with wait.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cf_executor_worker_count(ex: *const cf_executor) -> usize {
    ffi_boundary! {
        // SAFETY: `ex` is NULL or a live executor.
        unsafe { executor_ref(ex) }.map_or(0, |ex| ex.pool.worker_count())
    }
}
