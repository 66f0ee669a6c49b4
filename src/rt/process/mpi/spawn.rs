//! `cf_mpi_pool_new`'s MPI side: initializing MPI in a program started without `mpirun`,
//! spawning the worker processes (`MPI_Comm_spawn`), and a spawned worker's recognising
//! itself (`cf_mpi_worker_serve`).
//!
//! A spawned worker is told apart by its last argument, `WORKER_FLAG`, which the parent
//! appends to the worker's arguments: `cf_mpi_worker_serve` needs no MPI call to answer
//! "no" in any other process.

use super::{Comm, MpiError, finalized, initialized, note_thread_level, serve};
use mpi::ffi;
use std::{
    ffi::{CStr, CString, c_char, c_int},
    io,
    mem::MaybeUninit,
    ptr,
    sync::Once,
};

/// The argument that marks a spawned worker (last of its argv).
pub(crate) const WORKER_FLAG: &str = "--cfutures-mpi-worker";

/// Initializes MPI (thread-multiple) if nobody did; then checks the thread level.
fn ensure_init() -> Result<(), MpiError> {
    if finalized() {
        return Err(MpiError::State);
    }
    if !initialized() {
        let mut provided: c_int = 0;
        // SAFETY: MPI is not initialized; NULL argc/argv are allowed.
        let rc = unsafe {
            ffi::MPI_Init_thread(
                ptr::null_mut(),
                ptr::null_mut(),
                ffi::RSMPI_THREAD_MULTIPLE,
                &mut provided,
            )
        };
        if rc != 0 {
            return Err(MpiError::Os);
        }
        // We started MPI, so we end it, at exit (after which no MPI call is made: every
        // MPI executor checks `finalized`).
        static AT_EXIT: Once = Once::new();
        AT_EXIT.call_once(|| {
            extern "C" fn finalize() {
                if initialized() && !finalized() {
                    // SAFETY: MPI is initialized and not finalized.
                    unsafe { ffi::MPI_Finalize() };
                }
            }
            // SAFETY: registering a plain function.
            unsafe { libc::atexit(finalize) };
        });
    }
    if note_thread_level() {
        Ok(())
    } else {
        Err(MpiError::State)
    }
}

/// The number of workers when none is asked for: the universe size less one, at least 1.
fn default_workers() -> usize {
    let mut val: *mut c_int = ptr::null_mut();
    let mut flag: c_int = 0;
    // SAFETY: MPI is initialized; the attribute is a pointer to an int.
    unsafe {
        ffi::MPI_Comm_get_attr(
            ffi::RSMPI_COMM_WORLD,
            ffi::MPI_UNIVERSE_SIZE as c_int,
            (&raw mut val).cast(),
            &mut flag,
        )
    };
    let universe = if flag != 0 && !val.is_null() {
        // SAFETY: MPI's attribute value.
        unsafe { *val }
    } else {
        1
    };
    (universe as usize).saturating_sub(1).max(1)
}

/// This program's path and arguments (after argv[0]), from /proc.
fn own_command() -> io::Result<(CString, Vec<CString>)> {
    let exe = std::fs::canonicalize("/proc/self/exe")?;
    let cmd = CString::new(exe.into_os_string().into_encoded_bytes()).map_err(io::Error::other)?;
    let line = std::fs::read("/proc/self/cmdline")?;
    let args = line
        .split(|&b| b == 0)
        .skip(1)
        .filter(|a| !a.is_empty())
        .map(|a| CString::new(a).expect("split at NUL"))
        .collect();
    Ok((cmd, args))
}

/// Spawns `n` workers running `command` (NULL: this program) with `argv`; returns the
/// intercommunicator and the number of workers.
///
/// # Safety
/// `command` is NULL or a NUL-terminated string; `argv` is NULL or a NULL-terminated
/// array of them.
pub(crate) unsafe fn spawn(
    n: usize,
    command: *const c_char,
    argv: *const *mut c_char,
) -> Result<(Comm, usize), MpiError> {
    ensure_init()?;
    let n = if n == 0 { default_workers() } else { n };
    let (cmd, mut args) = if command.is_null() {
        own_command().map_err(|_| MpiError::Os)?
    } else {
        // SAFETY: by the caller's guarantee.
        let cmd = unsafe { CStr::from_ptr(command) }.to_owned();
        let mut args = Vec::new();
        let mut p = argv;
        // SAFETY: a NULL-terminated array of strings (caller's guarantee).
        while !p.is_null() && unsafe { !(*p).is_null() } {
            // SAFETY: as above.
            args.push(unsafe { CStr::from_ptr(*p) }.to_owned());
            // SAFETY: as above: not past the terminating NULL.
            p = unsafe { p.add(1) };
        }
        (cmd, args)
    };
    args.push(CString::new(WORKER_FLAG).expect("no NUL"));
    let mut argv_c: Vec<*mut c_char> = args.iter().map(|a| a.as_ptr().cast_mut()).collect();
    argv_c.push(ptr::null_mut());
    let mut info = MaybeUninit::<ffi::MPI_Info>::uninit();
    let mut inter = MaybeUninit::<ffi::MPI_Comm>::uninit();
    let mut errcodes = vec![0 as c_int; n];
    // SAFETY: MPI is initialized; every pointer is valid for the calls.
    let rc = unsafe {
        ffi::MPI_Info_create(info.as_mut_ptr());
        let mut info = info.assume_init();
        // More workers than free slots (a 2-core machine) must work: oversubscribe.
        ffi::MPI_Info_set(info, c"map_by".as_ptr(), c":OVERSUBSCRIBE".as_ptr());
        let rc = super::call(|| {
            ffi::MPI_Comm_spawn(
                cmd.as_ptr(),
                argv_c.as_mut_ptr(),
                n as c_int,
                info,
                0,
                ffi::RSMPI_COMM_SELF,
                inter.as_mut_ptr(),
                errcodes.as_mut_ptr(),
            )
        });
        ffi::MPI_Info_free(&mut info);
        rc
    };
    if rc != 0 || errcodes.iter().any(|&e| e != 0) {
        return Err(MpiError::Os);
    }
    // SAFETY: filled by the successful spawn.
    Ok((Comm(unsafe { inter.assume_init() }), n))
}

/// `cf_mpi_worker_serve`: in a worker spawned by `spawn` (its last argument is
/// `WORKER_FLAG`), initializes MPI, serves the parent until it stops, finalizes MPI and
/// returns `true`; elsewhere returns `false` without an MPI call.
pub(crate) fn worker_serve(args: &[&CStr]) -> bool {
    if args
        .last()
        .is_none_or(|a| a.to_bytes() != WORKER_FLAG.as_bytes())
    {
        return false;
    }
    let mut provided: c_int = 0;
    if !initialized() {
        // SAFETY: MPI is not initialized.
        unsafe {
            ffi::MPI_Init_thread(
                ptr::null_mut(),
                ptr::null_mut(),
                ffi::RSMPI_THREAD_MULTIPLE,
                &mut provided,
            )
        };
    }
    note_thread_level();
    let mut parent = MaybeUninit::<ffi::MPI_Comm>::uninit();
    // SAFETY: MPI is initialized.
    unsafe { ffi::MPI_Comm_get_parent(parent.as_mut_ptr()) };
    // SAFETY: filled by MPI_Comm_get_parent.
    let mut parent = unsafe { parent.assume_init() };
    // SAFETY: a constant of rsmpi's shim.
    if parent == unsafe { ffi::RSMPI_COMM_NULL } {
        return false;
    }
    serve(Comm(parent), 0);
    // SAFETY: the parent intercommunicator, disconnected by both sides; then MPI ends.
    unsafe {
        ffi::MPI_Comm_disconnect(&mut parent);
        ffi::MPI_Finalize();
    }
    true
}
