//! The MPI transport: the process pool's proxies and frames, with workers that are the
//! ranks of an MPI job instead of forked children (`cfutures_mpi.h`).
//!
//! | module | its job |
//! |---|---|
//! | `stream` | one rank's channel as a byte stream of MPI messages; how a thread waits |
//! | `symbols` | function identity across processes: (object, offset) codes |
//! | this file | `MpiTransport: Transport` (sessions, ranks), a worker rank's loop, making the communicators |
//!
//! # Design
//!
//! - The root's pool is a process pool (`pool::Runner::Process`) whose `Transport` is
//!   `MpiTransport`: one proxy thread per worker rank runs the same pipeline
//!   (`proxy::Proxy::drive`) over a `Link` whose channel is an `MpiStream`, so frames,
//!   batching, ordering, failures and cancellation are the process pools' own. There is
//!   no arena: large inputs go as one message each, received in place.
//! - Communicator: `cf_mpi_comm_executor` duplicates the caller's (collectively), so our
//!   messages never meet the program's; `cf_mpi_pool_new` uses the intercommunicator of
//!   `MPI_Comm_spawn`. Worker ranks are peers in it (remote ranks of an intercomm).
//! - Sessions: a proxy's `start` takes a free worker rank and sends it `START` (tag
//!   `CTRL`: the initializer's code and argument); the rank runs `worker::run` on its
//!   stream until EOF (the parent's end dropped: retired) and waits for the next
//!   `CTRL`. `close` (shutdown, or drop) sends every rank `STOP`, after which a worker
//!   rank leaves its loop: `cf_mpi_comm_executor` returns `CF_END` there, and
//!   `cf_mpi_worker_serve` finalizes MPI. The initializer runs once per rank, in its
//!   first session.
//! - A rank that dies takes the job with it (MPI's default error handler): there is no
//!   replacing a worker. A rank whose channel broke (a malformed frame) is not used
//!   again; a pool left with no rank fails its tasks with `CF_BROKEN`.
//! - Threads: the root calls MPI from its proxy threads at once, which needs
//!   `MPI_THREAD_MULTIPLE`; with `MPI_THREAD_SERIALIZED` every call takes one lock
//!   (`call`); below that, making an executor is `CF_INVALID_STATE`. A worker rank calls
//!   MPI from the serving thread only.

pub(crate) mod spawn;
pub(crate) mod stream;
pub(crate) mod symbols;

pub(crate) use stream::{Comm, MpiStream};

use super::{link::Link, proxy::Transport, stream::Channel, wire::send_init_failed, worker};
use crate::rt::{
    context::{Raised, UserError},
    pool::InitFn,
};
use mpi::ffi;
use std::{
    ffi::{CString, c_int, c_void},
    io,
    mem::MaybeUninit,
    sync::{
        Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicU8, Ordering},
    },
};
use stream::{mrecv, probe_wait};

/// The tag of control messages (root to worker rank).
const CTRL: c_int = 0x0cf2;
const C_STOP: u8 = 0;
const C_START: u8 = 1;
/// Frame bytes a proxy keeps in flight in a rank (`Link::may_send`). An MPI stream never
/// blocks both ways (see `stream`), so this is not about deadlock: it lets the next
/// 1 MiB frame go while the rank runs its current task (so the rank finds it at once),
/// while a larger frame goes only to a rank with nothing in flight, so that the proxy's
/// send rarely waits out a running task.
const BUDGET: usize = (2 << 20) + (64 << 10);

/// 0: not known yet; 1: MPI_THREAD_MULTIPLE; 2: serialise calls.
static LEVEL: AtomicU8 = AtomicU8::new(0);
static SERIAL: Mutex<()> = Mutex::new(());

/// Runs one MPI call, under the global lock unless MPI is thread-multiple.
pub(crate) fn call<R>(f: impl FnOnce() -> R) -> R {
    let _g: Option<MutexGuard<'_, ()>> = if LEVEL.load(Ordering::Relaxed) == 1 {
        None
    } else {
        Some(SERIAL.lock().unwrap_or_else(|e| e.into_inner()))
    };
    f()
}

/// Whether MPI calls may be made from several threads at once.
pub(crate) fn multiple() -> bool {
    LEVEL.load(Ordering::Relaxed) == 1
}

/// Whether MPI was initialized.
pub(crate) fn initialized() -> bool {
    let mut flag: c_int = 0;
    // SAFETY: may be called at any time.
    unsafe { ffi::MPI_Initialized(&mut flag) };
    flag != 0
}

/// Whether MPI was finalized (no MPI call is allowed then).
pub(crate) fn finalized() -> bool {
    let mut flag: c_int = 0;
    // SAFETY: may be called at any time.
    unsafe { ffi::MPI_Finalized(&mut flag) };
    flag != 0
}

/// Records the thread level MPI gives; `false` when it is below
/// `MPI_THREAD_SERIALIZED` (the root's proxies could not call MPI).
pub(crate) fn note_thread_level() -> bool {
    let mut provided: c_int = 0;
    // SAFETY: MPI is initialized (checked by the callers).
    unsafe { ffi::MPI_Query_thread(&mut provided) };
    // SAFETY: constants of rsmpi's shim.
    let (multiple, serialized) =
        unsafe { (ffi::RSMPI_THREAD_MULTIPLE, ffi::RSMPI_THREAD_SERIALIZED) };
    LEVEL.store(if provided >= multiple { 1 } else { 2 }, Ordering::Relaxed);
    provided >= serialized
}

fn check(rc: c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::other(format!("MPI error {rc}")))
    }
}

fn send_ctl(comm: Comm, rank: c_int, msg: &[u8]) -> io::Result<()> {
    call(|| {
        // SAFETY: `msg` is read during the call (a small message, sent eagerly or
        // buffered: the worker rank is in its control loop or soon will be).
        check(unsafe {
            ffi::MPI_Send(
                msg.as_ptr().cast(),
                msg.len() as c_int,
                ffi::RSMPI_UINT8_T,
                rank,
                CTRL,
                comm.0,
            )
        })
    })
}

/// The worker ranks of an MPI executor, as its proxies see them.
pub(crate) struct MpiTransport {
    comm: Comm,
    /// Every worker rank (told `STOP` at `close`), and those not serving a proxy now.
    ranks: Vec<c_int>,
    free: Mutex<Vec<c_int>>,
    /// The initializer as codes (function, argument), sent with each `START`.
    init: Option<(u64, u64)>,
    closed: AtomicBool,
    /// An intercommunicator from `MPI_Comm_spawn` (disconnected at `close`), or a
    /// duplicate (freed).
    spawned: bool,
}

impl MpiTransport {
    /// Over `comm` (ours now), with these worker ranks.
    pub(crate) fn new(
        comm: Comm,
        ranks: Vec<c_int>,
        init: Option<(InitFn, *mut c_void)>,
        spawned: bool,
    ) -> MpiTransport {
        let init = init.map(|(f, a)| (symbols::encode(f as usize).unwrap_or(0), a as u64));
        let mut free = ranks.clone();
        free.reverse(); // taken from the end: lowest rank first
        MpiTransport {
            comm,
            ranks,
            free: Mutex::new(free),
            init,
            closed: AtomicBool::new(false),
            spawned,
        }
    }

    /// How many worker ranks there are.
    pub(crate) fn workers(&self) -> usize {
        self.ranks.len()
    }

    /// Tells every worker rank to stop and lets the communicator go. Once; after every
    /// proxy has retired its rank (shutdown with wait) or at the executor's drop.
    pub(crate) fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) || finalized() {
            return;
        }
        for &r in &self.ranks {
            let _ = send_ctl(self.comm, r, &[C_STOP]);
        }
        let mut comm = self.comm.0;
        call(|| {
            // SAFETY: our communicator, not used after this.
            unsafe {
                if self.spawned {
                    ffi::MPI_Comm_disconnect(&mut comm);
                } else {
                    ffi::MPI_Comm_free(&mut comm);
                }
            }
        });
    }
}

impl Drop for MpiTransport {
    fn drop(&mut self) {
        self.close();
    }
}

impl Transport for MpiTransport {
    fn start(&self, _name: &str) -> io::Result<Link> {
        let rank = self
            .free
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .ok_or_else(|| io::Error::other("no MPI worker rank is left"))?;
        let mut m = vec![C_START];
        let (f, a) = self.init.unwrap_or((0, 0));
        m.push(u8::from(self.init.is_some()));
        m.extend_from_slice(&f.to_ne_bytes());
        m.extend_from_slice(&a.to_ne_bytes());
        send_ctl(self.comm, rank, &m)?;
        let stream = MpiStream::parent(self.comm, rank);
        Ok(Link::over(Channel::Mpi(stream), rank, BUDGET))
    }

    fn end(&self, id: i32, kill: bool) -> Option<String> {
        if !kill {
            self.free.lock().unwrap_or_else(|e| e.into_inner()).push(id);
        }
        None
    }
}

/// A worker rank's life: sessions for the root `parent` of `comm` until `STOP`.
pub(crate) fn serve(comm: Comm, parent: c_int) {
    let _codes = symbols::Scope::enter();
    let mut first = true;
    loop {
        let Ok((msg, len)) = probe_wait(comm, parent, CTRL) else {
            return;
        };
        let mut m = vec![0u8; len.max(1)];
        // SAFETY: `m` has room for `len` bytes.
        if unsafe { mrecv(msg, m.as_mut_ptr(), len) }.is_err() || len == 0 || m[0] == C_STOP {
            return;
        }
        if len < 18 {
            continue; // nothing we sent
        }
        let f = u64::from_ne_bytes(m[2..10].try_into().expect("8 bytes"));
        let arg = u64::from_ne_bytes(m[10..18].try_into().expect("8 bytes"));
        let stream = MpiStream::worker(comm, parent);
        let init = if m[1] != 0 && first {
            match symbols::decode(f) {
                // SAFETY: the root's `cf_init_fn`, found at the same place in this same
                // build of the program.
                Some(f) => Some((
                    unsafe { std::mem::transmute::<usize, InitFn>(f) },
                    arg as usize,
                )),
                None => {
                    let _ = send_init_failed(
                        &stream,
                        &UserError::Raised(Raised {
                            code: 0,
                            message: CString::new(
                                "the initializer is in no object loaded in the worker rank \
                                 (every rank must run the same build of the program)",
                            )
                            .ok()
                            .map(Into::into),
                            payload: None,
                        }),
                    );
                    stream.drain_to_eof();
                    continue;
                }
            }
        } else {
            None
        };
        first = false;
        worker::run(&stream, init);
        stream.end_early();
        stream.drain_to_eof();
    }
}

/// `cf_mpi_comm_executor`'s part in MPI: checks, and duplicates `comm` (collective).
/// `Ok((dup, size, rank))`; `Err` with the status to return.
pub(crate) fn dup_comm(comm: ffi::MPI_Comm, root: c_int) -> Result<(Comm, c_int, c_int), MpiError> {
    if !initialized() || finalized() {
        return Err(MpiError::State);
    }
    // SAFETY: a constant of rsmpi's shim.
    if comm == unsafe { ffi::RSMPI_COMM_NULL } {
        return Err(MpiError::Argument);
    }
    let (mut size, mut rank, mut inter) = (0, 0, 0);
    // SAFETY: a communicator handle from the caller (contract), out-parameters.
    unsafe {
        check(ffi::MPI_Comm_test_inter(comm, &mut inter)).map_err(|_| MpiError::Argument)?;
        check(ffi::MPI_Comm_size(comm, &mut size)).map_err(|_| MpiError::Argument)?;
        check(ffi::MPI_Comm_rank(comm, &mut rank)).map_err(|_| MpiError::Argument)?;
    }
    if inter != 0 || root < 0 || root >= size || size < 2 {
        return Err(MpiError::Argument);
    }
    let mut dup = MaybeUninit::<ffi::MPI_Comm>::uninit();
    // SAFETY: collective over `comm`, which every rank calls (contract).
    check(unsafe { ffi::MPI_Comm_dup(comm, dup.as_mut_ptr()) }).map_err(|_| MpiError::Os)?;
    // SAFETY: filled by the successful dup.
    Ok((Comm(unsafe { dup.assume_init() }), size, rank))
}

/// A worker rank of `cf_mpi_comm_executor`: serves, then frees the duplicate.
pub(crate) fn serve_comm(dup: Comm, root: c_int) {
    serve(dup, root);
    let mut c = dup.0;
    // SAFETY: our duplicate, not used after this.
    unsafe { ffi::MPI_Comm_free(&mut c) };
}

/// Why MPI could not give an executor.
pub(crate) enum MpiError {
    /// Bad communicator or root.
    Argument,
    /// MPI not initialized (or finalized), or too low a thread level.
    State,
    /// An MPI call failed.
    Os,
}
