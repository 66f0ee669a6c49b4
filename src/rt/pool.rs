//! Thread pools: a FIFO queue of futures, lazily started workers, idle reuse, shutdown,
//! broken state, and help-while-waiting.
//!
//! # Protocol (all counters under `Pool::state`)
//!
//! - `workers` counts live workers (and ones being started); `idle` counts workers that
//!   are not running a task: new ones, ones finishing a task's callbacks, sleepers.
//!   `sleepers` are idle workers parked for want of work; `helpers` are workers blocked
//!   inside a task, on a future, that can run queued tasks meanwhile.
//! - `submit` pushes the future, then acts only if the queue holds more tasks than there
//!   are idle workers awake (`idle - sleepers`): it wakes one sleeper; else starts a
//!   worker if fewer than `max_workers` run; else wakes one helper. So a worker is woken
//!   only when one is needed, and submitting and waiting in sequence keeps one worker.
//! - A worker counts itself idle again *before* it publishes a task's outcome, so the
//!   thread that sees the outcome and submits again finds it idle (Python's
//!   `test_idle_thread_reuse`), and it pops its next task in the same critical section:
//!   one lock per task on each side. No lock is held while a task or callback runs.
//! - A sleeper parks after pushing itself on `sleepers` under the lock; the waker pops it
//!   under the lock and unparks it after. A spurious wake-up finds itself still listed and
//!   removes itself.
//! - Shutdown sets `shutdown`, optionally cancels everything queued, and wakes every
//!   sleeper; workers exit when shut down (or broken) and the queue is empty.

use super::{
    context::{UserError, call_task},
    fork::Origin,
    future::{Core, CoreRef},
    owned::{OwnedTask, Where, deadline_outcome},
    sync::{
        Arc, AtomicUsize, Condvar, Mutex, MutexGuard, Ordering, Thread, lock, statics, thread,
        thread_local,
    },
    task::{Outcome, Task},
    timer::Timer,
};
use crate::status::{CF_BROKEN, CF_INVALID_STATE, CF_OK, CF_OS_ERROR, CF_SHUTDOWN, cf_status};
use crossbeam_utils::CachePadded;
use std::{
    cell::Cell,
    collections::VecDeque,
    ffi::{CStr, c_void},
    io, ptr,
    time::{Duration, Instant},
};

/// `cf_init_fn`.
pub(crate) type InitFn = unsafe extern "C-unwind" fn(initarg: *mut c_void);

mod worker;
use worker::worker_main;

/// Stack size of worker threads: the usual pthread default on Linux, since C code expects
/// it (Rust's own default is 2 MiB). Untouched pages cost nothing.
const WORKER_STACK: usize = 8 << 20;

/// How long an idle worker spins for new work before it sleeps.
const SPIN_FOR: Duration = Duration::from_micros(100);

/// Most tasks a worker takes from the queue at once.
const MAX_BATCH: usize = 16;

/// How deeply a worker nests tasks it runs while waiting (see `help_once`).
const MAX_HELP_DEPTH: usize = 128;

/// Pool numbers for default thread names.
static POOL_IDS: statics::AtomicUsize = statics::AtomicUsize::new(0);

/// Waits for a result that found it not ready yet, in this process (`note_wait`). An idle
/// worker spins for new work only if some thread waited since it last looked: see
/// `worker_main`.
static WAITS: statics::AtomicUsize = statics::AtomicUsize::new(0);

/// Called by a worker that runs a continuation (`rt::then`).
pub(crate) fn note_continuation() {
    CHAINED.with(|c| c.set(true));
}

/// Called by a thread about to wait for a future or a multi-wait that is not ready, and
/// by a lazy map's reader when it refills (`rt::lazy`): either will likely submit again
/// soon after a result arrives.
pub(crate) fn note_wait() {
    WAITS.fetch_add(1, Ordering::Relaxed);
}

thread_local! {
    /// The pool whose worker this thread is, or NULL. Valid while set: the worker's
    /// `Arc<Pool>` lives on its stack for the whole of `worker_main`.
    static WORKER_OF: Cell<*const Pool> = const { Cell::new(ptr::null()) };
    /// This worker's batch (see `Local`), if this thread is a worker.
    static MY_LOCAL: std::cell::RefCell<Option<Local>> = const { std::cell::RefCell::new(None) };
    /// How many tasks this thread runs nested inside waits.
    static HELP_DEPTH: Cell<usize> = const { Cell::new(0) };
    /// Whether this worker ran a continuation (`note_continuation`) since it last looked
    /// for work: its chain is likely to go on (see `worker_main`).
    static CHAINED: Cell<bool> = const { Cell::new(false) };
    /// Whether `push_local` put something in this worker's batch since its loop last
    /// looked there (so that the loop takes that lock only then).
    static PUSHED_LOCAL: Cell<bool> = const { Cell::new(false) };
}

/// What a new worker tells the thread that started it, once the worker has registered
/// every thread-exit destructor it needs (std's own for the thread, the block cache's
/// magazines, its batch). glibc allocates to register one and aborts the process when it
/// cannot; so this happens while the submit that started the worker is still in the
/// library, not at some later moment when the program may have used up its memory (a
/// test that lowered `RLIMIT_AS` right after its first submit crashed 7 times in 40 when
/// the worker ran late). Spurious wake-ups of the spawner are handled by its loop, and a
/// late `unpark` only makes one later park return early, which every park re-checks.
/// (The thread pools' workers and the deadline timer's thread use it; process-pool
/// proxies signal, but their spawner does not wait, see `Pool::spawn`.)
pub(crate) struct Started {
    flag: Arc<AtomicUsize>,
    /// The thread to wake; `None` when the spawner does not wait.
    spawner: Option<Thread>,
}

/// The spawner's side of `Started`.
pub(crate) struct StartWait(Arc<AtomicUsize>);

impl Started {
    /// A signal for a thread about to be spawned from this one, and the wait for it if
    /// the spawner `waits` (if not, the signal wakes nobody).
    pub(crate) fn new(waits: bool) -> (Started, Option<StartWait>) {
        let flag = Arc::new(AtomicUsize::new(0));
        let signal = Started {
            flag: Arc::clone(&flag),
            spawner: waits.then(thread::current),
        };
        (signal, waits.then_some(StartWait(flag)))
    }

    /// Called by the new thread once its destructors are registered.
    pub(crate) fn signal(self) {
        self.flag.store(1, Ordering::Release);
        // Not under loom, whose `unpark` would also wake a thread blocked on a mutex;
        // the models check the pool's protocols, not glibc's registrations.
        if let (false, Some(t)) = (cfg!(cfutures_loom), self.spawner) {
            t.unpark();
        }
    }
}

impl StartWait {
    /// Parks until the new thread has signalled (it does so first thing, so a spawner
    /// holding a lock the new thread takes later cannot deadlock on it).
    pub(crate) fn wait(self) {
        if cfg!(cfutures_loom) {
            return;
        }
        while self.0.load(Ordering::Acquire) == 0 {
            thread::park();
        }
    }
}

/// Where a pool's tasks run.
pub(crate) enum Runner {
    /// On the worker threads themselves.
    Local,
    /// In worker processes, one per worker thread, which acts as its proxy.
    Process(super::process::ProcShared),
}

/// What the executor was configured with.
pub(crate) struct Config {
    pub(crate) max_workers: usize,
    pub(crate) name_prefix: Option<String>,
    pub(crate) initializer: Option<(InitFn, *mut c_void)>,
}

/// Why the pool refused a task.
#[derive(Debug)]
pub(crate) enum SubmitError {
    Shutdown,
    Broken,
    NoMemory,
    Os(io::Error),
    /// The caller is a process forked after the pool was made (`Pool::is_foreign`).
    Forked,
}

impl SubmitError {
    /// The status `cf_submit` returns (for `Os`, after setting `errno`).
    pub(crate) fn status(&self) -> cf_status {
        match self {
            SubmitError::Shutdown => CF_SHUTDOWN,
            SubmitError::Broken | SubmitError::Forked => CF_BROKEN,
            SubmitError::NoMemory => crate::status::CF_NO_MEMORY,
            SubmitError::Os(e) => {
                if let Some(code) = e.raw_os_error() {
                    // SAFETY: errno is this thread's; writing it is what C code expects.
                    unsafe { *libc::__errno_location() = code };
                }
                CF_OS_ERROR
            }
        }
    }
}

/// The result of one attempt to help while waiting.
pub(crate) enum Help {
    /// Ran a queued task.
    Ran,
    /// The queue was empty; this thread is now a helper `submit` may wake.
    Registered,
    /// Nested too deeply to help.
    Cannot,
}

/// A worker's batch: tasks it took from the queue at once and has not started yet.
type Local = Arc<Mutex<VecDeque<CoreRef>>>;

struct State {
    queue: VecDeque<CoreRef>,
    /// Every live worker's batch, for stealing, shutdown and breaking.
    locals: Vec<Local>,
    workers: usize,
    idle: usize,
    sleepers: Vec<Thread>,
    helpers: Vec<Thread>,
    handles: Vec<thread::JoinHandle<()>>,
    next_index: usize,
    shutdown: bool,
    broken: bool,
}

/// A thread pool.
pub(crate) struct Pool {
    state: Mutex<State>,
    /// `state.queue.len()`, mirrored after every change under the lock, so that a worker
    /// spinning before it sleeps can watch for work without taking the lock. Only a hint:
    /// every decision is re-checked under the lock.
    queued: CachePadded<AtomicUsize>,
    /// Workers spinning in `spin_for_work` now, and how many may.
    spinners: AtomicUsize,
    max_spinners: usize,
    /// CPUs this process may use.
    cpus: usize,
    /// Signalled (under `state`) each time a worker exits.
    exited: Condvar,
    max_workers: usize,
    prefix: String,
    initializer: Option<(InitFn, usize)>,
    runner: Runner,
    /// The process the pool was made in: only there does it have workers.
    origin: Origin,
    /// The deadlines of this pool's tasks (`cf_task.timeout`); its thread starts at the
    /// first one.
    timer: Arc<Timer>,
    /// Continuations waiting for their antecedent (`rt::then`), finished at shutdown.
    pub(crate) conts: super::then::Conts,
}

impl Drop for Pool {
    fn drop(&mut self) {
        // The timer thread (if any) exits on its own; a shutdown with wait joined it.
        drop(self.timer.stop());
    }
}

enum Action {
    Nothing,
    Wake(Thread),
    Spawn(usize),
}

/// In a freshly forked child: this thread is no pool's worker there.
pub(crate) fn forget_worker_identity() {
    WORKER_OF.with(|w| w.set(ptr::null()));
    HELP_DEPTH.with(|d| d.set(0));
}

/// The pool the current thread works for, if it is a worker.
pub(crate) fn current_worker_pool() -> Option<&'static Pool> {
    let p = WORKER_OF.with(|w| w.get());
    // SAFETY: see `WORKER_OF`: the pointer is set only while the worker's Arc is alive
    // on this very thread, and every caller is on this thread, below `worker_main`.
    unsafe { p.as_ref() }
}

impl Pool {
    /// A pool with no worker yet.
    pub(crate) fn new(config: Config, runner: Runner) -> Arc<Pool> {
        // Make the calling thread's std handle now, while there is memory for it (its
        // first blocking wait would otherwise allocate it, and std aborts if it cannot):
        // the thread that makes an executor is usually one that waits on its futures.
        drop(thread::current());
        // Likewise the registration of its small-block cache (`rt::blocks`).
        #[cfg(not(cfutures_loom))]
        super::blocks::arm_thread();
        let id = POOL_IDS.fetch_add(1, Ordering::Relaxed);
        let cpus = thread::available_parallelism().map_or(1, |n| n.get());
        let prefix = config.name_prefix.unwrap_or_else(|| format!("cfpool{id}"));
        // A running task on an MPI executor expires as on a thread pool (see `timer`).
        let timer = Timer::new(
            matches!(&runner, Runner::Process(p) if !p.is_mpi()),
            format!("{prefix}_timer"),
        );
        Arc::new(Pool {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                locals: Vec::new(),
                workers: 0,
                idle: 0,
                sleepers: Vec::new(),
                helpers: Vec::new(),
                handles: Vec::new(),
                next_index: 0,
                shutdown: false,
                broken: false,
            }),
            queued: CachePadded::new(AtomicUsize::new(0)),
            spinners: AtomicUsize::new(0),
            max_spinners: (cpus / 2).max(1),
            cpus,
            exited: Condvar::new(),
            max_workers: config.max_workers,
            prefix,
            initializer: config.initializer.map(|(f, a)| (f, a as usize)),
            runner,
            origin: Origin::here(),
            timer,
            conts: super::then::Conts::new(),
        })
    }

    /// Whether tasks run in worker processes (`cf_process_pool_new`).
    pub(crate) fn is_process(&self) -> bool {
        matches!(self.runner, Runner::Process(_))
    }

    #[cfg(feature = "mpi")]
    /// Whether a task of function `f` may be submitted: an MPI executor takes only
    /// functions in loaded objects (see `ProcShared::accepts_fn`).
    pub(crate) fn accepts_fn(&self, f: usize) -> bool {
        match &self.runner {
            Runner::Process(p) => p.accepts_fn(f),
            Runner::Local => true,
        }
    }

    /// Live workers (none in a process forked after the pool was made).
    pub(crate) fn worker_count(&self) -> usize {
        if self.is_foreign() {
            return 0;
        }
        lock(&self.state).workers
    }

    /// Whether the caller runs in a process forked after this pool was made (by the
    /// program's own `fork()`): the pool has no worker there, and its lock may have been
    /// held by a thread that does not exist there, so nothing may touch its state.
    #[inline]
    pub(crate) fn is_foreign(&self) -> bool {
        self.origin.is_foreign()
    }

    /// Whether an initializer failed (`break_pool`).
    pub(crate) fn is_broken(&self) -> bool {
        lock(&self.state).broken
    }

    /// The id of the process the pool was made in.
    pub(crate) fn origin_pid(&self) -> libc::pid_t {
        self.origin.pid()
    }

    /// Queues a task; returns its future.
    #[inline] // inlined into `cf_submit` whatever codegen unit each lands in (bench W1)
    pub(crate) fn submit(self: &Arc<Self>, task: Task) -> Result<CoreRef, SubmitError> {
        if self.is_foreign() {
            return Err(SubmitError::Forked);
        }
        let core = Core::with_task(task).ok_or(SubmitError::NoMemory)?;
        self.submit_core(core, |_| Ok(()))
    }

    /// Queues a task that owns its data or has a deadline (`cf_submit_task`); returns
    /// its future. On failure nothing of the task's was called: it is taken back and
    /// disarmed. A deadline already passed finishes the future at once (never queued).
    pub(crate) fn submit_owned(
        self: &Arc<Self>,
        mut owned: Box<OwnedTask>,
    ) -> Result<CoreRef, SubmitError> {
        if self.is_foreign() {
            owned.disarm();
            return Err(SubmitError::Forked);
        }
        let deadline = owned.deadline.as_ref().map(|d| (d.at, d.timeout));
        let passed = deadline.is_some_and(|(at, _)| at <= std::time::Instant::now());
        let mut id = None;
        if let (Some(d), false) = (owned.deadline.as_mut(), passed) {
            let n = self.timer.next_id();
            d.entry = Some((Arc::clone(&self.timer), n));
            id = Some(n);
        }
        let core = match Core::with_task_or_back(Task::Owned(owned)) {
            Ok(core) => core,
            Err(task) => {
                disarm(task);
                return Err(SubmitError::NoMemory);
            }
        };
        let result = if passed {
            let mut st = lock(&self.state);
            Self::accept(&mut st, 0).map(|()| core.clone())
        } else {
            self.submit_core(core.clone(), |pool| match (id, deadline) {
                (Some(id), Some((at, timeout))) => {
                    pool.timer
                        .add(id, Arc::downgrade(pool), at, timeout, core.clone())
                }
                _ => Ok(()),
            })
        };
        match result {
            Ok(core) => {
                if passed {
                    let timeout = deadline.map_or(0.0, |d| d.1);
                    core.expire(true, |_| deadline_outcome(timeout, Where::NotStarted));
                }
                Ok(core)
            }
            Err(e) => {
                // Nobody else has seen the task (or, after a failed worker start, taken
                // it): take it back, so that its drop calls nothing.
                if let Some(task) = core.start() {
                    disarm(task);
                }
                Err(e)
            }
        }
    }

    /// For the timer: the deadline of `core`, whose task runs in a worker process, has
    /// passed (see `ProcShared::deadline_passed_running`).
    pub(crate) fn deadline_passed_running(&self, core: &CoreRef, timeout: f64) {
        if let Runner::Process(shared) = &self.runner {
            shared.deadline_passed_running(core, timeout);
        }
    }

    /// Queues a future made earlier that holds its task (a continuation whose antecedent
    /// is done, see `rt::then`); gives it back.
    #[inline]
    pub(crate) fn enqueue(self: &Arc<Self>, core: CoreRef) -> Result<CoreRef, SubmitError> {
        if self.is_foreign() {
            return Err(SubmitError::Forked);
        }
        self.submit_core(core, |_| Ok(()))
    }

    /// Queues a future made for a task. `before_queue` runs under the pool's lock once
    /// the pool accepts the task (`cf_submit_task` registers a deadline there, so that
    /// no worker can take the task first and no deadline is left for a task refused).
    #[inline]
    fn submit_core(
        self: &Arc<Self>,
        core: CoreRef,
        before_queue: impl FnOnce(&Arc<Self>) -> Result<(), SubmitError>,
    ) -> Result<CoreRef, SubmitError> {
        // The queue's reference is made before taking the lock, which submitters on other
        // threads and the workers contend for: less time holding it.
        let queued = core.clone();
        let mut st = lock(&self.state);
        Self::accept(&mut st, 1)?;
        before_queue(self)?;
        st.queue.push_back(queued);
        self.sync_queued(&st.queue);
        match self.plan(&mut st) {
            Action::Nothing => {}
            Action::Wake(t) => {
                drop(st);
                t.unpark();
            }
            Action::Spawn(index) => {
                drop(st);
                if let Err(e) = self.spawn(index) {
                    return self
                        .spawn_failed(std::slice::from_ref(&core), e)
                        .map(|()| core);
                }
            }
        }
        Ok(core)
    }

    /// On a worker of this (thread) pool: puts `core` (a continuation whose antecedent
    /// this worker just finished, see `rt::then`) in the worker's own batch, to run right
    /// after its current task without the queue's lock. Elsewhere, or without memory,
    /// gives it back, to be queued.
    pub(crate) fn push_local(&self, core: CoreRef) -> Result<(), CoreRef> {
        if !ptr::eq(WORKER_OF.with(|w| w.get()), self) || self.is_process() {
            return Err(core);
        }
        MY_LOCAL.with(|m| match m.try_borrow().ok().as_deref() {
            Some(Some(local)) => {
                let mut l = lock(local);
                if l.try_reserve(1).is_err() {
                    return Err(core);
                }
                l.push_back(core);
                PUSHED_LOCAL.with(|p| p.set(true));
                Ok(())
            }
            _ => Err(core),
        })
    }

    /// Whether `n` more tasks may be queued now (under the lock): not broken, not shut
    /// down, and room in the queue for them.
    fn accept(st: &mut State, n: usize) -> Result<(), SubmitError> {
        if st.broken {
            return Err(SubmitError::Broken);
        }
        if st.shutdown {
            return Err(SubmitError::Shutdown);
        }
        st.queue.try_reserve(n).map_err(|_| SubmitError::NoMemory)
    }

    /// Queues several tasks at once, under one lock, with the wake-ups and worker starts
    /// that as many `submit`s in a row would make; returns their futures in order. All or
    /// nothing: on an error none of them is queued (a worker that cannot be started with
    /// no other alive takes them back out, as `submit` does) and the tasks are dropped.
    pub(crate) fn submit_batch(
        self: &Arc<Self>,
        tasks: Vec<Task>,
    ) -> Result<Vec<CoreRef>, SubmitError> {
        if self.is_foreign() {
            return Err(SubmitError::Forked);
        }
        let mut cores = Vec::new();
        let mut actions = Vec::new();
        cores
            .try_reserve_exact(tasks.len())
            .and_then(|()| actions.try_reserve_exact(tasks.len()))
            .map_err(|_| SubmitError::NoMemory)?;
        for task in tasks {
            cores.push(Core::with_task(task).ok_or(SubmitError::NoMemory)?);
        }
        let mut st = lock(&self.state);
        Self::accept(&mut st, cores.len())?;
        st.queue.extend(cores.iter().cloned());
        self.sync_queued(&st.queue);
        // What one `submit` per task would have done: `plan` until it has nothing more
        // to do (once it returns `Nothing`, it would for the rest as well).
        for _ in 0..cores.len() {
            match self.plan(&mut st) {
                Action::Nothing => break,
                action => actions.push(action),
            }
        }
        drop(st);
        for action in actions {
            match action {
                Action::Nothing => {}
                Action::Wake(t) => t.unpark(),
                Action::Spawn(index) => {
                    if let Err(e) = self.spawn(index) {
                        // (With none alive, no other start is pending either: a pending
                        // one counts in `workers`.)
                        self.spawn_failed(&cores, e)?;
                    }
                }
            }
        }
        Ok(cores)
    }

    /// For a worker that just took work (under the lock): if work is still queued and no
    /// other idle worker is awake to take it, wake one sleeper. The caller unparks the
    /// returned thread after unlocking. This passes wake-ups along from worker to worker
    /// instead of leaving them to `submit`.
    fn chain_wake(&self, st: &mut State) -> Option<Thread> {
        if st.queue.is_empty() || st.idle > st.sleepers.len() {
            return None;
        }
        st.sleepers.pop()
    }

    /// Mirrors whether the queue is empty into `queued` (under the lock), writing only
    /// when that changes: a spinning worker reads `queued` in a loop, and a store per
    /// submit would pull its cache line away from that worker on every task.
    fn sync_queued(&self, queue: &VecDeque<CoreRef>) {
        let v = usize::from(!queue.is_empty());
        if self.queued.load(Ordering::Relaxed) != v {
            self.queued.store(v, Ordering::Relaxed);
        }
    }

    /// Pops the next queued future (under the lock), keeping `queued` in step.
    fn pop(&self, st: &mut State) -> Option<CoreRef> {
        let job = st.queue.pop_front();
        self.sync_queued(&st.queue);
        job
    }

    /// Takes every queued future, and every batched one (under the lock).
    fn take_all(&self, st: &mut State) -> Vec<CoreRef> {
        let mut all: Vec<_> = st.queue.drain(..).collect();
        self.sync_queued(&st.queue);
        for local in &st.locals {
            all.extend(lock(local).drain(..));
        }
        all
    }

    /// Decides, under the lock, who runs the task just queued.
    fn plan(&self, st: &mut State) -> Action {
        let awake_idle = st.idle - st.sleepers.len();
        if st.queue.len() <= awake_idle {
            return Action::Nothing;
        }
        if !st.sleepers.is_empty() {
            // With an idle worker awake (spinning, or finishing a task's callbacks), that
            // worker takes a task and wakes the next sleeper itself if it leaves work
            // behind (`chain_wake`): the submitting thread pays for no wake-up, and a
            // burst does not make every submit wake a worker that finds one task and
            // sleeps again. With none awake, wake one here.
            if awake_idle > 0 {
                return Action::Nothing;
            }
            return Action::Wake(st.sleepers.pop().expect("not empty"));
        }
        if st.workers < self.max_workers {
            // Room for every worker in the sleeper and helper lists, made now (starting a
            // worker allocates anyway): a worker going to sleep or helping never
            // allocates, so it cannot abort when a task has used up the heap.
            let workers = st.workers + 1;
            let (sl, hl) = (st.sleepers.len(), st.helpers.len());
            st.sleepers.reserve(workers.saturating_sub(sl));
            st.helpers.reserve(workers.saturating_sub(hl));
            st.workers += 1;
            st.idle += 1;
            st.next_index += 1;
            return Action::Spawn(st.next_index - 1);
        }
        match st.helpers.pop() {
            Some(t) => Action::Wake(t),
            None => Action::Nothing,
        }
    }

    fn spawn(self: &Arc<Self>, index: usize) -> io::Result<()> {
        let pool = Arc::clone(self);
        let name = format!("{}_{}", self.prefix, index);
        let process = match &self.runner {
            Runner::Local => None,
            Runner::Process(shared) => Some(shared.spawn_worker(&name)?),
        };
        // The worker process is handed over through a slot, so that it can be taken back
        // and reaped if its thread cannot be started (else it would stay a zombie).
        let slot = Arc::new(Mutex::new(process));
        let theirs = Arc::clone(&slot);
        let (signal, started) = Started::new(!self.is_process());
        let spawned = thread::Builder::new()
            .name(name)
            .stack_size(WORKER_STACK)
            .spawn(move || {
                let process = lock(&theirs).take();
                drop(theirs);
                worker_main(pool, process, signal)
            });
        let handle = match spawned {
            Ok(handle) => handle,
            Err(e) => {
                if let (Runner::Process(shared), Some(p)) = (&self.runner, lock(&slot).take()) {
                    shared.discard_worker(p);
                }
                return Err(e);
            }
        };
        lock(&self.state).handles.push(handle);
        // Wait until the new thread has registered its thread-exit destructors (`Started`),
        // as Python's `Thread.start()` waits for its thread to run. Not for a process
        // pool's proxy (`started` is `None`): its start already waited for the fork
        // server, and the wait changed how process pools send tasks ahead to busy workers,
        // which their fault tests rely on.
        if let Some(started) = started {
            started.wait();
        }
        Ok(())
    }

    /// The OS refused a thread. With another worker alive, the task stays queued; with
    /// none, the submit fails and takes its task back, and any other task queued in the
    /// meantime (by submits that counted on the worker we could not start) is broken.
    /// (`batch`: the tasks of that submit, taken back together.)
    fn spawn_failed(&self, batch: &[CoreRef], e: io::Error) -> Result<(), SubmitError> {
        let mut st = lock(&self.state);
        st.workers -= 1;
        st.idle -= 1;
        self.exited.notify_all();
        if st.workers > 0 || self.workers_stopped() {
            // (Stopped workers: the task was accepted before, and cancelled since.)
            return Ok(());
        }
        st.queue
            .retain(|f| !batch.iter().any(|b| CoreRef::ptr_eq(f, b)));
        let stranded = self.take_all(&mut st);
        drop(st);
        let message = format!("no worker thread could be started: {e}");
        for f in stranded {
            let _ = f.finish(Outcome::failed(CF_BROKEN, 0, &message));
        }
        Err(SubmitError::Os(e))
    }

    /// Marks the pool broken after an initializer failed and fails every queued task.
    pub(crate) fn break_pool(&self, e: UserError) {
        let (code, message) = match e {
            UserError::Raised(r) => (
                r.code,
                r.message
                    .as_deref()
                    .map(CStr::to_string_lossy)
                    .unwrap_or_default()
                    .into_owned(),
            ),
            UserError::Unwound => (0, "it unwound".to_owned()),
        };
        let message = if message.is_empty() {
            "a worker initializer failed; the executor is broken".to_owned()
        } else {
            format!("a worker initializer failed ({message}); the executor is broken")
        };
        let (queued, sleepers) = {
            let mut st = lock(&self.state);
            st.broken = true;
            self.conts.mark_broken();
            let q = self.take_all(&mut st);
            (q, std::mem::take(&mut st.sleepers))
        };
        for t in sleepers {
            t.unpark();
        }
        for f in queued {
            let _ = f.finish(Outcome::failed(CF_BROKEN, code, &message));
        }
    }

    /// Whether `stop_workers` was called (a process pool's workers are stopped).
    fn workers_stopped(&self) -> bool {
        matches!(&self.runner, Runner::Process(p) if p.is_stopped())
    }

    /// `cf_executor_terminate_workers` (`SIGTERM`) and `cf_executor_kill_workers`
    /// (`SIGKILL`): shuts down, cancels every queued task, sends `signal` to every live
    /// worker process, then waits (as `shutdown` with wait) until every proxy thread has
    /// reaped its worker and exited. Tasks that a proxy held (running, sent ahead, or
    /// about to be sent) finish with `CF_BROKEN` naming the signal (`proxy`). Only the
    /// first call does anything (`CF_OK` after); `CF_INVALID_ARGUMENT` on a thread pool,
    /// `CF_BROKEN` in a process forked after the pool was made (the workers are the
    /// parent's), `CF_INVALID_STATE` from one of the pool's own threads (no wait).
    pub(crate) fn stop_workers(&self, signal: i32) -> cf_status {
        if self.is_foreign() {
            return CF_BROKEN;
        }
        let Runner::Process(shared) = &self.runner else {
            return crate::status::CF_INVALID_ARGUMENT;
        };
        if shared.is_mpi() {
            // MPI ranks are not this process's children (MPI.md).
            return crate::status::CF_INVALID_ARGUMENT;
        }
        if shared.is_stopped() {
            return CF_OK;
        }
        // Shut down and cancel what is queued first, so that no proxy takes more work,
        // then stop the workers, then wait for the proxies.
        let _ = self.shutdown(false, true);
        if !shared.stop_workers(signal) {
            return CF_OK;
        }
        self.shutdown(true, false)
    }

    /// `cf_executor_shutdown`. In a process forked after the pool was made it does
    /// nothing: the workers and the queue are the parent's.
    pub(crate) fn shutdown(&self, wait: bool, cancel_futures: bool) -> cf_status {
        if self.is_foreign() {
            return CF_OK;
        }
        let (cancelled, sleepers) = {
            let mut st = lock(&self.state);
            st.shutdown = true;
            let c: Vec<_> = if cancel_futures {
                self.take_all(&mut st)
            } else {
                Vec::new()
            };
            (c, std::mem::take(&mut st.sleepers))
        };
        for t in sleepers {
            t.unpark();
        }
        for f in cancelled {
            f.cancel();
        }
        // Continuations whose antecedent is not done will never run here.
        self.conts.shut();
        if !wait {
            return CF_OK;
        }
        if ptr::eq(WORKER_OF.with(|w| w.get()), self) {
            return CF_INVALID_STATE;
        }
        let handles = std::mem::take(&mut lock(&self.state).handles);
        for h in handles {
            let _ = h.join();
        }
        let mut st = lock(&self.state);
        while st.workers > 0 {
            st = self.exited.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        drop(st);
        if let Runner::Process(shared) = &self.runner {
            shared.close_server();
        }
        // Every task has finished: the timer has nothing left to do.
        if let Some(t) = self.timer.stop() {
            let _ = t.join();
        }
        CF_OK
    }
}

/// A task taken back after a failed submit: its free functions are not called.
fn disarm(task: Task) {
    if let Task::Owned(mut o) = task {
        o.disarm();
    }
}
