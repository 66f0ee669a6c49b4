//! The one place the engine takes its synchronisation primitives from, so that a model
//! checker can be swapped in behind it later.

pub(crate) use std::sync::{
    Arc, Condvar, Mutex, MutexGuard,
    atomic::{AtomicU32, AtomicUsize, Ordering},
};
pub(crate) use std::thread::{self, Thread};

/// Locks a mutex, ignoring poisoning: no user code ever runs while one of our locks is
/// held, so a poisoned lock can only come from a bug in this crate, whose state update
/// is still complete (all our critical sections are panic-free in practice).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
