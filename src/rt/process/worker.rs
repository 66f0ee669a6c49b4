//! The worker's side of a link: run the initializer, say ready, then read tasks, run
//! them in order and answer each, until the link closes.
//!
//! Nothing here forks: the fork server (`server.rs`) starts a worker process and calls
//! `run`; another transport would call it the same way with its own link.

use super::{
    arena::Mapping,
    deadline::{self, WATCH_SIZE},
    io::{RecvBuf, send_all},
    stream::Stream,
    wire::{
        HEADER, Incoming, K_READY, header, recv_task, send_init_failed, send_outcome,
        shm_result_frame,
    },
};
use crate::rt::{
    context::call_task,
    pool::InitFn,
    task::{Outcome, run_bytes},
};
use crate::status::CF_DEADLINE;
use rustix::fd::AsFd;
use std::{ffi::c_void, ptr};

/// The life of a worker on `link`: the initializer, then tasks until EOF, a broken link
/// or a frame that makes no sense. Returns when the worker should exit.
pub(super) fn run(fd: impl Stream, init: Option<(InitFn, usize)>) {
    if let Some((f, arg)) = init {
        // SAFETY: the caller's initializer and initarg, as configured.
        if let Err(e) = call_task(|| unsafe { f(arg as *mut c_void) }) {
            let _ = send_init_failed(fd, &e);
            return;
        }
    }
    if send_all(fd, &[&header(K_READY, 0)]).is_err() {
        return;
    }
    let mut rb = RecvBuf::with_fds();
    let mut arena: Option<Mapping> = None;
    // Tasks with a deadline (`deadline`): the watch, the deadline the next task carries,
    // and the number of the last task received.
    let mut watch: Option<Mapping> = None;
    let mut next_deadline: Option<u64> = None;
    let mut seq: u64 = 0;
    while let Some(msg) = recv_task(fd, &mut rb) {
        let sent = match msg {
            Incoming::Task(task) => {
                seq += 1;
                let at = next_deadline.take();
                match begin(watch.as_ref(), seq, at) {
                    None => break,
                    Some(false) => send_outcome(fd, &expired()),
                    Some(true) => {
                        let outcome = task.run();
                        end(watch.as_ref(), seq, at);
                        send_outcome(fd, &outcome)
                    }
                }
            }
            Incoming::Arena { memfd, size } => {
                // The descriptor is closed at once (dropped here): the worker keeps the
                // mapping only, so it holds no descriptor but its channel.
                match Mapping::new(memfd.as_fd(), size) {
                    Ok(m) => arena = Some(m),
                    Err(_) => break,
                }
                continue;
            }
            Incoming::Watch(memfd) => {
                // As for the arena: the mapping only.
                match Mapping::new(memfd.as_fd(), WATCH_SIZE) {
                    Ok(m) => watch = Some(m),
                    Err(_) => break,
                }
                continue;
            }
            Incoming::Deadline(at) => {
                next_deadline = Some(at);
                continue;
            }
            Incoming::Shm { f, off, cap, len } => {
                seq += 1;
                let at = next_deadline.take();
                let slot = arena.as_ref().and_then(|a| a.range(off, cap));
                let Some(slot) = slot.filter(|_| len <= cap) else {
                    break; // a frame we cannot make sense of: leave
                };
                match begin(watch.as_ref(), seq, at) {
                    None => break,
                    Some(false) => send_outcome(fd, &expired()),
                    Some(true) => {
                        // SAFETY: `len <= cap` bytes inside our mapping, which the parent
                        // wrote before sending the frame and leaves alone until our answer.
                        let outcome =
                            run_bytes(f, unsafe { std::slice::from_raw_parts(slot, len) });
                        end(watch.as_ref(), seq, at);
                        match &outcome {
                            Outcome::Bytes(b) if b.len > 0 && b.len <= cap => {
                                // The result goes back in the same slot (the input is done
                                // with).
                                // SAFETY: `b.len <= cap` bytes of the slot; the task's
                                // buffer is its own allocation, disjoint from the arena.
                                unsafe {
                                    ptr::copy_nonoverlapping(b.ptr.cast::<u8>(), slot, b.len)
                                };
                                let m: [u8; HEADER + 17] = shm_result_frame(off, b.len);
                                send_all(fd, &[&m])
                            }
                            _ => send_outcome(fd, &outcome),
                        }
                    }
                }
            }
        };
        if sent.is_err() {
            break;
        }
    }
}

/// Before task `seq`, whose deadline is `at` if it has one: `Some(true)` to run it,
/// `Some(false)` when its deadline has passed (it never runs), `None` for a deadline
/// without a watch to report on (a frame we cannot make sense of).
fn begin(watch: Option<&Mapping>, seq: u64, at: Option<u64>) -> Option<bool> {
    match (at, watch) {
        (None, _) => Some(true),
        (Some(at), Some(w)) => Some(deadline::begin(w, seq, at)),
        (Some(_), None) => None,
    }
}

/// After task `seq` ran (see `deadline::end`).
fn end(watch: Option<&Mapping>, seq: u64, at: Option<u64>) {
    if let (Some(_), Some(w)) = (at, watch) {
        deadline::end(w, seq);
    }
}

/// The answer for a task whose deadline passed before it started: the parent replaces
/// it with its own message (`deadline_outcome`).
fn expired() -> Outcome {
    Outcome::failed(
        CF_DEADLINE,
        libc::ETIMEDOUT,
        "deadline passed before it started",
    )
}
