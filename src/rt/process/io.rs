//! The transport's descriptors and raw I/O: `Fd` (a descriptor of ours, recorded for the
//! fork server), whole-buffer sends, the channel's read buffer, and descriptor passing.
//!
//! Nothing here forks or knows of workers: what a second transport reuses over a
//! socket-like link. The system calls are `rustix`'s; the `unsafe` left is about memory
//! (reading into a caller's uninitialised buffer).

use super::{stream::Stream, wire::HEADER};
use crate::rt::sync::{Mutex, lock};
use rustix::{
    fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd},
    io::Errno,
    net::{
        AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
        SendAncillaryMessage, SendFlags, SocketFlags, SocketType,
    },
};
use std::{
    collections::VecDeque,
    io::{self, IoSlice, IoSliceMut},
    mem::MaybeUninit,
};

/// Every descriptor this module owns in this process. Creating, closing and forking all
/// happen under this lock, so a fork's snapshot is exact.
pub(super) static OUR_FDS: Mutex<Vec<RawFd>> = Mutex::new(Vec::new());

/// A descriptor of ours: recorded in `OUR_FDS` while open. (`None` only inside `drop`
/// and `into_child`.)
#[derive(Debug)]
pub(crate) struct Fd(Option<OwnedFd>);

impl Fd {
    /// Records a descriptor just made; the caller holds `OUR_FDS`' lock (`fds`).
    pub(super) fn record(fds: &mut Vec<RawFd>, fd: OwnedFd) -> Fd {
        fds.push(fd.as_raw_fd());
        Fd(Some(fd))
    }

    pub(super) fn raw(&self) -> RawFd {
        self.as_fd().as_raw_fd()
    }

    /// In a child just forked, where the copy of `OUR_FDS`' lock may be held: the
    /// descriptor itself, without touching the record.
    pub(super) fn into_child(mut self) -> OwnedFd {
        let fd = self.0.take().expect("open until dropped");
        std::mem::forget(self);
        fd
    }
}

impl AsFd for Fd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_ref().expect("open until dropped").as_fd()
    }
}

impl Drop for Fd {
    fn drop(&mut self) {
        let mut fds = lock(&OUR_FDS);
        if let Some(fd) = self.0.take() {
            if let Some(i) = fds.iter().position(|&f| f == fd.as_raw_fd()) {
                fds.swap_remove(i);
                // Closed under the lock, so its number is not reused by another of ours
                // before the record is gone.
                drop(fd);
            } else {
                // Not recorded: a child of the program's own `fork()`, where
                // `after_fork_child` closed every descriptor of ours already, and the
                // number may name one of the child's own files by now.
                std::mem::forget(fd);
            }
        }
    }
}

// The program's own `fork()`s (`rt::fork` registers these with `pthread_atfork`): the
// child gets none of our descriptors. A child that kept a copy of a worker's socket or
// of the fork server's control socket would keep them open after the parent closed its
// own, and the parent's shutdown would wait for the child to exit (a preforking server
// that made a pool before it forked could not shut the pool down while its children
// live). Our own forks (the fork server's, `server.rs`), which deal with descriptors
// themselves, are left alone.

std::thread_local! {
    /// Set on a thread while it forks for this module (it holds `OUR_FDS` already).
    static OWN_FORK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// `OUR_FDS`, held by the forking thread from `before_fork` to the matching `after_`.
    static HELD: std::cell::RefCell<Option<crate::rt::sync::MutexGuard<'static, Vec<RawFd>>>> =
        const { std::cell::RefCell::new(None) };
}

/// Set in the fork server, and so in every worker: their descriptors are their own
/// business, and their `OUR_FDS` is a stale copy of the parent's.
static SERVER_SIDE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Runs `fork` as one of this module's own forks (see `before_fork`).
pub(super) fn own_fork<R>(fork: impl FnOnce() -> R) -> R {
    OWN_FORK.with(|f| f.set(true));
    let r = fork();
    OWN_FORK.with(|f| f.set(false));
    r
}

/// Marks this process as the fork server (or a worker forked from it).
pub(super) fn mark_server_side() {
    SERVER_SIDE.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Whether the fork about to happen (or just done) is the program's own.
fn programs_fork() -> bool {
    !OWN_FORK.with(|f| f.get()) && !SERVER_SIDE.load(std::sync::atomic::Ordering::Relaxed)
}

/// `pthread_atfork` prepare: holds `OUR_FDS` across the program's fork, so that the
/// child's copy of the list is exact.
pub(crate) fn before_fork() {
    if programs_fork() {
        let guard = lock(&OUR_FDS);
        HELD.with(|h| *h.borrow_mut() = Some(guard));
    }
}

/// `pthread_atfork` parent: lets go of `OUR_FDS`.
pub(crate) fn after_fork_parent() {
    HELD.with(|h| drop(h.borrow_mut().take()));
}

/// `pthread_atfork` child: closes every descriptor of ours and forgets them.
pub(crate) fn after_fork_child() {
    HELD.with(|h| {
        if let Some(mut fds) = h.borrow_mut().take() {
            for fd in fds.drain(..) {
                // SAFETY: our descriptors, copied into this child by the fork; the `Fd`s
                // naming them belong to the parent's threads and never close them here
                // (their numbers are no longer recorded, see `Fd::drop`).
                unsafe { rustix::io::close(fd) };
            }
        }
    });
}

/// A Unix socket pair of ours, both ends close-on-exec.
pub(super) fn socket_pair(kind: SocketType) -> io::Result<(Fd, Fd)> {
    let mut fds = lock(&OUR_FDS);
    let (a, b) = rustix::net::socketpair(AddressFamily::UNIX, kind, SocketFlags::CLOEXEC, None)?;
    Ok((Fd::record(&mut fds, a), Fd::record(&mut fds, b)))
}

/// Retries a system call interrupted by a signal.
fn retry<T>(mut f: impl FnMut() -> rustix::io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(Errno::INTR) => continue,
            r => return r.map_err(io::Error::from),
        }
    }
}

/// Sends all of `parts` in order on a channel (a socket: one `sendmsg` gather).
pub(super) fn send_all(fd: impl Stream, parts: &[&[u8]]) -> io::Result<()> {
    fd.send_parts(parts)
}

/// Sends all of `parts` with `sendmsg` (no SIGPIPE), looping over partial writes.
pub(super) fn sock_send_all(fd: BorrowedFd<'_>, parts: &[&[u8]]) -> io::Result<()> {
    let mut iov: Vec<IoSlice<'_>> = parts
        .iter()
        .filter(|p| !p.is_empty())
        .map(|p| IoSlice::new(p))
        .collect();
    let mut rest = &mut iov[..];
    while !rest.is_empty() {
        let n = retry(|| {
            rustix::net::sendmsg(
                fd,
                rest,
                &mut SendAncillaryBuffer::default(),
                SendFlags::NOSIGNAL,
            )
        })?;
        IoSlice::advance_slices(&mut rest, n);
    }
    Ok(())
}

/// Sends `buf` whole on a channel; on an error, also says how many bytes went out before
/// it.
pub(super) fn send_counted(fd: impl Stream, buf: &[u8]) -> (usize, io::Result<()>) {
    fd.send_counted(buf)
}

/// `send_counted` on a socket.
pub(super) fn sock_send_counted(fd: BorrowedFd<'_>, buf: &[u8]) -> (usize, io::Result<()>) {
    let mut sent = 0;
    while sent < buf.len() {
        match retry(|| rustix::net::send(fd, &buf[sent..], SendFlags::NOSIGNAL)) {
            Ok(n) => sent += n,
            Err(e) => return (sent, Err(e)),
        }
    }
    (sent, Ok(()))
}

/// One `read` on a socket into `dst`; 0 is EOF.
pub(super) fn sock_read(fd: BorrowedFd<'_>, dst: &mut [MaybeUninit<u8>]) -> io::Result<usize> {
    retry(|| rustix::io::read(fd, &mut *dst).map(|(f, _)| f.len()))
}

/// Reads exactly `dst.len()` bytes into `dst`. `Ok(false)` on EOF before the first byte.
fn read_exact_uninit(fd: impl Stream, dst: &mut [MaybeUninit<u8>]) -> io::Result<bool> {
    let mut got = 0;
    while got < dst.len() {
        let filled = fd.read_some(&mut dst[got..])?;
        if filled == 0 {
            if got == 0 {
                return Ok(false);
            }
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        got += filled;
    }
    Ok(true)
}

/// One `sendmsg` of `bytes` (retried on EINTR), with `fd` attached by `SCM_RIGHTS` when
/// given. Returns how many bytes went.
pub(super) fn sendmsg_fd(
    sock: BorrowedFd<'_>,
    bytes: &[u8],
    fd: Option<BorrowedFd<'_>>,
) -> io::Result<usize> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let fds = fd.as_slice();
    retry(|| {
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !fds.is_empty() {
            let pushed = control.push(SendAncillaryMessage::ScmRights(fds));
            debug_assert!(pushed, "room for one descriptor");
        }
        rustix::net::sendmsg(
            sock,
            &[IoSlice::new(bytes)],
            &mut control,
            SendFlags::NOSIGNAL,
        )
    })
}

/// Sends `bytes` with a descriptor attached (`SCM_RIGHTS`), then any rest of them.
pub(super) fn send_with_fd(
    sock: BorrowedFd<'_>,
    bytes: &[u8],
    fd: BorrowedFd<'_>,
) -> io::Result<()> {
    let n = sendmsg_fd(sock, bytes, Some(fd))?;
    sock_send_all(sock, &[&bytes[n..]])
}

/// One `recvmsg` into `buf` (retried on EINTR), taking descriptors close-on-exec: each
/// descriptor received is handed to `on_fd` (one dropped there is closed). Returns how
/// many bytes arrived; 0 is EOF.
pub(super) fn recv_with_fds(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    mut on_fd: impl FnMut(OwnedFd),
) -> io::Result<usize> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4))];
    let mut iov = [IoSliceMut::new(buf)];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let got = retry(|| rustix::net::recvmsg(fd, &mut iov, &mut control, RecvFlags::CMSG_CLOEXEC))?;
    for msg in control.drain() {
        if let RecvAncillaryMessage::ScmRights(fds) = msg {
            fds.for_each(&mut on_fd);
        }
    }
    Ok(got.bytes)
}

/// A read buffer for one channel: small frames (a header and its payload) arrive in one
/// `read`; large payloads bypass it and are read straight into their destination.
pub(crate) struct RecvBuf {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    /// Worker side: descriptors that arrived with the bytes read so far (`SCM_RIGHTS`;
    /// an arena's memfd), oldest first. `None` on the parent side, which reads with
    /// plain `read` (a descriptor a worker sent would be discarded by the kernel).
    fds: Option<VecDeque<OwnedFd>>,
}

impl RecvBuf {
    const SIZE: usize = 64 << 10;

    pub(super) fn new() -> RecvBuf {
        RecvBuf {
            buf: vec![0; Self::SIZE].into_boxed_slice(),
            start: 0,
            end: 0,
            fds: None,
        }
    }

    /// A buffer that also keeps the descriptors that arrive with the bytes (worker side).
    pub(super) fn with_fds() -> RecvBuf {
        RecvBuf {
            fds: Some(VecDeque::new()),
            ..RecvBuf::new()
        }
    }

    /// The oldest descriptor received and not yet taken.
    pub(super) fn take_fd(&mut self) -> Option<OwnedFd> {
        self.fds.as_mut()?.pop_front()
    }

    /// One read into our own buffer: `read`, or `recvmsg` keeping any descriptors.
    fn fill(&mut self, fd: impl Stream) -> io::Result<usize> {
        match self.fds.as_mut() {
            // SAFETY: `[u8]` and `[MaybeUninit<u8>]` have one layout, and the read only
            // writes initialised bytes into it.
            None => fd.read_some(unsafe {
                &mut *(&mut self.buf[..] as *mut [u8] as *mut [MaybeUninit<u8>])
            }),
            Some(fds) => fd.recv_keeping_fds(&mut self.buf, &mut |f| fds.push_back(f)),
        }
    }

    /// Reads exactly `dst.len()` bytes into `dst`. `Ok(false)` on EOF before the first
    /// byte.
    pub(super) fn read_exact_uninit(
        &mut self,
        fd: impl Stream,
        dst: &mut [MaybeUninit<u8>],
    ) -> io::Result<bool> {
        let len = dst.len();
        let mut got = 0;
        loop {
            let take = (self.end - self.start).min(len - got);
            let held = &self.buf[self.start..self.start + take];
            // One `memcpy` (a byte loop cost a 100-byte answer about 160 instructions).
            let to = &mut dst[got..got + take];
            // SAFETY: `held` and `to` are `take` bytes each, in two different buffers;
            // writing initialised bytes into `MaybeUninit<u8>`s is always valid.
            unsafe {
                std::ptr::copy_nonoverlapping(held.as_ptr(), to.as_mut_ptr().cast::<u8>(), take)
            };
            self.start += take;
            got += take;
            if got == len {
                return Ok(true);
            }
            if len - got >= Self::SIZE / 2 {
                // Large: read the rest directly.
                return match read_exact_uninit(fd, &mut dst[got..]) {
                    Ok(false) if got > 0 => Err(io::ErrorKind::UnexpectedEof.into()),
                    other => other,
                };
            }
            let n = self.fill(fd)?;
            if n == 0 {
                return if got == 0 {
                    Ok(false)
                } else {
                    Err(io::ErrorKind::UnexpectedEof.into())
                };
            }
            self.start = 0;
            self.end = n;
        }
    }

    /// Reads exactly `dst.len()` bytes into `dst`. `Ok(false)` on EOF before the first
    /// byte.
    pub(super) fn read_exact(&mut self, fd: impl Stream, dst: &mut [u8]) -> io::Result<bool> {
        // SAFETY: `[u8]` and `[MaybeUninit<u8>]` have one layout, and the read only
        // writes initialised bytes into it.
        let dst = unsafe { &mut *(dst as *mut [u8] as *mut [MaybeUninit<u8>]) };
        self.read_exact_uninit(fd, dst)
    }

    /// Whether a whole frame is buffered already, so that reading it needs no system
    /// call.
    pub(super) fn has_frame(&self) -> bool {
        let held = &self.buf[self.start..self.end];
        held.len() >= HEADER
            && u64::from_ne_bytes(held[8..HEADER].try_into().expect("8 bytes"))
                <= (held.len() - HEADER) as u64
    }
}

/// Reads `len` bytes into a new vector.
pub(super) fn read_vec(fd: impl Stream, rb: &mut RecvBuf, len: usize) -> io::Result<Vec<u8>> {
    let mut v: Vec<u8> = Vec::new();
    v.try_reserve_exact(len)
        .map_err(|_| io::Error::from(io::ErrorKind::OutOfMemory))?;
    if len > 0 && !rb.read_exact_uninit(fd, &mut v.spare_capacity_mut()[..len])? {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    // SAFETY: the read initialised the first `len` bytes of the capacity.
    unsafe { v.set_len(len) };
    Ok(v)
}

/// Asks for large socket buffers, so that a megabyte moves in a few system calls rather
/// than in ~200 KiB steps, each a context switch. Unprivileged processes get at most the
/// system's `net.core.wmem_max`/`rmem_max`; failures are harmless.
pub(super) fn grow_buffers(fd: BorrowedFd<'_>, size: usize) {
    let _ = rustix::net::sockopt::set_socket_send_buffer_size(fd, size);
    let _ = rustix::net::sockopt::set_socket_recv_buffer_size(fd, size);
}

/// The size of a socket's send buffer as the kernel reports it (Linux: twice what was
/// asked for); 0 if it cannot be read.
pub(super) fn send_buffer_size(fd: BorrowedFd<'_>) -> usize {
    rustix::net::sockopt::socket_send_buffer_size(fd).unwrap_or(0)
}
