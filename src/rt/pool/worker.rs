//! A worker thread's life: its loop (`worker_main`), the batch it takes from the queue,
//! stealing, spinning for work before it sleeps, and running queued tasks while a task
//! of its own waits (`help_once`). The wake protocol these follow is written at the top
//! of `rt/pool.rs`.

use super::*;

impl Pool {
    /// Waits a few microseconds for work to arrive before the caller goes to sleep, when
    /// no more than `max_spinners` workers are already doing so (spinning beyond one per
    /// two CPUs would only take CPU from the threads that submit), and only while a CPU is
    /// left for a submitting thread beside the `busy` workers running tasks and the
    /// spinners: a spinner that shares a CPU with the thread feeding the pool slows that
    /// thread down (a burst from one thread on two CPUs ran at 5M tasks/s with a spinner
    /// beside the busy worker, 8M without). The caller spins at all only when some
    /// thread has waited for a result since it last did (`WAITS`).
    pub(super) fn spin_for_work(&self, busy: usize) {
        // Not under loom: a spin only lets time pass, which the model does not have (the
        // unlocked window around the call, where a submit may come in, is still modelled).
        if cfg!(cfutures_loom) {
            return;
        }
        let allowed = self.max_spinners.min(self.cpus.saturating_sub(1 + busy));
        if self.spinners.fetch_add(1, Ordering::Relaxed) >= allowed {
            self.spinners.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        let start = Instant::now();
        while self.queued.load(Ordering::Relaxed) == 0 && start.elapsed() < SPIN_FOR {
            for _ in 0..16 {
                std::hint::spin_loop();
            }
        }
        self.spinners.fetch_sub(1, Ordering::Relaxed);
    }

    /// Pops the next future for a worker (under the lock). When the queue holds a backlog
    /// (more than two tasks per worker), it also moves a few more into the worker's batch,
    /// so that a burst of small tasks costs the worker one lock per batch instead of one
    /// per task. Batches stay visible: idle workers steal from them (`steal`), a waiting
    /// worker runs its own first (`help_once`), and shutdown and breaking drain them.
    pub(super) fn pop_batch(&self, st: &mut State, local: &Local) -> Option<CoreRef> {
        let n = st.queue.len();
        let first = st.queue.pop_front();
        let per_worker = n / (2 * st.workers.max(1));
        if per_worker > 1 {
            let mut l = lock(local);
            for _ in 1..per_worker.min(MAX_BATCH) {
                match st.queue.pop_front() {
                    Some(job) => l.push_back(job),
                    None => break,
                }
            }
        }
        self.sync_queued(&st.queue);
        first
    }

    /// Takes the oldest task from another worker's batch (under the lock), if any.
    pub(super) fn steal(&self, st: &State, mine: &Local) -> Option<CoreRef> {
        st.locals
            .iter()
            .filter(|l| !Arc::ptr_eq(l, mine))
            .find_map(|l| l.try_lock().ok().and_then(|mut l| l.pop_front()))
    }

    /// Runs a queued future's task here, if it can still start; `None` if it was
    /// cancelled. The caller publishes the outcome. (Process pools run theirs through
    /// `ProcShared::drive`.)
    pub(super) fn run_job(&self, job: &Core) -> Option<Outcome> {
        Some(job.start()?.run())
    }

    /// For a busy process-pool proxy with room in its pipeline: its next batched task, or
    /// the next queued one, but only while no other worker is idle and no new one can be
    /// started (otherwise the task is better left to them than queued behind this
    /// worker's current task).
    pub(super) fn take_more(&self, local: &Local) -> Option<CoreRef> {
        let batched = lock(local).pop_front();
        batched.or_else(|| {
            let mut st = lock(&self.state);
            if st.idle == 0 && st.workers >= self.max_workers {
                self.pop_batch(&mut st, local)
            } else {
                None
            }
        })
    }

    /// For a worker about to publish its last outcome: its next task, or else it counts
    /// itself idle (before the outcome is visible, see the module comment).
    pub(super) fn next_or_idle(&self, local: &Local) -> Option<CoreRef> {
        let batched = lock(local).pop_front();
        batched.or_else(|| {
            let mut st = lock(&self.state);
            st.idle += 1;
            let next = self.pop_batch(&mut st, local);
            let mut wake = None;
            if next.is_some() {
                st.idle -= 1;
                wake = self.chain_wake(&mut st);
            }
            drop(st);
            if let Some(t) = wake {
                t.unpark();
            }
            next
        })
    }

    /// While a worker of this pool waits: run one queued task, or register as a helper.
    pub(crate) fn help_once(&self) -> Help {
        let depth = HELP_DEPTH.with(|d| d.get());
        // A process pool's proxy thread waits here only inside a done callback, while its
        // worker process may hold tasks in flight: it does not run more.
        if depth >= MAX_HELP_DEPTH || matches!(self.runner, Runner::Process(_)) {
            return Help::Cannot;
        }
        let own = MY_LOCAL.with(|m| m.borrow().as_ref().and_then(|l| lock(l).pop_front()));
        let mut st = lock(&self.state);
        if let Some(job) = own.or_else(|| self.pop(&mut st)) {
            drop(st);
            HELP_DEPTH.with(|d| d.set(depth + 1));
            if let Some(outcome) = self.run_job(&job) {
                let _ = job.finish(outcome);
            }
            HELP_DEPTH.with(|d| d.set(depth));
            return Help::Ran;
        }
        st.helpers.push(thread::current());
        Help::Registered
    }

    /// Undoes `Help::Registered` (if no submit has popped this thread already).
    pub(crate) fn unregister_helper(&self) {
        let me = thread::current().id();
        let mut st = lock(&self.state);
        if let Some(i) = st.helpers.iter().position(|t| t.id() == me) {
            st.helpers.swap_remove(i);
        }
    }

    pub(super) fn exit_worker(&self, mut st: MutexGuard<'_, State>) {
        st.workers -= 1;
        st.idle -= 1;
        drop(st);
        self.exited.notify_all();
    }
}

pub(super) fn worker_main(
    pool: Arc<Pool>,
    process: Option<crate::rt::process::Link>,
    started: Started,
) {
    WORKER_OF.with(|w| w.set(Arc::as_ptr(&pool)));
    #[cfg(not(cfutures_loom))]
    crate::rt::blocks::arm_thread();
    // The first access registers the batch's destructor: now, before the spawner goes on.
    MY_LOCAL.with(|_| ());
    started.signal();
    let started = match (&pool.runner, process) {
        (Runner::Process(shared), Some(p)) => shared.adopt_worker(p),
        (_, _) => match pool.initializer {
            // SAFETY: the caller's initializer with the caller's initarg, as configured.
            Some((init, arg)) => call_task(|| unsafe { init(arg as *mut c_void) }),
            None => Ok(()),
        },
    };
    if let Err(e) = started {
        pool.break_pool(e);
        if let Runner::Process(shared) = &pool.runner {
            shared.retire_worker();
        }
        pool.exit_worker(lock(&pool.state));
        WORKER_OF.with(|w| w.set(ptr::null()));
        return;
    }
    let me = thread::current();
    let mut spun = false;
    let mut waits_seen = WAITS.load(Ordering::Relaxed);
    let local: Local = Arc::new(Mutex::new(VecDeque::new()));
    MY_LOCAL.with(|m| *m.borrow_mut() = Some(Arc::clone(&local)));
    let mut st = lock(&pool.state);
    st.locals.push(Arc::clone(&local));
    loop {
        // Its own batch first when a continuation of its last task went there
        // (`push_local`; otherwise the batch is empty here: `next_or_idle` found it so).
        let own = if PUSHED_LOCAL.with(|p| p.replace(false)) {
            lock(&local).pop_front()
        } else {
            None
        };
        let found = match own.or_else(|| pool.pop_batch(&mut st, &local)) {
            Some(job) => Some(job),
            None => pool.steal(&st, &local),
        };
        let Some(mut job) = found else {
            if st.shutdown || st.broken {
                break;
            }
            let waits = WAITS.load(Ordering::Relaxed);
            let chained = CHAINED.with(|c| c.replace(false));
            if !spun && (waits != waits_seen || chained) {
                // Spin briefly before sleeping, when some thread has waited for a result
                // since this worker last looked: a caller that submits again as soon as
                // it has a result then finds this worker awake (it still counts as idle
                // and not as a sleeper, so `submit` does not wake anyone) and no system
                // call is spent on a wake-up. A producer submitting a burst without
                // waiting is better served without a spinner: the queue builds up and
                // the workers take it in batches, instead of one spinning worker taking
                // each task as it comes, in lockstep with the producer on the pool's
                // lock (a million-task burst on 2 CPUs: 7.5M tasks/s without the spin,
                // 5.5M with it). The decision to sleep is taken again under the lock.
                // Likewise when this worker has run a continuation since it last looked:
                // it has caught up with the thread adding the links of a chain, whose
                // next one is likely to come at once (W9: a link chained to a future
                // already done is queued, and a sleeping worker costs a wake-up per link).
                waits_seen = waits;
                let busy = st.workers - st.idle;
                drop(st);
                pool.spin_for_work(busy);
                spun = true;
                st = lock(&pool.state);
                continue;
            }
            spun = false;
            st.sleepers.push(me.clone());
            drop(st);
            thread::park();
            st = lock(&pool.state);
            if let Some(i) = st.sleepers.iter().position(|t| t.id() == me.id()) {
                st.sleepers.swap_remove(i);
            }
            continue;
        };
        st.idle -= 1;
        spun = false;
        let wake = pool.chain_wake(&mut st);
        drop(st);
        if let Some(t) = wake {
            t.unpark();
        }
        match &pool.runner {
            Runner::Process(shared) => {
                shared.drive(&pool, job, &mut || pool.take_more(&local), &mut || {
                    pool.next_or_idle(&local)
                })
            }
            Runner::Local => loop {
                let outcome = pool.run_job(&job);
                // Idle again before the outcome is published (see the module comment),
                // and the next task is taken in the same critical section.
                let next = pool.next_or_idle(&local);
                if let Some(outcome) = outcome {
                    let _ = job.finish(outcome);
                }
                match next {
                    Some(n) => job = n,
                    None => break,
                }
            },
        }
        st = lock(&pool.state);
    }
    // Leaving: the batch is empty (a worker leaves only when it found nothing to do, and
    // it drains its batch before looking), but hand back anything a race left there.
    st.locals.retain(|l| !Arc::ptr_eq(l, &local));
    let leftover: Vec<_> = lock(&local).drain(..).collect();
    for job in leftover.into_iter().rev() {
        st.queue.push_front(job);
    }
    pool.sync_queued(&st.queue);
    drop(st);
    MY_LOCAL.with(|m| *m.borrow_mut() = None);
    if let Runner::Process(shared) = &pool.runner {
        shared.retire_worker();
    }
    pool.exit_worker(lock(&pool.state));
    WORKER_OF.with(|w| w.set(ptr::null()));
}
