//! Deadlines of tasks already handed to a worker process (`cf_task.timeout`): which task
//! a worker runs now, as both sides and the deadline timer see it, so that a task whose
//! deadline passes is killed with its worker if (and only if) it is running, and never
//! started if it is not.
//!
//! # Protocol
//!
//! - A task with a deadline goes to its worker as a `K_DEADLINE` frame (its deadline,
//!   an absolute `CLOCK_MONOTONIC` time, which a fork shares) followed by the task's own
//!   frame. Such a task never rides in a batch: the proxy registers it in the pool's
//!   `Registry` (its future, this worker's `Watch`, and its number `seq` among the tasks
//!   sent to this worker, counted alike on both sides) *before* its frame goes out, and
//!   forgets it once its answer is read or the worker is buried.
//! - A worker gets, with its first such task, a *watch*: one shared word in a memfd
//!   mapping (`K_WATCH`, the memfd passed with `SCM_RIGHTS`, as for the arena; both
//!   mappings `MADV_DONTFORK`). The word is `seq << 2 | state`, state IDLE, RUNNING,
//!   KILLED or SKIPPED. For a task with a deadline the worker `begin`s: a deadline
//!   already passed means the task never runs (SKIPPED(seq), and the answer says
//!   `CF_DEADLINE`); otherwise it stores RUNNING(seq), then reads the clock again: passed
//!   now, the task never runs either (RUNNING(seq) → SKIPPED(seq) by compare-and-swap). Otherwise it runs the task and `end`s: RUNNING(seq) → IDLE(seq) by
//!   compare-and-swap, and only then sends the answer. A CAS that fails found
//!   KILLED(seq): the worker sends nothing and waits for its `SIGKILL`.
//! - The timer, once the deadline of a task a proxy took has passed (`strike`), looks
//!   the task up and, under the watch's lock, reads the word: RUNNING(seq) → CAS to
//!   KILLED(seq) and `SIGKILL` the worker (the task was running: it is killed with its
//!   worker, which runs nothing after it); a lower seq → the worker has not reached the
//!   task, and when it does, its clock is past the deadline, so it skips it; SKIPPED(seq)
//!   → the worker got there first and skipped it (it never started); a higher
//!   seq or IDLE(seq) → the task ended in the worker and its answer is on the way (the
//!   late result is discarded through `result_free`, as for a thread pool). Not
//!   registered → still in the proxy, which drops a task whose deadline passed before
//!   sending it (`Task::unless_expired`), or sends it with its deadline, which the worker
//!   then finds passed. In every case the timer finishes the future with `CF_DEADLINE`
//!   at once (`Core::expire`), saying where the task was.
//! - The proxy that then reads EOF from the killed worker finds KILLED(seq) for the task
//!   it was waiting for, leaves that future to the timer, and sends the tasks after it
//!   again to a new worker (they never started: the worker stopped at the KILLED task).
//! - The kill uses the worker's pid, which names the worker until it is reaped: the watch
//!   is closed (under its lock) when the proxy drops the worker's link, before it asks
//!   the fork server to reap it, so the timer never signals a pid that was reused.
//! - The deadline sent is never later than the parent's (`mono_deadline` reads the
//!   monotonic clock before `Instant::now()`), so the worker never starts a task whose
//!   deadline the parent's timer finds passed.
//!
//! Not modelled with loom: the word lives in memory shared between two processes, and
//! the decisions depend on the clock, which loom has no notion of.

use super::{
    arena::Mapping,
    io::{Fd, OUR_FDS},
};
use crate::rt::{
    future::{Core, CoreRef},
    owned::Where,
    sync::{Arc, Mutex, lock},
    task::Task,
};
use rustix::{fd::AsFd, fs::MemfdFlags, process::Signal};
use std::{
    collections::HashMap,
    io,
    sync::atomic::{AtomicU64, Ordering},
    time::Instant,
};

/// Size of a watch's mapping (one page; the word is its first 8 bytes).
pub(super) const WATCH_SIZE: usize = 4096;

const IDLE: u64 = 0;
const RUNNING: u64 = 1;
const KILLED: u64 = 2;
/// The worker found the task's deadline passed before starting it (`begin`).
const SKIPPED: u64 = 3;

fn word(seq: u64, state: u64) -> u64 {
    (seq << 2) | state
}

/// The watch word at the start of a mapping of `WATCH_SIZE` bytes.
fn word_of(map: &Mapping) -> &AtomicU64 {
    let p = map.range(0, 8).expect("a watch mapping holds its word");
    // SAFETY: 8 bytes at the page-aligned start of a live shared mapping, accessed only
    // atomically by both processes; the reference lives no longer than `map`.
    unsafe { AtomicU64::from_ptr(p.cast()) }
}

/// `CLOCK_MONOTONIC` now, in nanoseconds (the clock `Instant` reads, shared by forks).
pub(super) fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a valid place to write the time.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// `at` on `CLOCK_MONOTONIC` in nanoseconds, never later than `at` (the clock is read
/// before `Instant::now()`).
pub(super) fn mono_deadline(at: Instant) -> u64 {
    let base = mono_ns();
    let left = at.saturating_duration_since(Instant::now());
    base.saturating_add(u64::try_from(left.as_nanos()).unwrap_or(u64::MAX))
}

/// The deadline a task carries to its worker, if it has one.
pub(super) fn deadline_of(task: &Task) -> Option<Instant> {
    match task {
        Task::Owned(o) => o.deadline.as_ref().map(|d| d.at),
        _ => None,
    }
}

/// The `timeout` a task's deadline came from, if it has one (for its message).
pub(super) fn deadline_timeout(task: &Task) -> Option<f64> {
    match task {
        Task::Owned(o) => o.deadline.as_ref().map(|d| d.timeout),
        _ => None,
    }
}

/// The parent's side of a worker's watch; shared by its proxy (through the link) and
/// the timer (through the `Registry`).
pub(crate) struct Watch {
    /// The worker's pid and the mapping; `None` once the link is dropped (the worker is
    /// about to be reaped: its pid may not be signalled any more).
    live: Mutex<Option<(i32, Mapping)>>,
    /// Once closed: the pid and the word as the worker left it (lock order: `live`, then
    /// this), so that a deadline passing after the worker died still says where its task
    /// was.
    last: Mutex<Option<(i32, u64)>>,
}

impl Watch {
    /// Makes a watch for worker `pid`: the mapping, and the memfd to send it (`K_WATCH`).
    pub(super) fn create(pid: i32) -> io::Result<(Arc<Watch>, Fd)> {
        let fd = {
            let mut fds = lock(&OUR_FDS);
            let fd = rustix::fs::memfd_create(c"cfutures-watch", MemfdFlags::CLOEXEC)?;
            Fd::record(&mut fds, fd)
        };
        rustix::fs::ftruncate(&fd, WATCH_SIZE as u64)?;
        // Under the descriptor lock, as for an arena (`Arena::create`): no fork of ours
        // inherits it.
        let map = {
            let _fds = lock(&OUR_FDS);
            Mapping::new(fd.as_fd(), WATCH_SIZE)?
        };
        let watch = Arc::new(Watch {
            live: Mutex::new(Some((pid, map))),
            last: Mutex::new(None),
        });
        Ok((watch, fd))
    }

    /// The worker is about to be reaped: no signal may be sent to its pid from now on.
    pub(super) fn close(&self) {
        let mut live = lock(&self.live);
        if let Some((pid, map)) = live.take() {
            *lock(&self.last) = Some((pid, word_of(&map).load(Ordering::SeqCst)));
        }
    }

    /// Whether the timer killed the worker for the task `seq` (see the module comment).
    pub(super) fn killed(&self, seq: u64) -> bool {
        lock(&self.live)
            .as_ref()
            .is_some_and(|(_, map)| word_of(map).load(Ordering::SeqCst) == word(seq, KILLED))
    }

    /// For the timer: the deadline of task `seq` has passed. Kills the worker if it runs
    /// that task; says where the task was.
    fn strike(&self, seq: u64) -> Where {
        let live = lock(&self.live);
        let Some((pid, map)) = live.as_ref() else {
            // The worker is gone. Running the task then (not killed by us: that is
            // KILLED(seq)): the task failed with it, and its proxy is failing its future;
            // otherwise it had not started (it is sent again) or had ended in the worker.
            return match *lock(&self.last) {
                Some((pid, last)) if last == word(seq, RUNNING) => Where::Died(pid),
                Some((pid, last)) if last >> 2 >= seq && last != word(seq, SKIPPED) => {
                    Where::Returning(pid)
                }
                _ => Where::NotStarted,
            };
        };
        let w = word_of(map);
        let cur = w.load(Ordering::SeqCst);
        if cur == word(seq, RUNNING)
            && w.compare_exchange(cur, word(seq, KILLED), Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            if let Some(p) = rustix::process::Pid::from_raw(*pid) {
                let _ = rustix::process::kill_process(p, Signal::KILL);
            }
            return Where::InProcess(*pid);
        }
        // (A failed CAS found IDLE(seq): the task ended; or SKIPPED(seq): it never started.)
        let now = w.load(Ordering::SeqCst);
        if now >> 2 < seq || now == word(seq, SKIPPED) {
            Where::NotStarted
        } else {
            Where::Returning(*pid)
        }
    }
}

/// The tasks with a deadline that proxies have handed to workers, by future.
pub(super) struct Registry(Mutex<HashMap<usize, (Arc<Watch>, u64)>>);

fn key(core: &Core) -> usize {
    core as *const Core as usize
}

impl Registry {
    pub(super) fn new() -> Registry {
        Registry(Mutex::new(HashMap::new()))
    }

    /// Task `seq` of the worker watched by `watch` is `core`'s.
    pub(super) fn insert(&self, core: &CoreRef, watch: &Arc<Watch>, seq: u64) -> io::Result<()> {
        let mut map = lock(&self.0);
        map.try_reserve(1)
            .map_err(|_| io::Error::from(io::ErrorKind::OutOfMemory))?;
        map.insert(key(core), (Arc::clone(watch), seq));
        Ok(())
    }

    /// `core`'s task left its worker (answered, or the worker is gone).
    pub(super) fn remove(&self, core: &CoreRef) {
        let gone = lock(&self.0).remove(&key(core));
        drop(gone);
    }

    /// For the timer: where `core`'s task was when its deadline passed (killing its
    /// worker if it was running it).
    pub(super) fn strike(&self, core: &CoreRef) -> Where {
        let found = lock(&self.0).get(&key(core)).cloned();
        match found {
            Some((watch, seq)) => watch.strike(seq),
            None => Where::NotStarted,
        }
    }
}

/// The worker's side: a task with a deadline, number `seq`, is about to run. `false`
/// when its deadline `at` has passed: it does not run (the word says SKIPPED(seq), so
/// that the timer, if it looks now, says the task never started).
pub(super) fn begin(map: &Mapping, seq: u64, at: u64) -> bool {
    let w = word_of(map);
    if mono_ns() >= at {
        // Passed already: skipped without ever looking as if it ran (the word is not
        // RUNNING(seq), so the timer cannot have claimed it).
        w.store(word(seq, SKIPPED), Ordering::SeqCst);
        return false;
    }
    w.store(word(seq, RUNNING), Ordering::SeqCst);
    if mono_ns() >= at {
        leave(w, seq, SKIPPED);
        return false;
    }
    true
}

/// The worker's side: task `seq` ended. If the timer killed us for it meanwhile, nothing
/// more may happen here (no answer, no next task): wait for the signal.
pub(super) fn end(map: &Mapping, seq: u64) {
    leave(word_of(map), seq, IDLE);
}

/// RUNNING(seq) → `state`(seq); a failed CAS found KILLED(seq): wait for the `SIGKILL`.
fn leave(w: &AtomicU64, seq: u64, state: u64) {
    if w.compare_exchange(
        word(seq, RUNNING),
        word(seq, state),
        Ordering::SeqCst,
        Ordering::SeqCst,
    )
    .is_err()
    {
        loop {
            // SAFETY: waits for a signal; the SIGKILL on its way ends the process.
            unsafe { libc::pause() };
        }
    }
}
