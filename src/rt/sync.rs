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

#[cfg(cfutures_loom)]
pub(crate) use loom::alloc::{alloc, dealloc};
/// The allocator of `rt::shared::Shared`: std's, or loom's leak-tracking wrapper of it,
/// so that every model fails an execution that leaks a future or a wait set (and one
/// that frees an allocation twice).
#[cfg(not(cfutures_loom))]
pub(crate) use std::alloc::{alloc, dealloc};
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
