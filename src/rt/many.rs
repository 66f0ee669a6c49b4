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
        for (i, f) in futures.iter().enumerate() {
            if f.is_done() {
                ready.push_back(i);
            }
        }
        for (i, f) in futures.iter().enumerate() {
            if !f.is_done() {
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
