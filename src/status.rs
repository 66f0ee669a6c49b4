//! Status codes (`cf_status`) and their names.

use std::ffi::c_char;

/// The outcome of a call that can fail, and the way a future ended.
///
/// A fixed-width integer rather than a C enum, so that any value C passes in (for
/// example to `cf_status_name`) is defined behaviour. Values are stable: new codes are
/// appended, none is renumbered or reused.
pub type cf_status = u32;

/// Success.
pub const CF_OK: cf_status = 0;
/// The time limit passed first (Python's `TimeoutError`).
pub const CF_TIMEOUT: cf_status = 1;
/// The future was cancelled (Python's `CancelledError`).
pub const CF_CANCELLED: cf_status = 2;
/// The task failed by calling `cf_raise`; the future carries the code and message.
pub const CF_TASK_FAILED: cf_status = 3;
/// The executor broke: an initializer failed, or a worker process died while running
/// the task (Python's `BrokenExecutor`).
pub const CF_BROKEN: cf_status = 4;
/// The executor was shut down (Python's `RuntimeError` from `submit`).
pub const CF_SHUTDOWN: cf_status = 5;
/// An iterator has nothing more (Python's `StopIteration`).
pub const CF_END: cf_status = 6;
/// NULL where a pointer is required, NaN, or a value out of range (`ValueError`).
pub const CF_INVALID_ARGUMENT: cf_status = 7;
/// The call does not fit the object's state, e.g. `cf_future_set_result` on a done
/// future (Python's `InvalidStateError`).
pub const CF_INVALID_STATE: cf_status = 8;
/// Memory could not be allocated: the call did nothing. As a future's outcome: the
/// outcome could not be stored for lack of memory (see the header's preamble).
pub const CF_NO_MEMORY: cf_status = 9;
/// The operating system refused a thread, process or pipe; `errno` is kept.
pub const CF_OS_ERROR: cf_status = 10;
/// An internal error in cfutures (a caught Rust panic). Never expected; please report.
pub const CF_PANIC: cf_status = 11;
/// A task's own time limit (`cf_task.timeout`) passed: it had not started by then (it
/// never runs), or it ran past it (on a process pool its worker process is killed; on a
/// thread pool it runs on and its result is discarded through `result_free`). An outcome
/// of the future, never the expiry of a wait; `cf_future_exception` gives the code
/// `ETIMEDOUT` and a message saying which limit passed and where the task was.
pub const CF_DEADLINE: cf_status = 12;

/// Builds the `(code, NUL-terminated name)` table from the constants' own names.
macro_rules! name_table {
    ($($name:ident),*) => { &[$(($name, concat!(stringify!($name), "\0"))),*] };
}

/// `(status, NUL-terminated name)` for every code, in code order.
const NAMES: &[(cf_status, &str)] = name_table!(
    CF_OK,
    CF_TIMEOUT,
    CF_CANCELLED,
    CF_TASK_FAILED,
    CF_BROKEN,
    CF_SHUTDOWN,
    CF_END,
    CF_INVALID_ARGUMENT,
    CF_INVALID_STATE,
    CF_NO_MEMORY,
    CF_OS_ERROR,
    CF_PANIC,
    CF_DEADLINE
);

/// The name of a status code, such as `"CF_TIMEOUT"`.
///
/// Returns a static NUL-terminated string, never NULL; for a value that is not a
/// `cf_status` code it returns `"CF_UNKNOWN_STATUS"`. Do not free the result.
#[unsafe(no_mangle)]
pub extern "C" fn cf_status_name(s: cf_status) -> *const c_char {
    ffi_boundary! {
        NAMES
            .iter()
            .find(|(code, _)| *code == s)
            .map_or("CF_UNKNOWN_STATUS\0", |(_, name)| name)
            .as_ptr()
            .cast()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    #[test]
    fn names_match_codes_and_are_dense() {
        for (i, (code, _)) in NAMES.iter().enumerate() {
            assert_eq!(*code as usize, i);
        }
        let name = |s| {
            unsafe { CStr::from_ptr(cf_status_name(s)) }
                .to_str()
                .unwrap()
        };
        assert_eq!(name(CF_OK), "CF_OK");
        assert_eq!(name(CF_OS_ERROR), "CF_OS_ERROR");
        assert_eq!(name(999), "CF_UNKNOWN_STATUS");
    }
}
