//! A cache of the engine's small blocks (futures' cores, listener nodes, continuation
//! links and other objects of 24 to 96 bytes), so that a future made on one thread and freed on another
//! does not cost two trips through the C allocator's shared state.
//!
//! Why: a future is usually made by the submitting thread and freed by a worker (with a
//! done callback, its listener node too). glibc's `malloc` serves a thread from its own
//! small cache only what that thread freed, so the submitter took every block from the
//! arena's bins: a profile of 1M tasks with a callback each (bench W5) spent a quarter of
//! its samples in `_int_malloc` and `_int_free`.
//!
//! # Design (magazines)
//!
//! - Ten size classes: 24, 32, ... 96 bytes (alignment up to 8). Other layouts go
//!   straight to the allocator. A class's blocks are always allocated and freed with the
//!   class's own layout.
//! - Each thread keeps one magazine of up to `MAG` blocks per class. `alloc` pops from
//!   it; when it is empty, it takes a full magazine from the class's depot. `dealloc`
//!   pushes onto it; when it is full, it hands the magazine to the depot. So a submitter
//!   and a worker meet once per `MAG` blocks instead of once per block.
//! - The depot keeps at most `DEPOT_MAGS` full magazines per class (at most 96 KiB of
//!   96-byte blocks); beyond that, blocks go back to the allocator.
//! - The depot's lock is only ever *tried*: a thread that finds it taken uses the
//!   allocator instead, so the cache never waits, and a process forked while another
//!   thread held the lock (a process pool's worker) simply bypasses the depot.
//! - A thread's magazines go to the depot, or back to the allocator, when it exits.
//!   That needs a thread-exit destructor, whose registration allocates (and glibc aborts
//!   when it cannot): so a thread uses the cache only once it is *armed*, which
//!   registers it. Executor creation arms the calling thread and each worker arms itself
//!   when it starts; any other thread arms itself at its first small allocation if a
//!   probe allocation succeeds, and otherwise goes straight to the allocator. Beyond
//!   that the cache never allocates: the allocator's failure is reported as before (NULL).
//! - Off in unit tests (which count every allocation), under loom (whose allocator
//!   tracks leaks), and when `CFUTURES_NO_BLOCK_CACHE` is set in the environment to
//!   anything but "" or "0": the valgrind run sets it, since a freed block kept in a
//!   magazine would hide a use after free from valgrind.

use std::{
    alloc::Layout,
    cell::UnsafeCell,
    ffi::CStr,
    ptr,
    sync::{
        Mutex, TryLockError,
        atomic::{AtomicU8, AtomicUsize, Ordering},
    },
};

/// Smallest cached size; the classes are 24, 32, ... 96 bytes (96: a pool continuation's
/// link with its listener node, `rt::then`).
const MIN: usize = 24;
/// Number of size classes, 8 bytes apart.
const CLASSES: usize = 10;
/// Blocks per magazine.
const MAG: usize = 32;
/// Full magazines a depot keeps per class.
const DEPOT_MAGS: usize = 32;

/// Up to `MAG` free blocks of one class.
#[derive(Clone, Copy)]
struct Magazine {
    n: usize,
    blocks: [*mut u8; MAG],
}

impl Magazine {
    const EMPTY: Magazine = Magazine {
        n: 0,
        blocks: [ptr::null_mut(); MAG],
    };
}

/// Full magazines of one class, shared by all threads.
struct Depot {
    n: usize,
    mags: [Magazine; DEPOT_MAGS],
}

// SAFETY: the blocks are free memory from the global allocator, owned by whichever
// magazine holds them; moving them between threads is what the cache is for.
unsafe impl Send for Depot {}

struct Class {
    depot: Mutex<Depot>,
    /// `depot.n`, mirrored after each change, so that a thread can skip the lock when
    /// the depot is empty (or full). Only a hint.
    full: AtomicUsize,
}

impl Class {
    const fn new() -> Class {
        Class {
            depot: Mutex::new(Depot {
                n: 0,
                mags: [Magazine::EMPTY; DEPOT_MAGS],
            }),
            full: AtomicUsize::new(0),
        }
    }

    /// The depot if its lock is free right now.
    fn try_depot(&self) -> Option<std::sync::MutexGuard<'_, Depot>> {
        match self.depot.try_lock() {
            Ok(g) => Some(g),
            // Nothing panics under this lock; a poisoned one is still consistent.
            Err(TryLockError::Poisoned(e)) => Some(e.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
    }

    /// Hands a full magazine over; `false` if the depot is full or busy.
    fn give(&self, mag: &mut Magazine) -> bool {
        if self.full.load(Ordering::Relaxed) >= DEPOT_MAGS {
            return false;
        }
        let Some(mut d) = self.try_depot() else {
            return false;
        };
        if d.n == DEPOT_MAGS {
            return false;
        }
        let i = d.n;
        d.mags[i] = *mag;
        d.n += 1;
        self.full.store(d.n, Ordering::Relaxed);
        mag.n = 0;
        true
    }

    /// Refills an empty magazine from the depot; `false` if it is empty or busy.
    fn take(&self, mag: &mut Magazine) -> bool {
        if self.full.load(Ordering::Relaxed) == 0 {
            return false;
        }
        let Some(mut d) = self.try_depot() else {
            return false;
        };
        if d.n == 0 {
            return false;
        }
        d.n -= 1;
        *mag = d.mags[d.n];
        self.full.store(d.n, Ordering::Relaxed);
        true
    }
}

static DEPOTS: [Class; CLASSES] = [const { Class::new() }; CLASSES];

/// This thread's magazines.
struct Local {
    mags: [Magazine; CLASSES],
}

impl Drop for Local {
    fn drop(&mut self) {
        for (c, mag) in self.mags.iter_mut().enumerate() {
            if mag.n == MAG && DEPOTS[c].give(mag) {
                continue;
            }
            for &p in &mag.blocks[..mag.n] {
                // SAFETY: a free block of class `c`, allocated with its layout.
                unsafe { std::alloc::dealloc(p, class_layout(c)) };
            }
            mag.n = 0;
        }
    }
}

std::thread_local! {
    static LOCAL: UnsafeCell<Local> = const {
        UnsafeCell::new(Local {
            mags: [Magazine::EMPTY; CLASSES],
        })
    };
    /// Whether `LOCAL`'s destructor is registered (see the module comment). No
    /// destructor of its own, so reading it registers nothing.
    static ARMED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Registers this thread's magazines (their thread-exit destructor allocates), while
/// there is memory for it; see the module comment. Idempotent.
pub(crate) fn arm_thread() {
    if enabled() {
        arm();
    }
}

fn arm() {
    // The first access registers the destructor.
    if !ARMED.get() && LOCAL.try_with(|_| ()).is_ok() {
        ARMED.set(true);
    }
}

/// Whether this thread may use its magazines: armed, or armed now after a probe
/// allocation shows that there is memory to register them.
fn armed() -> bool {
    if ARMED.get() {
        return true;
    }
    // SAFETY: a plain allocation, freed at once.
    let probe = unsafe { libc::malloc(1024) };
    if probe.is_null() {
        return false;
    }
    // SAFETY: allocated just above.
    unsafe { libc::free(probe) };
    arm();
    ARMED.get()
}

/// The class of a layout, if it is cached.
fn class_of(layout: Layout) -> Option<usize> {
    let size = layout.size();
    if layout.align() > 8 || !(MIN..=MIN + 8 * (CLASSES - 1)).contains(&size) {
        return None;
    }
    Some((size - MIN).div_ceil(8))
}

/// The layout every block of class `c` is allocated and freed with.
fn class_layout(c: usize) -> Layout {
    Layout::from_size_align(MIN + 8 * c, 8).expect("a small power-of-two-aligned layout")
}

/// 0: not decided yet; 1: on; 2: off.
static STATE: AtomicU8 = AtomicU8::new(0);

fn enabled() -> bool {
    if cfg!(test) {
        return false;
    }
    match STATE.load(Ordering::Relaxed) {
        1 => true,
        2 => false,
        _ => {
            // SAFETY: a NUL-terminated name; `getenv` allocates nothing, and its result
            // is read at once.
            let v = unsafe { libc::getenv(c"CFUTURES_NO_BLOCK_CACHE".as_ptr()) };
            // SAFETY: a NUL-terminated string from the environment, when not NULL.
            let off =
                !v.is_null() && !matches!(unsafe { CStr::from_ptr(v) }.to_bytes(), b"" | b"0");
            STATE.store(if off { 2 } else { 1 }, Ordering::Relaxed);
            !off
        }
    }
}

/// `std::alloc::alloc`, served from the cache for small layouts. NULL when memory runs
/// out.
///
/// # Safety
/// As for `std::alloc::alloc`: `layout` is not zero-sized.
pub(crate) unsafe fn alloc(layout: Layout) -> *mut u8 {
    match class_of(layout).filter(|_| enabled()) {
        Some(c) => alloc_class(c),
        // SAFETY: the caller's promise.
        None => unsafe { std::alloc::alloc(layout) },
    }
}

/// `std::alloc::dealloc` for a block from `alloc` with the same layout.
///
/// # Safety
/// As for `std::alloc::dealloc`: `p` came from `alloc(layout)` and is freed once.
pub(crate) unsafe fn dealloc(p: *mut u8, layout: Layout) {
    match class_of(layout).filter(|_| enabled()) {
        // SAFETY: the caller's promise; `alloc` made it a block of class `c`.
        Some(c) => unsafe { dealloc_class(c, p) },
        // SAFETY: the caller's promise.
        None => unsafe { std::alloc::dealloc(p, layout) },
    }
}

/// A block of class `c`: this thread's magazine, the depot, or the allocator.
fn alloc_class(c: usize) -> *mut u8 {
    if !armed() {
        // SAFETY: a non-zero-sized layout.
        return unsafe { std::alloc::alloc(class_layout(c)) };
    }
    let cached = LOCAL.try_with(|l| {
        // SAFETY: this thread's own magazines, borrowed for this call only (nothing
        // below calls back into the cache).
        let mag = unsafe { &mut (*l.get()).mags[c] };
        if mag.n == 0 && !DEPOTS[c].take(mag) {
            return ptr::null_mut();
        }
        mag.n -= 1;
        mag.blocks[mag.n]
    });
    match cached {
        Ok(p) if !p.is_null() => p,
        // SAFETY: a non-zero-sized layout.
        _ => unsafe { std::alloc::alloc(class_layout(c)) },
    }
}

/// Frees a block of class `c`: into this thread's magazine, the depot, or the allocator.
///
/// # Safety
/// `p` came from `alloc_class(c)` and is freed once.
unsafe fn dealloc_class(c: usize, p: *mut u8) {
    if !armed() {
        // SAFETY: blocks of class `c` are allocated with its layout (`alloc_class`).
        return unsafe { std::alloc::dealloc(p, class_layout(c)) };
    }
    let kept = LOCAL.try_with(|l| {
        // SAFETY: as in `alloc_class`.
        let mag = unsafe { &mut (*l.get()).mags[c] };
        if mag.n == MAG && !DEPOTS[c].give(mag) {
            return false;
        }
        mag.blocks[mag.n] = p;
        mag.n += 1;
        true
    });
    if kept != Ok(true) {
        // SAFETY: blocks of class `c` are allocated with its layout (`alloc_class`).
        unsafe { std::alloc::dealloc(p, class_layout(c)) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_cover_24_to_96_bytes() {
        let l = |size, align| Layout::from_size_align(size, align).unwrap();
        assert_eq!(class_of(l(16, 8)), None);
        assert_eq!(class_of(l(24, 8)), Some(0));
        assert_eq!(class_of(l(25, 1)), Some(1));
        assert_eq!(class_of(l(40, 8)), Some(2));
        assert_eq!(class_of(l(48, 8)), Some(3));
        assert_eq!(class_of(l(49, 8)), Some(4));
        assert_eq!(class_of(l(72, 8)), Some(6));
        assert_eq!(class_of(l(96, 8)), Some(9));
        assert_eq!(class_of(l(97, 8)), None);
        assert_eq!(class_of(l(32, 16)), None);
        for c in 0..CLASSES {
            assert!(class_layout(c).size() >= MIN + 8 * c);
        }
    }

    #[test]
    fn blocks_freed_on_one_thread_serve_another() {
        // Class 3 (48 bytes): a worker frees two magazines' worth; the second full one
        // goes to the depot when the third begins, and its thread exit hands over the
        // rest. Another thread then gets those very blocks back.
        let c = 3;
        let made: Vec<usize> = (0..2 * MAG).map(|_| alloc_class(c) as usize).collect();
        assert!(made.iter().all(|&p| p != 0));
        let freed = made.clone();
        std::thread::spawn(move || {
            for p in freed {
                // SAFETY: each block came from `alloc_class(c)` and is freed once.
                unsafe { dealloc_class(c, p as *mut u8) };
            }
        })
        .join()
        .unwrap();
        let again: Vec<usize> =
            std::thread::spawn(move || (0..2 * MAG).map(|_| alloc_class(c) as usize).collect())
                .join()
                .unwrap();
        // Other tests may take or add class-3 blocks meanwhile; most must be ours.
        let ours = again.iter().filter(|p| made.contains(p)).count();
        assert!(ours >= MAG, "only {ours} of {} blocks came back", 2 * MAG);
        for p in again {
            // SAFETY: as above.
            unsafe { dealloc_class(c, p as *mut u8) };
        }
    }
}
