//! Fallible allocation for the engine's small fixed-size objects.
//!
//! std's `Arc::new` and `Box::new` abort the process when the allocator fails; stable
//! Rust has no `try_new`. The C API instead promises `CF_NO_MEMORY`, so the objects a
//! call makes for itself (a future's core, a multi-wait's set, an iterator's box) come
//! from here:
//!
//! - `Shared<T>`: an `Arc` without weak references (one word of count, placed after the
//!   value so that a pointer to the value is a pointer to the allocation), made by
//!   `try_new`, which gives the value back when memory runs out. A `cf_future *` is
//!   `Shared::into_raw` of the future's core.
//! - `try_box`: `Box::new` that gives the value back when memory runs out.
//! - `try_cstring`: a C string copy that reports a failed allocation.
//!
//! # Memory ordering (the reference count; std's `Arc` protocol)
//!
//! - A clone is a Relaxed `fetch_add`: the clone is made from a reference the caller
//!   already holds, so the object is alive and nothing needs to be ordered with it. A
//!   count beyond `MAX_REFCOUNT` aborts (billions of leaked references; wrapping would
//!   free a live object).
//! - `split` turns a reference nobody shares into several with one store when the count
//!   is 1 (read with Acquire, so that an owner's last Release decrement to 1 happens
//!   before the store and the release sequence the store starts); otherwise it adds them
//!   with one Relaxed `fetch_add`, as clones would.
//! - A drop is a Release `fetch_sub`: every use of the object through this reference
//!   happens before the decrement. The one that takes the count to zero then issues an
//!   Acquire fence, which pairs with every other reference's Release decrement, so that
//!   all their uses happen before the object is dropped and freed. (A Relaxed decrement
//!   would let another thread's last read of the object race with the free.)

use super::sync::{AtomicUsize, Ordering, alloc, dealloc, fence};
use std::{
    alloc::Layout,
    ffi::CString,
    marker::PhantomData,
    ops::Deref,
    ptr::{self, NonNull},
};

/// Counts beyond this abort instead of risking a wrap to zero (std's `Arc` limit).
const MAX_REFCOUNT: usize = isize::MAX as usize;

/// The allocation behind a `Shared<T>`. The value comes first (`repr(C)`), so a pointer
/// to the value and a pointer to the allocation are the same address.
#[repr(C)]
struct Inner<T> {
    value: T,
    count: AtomicUsize,
}

/// A reference-counted pointer whose constructor reports a failed allocation.
pub(crate) struct Shared<T> {
    ptr: NonNull<Inner<T>>,
    /// Owns an `Inner<T>` (for drop check and variance).
    _owns: PhantomData<Inner<T>>,
}

// SAFETY: as for `Arc<T>`: sending or sharing a `Shared<T>` shares the `T` between
// threads (Sync) and may drop it on another thread (Send).
unsafe impl<T: Send + Sync> Send for Shared<T> {}
// SAFETY: as above.
unsafe impl<T: Send + Sync> Sync for Shared<T> {}

/// Allocates room for a `T` with `alloc_fn` (the global allocator, or loom's tracking
/// wrapper of it); `None` when memory runs out. Zero-sized types get a dangling,
/// well-aligned pointer (no allocation).
fn try_alloc<T>(alloc_fn: unsafe fn(Layout) -> *mut u8) -> Option<NonNull<T>> {
    let layout = Layout::new::<T>();
    if layout.size() == 0 {
        return Some(NonNull::dangling());
    }
    // SAFETY: the layout has a non-zero size.
    NonNull::new(unsafe { alloc_fn(layout) }.cast::<T>())
}

/// `Box::new(value)`, or `Err(value)` when memory runs out.
pub(crate) fn try_box<T>(value: T) -> Result<Box<T>, T> {
    // std's allocator in every build: the `Box` frees with it.
    let Some(p) = try_alloc::<T>(std::alloc::alloc) else {
        return Err(value);
    };
    // SAFETY: `p` is valid for writes of a `T` (fresh, or dangling for a zero-sized T).
    // `Box::from_raw` accepts a pointer from the global allocator with `T`'s layout
    // (and a dangling one for a zero-sized T), which is what `try_alloc` gives.
    unsafe {
        p.as_ptr().write(value);
        Ok(Box::from_raw(p.as_ptr()))
    }
}

/// A C string copy of `bytes` (an interior NUL becomes a space), or `None` when memory
/// runs out. One allocation of exactly `len + 1` bytes, which `CString` keeps as it is.
pub(crate) fn try_cstring(bytes: &[u8]) -> Option<CString> {
    let mut v = Vec::new();
    v.try_reserve_exact(bytes.len().checked_add(1)?).ok()?;
    v.extend(bytes.iter().map(|&b| if b == 0 { b' ' } else { b }));
    v.push(0);
    CString::from_vec_with_nul(v).ok()
}

impl<T> Shared<T> {
    /// A new object with a count of one, or `Err(value)` when memory runs out.
    pub(crate) fn try_new(value: T) -> Result<Shared<T>, T> {
        let Some(p) = try_alloc::<Inner<T>>(alloc) else {
            return Err(value);
        };
        let inner = Inner {
            value,
            count: AtomicUsize::new(1),
        };
        // SAFETY: `p` is a fresh allocation with `Inner<T>`'s layout.
        unsafe { p.as_ptr().write(inner) };
        Ok(Shared {
            ptr: p,
            _owns: PhantomData,
        })
    }

    fn inner(&self) -> &Inner<T> {
        // SAFETY: the allocation lives while any `Shared` to it does (the count is at
        // least one while `self` exists).
        unsafe { self.ptr.as_ref() }
    }

    /// The address of the value (for handles and identity), without giving up `this`.
    pub(crate) fn as_ptr(this: &Shared<T>) -> *const T {
        this.ptr.as_ptr().cast_const().cast::<T>()
    }

    /// Gives up `this` without dropping its count: the pointer now holds the reference,
    /// to be taken back once with `from_raw`.
    pub(crate) fn into_raw(this: Shared<T>) -> *const T {
        let p = Shared::as_ptr(&this);
        std::mem::forget(this);
        p
    }

    /// Takes back the reference a pointer from `into_raw` holds.
    ///
    /// # Safety
    /// `p` came from `Shared::<T>::into_raw`, and the reference it holds is given up
    /// here (each reference is taken back once).
    pub(crate) unsafe fn from_raw(p: *const T) -> Shared<T> {
        Shared {
            // SAFETY: `into_raw` gave the non-NULL address of an `Inner<T>` (the value is
            // its first field, at offset 0).
            ptr: unsafe { NonNull::new_unchecked(p.cast_mut().cast::<Inner<T>>()) },
            _owns: PhantomData,
        }
    }

    /// Adds one reference to the object behind `p`, for a later `from_raw`.
    ///
    /// # Safety
    /// `p` came from `Shared::<T>::into_raw` and the object is alive (the caller holds a
    /// reference to it for the duration of the call).
    pub(crate) unsafe fn increment_strong_count(p: *const T) {
        // SAFETY: by the caller's guarantee, `p` is the address of a live `Inner<T>`.
        let inner = unsafe { &*p.cast::<Inner<T>>() };
        Self::increment(inner);
    }

    fn increment(inner: &Inner<T>) {
        // Relaxed: see the module comment (the caller's reference keeps it alive).
        if inner.count.fetch_add(1, Ordering::Relaxed) > MAX_REFCOUNT {
            std::process::abort();
        }
    }

    /// Turns `this` into `N` references (`N` >= 1) with one write to the count: a plain
    /// store when `this` is the only reference (a freshly made object: no atomic
    /// read-modify-write, which would wait for the object's fresh stores to drain),
    /// else one `fetch_add`. See the module comment.
    pub(crate) fn split<const N: usize>(this: Shared<T>) -> [Shared<T>; N] {
        const { assert!(N >= 1) };
        let count = &this.inner().count;
        if count.load(Ordering::Acquire) == 1 {
            // Ours is the only reference, so no other thread can touch the count.
            count.store(N, Ordering::Relaxed);
        } else if count.fetch_add(N - 1, Ordering::Relaxed) > MAX_REFCOUNT {
            std::process::abort();
        }
        let ptr = this.ptr;
        std::mem::forget(this);
        [(); N].map(|()| Shared {
            ptr,
            _owns: PhantomData,
        })
    }

    /// Whether both point at the same object.
    pub(crate) fn ptr_eq(a: &Shared<T>, b: &Shared<T>) -> bool {
        a.ptr == b.ptr
    }

    /// How many references exist now (for tests: racy while other threads use it).
    #[cfg(test)]
    pub(crate) fn strong_count(this: &Shared<T>) -> usize {
        this.inner().count.load(Ordering::Relaxed)
    }
}

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Shared<T> {
        Self::increment(self.inner());
        Shared {
            ptr: self.ptr,
            _owns: PhantomData,
        }
    }
}

impl<T> Drop for Shared<T> {
    fn drop(&mut self) {
        // Release: our uses of the object happen before the decrement that the last
        // owner acquires below (module comment).
        if self.inner().count.fetch_sub(1, Ordering::Release) != 1 {
            return;
        }
        // Acquire: pairs with every other owner's Release decrement, so that all their
        // uses of the object happen before it is dropped and freed.
        fence(Ordering::Acquire);
        let p = self.ptr.as_ptr();
        // SAFETY: the count reached zero: we are the last reference, so nobody else can
        // reach the object. It was written by `try_new` into an allocation with
        // `Inner<T>`'s layout, which we free once, here.
        unsafe {
            ptr::drop_in_place(p);
            if Layout::new::<Inner<T>>().size() != 0 {
                dealloc(p.cast::<u8>(), Layout::new::<Inner<T>>());
            }
        }
    }
}

impl<T> Deref for Shared<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.inner().value
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for Shared<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (**self).fmt(f)
    }
}

impl<T> AsRef<T> for Shared<T> {
    fn as_ref(&self) -> &T {
        self
    }
}

#[cfg(all(test, not(cfutures_loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize as StdCount, Ordering::SeqCst};

    /// Counts its drops in the counter it points at.
    struct Probe<'a>(&'a StdCount, u64);

    impl Drop for Probe<'_> {
        fn drop(&mut self) {
            self.0.fetch_add(1, SeqCst);
        }
    }

    #[test]
    fn clone_drop_and_raw_round_trip_free_once() {
        let drops = StdCount::new(0);
        let a = Shared::try_new(Probe(&drops, 7)).ok().unwrap();
        assert_eq!(Shared::strong_count(&a), 1);
        let b = a.clone();
        assert!(Shared::ptr_eq(&a, &b));
        assert_eq!(Shared::strong_count(&a), 2);
        let raw = Shared::into_raw(b);
        assert_eq!(raw, Shared::as_ptr(&a));
        // SAFETY: `raw` came from `into_raw` and `a` keeps the object alive.
        unsafe { Shared::increment_strong_count(raw) };
        assert_eq!(Shared::strong_count(&a), 3);
        // SAFETY: two references are held by `raw`; each is taken back once.
        let (c, d) = unsafe { (Shared::from_raw(raw), Shared::from_raw(raw)) };
        assert_eq!(c.1, 7);
        drop((a, c));
        assert_eq!(drops.load(SeqCst), 0);
        drop(d);
        assert_eq!(drops.load(SeqCst), 1);
    }

    #[test]
    fn threads_clone_and_drop_free_exactly_once() {
        let drops = StdCount::new(0);
        {
            let s = Shared::try_new(Probe(&drops, 1)).ok().unwrap();
            std::thread::scope(|scope| {
                for _ in 0..4 {
                    let mine = s.clone();
                    scope.spawn(move || {
                        for _ in 0..10_000 {
                            drop(mine.clone());
                        }
                        drop(mine);
                    });
                }
            });
            assert_eq!(Shared::strong_count(&s), 1);
        }
        assert_eq!(drops.load(SeqCst), 1);
    }

    #[test]
    fn split_makes_references_that_free_once() {
        let drops = StdCount::new(0);
        let a = Shared::try_new(Probe(&drops, 3)).ok().unwrap();
        // Unshared: the plain store.
        let [a, b, c] = Shared::split(a);
        assert_eq!(Shared::strong_count(&a), 3);
        // Shared: the atomic add.
        let [b, d] = Shared::split(b);
        assert_eq!(Shared::strong_count(&c), 4);
        drop((a, b, c));
        assert_eq!(drops.load(SeqCst), 0);
        assert_eq!(d.1, 3);
        drop(d);
        assert_eq!(drops.load(SeqCst), 1);
    }

    #[test]
    fn zero_sized_values_and_try_box() {
        let z = Shared::try_new(()).ok().unwrap();
        drop(z.clone());
        drop(z);
        let b = try_box([1u64, 2, 3]).ok().unwrap();
        assert_eq!(b.iter().sum::<u64>(), 6);
        let e = try_box(()).ok().unwrap();
        drop(e);
        let c = try_cstring(b"a\0b").unwrap();
        assert_eq!(c.as_bytes(), b"a b");
        assert_eq!(try_cstring(b"").unwrap().as_bytes(), b"");
    }

    #[test]
    fn inner_layout_puts_the_value_first() {
        let s = Shared::try_new(5u32).ok().unwrap();
        assert_eq!(Shared::as_ptr(&s).cast::<u8>(), s.ptr.as_ptr().cast::<u8>());
        assert_eq!(*s, 5);
    }
}
