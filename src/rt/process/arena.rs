//! Shared memory for large byte payloads: a memfd mapped on both sides (`Mapping`), and
//! the parent's ring of slots in it (`Arena`), one slot per task in flight.
//!
//! Each worker gets, when it first needs one, an arena: a memfd (close-on-exec, never a
//! named file) that the parent sizes and maps and sends over the worker's own channel
//! with `SCM_RIGHTS`; the worker maps it and closes the descriptor at once. Both
//! mappings are `MADV_DONTFORK`, so a fork made later (another pool's fork server) does
//! not inherit them. Nothing here forks.

use super::io::{Fd, OUR_FDS};
use crate::rt::sync::lock;
use rustix::{
    fd::BorrowedFd,
    fs::MemfdFlags,
    mm::{Advice, MapFlags, ProtFlags},
};
use std::{io, ptr};

/// Byte inputs of at least this many bytes travel through the worker's arena rather than
/// through its socket; a byte map on a process pool sends each such item as a task of its
/// own (`task::tasks_of`).
pub(crate) const SHM_MIN: usize = 64 << 10;
/// Smallest arena made, and the largest (a larger input travels through the socket).
const ARENA_MIN: usize = 4 << 20;
const ARENA_MAX: usize = 1 << 30;
/// Slots start on page boundaries.
pub(super) const SLOT_ALIGN: usize = 4096;

/// A shared mapping of an arena's memfd; unmapped on drop.
pub(super) struct Mapping {
    ptr: *mut u8,
    pub(super) len: usize,
}

// SAFETY: the mapping is plain memory owned by whoever owns the `Mapping`; the other side
// of it is another process, never another thread of this one.
unsafe impl Send for Mapping {}

impl Mapping {
    /// Maps `len` bytes of `fd` shared, read-write, populated (one batch of page faults
    /// now rather than one fault per page later), and not inherited by forks: a fork
    /// server forked later must not keep this worker's arena alive, nor its workers see it.
    pub(super) fn new(fd: BorrowedFd<'_>, len: usize) -> io::Result<Mapping> {
        // SAFETY: a fresh mapping of our own descriptor, at an address the kernel picks,
        // so no memory of ours is replaced.
        let p = unsafe {
            rustix::mm::mmap(
                ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED | MapFlags::POPULATE,
                fd,
                0,
            )
        }?;
        let m = Mapping { ptr: p.cast(), len };
        // SAFETY: advice on the mapping just made.
        unsafe { rustix::mm::madvise(p, len, Advice::LinuxDontFork) }?; // `m` unmaps it
        Ok(m)
    }

    /// The bytes at `off..off + len`, if inside the mapping.
    pub(super) fn range(&self, off: usize, len: usize) -> Option<*mut u8> {
        let end = off.checked_add(len)?;
        // SAFETY: `off <= end <= self.len`: within the mapping.
        (end <= self.len).then(|| unsafe { self.ptr.add(off) })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: our own mapping, unmapped once; nothing borrows it past its owner.
        let _ = unsafe { rustix::mm::munmap(self.ptr.cast(), self.len) };
    }
}

/// A slot of the arena holding one task in flight: its input, then its result.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Slot {
    pub(super) off: usize,
    pub(super) cap: usize,
    /// Ring position just past the slot: where the ring's tail moves when it is freed.
    end: usize,
}

/// The parent's side of a worker's arena: the mapping and a ring of slots. Slots are
/// taken as tasks are sent and freed as their answers arrive, both in order (the worker
/// answers in order), so a ring is all the bookkeeping needed. Positions grow without
/// wrapping; a slot never straddles the end of the arena. When the ring empties it
/// starts again at offset 0, so the same (already mapped, cached) pages are reused.
pub(super) struct Arena {
    pub(super) map: Mapping,
    head: usize,
    tail: usize,
}

impl Arena {
    /// The arena size for an input of `need` bytes (rounded to `SLOT_ALIGN`): room for a
    /// few such tasks in flight; `None` when too large for an arena.
    pub(super) fn size_for(need: usize) -> Option<usize> {
        let size = if need <= 16 << 20 {
            (3 * need).max(ARENA_MIN)
        } else {
            need.checked_add(32 << 20)?
        };
        (size <= ARENA_MAX).then_some(size)
    }

    /// Makes an arena of `size` bytes: a memfd (close-on-exec, never a named file),
    /// sized and mapped here; the descriptor is returned to be sent to the worker.
    pub(super) fn create(size: usize) -> io::Result<(Arena, Fd)> {
        let fd = {
            let mut fds = lock(&OUR_FDS);
            let fd = rustix::fs::memfd_create(c"cfutures-arena", MemfdFlags::CLOEXEC)?;
            Fd::record(&mut fds, fd)
        };
        rustix::fs::ftruncate(&fd, size as u64)?;
        // Mapped and marked MADV_DONTFORK under the descriptor lock, which every fork of
        // ours also holds: a fork server forked by another thread in between would
        // otherwise inherit the mapping (and its workers with it).
        let map = {
            let _fds = lock(&OUR_FDS);
            Mapping::new(rustix::fd::AsFd::as_fd(&fd), size)?
        };
        Ok((
            Arena {
                map,
                head: 0,
                tail: 0,
            },
            fd,
        ))
    }

    /// Takes a slot for `len` bytes, if the ring has room.
    pub(super) fn alloc(&mut self, len: usize) -> Option<Slot> {
        let cap = len.checked_next_multiple_of(SLOT_ALIGN)?.max(SLOT_ALIGN);
        let size = self.map.len;
        let mut start = self.head;
        if start % size + cap > size {
            start = start.next_multiple_of(size); // skip the ragged end
        }
        let end = start + cap;
        if end - self.tail > size {
            return None;
        }
        self.head = end;
        Some(Slot {
            off: start % size,
            cap,
            end,
        })
    }

    /// Frees the oldest slot.
    pub(super) fn free(&mut self, slot: Slot) {
        self.tail = slot.end;
        if self.tail == self.head {
            self.head = 0;
            self.tail = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arena_ring_takes_and_frees_slots_in_order() {
        assert_eq!(Arena::size_for(64 << 10), Some(ARENA_MIN));
        assert_eq!(Arena::size_for(5 << 20), Some(15 << 20));
        assert_eq!(Arena::size_for(100 << 20), Some(132 << 20));
        assert_eq!(Arena::size_for(ARENA_MAX), None);
        let (mut a, _memfd) = Arena::create(ARENA_MIN).unwrap();
        let mb = 1 << 20;
        // Four 1 MiB slots fill it; a fifth waits for the oldest to be freed.
        let slots: Vec<Slot> = (0..4).map(|_| a.alloc(mb).unwrap()).collect();
        let offs: Vec<usize> = slots.iter().map(|s| s.off).collect();
        assert_eq!(offs, [0, mb, 2 * mb, 3 * mb]);
        assert!(slots.iter().all(|s| s.cap == mb));
        assert_eq!(a.alloc(1), None);
        a.free(slots[0]);
        let s5 = a.alloc(mb - 1).unwrap();
        assert_eq!((s5.off, s5.cap), (0, mb));
        // Taken now: [3, 4) (slots[3]) and [0, 1) (s5); 1.5 MiB fits at 1 MiB. Another
        // would straddle the end: it skips the ragged end to 0, which is taken.
        for s in &slots[1..3] {
            a.free(*s);
        }
        let s6 = a.alloc(mb + mb / 2).unwrap();
        assert_eq!(s6.off, mb);
        assert_eq!(a.alloc(mb + mb / 2), None);
        a.free(slots[3]);
        a.free(s5);
        a.free(s6);
        // Empty again: back at offset 0.
        assert_eq!(a.alloc(mb + mb / 2).map(|s| s.off), Some(0));
        // Each slot is inside the mapping and really shared memory.
        let s = a.alloc(100).unwrap();
        let p = a.map.range(s.off, s.cap).unwrap();
        // SAFETY: inside the mapping.
        unsafe { p.write(7) };
        assert!(a.map.range(a.map.len - 1, 2).is_none());
        assert!(a.map.range(usize::MAX, 2).is_none());
    }
}
