//! The future core: one state word, a slot for the task and then its outcome, and a list
//! of listeners (blocked threads, multi-waits, done callbacks).
//!
//! # Protocol
//!
//! The state word holds a phase, the `LISTENERS` flag, and the `Kind` of what the slot
//! holds (a task, nothing, or which outcome), so that the slot needs no tag of its own:
//!
//! ```text
//!   PENDING ──start──▶ RUNNING ──claim──▶ COMPLETING ──publish──▶ FINISHED
//!      │  └────────────────claim (promise / set_result)──▶┘
//!      └──cancel──▶ CANCELLED
//! ```
//!
//! - `start` (PENDING → RUNNING) is won by exactly one worker, which then owns the task in
//!   the slot and takes it out (the same CAS records the slot as empty).
//! - `claim` (PENDING or RUNNING → COMPLETING) is won by exactly one completer, which then
//!   owns the slot, drops a task still in it, writes the outcome, and `publish`es
//!   FINISHED and the outcome's kind with Release ordering.
//!   Readers load the state with Acquire and read the slot only once they see FINISHED.
//! - `cancel` (PENDING → CANCELLED) never touches the slot; the task of a cancelled future
//!   (which no worker can `start` now) stays there until the future is dropped.
//! - Listeners are a singly linked list (one small node each) whose head pointer is
//!   guarded by the `listeners` lock. A registrant takes the lock, then sets `LISTENERS`
//!   with a `fetch_or` that returns the phase: a done phase means "run it yourself now".
//!   A completer that sees `LISTENERS` in the word it replaced takes the lock and drains
//!   the list. Because the registrant holds the lock across its `fetch_or` and link, and
//!   the completer takes the lock only after its own atomic step, every listener is
//!   either drained by the completer or run by the registrant: exactly once, never lost.
//!   (A one-word lock and a list head rather than a `Mutex<Vec>`, and the slot's kind in
//!   the state word, keep a future's core at 32 bytes, and a callback costs a 32-byte
//!   node instead of a 96-byte vector.)
//! - A completion with no listener takes no lock: one CAS and one `fetch_add`.
//!
//! # Memory ordering
//!
//! - `claim`/`start`/`cancel` are CASes with AcqRel on success: the winner must see the
//!   slot as the constructor (or an earlier writer) left it.
//! - `publish` is a Release `fetch_add`: it orders the outcome written into the slot
//!   before the FINISHED phase any reader acquires.
//! - `fetch_or(LISTENERS)` is AcqRel: Acquire so a registrant that finds the future done
//!   may read the outcome (a callback calls `cf_future_result`); Release is harmless.
//! - Readers (`phase`, `outcome`) use Acquire loads.

use super::{
    context,
    hook::Hook,
    shared::{Shared, try_box},
    sync::{AtomicU32, Ordering, RawLock, Thread, UnsafeCell, alloc, dealloc, thread},
    task::{Failure, MallocBuf, Outcome, OutcomeRef, Task, TaskFn, Values},
    time::Deadline,
    waiter::{WaitSet, block_on},
};
use crate::future::cf_future;
use crate::status::cf_status;
use crossbeam_utils::Backoff;
use std::{
    alloc::Layout,
    ffi::{c_int, c_void},
    mem,
};

/// The future has not started.
const PENDING: u32 = 0;
/// A worker runs the task, or a promise was marked running.
const RUNNING: u32 = 1;
/// One completer is writing the outcome; readers still see "running".
const COMPLETING: u32 = 2;
/// The outcome is written and visible (must be COMPLETING + 1: see `publish`).
const FINISHED: u32 = 3;
/// Cancelled before it started.
const CANCELLED: u32 = 4;
/// Mask of the phase bits.
const PHASE: u32 = 0b111;
/// Set once any listener was registered: the completer must drain the list.
const LISTENERS: u32 = 0b1000;
/// What the slot holds (`Kind`), in the four bits above `LISTENERS`.
const KIND_SHIFT: u32 = 4;
/// Mask of the kind bits.
const KIND: u32 = 0b1111 << KIND_SHIFT;

/// The phase as the C API reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    Pending,
    Running,
    Cancelled,
    Finished,
}

/// A done callback: `fn(future, userdata)`.
pub(crate) type CallbackFn = unsafe extern "C-unwind" fn(f: *mut cf_future, userdata: *mut c_void);

/// Someone to tell when the future is done.
pub(crate) enum Listener {
    /// A thread blocked on this future alone.
    Unpark(Thread),
    /// A multi-future wait (`cf_wait`, `cf_as_completed`), with this future's index there.
    Notify(Shared<WaitSet>, usize),
    /// A done callback with its userdata.
    Callback(CallbackFn, *mut c_void),
    /// An engine hook (a continuation, a `cf_when`): run with the callbacks.
    Hook(Hook),
}

/// What a future's slot holds. The kind lives in the state word, so that the slot itself
/// is two words with no tag of its own (a future's core is then 32 bytes, one 48-byte
/// block with its count; with a tagged `enum` it was 48 and 64). The kind changes only in
/// the same atomic step that hands the slot to a new owner: the constructor, `start`
/// (which takes the task: `Empty`), `claim` (`Empty`, the old content dropped by the
/// winner) and `publish` (the outcome's kind, with FINISHED).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u32)]
enum Kind {
    Empty = 0,
    /// `Task::Call(fn, arg)`, stored as its two words.
    Call,
    /// `Task::Calls(fn, values)` (a chunk of pointer map items), stored as its two words.
    Calls,
    /// Any other task, boxed (byte tasks and byte map chunks: one more allocation, beside
    /// the copies they make anyway).
    Boxed,
    Value,
    Bytes,
    Failed,
    Chunk,
    Values,
    Degraded,
    /// `Task::Then(link)` (a continuation), stored as its one word.
    Then,
}

impl Kind {
    const ALL: [Kind; 11] = [
        Kind::Empty,
        Kind::Call,
        Kind::Calls,
        Kind::Boxed,
        Kind::Value,
        Kind::Bytes,
        Kind::Failed,
        Kind::Chunk,
        Kind::Values,
        Kind::Degraded,
        Kind::Then,
    ];

    /// The kind recorded in a state word.
    fn of(state: u32) -> Kind {
        Kind::ALL[((state & KIND) >> KIND_SHIFT) as usize]
    }

    /// The kind as state-word bits.
    const fn bits(self) -> u32 {
        (self as u32) << KIND_SHIFT
    }
}

/// Two words of storage for the slot's content, whose type `Kind` records (and for a
/// listener node's). Larger under loom, whose `Thread` is.
#[repr(C, align(8))]
struct Payload(mem::MaybeUninit<[usize; PAYLOAD_WORDS]>);

#[cfg(not(cfutures_loom))]
const PAYLOAD_WORDS: usize = 2;
#[cfg(cfutures_loom)]
const PAYLOAD_WORDS: usize = 8;

impl Payload {
    const fn empty() -> Payload {
        Payload(mem::MaybeUninit::uninit())
    }

    /// Stores `v` (whatever was there is overwritten, not dropped).
    fn put<T>(&mut self, v: T) {
        const {
            assert!(mem::size_of::<T>() <= mem::size_of::<Payload>());
            assert!(mem::align_of::<T>() <= mem::align_of::<Payload>());
        }
        // SAFETY: the payload is large and aligned enough for a `T` (checked above).
        unsafe { self.0.as_mut_ptr().cast::<T>().write(v) }
    }

    /// # Safety
    /// The payload holds a `T` (its kind says so).
    unsafe fn get<T>(&self) -> &T {
        // SAFETY: the caller's promise.
        unsafe { &*self.0.as_ptr().cast::<T>() }
    }

    /// Moves the `T` out; the payload is then logically empty.
    ///
    /// # Safety
    /// The payload holds a `T` (its kind says so), and the kind is changed so that it is
    /// never read or dropped again.
    unsafe fn take<T>(&mut self) -> T {
        // SAFETY: the caller's promise.
        unsafe { self.0.as_ptr().cast::<T>().read() }
    }

    /// A task stored; `Err` with the task back when the box for a task other than `Call`
    /// and `Calls` cannot be allocated.
    fn with_task(task: Task) -> Result<(Kind, Payload), Task> {
        let mut p = Payload::empty();
        let kind = match task {
            Task::Call(f, arg) => p.put_as((f, arg), Kind::Call),
            Task::Calls(f, values) => p.put_as((f, values), Kind::Calls),
            Task::Then(link) => p.put_as(link, Kind::Then),
            other => p.put_as(try_box(other)?, Kind::Boxed),
        };
        Ok((kind, p))
    }

    /// Stores `v` and returns `kind`, the tag the caller records for it.
    fn put_as<T, K>(&mut self, v: T, kind: K) -> K {
        self.put(v);
        kind
    }

    /// Stores an outcome (never allocates); returns its kind.
    fn put_outcome(&mut self, outcome: Outcome) -> Kind {
        match outcome {
            Outcome::Value(v) => self.put_as(v, Kind::Value),
            Outcome::Bytes(b) => self.put_as(b, Kind::Bytes),
            Outcome::Failed(e) => self.put_as(e, Kind::Failed),
            Outcome::Chunk(items) => self.put_as(items, Kind::Chunk),
            Outcome::Values(v) => self.put_as(v, Kind::Values),
            Outcome::Degraded(status, code) => self.put_as((status, code), Kind::Degraded),
        }
    }

    /// Takes the task out.
    ///
    /// # Safety
    /// `kind` is this payload's kind, and is changed so that the payload is not read
    /// again.
    unsafe fn take_task(&mut self, kind: Kind) -> Option<Task> {
        // SAFETY (each arm): the kind says what the payload holds (the caller's promise).
        match kind {
            Kind::Call => {
                let (f, arg) = unsafe { self.take::<(TaskFn, *mut c_void)>() };
                Some(Task::Call(f, arg))
            }
            Kind::Calls => {
                let (f, values) = unsafe { self.take::<(TaskFn, Box<Values>)>() };
                Some(Task::Calls(f, values))
            }
            Kind::Boxed => Some(*unsafe { self.take::<Box<Task>>() }),
            Kind::Then => Some(Task::Then(unsafe { self.take() })),
            _ => None,
        }
    }

    /// The outcome, borrowed.
    ///
    /// # Safety
    /// `kind` is this payload's kind.
    unsafe fn outcome(&self, kind: Kind) -> Option<OutcomeRef<'_>> {
        // SAFETY (each arm): the kind says what the payload holds (the caller's promise).
        unsafe {
            Some(match kind {
                Kind::Value => OutcomeRef::Value(*self.get()),
                Kind::Bytes => OutcomeRef::Bytes(self.get()),
                Kind::Failed => OutcomeRef::Failed(self.get::<Box<Failure>>()),
                Kind::Chunk => OutcomeRef::Chunk(self.get::<Box<[Outcome]>>()),
                Kind::Values => OutcomeRef::Values(self.get::<Box<Values>>()),
                Kind::Degraded => {
                    let &(status, code) = self.get::<(cf_status, c_int)>();
                    OutcomeRef::Degraded(status, code)
                }
                Kind::Empty | Kind::Call | Kind::Calls | Kind::Boxed | Kind::Then => return None,
            })
        }
    }

    /// Drops the content.
    ///
    /// # Safety
    /// `kind` is this payload's kind, and is changed so that the payload is not read or
    /// dropped again.
    unsafe fn drop_content(&mut self, kind: Kind) {
        // SAFETY (each arm): the kind says what the payload holds (the caller's promise).
        unsafe {
            match kind {
                Kind::Empty | Kind::Call | Kind::Value | Kind::Degraded => {}
                Kind::Calls => drop(self.take::<(TaskFn, Box<Values>)>()),
                Kind::Boxed => drop(self.take::<Box<Task>>()),
                Kind::Then => drop(self.take::<Shared<super::then::ThenLink>>()),
                Kind::Bytes => drop(self.take::<MallocBuf>()),
                Kind::Failed => drop(self.take::<Box<Failure>>()),
                Kind::Chunk => drop(self.take::<Box<[Outcome]>>()),
                Kind::Values => drop(self.take::<Box<Values>>()),
            }
        }
    }
}

/// One registered listener; the list is newest first. 24 bytes (a 32-byte block): the
/// listener's variant is kept in the low bits of the link (nodes are 8-aligned) and its
/// payload untagged, as in a future's slot. (With a tagged `Listener` a node was 32
/// bytes, the same block size as a future, and a callback per future then cost W5 a
/// tenth of its rate in the allocator.)
struct Node {
    /// The next node's address, with this node's variant (`UNPARK`...) in `TAG`.
    link: *mut Node,
    payload: Payload,
}

/// `Listener::Unpark`, payload `Thread`.
const UNPARK: usize = 0;
/// `Listener::Notify`, payload `(Shared<WaitSet>, usize)`.
const NOTIFY: usize = 1;
/// `Listener::Callback`, payload `(CallbackFn, *mut c_void)`.
const CALLBACK: usize = 2;
/// `Listener::Hook`, payload `Hook`.
const HOOK: usize = 3;
/// The link bits that hold the variant.
const TAG: usize = 0b11;

impl Node {
    fn next(&self) -> *mut Node {
        self.link.map_addr(|a| a & !TAG)
    }

    fn set_next(&mut self, next: *mut Node) {
        let tag = self.link.addr() & TAG;
        self.link = next.map_addr(|a| a | tag);
    }

    /// The listener, moved out.
    ///
    /// # Safety
    /// Called once per node (the payload is not read again).
    unsafe fn take_listener(&mut self) -> Listener {
        // SAFETY (each arm): the tag says what the payload holds, set in `try_node`.
        unsafe {
            match self.link.addr() & TAG {
                UNPARK => Listener::Unpark(self.payload.take()),
                NOTIFY => {
                    let (set, index) = self.payload.take();
                    Listener::Notify(set, index)
                }
                CALLBACK => {
                    let (f, userdata) = self.payload.take();
                    Listener::Callback(f, userdata)
                }
                _ => Listener::Hook(self.payload.take()),
            }
        }
    }

    /// A bitwise view of the listener, to look at (never dropped: the node keeps it).
    fn peek(&self) -> mem::ManuallyDrop<Listener> {
        // SAFETY: a bitwise copy, read once; the listener made from it is never dropped.
        let mut copy = unsafe { std::ptr::read(self) };
        // SAFETY: as above.
        mem::ManuallyDrop::new(unsafe { copy.take_listener() })
    }
}

/// A node on the heap, or the listener back when there is no memory for it.
fn try_node(listener: Listener) -> Result<*mut Node, Listener> {
    let mut payload = Payload::empty();
    let tag = match listener {
        Listener::Unpark(t) => payload.put_as(t, UNPARK),
        Listener::Notify(set, index) => payload.put_as((set, index), NOTIFY),
        Listener::Callback(f, userdata) => payload.put_as((f, userdata), CALLBACK),
        Listener::Hook(h) => payload.put_as(h, HOOK),
    };
    let mut node = Node {
        link: std::ptr::without_provenance_mut(tag),
        payload,
    };
    // SAFETY: `Node` is not zero-sized.
    let p = unsafe { alloc(Layout::new::<Node>()) }.cast::<Node>();
    if p.is_null() {
        // SAFETY: the node was never linked; its listener is taken once, here.
        return Err(unsafe { node.take_listener() });
    }
    // SAFETY: a fresh allocation with `Node`'s layout.
    unsafe { p.write(node) };
    Ok(p)
}

/// Takes a node back (from `try_node`) and returns its listener.
///
/// # Safety
/// `p` came from `try_node` and is no longer linked anywhere.
unsafe fn free_node(p: *mut Node) -> Listener {
    // SAFETY: made by `try_node`; its listener is taken once, here, and the memory freed
    // with the layout it was allocated with.
    unsafe {
        let listener = (*p).take_listener();
        dealloc(p.cast(), Layout::new::<Node>());
        listener
    }
}

/// A counted reference to a future's core: what `cf_future *` handles, queues and
/// iterators hold (see `rt::shared`).
pub(crate) type CoreRef = Shared<Core>;

/// Why `Core::try_add_listener` did not register a listener (the listener is dropped).
pub(crate) enum NotAdded {
    /// The future is already done: act on it now.
    Done,
    /// No memory for the listener's node: nothing was registered.
    NoMemory,
}

/// The shared state of one future. Handles to it are `CoreRef`s.
pub(crate) struct Core {
    state: AtomicU32,
    /// Guards `listeners`.
    lock: RawLock,
    /// The newest listener.
    listeners: UnsafeCell<*mut Node>,
    /// The task, then the outcome; its `Kind` is in `state`.
    slot: UnsafeCell<Payload>,
}

// SAFETY: the raw pointers inside (task args, results, userdata) are opaque values the C
// caller asked us to move between threads (the contract); `slot` is accessed only by the
// unique winner of `start`/`claim` or after an Acquire of FINISHED, as described above.
unsafe impl Send for Core {}
// SAFETY: as above; every shared access is through the atomic state or the listener
// lock.
unsafe impl Sync for Core {}

impl Drop for Core {
    fn drop(&mut self) {
        let kind = Kind::of(self.state.load(Ordering::Acquire));
        // SAFETY: `&mut self`: no other reference; `kind` is the slot's.
        self.slot
            .with_mut(|slot| unsafe { (*slot).drop_content(kind) });
        // Listeners of a future nobody completed (a promise released with callbacks
        // registered): freed, not run.
        // SAFETY: `&mut self`: no other reference.
        let mut p = self.listeners.with_mut(|h| unsafe { *h });
        while !p.is_null() {
            // SAFETY: `&mut self`: no other reference; every linked node came from
            // `try_node` and is freed once, here.
            let next = unsafe { (*p).next() };
            // SAFETY: as above.
            drop(unsafe { free_node(p) });
            p = next;
        }
    }
}

// SAFETY: listeners are moved to whichever thread completes the future; their pointers
// are opaque C values that the contract lets us hand to any thread.
unsafe impl Send for Listener {}

impl Core {
    /// The one allocation of a future; `None` (the slot's content dropped) when memory
    /// runs out.
    fn with_slot(kind: Kind, slot: Payload) -> Option<CoreRef> {
        Shared::try_new(Core {
            state: AtomicU32::new(PENDING | kind.bits()),
            lock: RawLock::new(),
            listeners: UnsafeCell::new(std::ptr::null_mut()),
            slot: UnsafeCell::new(slot),
        })
        .ok()
    }

    /// A pending future that will run `task`; `None` (the task dropped, never run) when
    /// memory runs out.
    pub(crate) fn with_task(task: Task) -> Option<CoreRef> {
        let (kind, slot) = Payload::with_task(task).ok()?;
        Self::with_slot(kind, slot)
    }

    /// A pending promise (completed by the caller); `None` when memory runs out.
    pub(crate) fn try_promise() -> Option<CoreRef> {
        Self::with_slot(Kind::Empty, Payload::empty())
    }

    /// A pending promise, for tests, which do not run out of memory.
    #[cfg(test)]
    pub(crate) fn promise() -> CoreRef {
        Self::try_promise().expect("out of memory in a test")
    }

    /// The current phase.
    pub(crate) fn phase(&self) -> Phase {
        // Acquire: a caller that sees FINISHED goes on to read the outcome.
        match self.state.load(Ordering::Acquire) & PHASE {
            PENDING => Phase::Pending,
            RUNNING | COMPLETING => Phase::Running,
            FINISHED => Phase::Finished,
            CANCELLED => Phase::Cancelled,
            _ => unreachable!("invalid future phase"),
        }
    }

    /// Finished or cancelled.
    pub(crate) fn is_done(&self) -> bool {
        matches!(self.phase(), Phase::Finished | Phase::Cancelled)
    }

    /// The outcome, once finished (`None` while not done and when cancelled).
    pub(crate) fn outcome(&self) -> Option<OutcomeRef<'_>> {
        // Acquire: pairs with `publish`, which wrote the slot and then its kind.
        let state = self.state.load(Ordering::Acquire);
        if state & PHASE != FINISHED {
            return None;
        }
        // SAFETY: FINISHED was acquired with the kind; after publish the slot is never
        // written again until drop, so shared reads are fine (also after the closure).
        let o = self
            .slot
            .with(|slot| unsafe { (*slot).outcome(Kind::of(state)) });
        debug_assert!(o.is_some(), "finished future without an outcome");
        o
    }

    /// PENDING → RUNNING. `Ok(())` if this call moved it; otherwise the phase it is in.
    pub(crate) fn set_running(&self) -> Result<(), Phase> {
        // AcqRel: the winner owns the slot (a task stays in it: see `start`).
        self.transition(
            |cur| match cur & PHASE {
                PENDING => Ok(()),
                _ => Err(self.phase()),
            },
            |cur| (cur & !PHASE) | RUNNING,
        )
        .map(drop)
    }

    /// Moves the state word by a CAS loop, with AcqRel on success: `check` sees the
    /// current word and lets the move happen (`Ok`) or stops it with what the caller
    /// returns; `next` makes the new word from it. Gives the word it replaced.
    fn transition<E>(
        &self,
        mut check: impl FnMut(u32) -> Result<(), E>,
        next: impl Fn(u32) -> u32,
    ) -> Result<u32, E> {
        let mut cur = self.state.load(Ordering::Relaxed);
        loop {
            check(cur)?;
            match self.state.compare_exchange_weak(
                cur,
                next(cur),
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(cur),
                Err(actual) => cur = actual,
            }
        }
    }

    /// For a worker: start the future and take its task, or `None` if it was cancelled
    /// (or completed by someone else) before it started.
    pub(crate) fn start(&self) -> Option<Task> {
        // AcqRel: the winner owns the slot and takes the task out; the kind becomes
        // `Empty` in the same step, so nobody drops the task again.
        let cur = self
            .transition(
                |cur| {
                    if cur & PHASE == PENDING {
                        Ok(())
                    } else {
                        Err(())
                    }
                },
                |cur| (cur & !(PHASE | KIND)) | RUNNING,
            )
            .ok()?;
        // SAFETY: winning PENDING → RUNNING makes us the only one touching the slot until
        // we claim it; `cur` has its kind, now recorded as `Empty`. (A promise marked
        // running through the executor path has no task: `None`.)
        self.slot
            .with_mut(|slot| unsafe { (*slot).take_task(Kind::of(cur)) })
    }

    /// Completes the future with `outcome` (result, byte result or failure).
    /// `Err` (with the outcome back, to be dropped) if it was already done.
    pub(crate) fn finish(&self, outcome: Outcome) -> Result<(), Outcome> {
        // AcqRel: the winner owns the slot and must see earlier writes to it. The kind
        // becomes `Empty`: the winner drops what the slot held (a task not started).
        let claimed = self.transition(
            |cur| match cur & PHASE {
                PENDING | RUNNING => Ok(()),
                COMPLETING => {
                    // Another completer is writing its outcome: wait for it to publish,
                    // so that a caller told "already done" finds the future done.
                    self.wait_published();
                    Err(())
                }
                FINISHED | CANCELLED => Err(()),
                _ => unreachable!("invalid future phase"),
            },
            |cur| (cur & !(PHASE | KIND)) | COMPLETING,
        );
        let Ok(cur) = claimed else {
            return Err(outcome);
        };
        // SAFETY: we won the claim: no one else reads or writes the slot until FINISHED;
        // `cur` has the kind of what it held.
        let kind = self.slot.with_mut(|slot| unsafe {
            (*slot).drop_content(Kind::of(cur));
            (*slot).put_outcome(outcome)
        });
        // Release: publishes the outcome with the FINISHED phase and its kind. COMPLETING
        // + 1 == FINISHED and the kind bits are 0 now, so the add changes only the phase
        // and the kind, and keeps LISTENERS as it is now.
        let prev = self
            .state
            .fetch_add((FINISHED - COMPLETING) + kind.bits(), Ordering::Release);
        if prev & LISTENERS != 0 {
            self.fire();
        }
        Ok(())
    }

    /// Waits out another thread's COMPLETING phase (a few stores long; it never runs user
    /// code), so that whoever lost the race to complete sees the future done.
    fn wait_published(&self) {
        let backoff = Backoff::new();
        while self.state.load(Ordering::Acquire) & PHASE == COMPLETING {
            if cfg!(cfutures_loom) {
                thread::yield_now();
            } else {
                backoff.snooze();
            }
        }
    }

    /// Python's `cancel()`: true if the future is now cancelled (also if it already was).
    pub(crate) fn cancel(&self) -> bool {
        // AcqRel: orders the cancellation before the listeners we may now drain.
        let cur = match self.transition(
            |cur| match cur & PHASE {
                PENDING => Ok(()),
                CANCELLED => Err(true),
                _ => Err(false),
            },
            |cur| (cur & !PHASE) | CANCELLED,
        ) {
            Ok(cur) => cur,
            Err(already) => return already,
        };
        if cur & LISTENERS != 0 {
            self.fire();
        }
        true
    }

    /// Unlinks the whole list and returns it oldest first (relinked in place: completing
    /// a future never allocates).
    fn take_listeners(&self) -> *mut Node {
        let guard = self.lock.lock();
        // SAFETY: the lock is held.
        let mut p = self
            .listeners
            .with_mut(|h| unsafe { mem::replace(&mut *h, std::ptr::null_mut()) });
        drop(guard);
        let mut oldest_first = std::ptr::null_mut();
        while !p.is_null() {
            // SAFETY: every node in the list came from `try_node`; the list is ours now.
            unsafe {
                let next = (*p).next();
                (*p).set_next(oldest_first);
                oldest_first = p;
                p = next;
            }
        }
        oldest_first
    }

    /// Drains the listeners of a done future: wakes blocked threads and multi-waits
    /// first, then runs callbacks in registration order, outside any lock.
    fn fire(&self) {
        let list = self.take_listeners();
        let mut p = list;
        while !p.is_null() {
            // SAFETY: our unlinked list, whose nodes stay alive until freed below.
            unsafe {
                match &*(*p).peek() {
                    Listener::Unpark(t) => t.unpark(),
                    Listener::Notify(set, index) => set.notify(*index),
                    Listener::Callback(..) | Listener::Hook(_) => {}
                }
                p = (*p).next();
            }
        }
        let mut p = list;
        while !p.is_null() {
            // SAFETY: as above; each node is freed once, here, after its last use.
            let next = unsafe { (*p).next() };
            match unsafe { free_node(p) } {
                Listener::Callback(f, userdata) => self.call(f, userdata),
                Listener::Hook(h) => h.fire(self),
                _ => {}
            }
            p = next;
        }
    }

    fn call(&self, f: CallbackFn, userdata: *mut c_void) {
        let me = self as *const Core as *mut cf_future;
        // SAFETY: the callback gets this future borrowed for the call (we are inside a
        // method of it, so it is alive) and its own userdata, as the contract says.
        context::call_callback(|| unsafe { f(me, userdata) });
    }

    /// Registers a listener, unless the future is already done or there is no memory for
    /// its node (then nothing is registered; a done future is reported as done, since the
    /// caller can act on it without registering).
    pub(crate) fn try_add_listener(&self, l: Listener) -> Result<(), NotAdded> {
        let Ok(node) = try_node(l) else {
            return Err(if self.is_done() {
                NotAdded::Done
            } else {
                NotAdded::NoMemory
            });
        };
        let guard = self.lock.lock();
        // AcqRel: see the module comment (a done phase lets the caller read the outcome).
        let prev = self.state.fetch_or(LISTENERS, Ordering::AcqRel);
        match prev & PHASE {
            FINISHED | CANCELLED => {
                drop(guard);
                // SAFETY: never linked.
                drop(unsafe { free_node(node) });
                Err(NotAdded::Done)
            }
            _ => {
                // SAFETY: `node` is ours until linked; the lock guards the list.
                self.listeners.with_mut(|h| unsafe {
                    (*node).set_next(*h);
                    *h = node;
                });
                Ok(())
            }
        }
    }

    /// Removes the multi-wait registration `(set, index)`, if it is still registered.
    pub(crate) fn remove_notify(&self, set: &Shared<WaitSet>, index: usize) {
        self.remove_listener(
            |l| matches!(l, Listener::Notify(s, i) if *i == index && Shared::ptr_eq(s, set)),
        );
    }

    /// Whether the future finished with a failure (`CF_TASK_FAILED`, `CF_BROKEN`, or an
    /// outcome lost to memory exhaustion).
    pub(crate) fn failed(&self) -> bool {
        self.outcome().is_some_and(|o| o.error().is_some())
    }

    /// Removes the first listener that `matches`, if it is still registered.
    pub(crate) fn remove_listener(&self, matches: impl Fn(&Listener) -> bool) {
        let guard = self.lock.lock();
        // SAFETY: the lock is held; every linked node came from `try_node`.
        let found = self.listeners.with_mut(|h| unsafe {
            let mut prev: *mut Node = std::ptr::null_mut();
            let mut node = *h;
            while !node.is_null() {
                if matches(&(*node).peek()) {
                    if prev.is_null() {
                        *h = (*node).next();
                    } else {
                        (*prev).set_next((*node).next());
                    }
                    return node;
                }
                prev = node;
                node = (*node).next();
            }
            std::ptr::null_mut()
        });
        drop(guard);
        if !found.is_null() {
            // SAFETY: unlinked above; dropped outside the lock.
            drop(unsafe { free_node(found) });
        }
    }

    /// Adds a done callback: run now on this thread if the future is done, else exactly
    /// once by whoever finishes or cancels it. `false` (and nothing registered or run)
    /// when there is no memory to register it on a future not yet done.
    pub(crate) fn add_callback(&self, f: CallbackFn, userdata: *mut c_void) -> bool {
        match self.try_add_listener(Listener::Callback(f, userdata)) {
            Ok(()) => true,
            Err(NotAdded::Done) => {
                self.call(f, userdata);
                true
            }
            Err(NotAdded::NoMemory) => false,
        }
    }

    /// Blocks until done or `deadline`; true if done. On a pool worker the thread runs
    /// queued tasks of its pool meanwhile (see `waiter::block_on`).
    pub(crate) fn wait(&self, deadline: Deadline) -> bool {
        if self.is_done() {
            return true;
        }
        if deadline.expired() {
            return false;
        }
        super::pool::note_wait();
        // A short spin first: tiny tasks often finish within microseconds, and parking
        // costs two system calls. (Not under loom: a spin only lets time pass, which the
        // model does not have, and it would multiply the interleavings to explore.)
        if !cfg!(cfutures_loom) {
            let backoff = Backoff::new();
            while !backoff.is_completed() {
                backoff.snooze();
                if self.is_done() {
                    return true;
                }
            }
        }
        let me = thread::current();
        let id = me.id();
        match self.try_add_listener(Listener::Unpark(me)) {
            Ok(()) => {}
            Err(NotAdded::Done) => return true,
            // No room to register: poll instead, which needs no memory.
            Err(NotAdded::NoMemory) => return self.poll_until_done(deadline),
        }
        let done = block_on(deadline, || self.is_done());
        if !done {
            self.remove_listener(|l| matches!(l, Listener::Unpark(t) if t.id() == id));
        }
        done
    }

    /// Waits without registering (when memory ran out for a registration): sleeps in
    /// steps of at most a millisecond and checks again.
    fn poll_until_done(&self, deadline: Deadline) -> bool {
        loop {
            if self.is_done() {
                return true;
            }
            let step = match deadline.remaining() {
                Some(d) if d.is_zero() => return false,
                Some(d) => d.min(POLL_STEP),
                None => POLL_STEP,
            };
            thread::park_timeout(step);
        }
    }
}

/// How long a wait that could not register sleeps between checks.
const POLL_STEP: std::time::Duration = std::time::Duration::from_millis(1);

#[cfg(test)]
impl Core {
    /// Listeners still registered (the tests check that none is left behind).
    pub(crate) fn listener_count(&self) -> usize {
        let _guard = self.lock.lock();
        let mut n = 0;
        // SAFETY: the lock is held; linked nodes are live.
        self.listeners.with(|h| unsafe {
            let mut p = *h;
            while !p.is_null() {
                n += 1;
                p = (*p).next();
            }
        });
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rt::task::{Slots, no_bytes};
    use std::sync::atomic::AtomicUsize;

    static CALLS: AtomicUsize = AtomicUsize::new(0);
    unsafe extern "C-unwind" fn count(_: *mut cf_future, ud: *mut c_void) {
        CALLS.fetch_add(ud as usize, Ordering::SeqCst);
    }

    #[test]
    #[cfg(all(target_pointer_width = "64", not(cfutures_loom)))]
    fn a_future_is_one_48_byte_block() {
        // 32 bytes of core and a word of count: a 48-byte malloc chunk, not 64.
        assert_eq!(mem::size_of::<Core>(), 32);
        assert_eq!(mem::size_of::<Payload>(), 16);
        // A listener node: 24 bytes, a 32-byte chunk, smaller than a future's.
        assert_eq!(mem::size_of::<Node>(), 24);
    }

    unsafe extern "C-unwind" fn ident(arg: *mut c_void) -> *mut c_void {
        arg
    }

    #[test]
    fn every_slot_kind_reads_back_and_drops() {
        // Each outcome kind, published on a promise, reads back as itself.
        let failure = Outcome::failed(crate::status::CF_TASK_FAILED, 5, "boom");
        type Check = fn(OutcomeRef<'_>) -> bool;
        let cases: Vec<(Outcome, Check)> = vec![
            (
                Outcome::Value(7 as *mut c_void),
                |o| matches!(o, OutcomeRef::Value(p) if p as usize == 7),
            ),
            (
                failure,
                |o| matches!(o, OutcomeRef::Failed(e) if e.code == 5),
            ),
            (Outcome::Degraded(3, 4), |o| {
                matches!(o, OutcomeRef::Degraded(3, 4))
            }),
            (
                Outcome::Chunk(vec![Outcome::Value(std::ptr::null_mut())].into()),
                |o| matches!(o, OutcomeRef::Chunk(items) if items.len() == 1),
            ),
        ];
        for (outcome, check) in cases {
            let f = Core::promise();
            assert!(f.outcome().is_none());
            assert!(f.finish(outcome).is_ok());
            assert!(check(f.outcome().expect("finished")));
            assert!(f.outcome().unwrap().error().is_some() == f.failed());
        }
        // A call task is taken by `start` and not dropped again. A chunk of calls (its
        // values box stored in the slot) and a boxed task (a chunk of byte items) are
        // dropped by whoever ends the future first: a completer, a cancel, or the drop.
        let call = Core::with_task(Task::Call(ident, 9 as *mut c_void)).unwrap();
        match call.start() {
            Some(Task::Call(_, a)) => assert_eq!(a as usize, 9),
            _ => panic!("expected the call task"),
        }
        assert!(call.start().is_none());
        let calls = || {
            let values = Box::new(Values {
                values: Slots::Owned(vec![std::ptr::null_mut(); 2].into()),
                failure: None,
            });
            Core::with_task(Task::Calls(ident, values)).unwrap()
        };
        let bytes = || {
            let input = MallocBuf::copy_of(b"abc").unwrap();
            Core::with_task(Task::ByteChunk(no_bytes, vec![input].into())).unwrap()
        };
        for make in [calls as fn() -> CoreRef, bytes] {
            let broken = make();
            assert!(broken.finish(Outcome::no_memory()).is_ok());
            assert!(broken.start().is_none());
            let cancelled = make();
            assert!(cancelled.cancel());
            assert!(cancelled.start().is_none());
            drop(make());
        }
        assert!(matches!(calls().start(), Some(Task::Calls(_, v)) if v.values.len() == 2));
        assert!(matches!(bytes().start(), Some(Task::ByteChunk(_, i)) if i.len() == 1));
    }

    #[test]
    fn promise_life_cycle() {
        let f = Core::promise();
        assert_eq!(f.phase(), Phase::Pending);
        assert_eq!(f.set_running(), Ok(()));
        assert_eq!(f.set_running(), Err(Phase::Running));
        assert!(!f.cancel());
        assert!(f.add_callback(count, std::ptr::without_provenance_mut(1)));
        assert!(f.finish(Outcome::Value(7 as *mut c_void)).is_ok());
        assert!(f.finish(Outcome::Value(8 as *mut c_void)).is_err());
        assert!(matches!(f.outcome(), Some(OutcomeRef::Value(p)) if p as usize == 7));
        assert!(f.add_callback(count, std::ptr::without_provenance_mut(10)));
        assert_eq!(CALLS.load(Ordering::SeqCst), 11);
    }

    #[test]
    fn cancel_and_wait_timeout() {
        let f = Core::promise();
        assert!(!f.wait(Deadline::from_timeout(0.01).unwrap()));
        assert!(f.cancel());
        assert!(f.cancel());
        assert!(f.wait(Deadline::FOREVER));
        assert!(f.outcome().is_none());
        assert!(f.finish(Outcome::Value(std::ptr::null_mut())).is_err());
    }

    #[test]
    fn cross_thread_completion_wakes_waiter() {
        for _ in 0..200 {
            let f = Core::promise();
            let g = f.clone();
            let t =
                std::thread::spawn(move || g.finish(Outcome::Value(std::ptr::null_mut())).is_ok());
            assert!(f.wait(Deadline::FOREVER));
            assert!(t.join().unwrap());
        }
    }
}
