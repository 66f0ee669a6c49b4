//! Which process an executor belongs to: a fork generation that every `fork()` child
//! bumps, so that an executor copied into a child by the program's own `fork()` knows it
//! has no workers there.
//!
//! A child forked after an executor was made holds a copy of its memory but none of its
//! worker threads, and its worker processes are not the child's children. Submitting
//! there would queue work that nobody runs (CPython hangs so). `Origin` records the
//! process and generation an executor was made in; `Origin::is_foreign` is one relaxed
//! load and a compare, cheap enough for every submit (a `getpid()` is a system call in
//! current glibc).
//!
//! The generation is bumped by a `pthread_atfork` child handler, registered once, the
//! first time an `Origin` is made; the same handlers close the process pools'
//! descriptors in the child (`process::io::after_fork_child`), so that a child that lives on
//! never keeps a parent's worker channel open. Forks that do not run `atfork` handlers (`vfork`,
//! `posix_spawn`, a raw `clone`) are followed by `exec` or by code that does not use the
//! executor, so they need no bump. The library's own forks (the fork server and its
//! workers) bump it too, which is right: a worker process is not the process that made
//! the executor either.

use std::sync::{
    Once,
    atomic::{AtomicU64, Ordering},
};

/// How many `fork()`s lie between the first process and this one, along its ancestry.
/// Only ever written by the child handler, in a child, while it is the only thread.
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// Registers `child_handler` with `pthread_atfork`, once per process image.
static REGISTER: Once = Once::new();

extern "C" fn prepare_handler() {
    #[cfg(not(cfutures_loom))]
    super::process::io::before_fork();
}

extern "C" fn parent_handler() {
    #[cfg(not(cfutures_loom))]
    super::process::io::after_fork_parent();
}

extern "C" fn child_handler() {
    // Relaxed: the child is single-threaded here; threads it starts later see the new
    // value through the happens-before of their creation.
    GENERATION.fetch_add(1, Ordering::Relaxed);
    #[cfg(not(cfutures_loom))]
    super::process::io::after_fork_child();
}

/// The process (and fork generation) something was made in.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Origin {
    generation: u64,
    pid: libc::pid_t,
}

impl Origin {
    /// The calling process.
    pub(crate) fn here() -> Origin {
        REGISTER.call_once(|| {
            // SAFETY: registers handlers that bump an atomic and, for the process pools'
            // descriptors, hold one lock across the fork and close them in the child;
            // a failure (ENOMEM) leaves fork detection off, which is what we had before.
            unsafe {
                libc::pthread_atfork(
                    Some(prepare_handler),
                    Some(parent_handler),
                    Some(child_handler),
                )
            };
        });
        Origin {
            generation: GENERATION.load(Ordering::Relaxed),
            // SAFETY: plain system call.
            pid: unsafe { libc::getpid() },
        }
    }

    /// Whether the caller is in a process forked (directly or not) after this origin was
    /// recorded.
    #[inline]
    pub(crate) fn is_foreign(&self) -> bool {
        GENERATION.load(Ordering::Relaxed) != self.generation
    }

    /// The process id of the process it was made in.
    pub(crate) fn pid(&self) -> libc::pid_t {
        self.pid
    }
}

#[cfg(all(test, not(cfutures_loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_forked_child_is_foreign_and_its_parent_is_not() {
        let origin = Origin::here();
        assert!(!origin.is_foreign());
        // SAFETY: the child only reads an atomic and calls `_exit`.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let code = if origin.is_foreign() && !Origin::here().is_foreign() {
                0
            } else {
                1
            };
            // SAFETY: leaves the child without running the test harness's destructors.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waits for our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
        assert!(!origin.is_foreign());
        assert_eq!(origin.pid(), std::process::id() as libc::pid_t);
    }
}
