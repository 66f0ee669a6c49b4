//! Process pools: worker processes forked from a per-pool fork server, each driven by one
//! proxy thread of an ordinary thread pool (`pool::Runner::Process`).
//!
//! # Design
//!
//! - `cf_process_pool_new` forks a *fork server* at once, from the calling thread. The
//!   server is single-threaded for the rest of its life and forks every worker of the
//!   pool, so a worker never inherits a lock that some other thread held at the moment of
//!   its fork: a worker starts from the program as it was at `cf_process_pool_new`.
//!   The one fork from the (possibly multi-threaded) parent is made safe for what a
//!   worker uses: glibc's `fork` takes and resets malloc's locks, and we hold `stdout`'s
//!   and `stderr`'s locks across it (so no other thread is inside stdio then).
//! - Each worker talks to its proxy thread over a private `socketpair` (never a named
//!   file). The parent creates the pair, passes the worker's end to the server with
//!   `SCM_RIGHTS`, and the server forks the worker holding it. Every descriptor this
//!   module makes is recorded in `OUR_FDS`; the server closes all of them at its start,
//!   and closes each worker's end right after forking it, so no worker holds another
//!   worker's socket (which would keep a dead channel open and hang shutdown).
//! - Messages are frames (`kind`, `len`, payload). Pointer-sized values and function
//!   pointers cross as integers (valid in the worker: same program, forked). Bytes move
//!   with one `sendmsg` (gather: no copy into a staging buffer) and one read straight into
//!   the destination buffer. A truncated or malformed frame is the worker's death.
//! - Large byte payloads (a `cf_submit_bytes` input of `SHM_MIN` = 64 KiB or more) move
//!   through shared memory instead: each worker gets, when it first needs one, an *arena*,
//!   a memfd (close-on-exec, never a named file) that the parent sizes and maps, and sends
//!   over the worker's own socket with `SCM_RIGHTS` (`K_ARENA`); the worker maps it and
//!   closes the descriptor at once, so it holds no descriptor but its channel. Both
//!   mappings are `MADV_DONTFORK`: a fork server forked later (another pool) does not
//!   inherit them, so no worker ever maps another worker's arena, and an arena's memory
//!   goes when its worker is retired or buried (the parent unmaps it when it drops the
//!   `ProcWorker`; the worker's mapping dies with it). The proxy copies the input into a
//!   slot of the arena and sends only (function, offset, capacity, length)
//!   (`K_BYTES_SHM`); the task reads its input in place (it is lent for the call, which
//!   the `const void *in` of a byte task allows); the worker copies the task's result
//!   into the same slot when it fits (`O_BYTES_SHM`: offset, length), else sends it
//!   through the socket; the proxy copies it into the task's own input copy when it fits
//!   there and fills at least half of it (`fits_in`: that `malloc` buffer's pages are
//!   present, where a new buffer of a large result's size costs a page fault per page),
//!   else into a new `malloc` buffer; the future lends that buffer out. With the socket
//!   path this saves the kernel's two copies each way, the socket's buffer churn and the
//!   worker's fresh receive buffer per task; the arena's pages are mapped once
//!   (`MAP_POPULATE`) and reused, task after task.
//! - Pipelining with an arena: slots are taken in send order and freed in answer order
//!   (the worker answers in order), so the arena is a ring (`Arena`), back at offset 0
//!   whenever it empties. A task whose input finds no room waits until an answer frees a
//!   slot; one larger than the arena waits until nothing is in flight, then the arena is
//!   replaced by a larger one (`Arena::size_for`: three such inputs, at least 4 MiB; an
//!   input too large for a 1 GiB arena, or an arena that cannot be made, goes through the
//!   socket). The parent trusts nothing the worker says about the arena: an answer
//!   naming any place but its task's own slot, or longer than the slot, is malformed,
//!   which is the worker's death (`CF_BROKEN` for that task). A worker that dies with
//!   tasks in its arena fails only the oldest (the one it ran); the others are sent again
//!   from their own copies, which the proxy keeps until their answers arrive, to a new
//!   worker with a new arena.
//! - When all workers are busy, a proxy keeps up to `PIPELINE` tasks in flight in its
//!   worker (`drive`), which reads and answers them in order; a small task then costs a
//!   few system calls per batch instead of a round trip each. The socket bytes in flight
//!   stay within half the socket's buffer (`ProcWorker::may_send`), and a larger frame
//!   (a map chunk of large items) goes only to an idle worker: the proxy is then never
//!   blocked writing while its worker is blocked writing an answer.
//! - A worker that dies (EOF, error, malformed frame) is killed for good and reaped by
//!   the server, which reports its wait status; the task it ran fails with `CF_BROKEN`
//!   and a message naming the signal or exit status, and the proxy starts a new worker
//!   for its next task. `max_tasks_per_child` retires a worker (EOF, then reap) after
//!   that many tasks.
//! - Orphans: each worker sets `PR_SET_PDEATHSIG(SIGKILL)` towards the single-threaded
//!   server, and the server exits (killing and reaping its workers) when the parent
//!   closes the control socket, which the kernel does when the parent dies; the server
//!   also watches the parent through a pidfd. Shutdown with wait retires every worker,
//!   then closes the control socket and reaps the server: no child, no zombie.

use super::{
    context::{Raised, UserError, call_task},
    pool::{InitFn, Pool},
    sync::{Mutex, lock},
    task::{BytesFn, Failure, MallocBuf, Outcome, Task, TaskFn, Values, run_bytes},
};
use crate::status::CF_BROKEN;
use std::{
    cell::RefCell,
    collections::VecDeque,
    ffi::{CString, c_int, c_void},
    io, mem, ptr,
};

// ---------------------------------------------------------------------------------------
// Descriptors

/// Every descriptor this module owns in this process. Creating, closing and forking all
/// happen under this lock, so a fork's snapshot is exact.
static OUR_FDS: Mutex<Vec<c_int>> = Mutex::new(Vec::new());

/// A descriptor of ours: recorded in `OUR_FDS` while open.
#[derive(Debug)]
pub(crate) struct Fd(c_int);

impl Fd {
    fn raw(&self) -> c_int {
        self.0
    }
}

impl Drop for Fd {
    fn drop(&mut self) {
        let mut fds = lock(&OUR_FDS);
        if let Some(i) = fds.iter().position(|&f| f == self.0) {
            fds.swap_remove(i);
        }
        // SAFETY: we own this descriptor and close it once; under the lock, so its number
        // is not reused by another of ours before the record is gone.
        unsafe { libc::close(self.0) };
    }
}

fn errno() -> c_int {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// A socket pair of ours, both ends close-on-exec.
fn socket_pair(kind: c_int) -> io::Result<(Fd, Fd)> {
    let mut fds = lock(&OUR_FDS);
    let mut sv = [0 as c_int; 2];
    // SAFETY: `sv` has room for the two descriptors.
    if unsafe { libc::socketpair(libc::AF_UNIX, kind | libc::SOCK_CLOEXEC, 0, sv.as_mut_ptr()) }
        != 0
    {
        return Err(io::Error::last_os_error());
    }
    fds.push(sv[0]);
    fds.push(sv[1]);
    Ok((Fd(sv[0]), Fd(sv[1])))
}

// ---------------------------------------------------------------------------------------
// Raw I/O

/// Sends all of `parts` with `sendmsg` (no SIGPIPE), looping over partial writes.
fn send_all(fd: c_int, parts: &[&[u8]]) -> io::Result<()> {
    let mut iov: Vec<libc::iovec> = parts
        .iter()
        .filter(|p| !p.is_empty())
        .map(|p| libc::iovec {
            iov_base: p.as_ptr() as *mut c_void,
            iov_len: p.len(),
        })
        .collect();
    let mut first = 0;
    while first < iov.len() {
        // SAFETY: zeroed msghdr is valid; iov points at live slices.
        let mut msg: libc::msghdr = unsafe { mem::zeroed() };
        msg.msg_iov = iov[first..].as_mut_ptr();
        msg.msg_iovlen = (iov.len() - first) as _;
        // SAFETY: `msg` describes readable memory.
        let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        let mut n = n as usize;
        while first < iov.len() && n >= iov[first].iov_len {
            n -= iov[first].iov_len;
            first += 1;
        }
        if n > 0 {
            // SAFETY: advancing within the same slice.
            iov[first].iov_base = unsafe { (iov[first].iov_base as *mut u8).add(n) } as *mut c_void;
            iov[first].iov_len -= n;
        }
    }
    Ok(())
}

/// Sends `buf` whole; on an error, also says how many bytes went out before it.
fn send_counted(fd: c_int, buf: &[u8]) -> (usize, io::Result<()>) {
    let mut sent = 0;
    while sent < buf.len() {
        // SAFETY: the unsent rest of `buf`.
        let n = unsafe {
            libc::send(
                fd,
                buf[sent..].as_ptr().cast(),
                buf.len() - sent,
                libc::MSG_NOSIGNAL,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return (sent, Err(e));
        }
        sent += n as usize;
    }
    (sent, Ok(()))
}

/// Reads exactly `len` bytes into `buf`. `Ok(false)` on EOF before the first byte.
///
/// # Safety
/// `buf` is valid for `len` bytes of writes.
unsafe fn read_exact_raw(fd: c_int, buf: *mut u8, len: usize) -> io::Result<bool> {
    let mut got = 0;
    while got < len {
        // SAFETY: within the caller's buffer.
        let n = unsafe { libc::read(fd, buf.add(got).cast(), len - got) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            if got == 0 {
                return Ok(false);
            }
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        got += n as usize;
    }
    Ok(true)
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
    fds: Option<VecDeque<c_int>>,
}

impl RecvBuf {
    const SIZE: usize = 64 << 10;

    fn new() -> RecvBuf {
        RecvBuf {
            buf: vec![0; Self::SIZE].into_boxed_slice(),
            start: 0,
            end: 0,
            fds: None,
        }
    }

    /// A buffer that also keeps the descriptors that arrive with the bytes (worker side).
    fn with_fds() -> RecvBuf {
        RecvBuf {
            fds: Some(VecDeque::new()),
            ..RecvBuf::new()
        }
    }

    /// The oldest descriptor received and not yet taken.
    fn take_fd(&mut self) -> Option<c_int> {
        self.fds.as_mut()?.pop_front()
    }

    /// One read into our own buffer: `read`, or `recvmsg` keeping any descriptors.
    fn fill(&mut self, fd: c_int) -> isize {
        let Some(fds) = self.fds.as_mut() else {
            // SAFETY: reading into our own buffer.
            return unsafe { libc::read(fd, self.buf.as_mut_ptr().cast(), Self::SIZE) };
        };
        // SAFETY: our own buffer of `SIZE` bytes.
        unsafe {
            recv_with_fds(fd, self.buf.as_mut_ptr(), Self::SIZE, |f| {
                fds.push_back(f);
            })
        }
    }

    /// Reads exactly `len` bytes into `dst`. `Ok(false)` on EOF before the first byte.
    ///
    /// # Safety
    /// `dst` is valid for `len` bytes of writes.
    unsafe fn read_exact_raw(&mut self, fd: c_int, dst: *mut u8, len: usize) -> io::Result<bool> {
        let mut got = 0;
        loop {
            let take = (self.end - self.start).min(len - got);
            // SAFETY: within both buffers.
            unsafe {
                ptr::copy_nonoverlapping(self.buf.as_ptr().add(self.start), dst.add(got), take)
            };
            self.start += take;
            got += take;
            if got == len {
                return Ok(true);
            }
            if len - got >= Self::SIZE / 2 {
                // Large: read the rest directly. SAFETY: within `dst`.
                return match unsafe { read_exact_raw(fd, dst.add(got), len - got) } {
                    Ok(false) if got > 0 => Err(io::ErrorKind::UnexpectedEof.into()),
                    other => other,
                };
            }
            let n = self.fill(fd);
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if n == 0 {
                return if got == 0 {
                    Ok(false)
                } else {
                    Err(io::ErrorKind::UnexpectedEof.into())
                };
            }
            self.start = 0;
            self.end = n as usize;
        }
    }

    fn read_exact(&mut self, fd: c_int, dst: &mut [u8]) -> io::Result<bool> {
        // SAFETY: the slice is writable for its length.
        unsafe { self.read_exact_raw(fd, dst.as_mut_ptr(), dst.len()) }
    }

    /// Whether a whole frame is buffered already, so that reading it needs no system
    /// call.
    fn has_frame(&self) -> bool {
        let held = &self.buf[self.start..self.end];
        held.len() >= HEADER
            && u64::from_ne_bytes(held[8..HEADER].try_into().expect("8 bytes"))
                <= (held.len() - HEADER) as u64
    }
}

fn read_vec(fd: c_int, rb: &mut RecvBuf, len: usize) -> io::Result<Vec<u8>> {
    let mut v: Vec<u8> = Vec::new();
    v.try_reserve_exact(len)
        .map_err(|_| io::Error::from(io::ErrorKind::OutOfMemory))?;
    // SAFETY: capacity is at least `len`; the bytes are initialised by the read before
    // `set_len` exposes them.
    unsafe {
        if len > 0 && !rb.read_exact_raw(fd, v.as_mut_ptr(), len)? {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        v.set_len(len);
    }
    Ok(v)
}

// ---------------------------------------------------------------------------------------
// Frames between a proxy and its worker

const HEADER: usize = 16;
/// Largest frame accepted: anything larger is a malformed frame.
const MAX_FRAME: u64 = 1 << 40;

const K_READY: u32 = 1;
const K_INIT_FAILED: u32 = 2;
const K_CALL: u32 = 3;
const K_BYTES: u32 = 4;
const K_CHUNK_CALLS: u32 = 5;
const K_CHUNK_BYTES: u32 = 6;
const K_RESULT: u32 = 7;

/// Parent to worker: map this arena (its memfd rides along with `SCM_RIGHTS`); payload
/// the arena's size (u64).
const K_ARENA: u32 = 8;
/// Parent to worker: a byte task whose input is in the arena; payload the function, the
/// slot's offset and capacity and the input's length (u64 each).
const K_BYTES_SHM: u32 = 9;

const O_VALUE: u8 = 0;
const O_BYTES: u8 = 1;
const O_FAILED: u8 = 2;
const O_CHUNK: u8 = 3;
const O_VALUES: u8 = 4;
/// A byte result in the arena, in its task's slot: offset and length (u64 each).
const O_BYTES_SHM: u8 = 5;

fn header(kind: u32, len: usize) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[..4].copy_from_slice(&kind.to_ne_bytes());
    h[8..].copy_from_slice(&(len as u64).to_ne_bytes());
    h
}

/// Reads a frame header: `None` on a clean EOF.
fn read_header(fd: c_int, rb: &mut RecvBuf) -> io::Result<Option<(u32, usize)>> {
    let mut h = [0u8; HEADER];
    if !rb.read_exact(fd, &mut h)? {
        return Ok(None);
    }
    let kind = u32::from_ne_bytes(h[..4].try_into().unwrap());
    let len = u64::from_ne_bytes(h[8..].try_into().unwrap());
    if len > MAX_FRAME {
        return Err(malformed());
    }
    Ok(Some((kind, len as usize)))
}

fn malformed() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "malformed message")
}

/// A cursor over a received payload; every read is bounds-checked.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> io::Result<&'a [u8]> {
        if self.0.len() < n {
            return Err(malformed());
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> io::Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> io::Result<u32> {
        Ok(u32::from_ne_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> io::Result<u64> {
        Ok(u64::from_ne_bytes(self.take(8)?.try_into().unwrap()))
    }
    fn usize(&mut self) -> io::Result<usize> {
        usize::try_from(self.u64()?).map_err(|_| malformed())
    }
}

fn put_u64(v: &mut Vec<u8>, x: u64) {
    v.extend_from_slice(&x.to_ne_bytes());
}

/// Serialises an outcome (worker side) into `v`.
fn encode_outcome(v: &mut Vec<u8>, o: &Outcome) {
    match o {
        Outcome::Value(p) => {
            v.push(O_VALUE);
            put_u64(v, *p as usize as u64);
        }
        Outcome::Bytes(b) => {
            v.push(O_BYTES);
            put_u64(v, b.len as u64);
            v.extend_from_slice(b);
        }
        Outcome::Failed(f) => {
            v.push(O_FAILED);
            v.extend_from_slice(&f.status.to_ne_bytes());
            v.extend_from_slice(&f.code.to_ne_bytes());
            match &f.message {
                Some(m) => {
                    v.push(1);
                    put_u64(v, m.as_bytes().len() as u64);
                    v.extend_from_slice(m.as_bytes());
                }
                None => v.push(0),
            }
        }
        Outcome::Degraded(status, code) => {
            let m = super::task::NO_MEMORY_MESSAGE.to_bytes();
            v.push(O_FAILED);
            v.extend_from_slice(&status.to_ne_bytes());
            v.extend_from_slice(&code.to_ne_bytes());
            v.push(1);
            put_u64(v, m.len() as u64);
            v.extend_from_slice(m);
        }
        Outcome::Values(vals) => {
            v.push(O_VALUES);
            put_u64(v, vals.values.len() as u64);
            for &x in vals.values.iter() {
                put_u64(v, x as usize as u64);
            }
            match &vals.failure {
                Some(f) => {
                    v.push(1);
                    encode_outcome(
                        v,
                        &Outcome::Failed(Box::new(Failure {
                            status: f.status,
                            code: f.code,
                            message: f.message.clone(),
                        })),
                    );
                }
                None => v.push(0),
            }
        }
        Outcome::Chunk(items) => {
            v.push(O_CHUNK);
            put_u64(v, items.len() as u64);
            for item in items.iter() {
                encode_outcome(v, item);
            }
        }
    }
}

/// Copies bytes into a new `malloc` buffer (the type a byte result lives in).
fn to_malloc(bytes: &[u8]) -> io::Result<MallocBuf> {
    MallocBuf::copy_of(bytes).ok_or_else(|| io::ErrorKind::OutOfMemory.into())
}

/// Whether a result of `n` bytes is returned in its task's input copy `input` (no longer
/// needed once the answer arrives): when it fits, and fills at least half of it, so that
/// a small result of a large input (a sum, a hash) does not keep the input's memory
/// alive with its future.
fn fits_in(n: usize, input: &MallocBuf) -> bool {
    n <= input.len && n >= input.len / 2
}

/// The `malloc` buffer a result of `n` (> 0) bytes goes into: `reuse` (a task's input,
/// taken) when the result `fits_in` it, else a new one, its pages populated first when
/// large. Its length is `n` either way (`free` needs no length).
fn result_buf(n: usize, reuse: Option<&mut MallocBuf>) -> io::Result<MallocBuf> {
    let mut buf = match reuse {
        Some(input) if fits_in(n, input) => mem::take(input),
        _ => MallocBuf::for_write(n).ok_or(io::ErrorKind::OutOfMemory)?,
    };
    buf.len = n;
    Ok(buf)
}

/// Reads `n` bytes straight into a `result_buf`. None for `n` = 0.
fn read_malloc(
    fd: c_int,
    rb: &mut RecvBuf,
    n: usize,
    reuse: Option<&mut MallocBuf>,
) -> io::Result<MallocBuf> {
    if n == 0 {
        return Ok(MallocBuf::empty());
    }
    let buf = result_buf(n, reuse)?;
    // SAFETY: `buf` has room for `n` bytes.
    if !unsafe { rb.read_exact_raw(fd, buf.ptr.cast(), n) }? {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(buf)
}

/// Deserialises an outcome (parent side).
fn decode_outcome(r: &mut Reader<'_>, depth: u32) -> io::Result<Outcome> {
    Ok(match r.u8()? {
        O_VALUE => Outcome::Value(r.u64()? as usize as *mut c_void),
        O_BYTES => {
            let n = r.usize()?;
            Outcome::Bytes(to_malloc(r.take(n)?)?)
        }
        O_FAILED => {
            let status = r.u32()?;
            let code = r.u32()? as c_int;
            let message = match r.u8()? {
                0 => None,
                1 => {
                    let n = r.usize()?;
                    Some(CString::new(r.take(n)?).map_err(|_| malformed())?.into())
                }
                _ => return Err(malformed()),
            };
            Outcome::Failed(Box::new(Failure {
                status,
                code,
                message,
            }))
        }
        O_VALUES if depth == 0 => {
            let n = r.usize()?;
            let mut values = Vec::with_capacity(n.min(r.0.len() / 8));
            for _ in 0..n {
                values.push(r.u64()? as usize as *mut c_void);
            }
            let failure = match r.u8()? {
                0 => None,
                1 => match decode_outcome(r, 1)? {
                    Outcome::Failed(f) => Some(f),
                    _ => return Err(malformed()),
                },
                _ => return Err(malformed()),
            };
            Outcome::Values(Box::new(Values {
                values: values.into(),
                failure,
            }))
        }
        O_CHUNK if depth == 0 => {
            let n = r.usize()?;
            let mut items = Vec::with_capacity(n.min(r.0.len()));
            for _ in 0..n {
                items.push(decode_outcome(r, 1)?);
            }
            Outcome::Chunk(items.into_boxed_slice())
        }
        _ => return Err(malformed()),
    })
}

/// A future and its task, in a proxy's pipeline.
type Job = (super::future::CoreRef, Task);

/// Sends the frames in `batch` in one go; each task in `batched` whose frame went out
/// whole joins `inflight` (the worker may have run it), the others go back to the front
/// of `unsent`, in order. `false` when the channel broke. Leaves both batch lists empty.
fn flush_batch(
    worker: &mut ProcWorker,
    batch: &mut Vec<u8>,
    batched: &mut Vec<(Job, usize)>,
    inflight: &mut VecDeque<(Job, Option<Slot>)>,
    unsent: &mut VecDeque<Job>,
) -> bool {
    if batched.is_empty() {
        return true;
    }
    let (sent, result) = send_counted(worker.fd.raw(), batch);
    let cut = batched.partition_point(|&(_, end)| end <= sent);
    let mut start = 0;
    for (job, end) in batched.drain(..cut) {
        worker.tasks += 1;
        worker.sent(end - start);
        start = end;
        inflight.push_back((job, None));
    }
    for (job, _) in batched.drain(..).rev() {
        unsent.push_front(job);
    }
    batch.clear();
    result.is_ok()
}

/// Appends the frame of a small task (a call, or a byte task below `SHM_MIN`) to `m`, so
/// that several can go out in one system call; `false` (nothing appended) for any other
/// task.
fn encode_small(task: &Task, m: &mut Vec<u8>) -> bool {
    match task {
        Task::Call(f, arg) => {
            m.extend_from_slice(&header(K_CALL, 16));
            put_u64(m, *f as usize as u64);
            put_u64(m, *arg as usize as u64);
            true
        }
        Task::Bytes(f, input) if input.len() < SHM_MIN => {
            m.extend_from_slice(&header(K_BYTES, 8 + input.len()));
            put_u64(m, *f as usize as u64);
            m.extend_from_slice(input);
            true
        }
        _ => false,
    }
}

/// The length of the frame `send_task` sends for `task`, header included.
fn frame_len(task: &Task) -> usize {
    HEADER
        + match task {
            Task::Call(..) => 16,
            Task::Bytes(_, input) => 8 + input.len(),
            Task::Calls(_, chunk) => 16 + 8 * chunk.values.len(),
            Task::ByteChunk(_, inputs) => 16 + inputs.iter().map(|i| 8 + i.len()).sum::<usize>(),
            // Never sent: continuations run on thread pools only (`cf_future_then`).
            Task::Then(_) => 0,
        }
}

/// Sends a task to a worker (parent side). Large byte inputs go out straight from their
/// buffers; calls and small byte inputs as `encode_small` frames them.
fn send_task(fd: c_int, task: &Task) -> io::Result<()> {
    match task {
        Task::Bytes(f, input) if input.len() >= SHM_MIN => {
            let mut m = Vec::with_capacity(HEADER + 8);
            m.extend_from_slice(&header(K_BYTES, 8 + input.len()));
            put_u64(&mut m, *f as usize as u64);
            send_all(fd, &[&m, input])
        }
        Task::Calls(f, chunk) => {
            let mut p = Vec::new();
            put_u64(&mut p, *f as usize as u64);
            put_u64(&mut p, chunk.values.len() as u64);
            for a in chunk.values.iter() {
                put_u64(&mut p, *a as usize as u64);
            }
            send_all(fd, &[&header(K_CHUNK_CALLS, p.len()), &p])
        }
        Task::ByteChunk(f, inputs) => {
            let mut p = Vec::new();
            put_u64(&mut p, *f as usize as u64);
            put_u64(&mut p, inputs.len() as u64);
            for i in inputs.iter() {
                put_u64(&mut p, i.len() as u64);
                p.extend_from_slice(i);
            }
            send_all(fd, &[&header(K_CHUNK_BYTES, p.len()), &p])
        }
        small => {
            let mut m = Vec::new();
            let encoded = encode_small(small, &mut m);
            debug_assert!(encoded, "calls and byte inputs under SHM_MIN are small");
            send_all(fd, &[&m])
        }
    }
}

/// Reads a result frame (parent side). A byte result is read straight into its final
/// `malloc` buffer, or copied there from the task's arena slot (`slot`, if its input went
/// through the arena): a result said to be anywhere else is malformed. That buffer is
/// the task's input (`reuse`, taken) when the result `fits_in` it: its pages are
/// present, where a new buffer of a large result's size would cost a page fault per page.
fn recv_outcome(
    fd: c_int,
    rb: &mut RecvBuf,
    slot: Option<(&Mapping, Slot)>,
    reuse: Option<&mut MallocBuf>,
) -> io::Result<Outcome> {
    let Some((kind, len)) = read_header(fd, rb)? else {
        return Err(io::ErrorKind::UnexpectedEof.into());
    };
    if kind != K_RESULT || len < 1 {
        return Err(malformed());
    }
    let mut tag = [0u8; 1];
    if !rb.read_exact(fd, &mut tag)? {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    if tag[0] == O_BYTES_SHM {
        let mut p = [0u8; 16];
        if len != 17 || !rb.read_exact(fd, &mut p)? {
            return Err(malformed());
        }
        let mut r = Reader(&p);
        let (off, n) = (r.usize()?, r.usize()?);
        let Some((map, slot)) = slot else {
            return Err(malformed());
        };
        if off != slot.off || n > slot.cap || n == 0 {
            return Err(malformed());
        }
        let src = map.range(off, n).ok_or_else(malformed)?;
        let buf = result_buf(n, reuse)?;
        // SAFETY: `src` is `n` bytes inside the mapping (checked); the worker wrote them
        // before its answer and no longer touches this slot. (A rogue worker could still
        // scribble on them: that changes the bytes we copy, nothing else.) `buf` holds
        // `n` bytes and is ours (the task's private input copy or a new buffer), disjoint
        // from the arena.
        unsafe { ptr::copy_nonoverlapping(src, buf.ptr.cast(), n) };
        return Ok(Outcome::Bytes(buf));
    }
    if tag[0] == O_BYTES {
        let mut n = [0u8; 8];
        if len < 9 || !rb.read_exact(fd, &mut n)? {
            return Err(malformed());
        }
        let n = u64::from_ne_bytes(n) as usize;
        if n != len - 9 {
            return Err(malformed());
        }
        return read_malloc(fd, rb, n, reuse).map(Outcome::Bytes);
    }
    let rest = read_vec(fd, rb, len - 1)?;
    let mut all = Vec::with_capacity(len);
    all.push(tag[0]);
    all.extend_from_slice(&rest);
    let mut r = Reader(&all);
    let o = decode_outcome(&mut r, 0)?;
    if !r.0.is_empty() {
        return Err(malformed());
    }
    Ok(o)
}

// ---------------------------------------------------------------------------------------
// Shared-memory arenas for large byte payloads

/// Byte inputs of at least this many bytes travel through the worker's arena rather than
/// through its socket; a byte map on a process pool sends each such item as a task of its
/// own (`task::tasks_of`).
pub(crate) const SHM_MIN: usize = 64 << 10;
/// Smallest arena made, and the largest (a larger input travels through the socket).
const ARENA_MIN: usize = 4 << 20;
const ARENA_MAX: usize = 1 << 30;
/// Slots start on page boundaries.
const SLOT_ALIGN: usize = 4096;

/// A shared mapping of an arena's memfd; unmapped on drop.
struct Mapping {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by whoever owns the `Mapping`; the other side
// of it is another process, never another thread of this one.
unsafe impl Send for Mapping {}

impl Mapping {
    /// Maps `len` bytes of `fd` shared, read-write, populated (one batch of page faults
    /// now rather than one fault per page later), and not inherited by forks: a fork
    /// server forked later must not keep this worker's arena alive, nor its workers see it.
    fn new(fd: c_int, len: usize) -> io::Result<Mapping> {
        // SAFETY: a fresh mapping of our own descriptor; checked for failure.
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let m = Mapping { ptr: p.cast(), len };
        // SAFETY: advice on the mapping just made.
        if unsafe { libc::madvise(p, len, libc::MADV_DONTFORK) } != 0 {
            return Err(io::Error::last_os_error()); // `m` unmaps it
        }
        Ok(m)
    }

    /// The bytes at `off..off + len`, if inside the mapping.
    fn range(&self, off: usize, len: usize) -> Option<*mut u8> {
        let end = off.checked_add(len)?;
        // SAFETY: `off <= end <= self.len`: within the mapping.
        (end <= self.len).then(|| unsafe { self.ptr.add(off) })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: our own mapping, unmapped once; nothing borrows it past its owner.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// A slot of the arena holding one task in flight: its input, then its result.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Slot {
    off: usize,
    cap: usize,
    /// Ring position just past the slot: where the ring's tail moves when it is freed.
    end: usize,
}

/// The parent's side of a worker's arena: the mapping and a ring of slots. Slots are
/// taken as tasks are sent and freed as their answers arrive, both in order (the worker
/// answers in order), so a ring is all the bookkeeping needed. Positions grow without
/// wrapping; a slot never straddles the end of the arena. When the ring empties it
/// starts again at offset 0, so the same (already mapped, cached) pages are reused.
struct Arena {
    map: Mapping,
    head: usize,
    tail: usize,
}

impl Arena {
    /// The arena size for an input of `need` bytes (rounded to `SLOT_ALIGN`): room for a
    /// few such tasks in flight; `None` when too large for an arena.
    fn size_for(need: usize) -> Option<usize> {
        let size = if need <= 16 << 20 {
            (3 * need).max(ARENA_MIN)
        } else {
            need.checked_add(32 << 20)?
        };
        (size <= ARENA_MAX).then_some(size)
    }

    /// Makes an arena of `size` bytes: a memfd (close-on-exec, never a named file),
    /// sized and mapped here; the descriptor is returned to be sent to the worker.
    fn create(size: usize) -> io::Result<(Arena, Fd)> {
        let fd = {
            let mut fds = lock(&OUR_FDS);
            // SAFETY: a plain system call with a NUL-terminated name.
            let fd = unsafe { libc::memfd_create(c"cfutures-arena".as_ptr(), libc::MFD_CLOEXEC) };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            fds.push(fd);
            Fd(fd)
        };
        // SAFETY: sizing our own memfd.
        if unsafe { libc::ftruncate(fd.raw(), size as libc::off_t) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // Mapped and marked MADV_DONTFORK under the descriptor lock, which every fork of
        // ours also holds: a fork server forked by another thread in between would
        // otherwise inherit the mapping (and its workers with it).
        let map = {
            let _fds = lock(&OUR_FDS);
            Mapping::new(fd.raw(), size)?
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
    fn alloc(&mut self, len: usize) -> Option<Slot> {
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
    fn free(&mut self, slot: Slot) {
        self.tail = slot.end;
        if self.tail == self.head {
            self.head = 0;
            self.tail = 0;
        }
    }
}

/// Sends `bytes` with a descriptor attached (`SCM_RIGHTS`), then any rest of them.
fn send_with_fd(sock: c_int, bytes: &[u8], fd: c_int) -> io::Result<()> {
    let n = sendmsg_fd(sock, bytes, Some(fd))?;
    send_all(sock, &[&bytes[n..]])
}

/// How a task went to a worker.
enum Sent {
    /// Through the socket, or with its input in this arena slot.
    Yes(Option<Slot>),
    /// Not sent: the arena has no room until an answer frees a slot (or, being too
    /// small, until nothing is in flight and it can be replaced), or the socket may not
    /// take the frame until answers are read (`ProcWorker::may_send`).
    NoRoom,
}

impl ProcWorker {
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
    fn sent(&mut self, len: usize) {
        self.frames.push_back(len);
        self.unread += len;
    }

    /// Records the oldest task's answer as read: its frame was read long before.
    fn answered(&mut self) {
        if let Some(len) = self.frames.pop_front() {
            self.unread -= len;
        }
    }

    /// Sends a task; `idle` says that nothing is in flight. A large byte input goes into
    /// the arena (made, or replaced by a larger one, while idle); if no arena can be had,
    /// through the socket. `NoRoom` also when its frame may not go out yet (`may_send`).
    fn send(&mut self, task: &Task, idle: bool) -> io::Result<Sent> {
        let Task::Bytes(f, input) = task else {
            return self.send_inline(task);
        };
        if input.len() < SHM_MIN {
            return self.send_inline(task);
        }
        let need = input.len().next_multiple_of(SLOT_ALIGN);
        if self.arena.as_ref().is_none_or(|a| need > a.map.len) {
            if !idle {
                return Ok(Sent::NoRoom);
            }
            self.arena = None; // the worker drops its mapping of it at the next K_ARENA
            if let Some(size) = Arena::size_for(need) {
                if let Ok((arena, memfd)) = Arena::create(size) {
                    send_with_fd(
                        self.fd.raw(),
                        &[&header(K_ARENA, 8)[..], &(size as u64).to_ne_bytes()].concat(),
                        memfd.raw(),
                    )?;
                    self.arena = Some(arena);
                }
            }
        }
        if self.arena.is_none() {
            return self.send_inline(task);
        }
        if !self.may_send(HEADER + 32) {
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
        let mut m = [0u8; HEADER + 32];
        m[..HEADER].copy_from_slice(&header(K_BYTES_SHM, 32));
        for (i, x) in [*f as usize, slot.off, slot.cap, input.len()]
            .into_iter()
            .enumerate()
        {
            m[HEADER + 8 * i..HEADER + 8 * i + 8].copy_from_slice(&(x as u64).to_ne_bytes());
        }
        // On an error the worker is buried, and its arena with it.
        send_all(self.fd.raw(), &[&m])?;
        self.sent(m.len());
        Ok(Sent::Yes(Some(slot)))
    }

    /// Sends a task's frame through the socket, if it `may_send` now.
    fn send_inline(&mut self, task: &Task) -> io::Result<Sent> {
        let len = frame_len(task);
        if !self.may_send(len) {
            return Ok(Sent::NoRoom);
        }
        send_task(self.fd.raw(), task)?;
        self.sent(len);
        Ok(Sent::Yes(None))
    }
}

// ---------------------------------------------------------------------------------------
// The worker process

/// What a worker receives.
enum Incoming {
    Task(Task),
    /// A new arena, replacing any earlier one.
    Arena(Mapping),
    /// A byte task whose input is `len` bytes at `off` in the arena, in a slot of `cap`.
    Shm {
        f: BytesFn,
        off: usize,
        cap: usize,
        len: usize,
    },
}

/// Reads the next message (worker side); `None` on EOF (retired) or a broken channel.
fn recv_task(fd: c_int, rb: &mut RecvBuf) -> Option<Incoming> {
    let (kind, len) = read_header(fd, rb).ok()??;
    let fnp = |x: u64| x as usize;
    match kind {
        K_ARENA if len == 8 => {
            let mut p = [0u8; 8];
            if !rb.read_exact(fd, &mut p).ok()? {
                return None;
            }
            let memfd = rb.take_fd()?;
            let map = usize::try_from(u64::from_ne_bytes(p))
                .ok()
                .and_then(|size| Mapping::new(memfd, size).ok());
            // The descriptor is closed at once: the worker keeps the mapping only, so it
            // holds no descriptor but its channel. (Not an `Fd`: `OUR_FDS` is not for
            // workers, whose copy of its lock may have been taken at the server's fork.)
            // SAFETY: the descriptor we just received, closed once.
            unsafe { libc::close(memfd) };
            map.map(Incoming::Arena)
        }
        K_BYTES_SHM if len == 32 => {
            let p = read_vec(fd, rb, 32).ok()?;
            let mut r = Reader(&p);
            let f = fnp(r.u64().ok()?);
            let (off, cap, len) = (r.usize().ok()?, r.usize().ok()?, r.usize().ok()?);
            // SAFETY: as below, a `cf_bytes_fn` of this program.
            let f: BytesFn = unsafe { mem::transmute::<usize, BytesFn>(f) };
            Some(Incoming::Shm { f, off, cap, len })
        }
        _ => recv_plain_task(fd, rb, kind, len).map(Incoming::Task),
    }
}

fn recv_plain_task(fd: c_int, rb: &mut RecvBuf, kind: u32, len: usize) -> Option<Task> {
    let fnp = |x: u64| x as usize;
    match kind {
        K_CALL if len == 16 => {
            let p = read_vec(fd, rb, 16).ok()?;
            let mut r = Reader(&p);
            let (f, a) = (fnp(r.u64().ok()?), r.u64().ok()? as usize);
            // SAFETY: the parent sent a `cf_fn` of this same program (forked).
            let f: TaskFn = unsafe { mem::transmute::<usize, TaskFn>(f) };
            Some(Task::Call(f, a as *mut c_void))
        }
        K_BYTES if len >= 8 => {
            let mut h = [0u8; 8];
            if !rb.read_exact(fd, &mut h).ok()? {
                return None;
            }
            // SAFETY: as above, a `cf_bytes_fn` of this program.
            let f: BytesFn =
                unsafe { mem::transmute::<usize, BytesFn>(fnp(u64::from_ne_bytes(h))) };
            let data = read_malloc(fd, rb, len - 8, None).ok()?;
            Some(Task::Bytes(f, data))
        }
        K_CHUNK_CALLS | K_CHUNK_BYTES => {
            let p = read_vec(fd, rb, len).ok()?;
            let mut r = Reader(&p);
            let f = fnp(r.u64().ok()?);
            let n = r.usize().ok()?;
            if kind == K_CHUNK_CALLS {
                // SAFETY: as above.
                let f: TaskFn = unsafe { mem::transmute::<usize, TaskFn>(f) };
                let mut args = Vec::with_capacity(n.min(p.len() / 8));
                for _ in 0..n {
                    args.push(r.u64().ok()? as usize as *mut c_void);
                }
                let values = Values {
                    values: args.into(),
                    failure: None,
                };
                Some(Task::Calls(f, Box::new(values)))
            } else {
                // SAFETY: as above.
                let f: BytesFn = unsafe { mem::transmute::<usize, BytesFn>(f) };
                let mut inputs = Vec::with_capacity(n.min(p.len() / 8));
                for _ in 0..n {
                    let k = r.usize().ok()?;
                    inputs.push(MallocBuf::copy_of(r.take(k).ok()?)?);
                }
                Some(Task::ByteChunk(f, inputs.into()))
            }
        }
        _ => None,
    }
}

fn send_outcome(fd: c_int, o: &Outcome) -> io::Result<()> {
    if let Outcome::Bytes(b) = o {
        let data: &[u8] = b;
        let mut m = Vec::with_capacity(HEADER + 9);
        m.extend_from_slice(&header(K_RESULT, 9 + data.len()));
        m.push(O_BYTES);
        put_u64(&mut m, data.len() as u64);
        return send_all(fd, &[&m, data]);
    }
    let mut p = Vec::new();
    encode_outcome(&mut p, o);
    send_all(fd, &[&header(K_RESULT, p.len()), &p])
}

fn send_init_failed(fd: c_int, e: &UserError) -> io::Result<()> {
    let failure = match e {
        UserError::Raised(r) => Failure {
            status: CF_BROKEN,
            code: r.code,
            message: r.message.clone(),
        },
        UserError::Unwound => Failure {
            status: CF_BROKEN,
            code: 0,
            message: None,
        },
    };
    let mut p = Vec::new();
    encode_outcome(&mut p, &Outcome::Failed(Box::new(failure)));
    send_all(fd, &[&header(K_INIT_FAILED, p.len()), &p])
}

/// The life of a worker process: initializer, then tasks until EOF. Never returns.
fn worker_process(
    fd: c_int,
    server: libc::pid_t,
    init: Option<(InitFn, usize)>,
    name: &[u8; 16],
) -> ! {
    // SAFETY: plain system calls on our own process.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
        if libc::getppid() != server {
            libc::_exit(1);
        }
        libc::prctl(libc::PR_SET_NAME, name.as_ptr());
    }
    if let Some((f, arg)) = init {
        // SAFETY: the caller's initializer and initarg, as configured.
        if let Err(e) = call_task(|| unsafe { f(arg as *mut c_void) }) {
            let _ = send_init_failed(fd, &e);
            // SAFETY: leave without running the parent program's exit handlers.
            unsafe { libc::_exit(0) };
        }
    }
    if send_all(fd, &[&header(K_READY, 0)]).is_err() {
        // SAFETY: as above.
        unsafe { libc::_exit(0) };
    }
    let mut rb = RecvBuf::with_fds();
    let mut arena: Option<Mapping> = None;
    while let Some(msg) = recv_task(fd, &mut rb) {
        let sent = match msg {
            Incoming::Task(task) => send_outcome(fd, &task.run()),
            Incoming::Arena(m) => {
                arena = Some(m);
                continue;
            }
            Incoming::Shm { f, off, cap, len } => {
                let slot = arena.as_ref().and_then(|a| a.range(off, cap));
                let Some(slot) = slot.filter(|_| len <= cap) else {
                    break; // a frame we cannot make sense of: leave
                };
                // SAFETY: `len <= cap` bytes inside our mapping, which the parent wrote
                // before sending the frame and leaves alone until our answer.
                let outcome = run_bytes(f, unsafe { std::slice::from_raw_parts(slot, len) });
                match &outcome {
                    Outcome::Bytes(b) if b.len > 0 && b.len <= cap => {
                        // The result goes back in the same slot (the input is done with).
                        // SAFETY: `b.len <= cap` bytes of the slot; the task's buffer is
                        // its own allocation, disjoint from the arena.
                        unsafe { ptr::copy_nonoverlapping(b.ptr.cast::<u8>(), slot, b.len) };
                        let mut m = [0u8; HEADER + 17];
                        m[..HEADER].copy_from_slice(&header(K_RESULT, 17));
                        m[HEADER] = O_BYTES_SHM;
                        m[HEADER + 1..HEADER + 9].copy_from_slice(&(off as u64).to_ne_bytes());
                        m[HEADER + 9..].copy_from_slice(&(b.len as u64).to_ne_bytes());
                        send_all(fd, &[&m])
                    }
                    _ => send_outcome(fd, &outcome),
                }
            }
        };
        if sent.is_err() {
            break;
        }
    }
    // SAFETY: as above.
    unsafe { libc::_exit(0) }
}

// ---------------------------------------------------------------------------------------
// The fork server

const OP_SPAWN: u32 = 1;
const OP_REAP: u32 = 2;
const OP_OK: u32 = 3;
const OP_ERR: u32 = 4;

/// A control message (fixed size; one `SOCK_SEQPACKET` datagram).
#[repr(C)]
#[derive(Clone, Copy)]
struct Ctl {
    op: u32,
    flag: u32,
    value: i64,
    name: [u8; 16],
}

impl Ctl {
    fn new(op: u32, value: i64) -> Ctl {
        Ctl {
            op,
            flag: 0,
            value,
            name: [0; 16],
        }
    }
}

/// Sends a control message, with a descriptor attached when `fd` is given.
fn send_ctl(sock: c_int, msg: &Ctl, fd: Option<c_int>) -> io::Result<()> {
    // SAFETY: `Ctl` is `repr(C)` integers with no padding: every byte is initialized.
    let bytes = unsafe {
        std::slice::from_raw_parts((msg as *const Ctl).cast::<u8>(), mem::size_of::<Ctl>())
    };
    // A SEQPACKET socket sends the whole message or nothing.
    sendmsg_fd(sock, bytes, fd).map(|_| ())
}

/// One `sendmsg` of `bytes` (retried on EINTR), with `fd` attached by `SCM_RIGHTS` when
/// given. Returns how many bytes went.
fn sendmsg_fd(sock: c_int, bytes: &[u8], fd: Option<c_int>) -> io::Result<usize> {
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut c_void,
        iov_len: bytes.len(),
    };
    let mut space = [0u64; 4];
    // SAFETY: zeroed msghdr is valid; the iovec covers `bytes`, which sendmsg only reads;
    // the control buffer is large enough for one fd (CMSG_SPACE(4) <= 32 bytes) and
    // aligned for cmsghdr.
    unsafe {
        let mut m: libc::msghdr = mem::zeroed();
        m.msg_iov = &mut iov;
        m.msg_iovlen = 1;
        if let Some(fd) = fd {
            m.msg_control = space.as_mut_ptr().cast();
            m.msg_controllen = libc::CMSG_SPACE(mem::size_of::<c_int>() as u32) as _;
            let c = libc::CMSG_FIRSTHDR(&m);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(mem::size_of::<c_int>() as u32) as _;
            ptr::write_unaligned(libc::CMSG_DATA(c).cast::<c_int>(), fd);
        }
        loop {
            let n = libc::sendmsg(sock, &m, libc::MSG_NOSIGNAL);
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

/// One `recvmsg` of up to `len` bytes into `buf`, taking descriptors close-on-exec:
/// each descriptor received is handed to `on_fd`. Returns what `recvmsg` returned.
///
/// # Safety
/// `buf` is valid for `len` bytes of writes.
unsafe fn recv_with_fds(
    fd: c_int,
    buf: *mut u8,
    len: usize,
    mut on_fd: impl FnMut(c_int),
) -> isize {
    let mut iov = libc::iovec {
        iov_base: buf.cast(),
        iov_len: len,
    };
    let mut space = [0u64; 8];
    // SAFETY: zeroed msghdr is valid; the iovec covers the caller's buffer and the
    // control buffer is ours, aligned for cmsghdr; descriptors are read from cmsgs the
    // kernel wrote inside it.
    unsafe {
        let mut m: libc::msghdr = mem::zeroed();
        m.msg_iov = &mut iov;
        m.msg_iovlen = 1;
        m.msg_control = space.as_mut_ptr().cast();
        m.msg_controllen = mem::size_of_val(&space) as _;
        let n = libc::recvmsg(fd, &mut m, libc::MSG_CMSG_CLOEXEC);
        if n > 0 {
            let mut c = libc::CMSG_FIRSTHDR(&m);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                    let data = libc::CMSG_DATA(c).cast::<c_int>();
                    let k = ((*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize)
                        / mem::size_of::<c_int>();
                    for i in 0..k {
                        on_fd(ptr::read_unaligned(data.add(i)));
                    }
                }
                c = libc::CMSG_NXTHDR(&m, c);
            }
        }
        n
    }
}

/// Receives a control message and any descriptor; `None` on EOF.
fn recv_ctl(sock: c_int) -> io::Result<Option<(Ctl, Option<c_int>)>> {
    let mut msg = Ctl::new(0, 0);
    let mut fd: Option<c_int> = None;
    let keep = |fd: &mut Option<c_int>, f: c_int| {
        // One descriptor per message; any extra one is closed, not leaked.
        if let Some(old) = fd.replace(f) {
            // SAFETY: a descriptor we just received and own.
            unsafe { libc::close(old) };
        }
    };
    let n = loop {
        // SAFETY: `msg` is ours and `size_of::<Ctl>()` bytes long.
        let n = unsafe {
            recv_with_fds(
                sock,
                (&mut msg as *mut Ctl).cast(),
                mem::size_of::<Ctl>(),
                |f| keep(&mut fd, f),
            )
        };
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    if n == 0 {
        return Ok(None);
    }
    if n != mem::size_of::<Ctl>() {
        if let Some(fd) = fd {
            // SAFETY: as above.
            unsafe { libc::close(fd) };
        }
        return Err(malformed());
    }
    Ok(Some((msg, fd)))
}

fn wait_status(pid: libc::pid_t) -> c_int {
    let mut status = 0;
    loop {
        // SAFETY: waiting for our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r >= 0 || errno() != libc::EINTR {
            return status;
        }
    }
}

/// The fork server's loop. Never returns.
fn server_main(ctl: c_int, parent_pidfd: c_int, init: Option<(InitFn, usize)>) -> ! {
    let mut children: Vec<libc::pid_t> = Vec::new();
    let finish = |children: &[libc::pid_t]| -> ! {
        for &pid in children {
            // SAFETY: killing and reaping our own children.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            wait_status(pid);
        }
        // SAFETY: leave without running the parent program's exit handlers.
        unsafe { libc::_exit(0) }
    };
    loop {
        let mut pfd = [
            libc::pollfd {
                fd: ctl,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: parent_pidfd,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let nfds = if parent_pidfd >= 0 { 2 } else { 1 };
        // SAFETY: `pfd` has `nfds` entries.
        let r = unsafe { libc::poll(pfd.as_mut_ptr(), nfds, -1) };
        if r < 0 {
            if errno() == libc::EINTR {
                continue;
            }
            finish(&children);
        }
        if nfds == 2 && pfd[1].revents != 0 {
            finish(&children); // the parent process is gone
        }
        let (msg, fd) = match recv_ctl(ctl) {
            Ok(Some(x)) => x,
            _ => finish(&children),
        };
        let reply = match (msg.op, fd) {
            (OP_SPAWN, Some(fd)) => {
                let server = std::process::id() as libc::pid_t;
                // SAFETY: this process is single-threaded, so the child may run anything.
                let pid = unsafe { libc::fork() };
                if pid == 0 {
                    // SAFETY: closing descriptors this child must not keep.
                    unsafe {
                        libc::close(ctl);
                        if parent_pidfd >= 0 {
                            libc::close(parent_pidfd);
                        }
                    }
                    worker_process(fd, server, init, &msg.name);
                }
                let e = errno();
                // SAFETY: the worker's end belongs to the worker now.
                unsafe { libc::close(fd) };
                if pid < 0 {
                    Ctl::new(OP_ERR, e as i64)
                } else {
                    children.push(pid);
                    Ctl::new(OP_OK, pid as i64)
                }
            }
            (OP_REAP, None) => {
                let pid = msg.value as libc::pid_t;
                match children.iter().position(|&c| c == pid) {
                    Some(i) => {
                        children.swap_remove(i);
                        if msg.flag != 0 {
                            // SAFETY: our own child, not yet reaped.
                            unsafe { libc::kill(pid, libc::SIGKILL) };
                        }
                        Ctl::new(OP_OK, wait_status(pid) as i64)
                    }
                    None => Ctl::new(OP_ERR, libc::ECHILD as i64),
                }
            }
            (_, fd) => {
                if let Some(fd) = fd {
                    // SAFETY: an unexpected descriptor: not ours to keep.
                    unsafe { libc::close(fd) };
                }
                Ctl::new(OP_ERR, libc::EINVAL as i64)
            }
        };
        if send_ctl(ctl, &reply, None).is_err() {
            finish(&children);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Parent side

/// The parent's handle on a process pool's fork server.
pub(crate) struct ProcShared {
    /// The control socket; `None` once closed. Requests and replies are serialised here.
    ctl: Mutex<Option<Fd>>,
    server: libc::pid_t,
    max_tasks_per_child: usize,
    has_initializer: bool,
}

/// One worker process as its proxy thread sees it.
pub(crate) struct ProcWorker {
    fd: Fd,
    pid: libc::pid_t,
    tasks: usize,
    rb: RecvBuf,
    /// Its arena for large byte payloads, once one was needed.
    arena: Option<Arena>,
    /// The socket bytes of each task in flight, in send order, and their sum: what the
    /// worker may not have read yet (see `may_send`).
    frames: VecDeque<usize>,
    unread: usize,
    /// How many such bytes may be in flight (see `may_send`).
    budget: usize,
}

/// Why a new worker did not become ready.
enum StartError {
    /// Its initializer failed (or, with an initializer configured, it died first).
    InitFailed(UserError),
    /// It died before it was ready, with no initializer configured: lost, not failed.
    Died(String),
}

/// How many times a proxy tries to start a worker that dies before it is ready.
const START_ATTEMPTS: usize = 3;

/// The proxy thread's worker: its index and name for replacements, and its process
/// (`None` between a death or retirement and the next task).
struct Proxy {
    name: [u8; 16],
    worker: Option<ProcWorker>,
}

thread_local! {
    static PROXY: RefCell<Option<Proxy>> = const { RefCell::new(None) };
}

fn name16(name: &str) -> [u8; 16] {
    let mut n = [0u8; 16];
    let b = name.as_bytes();
    let k = b.len().min(15);
    n[..k].copy_from_slice(&b[..k]);
    n
}

/// Describes a wait status: "was killed by signal 9 (SIGKILL)", "exited with exit status 3".
pub(crate) fn describe_status(status: c_int) -> String {
    if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        format!("was killed by signal {sig} ({})", signal_name(sig))
    } else if libc::WIFEXITED(status) {
        format!("exited with exit status {}", libc::WEXITSTATUS(status))
    } else {
        format!("ended with wait status {status}")
    }
}

fn signal_name(sig: c_int) -> &'static str {
    const NAMES: &[(c_int, &str)] = &[
        (libc::SIGHUP, "SIGHUP"),
        (libc::SIGINT, "SIGINT"),
        (libc::SIGQUIT, "SIGQUIT"),
        (libc::SIGILL, "SIGILL"),
        (libc::SIGTRAP, "SIGTRAP"),
        (libc::SIGABRT, "SIGABRT"),
        (libc::SIGBUS, "SIGBUS"),
        (libc::SIGFPE, "SIGFPE"),
        (libc::SIGKILL, "SIGKILL"),
        (libc::SIGUSR1, "SIGUSR1"),
        (libc::SIGSEGV, "SIGSEGV"),
        (libc::SIGUSR2, "SIGUSR2"),
        (libc::SIGPIPE, "SIGPIPE"),
        (libc::SIGALRM, "SIGALRM"),
        (libc::SIGTERM, "SIGTERM"),
        (libc::SIGXCPU, "SIGXCPU"),
        (libc::SIGXFSZ, "SIGXFSZ"),
        (libc::SIGSYS, "SIGSYS"),
    ];
    NAMES
        .iter()
        .find(|(n, _)| *n == sig)
        .map_or("unknown signal", |(_, s)| s)
}

impl ProcShared {
    /// Forks the fork server. The program state workers start from is this moment's.
    pub(crate) fn new(
        init: Option<(InitFn, *mut c_void)>,
        max_tasks_per_child: usize,
    ) -> io::Result<ProcShared> {
        let init = init.map(|(f, a)| (f, a as usize));
        let has_initializer = init.is_some();
        let (parent_end, server_end) = socket_pair(libc::SOCK_SEQPACKET)?;
        // SAFETY: plain system call; -1 on failure (old kernel), which we tolerate.
        let parent_pidfd =
            unsafe { libc::syscall(libc::SYS_pidfd_open, libc::getpid(), 0) } as c_int;
        let pid = {
            let fds = lock(&OUR_FDS);
            let snapshot: Vec<c_int> = fds.clone();
            // SAFETY: we hold stdout's and stderr's locks across the fork, so that no
            // other thread is inside stdio when the child's copy is made (glibc resets
            // malloc's locks itself). The child only unlocks them and runs `server_main`.
            unsafe {
                flockfile(stdout_ptr());
                flockfile(stderr_ptr());
                let pid = libc::fork();
                funlockfile(stderr_ptr());
                funlockfile(stdout_ptr());
                if pid == 0 {
                    for fd in snapshot {
                        if fd != server_end.raw() {
                            libc::close(fd);
                        }
                    }
                    crate::rt::pool::forget_worker_identity();
                    server_main(server_end.raw(), parent_pidfd, init);
                }
                pid
            }
        };
        if parent_pidfd >= 0 {
            // SAFETY: the parent does not need its own pidfd.
            unsafe { libc::close(parent_pidfd) };
        }
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        drop(server_end);
        Ok(ProcShared {
            ctl: Mutex::new(Some(parent_end)),
            server: pid,
            max_tasks_per_child,
            has_initializer,
        })
    }

    /// One request to the server and its reply.
    fn request(&self, msg: &Ctl, fd: Option<c_int>) -> io::Result<i64> {
        let ctl = lock(&self.ctl);
        let Some(sock) = ctl.as_ref() else {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the process pool is closed",
            ));
        };
        send_ctl(sock.raw(), msg, fd)?;
        match recv_ctl(sock.raw())? {
            Some((r, None)) if r.op == OP_OK => Ok(r.value),
            Some((r, None)) if r.op == OP_ERR => {
                Err(io::Error::from_raw_os_error(r.value as c_int))
            }
            _ => Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the fork server died",
            )),
        }
    }

    /// Starts a worker process (called from `submit` for a new proxy, or by a proxy
    /// replacing its worker).
    pub(crate) fn spawn_worker(&self, name: &str) -> io::Result<ProcWorker> {
        let (mine, theirs) = socket_pair(libc::SOCK_STREAM)?;
        grow_buffers(mine.raw());
        grow_buffers(theirs.raw());
        let mut msg = Ctl::new(OP_SPAWN, 0);
        msg.name = name16(name);
        let pid = self.request(&msg, Some(theirs.raw()))?;
        drop(theirs);
        let budget = send_budget(mine.raw());
        Ok(ProcWorker {
            fd: mine,
            pid: pid as libc::pid_t,
            tasks: 0,
            rb: RecvBuf::new(),
            arena: None,
            frames: VecDeque::new(),
            unread: 0,
            budget,
        })
    }

    /// Asks the server to reap a worker (after killing it, for `kill`); its wait status.
    fn reap(&self, pid: libc::pid_t, kill: bool) -> Option<c_int> {
        let mut msg = Ctl::new(OP_REAP, pid as i64);
        msg.flag = u32::from(kill);
        self.request(&msg, None).ok().map(|s| s as c_int)
    }

    /// On the proxy thread: takes charge of a new worker and waits for its initializer.
    /// `Err` only when the initializer failed (the pool is then broken); a worker lost
    /// while starting for any other reason is replaced when the first task comes.
    pub(crate) fn adopt_worker(&self, w: ProcWorker) -> Result<(), UserError> {
        let mut name = [0u8; 16];
        if let Ok(n) = std::thread::current().name().map(name16).ok_or(()) {
            name = n;
        }
        PROXY.with(|p| *p.borrow_mut() = Some(Proxy { name, worker: None }));
        match self.ready(w) {
            Ok(w) => {
                PROXY.with(|p| {
                    if let Some(proxy) = p.borrow_mut().as_mut() {
                        proxy.worker = Some(w);
                    }
                });
                Ok(())
            }
            Err(StartError::InitFailed(e)) => Err(e),
            Err(StartError::Died(_)) => Ok(()),
        }
    }

    /// Waits for a new worker's first frame: ready, or its initializer's failure.
    fn ready(&self, mut w: ProcWorker) -> Result<ProcWorker, StartError> {
        let first = read_header(w.fd.raw(), &mut w.rb);
        let error = match first {
            Ok(Some((K_READY, 0))) => return Ok(w),
            Ok(Some((K_INIT_FAILED, len))) => {
                let failure = read_vec(w.fd.raw(), &mut w.rb, len)
                    .ok()
                    .and_then(|p| decode_outcome(&mut Reader(&p), 1).ok());
                let raised = match failure {
                    Some(Outcome::Failed(f)) => Raised {
                        code: f.code,
                        message: f.message,
                    },
                    _ => Raised {
                        code: 0,
                        message: None,
                    },
                };
                // The worker exits by itself after reporting; reap it.
                self.retire(w);
                return Err(StartError::InitFailed(UserError::Raised(raised)));
            }
            _ => {
                let how = self
                    .bury(w)
                    .map_or_else(|| "died".to_owned(), describe_status);
                format!("a worker process {how} before it was ready")
            }
        };
        if self.has_initializer {
            // Most likely the initializer itself crashed: that breaks the pool, as an
            // initializer that fails by `cf_raise` does.
            let message = format!("{error} (while running its initializer)");
            return Err(StartError::InitFailed(UserError::Raised(Raised {
                code: 0,
                message: CString::new(message).ok().map(Into::into),
            })));
        }
        Err(StartError::Died(error))
    }

    /// On the proxy thread: runs `first` and then whatever `more` hands out, keeping up to
    /// `PIPELINE` tasks in flight in this proxy's worker process, so that a burst of small
    /// tasks costs a few system calls per batch rather than per task: answers already
    /// read in bulk are taken before new work, and the small tasks that then refill the
    /// pipeline go out together in one `send` (`encode_small`, `flush_batch`). Returns once it has
    /// gone idle through `last` (which the pool uses to count this worker idle before the
    /// final outcome is published, and which may hand out one more task instead).
    ///
    /// A worker runs its tasks in order and answers in order, so when its channel breaks
    /// the oldest task in flight is the one it was running: that one fails with
    /// `CF_BROKEN`; the later ones never started and are sent again to a new worker.
    pub(crate) fn drive(
        &self,
        pool: &Pool,
        first: super::future::CoreRef,
        more: &mut dyn FnMut() -> Option<super::future::CoreRef>,
        last: &mut dyn FnMut() -> Option<super::future::CoreRef>,
    ) {
        let mut w: Option<ProcWorker> =
            PROXY.with(|p| p.borrow_mut().as_mut().and_then(|x| x.worker.take()));
        // Tasks in flight, each with its arena slot if its input went through the arena.
        let mut inflight: VecDeque<(Job, Option<Slot>)> = VecDeque::new();
        let mut unsent: VecDeque<Job> = VecDeque::new();
        let mut next = Some(first);
        // Frames of small tasks waiting to go out together, and each task with the offset
        // where its frame ends (see `flush_batch`).
        let mut batch: Vec<u8> = Vec::new();
        let mut batched: Vec<(Job, usize)> = Vec::new();
        loop {
            // Answers already read in bulk are taken first (step 4): a burst of small
            // tasks then refills the pipeline several at a time, and `batch` sends them
            // in one system call.
            if !inflight.is_empty() && w.as_ref().is_some_and(|w| w.rb.has_frame()) {
                if self.read_answer(&mut w, &mut inflight, &mut unsent, &mut next, last) {
                    break;
                }
                continue;
            }
            // 1. Take work while the pipeline has room.
            while inflight.len() + unsent.len() < PIPELINE {
                let Some(job) = next.take().or_else(&mut *more) else {
                    break;
                };
                if let Some(task) = job.start() {
                    unsent.push_back((job, task));
                }
            }
            // 2. Send it, as far as this worker may take it.
            let mut channel_broken = false;
            while let Some((job, task)) = unsent.pop_front() {
                if w.is_none() {
                    match self.replace(pool) {
                        Ok(fresh) => w = Some(fresh),
                        Err(failure) => {
                            let _ = job.finish(Outcome::Failed(failure));
                            continue;
                        }
                    }
                }
                let worker = w.as_mut().expect("a worker was just ensured");
                if self.max_tasks_per_child != 0
                    && worker.tasks + batched.len() >= self.max_tasks_per_child
                {
                    unsent.push_front((job, task));
                    break;
                }
                let before = batch.len();
                if encode_small(&task, &mut batch) {
                    // The batch's frames count as in flight (`may_send`); an idle worker
                    // takes a first frame of any size.
                    let alone = batched.is_empty() && worker.frames.is_empty();
                    if !alone && worker.unread + batch.len() > worker.budget {
                        batch.truncate(before);
                        unsent.push_front((job, task));
                        break;
                    }
                    batched.push(((job, task), batch.len()));
                    continue;
                }
                // A task that goes on its own: the batch goes first, in order.
                if !flush_batch(worker, &mut batch, &mut batched, &mut inflight, &mut unsent) {
                    unsent.push_front((job, task));
                    channel_broken = true;
                    break;
                }
                match worker.send(&task, inflight.is_empty()) {
                    Ok(Sent::Yes(slot)) => {
                        worker.tasks += 1;
                        inflight.push_back(((job, task), slot));
                    }
                    Ok(Sent::NoRoom) => {
                        // Its arena or its socket is full: read answers (step 4), which
                        // free slots and room.
                        unsent.push_front((job, task));
                        break;
                    }
                    Err(_) => {
                        // The worker is gone. Read what it answered before it went, then
                        // bury it (step 4); this task never reached it.
                        unsent.push_front((job, task));
                        channel_broken = true;
                        break;
                    }
                }
            }
            if let Some(worker) = w.as_mut()
                && !flush_batch(worker, &mut batch, &mut batched, &mut inflight, &mut unsent)
            {
                channel_broken = true;
            }
            // 3. Nothing in flight.
            if inflight.is_empty() {
                if let Some(worker) = w.take() {
                    if channel_broken {
                        self.bury(worker);
                    } else if !unsent.is_empty() {
                        self.retire(worker); // at its task limit; a new one is started
                    } else {
                        w = Some(worker);
                    }
                }
                if !unsent.is_empty() {
                    continue;
                }
                match last() {
                    Some(job) => {
                        next = Some(job);
                        continue;
                    }
                    None => break,
                }
            }
            // 4. Read the oldest answer.
            if self.read_answer(&mut w, &mut inflight, &mut unsent, &mut next, last) {
                break;
            }
        }
        PROXY.with(|p| {
            if let Some(proxy) = p.borrow_mut().as_mut() {
                proxy.worker = w;
            }
        });
    }

    /// Step 4 of `drive`: reads the oldest answer and finishes its future; a broken
    /// channel buries the worker, fails the task it was running and puts the tasks after
    /// it back in `unsent`. `true` when the proxy has gone idle (`last` handed out
    /// nothing more).
    fn read_answer(
        &self,
        w: &mut Option<ProcWorker>,
        inflight: &mut VecDeque<(Job, Option<Slot>)>,
        unsent: &mut VecDeque<Job>,
        next: &mut Option<super::future::CoreRef>,
        last: &mut dyn FnMut() -> Option<super::future::CoreRef>,
    ) -> bool {
        let worker = w.as_mut().expect("tasks in flight have a worker");
        let (slot, reuse) = match inflight.front_mut() {
            Some(((_, Task::Bytes(_, input)), slot)) => (*slot, Some(input)),
            Some((_, slot)) => (*slot, None),
            None => (None, None),
        };
        let in_arena = slot.and_then(|s| worker.arena.as_ref().map(|a| (&a.map, s)));
        match recv_outcome(worker.fd.raw(), &mut worker.rb, in_arena, reuse) {
            Ok(outcome) => {
                worker.answered();
                let ((job, task), slot) =
                    inflight.pop_front().expect("an answer to a task in flight");
                drop(task);
                if let (Some(slot), Some(arena)) = (slot, worker.arena.as_mut()) {
                    arena.free(slot);
                }
                let mut idle = false;
                if inflight.is_empty() && unsent.is_empty() && next.is_none() {
                    // Count this worker idle before the outcome is published, unless
                    // there is more to do (see pool.rs).
                    if self.max_tasks_per_child != 0 && worker.tasks >= self.max_tasks_per_child {
                        if let Some(done) = w.take() {
                            self.retire(done);
                        }
                    }
                    *next = last();
                    idle = next.is_none();
                }
                let _ = job.finish(outcome);
                idle
            }
            Err(e) => {
                let dead = w.take().expect("checked above");
                let pid = dead.pid;
                let status = self.bury(dead);
                let how = if e.kind() == io::ErrorKind::OutOfMemory {
                    // Not the worker's fault: its answer did not fit in our memory.
                    "answered with a result this process could not allocate (the worker \
                     was stopped)"
                        .to_owned()
                } else {
                    status.map_or_else(|| "died".to_owned(), describe_status)
                };
                let ((job, task), _) = inflight.pop_front().expect("an answer to a task in flight");
                drop(task);
                let _ = job.finish(Outcome::Failed(Failure::new(
                    CF_BROKEN,
                    0,
                    &format!("the worker process {pid} running the task {how}"),
                )));
                // The rest never started: send them again, in order.
                while let Some((job, _)) = inflight.pop_back() {
                    unsent.push_front(job);
                }
                false
            }
        }
    }

    /// Starts a replacement worker for this proxy and waits until it is ready. A worker
    /// lost while starting (killed from outside) is tried again a few times; a failed
    /// initializer breaks the pool.
    fn replace(&self, pool: &Pool) -> Result<ProcWorker, Box<Failure>> {
        let name = PROXY
            .with(|p| p.borrow().as_ref().map(|x| x.name))
            .unwrap_or([0; 16]);
        let len = name.iter().position(|&b| b == 0).unwrap_or(16);
        let name = String::from_utf8_lossy(&name[..len]).into_owned();
        let mut attempts = 0;
        loop {
            let w = self.spawn_worker(&name).map_err(|e| {
                Failure::new(
                    CF_BROKEN,
                    e.raw_os_error().unwrap_or(0),
                    &format!("could not start a worker process: {e}"),
                )
            })?;
            match self.ready(w) {
                Ok(w) => return Ok(w),
                Err(StartError::Died(how)) => {
                    attempts += 1;
                    if attempts >= START_ATTEMPTS {
                        return Err(Failure::new(CF_BROKEN, 0, &how));
                    }
                }
                Err(StartError::InitFailed(e)) => {
                    let failure = match &e {
                        UserError::Raised(r) => Failure::new(
                            CF_BROKEN,
                            r.code,
                            &format!(
                                "a worker initializer failed ({}); the executor is broken",
                                r.message
                                    .as_deref()
                                    .map(|m| m.to_string_lossy())
                                    .unwrap_or_default()
                            ),
                        ),
                        UserError::Unwound => {
                            Failure::new(CF_BROKEN, 0, "a worker initializer failed")
                        }
                    };
                    pool.break_pool(e);
                    return Err(failure);
                }
            }
        }
    }

    /// Ends a worker that never got a proxy thread: kill it and reap it.
    pub(crate) fn discard_worker(&self, w: ProcWorker) {
        self.bury(w);
    }

    /// Kills and reaps a worker whose channel broke; its wait status.
    fn bury(&self, w: ProcWorker) -> Option<c_int> {
        let pid = w.pid;
        drop(w);
        self.reap(pid, true)
    }

    /// Ends an idle worker: EOF on its channel makes it exit; then reap it.
    fn retire(&self, w: ProcWorker) {
        let pid = w.pid;
        drop(w);
        self.reap(pid, false);
    }

    /// On the proxy thread, as it exits: retires its worker, if any.
    pub(crate) fn retire_worker(&self) {
        let proxy = PROXY.with(|p| p.borrow_mut().take());
        if let Some(w) = proxy.and_then(|p| p.worker) {
            self.retire(w);
        }
    }

    /// Closes the control socket and reaps the server (which reaps any worker left).
    pub(crate) fn close_server(&self) {
        let ctl = lock(&self.ctl).take();
        if ctl.is_some() {
            drop(ctl);
            wait_status(self.server);
        }
    }
}

impl Drop for ProcShared {
    fn drop(&mut self) {
        self.close_server();
    }
}

/// Asks for large socket buffers, so that a megabyte moves in a few system calls rather
/// than in ~200 KiB steps, each a context switch. Unprivileged processes get at most the
/// system's `net.core.wmem_max`/`rmem_max`; failures are harmless.
fn grow_buffers(fd: c_int) {
    let size: c_int = SOCKET_BUFFER;
    for opt in [libc::SO_SNDBUF, libc::SO_RCVBUF] {
        // SAFETY: setting an int option on our own socket.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&size as *const c_int).cast(),
                mem::size_of::<c_int>() as libc::socklen_t,
            );
        }
    }
}

/// How many socket bytes of task frames a proxy keeps in flight in a worker whose socket
/// is `fd` (see `ProcWorker::may_send`): half its send buffer, less 64 KiB for the
/// kernel's bookkeeping of each message (the send buffer counts that too), or 0 (one
/// task at a time) for a buffer smaller than 128 KiB. With the 4 MiB buffers asked for
/// by `grow_buffers` (Linux reports twice that), 4 MiB less 64 KiB; with Linux's default
/// (`net.core.wmem_default`, 208 KiB), 40 KiB.
fn send_budget(fd: c_int) -> usize {
    let mut size: c_int = 0;
    let mut len = mem::size_of::<c_int>() as libc::socklen_t;
    // SAFETY: reading an int option of our own socket into `size`.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&mut size as *mut c_int).cast(),
            &mut len,
        )
    };
    if r != 0 || size <= 0 {
        return 0;
    }
    (size as usize / 2).saturating_sub(64 << 10)
}

/// Most tasks a proxy keeps in flight in its worker process.
const PIPELINE: usize = 8;

/// Socket buffer size requested for worker channels.
const SOCKET_BUFFER: c_int = 4 << 20;

unsafe extern "C" {
    fn flockfile(f: *mut libc::FILE);
    fn funlockfile(f: *mut libc::FILE);
}

fn stdout_ptr() -> *mut libc::FILE {
    unsafe extern "C" {
        static mut stdout: *mut libc::FILE;
    }
    // SAFETY: reading glibc's `stdout` pointer.
    unsafe { stdout }
}

fn stderr_ptr() -> *mut libc::FILE {
    unsafe extern "C" {
        static mut stderr: *mut libc::FILE;
    }
    // SAFETY: reading glibc's `stderr` pointer.
    unsafe { stderr }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rt::task::no_bytes;
    use crate::status::CF_TASK_FAILED;

    unsafe extern "C-unwind" fn ident(arg: *mut c_void) -> *mut c_void {
        arg
    }

    #[test]
    fn frame_len_is_what_send_task_writes() {
        // `may_send` counts frames by `frame_len`; it must match the bytes that go out.
        let (a, b) = socket_pair(libc::SOCK_STREAM).unwrap();
        let bytes = |n: usize| MallocBuf::copy_of(&vec![7u8; n]).unwrap();
        let values = |n: usize| {
            Box::new(Values {
                values: vec![std::ptr::null_mut(); n].into(),
                failure: None,
            })
        };
        let tasks = [
            Task::Call(ident, 5 as *mut c_void),
            Task::Bytes(no_bytes, MallocBuf::empty()),
            Task::Bytes(no_bytes, bytes(100)),
            Task::Bytes(no_bytes, bytes(SHM_MIN + 3)),
            Task::Calls(ident, values(3)),
            Task::ByteChunk(
                no_bytes,
                vec![bytes(3), MallocBuf::empty(), bytes(5)].into(),
            ),
        ];
        let mut buf = vec![0u8; 2 * SHM_MIN];
        for task in &tasks {
            send_task(a.raw(), task).unwrap();
            let mut got = 0;
            loop {
                // SAFETY: reading into our buffer, without blocking.
                let n = unsafe {
                    libc::recv(
                        b.raw(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        libc::MSG_DONTWAIT,
                    )
                };
                if n <= 0 {
                    break;
                }
                got += n as usize;
            }
            assert_eq!(got, frame_len(task));
        }
    }

    #[test]
    fn outcomes_round_trip_and_garbage_is_malformed() {
        let chunk = Outcome::Chunk(
            vec![
                Outcome::Value(42 as *mut c_void),
                Outcome::Bytes(to_malloc(b"hello").unwrap()),
                Outcome::Failed(Failure::new(CF_TASK_FAILED, 7, "boom")),
            ]
            .into(),
        );
        let mut v = Vec::new();
        encode_outcome(&mut v, &chunk);
        let back = decode_outcome(&mut Reader(&v), 0).unwrap();
        let Outcome::Chunk(items) = back else {
            panic!("not a chunk")
        };
        assert!(matches!(items[0], Outcome::Value(p) if p as usize == 42));
        assert!(matches!(&items[1], Outcome::Bytes(b) if &b[..] == b"hello"));
        assert!(
            matches!(&items[2], Outcome::Failed(f) if f.code == 7 && f.message.as_deref() == Some(c"boom"))
        );
        // Every truncation of a valid message is rejected, never a crash.
        for cut in 0..v.len() {
            assert!(decode_outcome(&mut Reader(&v[..cut]), 0).is_err());
        }
        // Unknown tags and nested chunks are rejected.
        assert!(decode_outcome(&mut Reader(&[9]), 0).is_err());
        let mut nested = Vec::new();
        encode_outcome(
            &mut nested,
            &Outcome::Chunk(vec![Outcome::Chunk(Box::new([]))].into()),
        );
        assert!(decode_outcome(&mut Reader(&nested), 0).is_err());
    }

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

    #[test]
    fn statuses_are_described() {
        assert_eq!(describe_status(9), "was killed by signal 9 (SIGKILL)");
        assert_eq!(describe_status(3 << 8), "exited with exit status 3");
    }
}
