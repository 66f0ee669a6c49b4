//! The one place the engine takes its synchronisation primitives from: std's in the
//! normal build, loom's model-checked ones under `--cfg cfutures_loom` (see
//! `scripts/loom.sh` and `rt::loom_tests`). Nothing here changes the normal build: every
//! name is a re-export of std, except `UnsafeCell`, a `#[inline(always)]` wrapper that
//! gives std's cell loom's closure API (`with`/`with_mut`).
//!
//! Under loom:
//! - atomics, `Condvar`, `MutexGuard`, threads (`spawn`, `park`, `current`, `Thread`,
//!   `yield_now`, `JoinHandle`, `Builder`), `thread_local!` and `UnsafeCell` are loom's.
//!   loom runs every model thread as a coroutine on one OS thread, so per-thread state
//!   must use loom's `thread_local!` (std's would be shared by all model threads).
//! - `Mutex` is loom's, behind a wrapper with a `const fn new` (the process-pool module
//!   keeps one in a `static`, and loom's `new` is not `const`): the loom mutex is built on
//!   first use, inside the execution that uses it.
//! - `park_timeout` is a `yield_now`: loom has no clock. The engine re-checks its
//!   condition and the deadline after every wake-up, so this models a timeout or a
//!   spurious wake-up; models only use deadlines that never pass or have already passed.
//! - `Arc` stays std's: the FFI layer (`executor`) names `std::sync::Arc` for the very
//!   `Arc<Pool>` the engine hands out. Futures are not `Arc`s but `rt::shared::Shared`,
//!   whose count is one of the atomics above, so loom checks its protocol too; the
//!   models check reference counts explicitly (`Shared::strong_count`).
//! - `statics::AtomicUsize` is std's in both builds: loom's atomics cannot live in a
//!   `static` (they belong to one execution), and the one such counter only numbers pools
//!   for thread names.

#[cfg(not(cfutures_loom))]
pub(crate) use std::{
    sync::{
        Arc, Condvar, Mutex, MutexGuard,
        atomic::{AtomicU32, AtomicUsize, Ordering, fence},
    },
    thread::{self, Thread},
    thread_local,
};

#[cfg(cfutures_loom)]
pub(crate) use loom::{
    cell::UnsafeCell,
    sync::{
        Condvar, MutexGuard,
        atomic::{AtomicU32, AtomicUsize, Ordering, fence},
    },
};
#[cfg(cfutures_loom)]
pub(crate) use loom_shim::{Mutex, thread, thread::Thread};

/// The allocator of `rt::shared::Shared` and of listener nodes: std's behind the small
/// block cache (`rt::blocks`), or loom's leak-tracking wrapper of std's, so that every
/// model fails an execution that leaks a future or a wait set (and one that frees an
/// allocation twice).
#[cfg(not(cfutures_loom))]
pub(crate) use super::blocks::{alloc, dealloc};
#[cfg(cfutures_loom)]
pub(crate) use loom::alloc::{alloc, dealloc};
#[cfg(cfutures_loom)]
pub(crate) use std::sync::Arc;

/// loom's `thread_local!`, which (written for edition 2021) does not take the
/// `= const { … }` form: this strips it. The value is then built by a closure on first
/// use in each model thread, which is what `const` means for these cheap initial values.
#[cfg(cfutures_loom)]
macro_rules! loom_thread_local {
    () => {};
    ($(#[$attr:meta])* $vis:vis static $name:ident: $t:ty = const { $init:expr }; $($rest:tt)*) => {
        loom::thread_local!($(#[$attr])* $vis static $name: $t = $init);
        $crate::rt::sync::loom_thread_local!($($rest)*);
    };
    ($(#[$attr:meta])* $vis:vis static $name:ident: $t:ty = $init:expr; $($rest:tt)*) => {
        loom::thread_local!($(#[$attr])* $vis static $name: $t = $init);
        $crate::rt::sync::loom_thread_local!($($rest)*);
    };
}
#[cfg(cfutures_loom)]
pub(crate) use loom_thread_local as thread_local;
#[cfg(cfutures_loom)]
pub(crate) use loom_thread_local;

/// Atomics that live in `static`s: std's in both builds (see the module comment).
pub(crate) mod statics {
    pub(crate) use std::sync::atomic::AtomicUsize;
}

/// Locks a mutex, ignoring poisoning: no user code ever runs while one of our locks is
/// held, so a poisoned lock can only come from a bug in this crate, whose state update
/// is still complete (all our critical sections are panic-free in practice).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// std's `UnsafeCell` with loom's closure API, so that the engine's cell accesses are
/// checked under loom and compile to plain pointer accesses otherwise.
#[cfg(not(cfutures_loom))]
#[derive(Debug)]
pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(cfutures_loom))]
impl<T> UnsafeCell<T> {
    /// Wraps `data`.
    #[inline(always)]
    pub(crate) const fn new(data: T) -> UnsafeCell<T> {
        UnsafeCell(std::cell::UnsafeCell::new(data))
    }

    /// Calls `f` with a shared pointer to the contents (a read access under loom).
    #[inline(always)]
    pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get())
    }

    /// Calls `f` with a unique pointer to the contents (a write access under loom).
    #[inline(always)]
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

/// The loom stand-ins that are not plain re-exports.
#[cfg(cfutures_loom)]
mod loom_shim {
    use std::sync::{LockResult, OnceLock, TryLockResult};

    /// loom's mutex with a `const fn new`: the value waits in `seed` until the first
    /// lock builds the loom mutex (loom objects can only be made inside an execution).
    /// A `static` one is therefore only usable within one execution; the models never
    /// touch the one `static` the engine has (the process pools' fd list).
    #[derive(Debug)]
    pub(crate) struct Mutex<T> {
        seed: std::sync::Mutex<Option<T>>,
        real: OnceLock<loom::sync::Mutex<T>>,
    }

    impl<T> Mutex<T> {
        pub(crate) const fn new(value: T) -> Mutex<T> {
            Mutex {
                seed: std::sync::Mutex::new(Some(value)),
                real: OnceLock::new(),
            }
        }

        fn get(&self) -> &loom::sync::Mutex<T> {
            self.real.get_or_init(|| {
                let value = self.seed.lock().unwrap_or_else(|e| e.into_inner()).take();
                loom::sync::Mutex::new(value.expect("loom mutex seeded once"))
            })
        }

        pub(crate) fn lock(&self) -> LockResult<loom::sync::MutexGuard<'_, T>> {
            self.get().lock()
        }

        pub(crate) fn try_lock(&self) -> TryLockResult<loom::sync::MutexGuard<'_, T>> {
            self.get().try_lock()
        }
    }

    /// loom's threads, plus what the engine uses of `std::thread` that loom lacks.
    pub(crate) mod thread {
        #[cfg_attr(
            not(test),
            expect(
                unused_imports,
                reason = "the engine spawns through `Builder`; the models use `spawn`"
            )
        )]
        pub(crate) use loom::thread::spawn;
        pub(crate) use loom::thread::{JoinHandle, Thread, current, park, yield_now};
        pub(crate) use std::thread::available_parallelism;
        use std::{io, time::Duration};

        /// loom has no clock: a timed park is a yield, i.e. a timeout or a spurious
        /// wake-up, after which every caller re-checks its condition and deadline.
        pub(crate) fn park_timeout(_: Duration) {
            yield_now();
        }

        /// `std::thread::Builder` over `loom::thread::Builder`. loom's stack size is in
        /// words (it goes to the coroutine library), std's in bytes.
        pub(crate) struct Builder(loom::thread::Builder);

        impl Builder {
            pub(crate) fn new() -> Builder {
                Builder(loom::thread::Builder::new())
            }

            pub(crate) fn name(self, name: String) -> Builder {
                Builder(self.0.name(name))
            }

            pub(crate) fn stack_size(self, bytes: usize) -> Builder {
                Builder(self.0.stack_size(bytes / size_of::<usize>()))
            }

            pub(crate) fn spawn<F, T>(self, f: F) -> io::Result<JoinHandle<T>>
            where
                F: FnOnce() -> T + Send + 'static,
                T: Send + 'static,
            {
                self.0.spawn(f)
            }
        }
    }
}

/// A lock of one 32-bit word that guards nothing by itself (the data sits next to it, in
/// an `UnsafeCell`): what a future uses for its listener list, where std's `Mutex<T>`
/// would cost 8 more bytes per future for its poison flag and padding. The usual futex
/// lock (0 unlocked, 1 locked, 2 locked with sleepers): an uncontended lock and unlock
/// are one atomic each; a contended one spins briefly, then sleeps in `futex(2)`.
/// Under loom it is loom's `Mutex<()>`, so the models check the protocols built on it.
#[cfg(not(cfutures_loom))]
#[derive(Debug)]
pub(crate) struct RawLock(AtomicU32);

/// Holds a `RawLock` until dropped.
#[cfg(not(cfutures_loom))]
pub(crate) struct RawLockGuard<'a>(&'a RawLock);

#[cfg(not(cfutures_loom))]
impl RawLock {
    pub(crate) const fn new() -> RawLock {
        RawLock(AtomicU32::new(0))
    }

    /// Takes the lock (Acquire: the holder sees what the previous one wrote).
    #[inline]
    pub(crate) fn lock(&self) -> RawLockGuard<'_> {
        if self
            .0
            .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            self.lock_contended();
        }
        RawLockGuard(self)
    }

    #[cold]
    fn lock_contended(&self) {
        let backoff = crossbeam_utils::Backoff::new();
        while !backoff.is_completed() {
            if self.0.load(Ordering::Relaxed) == 0
                && self
                    .0
                    .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                return;
            }
            backoff.snooze();
        }
        // Mark "locked with sleepers" and sleep until the word changes; whoever takes it
        // this way leaves it at 2, so its unlock wakes the next sleeper.
        while self.0.swap(2, Ordering::Acquire) != 0 {
            // SAFETY: a FUTEX_WAIT on our own live word; it returns at once when the word
            // is no longer 2, and spurious returns are handled by the loop.
            unsafe {
                libc::syscall(
                    libc::SYS_futex,
                    self.0.as_ptr(),
                    libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
                    2u32,
                    std::ptr::null::<libc::timespec>(),
                )
            };
        }
    }

    /// Releases the lock (Release), waking one sleeper if there may be one.
    #[inline]
    fn unlock(&self) {
        if self.0.swap(0, Ordering::Release) == 2 {
            // SAFETY: a FUTEX_WAKE of one waiter on our own live word.
            unsafe {
                libc::syscall(
                    libc::SYS_futex,
                    self.0.as_ptr(),
                    libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
                    1u32,
                )
            };
        }
    }
}

#[cfg(not(cfutures_loom))]
impl Drop for RawLockGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        self.0.unlock();
    }
}

/// Under loom: loom's `Mutex<()>` (see above).
#[cfg(cfutures_loom)]
#[derive(Debug)]
pub(crate) struct RawLock(loom::sync::Mutex<()>);

#[cfg(cfutures_loom)]
pub(crate) type RawLockGuard<'a> = loom::sync::MutexGuard<'a, ()>;

#[cfg(cfutures_loom)]
impl RawLock {
    pub(crate) fn new() -> RawLock {
        RawLock(loom::sync::Mutex::new(()))
    }

    pub(crate) fn lock(&self) -> RawLockGuard<'_> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(all(test, not(cfutures_loom)))]
mod tests {
    use super::*;

    /// Four threads increment a plain counter under the lock, often enough that some
    /// of them sleep in the futex: no increment is lost.
    #[test]
    fn raw_lock_excludes() {
        struct Shared {
            lock: RawLock,
            count: std::cell::UnsafeCell<u64>,
        }
        // SAFETY: `count` is only touched under `lock`.
        unsafe impl Sync for Shared {}
        let s = Shared {
            lock: RawLock::new(),
            count: std::cell::UnsafeCell::new(0),
        };
        let s = &s;
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(move || {
                    for i in 0..100_000 {
                        let _g = s.lock.lock();
                        // SAFETY: under the lock.
                        unsafe { *s.count.get() += 1 };
                        if i % 1000 == 0 {
                            std::thread::yield_now(); // hold it across a reschedule
                        }
                    }
                });
            }
        });
        // SAFETY: every other thread has finished.
        assert_eq!(unsafe { *s.count.get() }, 400_000);
        assert_eq!(s.lock.0.load(Ordering::Relaxed), 0);
    }
}
