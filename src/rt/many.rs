//! Waiting on many futures: `cf_wait` and `cf_as_completed`.
//!
//! Both register one `WaitSet` on every distinct future that is not done yet, with the
//! future's index in their own list. A completing future pushes its index into the set
//! and unparks the waiter, so the waiter learns *which* future finished without scanning:
//! n futures cost O(n) in total (registration, one notification each, removal of the
//! registrations left when the waiter gives up). Removal happens before the waiter
//! returns or the iterator is freed; a completion racing with it finds the listener
//! already taken or pushes into a set that is still alive (its `Shared` count keeps it), so no
//! late wake-up lands in freed memory.

use super::{
    future::{Core, CoreRef, Listener, NotAdded},
    shared::Shared,
    time::Deadline,
    waiter::WaitSet,
};
use std::collections::{HashSet, VecDeque};

/// `cf_return_when`, checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReturnWhen {
    FirstCompleted,
    FirstException,
    AllCompleted,
}

/// Memory ran out while setting up a wait; nothing is left registered.
#[derive(Debug)]
pub(crate) struct NoMemory;

/// An empty vector with room for `n` items, so that pushing them never allocates.
fn room<T>(n: usize) -> Result<Vec<T>, NoMemory> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| NoMemory)?;
    Ok(v)
}

/// `n` false flags.
fn flags(n: usize) -> Result<Vec<bool>, NoMemory> {
    let mut v = room(n)?;
    v.resize(n, false);
    Ok(v)
}

/// A set of future addresses with room for `n`, to find duplicates.
fn seen_set(n: usize) -> Result<HashSet<*const Core>, NoMemory> {
    let mut seen = HashSet::new();
    seen.try_reserve(n).map_err(|_| NoMemory)?;
    Ok(seen)
}

/// The distinct futures of `fs`, first occurrence first.
fn distinct<'a>(fs: &[&'a Core]) -> Result<Vec<&'a Core>, NoMemory> {
    let mut seen = seen_set(fs.len())?;
    let mut out = room(fs.len())?;
    out.extend(
        fs.iter()
            .copied()
            .filter(|&f| seen.insert(f as *const Core)),
    );
    Ok(out)
}

/// A wait set with room for `n` notifications (see `WaitSet::with_capacity`).
fn wait_set(n: usize) -> Result<Shared<WaitSet>, NoMemory> {
    let set = WaitSet::with_capacity(n).ok_or(NoMemory)?;
    Shared::try_new(set).map_err(|_| NoMemory)
}

/// Blocks until the condition `when` holds for `fs` (true) or the deadline passes
/// (false). Duplicates count once. `Err` when memory runs out before the wait starts
/// (no registration is left behind); once registered, the wait needs no more memory.
pub(crate) fn wait_many(
    fs: &[&Core],
    when: ReturnWhen,
    deadline: Deadline,
) -> Result<bool, NoMemory> {
    let fs = distinct(fs)?;
    let total = fs.len();
    let mut done = 0usize;
    let mut failed = false;
    let satisfied = |done: usize, failed: bool| match when {
        ReturnWhen::FirstCompleted => done > 0 || total == 0,
        ReturnWhen::FirstException => failed || done == total,
        ReturnWhen::AllCompleted => done == total,
    };
    let mut pending = room(total)?;
    for (i, f) in fs.iter().enumerate() {
        if f.is_done() {
            done += 1;
            failed |= f.failed();
        } else {
            pending.push(i);
        }
    }
    if satisfied(done, failed) {
        return Ok(true);
    }
    if deadline.expired() {
        return Ok(false);
    }
    let set = wait_set(pending.len())?;
    let mut registered = flags(total)?;
    // At most one notification per registration reaches `fired`.
    let mut fired = room(pending.len())?;
    let unregister = |registered: &[bool]| {
        for (i, f) in fs.iter().enumerate() {
            if registered[i] {
                f.remove_notify(&set, i);
            }
        }
    };
    for &i in &pending {
        match fs[i].try_add_listener(Listener::Notify(set.clone(), i)) {
            Ok(()) => registered[i] = true,
            Err(NotAdded::Done) => {
                done += 1;
                failed |= fs[i].failed();
            }
            Err(NotAdded::NoMemory) => {
                unregister(&registered);
                return Err(NoMemory);
            }
        }
    }
    let ok = loop {
        set.drain_into(&mut fired);
        for i in fired.drain(..) {
            registered[i] = false;
            done += 1;
            failed |= fs[i].failed();
        }
        if satisfied(done, failed) {
            break true;
        }
        if !set.wait(deadline) {
            set.drain_into(&mut fired);
            for i in fired.drain(..) {
                registered[i] = false;
                done += 1;
                failed |= fs[i].failed();
            }
            break satisfied(done, failed);
        }
    };
    unregister(&registered);
    Ok(ok)
}

/// The state of one `cf_as_completed` iteration.
pub(crate) struct AsCompleted {
    futures: Vec<CoreRef>,
    set: Shared<WaitSet>,
    ready: VecDeque<usize>,
    registered: Vec<bool>,
    remaining: usize,
    deadline: Deadline,
}

/// What `AsCompleted::next` found.
pub(crate) enum Next<'a> {
    Yield(&'a CoreRef),
    Timeout,
    End,
}

impl AsCompleted {
    /// Starts iterating over the distinct futures of `fs`, holding a reference to each.
    /// `Err` when memory runs out (nothing is left registered; the references in `fs`
    /// are dropped). Everything the iteration needs later is allocated here.
    pub(crate) fn new(mut fs: Vec<CoreRef>, deadline: Deadline) -> Result<AsCompleted, NoMemory> {
        let mut seen = seen_set(fs.len())?;
        fs.retain(|f| seen.insert(Shared::as_ptr(f)));
        drop(seen);
        let n = fs.len();
        let mut ready = VecDeque::new();
        // Every index enters `ready` at most once.
        ready.try_reserve_exact(n).map_err(|_| NoMemory)?;
        let mut queued = flags(n)?;
        let mut it = AsCompleted {
            set: wait_set(n)?,
            registered: flags(n)?,
            remaining: n,
            futures: fs,
            ready,
            deadline,
        };
        // Those already done first, in array order; then every other one is registered.
        // A future that completes between the two passes is caught by `try_add_listener`,
        // which refuses a done future: it is queued then, so none is lost.
        for (i, f) in it.futures.iter().enumerate() {
            if f.is_done() {
                it.ready.push_back(i);
                queued[i] = true;
            }
        }
        for (i, f) in it.futures.iter().enumerate() {
            if !queued[i] {
                match f.try_add_listener(Listener::Notify(it.set.clone(), i)) {
                    Ok(()) => it.registered[i] = true,
                    Err(NotAdded::Done) => it.ready.push_back(i),
                    // Dropping `it` removes the registrations made so far.
                    Err(NotAdded::NoMemory) => return Err(NoMemory),
                }
            }
        }
        Ok(it)
    }

    fn collect(&mut self) {
        let before = self.ready.len();
        self.set.drain_into(&mut self.ready);
        for k in before..self.ready.len() {
            let i = self.ready[k];
            self.registered[i] = false;
        }
    }

    /// The next future to be done, in completion order.
    pub(crate) fn next(&mut self) -> Next<'_> {
        loop {
            self.collect();
            if let Some(i) = self.ready.pop_front() {
                self.remaining -= 1;
                return Next::Yield(&self.futures[i]);
            }
            if self.remaining == 0 {
                return Next::End;
            }
            if !self.set.wait(self.deadline) {
                self.collect();
                if self.ready.is_empty() {
                    return Next::Timeout;
                }
            }
        }
    }
}

impl Drop for AsCompleted {
    fn drop(&mut self) {
        for (i, f) in self.futures.iter().enumerate() {
            if self.registered[i] {
                f.remove_notify(&self.set, i);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rt::task::{Failure, Outcome};
    use crate::status::CF_TASK_FAILED;
    use std::time::{Duration, Instant};

    fn value() -> Outcome {
        Outcome::Value(std::ptr::null_mut())
    }

    #[test]
    fn modes_on_done_futures() {
        let (a, b) = (Core::promise(), Core::promise());
        let fs = [&*a, &*b, &*a];
        let now = Deadline::from_timeout(0.0).unwrap();
        assert!(!wait_many(&fs, ReturnWhen::FirstCompleted, now).unwrap());
        assert!(b.cancel());
        assert!(wait_many(&fs, ReturnWhen::FirstCompleted, now).unwrap());
        // A cancelled future is done but is not an exception.
        assert!(!wait_many(&fs, ReturnWhen::FirstException, now).unwrap());
        let failure = Failure::new(CF_TASK_FAILED, 1, "x");
        assert!(a.finish(Outcome::Failed(failure)).is_ok());
        assert!(wait_many(&fs, ReturnWhen::FirstException, now).unwrap());
        assert!(wait_many(&fs, ReturnWhen::AllCompleted, now).unwrap());
        assert!(wait_many(&[], ReturnWhen::AllCompleted, now).unwrap());
    }

    #[test]
    fn all_completed_wakes_once_per_future_and_cleans_up() {
        let fs: Vec<_> = (0..1000).map(|_| Core::promise()).collect();
        let refs: Vec<&Core> = fs.iter().map(|f| &**f).collect();
        // Time out first: every registration must be removed again.
        assert!(
            !wait_many(
                &refs,
                ReturnWhen::AllCompleted,
                Deadline::from_timeout(0.01).unwrap()
            )
            .unwrap()
        );
        let others = fs.clone();
        let t = std::thread::spawn(move || {
            for f in others.iter().rev() {
                assert!(f.finish(value()).is_ok());
            }
        });
        let start = Instant::now();
        assert!(wait_many(&refs, ReturnWhen::AllCompleted, Deadline::FOREVER).unwrap());
        assert!(start.elapsed() < Duration::from_secs(30));
        t.join().unwrap();
    }

    #[test]
    fn as_completed_yields_done_first_then_completion_order() {
        let fs: Vec<_> = (0..4).map(|_| Core::promise()).collect();
        assert!(fs[2].finish(value()).is_ok());
        let mut input = fs.clone();
        input.push(fs[0].clone()); // duplicate
        let mut it = AsCompleted::new(input, Deadline::from_timeout(5.0).unwrap()).unwrap();
        let mut order = Vec::new();
        let next = |it: &mut AsCompleted| match it.next() {
            Next::Yield(f) => Some(fs.iter().position(|g| Shared::ptr_eq(f, g)).unwrap()),
            _ => None,
        };
        order.push(next(&mut it));
        assert!(fs[3].finish(value()).is_ok());
        order.push(next(&mut it));
        assert!(fs[0].cancel());
        assert!(fs[1].finish(value()).is_ok());
        order.push(next(&mut it));
        order.push(next(&mut it));
        assert_eq!(order, [Some(2), Some(3), Some(0), Some(1)]);
        assert!(matches!(it.next(), Next::End));
    }

    #[test]
    fn as_completed_times_out_and_frees_registrations() {
        let f = Core::promise();
        let mut it =
            AsCompleted::new(vec![f.clone()], Deadline::from_timeout(0.02).unwrap()).unwrap();
        assert!(matches!(it.next(), Next::Timeout));
        drop(it);
        // Completing after the iterator is gone touches nothing of it.
        assert!(f.finish(value()).is_ok());
    }
}
