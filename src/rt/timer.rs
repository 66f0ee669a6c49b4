//! A pool's deadline timer (`cf_task.timeout`): one heap of deadlines per pool and one
//! thread, started at the first deadline, that sleeps until the earliest one is due.
//!
//! # Protocol (everything under `Timer::state`)
//!
//! - `add` pushes `(at, id)` on a min-heap and puts the future in `live` under `id`; it
//!   wakes the thread only when the new deadline is earlier than the one the thread
//!   sleeps until (`wakes_at`; `None`: it sleeps with nothing due). So a pool with any
//!   number of far deadlines costs one sleeping thread and no wake-up.
//! - `remove` takes an entry out of `live` when its task is done with (an `OwnedTask`
//!   dropped: it ran, was cancelled or broken): the future's reference goes at once, so
//!   a finished future's `result_free` runs when the caller releases it, not at its
//!   deadline. The heap keeps a stale `(at, id)`, skipped when it comes due; when stale
//!   pairs outnumber live ones the heap is compacted (in place, no allocation).
//! - The thread pops every due pair, takes the live entries out, and expires their
//!   futures outside the lock (`Core::expire`: finishing one runs its callbacks on this
//!   thread). A running task on a process pool goes to the pool's
//!   `deadline_passed_running` hook instead.
//! - `stop` (at shutdown with wait, after the workers exited; or when the pool is
//!   dropped) makes the thread drop what is left and exit; shutdown joins it.
//!
//! The timer uses std's lock, condition variable and thread directly rather than
//! `rt::sync`: loom has no clock to model a timed sleep, and no model covers this file
//! (the race a deadline takes part in, `Core::expire` against completion, is modelled in
//! `loom_tests`).

#![allow(
    clippy::disallowed_types,
    reason = "a timed sleep loom cannot model: see the module comment"
)]

use super::{
    future::{CoreRef, Expiry},
    owned::{Where, deadline_outcome},
    pool::{Pool, SubmitError},
};
use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap},
    sync::{Arc, Condvar, Mutex, MutexGuard, Weak},
    thread::{self, JoinHandle, ThreadId},
    time::Instant,
};

/// A future waiting for its deadline, with the `timeout` it came from (for the message).
struct Entry {
    core: CoreRef,
    timeout: f64,
}

struct State {
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    live: HashMap<u64, Entry>,
    next_id: u64,
    thread: Option<JoinHandle<()>>,
    thread_id: Option<ThreadId>,
    /// When the thread wakes by itself; `None` while it sleeps with nothing due.
    wakes_at: Option<Instant>,
    stop: bool,
}

/// One pool's deadlines.
pub(crate) struct Timer {
    state: Mutex<State>,
    wake: Condvar,
    /// Whether the pool runs tasks in processes (a running task then goes to the hook).
    process: bool,
    name: String,
}

/// Heaps this small are never compacted.
const COMPACT_FROM: usize = 64;

impl Timer {
    /// A timer with no thread yet.
    pub(crate) fn new(process: bool, name: String) -> Arc<Timer> {
        Arc::new(Timer {
            state: Mutex::new(State {
                heap: BinaryHeap::new(),
                live: HashMap::new(),
                next_id: 0,
                thread: None,
                thread_id: None,
                wakes_at: None,
                stop: false,
            }),
            wake: Condvar::new(),
            process,
            name,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers `core`'s deadline `at` under `id` (from `next_id`). Starts the
    /// thread at the first deadline. `NoMemory` when the heap or map cannot grow, `Os`
    /// when the thread cannot be started, `Shutdown` once stopped.
    pub(crate) fn add(
        self: &Arc<Self>,
        id: u64,
        pool: Weak<Pool>,
        at: Instant,
        timeout: f64,
        core: CoreRef,
    ) -> Result<(), SubmitError> {
        let mut st = self.lock();
        if st.stop {
            return Err(SubmitError::Shutdown);
        }
        st.heap
            .try_reserve(1)
            .and_then(|()| st.live.try_reserve(1))
            .map_err(|_| SubmitError::NoMemory)?;
        if st.thread.is_none() {
            let timer = Arc::clone(self);
            // std registers the thread's exit destructor before `run` starts; wait for it
            // while this submit is in the library (see `pool::Started`).
            let (started, wait) = super::pool::Started::new(true);
            let handle = thread::Builder::new()
                .name(self.name.clone())
                .stack_size(256 << 10)
                .spawn(move || {
                    started.signal();
                    run(&timer, &pool)
                })
                .map_err(SubmitError::Os)?;
            if let Some(wait) = wait {
                wait.wait();
            }
            st.thread_id = Some(handle.thread().id());
            st.thread = Some(handle);
        }
        st.heap.push(Reverse((at, id)));
        st.live.insert(id, Entry { core, timeout });
        if st.wakes_at.is_none_or(|w| at < w) {
            st.wakes_at = Some(at);
            self.wake.notify_one();
        }
        Ok(())
    }

    /// A fresh id for a deadline, to be `add`ed.
    pub(crate) fn next_id(&self) -> u64 {
        let mut st = self.lock();
        st.next_id += 1;
        st.next_id
    }

    /// Forgets entry `id` (if still there): its task is done with.
    pub(crate) fn remove(&self, id: u64) {
        let gone = {
            let mut st = self.lock();
            let gone = st.live.remove(&id);
            let State { heap, live, .. } = &mut *st;
            if gone.is_some() && heap.len() >= COMPACT_FROM && heap.len() > 2 * live.len() {
                heap.retain(|Reverse((_, id))| live.contains_key(id));
            }
            gone
        };
        // The future's reference goes outside the lock (its drop may run user code).
        drop(gone);
    }

    /// Deadlines registered and not yet passed or removed.
    #[cfg(test)]
    pub(crate) fn pending(&self) -> usize {
        self.lock().live.len()
    }

    /// Stops the thread: it drops what is left and exits. Gives its handle to join,
    /// unless called on the timer thread itself (then it exits on its own).
    pub(crate) fn stop(&self) -> Option<JoinHandle<()>> {
        let mut st = self.lock();
        st.stop = true;
        self.wake.notify_one();
        if st.thread_id == Some(thread::current().id()) {
            return None;
        }
        st.thread.take()
    }
}

/// The timer thread.
fn run(timer: &Timer, pool: &Weak<Pool>) {
    let mut due: Vec<Entry> = Vec::new();
    let mut st = timer.lock();
    loop {
        if st.stop {
            let rest = std::mem::take(&mut st.live);
            drop(st);
            drop(rest);
            return;
        }
        let now = Instant::now();
        while let Some(&Reverse((at, id))) = st.heap.peek() {
            if at > now {
                break;
            }
            st.heap.pop();
            if let Some(e) = st.live.remove(&id) {
                due.push(e);
            }
        }
        if !due.is_empty() {
            // Busy: an `add` need not wake us, we look again right after.
            st.wakes_at = Some(now);
            drop(st);
            let pool = pool.upgrade();
            for e in due.drain(..) {
                expire(timer.process, pool.as_deref(), e);
            }
            st = timer.lock();
            continue;
        }
        st.wakes_at = st.heap.peek().map(|r| r.0.0);
        st = match st.wakes_at {
            Some(at) => {
                let wait = at.saturating_duration_since(now);
                timer
                    .wake
                    .wait_timeout(st, wait)
                    .unwrap_or_else(|e| e.into_inner())
                    .0
            }
            None => timer.wake.wait(st).unwrap_or_else(|e| e.into_inner()),
        };
    }
}

/// A deadline passed: finishes the future with `CF_DEADLINE` if its task has not
/// started (or is running on a thread pool); a running process-pool task goes to the
/// pool's hook.
fn expire(process: bool, pool: Option<&Pool>, e: Entry) {
    let timeout = e.timeout;
    let what = e.core.expire(!process, |running| {
        let at = if running {
            Where::OnThread
        } else {
            Where::NotStarted
        };
        deadline_outcome(timeout, at)
    });
    if what == Expiry::Running
        && let Some(pool) = pool
    {
        pool.deadline_passed_running(&e.core, timeout);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rt::future::Core;
    use crate::status::CF_DEADLINE;
    use std::time::Duration;

    /// Entries go when removed (the future's reference with them), a passed deadline
    /// finishes its pending future with `CF_DEADLINE` on the timer thread, a stale heap
    /// is compacted, and `stop` ends the thread.
    #[test]
    fn deadlines_fire_and_removed_entries_go() {
        let timer = Timer::new(false, "t_timer".to_owned());
        let far = Instant::now() + Duration::from_secs(3600);
        let mut ids = Vec::new();
        for _ in 0..1000 {
            let f = Core::promise();
            let id = timer.next_id();
            timer.add(id, Weak::new(), far, 3600.0, f.clone()).unwrap();
            assert_eq!(CoreRef::strong_count(&f), 2);
            ids.push((id, f));
        }
        for (id, f) in &ids {
            timer.remove(*id);
            assert_eq!(CoreRef::strong_count(f), 1);
        }
        assert_eq!(timer.pending(), 0);
        assert!(timer.lock().heap.len() < COMPACT_FROM * 2);
        let soon = Core::promise();
        let id = timer.next_id();
        let at = Instant::now() + Duration::from_millis(20);
        timer.add(id, Weak::new(), at, 0.02, soon.clone()).unwrap();
        assert!(soon.wait(crate::rt::time::Deadline::from_timeout(10.0).unwrap()));
        let late = Instant::now().saturating_duration_since(at);
        assert!(late < Duration::from_secs(2), "{late:?}");
        let (status, code, _) = soon.outcome().unwrap().error().unwrap();
        assert_eq!((status, code), (CF_DEADLINE, libc::ETIMEDOUT));
        assert_eq!(timer.pending(), 0);
        timer.stop().unwrap().join().unwrap();
    }
}
