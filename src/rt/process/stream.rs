//! A worker channel as a byte stream (`Stream`): what `io`, `wire`, the proxy and the
//! worker need of it, so that the frame format and the pipeline run unchanged over a
//! socket (the fork server's workers) or over MPI messages (`mpi::MpiStream`).
//!
//! `Channel` is the parent's end as a `Link` owns it; `ChanRef` borrows it as a `Stream`.
//! A socket is the only channel that passes descriptors (an arena's memfd), so only a
//! socket link uses an arena (`Channel::socket`).

use super::io::{Fd, recv_with_fds, sock_read, sock_send_all, sock_send_counted};
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use std::{io, mem::MaybeUninit};

/// A byte stream to or from a worker, borrowed for one call (copied freely).
pub(crate) trait Stream: Copy {
    /// Sends all of `parts`, in order.
    fn send_parts(self, parts: &[&[u8]]) -> io::Result<()>;
    /// Sends `buf` whole; on an error, also says how many bytes went out before it.
    fn send_counted(self, buf: &[u8]) -> (usize, io::Result<()>);
    /// Reads what is there (at least one byte, waiting for it) into `dst`; 0 is EOF.
    fn read_some(self, dst: &mut [MaybeUninit<u8>]) -> io::Result<usize>;
    /// As `read_some`, handing any descriptors that arrive with the bytes to `on_fd`
    /// (worker side: an arena's memfd). A stream that passes no descriptors reads.
    fn recv_keeping_fds(self, buf: &mut [u8], on_fd: &mut dyn FnMut(OwnedFd)) -> io::Result<usize>;
}

impl Stream for BorrowedFd<'_> {
    fn send_parts(self, parts: &[&[u8]]) -> io::Result<()> {
        sock_send_all(self, parts)
    }

    fn send_counted(self, buf: &[u8]) -> (usize, io::Result<()>) {
        sock_send_counted(self, buf)
    }

    fn read_some(self, dst: &mut [MaybeUninit<u8>]) -> io::Result<usize> {
        sock_read(self, dst)
    }

    fn recv_keeping_fds(self, buf: &mut [u8], on_fd: &mut dyn FnMut(OwnedFd)) -> io::Result<usize> {
        recv_with_fds(self, buf, on_fd)
    }
}

/// The parent's end of one worker's channel.
pub(crate) enum Channel {
    /// A connected stream socket (the fork server's workers).
    Sock(Fd),
    /// Messages to and from one MPI rank.
    #[cfg(feature = "mpi")]
    Mpi(super::mpi::MpiStream),
}

impl Channel {
    /// The channel as a `Stream`, for one call. (Named like `AsFd::as_fd`, which is what
    /// a link's users called when the channel was always a socket.)
    pub(super) fn as_fd(&self) -> ChanRef<'_> {
        match self {
            Channel::Sock(fd) => ChanRef::Sock(fd.as_fd()),
            #[cfg(feature = "mpi")]
            Channel::Mpi(m) => ChanRef::Mpi(m),
        }
    }

    /// The socket, if the channel is one (only a socket carries an arena's memfd).
    pub(super) fn socket(&self) -> Option<BorrowedFd<'_>> {
        match self {
            Channel::Sock(fd) => Some(fd.as_fd()),
            #[cfg(feature = "mpi")]
            Channel::Mpi(_) => None,
        }
    }
}

/// A borrowed `Channel`.
#[derive(Clone, Copy)]
pub(crate) enum ChanRef<'a> {
    /// A socket.
    Sock(BorrowedFd<'a>),
    /// An MPI rank.
    #[cfg(feature = "mpi")]
    Mpi(&'a super::mpi::MpiStream),
}

impl Stream for ChanRef<'_> {
    fn send_parts(self, parts: &[&[u8]]) -> io::Result<()> {
        match self {
            ChanRef::Sock(fd) => fd.send_parts(parts),
            #[cfg(feature = "mpi")]
            ChanRef::Mpi(m) => m.send_parts(parts),
        }
    }

    fn send_counted(self, buf: &[u8]) -> (usize, io::Result<()>) {
        match self {
            ChanRef::Sock(fd) => fd.send_counted(buf),
            #[cfg(feature = "mpi")]
            ChanRef::Mpi(m) => m.send_counted(buf),
        }
    }

    fn read_some(self, dst: &mut [MaybeUninit<u8>]) -> io::Result<usize> {
        match self {
            ChanRef::Sock(fd) => fd.read_some(dst),
            #[cfg(feature = "mpi")]
            ChanRef::Mpi(m) => m.read_some(dst),
        }
    }

    fn recv_keeping_fds(self, buf: &mut [u8], on_fd: &mut dyn FnMut(OwnedFd)) -> io::Result<usize> {
        match self {
            ChanRef::Sock(fd) => fd.recv_keeping_fds(buf, on_fd),
            #[cfg(feature = "mpi")]
            ChanRef::Mpi(m) => m.recv_keeping_fds(buf, on_fd),
        }
    }
}

#[cfg(feature = "mpi")]
impl Stream for &super::mpi::MpiStream {
    fn send_parts(self, parts: &[&[u8]]) -> io::Result<()> {
        super::mpi::MpiStream::send_parts(self, parts)
    }

    fn send_counted(self, buf: &[u8]) -> (usize, io::Result<()>) {
        super::mpi::MpiStream::send_counted(self, buf)
    }

    fn read_some(self, dst: &mut [MaybeUninit<u8>]) -> io::Result<usize> {
        super::mpi::MpiStream::read_some(self, dst)
    }

    fn recv_keeping_fds(self, buf: &mut [u8], on_fd: &mut dyn FnMut(OwnedFd)) -> io::Result<usize> {
        super::mpi::MpiStream::recv_keeping_fds(self, buf, on_fd)
    }
}
