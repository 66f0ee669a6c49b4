//! A pointer map's copy of its inputs (`ArgBuf`), filled chunk by chunk (`ArgFiller`), and
//! each chunk's share of it (`Slots`): whole huge pages on a huge-page boundary, the last
//! one kept for the next map.

use super::*;

/// Inputs this large are copied into a mapping of their own with `MADV_HUGEPAGE`: where
/// the kernel grants huge pages, a map of a million items then costs a few page faults
/// instead of two thousand. (On this project's VM it grants them, `thp_fault_alloc`
/// counts them; a million-item map ran at a median 212M items/s with the advice and 170M
/// without, though a huge page the hypervisor has not backed yet can take milliseconds
/// to clear.) `ArgFiller` populates a fresh mapping's pages ahead of the copy, a stretch
/// at a time.
pub(super) const HUGE_COPY: usize = 2 << 20;

/// The largest mapping kept for the next map when its map is done (`SPARE`).
pub(super) const SPARE_MAX: usize = 16 << 20;

/// The size of a huge page on x86-64 and arm64 with 4 KiB pages; a mapping for a map's
/// copy is a whole number of them, and starts at a multiple of one. A mapping that does
/// not gets huge pages only for the aligned 2 MiB stretches inside it: a million-item
/// copy (8,000,000 bytes) at an arbitrary address had about half its pages faulted in one
/// 4 KiB page at a time.
pub(super) const HUGE_PAGE: usize = 2 << 20;

/// A fresh private anonymous mapping of `len` bytes (a multiple of `HUGE_PAGE`) that
/// starts on a `HUGE_PAGE` boundary, or `None` when none can be made. Linux 6.7 and later
/// place such a mapping on a boundary by themselves; on older kernels it is cut out of a
/// mapping one huge page larger.
pub(super) fn map_aligned(len: usize) -> Option<NonNull<u8>> {
    let p = map_anon(len)?;
    if p.addr() % HUGE_PAGE == 0 {
        return NonNull::new(p);
    }
    // SAFETY: the mapping just made, which nothing refers to.
    unsafe { libc::munmap(p.cast(), len) };
    map_aligned_by_trimming(len)
}

/// `map_aligned` for kernels that do not align by themselves: maps one huge page more
/// and unmaps what lies outside the aligned `len` bytes.
pub(super) fn map_aligned_by_trimming(len: usize) -> Option<NonNull<u8>> {
    let p = map_anon(len.checked_add(HUGE_PAGE)?)?;
    let head = p.addr().next_multiple_of(HUGE_PAGE) - p.addr();
    // SAFETY: the unaligned head and the tail of the mapping just made, outside the `len`
    // bytes kept.
    unsafe {
        if head > 0 {
            libc::munmap(p.cast(), head);
        }
        libc::munmap(p.add(head + len).cast(), HUGE_PAGE - head);
    }
    NonNull::new(p.wrapping_add(head))
}

/// A fresh private anonymous mapping of `len` bytes, or `None`.
pub(super) fn map_anon(len: usize) -> Option<*mut u8> {
    // SAFETY: a fresh private anonymous mapping; checked below.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    (p != libc::MAP_FAILED).then_some(p.cast())
}

/// One map's input mapping, kept when the map is done (up to `SPARE_MAX` bytes) for the
/// next map that fits in it: its pages are present already, so that map's copy costs no
/// page fault (on this VM a cold copy of 8 MiB took 3 ms, a warm one 0.3 ms), and no
/// `munmap` (0.5 ms for 8 MiB) is paid when a map is freed. The memory stays with the
/// process until a later map takes it or a larger one replaces it, as `malloc` keeps
/// freed memory. The lock is only tried: a thread that finds it taken (or a process
/// forked while another thread held it) maps and unmaps as without it.
pub(super) static SPARE: std::sync::Mutex<Option<AnonMapping>> = std::sync::Mutex::new(None);

/// An anonymous private mapping of `len` bytes.
#[derive(Debug)]
pub(super) struct AnonMapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: a private mapping owned by whoever holds the `AnonMapping`.
unsafe impl Send for AnonMapping {}

impl AnonMapping {
    /// A mapping of at least `len` bytes: the spare one if it is large enough (`true`:
    /// its pages are present), else a fresh one (`false`); `None` when none can be made.
    pub(super) fn get(len: usize) -> Option<(AnonMapping, bool)> {
        if let Ok(mut spare) = SPARE.try_lock()
            && spare.as_ref().is_some_and(|m| m.len >= len)
        {
            return spare.take().map(|m| (m, true));
        }
        let len = len.checked_next_multiple_of(HUGE_PAGE)?;
        let p = map_aligned(len)?;
        // SAFETY: our mapping; a refused hint changes nothing.
        unsafe { libc::madvise(p.as_ptr().cast(), len, libc::MADV_HUGEPAGE) };
        Some((AnonMapping { ptr: p, len }, false))
    }

    /// Done with it: kept as the spare (replacing a smaller one), or unmapped.
    pub(super) fn put(self) {
        let mut keep = Some(self);
        if let Ok(mut spare) = SPARE.try_lock() {
            let m = keep.take().expect("set above");
            if m.len <= SPARE_MAX && spare.as_ref().is_none_or(|s| s.len < m.len) {
                keep = spare.replace(m);
            } else {
                keep = Some(m);
            }
        }
        if let Some(m) = keep {
            // SAFETY: a mapping of `len` bytes that nothing refers to any more.
            unsafe { libc::munmap(m.ptr.as_ptr().cast(), m.len) };
        }
    }
}

/// The copied inputs of a pointer map, shared by its chunks. Each chunk owns one range
/// (`Slots::Shared`) and writes its results over it.
#[derive(Debug)]
pub(crate) struct ArgBuf {
    ptr: NonNull<*mut c_void>,
    len: usize,
    /// The mapping it lives in (for `HUGE_COPY` bytes or more), else `malloc`'d.
    mapping: Option<AnonMapping>,
    /// Whether its pages are present already (a reused mapping).
    warm: bool,
}

// SAFETY: the buffer holds opaque C values the caller asked us to move between threads;
// each range is written only by the one `Slots` that owns it, and read after the future
// that owns that `Slots` is published.
unsafe impl Send for ArgBuf {}
// SAFETY: as above.
unsafe impl Sync for ArgBuf {}

impl ArgBuf {
    /// Room for `len` values, not yet written (`ArgFiller` writes them), or `None` when
    /// there is no memory for it. `len` is not 0.
    pub(super) fn try_alloc(len: usize) -> Option<Shared<ArgBuf>> {
        let layout = std::alloc::Layout::array::<*mut c_void>(len).ok()?;
        let buf = if layout.size() >= HUGE_COPY {
            let (m, warm) = AnonMapping::get(layout.size())?;
            ArgBuf {
                ptr: m.ptr.cast(),
                len,
                mapping: Some(m),
                warm,
            }
        } else {
            // SAFETY: `layout` is not zero-sized (`len` is not 0).
            let p = unsafe { std::alloc::alloc(layout) }.cast::<*mut c_void>();
            ArgBuf {
                ptr: NonNull::new(p)?,
                len,
                mapping: None,
                warm: false,
            }
        };
        // On failure the value comes back and its drop frees the memory.
        Shared::try_new(buf).ok()
    }
}

impl Drop for ArgBuf {
    fn drop(&mut self) {
        match self.mapping.take() {
            Some(m) => m.put(),
            None => {
                let layout = std::alloc::Layout::array::<*mut c_void>(self.len)
                    .expect("checked in try_alloc");
                // SAFETY: allocated in `try_alloc` with this layout, freed once.
                unsafe { std::alloc::dealloc(self.ptr.as_ptr().cast(), layout) };
            }
        }
    }
}

/// Fills an `ArgBuf` front to back, one chunk at a time, handing out each chunk's range
/// as it is written: ranges are disjoint and never read before they are written.
pub(crate) struct ArgFiller {
    buf: Shared<ArgBuf>,
    filled: usize,
    /// Items whose pages are populated already (mapped buffers only, see `push`).
    populated: usize,
}

/// How far ahead `ArgFiller::push` populates a mapped buffer's pages, in items (512 KiB).
pub(super) const POPULATE_AHEAD: usize = (512 << 10) / std::mem::size_of::<*mut c_void>();

impl ArgFiller {
    /// Room for `len` values (not 0); `None` when there is no memory for it.
    pub(crate) fn try_new(len: usize) -> Option<ArgFiller> {
        Some(ArgFiller {
            buf: ArgBuf::try_alloc(len)?,
            filled: 0,
            populated: 0,
        })
    }

    /// Copies `items` into the next range and returns that range as a chunk's slots.
    pub(crate) fn push(&mut self, items: &[*mut c_void]) -> Slots {
        let start = self.filled;
        assert!(items.len() <= self.buf.len - start, "more items than room");
        let end = start + items.len();
        if self.buf.mapping.is_some() && !self.buf.warm && end > self.populated {
            // The pages of a fresh mapping, made present a stretch at a time in one call
            // rather than by one fault per page while copying.
            let upto = (self.populated + POPULATE_AHEAD).max(end).min(self.buf.len);
            // SAFETY: `populated < upto <= len`: within the buffer.
            let at = unsafe { self.buf.ptr.as_ptr().add(self.populated) };
            populate_for_write(
                at.cast(),
                (upto - self.populated) * std::mem::size_of::<*mut c_void>(),
            );
            self.populated = upto;
        }
        // SAFETY: `start..start + len` is within the buffer and no `Slots` owns it yet
        // (ranges are handed out in order); `items` is the caller's, not overlapping.
        unsafe {
            std::ptr::copy_nonoverlapping(
                items.as_ptr(),
                self.buf.ptr.as_ptr().add(start),
                items.len(),
            )
        };
        self.filled += items.len();
        Slots::Shared {
            buf: Shared::clone(&self.buf),
            start,
            len: items.len(),
        }
    }
}

/// A chunk's items, then its values (written over them): its own array, or its range of
/// a map's shared copy. Never cloned, so a range has exactly one owner.
#[derive(Debug)]
pub(crate) enum Slots {
    Owned(Box<[*mut c_void]>),
    Shared {
        buf: Shared<ArgBuf>,
        start: usize,
        len: usize,
    },
}

impl Slots {
    /// The items, for the one task that runs them and writes their values.
    pub(super) fn as_mut_slice(&mut self) -> &mut [*mut c_void] {
        match self {
            Slots::Owned(b) => b,
            // SAFETY: in bounds (checked in `ArgFiller::push`), and this `Slots` is the only one
            // with this range (never cloned), borrowed mutably here.
            Slots::Shared { buf, start, len } => unsafe {
                std::slice::from_raw_parts_mut(buf.ptr.as_ptr().add(*start), *len)
            },
        }
    }

    /// Keeps the first `n` values; `false` when an owned array cannot be shrunk for lack
    /// of memory (its values are then lost: the caller reports the chunk as out of memory).
    pub(super) fn try_truncate(&mut self, n: usize) -> bool {
        match self {
            Slots::Owned(b) => {
                let mut v = Vec::from(std::mem::take(b));
                v.truncate(n);
                match exact(v) {
                    Some(e) => {
                        *b = e;
                        true
                    }
                    None => false,
                }
            }
            Slots::Shared { len, .. } => {
                *len = (*len).min(n);
                true
            }
        }
    }
}

impl Deref for Slots {
    type Target = [*mut c_void];
    fn deref(&self) -> &[*mut c_void] {
        match self {
            Slots::Owned(b) => b,
            // SAFETY: in bounds; writes to this range happen only through `as_mut_slice`
            // on this same value, which a shared borrow excludes.
            Slots::Shared { buf, start, len } => unsafe {
                std::slice::from_raw_parts(buf.ptr.as_ptr().add(*start), *len)
            },
        }
    }
}

impl From<Vec<*mut c_void>> for Slots {
    fn from(v: Vec<*mut c_void>) -> Slots {
        Slots::Owned(v.into_boxed_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A map's copy lives in whole huge pages that start on a huge-page boundary, for a
    /// length that is not a multiple of one (a million items), whether the mapping is
    /// fresh or the spare one.
    #[test]
    fn map_copies_get_whole_aligned_huge_pages() {
        let len = 1_000_000 * std::mem::size_of::<*mut c_void>();
        for _ in 0..2 {
            let (m, _warm) = AnonMapping::get(len).unwrap();
            assert!(m.len >= len);
            assert_eq!(m.len % HUGE_PAGE, 0);
            assert_eq!(m.ptr.as_ptr().addr() % HUGE_PAGE, 0);
            // SAFETY: within the mapping's `len` writable bytes.
            unsafe {
                m.ptr.as_ptr().write(1);
                m.ptr.as_ptr().add(m.len - 1).write(1);
            }
            m.put();
        }
        for (len, map) in [
            (HUGE_PAGE, map_aligned as fn(usize) -> Option<NonNull<u8>>),
            (3 * HUGE_PAGE, map_aligned),
            (HUGE_PAGE, map_aligned_by_trimming),
            (3 * HUGE_PAGE, map_aligned_by_trimming),
        ] {
            let p = map(len).unwrap();
            assert_eq!(p.as_ptr().addr() % HUGE_PAGE, 0);
            // SAFETY: the `len` bytes just mapped, then unmapped once.
            unsafe {
                p.as_ptr().add(len - 1).write(1);
                libc::munmap(p.as_ptr().cast(), len);
            }
        }
    }
}
