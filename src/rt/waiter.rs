//! Blocking: the one loop every wait goes through (`block_on`), and `WaitSet`, the
//! registration a multi-future wait puts on each of its futures.
//!
//! A thread blocks by parking (`std::thread::park`): whoever makes its condition true
//! unparks it. Unparks can arrive late or spuriously (a completion that raced with a
//! timeout, a stale wake-up from an earlier wait), so every park sits in a loop that
//! re-checks its condition.
//!
//! On a thread-pool worker, `block_on` runs queued tasks of the worker's own pool while
//! its condition is false, and registers the worker as a "helper" that `submit` may wake
//! when no idle worker is left. This is how a task that waits on a future of its own pool
//! never deadlocks the pool, even when every worker does it at once.

use super::{
    pool::{self, Help},
    sync::{Mutex, Thread, lock, thread},
    time::Deadline,
};

/// Blocks the current thread until `ready()` is true (returns true) or the deadline
/// passes (returns false). The caller has registered something that unparks this thread
/// when `ready()` may have become true.
pub(crate) fn block_on(deadline: Deadline, mut ready: impl FnMut() -> bool) -> bool {
    let pool = pool::current_worker_pool();
    loop {
        if ready() {
            return true;
        }
        let remaining = deadline.remaining();
        if remaining == Some(std::time::Duration::ZERO) {
            return false;
        }
        let registered = match pool {
            Some(p) => match p.help_once() {
                Help::Ran => continue,
                Help::Registered => true,
                Help::Cannot => false,
            },
            None => false,
        };
        if !ready() {
            match remaining {
                None => thread::park(),
                Some(d) => thread::park_timeout(d),
            }
        }
        if registered {
            if let Some(p) = pool {
                p.unregister_helper();
            }
        }
    }
}

/// The completions a multi-future wait has been told of, as indices into its own list,
/// in completion order.
pub(crate) struct WaitSet {
    inner: Mutex<WaitSetInner>,
}

struct WaitSetInner {
    ready: Vec<usize>,
    sleeper: Option<Thread>,
}

impl WaitSet {
    /// An empty set with room for `n` notifications, so that `notify` (run by whichever
    /// thread completes a future, which could not report a failure) never allocates as
    /// long as at most `n` registrations point at the set. `None` when memory runs out.
    pub(crate) fn with_capacity(n: usize) -> Option<WaitSet> {
        let mut ready = Vec::new();
        ready.try_reserve_exact(n).ok()?;
        Some(WaitSet {
            inner: Mutex::new(WaitSetInner {
                ready,
                sleeper: None,
            }),
        })
    }

    /// Called by a completing future: records `index` and wakes the waiting thread.
    /// Each registration notifies at most once, so with one registration per index the
    /// room `with_capacity` made suffices and the push never allocates.
    /// Only the completion that finds the list empty wakes the waiter: with indices
    /// already recorded, the waiter either has not looked yet (it looks under the lock
    /// before it sleeps) or was already woken by the completion that recorded the first.
    pub(crate) fn notify(&self, index: usize) {
        let sleeper = {
            let mut g = lock(&self.inner);
            g.ready.push(index);
            if g.ready.len() > 1 {
                return;
            }
            g.sleeper.clone()
        };
        if let Some(t) = sleeper {
            t.unpark();
        }
    }

    /// Moves every recorded index, in order, into `out`; returns how many.
    pub(crate) fn drain_into(&self, out: &mut impl Extend<usize>) -> usize {
        let mut g = lock(&self.inner);
        let n = g.ready.len();
        out.extend(g.ready.drain(..));
        n
    }

    /// Blocks until at least one index is recorded or the deadline passes.
    pub(crate) fn wait(&self, deadline: Deadline) -> bool {
        super::pool::note_wait();
        lock(&self.inner).sleeper = Some(thread::current());
        let ok = block_on(deadline, || !lock(&self.inner).ready.is_empty());
        lock(&self.inner).sleeper = None;
        ok
    }
}
