//! Process pools: worker processes forked from a per-pool fork server, each driven by one
//! proxy thread of an ordinary thread pool (`pool::Runner::Process`). `ProcShared` is
//! what the pool holds; the work is done by the modules below, one job each:
//!
//! | module | its job | forks? |
//! |---|---|---|
//! | `wire` | the frame format: kinds, encoding and decoding of tasks and outcomes | no |
//! | `io` | descriptors of ours (`Fd`), whole sends, the read buffer, descriptor passing | no |
//! | `arena` | shared memory for large byte payloads: the mapping and its ring of slots | no |
//! | `link` | the parent's end of one worker's channel: flow control, sending one task | no |
//! | `proxy` | the proxy thread's pipeline over a `Link`; workers come from a `Transport` | no |
//! | `worker` | the worker's loop: initializer, then tasks in order, answered in order | no |
//! | `server` | the fork server, its control protocol, and `ForkServer: Transport` | yes |
//!
//! A second transport reuses all but `server`: it implements `proxy::Transport` (start a
//! worker and hand back a `Link`; end and reap one) and runs `worker::run` on its side.
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
//!   `Link`; the worker's mapping dies with it). The proxy copies the input into a
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
//!   (the worker answers in order), so the arena is a ring (`arena::Arena`), back at offset 0
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
//!   worker (`proxy::Proxy::drive`), which reads and answers them in order; a small task then costs a
//!   few system calls per batch instead of a round trip each. The socket bytes in flight
//!   stay within half the socket's buffer (`link::Link::may_send`), and a larger frame
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

mod arena;
mod deadline;
pub(crate) mod io;
mod link;
#[cfg(feature = "mpi")]
pub(crate) mod mpi;
mod proxy;
mod server;
mod stream;
mod wire;
mod worker;

pub(crate) use arena::SHM_MIN;
pub(crate) use link::Link;

use super::{
    context::UserError,
    future::CoreRef,
    owned::deadline_outcome,
    pool::{InitFn, Pool},
    sync::{AtomicU32, Ordering},
};
use deadline::Registry;
use proxy::{Proxy, Transport};
use server::ForkServer;
use std::{ffi::c_void, io as stdio};

/// The parent's handle on a process pool: its fork server and its settings. The pool
/// (`pool::Runner::Process`) calls it from `submit` and from each proxy thread.
pub(crate) struct ProcShared {
    server: Workers,
    max_tasks_per_child: usize,
    has_initializer: bool,
    /// The tasks with a deadline that are in workers now (`deadline`).
    registry: Registry,
    /// The signal `stop_workers` sent (0: not stopped).
    stopped: AtomicU32,
}

impl ProcShared {
    /// Forks the fork server. The program state workers start from is this moment's.
    pub(crate) fn new(
        init: Option<(InitFn, *mut c_void)>,
        max_tasks_per_child: usize,
    ) -> stdio::Result<ProcShared> {
        let init = init.map(|(f, a)| (f, a as usize));
        Ok(ProcShared {
            server: Workers::Fork(ForkServer::start(init)?),
            max_tasks_per_child,
            has_initializer: init.is_some(),
            registry: Registry::new(),
            stopped: AtomicU32::new(0),
        })
    }

    /// An MPI executor's: its worker ranks (`mpi::MpiTransport`).
    #[cfg(feature = "mpi")]
    pub(crate) fn mpi(t: mpi::MpiTransport, has_initializer: bool) -> ProcShared {
        ProcShared {
            server: Workers::Mpi(t),
            max_tasks_per_child: 0,
            has_initializer,
            registry: Registry::new(),
            stopped: AtomicU32::new(0),
        }
    }

    /// Whether the workers are MPI ranks (not forked from this process).
    #[inline]
    pub(crate) fn is_mpi(&self) -> bool {
        match self.server {
            Workers::Fork(_) => false,
            #[cfg(feature = "mpi")]
            Workers::Mpi(_) => true,
        }
    }

    /// Whether a task's function `f` can reach the workers: on MPI, only a function in
    /// a loaded object (`mpi::symbols`); any function reaches a forked worker.
    #[cfg(feature = "mpi")]
    pub(crate) fn accepts_fn(&self, f: usize) -> bool {
        !self.is_mpi() || mpi::symbols::encode(f).is_some()
    }

    #[cfg_attr(
        not(feature = "mpi"),
        allow(
            clippy::infallible_destructuring_match,
            reason = "one variant without MPI"
        )
    )]
    fn proxy(&self) -> Proxy<'_> {
        let transport: &dyn Transport = match &self.server {
            Workers::Fork(s) => s,
            #[cfg(feature = "mpi")]
            Workers::Mpi(t) => t,
        };
        Proxy {
            transport,
            max_tasks_per_child: self.max_tasks_per_child,
            has_initializer: self.has_initializer,
            registry: &self.registry,
            stopped: &self.stopped,
        }
    }

    /// Starts a worker process (called from `submit` for a new proxy thread, which then
    /// `adopt_worker`s it).
    pub(crate) fn spawn_worker(&self, name: &str) -> stdio::Result<Link> {
        self.proxy().transport.start(name)
    }

    /// On the proxy thread: takes charge of a new worker and waits for its initializer.
    /// `Err` only when the initializer failed (the pool is then broken).
    pub(crate) fn adopt_worker(&self, w: Link) -> Result<(), UserError> {
        self.proxy().adopt(w)
    }

    /// On the proxy thread: runs `first`, then what `more` and `last` hand out, through
    /// this thread's worker (`proxy::Proxy::drive`).
    pub(crate) fn drive(
        &self,
        pool: &Pool,
        first: CoreRef,
        more: &mut dyn FnMut() -> Option<CoreRef>,
        last: &mut dyn FnMut() -> Option<CoreRef>,
    ) {
        // An MPI pool's proxies send functions as (object, offset) codes.
        #[cfg(feature = "mpi")]
        let _codes = self.is_mpi().then(mpi::symbols::Scope::enter);
        self.proxy().drive(pool, first, more, last);
    }

    /// Ends a worker that never got a proxy thread: kill it and reap it.
    pub(crate) fn discard_worker(&self, w: Link) {
        self.proxy().bury(w);
    }

    /// On the proxy thread, as it exits: retires its worker, if any.
    pub(crate) fn retire_worker(&self) {
        self.proxy().retire_own();
    }

    /// The timer's hook for a task with a deadline (`cf_task.timeout`) that is RUNNING
    /// on this pool when its deadline passes: taken by a proxy, so about to be sent,
    /// sent ahead, running in a worker process, or ended there with its answer on the
    /// way. Kills the worker if it runs the task, and finishes the future with
    /// `CF_DEADLINE` saying where the task was (see `deadline`). Called on the timer
    /// thread, holding no lock (the future's callbacks run here).
    pub(crate) fn deadline_passed_running(&self, core: &CoreRef, timeout: f64) {
        let at = self.registry.strike(core);
        core.expire(true, |_| deadline_outcome(timeout, at));
    }

    /// `cf_executor_terminate_workers` / `kill_workers`: from now on no worker is
    /// started and no task is sent again (`proxy::Proxy::replace`); `signal` goes to every
    /// live worker (through the fork server, which has not reaped them, so no pid is
    /// reused). `false` if the workers were stopped before (nothing is done).
    pub(crate) fn stop_workers(&self, signal: i32) -> bool {
        if self
            .stopped
            .compare_exchange(0, signal as u32, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return false;
        }
        match &self.server {
            Workers::Fork(s) => s.signal_all(signal),
            // Refused before (`Pool::stop_workers`): ranks are not our children.
            #[cfg(feature = "mpi")]
            Workers::Mpi(_) => return false,
        }
        true
    }

    /// Whether `stop_workers` was called.
    pub(crate) fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire) != 0
    }

    /// Closes the control socket and reaps the server (which reaps any worker left).
    pub(crate) fn close_server(&self) {
        match &self.server {
            Workers::Fork(s) => s.close(),
            #[cfg(feature = "mpi")]
            Workers::Mpi(t) => t.close(),
        }
    }
}

/// Where a process pool's workers come from.
enum Workers {
    /// Forked by the pool's fork server.
    Fork(ForkServer),
    /// The ranks of an MPI job.
    #[cfg(feature = "mpi")]
    Mpi(mpi::MpiTransport),
}
