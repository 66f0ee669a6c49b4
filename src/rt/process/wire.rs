//! The frame format between a proxy and its worker: the kinds of frame, and how tasks,
//! outcomes and an initializer's failure are encoded and decoded on a byte stream.
//!
//! Messages are frames (`kind`, `len`, payload). Pointer-sized values and function
//! pointers cross as integers (valid in the worker: the same program). Bytes move with
//! one `sendmsg` (gather: no copy into a staging buffer) and one read straight into the
//! destination buffer. A truncated or malformed frame is the worker's death. Nothing here
//! forks: any transport with a byte stream between parent and worker reuses it.

use super::{
    arena::{Mapping, SHM_MIN, Slot},
    deadline::WATCH_SIZE,
    io::{RecvBuf, read_vec, send_all},
    stream::Stream,
};
use crate::rt::{
    context::UserError,
    task::{BytesFn, Failure, MallocBuf, NO_MEMORY_MESSAGE, Outcome, Task, TaskFn, Values},
};
use crate::status::CF_BROKEN;
use rustix::fd::OwnedFd;
use std::{
    ffi::{CString, c_int, c_void},
    io,
    mem::{self, MaybeUninit},
    ptr,
};

/// A function pointer as it goes out: its address, or, on a proxy thread of an MPI pool,
/// its (object, offset) code (`mpi::symbols`), valid in a process not forked from this one.
#[inline]
fn fn_out(f: usize) -> u64 {
    #[cfg(feature = "mpi")]
    if let Some(code) = super::mpi::symbols::encode_here(f) {
        return code;
    }
    f as u64
}

/// A function pointer as it comes in: `fn_out`'s inverse; `None` for a code that names
/// no function here (a malformed frame).
#[inline]
fn fn_in(x: u64) -> Option<usize> {
    #[cfg(feature = "mpi")]
    if let Some(f) = super::mpi::symbols::decode_here(x) {
        return f;
    }
    Some(x as usize)
}

/// A frame header: kind (u32), 4 bytes unused, payload length (u64).
pub(crate) const HEADER: usize = 16;
/// Largest frame accepted: anything larger is a malformed frame.
const MAX_FRAME: u64 = 1 << 40;

/// Worker to parent: started, initializer done; no payload.
pub(super) const K_READY: u32 = 1;
/// Worker to parent: its initializer failed; payload an encoded `Outcome::Failed`.
pub(super) const K_INIT_FAILED: u32 = 2;
/// Parent to worker: a call; payload the function and its argument (u64 each).
const K_CALL: u32 = 3;
/// Parent to worker: a byte task; payload the function (u64), then the input.
const K_BYTES: u32 = 4;
/// Parent to worker: a map chunk of calls; function, count, arguments (u64 each).
const K_CHUNK_CALLS: u32 = 5;
/// Parent to worker: a map chunk of byte items; function, count, then each length and
/// bytes.
const K_CHUNK_BYTES: u32 = 6;
/// Worker to parent: a task's outcome (`O_*` tag, then its payload).
const K_RESULT: u32 = 7;
/// Parent to worker: map this arena (its memfd rides along with `SCM_RIGHTS`); payload
/// the arena's size (u64).
pub(super) const K_ARENA: u32 = 8;
/// Parent to worker: a byte task whose input is in the arena; payload the function, the
/// slot's offset and capacity and the input's length (u64 each).
pub(super) const K_BYTES_SHM: u32 = 9;
/// Parent to worker: map this watch (`deadline::Watch`; its memfd rides along with
/// `SCM_RIGHTS`); payload the mapping's size (u64).
pub(super) const K_WATCH: u32 = 10;
/// Parent to worker: the next task has this deadline; payload an absolute
/// `CLOCK_MONOTONIC` time in nanoseconds (u64). See `deadline`.
const K_DEADLINE: u32 = 11;

const O_VALUE: u8 = 0;
const O_BYTES: u8 = 1;
const O_FAILED: u8 = 2;
const O_CHUNK: u8 = 3;
const O_VALUES: u8 = 4;
/// A byte result in the arena, in its task's slot: offset and length (u64 each).
const O_BYTES_SHM: u8 = 5;

pub(super) fn header(kind: u32, len: usize) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[..4].copy_from_slice(&kind.to_ne_bytes());
    h[8..].copy_from_slice(&(len as u64).to_ne_bytes());
    h
}

/// Reads a frame header: `None` on a clean EOF.
pub(super) fn read_header(fd: impl Stream, rb: &mut RecvBuf) -> io::Result<Option<(u32, usize)>> {
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

pub(super) fn malformed() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "malformed message")
}

/// A cursor over a received payload; every read is bounds-checked.
pub(super) struct Reader<'a>(pub(super) &'a [u8]);

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
pub(super) fn encode_outcome(v: &mut Vec<u8>, o: &Outcome) {
    match o {
        Outcome::Value(p) => {
            v.push(O_VALUE);
            put_u64(v, *p as usize as u64);
        }
        Outcome::Owned(o) => {
            v.push(O_VALUE);
            put_u64(v, o.value as usize as u64);
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
            let m = NO_MEMORY_MESSAGE.to_bytes();
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
                            payload: None,
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
pub(super) fn to_malloc(bytes: &[u8]) -> io::Result<MallocBuf> {
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
    fd: impl Stream,
    rb: &mut RecvBuf,
    n: usize,
    reuse: Option<&mut MallocBuf>,
) -> io::Result<MallocBuf> {
    if n == 0 {
        return Ok(MallocBuf::empty());
    }
    let buf = result_buf(n, reuse)?;
    // SAFETY: `buf` is ours and holds `n` bytes, possibly uninitialised.
    let dst = unsafe { std::slice::from_raw_parts_mut(buf.ptr.cast::<MaybeUninit<u8>>(), n) };
    if !rb.read_exact_uninit(fd, dst)? {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(buf)
}

/// Deserialises an outcome (parent side).
pub(super) fn decode_outcome(r: &mut Reader<'_>, depth: u32) -> io::Result<Outcome> {
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
                payload: None,
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

/// Appends the frame of a small task (a call, or a byte task below `SHM_MIN`) to `m`, so
/// that several can go out in one system call; `false` (nothing appended) for any other
/// task.
pub(super) fn encode_small(task: &Task, m: &mut Vec<u8>) -> bool {
    match task.wire() {
        Task::Call(f, arg) => {
            m.extend_from_slice(&header(K_CALL, 16));
            put_u64(m, fn_out(*f as usize));
            put_u64(m, *arg as usize as u64);
            true
        }
        Task::Bytes(f, input) if input.len() < SHM_MIN => {
            m.extend_from_slice(&header(K_BYTES, 8 + input.len()));
            put_u64(m, fn_out(*f as usize));
            m.extend_from_slice(input);
            true
        }
        _ => false,
    }
}

/// The length of the frame `send_task` sends for `task`, header included.
pub(super) fn frame_len(task: &Task) -> usize {
    HEADER
        + match task.wire() {
            Task::Call(..) => 16,
            Task::Bytes(_, input) => 8 + input.len(),
            Task::Calls(_, chunk) => 16 + 8 * chunk.values.len(),
            Task::ByteChunk(_, inputs) => 16 + inputs.iter().map(|i| 8 + i.len()).sum::<usize>(),
            Task::Owned(_) => unreachable!("`wire` unwraps owned tasks"),
            Task::Then(_) => unreachable!("continuations run on thread pools only"),
        }
}

/// Sends a task to a worker (parent side). Large byte inputs go out straight from their
/// buffers; calls and small byte inputs as `encode_small` frames them.
pub(super) fn send_task(fd: impl Stream, task: &Task) -> io::Result<()> {
    match task.wire() {
        Task::Bytes(f, input) if input.len() >= SHM_MIN => {
            let mut m = Vec::with_capacity(HEADER + 8);
            m.extend_from_slice(&header(K_BYTES, 8 + input.len()));
            put_u64(&mut m, fn_out(*f as usize));
            send_all(fd, &[&m, input])
        }
        Task::Calls(f, chunk) => {
            let mut p = Vec::new();
            put_u64(&mut p, fn_out(*f as usize));
            put_u64(&mut p, chunk.values.len() as u64);
            for a in chunk.values.iter() {
                put_u64(&mut p, *a as usize as u64);
            }
            send_all(fd, &[&header(K_CHUNK_CALLS, p.len()), &p])
        }
        Task::ByteChunk(f, inputs) => {
            let mut p = Vec::new();
            put_u64(&mut p, fn_out(*f as usize));
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

/// The frame of a byte task whose input is in the arena (`K_BYTES_SHM`).
pub(super) fn shm_task_frame(f: BytesFn, slot: Slot, len: usize) -> [u8; HEADER + 32] {
    let mut m = [0u8; HEADER + 32];
    m[..HEADER].copy_from_slice(&header(K_BYTES_SHM, 32));
    for (i, x) in [f as usize, slot.off, slot.cap, len]
        .into_iter()
        .enumerate()
    {
        m[HEADER + 8 * i..HEADER + 8 * i + 8].copy_from_slice(&(x as u64).to_ne_bytes());
    }
    m
}

/// The frame announcing an arena of `size` bytes (`K_ARENA`); its memfd rides along.
pub(super) fn arena_frame(size: usize) -> [u8; HEADER + 8] {
    let mut m = [0u8; HEADER + 8];
    m[..HEADER].copy_from_slice(&header(K_ARENA, 8));
    m[HEADER..].copy_from_slice(&(size as u64).to_ne_bytes());
    m
}

/// The frame announcing a watch of `size` bytes (`K_WATCH`); its memfd rides along.
pub(super) fn watch_frame(size: usize) -> [u8; HEADER + 8] {
    let mut m = arena_frame(size);
    m[..4].copy_from_slice(&K_WATCH.to_ne_bytes());
    m
}

/// The frame that goes just before a task with a deadline: `at`, in nanoseconds of
/// `CLOCK_MONOTONIC` (`K_DEADLINE`).
pub(super) fn deadline_frame(at: u64) -> [u8; HEADER + 8] {
    let mut m = [0u8; HEADER + 8];
    m[..HEADER].copy_from_slice(&header(K_DEADLINE, 8));
    m[HEADER..].copy_from_slice(&at.to_ne_bytes());
    m
}

/// Reads a result frame (parent side). A byte result is read straight into its final
/// `malloc` buffer, or copied there from the task's arena slot (`slot`, if its input went
/// through the arena): a result said to be anywhere else is malformed. That buffer is
/// the task's input (`reuse`, taken) when the result `fits_in` it: its pages are
/// present, where a new buffer of a large result's size would cost a page fault per page.
pub(super) fn recv_outcome(
    fd: impl Stream,
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

/// What a worker receives.
pub(super) enum Incoming {
    Task(Task),
    /// A new arena of `size` bytes, replacing any earlier one: its memfd.
    Arena {
        memfd: OwnedFd,
        size: usize,
    },
    /// A watch (`deadline`), replacing any earlier one: its memfd.
    Watch(OwnedFd),
    /// The next task's deadline (nanoseconds of `CLOCK_MONOTONIC`).
    Deadline(u64),
    /// A byte task whose input is `len` bytes at `off` in the arena, in a slot of `cap`.
    Shm {
        f: BytesFn,
        off: usize,
        cap: usize,
        len: usize,
    },
}

/// Reads the next message (worker side); `None` on EOF (retired) or a broken channel.
pub(super) fn recv_task(fd: impl Stream, rb: &mut RecvBuf) -> Option<Incoming> {
    let (kind, len) = read_header(fd, rb).ok()??;
    let fnp = fn_in;
    match kind {
        K_ARENA if len == 8 => {
            let mut p = [0u8; 8];
            if !rb.read_exact(fd, &mut p).ok()? {
                return None;
            }
            let memfd = rb.take_fd()?;
            let size = usize::try_from(u64::from_ne_bytes(p)).ok()?;
            Some(Incoming::Arena { memfd, size })
        }
        K_WATCH if len == 8 => {
            let mut p = [0u8; 8];
            if !rb.read_exact(fd, &mut p).ok()? || u64::from_ne_bytes(p) != WATCH_SIZE as u64 {
                return None;
            }
            Some(Incoming::Watch(rb.take_fd()?))
        }
        K_DEADLINE if len == 8 => {
            let mut p = [0u8; 8];
            if !rb.read_exact(fd, &mut p).ok()? {
                return None;
            }
            Some(Incoming::Deadline(u64::from_ne_bytes(p)))
        }
        K_BYTES_SHM if len == 32 => {
            let p = read_vec(fd, rb, 32).ok()?;
            let mut r = Reader(&p);
            let f = fnp(r.u64().ok()?)?;
            let (off, cap, len) = (r.usize().ok()?, r.usize().ok()?, r.usize().ok()?);
            // SAFETY: as below, a `cf_bytes_fn` of this program.
            let f: BytesFn = unsafe { mem::transmute::<usize, BytesFn>(f) };
            Some(Incoming::Shm { f, off, cap, len })
        }
        _ => recv_plain_task(fd, rb, kind, len).map(Incoming::Task),
    }
}

fn recv_plain_task(fd: impl Stream, rb: &mut RecvBuf, kind: u32, len: usize) -> Option<Task> {
    let fnp = fn_in;
    match kind {
        K_CALL if len == 16 => {
            let p = read_vec(fd, rb, 16).ok()?;
            let mut r = Reader(&p);
            let (f, a) = (fnp(r.u64().ok()?)?, r.u64().ok()? as usize);
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
                unsafe { mem::transmute::<usize, BytesFn>(fnp(u64::from_ne_bytes(h))?) };
            let data = read_malloc(fd, rb, len - 8, None).ok()?;
            Some(Task::Bytes(f, data))
        }
        K_CHUNK_CALLS | K_CHUNK_BYTES => {
            let p = read_vec(fd, rb, len).ok()?;
            let mut r = Reader(&p);
            let f = fnp(r.u64().ok()?)?;
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

/// Sends a task's outcome (worker side).
pub(super) fn send_outcome(fd: impl Stream, o: &Outcome) -> io::Result<()> {
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

/// The answer to a task whose byte result went back into its arena slot, at `off`, `len`
/// bytes (`O_BYTES_SHM`).
pub(super) fn shm_result_frame(off: usize, len: usize) -> [u8; HEADER + 17] {
    let mut m = [0u8; HEADER + 17];
    m[..HEADER].copy_from_slice(&header(K_RESULT, 17));
    m[HEADER] = O_BYTES_SHM;
    m[HEADER + 1..HEADER + 9].copy_from_slice(&(off as u64).to_ne_bytes());
    m[HEADER + 9..].copy_from_slice(&(len as u64).to_ne_bytes());
    m
}

/// Reports a failed initializer (worker side).
pub(super) fn send_init_failed(fd: impl Stream, e: &UserError) -> io::Result<()> {
    let failure = match e {
        UserError::Raised(r) => Failure {
            status: CF_BROKEN,
            code: r.code,
            message: r.message.clone(),
            payload: None,
        },
        UserError::Unwound => Failure {
            status: CF_BROKEN,
            code: 0,
            message: None,
            payload: None,
        },
    };
    let mut p = Vec::new();
    encode_outcome(&mut p, &Outcome::Failed(Box::new(failure)));
    send_all(fd, &[&header(K_INIT_FAILED, p.len()), &p])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rt::process::io::socket_pair;
    use crate::rt::task::no_bytes;
    use crate::status::CF_TASK_FAILED;
    use rustix::{fd::AsFd, net::RecvFlags, net::SocketType};

    unsafe extern "C-unwind" fn ident(arg: *mut c_void) -> *mut c_void {
        arg
    }

    #[test]
    fn frame_len_is_what_send_task_writes() {
        // `may_send` counts frames by `frame_len`; it must match the bytes that go out.
        let (a, b) = socket_pair(SocketType::STREAM).unwrap();
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
            send_task(a.as_fd(), task).unwrap();
            let mut got = 0;
            // Read without blocking until the socket is empty.
            while let Ok((n @ 1.., _)) =
                rustix::net::recv(b.as_fd(), &mut buf[..], RecvFlags::DONTWAIT)
            {
                got += n;
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
}
