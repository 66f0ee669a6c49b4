//! The parent's end of one worker's channel (`Link`): its socket and read buffer, its
//! arena, the flow control that keeps the socket from deadlocking, and how one task goes
//! out on it.
//!
//! A link is a connected stream socket to a worker that speaks `wire`'s frames; who made
//! the worker (the fork server, or another transport) is no concern of this module.

use super::{
    arena::{Arena, SHM_MIN, SLOT_ALIGN, Slot},
    deadline::{WATCH_SIZE, Watch, deadline_of, mono_deadline},
    io::{Fd, RecvBuf, send_all, send_buffer_size, send_with_fd},
    stream::Channel,
    wire::{
        HEADER, arena_frame, deadline_frame, frame_len, send_task, shm_task_frame, watch_frame,
    },
};
use crate::rt::{sync::Arc, task::Task};
use rustix::fd::AsFd;
use std::{collections::VecDeque, io, ptr};

/// One worker as its proxy thread sees it.
pub(crate) struct Link {
    /// The channel (a socket, or an MPI rank's messages).
    pub(super) fd: Channel,
    /// The worker's id for messages and for its transport (a process id).
    pub(super) id: i32,
    /// Tasks sent to it so far (for `max_tasks_per_child`).
    pub(super) tasks: usize,
    pub(super) rb: RecvBuf,
    /// Its arena for large byte payloads, once one was needed.
    pub(super) arena: Option<Arena>,
    /// The socket bytes of each task in flight, in send order, and their sum: what the
    /// worker may not have read yet (see `may_send`).
    pub(super) frames: VecDeque<usize>,
    pub(super) unread: usize,
    /// How many such bytes may be in flight (see `may_send`).
    pub(super) budget: usize,
    /// Its watch, once a task with a deadline went to it (`deadline`).
    pub(super) watch: Option<Arc<Watch>>,
}

impl Drop for Link {
    fn drop(&mut self) {
        // Before the worker is reaped: the timer may not signal its pid any more.
        if let Some(w) = &self.watch {
            w.close();
        }
    }
}

/// How a task went to a worker.
pub(super) enum Sent {
    /// Through the socket, or with its input in this arena slot.
    Yes(Option<Slot>),
    /// Not sent: the arena has no room until an answer frees a slot (or, being too
    /// small, until nothing is in flight and it can be replaced), or the socket may not
    /// take the frame until answers are read (`Link::may_send`).
    NoRoom,
}

impl Link {
    /// The parent's end `fd` of a new worker's channel; `id` names the worker.
    pub(super) fn new(fd: Fd, id: i32) -> Link {
        let budget = send_budget(send_buffer_size(fd.as_fd()));
        Link::over(Channel::Sock(fd), id, budget)
    }

    /// A link over any channel, with `budget` bytes of task frames allowed in flight
    /// (see `may_send`).
    pub(super) fn over(fd: Channel, id: i32, budget: usize) -> Link {
        Link {
            fd,
            id,
            tasks: 0,
            rb: RecvBuf::new(),
            arena: None,
            frames: VecDeque::new(),
            unread: 0,
            budget,
            watch: None,
        }
    }

    /// Whether a frame of `len` more socket bytes may go out now: when nothing is in
    /// flight, or when all that the worker may not have read yet, this frame included,
    /// stays within `budget` (about half of what the socket's send buffer holds, see
    /// `send_budget`).
    ///
    /// Why: the worker reads a task's frame whole, runs it, and then writes its answer,
    /// blocking while the proxy does not read. If the proxy were blocked writing the
    /// next frame into a full socket at that moment, neither would ever go on (a map of
    /// 1 MiB byte items in chunks of 4 hung so). With this rule the proxy's writes fit in
    /// the socket while the worker may be answering, so they return and the proxy goes
    /// back to reading answers; a larger frame goes out only to an idle worker, which is
    /// reading it.
    fn may_send(&self, len: usize) -> bool {
        self.frames.is_empty() || self.unread + len <= self.budget
    }

    /// Records a task's frame of `len` socket bytes as sent.
    pub(super) fn sent(&mut self, len: usize) {
        self.frames.push_back(len);
        self.unread += len;
    }

    /// Records the oldest task's answer as read: its frame was read long before.
    pub(super) fn answered(&mut self) {
        if let Some(len) = self.frames.pop_front() {
            self.unread -= len;
        }
    }

    /// Sends a task; `idle` says that nothing is in flight. A large byte input goes into
    /// the arena (made, or replaced by a larger one, while idle); if no arena can be had,
    /// through the socket. `NoRoom` also when its frame may not go out yet (`may_send`).
    ///
    /// A task with a deadline goes out after a `K_DEADLINE` frame (the caller made this
    /// worker's `watch` first, see `deadline`).
    pub(super) fn send(&mut self, task: &Task, idle: bool) -> io::Result<Sent> {
        // Deadline frames go only to a worker on this host, forked (a socket): it shares
        // our monotonic clock and can map the watch. An MPI rank's task with a deadline
        // expires in the parent as on a thread pool (the timer never asks to kill it).
        let pre = if self.watches() {
            deadline_of(task).map(|at| deadline_frame(mono_deadline(at)))
        } else {
            None
        };
        let pre: &[u8] = pre.as_ref().map_or(&[], |p| &p[..]);
        let Task::Bytes(f, input) = task.wire() else {
            return self.send_inline(task, pre);
        };
        let Some(sock) = self.fd.socket().filter(|_| input.len() >= SHM_MIN) else {
            return self.send_inline(task, pre); // small, or no socket to pass a memfd on
        };
        let need = input.len().next_multiple_of(SLOT_ALIGN);
        if self.arena.as_ref().is_none_or(|a| need > a.map.len) {
            if !idle {
                return Ok(Sent::NoRoom);
            }
            self.arena = None; // the worker drops its mapping of it at the next K_ARENA
            if let Some(size) = Arena::size_for(need) {
                if let Ok((arena, memfd)) = Arena::create(size) {
                    send_with_fd(sock, &arena_frame(size), memfd.as_fd())?;
                    self.arena = Some(arena);
                }
            }
        }
        if self.arena.is_none() {
            return self.send_inline(task, pre);
        }
        if !self.may_send(HEADER + 32 + pre.len()) {
            return Ok(Sent::NoRoom);
        }
        let arena = self.arena.as_mut().expect("checked above");
        let Some(slot) = arena.alloc(input.len()) else {
            // Idle means an empty ring, where anything up to the arena's size fits.
            debug_assert!(!idle);
            return Ok(Sent::NoRoom);
        };
        let dst = arena
            .map
            .range(slot.off, slot.cap)
            .expect("slots are inside the arena");
        // SAFETY: the slot is ours until its answer arrives; the worker reads it only
        // after the frame below.
        unsafe { ptr::copy_nonoverlapping(input.as_ptr(), dst, input.len()) };
        let m = shm_task_frame(*f, slot, input.len());
        // On an error the worker is buried, and its arena with it.
        send_all(self.fd.as_fd(), &[pre, &m])?;
        self.sent(pre.len() + m.len());
        Ok(Sent::Yes(Some(slot)))
    }

    /// Sends a task's frame through the socket, after `pre` (a deadline frame, or
    /// nothing), if it `may_send` now.
    fn send_inline(&mut self, task: &Task, pre: &[u8]) -> io::Result<Sent> {
        let len = pre.len() + frame_len(task);
        if !self.may_send(len) {
            return Ok(Sent::NoRoom);
        }
        if !pre.is_empty() {
            send_all(self.fd.as_fd(), &[pre])?;
        }
        send_task(self.fd.as_fd(), task)?;
        self.sent(len);
        Ok(Sent::Yes(None))
    }

    /// Whether this worker takes deadline frames and a watch (`deadline`): a forked
    /// worker on this host, reached through a socket.
    pub(super) fn watches(&self) -> bool {
        self.fd.socket().is_some()
    }

    /// This worker's watch (`deadline`), made and sent to it (`K_WATCH`) the first time.
    /// Only for a worker that `watches`.
    pub(super) fn watch(&mut self) -> io::Result<Arc<Watch>> {
        if let Some(w) = &self.watch {
            return Ok(Arc::clone(w));
        }
        let Some(sock) = self.fd.socket() else {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "a worker reached without a socket takes no watch",
            ));
        };
        let (watch, memfd) = Watch::create(self.id)?;
        send_with_fd(sock, &watch_frame(WATCH_SIZE), memfd.as_fd())?;
        self.watch = Some(Arc::clone(&watch));
        Ok(watch)
    }
}

/// How many socket bytes of task frames a proxy keeps in flight in a worker whose socket
/// reports a send buffer of `size` bytes (see `Link::may_send`): half of it, less 64 KiB
/// for the kernel's bookkeeping of each message (the send buffer counts that too), or 0
/// (one task at a time) for a buffer smaller than 128 KiB. With the 4 MiB buffers asked
/// for by `grow_buffers` (Linux reports twice that), 4 MiB less 64 KiB; with Linux's
/// default (`net.core.wmem_default`, 208 KiB), 40 KiB.
fn send_budget(size: usize) -> usize {
    (size / 2).saturating_sub(64 << 10)
}
