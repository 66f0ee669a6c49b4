//! Waiting on many futures: `cf_wait` and `cf_as_completed`.
//!
//! Both register one `WaitSet` on every distinct future that is not done yet, with the
//! future's index in their own list. A completing future pushes its index into the set
//! and unparks the waiter, so the waiter learns *which* future finished without scanning:
//! n futures cost O(n) in total (registration, one notification each, removal of the
//! registrations left when the waiter gives up). Removal happens before the waiter
//! returns or the iterator is freed; a completion racing with it finds the listener
//! already taken or pushes into a set that is still alive (the `Arc` keeps it), so no
//! late wake-up lands in freed memory.

use super::{
    future::{Core, Listener},
    sync::Arc,
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

/// The distinct futures of `fs`, first occurrence first.
fn distinct<'a, T: AsRef<Core> + ?Sized>(fs: impl Iterator<Item = &'a T>) -> Vec<&'a T> {
    let mut seen = HashSet::new();
    fs.filter(|f| seen.insert(f.as_ref() as *const Core))
        .collect()
}

impl AsRef<Core> for Core {
    fn as_ref(&self) -> &Core {
        self
    }
}

/// Blocks until the condition `when` holds for `fs` (true) or the deadline passes
/// (false). Duplicates count once.
pub(crate) fn wait_many(fs: &[&Core], when: ReturnWhen, deadline: Deadline) -> bool {
    let fs = distinct(fs.iter().copied());
    let total = fs.len();
    let mut done = 0usize;
    let mut failed = false;
    let satisfied = |done: usize, failed: bool| match when {
        ReturnWhen::FirstCompleted => done > 0 || total == 0,
        ReturnWhen::FirstException => failed || done == total,
        ReturnWhen::AllCompleted => done == total,
    };
    let mut pending = Vec::new();
    for (i, f) in fs.iter().enumerate() {
        if f.is_done() {
            done += 1;
            failed |= f.failed();
        } else {
            pending.push(i);
        }
    }
    if satisfied(done, failed) {
        return true;
    }
    if deadline.expired() {
        return false;
    }
    let set = Arc::new(WaitSet::new());
    let mut registered = vec![false; total];
    for &i in &pending {
        match fs[i].add_listener(Listener::Notify(Arc::clone(&set), i)) {
            Ok(()) => registered[i] = true,
            Err(_) => {
                done += 1;
                failed |= fs[i].failed();
            }
        }
    }
    let mut fired = Vec::new();
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
    for (i, f) in fs.iter().enumerate() {
        if registered[i] {
            f.remove_notify(&set, i);
        }
    }
    ok
}

/// The state of one `cf_as_completed` iteration.
pub(crate) struct AsCompleted {
    futures: Vec<Arc<Core>>,
    set: Arc<WaitSet>,
    ready: VecDeque<usize>,
    registered: Vec<bool>,
    remaining: usize,
    deadline: Deadline,
}

/// What `AsCompleted::next` found.
pub(crate) enum Next<'a> {
    Yield(&'a Arc<Core>),
    Timeout,
    End,
}

impl AsCompleted {
    /// Starts iterating over the distinct futures of `fs`, holding a reference to each.
    pub(crate) fn new(fs: Vec<Arc<Core>>, deadline: Deadline) -> AsCompleted {
        let futures: Vec<Arc<Core>> = distinct(fs.iter()).into_iter().cloned().collect();
        let set = Arc::new(WaitSet::new());
        let mut ready = VecDeque::new();
        let mut registered = vec![false; futures.len()];
        // Those already done first, in array order; then every other one is registered.
        // A future that completes between the two passes is caught by `add_listener`,
        // which refuses a done future: it is queued then, so none is lost.
        let mut queued = vec![false; futures.len()];
        for (i, f) in futures.iter().enumerate() {
            if f.is_done() {
                ready.push_back(i);
                queued[i] = true;
            }
        }
        for (i, f) in futures.iter().enumerate() {
            if !queued[i] {
                match f.add_listener(Listener::Notify(Arc::clone(&set), i)) {
                    Ok(()) => registered[i] = true,
                    Err(_) => ready.push_back(i),
                }
            }
        }
        AsCompleted {
            remaining: futures.len(),
            futures,
            set,
            ready,
            registered,
            deadline,
        }
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
        assert!(!wait_many(&fs, ReturnWhen::FirstCompleted, now));
        assert!(b.cancel());
        assert!(wait_many(&fs, ReturnWhen::FirstCompleted, now));
        // A cancelled future is done but is not an exception.
        assert!(!wait_many(&fs, ReturnWhen::FirstException, now));
        let failure = Failure::new(CF_TASK_FAILED, 1, "x");
        assert!(a.finish(Outcome::Failed(failure)).is_ok());
        assert!(wait_many(&fs, ReturnWhen::FirstException, now));
        assert!(wait_many(&fs, ReturnWhen::AllCompleted, now));
        assert!(wait_many(&[], ReturnWhen::AllCompleted, now));
    }

    #[test]
    fn all_completed_wakes_once_per_future_and_cleans_up() {
        let fs: Vec<_> = (0..1000).map(|_| Core::promise()).collect();
        let refs: Vec<&Core> = fs.iter().map(|f| &**f).collect();
        // Time out first: every registration must be removed again.
        assert!(!wait_many(
            &refs,
            ReturnWhen::AllCompleted,
            Deadline::from_timeout(0.01).unwrap()
        ));
        let others = fs.clone();
        let t = std::thread::spawn(move || {
            for f in others.iter().rev() {
                assert!(f.finish(value()).is_ok());
            }
        });
        let start = Instant::now();
        assert!(wait_many(
            &refs,
            ReturnWhen::AllCompleted,
            Deadline::FOREVER
        ));
        assert!(start.elapsed() < Duration::from_secs(30));
        t.join().unwrap();
    }

    #[test]
    fn as_completed_yields_done_first_then_completion_order() {
        let fs: Vec<_> = (0..4).map(|_| Core::promise()).collect();
        assert!(fs[2].finish(value()).is_ok());
        let mut input = fs.clone();
        input.push(fs[0].clone()); // duplicate
        let mut it = AsCompleted::new(input, Deadline::from_timeout(5.0).unwrap());
        let mut order = Vec::new();
        let next = |it: &mut AsCompleted| match it.next() {
            Next::Yield(f) => Some(fs.iter().position(|g| Arc::ptr_eq(f, g)).unwrap()),
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
        let mut it = AsCompleted::new(vec![f.clone()], Deadline::from_timeout(0.02).unwrap());
        assert!(matches!(it.next(), Next::Timeout));
        drop(it);
        // Completing after the iterator is gone touches nothing of it.
        assert!(f.finish(value()).is_ok());
    }
}
