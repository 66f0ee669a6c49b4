//! The C surface of the MPI executors (`cfutures_mpi.h`, only with the `mpi` feature):
//! `cf_mpi_comm_executor`, `cf_mpi_pool_new`, `cf_mpi_worker_serve`. Argument checks and
//! handles only; the transport is `rt::process::mpi`.

use crate::{
    executor::{cf_executor, cf_init_fn, put_executor},
    rt::{
        pool::{Config, Pool, Runner},
        process::{
            ProcShared,
            mpi::{MpiError, MpiTransport, dup_comm, note_thread_level, serve_comm, spawn::spawn},
        },
    },
    status::*,
};
use mpi::ffi::MPI_Comm;
use std::ffi::{CStr, c_char, c_int, c_void};

/// Most worker ranks an MPI executor drives (one proxy thread each).
const MAX_RANKS: usize = crate::executor::CF_MAX_WORKERS;

/// Options of `cf_mpi_pool_new`; all-zero (`{0}`) means every default.
#[repr(C)]
pub struct cf_mpi_options {
    /// Worker processes to spawn; 0: the MPI universe size less one, at least 1. At most
    /// `CF_MAX_WORKERS`.
    pub max_workers: usize,
    /// The program the workers run; NULL: this program (`/proc/self/exe`) with this
    /// program's own arguments. Its `main` must begin with `cf_mpi_worker_serve`.
    pub command: *const c_char,
    /// NULL-terminated arguments for `command` (not its name); NULL: none. Ignored when
    /// `command` is NULL.
    pub argv: *const *mut c_char,
    /// Run once in each worker before its first task (found there by object and
    /// offset); NULL for none. If it fails (`cf_raise`), the executor is broken, as a
    /// process pool's.
    pub initializer: cf_init_fn,
    /// Passed to `initializer`, as a pointer-sized value.
    pub initarg: *mut c_void,
}

/// mpi4py's `MPICommExecutor`: collective over `comm` (every rank of it calls this, with
/// the same `root`).
///
/// On `root`, `*out` becomes an executor whose workers are the other ranks of `comm`
/// (one proxy thread each in this process); free it with `cf_executor_free`. On every
/// other rank, the call serves tasks from `root` until `root` shuts that executor down
/// (`cf_executor_shutdown` or `cf_executor_free`), then returns `CF_END` and sets `*out`
/// to NULL.
///
/// The executor is a process pool in all but how it reaches its workers: every function
/// of `cfutures.h` works on it and on its futures. `arg` and results of `cf_submit`
/// travel as pointer-sized integers; byte tasks carry their data. Functions travel as
/// (object file, offset): every rank must run the same build of the program and its
/// shared libraries; a function in no loaded object is `CF_INVALID_ARGUMENT` at submit.
/// `cf_raise` in a worker comes back as `CF_TASK_FAILED` with its code and message.
/// Deadlines (`cf_task.timeout`) behave as on a thread pool: a running task is not
/// stopped; its future finishes with `CF_DEADLINE` and its result is discarded. Tasks
/// handed ahead to a busy rank (up to 8) count as running and cannot be cancelled, as on
/// a process pool. Continuations of its futures run in this process; the executor
/// itself as `cf_future_then`'s `ex` is `CF_INVALID_ARGUMENT`, as a process pool is, and
/// so are `cf_executor_terminate_workers` and `_kill_workers` on it. A rank that dies
/// takes the MPI job with it (MPI's default error handler): no worker is replaced.
///
/// MPI must be initialized, with `MPI_THREAD_MULTIPLE` (recommended: the root's proxy
/// threads call MPI at once) or `MPI_THREAD_SERIALIZED` (the library then serialises
/// its MPI calls); the executor must be freed before `MPI_Finalize`. Its messages go on
/// a duplicate of `comm` (made here, collectively), so they never meet the program's.
/// Waiting for messages polls with back-off (see the README, "Across machines").
///
/// Returns `CF_OK` on root; `CF_END` on the other ranks once served; the same on every
/// rank: `CF_INVALID_ARGUMENT` for NULL `out`, `MPI_COMM_NULL`, an intercommunicator, a
/// `root` outside `[0, size)`, or a communicator of one rank (no worker);
/// `CF_INVALID_STATE` if MPI is not initialized (or finalized) or gives less than
/// `MPI_THREAD_SERIALIZED` (on root); `CF_OS_ERROR` if `MPI_Comm_dup` fails.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cf_mpi_comm_executor(
    comm: MPI_Comm,
    root: c_int,
    out: *mut *mut cf_executor,
) -> cf_status {
    ffi_boundary! {
        try_nonnull!(out);
        let (dup, size, rank) = match dup_comm(comm, root) {
            Ok(x) => x,
            Err(e) => return error_status(e),
        };
        if rank != root {
            serve_comm(dup, root);
            // SAFETY: `out` is non-NULL and writable (contract).
            unsafe { *out = std::ptr::null_mut() };
            return CF_END;
        }
        if !note_thread_level() {
            // The workers are serving already: release them at once.
            drop(MpiTransport::new(dup, Vec::new(), None, false));
            return CF_INVALID_STATE;
        }
        let ranks: Vec<c_int> = (0..size).filter(|&r| r != root).collect();
        let t = MpiTransport::new(dup, ranks, None, false);
        make_executor(t, None, false, out)
    }
}

/// mpi4py's `MPIPoolExecutor`: spawns worker processes (`MPI_Comm_spawn`) from the
/// calling process, which needs no `mpirun` (MPI is initialized here, thread-multiple,
/// if it was not, and then finalized at exit).
///
/// `opts` may be NULL (every default, see `cf_mpi_options`). Spawning more workers than
/// the machine has slots works (Open MPI is asked to oversubscribe). The workers run
/// `opts->command` (default: this program) with a last argument added that
/// `cf_mpi_worker_serve`, called first in their `main`, recognises. As root, Open MPI
/// refuses a program started without `mpirun` unless `OMPI_ALLOW_RUN_AS_ROOT=1` and
/// `OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1` are in its environment.
///
/// The executor behaves as `cf_mpi_comm_executor`'s (see there); its workers exit when
/// it is shut down or freed. On success `*out` is a new executor, freed with
/// `cf_executor_free`. Returns `CF_INVALID_ARGUMENT` for NULL `out` or
/// `max_workers > CF_MAX_WORKERS`, `CF_INVALID_STATE` if MPI was finalized or gives less
/// than `MPI_THREAD_SERIALIZED`, `CF_OS_ERROR` if the spawn fails, and an initializer's
/// failure later as for process pools.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cf_mpi_pool_new(
    opts: *const cf_mpi_options,
    out: *mut *mut cf_executor,
) -> cf_status {
    ffi_boundary! {
        try_nonnull!(out);
        // SAFETY: `opts` is NULL or readable (contract).
        let opts = unsafe { opts.as_ref() };
        let (n, command, argv, init) = match opts {
            Some(o) => (o.max_workers, o.command, o.argv, o.initializer.map(|f| (f, o.initarg))),
            None => (0, std::ptr::null(), std::ptr::null(), None),
        };
        if n > MAX_RANKS {
            return CF_INVALID_ARGUMENT;
        }
        if let Some((f, _)) = init
            && crate::rt::process::mpi::symbols::encode(f as usize).is_none()
        {
            return CF_INVALID_ARGUMENT;
        }
        // SAFETY: strings as the contract says.
        let (inter, n) = match unsafe { spawn(n.min(MAX_RANKS), command, argv) } {
            Ok(x) => x,
            Err(e) => return error_status(e),
        };
        let ranks: Vec<c_int> = (0..n as c_int).collect();
        let has_init = init.is_some();
        let t = MpiTransport::new(inter, ranks, init, true);
        make_executor(t, None, has_init, out)
    }
}

/// First thing in `main` of a program that `cf_mpi_pool_new` spawns.
///
/// In a spawned worker (its last argument is the one `cf_mpi_pool_new` adds), it
/// initializes MPI, serves tasks until its pool shuts down, finalizes MPI and returns
/// true: `main` should then return 0. In any other process it returns false at once,
/// making no MPI call. `argc` and `argv` are `main`'s (read only); NULL returns false.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cf_mpi_worker_serve(
    argc: *mut c_int,
    argv: *mut *mut *mut c_char,
) -> bool {
    ffi_boundary! {
        if argc.is_null() || argv.is_null() {
            return false;
        }
        // SAFETY: `main`'s argc and argv (contract).
        let (n, v) = unsafe { (*argc, *argv) };
        if n <= 0 || v.is_null() {
            return false;
        }
        let mut args = Vec::with_capacity(n as usize);
        for i in 0..n as usize {
            // SAFETY: `argc` entries of `argv` are strings (as `main` gets them).
            let a = unsafe { *v.add(i) };
            if a.is_null() {
                break;
            }
            // SAFETY: as above.
            args.push(unsafe { CStr::from_ptr(a) });
        }
        crate::rt::process::mpi::spawn::worker_serve(&args)
    }
}

fn error_status(e: MpiError) -> cf_status {
    match e {
        MpiError::Argument => CF_INVALID_ARGUMENT,
        MpiError::State => CF_INVALID_STATE,
        MpiError::Os => CF_OS_ERROR,
    }
}

fn make_executor(
    t: MpiTransport,
    name: Option<String>,
    has_init: bool,
    out: *mut *mut cf_executor,
) -> cf_status {
    let config = Config {
        max_workers: t.workers().clamp(1, MAX_RANKS),
        name_prefix: name,
        initializer: None,
    };
    let pool: std::sync::Arc<Pool> =
        Pool::new(config, Runner::Process(ProcShared::mpi(t, has_init)));
    put_executor(cf_executor::new(pool), out)
}
