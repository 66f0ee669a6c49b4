//! The input side of a lazy map (Python 3.14's `Executor.map(..., buffersize=)`): pulls
//! items from the caller's `next` callback, cuts them into the same tasks an eager map
//! makes, and submits them one task at a time when `MapIter` asks for a refill. The
//! reading side, and the count of tasks in flight, are `MapIter`'s (see `rt::map`).

use super::{
    pool::{Pool, SubmitError},
    shared::try_box,
    sync::Arc,
    task::{BytesFn, MallocBuf, Slots, Task, TaskFn, Values, exact},
};
use crate::status::{CF_INVALID_ARGUMENT, CF_NO_MEMORY, cf_status};
use std::ffi::{CStr, c_char, c_int, c_void};

/// `cf_next_fn`: writes the next input to `*item` and returns true, or returns false at
/// the end.
pub(crate) type NextFn =
    unsafe extern "C-unwind" fn(state: *mut c_void, item: *mut *mut c_void) -> bool;
/// `cf_next_bytes_fn`: the same for byte inputs, lent until the next call.
pub(crate) type NextBytesFn = unsafe extern "C-unwind" fn(
    state: *mut c_void,
    data: *mut *const c_void,
    len: *mut usize,
) -> bool;

/// Where a lazy map's items come from, and the function they are mapped with.
pub(crate) enum Source {
    Calls(TaskFn, NextFn),
    Bytes(BytesFn, NextBytesFn),
}

/// Why a feed gave its last task: `None` while the input flows.
#[derive(Clone, Copy)]
enum End {
    /// `next` returned false.
    Input,
    /// An item could not be submitted: the status, code and message its read reports.
    Failed(cf_status, c_int, &'static CStr),
}

/// A lazy map's input: the callback, its state, and how items become tasks.
pub(crate) struct Feed {
    pool: Arc<Pool>,
    source: Source,
    state: *mut c_void,
    chunksize: usize,
    /// The most tasks submitted and not yet read back.
    pub(crate) buffersize: usize,
    /// How many of those must be free before a refill pulls and submits them together.
    pub(crate) refill_at: usize,
    /// A byte item this large is a task of its own (as in an eager map, see
    /// `MapIter::start`).
    alone_from: usize,
    /// A large byte item pulled while a chunk was being filled: it ended that chunk and
    /// is the next task.
    held: Option<MallocBuf>,
    end: Option<End>,
}

impl Feed {
    /// A feed for `pool` (`chunksize` 0 means 1; `buffersize` is at least 1).
    pub(crate) fn new(
        pool: &Arc<Pool>,
        source: Source,
        state: *mut c_void,
        chunksize: usize,
        buffersize: usize,
    ) -> Feed {
        debug_assert!(buffersize > 0);
        Feed {
            alone_from: if pool.is_process() {
                super::process::SHM_MIN
            } else {
                usize::MAX
            },
            pool: Arc::clone(pool),
            source,
            state,
            chunksize: chunksize.max(1),
            buffersize,
            refill_at: 1,
            held: None,
            end: None,
        }
    }

    /// The executor's pool.
    pub(crate) fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    /// Whether the results are byte buffers.
    pub(crate) fn is_bytes(&self) -> bool {
        matches!(self.source, Source::Bytes(..))
    }

    /// The status, code and message of the item that could not be submitted, once the
    /// input ended that way.
    pub(crate) fn failure(&self) -> Option<(cf_status, c_int, *const c_char)> {
        match self.end {
            Some(End::Failed(s, c, m)) => Some((s, c, m.as_ptr())),
            _ => None,
        }
    }

    /// Whether more tasks may come.
    pub(crate) fn flows(&self) -> bool {
        self.end.is_none() || self.held.is_some()
    }

    /// Records that the input stops at the next item not yet submitted, for `status`.
    fn fail(&mut self, status: cf_status, code: c_int) {
        let message = match status {
            crate::status::CF_SHUTDOWN => {
                c"cfutures: the executor was shut down before this item of the lazy map was submitted"
            }
            crate::status::CF_BROKEN => {
                c"cfutures: the executor broke before this item of the lazy map was submitted"
            }
            CF_INVALID_ARGUMENT => {
                c"cfutures: next gave a byte input with NULL data and a length"
            }
            _ => c"cfutures: this item of the lazy map could not be submitted",
        };
        self.held = None;
        self.end = Some(End::Failed(status, code, message));
    }

    /// Records a refused submit (see `fail`).
    pub(crate) fn refused(&mut self, e: SubmitError) {
        let code = match &e {
            SubmitError::NoMemory => libc::ENOMEM,
            SubmitError::Os(e) => e.raw_os_error().unwrap_or(0),
            _ => 0,
        };
        self.fail(e.status(), code);
    }

    /// Pulls up to `max` tasks and submits them together (one lock and one wake-up
    /// decision for the group, see `Pool::submit_batch`); returns their futures and how
    /// many items each holds, or `None` when none was submitted: the input has ended, or
    /// pulling or submitting failed (see `failure`; a group is submitted whole or not at
    /// all, so the first item not submitted is the first of the group).
    pub(crate) fn submit_upto(
        &mut self,
        max: usize,
    ) -> Option<(Vec<super::future::CoreRef>, Vec<usize>)> {
        let mut tasks = Vec::new();
        let mut counts = Vec::new();
        if tasks.try_reserve_exact(max).is_err() || counts.try_reserve_exact(max).is_err() {
            self.fail(CF_NO_MEMORY, libc::ENOMEM);
            return None;
        }
        while tasks.len() < max {
            let Some((task, n)) = self.pull() else {
                break;
            };
            tasks.push(task);
            counts.push(n);
        }
        if tasks.is_empty() {
            return None;
        }
        // The reader refills as it reads, one chunk per chunk: like a thread that submits
        // again as soon as it has a result, it is better served by an idle worker that
        // spins a moment than by one it must wake with a system call for every chunk
        // (W3-lazy: context switches per million items 300-1500 -> 30-100, items/s
        // +13% median over 15 interleaved runs). The pool's spinning rules still apply.
        super::pool::note_wait();
        match self.pool.submit_batch(tasks) {
            Ok(cores) => Some((cores, counts)),
            Err(e) => {
                self.refused(e);
                None
            }
        }
    }

    /// The next task and how many items it holds; `None` at the end of the input or
    /// when memory runs out (recorded in `end`).
    fn pull(&mut self) -> Option<(Task, usize)> {
        if !self.flows() {
            return None;
        }
        match self.source {
            Source::Calls(f, next) => self.pull_calls(f, next),
            Source::Bytes(f, next) => self.pull_bytes(f, next),
        }
    }

    /// One pointer item, or `None` at the end of the input.
    fn next_call(&mut self, next: NextFn) -> Option<*mut c_void> {
        let mut item = std::ptr::null_mut();
        // SAFETY: the caller's callback with its state (contract); `item` is writable.
        if unsafe { next(self.state, &mut item) } {
            Some(item)
        } else {
            self.end = Some(End::Input);
            None
        }
    }

    fn pull_calls(&mut self, f: TaskFn, next: NextFn) -> Option<(Task, usize)> {
        if self.chunksize == 1 {
            return self.next_call(next).map(|item| (Task::Call(f, item), 1));
        }
        let mut items = Vec::new();
        if items.try_reserve_exact(self.chunksize).is_err() {
            self.fail(CF_NO_MEMORY, libc::ENOMEM);
            return None;
        }
        // `next` writes each item straight into the chunk's buffer (this loop is the
        // reader's share of every item: W3-lazy).
        let state = self.state;
        let mut n = 0;
        for slot in &mut items.spare_capacity_mut()[..self.chunksize] {
            let p = slot.write(std::ptr::null_mut());
            // SAFETY: the caller's callback with its state (contract); `p` is writable.
            if !unsafe { next(state, p) } {
                self.end = Some(End::Input);
                break;
            }
            n += 1;
        }
        // SAFETY: the first `n` slots were written (the null above, then `next`'s item).
        unsafe { items.set_len(n) };
        if n == 0 {
            return None;
        }
        let values = exact(items).and_then(|v| {
            try_box(Values {
                values: Slots::Owned(v),
                failure: None,
            })
            .ok()
        });
        match values {
            Some(v) => Some((Task::Calls(f, v), n)),
            None => {
                self.fail(CF_NO_MEMORY, libc::ENOMEM);
                None
            }
        }
    }

    /// One byte item, copied (the caller's bytes are lent only until its next call), or
    /// `None` at the end of the input or on a failure (recorded).
    fn next_bytes(&mut self, next: NextBytesFn) -> Option<MallocBuf> {
        let mut data: *const c_void = std::ptr::null();
        let mut len = 0usize;
        // SAFETY: the caller's callback with its state (contract); both are writable.
        if !unsafe { next(self.state, &mut data, &mut len) } {
            self.end = Some(End::Input);
            return None;
        }
        // SAFETY: `data` is NULL or `len` readable bytes until the next call (contract).
        match unsafe { super::task::copy_bytes(data, len) } {
            Ok(b) => Some(b),
            Err(status) => {
                let code = if status == CF_NO_MEMORY {
                    libc::ENOMEM
                } else {
                    0
                };
                self.fail(status, code);
                None
            }
        }
    }

    fn pull_bytes(&mut self, f: BytesFn, next: NextBytesFn) -> Option<(Task, usize)> {
        let mut chunk: Vec<MallocBuf> = Vec::new();
        while chunk.len() < self.chunksize {
            let item = match self.held.take() {
                Some(item) => item,
                None => match self.next_bytes(next) {
                    Some(item) => item,
                    None => break,
                },
            };
            if self.chunksize == 1 || (item.len() >= self.alone_from && chunk.is_empty()) {
                return Some((Task::Bytes(f, item), 1));
            }
            if item.len() >= self.alone_from {
                self.held = Some(item);
                break;
            }
            if chunk.is_empty() && chunk.try_reserve_exact(self.chunksize).is_err() {
                self.fail(CF_NO_MEMORY, libc::ENOMEM);
                return None;
            }
            chunk.push(item);
        }
        if let Some(End::Failed(..)) = self.end {
            return None;
        }
        let n = chunk.len();
        if n == 0 {
            return None;
        }
        match exact(chunk) {
            Some(c) => Some((Task::ByteChunk(f, c), n)),
            None => {
                self.fail(CF_NO_MEMORY, libc::ENOMEM);
                None
            }
        }
    }
}
