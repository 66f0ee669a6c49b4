//! `cf_map_*`: Python's `Executor.map`.

use crate::{
    executor::{cf_bytes_fn, cf_executor, copy_bytes, executor_pool},
    ffi::handle::{box_fill_into_raw, box_take, try_box_uninit},
    future::cf_fn,
    rt::{
        lazy::{Feed, Source},
        map::{Item, Items, MapIter},
        time::Deadline,
    },
    status::*,
};
use std::ffi::{c_char, c_int, c_void};

/// An ongoing map: results of one function over many inputs, in input order.
///
/// Owned by the caller: created by `cf_map_new`, `cf_map_bytes_new`, `cf_map_lazy_new`
/// or `cf_map_bytes_lazy_new`, freed with `cf_map_free`. Use one map from one thread at a
/// time (any thread).
///
/// Methods: `cf_map_next`, `cf_map_next_bytes`, `cf_map_free`.
pub struct cf_map {
    inner: MapIter,
}

/// A byte buffer: `len` bytes at `data`. As an input it is borrowed for the call (the
/// bytes are copied); as a result it is lent out by its owner (see each function).
#[repr(C)]
pub struct cf_bytes {
    /// The first byte; may be NULL when `len` is 0.
    pub data: *const c_void,
    /// How many bytes.
    pub len: usize,
}

fn start(
    ex: *mut cf_executor,
    items: Items,
    chunksize: usize,
    timeout: f64,
    out: *mut *mut cf_map,
) -> cf_status {
    let Some(deadline) = Deadline::from_timeout(timeout) else {
        return CF_INVALID_ARGUMENT;
    };
    // SAFETY: `ex` is NULL or a live executor (contract).
    let Some(pool) = (unsafe { executor_pool(ex) }) else {
        return CF_INVALID_ARGUMENT;
    };
    // The handle's memory first: once items are submitted, there is no failing.
    let Some(room) = try_box_uninit::<cf_map>() else {
        return CF_NO_MEMORY;
    };
    match MapIter::start(pool, items, chunksize, deadline) {
        Ok(inner) => {
            // SAFETY: `out` was checked non-NULL by the caller and is writable.
            unsafe { *out = box_fill_into_raw(room, cf_map { inner }) };
            CF_OK
        }
        Err(e) => e.status(),
    }
}

/// Runs `fn(args[i])` for `n` inputs and gives the results in input order: Python's
/// `Executor.map`.
///
/// Every item is submitted before the call returns, `chunksize` items per task (0 means
/// 1): a chunk runs its items one after the other on one worker, which makes many small
/// items much cheaper. `args` is read during the call only (NULL allowed when `n` is 0):
/// the library copies the pointers, and each chunk writes its results over its copy.
/// The time limit `timeout` counts from this call. On `CF_OK`, `*out` is a new map, freed
/// with `cf_map_free`.
///
/// Memory: a copy of 2 MiB or more (262,144 items on 64-bit) gets a mapping of its own,
/// rounded up to whole 2 MiB huge pages and advised to use them (`MADV_HUGEPAGE`).
/// When the map is done with it, the library keeps that mapping, if it is no larger than
/// 16 MiB, for the next map that fits in it, whose copy then costs no page fault; it stays
/// with the process until then (as memory given back to `malloc` does), and a larger
/// mapping kept later replaces it.
///
/// Returns `CF_INVALID_ARGUMENT` for NULL `ex`, `fn` or `out`, NULL `args` with `n > 0`,
/// or a NaN timeout; `CF_NO_MEMORY` when the map's handle, its task list or the copy of
/// the inputs cannot be allocated (then nothing runs);
/// `CF_SHUTDOWN`, `CF_BROKEN`, `CF_OS_ERROR` as `cf_submit` does, and `CF_NO_MEMORY` when
/// a chunk, a future or room in the queue runs out half way (then nothing new runs: what
/// was already submitted is cancelled).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cf_map_new(
    ex: *mut cf_executor,
    r#fn: cf_fn,
    args: *const *mut c_void,
    n: usize,
    chunksize: usize,
    timeout: f64,
    out: *mut *mut cf_map,
) -> cf_status {
    ffi_boundary! {
        try_nonnull!(out);
        let Some(f) = r#fn else { return CF_INVALID_ARGUMENT };
        // SAFETY: `ex` is NULL or a live executor.
        if !unsafe { crate::executor::fn_reaches(ex, f as usize) } { return CF_INVALID_ARGUMENT; }
        if n > 0 && args.is_null() {
            return CF_INVALID_ARGUMENT;
        }
        let args = if n == 0 {
            &[][..]
        } else {
            // SAFETY: non-NULL with `n` readable entries (contract); read during this call.
            unsafe { std::slice::from_raw_parts(args, n) }
        };
        start(ex, Items::Calls(f, args), chunksize, timeout, out)
    }
}

/// Runs the byte task `fn` over `n` byte inputs and gives the results in input order.
///
/// As `cf_map_new`; each input is copied before the call returns (`inputs[i].data` may
/// be NULL when its `len` is 0). Read the results with `cf_map_next_bytes`. Returns
/// `CF_INVALID_ARGUMENT` also for an input with NULL data and a length.
///
/// On a process pool, an input of 64 KiB or more is a task of its own whatever
/// `chunksize` says (the chunk it would have joined ends before it, and the next one
/// starts after it): it travels through the worker's shared-memory arena, as a
/// `cf_submit_bytes` input of that size does, where a chunk travels through the worker's
/// socket (its items in one message, its results in one answer). Chunking buys nothing
/// for such items, and the arena is faster: 64 items of 1 MiB with `chunksize` 4 went
/// from about 0.5 to 1.1 GB/s each way on this project's 2-CPU machine. Results are
/// the same either way; only which items a failure leaves unstarted may differ. A chunk
/// of smaller inputs still answers through the socket, whatever its results' sizes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cf_map_bytes_new(
    ex: *mut cf_executor,
    r#fn: cf_bytes_fn,
    inputs: *const cf_bytes,
    n: usize,
    chunksize: usize,
    timeout: f64,
    out: *mut *mut cf_map,
) -> cf_status {
    ffi_boundary! {
        try_nonnull!(out);
        let Some(f) = r#fn else { return CF_INVALID_ARGUMENT };
        // SAFETY: `ex` is NULL or a live executor.
        if !unsafe { crate::executor::fn_reaches(ex, f as usize) } { return CF_INVALID_ARGUMENT; }
        if n > 0 && inputs.is_null() {
            return CF_INVALID_ARGUMENT;
        }
        let inputs = if n == 0 {
            &[][..]
        } else {
            // SAFETY: non-NULL with `n` readable entries (contract).
            unsafe { std::slice::from_raw_parts(inputs, n) }
        };
        let mut copies = Vec::new();
        if copies.try_reserve_exact(n).is_err() {
            return CF_NO_MEMORY;
        }
        for b in inputs {
            // SAFETY: each input is NULL or `len` readable bytes (contract).
            copies.push(try_status!(unsafe { copy_bytes(b.data, b.len) }));
        }
        start(ex, Items::Bytes(f, copies), chunksize, timeout, out)
    }
}

/// The next input of a lazy map (`cf_map_lazy_new`): writes it to `*item` and returns
/// true, or returns false at the end of the input (it is then not called again).
///
/// Called with the `state` given to `cf_map_lazy_new`, only in the thread that calls
/// `cf_map_lazy_new` or reads the map (`cf_map_next`, `cf_map_next_n`), inside those
/// calls, never concurrently with itself. It must not use the map it feeds, and must not
/// unwind (throw or `longjmp`) out of its frame.
pub type cf_next_fn =
    Option<unsafe extern "C-unwind" fn(state: *mut c_void, item: *mut *mut c_void) -> bool>;

/// The next byte input of a lazy byte map (`cf_map_bytes_lazy_new`): writes its address
/// and length to `*data` and `*len` and returns true, or returns false at the end of the
/// input (it is then not called again).
///
/// The bytes are lent: they must stay valid until the next call of this function (or the
/// end of the `cf_map_*` call that made this one, whichever comes first); the library
/// copies them before that. `*data` may be NULL when `*len` is 0. Called as `cf_next_fn`
/// is: in the thread that makes or reads the map, never concurrently.
pub type cf_next_bytes_fn = Option<
    unsafe extern "C-unwind" fn(
        state: *mut c_void,
        data: *mut *const c_void,
        len: *mut usize,
    ) -> bool,
>;

/// Makes a lazy map: the checks and the first fill shared by both lazy functions.
fn start_lazy(
    ex: *mut cf_executor,
    source: Source,
    state: *mut c_void,
    chunksize: usize,
    buffersize: usize,
    timeout: f64,
    out: *mut *mut cf_map,
) -> cf_status {
    if buffersize == 0 {
        return CF_INVALID_ARGUMENT;
    }
    let Some(deadline) = Deadline::from_timeout(timeout) else {
        return CF_INVALID_ARGUMENT;
    };
    // SAFETY: `ex` is NULL or a live executor (contract).
    let Some(pool) = (unsafe { executor_pool(ex) }) else {
        return CF_INVALID_ARGUMENT;
    };
    let Some(room) = try_box_uninit::<cf_map>() else {
        return CF_NO_MEMORY;
    };
    let feed = Feed::new(pool, source, state, chunksize, buffersize);
    let inner = try_status!(MapIter::start_lazy(feed, chunksize, deadline));
    // SAFETY: `out` was checked non-NULL by the caller and is writable.
    unsafe { *out = box_fill_into_raw(room, cf_map { inner }) };
    CF_OK
}

/// Runs `fn` over inputs pulled one by one from `next(state, &item)`, giving the results
/// in input order: Python 3.14's `Executor.map(fn, iterable, buffersize=buffersize)`.
///
/// Items go to the executor in tasks of `chunksize` items (0 means 1), as in `cf_map_new`,
/// but at most `buffersize` tasks are submitted and not yet read back: this call pulls
/// and submits the first `buffersize` tasks, and each task whose items have all been read
/// (`cf_map_next`, `cf_map_next_n`) lets one more in, pulled and submitted inside the
/// read that returns its last item (as Python 3.14 submits one more per result). So
/// `next` is called at most `buffersize × chunksize` items ahead of the reader,
/// an endless input works, and memory stays bounded by `buffersize × chunksize` items.
/// `next` is called only in the thread that calls this function or reads the map, inside
/// those calls, never concurrently; `state` is the caller's, passed to `next` as is, and
/// must outlive the map. The time limit `timeout` counts from this call, for every item.
/// Works on thread and process pools, as `cf_map_new` does. On `CF_OK`, `*out` is a new
/// map, read as any other and freed with `cf_map_free`, which calls `next` no more (and
/// cancels what has not started).
///
/// When a refill cannot be submitted (`CF_SHUTDOWN`: the executor was shut down;
/// `CF_BROKEN`; `CF_NO_MEMORY` with code `ENOMEM`; `CF_OS_ERROR` with the errno as code),
/// the items already submitted are read as usual, and the read that reaches the first
/// item not submitted returns that status (with a static message owned by the library);
/// the map ends there: later reads give `CF_END`. Items `next` gave for a chunk that was
/// not submitted are dropped (nothing runs them). A failed item ends the map as in
/// `cf_map_new` (what has not started is cancelled), and `next` is then not called again.
///
/// Returns `CF_INVALID_ARGUMENT` for NULL `ex`, `fn`, `next` or `out`, `buffersize` 0
/// (Python's `ValueError`) or a NaN timeout; `CF_NO_MEMORY` when the map's handle cannot
/// be allocated; and, when the first fill cannot be submitted, `CF_SHUTDOWN`,
/// `CF_BROKEN`, `CF_NO_MEMORY` or `CF_OS_ERROR` as `cf_submit` does: then what was
/// submitted is cancelled and no map is made (the items `next` gave are dropped).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cf_map_lazy_new(
    ex: *mut cf_executor,
    r#fn: cf_fn,
    next: cf_next_fn,
    state: *mut c_void,
    chunksize: usize,
    buffersize: usize,
    timeout: f64,
    out: *mut *mut cf_map,
) -> cf_status {
    ffi_boundary! {
        try_nonnull!(out);
        let (Some(f), Some(next)) = (r#fn, next) else { return CF_INVALID_ARGUMENT };
        // SAFETY: `ex` is NULL or a live executor.
        if !unsafe { crate::executor::fn_reaches(ex, f as usize) } { return CF_INVALID_ARGUMENT; }
        start_lazy(ex, Source::Calls(f, next), state, chunksize, buffersize, timeout, out)
    }
}

/// Runs the byte task `fn` over byte inputs pulled from `next(state, &data, &len)`,
/// giving the results in input order: `cf_map_lazy_new` for bytes.
///
/// As `cf_map_lazy_new`; each input is copied when it is pulled (it is lent only until
/// the next call of `next`). Read the results with `cf_map_next_bytes`: a result is lent
/// until the next read of the map or `cf_map_free` (the map lets the buffers of the items
/// read go, to stay within its bound). On a process pool, an input of 64 KiB or more is
/// a task of its own, as in `cf_map_bytes_new` (it counts as one of the `buffersize`).
/// An input with NULL data and a length ends the map as a refused refill does, with
/// `CF_INVALID_ARGUMENT` at its read (or from this call, if it is in the first fill).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cf_map_bytes_lazy_new(
    ex: *mut cf_executor,
    r#fn: cf_bytes_fn,
    next: cf_next_bytes_fn,
    state: *mut c_void,
    chunksize: usize,
    buffersize: usize,
    timeout: f64,
    out: *mut *mut cf_map,
) -> cf_status {
    ffi_boundary! {
        try_nonnull!(out);
        let (Some(f), Some(next)) = (r#fn, next) else { return CF_INVALID_ARGUMENT };
        // SAFETY: `ex` is NULL or a live executor.
        if !unsafe { crate::executor::fn_reaches(ex, f as usize) } { return CF_INVALID_ARGUMENT; }
        start_lazy(ex, Source::Bytes(f, next), state, chunksize, buffersize, timeout, out)
    }
}

/// Reads the next item of `m`: shared by both `next` functions.
fn next_item(
    m: *mut cf_map,
    want_bytes: bool,
    code: *mut c_int,
    message: *mut *const c_char,
) -> Result<(*mut c_void, usize), cf_status> {
    // SAFETY: `m` is NULL or a live map used by this thread only (contract).
    let Some(m) = (unsafe { m.as_mut() }) else {
        return Err(CF_INVALID_ARGUMENT);
    };
    next_item_of(m, want_bytes, code, message)
}

/// `next_item` for a map already borrowed.
fn next_item_of(
    m: &mut cf_map,
    want_bytes: bool,
    code: *mut c_int,
    message: *mut *const c_char,
) -> Result<(*mut c_void, usize), cf_status> {
    if want_bytes && !m.inner.is_bytes() {
        return Err(CF_INVALID_ARGUMENT);
    }
    let (status, value, c, msg) = match m.inner.next() {
        Item::Ok(v, len) => (CF_OK, (v, len), 0, std::ptr::null()),
        Item::Failed(s, c, msg) => (s, (std::ptr::null_mut(), 0), c, msg),
        Item::Stop(s) => return Err(s),
    };
    set_error(code, message, c, msg);
    if status == CF_OK {
        Ok(value)
    } else {
        Err(status)
    }
}

/// Writes an item's error code and message to the caller's `code` and `message`, each of
/// which may be NULL (0 and NULL for an item that succeeded).
fn set_error(code: *mut c_int, message: *mut *const c_char, c: c_int, msg: *const c_char) {
    // SAFETY: each is NULL or writable (contract of every `next` function).
    unsafe {
        if let Some(code) = code.as_mut() {
            *code = c;
        }
        if let Some(message) = message.as_mut() {
            *message = msg;
        }
    }
}

/// Gives the next result of `m`, in input order.
///
/// - `CF_OK`: `*result` is the item's value (for a byte map, the data pointer), and
///   `*code`/`*message` are set to 0/NULL.
/// - `CF_TASK_FAILED`, `CF_BROKEN`, `CF_CANCELLED`, or `CF_NO_MEMORY` (code `ENOMEM`: the
///   results of this item's chunk could not be stored): that item failed; `*code` and
///   `*message` get its error (the message is owned by the map, valid until
///   `cf_map_free`). Every item not yet started is then cancelled, and later calls give
///   `CF_END`, as Python's map stops at the first error.
/// - `CF_TIMEOUT`: the `timeout` of `cf_map_new` has passed and this item is not done
///   (a later call may still get it; `cf_map_free` cancels what has not started).
/// - `CF_SHUTDOWN`, `CF_BROKEN`, `CF_NO_MEMORY`, `CF_OS_ERROR` (lazy maps only, and
///   `CF_INVALID_ARGUMENT` for a lazy byte map's NULL input): this is the first item
///   that a refill could not submit (see `cf_map_lazy_new`); `*code` and `*message` are
///   set as for a failed item. Later calls give `CF_END`.
/// - `CF_END`: every item has been read.
/// - `CF_INVALID_ARGUMENT`: `m` or `result` is NULL.
///
/// `code` and `message` may be NULL. Blocks until the item is done or the time is up.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cf_map_next(
    m: *mut cf_map,
    result: *mut *mut c_void,
    code: *mut c_int,
    message: *mut *const c_char,
) -> cf_status {
    ffi_boundary! {
        try_nonnull!(result);
        // SAFETY: `m` is NULL or a live map used by this thread only (contract).
        if let Some(v) = unsafe { m.as_mut() }.and_then(|m| m.inner.next_fast()) {
            // SAFETY: `result` is non-NULL and writable (contract).
            unsafe { *result = v };
            set_error(code, message, 0, std::ptr::null());
            return CF_OK;
        }
        let (value, _) = try_status!(next_item(m, false, code, message));
        // SAFETY: non-NULL and writable (contract).
        unsafe { *result = value };
        CF_OK
    }
}

/// Gives up to `max` next results of `m` at once, in input order: `cf_map_next` for many
/// items per call (an addition to the contract, for maps of many small items, where one
/// call per item would cost more than the items themselves).
///
/// Waits, as `cf_map_next` does, only for the next item; then copies that item's value
/// to `results[0]` and the values of the items after it that are already done, up to
/// `max` in all, and sets `*n_read` to how many. It stops early at an item that is not
/// done yet or did not succeed; the next call reports that item.
///
/// - `CF_OK`: `*n_read` (at least 1) values were written; `*code`/`*message` are set to
///   0/NULL.
/// - `CF_TASK_FAILED`, `CF_BROKEN`, `CF_CANCELLED`, `CF_TIMEOUT`, `CF_END`: as
///   `cf_map_next` for the next item, with `*n_read` set to 0 and nothing written to
///   `results`.
/// - `CF_INVALID_ARGUMENT`: `m`, `results` or `n_read` is NULL, `max` is 0, or `m` is a
///   byte map (read those with `cf_map_next_bytes`); nothing is read.
///
/// `results` must have room for `max` values. `code` and `message` may be NULL. Use the
/// map from one thread at a time.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cf_map_next_n(
    m: *mut cf_map,
    results: *mut *mut c_void,
    max: usize,
    n_read: *mut usize,
    code: *mut c_int,
    message: *mut *const c_char,
) -> cf_status {
    ffi_boundary! {
        try_nonnull!(results);
        try_nonnull!(n_read);
        // SAFETY: `m` is NULL or a live map used by this thread only (contract).
        let Some(map) = (unsafe { m.as_mut() }) else { return CF_INVALID_ARGUMENT };
        if max == 0 || map.inner.is_bytes() {
            return CF_INVALID_ARGUMENT;
        }
        // SAFETY: `n_read` is non-NULL and writable (contract).
        unsafe { *n_read = 0 };
        // SAFETY: `results` is non-NULL with room for `max` values (contract).
        let out = unsafe { std::slice::from_raw_parts_mut(results, max) };
        let mut n = map.inner.take_ready(out);
        if n == 0 {
            // Waits for the next item; on success it also sets `code`/`message` to 0/NULL.
            let (value, _) = try_status!(next_item_of(map, false, code, message));
            out[0] = value;
            n = 1 + map.inner.take_ready(&mut out[1..]);
        } else {
            set_error(code, message, 0, std::ptr::null());
        }
        // SAFETY: as above.
        unsafe { *n_read = n };
        CF_OK
    }
}

/// Gives the next result of a byte map (`cf_map_bytes_new`), in input order.
///
/// As `cf_map_next`; on `CF_OK`, `*result` lends out the task's buffer, owned by the map
/// and valid until `cf_map_free` (NULL data and 0 length when the task returned NULL);
/// for a lazy map (`cf_map_bytes_lazy_new`), until the next read of the map or
/// `cf_map_free`.
/// Returns `CF_INVALID_ARGUMENT` for a map made by `cf_map_new`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cf_map_next_bytes(
    m: *mut cf_map,
    result: *mut cf_bytes,
    code: *mut c_int,
    message: *mut *const c_char,
) -> cf_status {
    ffi_boundary! {
        try_nonnull!(result);
        let (data, len) = try_status!(next_item(m, true, code, message));
        // SAFETY: non-NULL and writable (contract).
        unsafe { *result = cf_bytes { data, len } };
        CF_OK
    }
}

/// Frees the map: cancels every item not yet started (items running finish on their
/// own) and frees the results it lent out. Never blocks; a lazy map's `next` is not
/// called. NULL does nothing; do not free twice.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cf_map_free(m: *mut cf_map) {
    ffi_boundary! {
        // SAFETY: `m` is NULL or our live box, which the caller gives up.
        drop(unsafe { box_take(m) });
    }
}
