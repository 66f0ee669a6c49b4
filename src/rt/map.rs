//! `Executor.map`: items submitted in chunks of `chunksize` items (one task each), results
//! read back in input order. An eager map submits every chunk at once; a lazy map (a
//! `Feed`, see `rt::lazy`) keeps `buffersize` chunks in flight and submits one more each
//! time a chunk has been read back in full, dropping the chunks it has read.

use super::{
    future::CoreRef,
    lazy::Feed,
    pool::{Pool, SubmitError},
    shared::try_box,
    sync::Arc,
    task::{ArgFiller, BytesFn, MallocBuf, Outcome, OutcomeRef, Task, TaskFn, Values},
    time::Deadline,
};
use crate::status::{CF_CANCELLED, CF_END, CF_NO_MEMORY, CF_OS_ERROR, CF_TIMEOUT, cf_status};
use std::{
    collections::VecDeque,
    ffi::{c_char, c_int, c_void},
};

/// The items of a map, before they are cut into chunks.
pub(crate) enum Items<'a> {
    /// Pointer-value items, borrowed from the caller for the call: copied once into an
    /// `ArgBuf` whose ranges are the chunks (their results are then written over them).
    Calls(TaskFn, &'a [*mut c_void]),
    /// Byte items, already copied.
    Bytes(BytesFn, Vec<MallocBuf>),
}

/// One item as `cf_map_next` reports it. Pointers are owned by the map: byte results and
/// failure messages stay valid until the map is freed.
pub(crate) enum Item {
    /// `CF_OK` with the task's value, or a byte result's data and length.
    Ok(*mut c_void, usize),
    /// A failed item: `CF_TASK_FAILED`, `CF_BROKEN` or `CF_CANCELLED`, with code and
    /// message (0 and NULL when cancelled).
    Failed(cf_status, c_int, *const c_char),
    /// `CF_TIMEOUT` or `CF_END`.
    Stop(cf_status),
}

/// How many chunks a map hands to its pool at once.
const MAP_BATCH: usize = 8;

/// The most tasks a lazy map's refill pulls and submits together.
const REFILL_GROUP: usize = 64;

/// An ongoing map.
pub(crate) struct MapIter {
    /// The chunks not yet dropped, from the front: a lazy map drops those it has read
    /// (`drop_read`), an eager one keeps every entry (`None` once read and let go).
    chunks: VecDeque<Option<CoreRef>>,
    chunksize: usize,
    /// Where each chunk's items end (the index after its last item), when chunks differ
    /// in size (see `task::tasks_of`) and always in a lazy map; empty when every chunk but
    /// the last holds `chunksize` items.
    ends: VecDeque<usize>,
    /// The items submitted (all of them for an eager map).
    n: usize,
    /// The items of the chunks dropped from the front (`drop_read`).
    item_base: usize,
    /// Index of the next item, and its chunk (in `chunks`) and offset there.
    next: usize,
    chunk: usize,
    offset: usize,
    /// The values of the current chunk while it is read on the fast path.
    cur: *const *mut c_void,
    cur_len: usize,
    pos: usize,
    ended: bool,
    keep_results: bool,
    deadline: Deadline,
    /// A lazy map's input; `None` for an eager map.
    feed: Option<Box<Feed>>,
}

impl MapIter {
    /// Submits every chunk. If a submit is refused, what was submitted is cancelled.
    pub(crate) fn start(
        pool: &Arc<Pool>,
        items: Items<'_>,
        chunksize: usize,
        deadline: Deadline,
    ) -> Result<MapIter, SubmitError> {
        if pool.is_foreign() {
            return Err(SubmitError::Forked);
        }
        let chunksize = chunksize.max(1);
        let mut chunks = Vec::new();
        let (n, keep_results) = match &items {
            Items::Calls(_, v) => (v.len(), false),
            Items::Bytes(_, v) => (v.len(), true),
        };
        // A byte item this large is a task of its own on a process pool: it then travels
        // through the worker's shared memory, a chunk through its socket.
        let alone_from = if pool.is_process() {
            super::process::SHM_MIN
        } else {
            usize::MAX
        };
        let mut ends = Vec::new();
        // Chunks go to the pool MAP_BATCH at a time, under one lock and with one wake-up
        // decision: a worker that would otherwise finish each chunk before the next one
        // is copied would fall asleep and be woken once per chunk.
        let mut batch: Vec<Task> = Vec::new();
        // Cancels everything submitted so far and gives the error.
        let fail = |chunks: &mut Vec<Option<CoreRef>>, e: SubmitError| {
            for c in chunks.iter().flatten() {
                c.cancel();
            }
            Err(e)
        };
        // Submits the batch (or fails as above).
        let flush = |chunks: &mut Vec<Option<CoreRef>>, batch: &mut Vec<Task>| match pool
            .submit_batch(std::mem::take(batch))
        {
            Ok(cores) => {
                chunks.extend(cores.into_iter().map(Some));
                Ok(())
            }
            Err(e) => fail(chunks, e),
        };
        // Adds a task to the batch (`None`: there was no memory for it), submitting the
        // batch when it is full.
        let add = |chunks: &mut Vec<Option<CoreRef>>, batch: &mut Vec<Task>, task: Option<Task>| {
            let Some(task) = task else {
                return fail(chunks, SubmitError::NoMemory);
            };
            if batch.is_empty() && batch.try_reserve_exact(MAP_BATCH).is_err() {
                return fail(chunks, SubmitError::NoMemory);
            }
            batch.push(task);
            if batch.len() == MAP_BATCH {
                flush(chunks, batch)?;
            }
            Ok(())
        };
        match items {
            Items::Calls(f, args) if chunksize > 1 && n > 0 => {
                chunks
                    .try_reserve_exact(n.div_ceil(chunksize))
                    .map_err(|_| SubmitError::NoMemory)?;
                // One copy of the inputs, made and submitted chunk by chunk: the workers
                // start on the first chunks while the later ones are still being copied.
                let mut filler = ArgFiller::try_new(n).ok_or(SubmitError::NoMemory)?;
                for c in args.chunks(chunksize) {
                    let values = try_box(Values {
                        values: filler.push(c),
                        failure: None,
                    })
                    .ok();
                    add(&mut chunks, &mut batch, values.map(|v| Task::Calls(f, v)))?;
                }
            }
            items => {
                let tasks;
                (tasks, ends) = super::task::tasks_of(items, chunksize, alone_from)
                    .ok_or(SubmitError::NoMemory)?;
                chunks
                    .try_reserve_exact(tasks.len())
                    .map_err(|_| SubmitError::NoMemory)?;
                for task in tasks {
                    add(&mut chunks, &mut batch, Some(task))?;
                }
            }
        }
        if !batch.is_empty() {
            flush(&mut chunks, &mut batch)?;
        }
        Ok(MapIter {
            chunks: chunks.into(),
            chunksize,
            ends: ends.into(),
            n,
            item_base: 0,
            next: 0,
            chunk: 0,
            offset: 0,
            cur: std::ptr::null(),
            cur_len: 0,
            pos: 0,
            ended: false,
            keep_results,
            deadline,
            feed: None,
        })
    }

    /// Starts a lazy map: submits up to `feed.buffersize` chunks. If a submit is refused
    /// (or an input is refused, or memory runs out), what was submitted is cancelled and
    /// the status, with the errno of `CF_OS_ERROR` set, is the error.
    pub(crate) fn start_lazy(
        feed: Feed,
        chunksize: usize,
        deadline: Deadline,
    ) -> Result<MapIter, cf_status> {
        if feed.pool().is_foreign() {
            // A child forked after the executor was made: refused before `next` is
            // called, as `start` refuses an eager map.
            return Err(SubmitError::Forked.status());
        }
        let keep_results = feed.is_bytes();
        let room = feed.buffersize.min(64) + 1;
        let mut chunks = VecDeque::new();
        let mut ends = VecDeque::new();
        chunks
            .try_reserve_exact(room)
            .and_then(|()| ends.try_reserve_exact(room))
            .map_err(|_| CF_NO_MEMORY)?;
        let feed = try_box(feed).map_err(|_| CF_NO_MEMORY)?;
        let mut m = MapIter {
            chunks,
            chunksize: chunksize.max(1),
            ends,
            n: 0,
            item_base: 0,
            next: 0,
            chunk: 0,
            offset: 0,
            cur: std::ptr::null(),
            cur_len: 0,
            pos: 0,
            ended: false,
            keep_results,
            deadline,
            feed: Some(feed),
        };
        m.refill();
        match m.feed.as_ref().and_then(|f| f.failure()) {
            // Dropping the map cancels what it submitted.
            Some((status, code, _)) => {
                if status == CF_OS_ERROR {
                    // SAFETY: errno is this thread's; C code reads it after CF_OS_ERROR.
                    unsafe { *libc::__errno_location() = code };
                }
                Err(status)
            }
            None => Ok(m),
        }
    }

    /// A lazy map: once `refill_at` chunks of the buffer are free (one: each chunk read
    /// back in full lets one more in, as the contract and Python 3.14 say; at the start,
    /// all of it), submits chunks until `buffersize` are in flight (submitted and not read
    /// back in full) or the input ends. Calls the caller's `next`, in this thread. Nothing
    /// after the map has ended (a failed item, or a refill that failed). (Refilling by
    /// halves of the buffer was measured faster, since each single submit may find the
    /// workers asleep, but it pulls inputs later than the contract says: see
    /// bench/README.md, W3-lazy.)
    fn refill(&mut self) {
        let Some(feed) = self.feed.as_deref_mut() else {
            return;
        };
        if self.ended {
            return;
        }
        if !self.keep_results {
            // Pointer values were copied out as they were read: nothing read is lent.
            Self::drop_read_of(
                &mut self.chunks,
                &mut self.ends,
                &mut self.chunk,
                &mut self.item_base,
            );
        }
        let mut free = feed.buffersize - (self.chunks.len() - self.chunk);
        if free < feed.refill_at {
            return;
        }
        while free > 0 && feed.flows() {
            // Groups of at most `REFILL_GROUP` tasks, so that a huge `buffersize` asks
            // for no huge reservation.
            let group = free.min(REFILL_GROUP);
            if self.chunks.try_reserve(group).is_err() || self.ends.try_reserve(group).is_err() {
                feed.refused(SubmitError::NoMemory);
                return;
            }
            let Some((cores, counts)) = feed.submit_upto(group) else {
                return;
            };
            free -= cores.len();
            for (core, k) in cores.into_iter().zip(counts) {
                self.chunks.push_back(Some(core));
                self.n += k;
                self.ends.push_back(self.n);
            }
        }
    }

    /// A lazy map: drops the chunks read in full, at a read (a byte result is lent until
    /// the next read). Not after the map has ended: failure messages stay lent until the
    /// map is freed.
    fn drop_read(&mut self) {
        if self.feed.is_some() && !self.ended {
            Self::drop_read_of(
                &mut self.chunks,
                &mut self.ends,
                &mut self.chunk,
                &mut self.item_base,
            );
        }
    }

    fn drop_read_of(
        chunks: &mut VecDeque<Option<CoreRef>>,
        ends: &mut VecDeque<usize>,
        chunk: &mut usize,
        item_base: &mut usize,
    ) {
        while *chunk > 0 {
            chunks.pop_front();
            *item_base = ends.pop_front().expect("a lazy map's chunk has its end");
            *chunk -= 1;
        }
    }

    /// How many items chunk `ci` holds.
    fn chunk_len(&self, ci: usize) -> usize {
        if self.ends.is_empty() {
            return self.chunksize.min(self.n - ci * self.chunksize);
        }
        self.ends[ci]
            - ci.checked_sub(1)
                .map_or(self.item_base, |before| self.ends[before])
    }

    /// Whether this map's results are byte buffers.
    pub(crate) fn is_bytes(&self) -> bool {
        self.keep_results
    }

    fn cancel_rest(&mut self) {
        self.ended = true;
        for c in self.chunks.iter().flatten() {
            c.cancel();
        }
    }

    /// The next item's value when it is on the fast path (the rest of a chunk of values
    /// already waited for): an array index, no wait, no status to build.
    #[inline(always)]
    pub(crate) fn next_fast(&mut self) -> Option<*mut c_void> {
        if self.pos < self.cur_len {
            // SAFETY: `cur` points at the values of chunk `self.chunk`, which
            // `self.chunks` holds, and `pos < cur_len` is within them.
            let v = unsafe { *self.cur.add(self.pos) };
            self.pos += 1;
            self.next += 1;
            if self.pos == self.cur_len {
                // The chunk's last item: let it go now, so that a lazy map refills inside
                // this read, as it does for a chunk read on the slow path.
                self.leave_used_chunk();
            }
            Some(v)
        } else {
            None
        }
    }

    /// Copies into `out` the next values that are ready without waiting, in order: the
    /// rest of the current chunk, then following chunks that are already done and did not
    /// fail (their values in bulk, or one value for a chunk of one item). Stops at the
    /// first item that is not done, or failed, or was cancelled: `next` reports that one.
    /// Returns how many it copied.
    pub(crate) fn take_ready(&mut self, out: &mut [*mut c_void]) -> usize {
        let mut n = 0;
        while n < out.len() {
            let k = (self.cur_len - self.pos).min(out.len() - n);
            if k > 0 {
                // SAFETY: `cur` points at the values of chunk `self.chunk` (held in
                // `self.chunks`), and `pos + k <= cur_len` is within them.
                let src = unsafe { std::slice::from_raw_parts(self.cur.add(self.pos), k) };
                out[n..n + k].copy_from_slice(src);
                self.pos += k;
                self.next += k;
                n += k;
                // A chunk read to its end goes now (a lazy map refills in this read).
                self.leave_used_chunk();
                continue;
            }
            self.leave_used_chunk();
            if self.ended || self.next == self.n || self.offset != 0 {
                break;
            }
            let ci = self.chunk;
            let Some(core) = self.chunks[ci].as_deref() else {
                break;
            };
            let in_chunk = self.chunk_len(ci);
            match core.outcome() {
                Some(OutcomeRef::Values(v))
                    if v.failure.is_none() && v.values.len() == in_chunk =>
                {
                    self.cur = v.values.as_ptr();
                    self.cur_len = in_chunk;
                    self.pos = 0;
                }
                Some(OutcomeRef::Value(_)) if !self.keep_results => match self.next() {
                    Item::Ok(v, _) => {
                        out[n] = v;
                        n += 1;
                    }
                    _ => unreachable!("a finished single value is an Ok item"),
                },
                _ => break,
            }
        }
        n
    }

    /// After the fast path has read the last value of the current chunk: lets the chunk
    /// go and moves on to the next one. Does nothing when no chunk is on the fast path.
    fn leave_used_chunk(&mut self) {
        if self.cur_len > 0 && self.pos == self.cur_len {
            self.chunks[self.chunk] = None;
            self.chunk += 1;
            self.offset = 0;
            self.cur_len = 0;
            self.pos = 0;
            self.refill();
        }
    }

    /// The next item's outcome, in input order.
    pub(crate) fn next(&mut self) -> Item {
        if let Some(v) = self.next_fast() {
            return Item::Ok(v, 0);
        }
        self.leave_used_chunk();
        self.drop_read();
        if self.ended || self.next == self.n {
            if let Some((status, code, message)) = self.feed.as_ref().and_then(|f| f.failure())
                && !self.ended
            {
                // A lazy map whose refill failed: this is the first item not submitted.
                self.cancel_rest();
                return Item::Failed(status, code, message);
            }
            return Item::Stop(CF_END);
        }
        let (ci, off) = (self.chunk, self.offset);
        let Some(core) = self.chunks[ci].as_deref() else {
            unreachable!("a chunk released before its last item was read");
        };
        if !core.wait(self.deadline) {
            return Item::Stop(CF_TIMEOUT);
        }
        let in_chunk = self.chunk_len(ci);
        let item = match core.outcome() {
            None => Item::Failed(CF_CANCELLED, 0, std::ptr::null()),
            Some(OutcomeRef::Values(v)) => {
                if off == 0 && v.failure.is_none() && v.values.len() == in_chunk && in_chunk > 1 {
                    // Read the rest of this chunk on the fast path.
                    self.cur = v.values.as_ptr();
                    self.cur_len = in_chunk;
                    self.pos = 1;
                    self.next += 1;
                    return Item::Ok(v.values[0], 0);
                }
                match (v.values.get(off), &v.failure) {
                    (Some(value), _) => Item::Ok(*value, 0),
                    (None, Some(e)) => Item::Failed(e.status, e.code, e.message_ptr()),
                    (None, None) => Item::Failed(CF_CANCELLED, 0, std::ptr::null()),
                }
            }
            Some(o) => {
                let o = match o {
                    OutcomeRef::Chunk(items) => items.get(off).map(Outcome::as_ref),
                    other => Some(other),
                };
                match o {
                    None => Item::Failed(CF_CANCELLED, 0, std::ptr::null()),
                    Some(OutcomeRef::Failed(e)) => Item::Failed(e.status, e.code, e.message_ptr()),
                    Some(d @ OutcomeRef::Degraded(..)) => {
                        let (status, code, message) = d.error().expect("an error outcome");
                        Item::Failed(status, code, message)
                    }
                    Some(OutcomeRef::Value(v)) => Item::Ok(v, 0),
                    Some(OutcomeRef::Bytes(b)) => Item::Ok(b.ptr, b.len),
                    Some(OutcomeRef::Chunk(_) | OutcomeRef::Values(_)) => {
                        unreachable!("nested chunk")
                    }
                }
            }
        };
        self.next += 1;
        self.offset += 1;
        let chunk_done = self.offset == in_chunk;
        if chunk_done {
            self.chunk += 1;
            self.offset = 0;
        }
        if let Item::Failed(..) = item {
            // Python's map stops at the first error and cancels what has not started.
            self.cancel_rest();
        } else if chunk_done && !self.keep_results {
            // Every item of this chunk has been read and the values were copied out: let
            // the chunk go. (Byte results are lent out, so those stay until the map is
            // freed, as do failed chunks, whose messages are lent out.)
            self.chunks[ci] = None;
        }
        if chunk_done {
            // A lazy map: this chunk has been read back in full, so one more may go.
            self.refill();
        }
        item
    }
}

impl Drop for MapIter {
    fn drop(&mut self) {
        for c in self.chunks.iter().flatten() {
            c.cancel();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rt::pool::{Config, Runner};
    use crate::status::CF_TASK_FAILED;

    unsafe extern "C-unwind" fn square(arg: *mut c_void) -> *mut c_void {
        let x = arg as usize;
        if x == 7777 {
            // SAFETY: a static NUL-terminated message.
            unsafe { crate::rt::context::raise(5, c"bad".as_ptr()) };
        }
        (x * x) as *mut c_void
    }

    fn pool() -> Arc<Pool> {
        Pool::new(
            Config {
                max_workers: 2,
                name_prefix: None,
                initializer: None,
            },
            Runner::Local,
        )
    }

    fn args(n: usize) -> Vec<*mut c_void> {
        (0..n).map(|i| i as *mut c_void).collect()
    }

    #[test]
    fn results_in_order_for_every_chunksize() {
        let p = pool();
        for chunksize in [0, 1, 3, 7, 100, 1000] {
            let mut m = MapIter::start(
                &p,
                Items::Calls(square, &args(100)),
                chunksize,
                Deadline::FOREVER,
            )
            .unwrap();
            // Real batching: one future per chunk.
            assert_eq!(m.chunks.len(), 100usize.div_ceil(chunksize.max(1)));
            for i in 0..100 {
                match m.next() {
                    Item::Ok(v, _) => assert_eq!(v as usize, i * i),
                    _ => panic!("item {i} failed"),
                }
            }
            assert!(matches!(m.next(), Item::Stop(CF_END)));
        }
        p.shutdown(true, false);
    }

    #[test]
    fn failure_reports_the_item_then_ends() {
        let p = pool();
        let mut args: Vec<*mut c_void> = (0..50).map(|i| i as *mut c_void).collect();
        args[20] = 7777 as *mut c_void;
        let mut m = MapIter::start(&p, Items::Calls(square, &args), 8, Deadline::FOREVER).unwrap();
        for _ in 0..20 {
            assert!(matches!(m.next(), Item::Ok(..)));
        }
        assert!(matches!(m.next(), Item::Failed(CF_TASK_FAILED, 5, msg) if !msg.is_null()));
        assert!(matches!(m.next(), Item::Stop(CF_END)));
        drop(m);
        p.shutdown(true, false);
    }
}
