//! The engine: futures, waiting, thread pools. No raw pointers from C and no
//! `extern "C"` here; the FFI modules wrap these types.

#[cfg(not(cfutures_loom))]
pub(crate) mod blocks;
pub(crate) mod context;
pub(crate) mod fork;
pub(crate) mod future;
pub(crate) mod hook;
pub(crate) mod lazy;
pub(crate) mod many;
pub(crate) mod map;
pub(crate) mod owned;
pub(crate) mod pool;
pub(crate) mod process;
pub(crate) mod shared;
pub(crate) mod sync;
pub(crate) mod task;
pub(crate) mod then;
pub(crate) mod time;
pub(crate) mod timer;
pub(crate) mod waiter;
pub(crate) mod when;

/// Out-of-memory paths under a failing allocator.
#[cfg(all(test, not(cfutures_loom)))]
mod alloc_tests;
/// Model checks of this module's protocols (`scripts/loom.sh`).
#[cfg(all(test, cfutures_loom))]
mod loom_tests;
