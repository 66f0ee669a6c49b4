//! One MPI rank's channel as a byte stream (`MpiStream`), so that `wire`'s frames, the
//! proxy's pipeline and the worker's loop run over MPI messages unchanged; and how a
//! thread waits for MPI (`Backoff`).
//!
//! # The stream
//!
//! - Each part a sender writes goes as one message (tag `DATA`; a part over 1 GiB as
//!   several), so a large payload is received straight into its destination: the reader
//!   asks for the payload's exact length, and a message no longer than what it asks for
//!   is received in place (`MPI_Mrecv` after `MPI_Improbe`). A longer message (a batch of
//!   small frames read into the `RecvBuf`) is held and read on.
//! - MPI keeps messages between two ranks on one communicator and tag in order, which is
//!   the stream's order. An empty message is EOF (no part is ever sent empty): the
//!   parent's end sends one when it is dropped, which ends the worker's session.
//! - Neither side ever blocks in a send while the other blocks in its own: a send is
//!   `MPI_Isend` completed by polling, and while it is not complete the sender receives
//!   whatever the peer sends into `held` (a worker's answers, while the proxy sends a
//!   large task). So the flow control of `Link::may_send` only bounds memory here.
//!
//! # Waiting (`Backoff`)
//!
//! Open MPI's blocking calls poll their progress engine without sleeping, which on a
//! machine with fewer cores than processes takes the CPU from the very ranks being
//! waited for. So by default a wait for a message polls (`MPI_Improbe`) with back-off:
//! 64 polls, then 64 polls each after `sched_yield`, then sleeps of 16 µs doubling up to
//! `CFUTURES_MPI_WAIT_MAX_US` (default 1000 µs) between polls. An idle worker rank thus
//! costs a poll a millisecond; a busy pipeline never sleeps long, since answers arrive
//! within its first polls. A send waits for its completion (`MPI_Test`) yielding for
//! 4096 polls (about a millisecond) before it sleeps so: it is small (eager, complete at
//! once) or goes to a rank that is receiving it or will when its current task ends
//! (`BUDGET` in `super`), and a sleeping sender would add its sleeps to every large
//! transfer (M2 went from 0.6-0.9 to 1.5-1.7 GiB/s each way with this and `BUDGET`). `CFUTURES_MPI_WAIT=block` uses MPI's blocking calls instead
//! and `=spin` never sleeps (yields only): for measuring (bench/README.md, M1/M2).

use mpi::ffi;
use rustix::fd::OwnedFd;
use std::{
    cell::{Cell, RefCell},
    collections::VecDeque,
    ffi::{c_int, c_void},
    io,
    mem::MaybeUninit,
    ptr,
    sync::OnceLock,
    time::Duration,
};

/// The tag of a stream's messages (both directions).
pub(crate) const DATA: c_int = 0x0cf1;
/// Largest message: parts longer than this go as several (MPI counts are `int`).
const MAX_MSG: usize = 1 << 30;

/// An MPI communicator handle, shared between threads (MPI is initialized with
/// `MPI_THREAD_MULTIPLE`, or the library serialises its calls, see `super::call`).
#[derive(Clone, Copy)]
pub(crate) struct Comm(pub(crate) ffi::MPI_Comm);

// SAFETY: a communicator handle is a value any thread may pass to MPI (see above).
unsafe impl Send for Comm {}
// SAFETY: as above.
unsafe impl Sync for Comm {}

/// How a thread waits for MPI (see the module comment).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum WaitMode {
    Backoff { max_us: u64 },
    Spin,
    Block,
}

pub(crate) fn wait_mode() -> WaitMode {
    static MODE: OnceLock<WaitMode> = OnceLock::new();
    *MODE.get_or_init(|| match std::env::var("CFUTURES_MPI_WAIT").as_deref() {
        Ok("block") => WaitMode::Block,
        Ok("spin") => WaitMode::Spin,
        _ => WaitMode::Backoff {
            max_us: std::env::var("CFUTURES_MPI_WAIT_MAX_US")
                .ok()
                .and_then(|v| v.parse().ok())
                .filter(|&v: &u64| v > 0)
                .unwrap_or(1000),
        },
    })
}

/// Polls with back-off: call `pause` after each poll that found nothing.
pub(crate) struct Backoff {
    polls: u32,
    sleep_us: u64,
}

impl Backoff {
    pub(crate) fn new() -> Backoff {
        Backoff {
            polls: 0,
            sleep_us: 16,
        }
    }

    /// After a poll that found nothing: spin (64 polls), then yield, then sleep with
    /// back-off from the 129th poll, or from the 4097th when the awaited event is `soon`.
    pub(crate) fn pause(&mut self, soon: bool) {
        self.polls += 1;
        if self.polls <= 64 {
            std::hint::spin_loop();
            return;
        }
        match wait_mode() {
            WaitMode::Backoff { max_us } if self.polls > if soon { 4096 } else { 128 } => {
                std::thread::sleep(Duration::from_micros(self.sleep_us.min(max_us)));
                self.sleep_us = (self.sleep_us * 2).min(max_us);
            }
            _ => std::thread::yield_now(),
        }
    }
}

fn check(rc: c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::other(format!("MPI error {rc}")))
    }
}

fn byte() -> ffi::MPI_Datatype {
    // SAFETY: a constant rsmpi's shim defines.
    unsafe { ffi::RSMPI_UINT8_T }
}

/// Looks once for the next message from `peer` with `tag`.
pub(crate) fn probe(
    comm: Comm,
    peer: c_int,
    tag: c_int,
) -> io::Result<Option<(ffi::MPI_Message, usize)>> {
    let mut flag: c_int = 0;
    let mut msg = MaybeUninit::<ffi::MPI_Message>::uninit();
    let mut status = MaybeUninit::<ffi::MPI_Status>::uninit();
    super::call(|| {
        // SAFETY: out-parameters of the right types.
        check(unsafe {
            ffi::MPI_Improbe(
                peer,
                tag,
                comm.0,
                &mut flag,
                msg.as_mut_ptr(),
                status.as_mut_ptr(),
            )
        })
    })?;
    if flag == 0 {
        return Ok(None);
    }
    let mut count: c_int = 0;
    // SAFETY: `status` was filled by the successful probe.
    check(unsafe { ffi::MPI_Get_count(status.as_ptr(), byte(), &mut count) })?;
    // SAFETY: filled by the successful probe.
    Ok(Some((unsafe { msg.assume_init() }, count.max(0) as usize)))
}

/// Waits for the next message from `peer` with `tag` (see `Backoff`).
pub(crate) fn probe_wait(
    comm: Comm,
    peer: c_int,
    tag: c_int,
) -> io::Result<(ffi::MPI_Message, usize)> {
    if wait_mode() == WaitMode::Block && super::multiple() {
        let mut msg = MaybeUninit::<ffi::MPI_Message>::uninit();
        let mut status = MaybeUninit::<ffi::MPI_Status>::uninit();
        // SAFETY: out-parameters of the right types.
        check(unsafe {
            ffi::MPI_Mprobe(peer, tag, comm.0, msg.as_mut_ptr(), status.as_mut_ptr())
        })?;
        let mut count: c_int = 0;
        // SAFETY: filled by the successful probe.
        check(unsafe { ffi::MPI_Get_count(status.as_ptr(), byte(), &mut count) })?;
        // SAFETY: as above.
        return Ok((unsafe { msg.assume_init() }, count.max(0) as usize));
    }
    let mut b = Backoff::new();
    loop {
        if let Some(found) = probe(comm, peer, tag)? {
            return Ok(found);
        }
        b.pause(false);
    }
}

/// Receives a probed message of `len` bytes into `dst` (at least `len` long).
///
/// # Safety
/// `dst` is valid for `len` bytes of writes.
pub(crate) unsafe fn mrecv(mut msg: ffi::MPI_Message, dst: *mut u8, len: usize) -> io::Result<()> {
    super::call(|| {
        // SAFETY: by the caller's guarantee; the message is ours to receive, once.
        check(unsafe {
            ffi::MPI_Mrecv(
                dst.cast::<c_void>(),
                len as c_int,
                byte(),
                &mut msg,
                ffi::RSMPI_STATUS_IGNORE,
            )
        })
    })
}

/// Receives a probed message of `len` bytes into a new buffer (to be held and read on).
fn mrecv_vec(msg: ffi::MPI_Message, len: usize) -> io::Result<Vec<u8>> {
    let mut v = Vec::new();
    v.try_reserve_exact(len)
        .map_err(|_| io::Error::from(io::ErrorKind::OutOfMemory))?;
    // SAFETY: `len` bytes of capacity, all written by the receive before `set_len`.
    unsafe {
        mrecv(msg, v.as_mut_ptr(), len)?;
        v.set_len(len);
    }
    Ok(v)
}

/// Sends `buf` as one message with `tag`, receiving into `held` what `peer` sends on
/// `hold_tag` meanwhile (see the module comment), polling with back-off.
fn send_msg(
    comm: Comm,
    peer: c_int,
    tag: c_int,
    buf: &[u8],
    mut hold: impl FnMut(Vec<u8>),
) -> io::Result<()> {
    let mut req = MaybeUninit::<ffi::MPI_Request>::uninit();
    super::call(|| {
        // SAFETY: `buf` stays borrowed (unchanged) until the request completes below.
        check(unsafe {
            ffi::MPI_Isend(
                buf.as_ptr().cast(),
                buf.len() as c_int,
                byte(),
                peer,
                tag,
                comm.0,
                req.as_mut_ptr(),
            )
        })
    })?;
    // SAFETY: filled by the successful Isend.
    let mut req = unsafe { req.assume_init() };
    let mut b = Backoff::new();
    loop {
        let mut flag: c_int = 0;
        super::call(|| {
            // SAFETY: our live request.
            check(unsafe { ffi::MPI_Test(&mut req, &mut flag, ffi::RSMPI_STATUS_IGNORE) })
        })?;
        if flag != 0 {
            return Ok(());
        }
        if let Some((msg, len)) = probe(comm, peer, tag)? {
            hold(mrecv_vec(msg, len)?);
            b = Backoff::new();
            continue;
        }
        // The peer is receiving this message now, or will be when its task ends (a large
        // frame goes to a rank with at most one task in flight, `BUDGET`): yield rather
        // than sleep for a while, so that a transfer is not paced by our sleeps.
        b.pause(true);
    }
}

/// One end of a channel between this process and the rank `peer` of `comm`.
pub(crate) struct MpiStream {
    comm: Comm,
    peer: c_int,
    /// Messages received before they were read, and how far the front one is read.
    held: RefCell<(VecDeque<Vec<u8>>, usize)>,
    /// Whether an EOF was read.
    eof: Cell<bool>,
    /// Whether dropping this end sends EOF (the parent's end does).
    eof_on_drop: bool,
}

// SAFETY: used by one thread at a time (a proxy thread, or the serving thread); moved
// between threads only whole (a new worker's link goes from `submit` to its proxy).
unsafe impl Send for MpiStream {}

impl MpiStream {
    /// The parent's end of a session with worker rank `peer`: EOF when dropped.
    pub(crate) fn parent(comm: Comm, peer: c_int) -> MpiStream {
        MpiStream::new(comm, peer, true)
    }

    /// A worker's end, towards the parent `peer`.
    pub(crate) fn worker(comm: Comm, peer: c_int) -> MpiStream {
        MpiStream::new(comm, peer, false)
    }

    fn new(comm: Comm, peer: c_int, eof_on_drop: bool) -> MpiStream {
        MpiStream {
            comm,
            peer,
            held: RefCell::new((VecDeque::new(), 0)),
            eof: Cell::new(false),
            eof_on_drop,
        }
    }

    /// Worker side, when its loop ended before the parent's EOF (a frame it could not
    /// make sense of, such as a function that is not here): EOF to the parent, whose
    /// proxy then fails the task with `CF_BROKEN` and stops using this rank.
    pub(crate) fn end_early(&self) {
        if self.eof.get() {
            return;
        }
        let _ = send_msg(self.comm, self.peer, DATA, &[], |v| self.hold(v));
    }

    /// Worker side, after its loop ended: reads and drops what is left of the session up
    /// to the parent's EOF, so that the next session starts clean.
    pub(crate) fn drain_to_eof(&self) {
        let mut scratch = [MaybeUninit::<u8>::uninit(); 4096];
        while !self.eof.get() {
            match self.read_some(&mut scratch) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }

    /// Copies from the held messages into `dst`; `None` when nothing is held.
    fn take_held(&self, dst: &mut [MaybeUninit<u8>]) -> Option<usize> {
        let mut held = self.held.borrow_mut();
        let (queue, at) = &mut *held;
        let front = queue.front()?;
        if front.is_empty() {
            queue.pop_front();
            self.eof.set(true);
            return Some(0);
        }
        let n = (front.len() - *at).min(dst.len());
        for (d, &s) in dst[..n].iter_mut().zip(&front[*at..*at + n]) {
            d.write(s);
        }
        *at += n;
        if *at == front.len() {
            queue.pop_front();
            *at = 0;
        }
        Some(n)
    }

    fn hold(&self, v: Vec<u8>) {
        self.held.borrow_mut().0.push_back(v);
    }

    pub(crate) fn send_parts(&self, parts: &[&[u8]]) -> io::Result<()> {
        for part in parts {
            for piece in part.chunks(MAX_MSG) {
                send_msg(self.comm, self.peer, DATA, piece, |v| self.hold(v))?;
            }
        }
        Ok(())
    }

    pub(crate) fn send_counted(&self, buf: &[u8]) -> (usize, io::Result<()>) {
        match self.send_parts(&[buf]) {
            Ok(()) => (buf.len(), Ok(())),
            Err(e) => (0, Err(e)),
        }
    }

    pub(crate) fn read_some(&self, dst: &mut [MaybeUninit<u8>]) -> io::Result<usize> {
        if let Some(n) = self.take_held(dst) {
            return Ok(n);
        }
        let (msg, len) = probe_wait(self.comm, self.peer, DATA)?;
        if len <= dst.len() {
            // SAFETY: `dst` has room for `len` bytes; MPI writes them all.
            unsafe { mrecv(msg, dst.as_mut_ptr().cast(), len)? };
            if len == 0 {
                self.eof.set(true);
            }
            return Ok(len);
        }
        self.hold(mrecv_vec(msg, len)?);
        Ok(self.take_held(dst).unwrap_or(0))
    }

    pub(crate) fn recv_keeping_fds(
        &self,
        buf: &mut [u8],
        _on_fd: &mut dyn FnMut(OwnedFd),
    ) -> io::Result<usize> {
        // SAFETY: `[u8]` and `[MaybeUninit<u8>]` have one layout; only bytes are written.
        self.read_some(unsafe { &mut *(buf as *mut [u8] as *mut [MaybeUninit<u8>]) })
    }
}

impl Drop for MpiStream {
    fn drop(&mut self) {
        if self.eof_on_drop && !super::finalized() {
            let mut req = MaybeUninit::<ffi::MPI_Request>::uninit();
            // An empty message: EOF. Sent without waiting (a worker rank that is gone
            // never matches it); the request is freed at once, MPI completes it.
            let _ = super::call(|| {
                // SAFETY: an empty buffer; the request is released right after.
                check(unsafe {
                    ffi::MPI_Isend(
                        ptr::null(),
                        0,
                        byte(),
                        self.peer,
                        DATA,
                        self.comm.0,
                        req.as_mut_ptr(),
                    )
                })?;
                // SAFETY: filled by the successful Isend.
                let mut req = unsafe { req.assume_init() };
                // SAFETY: a live request; MPI_Request_free lets it complete on its own.
                check(unsafe { ffi::MPI_Request_free(&mut req) })
            });
        }
    }
}
