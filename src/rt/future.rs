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
    owned::{OwnedCallback, OwnedTask, OwnedValue},
    shared::{Shared, try_box},
    sync::{AtomicU32, Ordering, RawLock, Thread, UnsafeCell, alloc, dealloc, thread},
    task::{Failure, MallocBuf, Outcome, OutcomeRef, Task, TaskFn, Values},
    time::Deadline,
    waiter::{WaitSet, block_on},
};
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
/// A worker won `start` of an owned task (`Kind::Owned`) and is taking it out of the slot;
/// readers see "running". A completer other than the worker (the deadline timer) waits
/// for RUNNING before it claims the slot (see `start`).
const STARTING: u32 = 5;
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

/// A done callback: `fn(future, userdata)`, given the future's core, borrowed for the
/// call. The engine's own type: the C layer (`src/future.rs`) passes `cf_callback`s in
/// as this type, since a `cf_future *` is the address of the `Core`.
pub(crate) type CallbackFn = unsafe extern "C-unwind" fn(f: *const Core, userdata: *mut c_void);

/// Someone to tell when the future is done.
pub(crate) enum Listener {
    /// A thread blocked on this future alone.
    Unpark(Thread),
    /// A multi-future wait (`cf_wait`, `cf_as_completed`), with this future's index there.
    Notify(Shared<WaitSet>, usize),
    /// A done callback with its userdata.
    Callback(CallbackFn, *mut c_void),
    /// A done callback whose userdata is freed after it ran, or when the future is
    /// dropped without finishing (`cf_future_add_done_callback_owned`).
    OwnedCallback(Box<OwnedCallback>),
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
    /// A task that owns its data or has a deadline (`cf_submit_task`), as its box.
    Owned,
    /// A pointer result with the function that frees it (`OwnedValue`).
    OwnedValue,
    /// `Task::Then(link)` (a continuation), stored as its one word.
    Then,
}

impl Kind {
    const ALL: [Kind; 13] = [
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
        Kind::Owned,
        Kind::OwnedValue,
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

/// A counted reference to a future's core: what `cf_future *` handles, queues and
/// iterators hold (see `rt::shared`).
pub(crate) type CoreRef = Shared<Core>;

/// What `Core::expire` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(crate) enum Expiry {
    /// It finished the future with the deadline's outcome.
    Finished,
    /// The task is running and `running_too` was false: the caller decides.
    Running,
    /// The future was already done (or another completer won).
    #[default]
    Done,
}

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
    #[inline]
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
    #[inline]
    pub(crate) fn with_task(task: Task) -> Option<CoreRef> {
        // `cf_submit`'s task on its own path. It owns nothing, so it is forgotten rather
        // than dropped: its fields are copied out, which leaves `task` to be dropped at
        // the end of the scope, and that drop glue (for every kind of task, not inlined)
        // was called on every submit (W1: about 20 instructions a task).
        if let Task::Call(f, arg) = task {
            std::mem::forget(task);
            let mut slot = Payload::empty();
            slot.put((f, arg));
            return Self::with_slot(Kind::Call, slot);
        }
        let (kind, slot) = Payload::with_task(task).ok()?;
        Self::with_slot(kind, slot)
    }

    /// `with_task` that gives the task back (never dropped, so never freed or run) when
    /// memory runs out.
    pub(crate) fn with_task_or_back(task: Task) -> Result<CoreRef, Task> {
        let (kind, slot) = Payload::with_task(task)?;
        Shared::try_new(Core {
            state: AtomicU32::new(PENDING | kind.bits()),
            lock: RawLock::new(),
            listeners: UnsafeCell::new(std::ptr::null_mut()),
            slot: UnsafeCell::new(slot),
        })
        .map_err(|mut core| {
            // SAFETY: our own value, never shared; the slot holds a task of `kind`,
            // taken out once here, and the state then records the slot as empty.
            let task = core
                .slot
                .with_mut(|slot| unsafe { (*slot).take_task(kind) });
            core.state = AtomicU32::new(PENDING);
            task.expect("the slot holds the task just stored")
        })
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
            RUNNING | COMPLETING | STARTING => Phase::Running,
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

    /// Where a finished future keeps its pointer result (`cf_future_result_ref`): an
    /// address inside this core, stable until the core is freed; `None` otherwise.
    pub(crate) fn value_slot(&self) -> Option<*const *mut c_void> {
        // Acquire: as in `outcome`.
        let state = self.state.load(Ordering::Acquire);
        if state & PHASE != FINISHED {
            return None;
        }
        // SAFETY: as in `outcome`: the slot is not written again until drop.
        self.slot.with(|slot| unsafe {
            match Kind::of(state) {
                Kind::Value => Some((*slot).get::<*mut c_void>() as *const *mut c_void),
                Kind::OwnedValue => Some(&raw const (*slot).get::<OwnedValue>().value),
                _ => None,
            }
        })
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
        // `Empty` in the same step, so nobody drops the task again. An owned task (which
        // may have a deadline, whose timer may claim a RUNNING future at any time) goes
        // through STARTING instead, keeping its kind until it is taken out.
        let cur = self
            .transition(
                |cur| {
                    if cur & PHASE == PENDING {
                        Ok(())
                    } else {
                        Err(())
                    }
                },
                |cur| {
                    if Kind::of(cur) == Kind::Owned {
                        (cur & !PHASE) | STARTING
                    } else {
                        (cur & !(PHASE | KIND)) | RUNNING
                    }
                },
            )
            .ok()?;
        // SAFETY: winning PENDING → RUNNING (or STARTING) makes us the only one touching
        // the slot until we claim it (or publish RUNNING); `cur` has its kind, now
        // recorded as `Empty` (or still `Owned`, cleared below). (A promise marked
        // running through the executor path has no task: `None`.)
        let task = self
            .slot
            .with_mut(|slot| unsafe { (*slot).take_task(Kind::of(cur)) });
        if Kind::of(cur) == Kind::Owned {
            // Release: orders the take of the task above before the write of a completer
            // that acquires RUNNING (`claim` waits out STARTING). STARTING - RUNNING and
            // the kind's bits are exactly what the word holds above LISTENERS' neighbours,
            // so the subtraction leaves LISTENERS as it is.
            self.state
                .fetch_sub((STARTING - RUNNING) + Kind::Owned.bits(), Ordering::Release);
        }
        task
    }

    /// Completes the future with `outcome` (result, byte result or failure).
    /// `Err` (with the outcome back, to be dropped) if it was already done.
    #[inline]
    pub(crate) fn finish(&self, outcome: Outcome) -> Result<(), Outcome> {
        match self.claim(|_| Ok(())) {
            Ok(cur) => {
                self.publish(cur, outcome);
                Ok(())
            }
            Err(()) => Err(outcome),
        }
    }

    /// For the deadline timer: finishes the future with the outcome `make` builds from
    /// whether the task had started (`true`: RUNNING), if it is PENDING, or RUNNING and
    /// `running_too`. A task still in the slot is dropped (its `arg_free` runs).
    pub(crate) fn expire(&self, running_too: bool, make: impl FnOnce(bool) -> Outcome) -> Expiry {
        let mut running = false;
        let claimed = self.claim(|phase| match phase {
            PENDING => Ok(()),
            RUNNING if running_too => {
                running = true;
                Ok(())
            }
            RUNNING => Err(Expiry::Running),
            _ => Err(Expiry::Done),
        });
        match claimed {
            Ok(cur) => {
                self.publish(cur, make(running));
                Expiry::Finished
            }
            Err(e) => e,
        }
    }

    /// PENDING or RUNNING (as `allow` lets it, seeing the phase) → COMPLETING: the
    /// winner owns the slot. Gives the word it replaced; `Err` (what `allow` said, or
    /// `Expiry::Done` as `E::default`) if the future is done or another completer won.
    #[inline]
    fn claim<E: Default>(&self, mut allow: impl FnMut(u32) -> Result<(), E>) -> Result<u32, E> {
        // AcqRel: the winner owns the slot and must see earlier writes to it. The kind
        // becomes `Empty`: the winner drops what the slot held (a task not started).
        self.transition(
            |cur| match cur & PHASE {
                phase @ (PENDING | RUNNING) => allow(phase),
                STARTING => {
                    // A worker is taking its task out of the slot: wait until it has, then
                    // look again (the CAS fails on the stale word and `check` sees the new
                    // one).
                    self.wait_out(STARTING);
                    Ok(())
                }
                COMPLETING => {
                    // Another completer is writing its outcome: wait for it to publish,
                    // so that a caller told "already done" finds the future done.
                    self.wait_published();
                    Err(E::default())
                }
                FINISHED | CANCELLED => Err(E::default()),
                _ => unreachable!("invalid future phase"),
            },
            |cur| (cur & !(PHASE | KIND)) | COMPLETING,
        )
    }

    /// After `claim` won with the word `cur`: writes `outcome`, publishes FINISHED, then
    /// drops what the slot held before (a task not started: outside the COMPLETING
    /// window, since dropping an owned task runs its `arg_free`, user code that may call
    /// back into this future) and fires the listeners.
    #[inline]
    fn publish(&self, cur: u32, outcome: Outcome) {
        let mut old = Payload::empty();
        // SAFETY: we won the claim: no one else reads or writes the slot until FINISHED;
        // `cur` has the kind of what it held, which moves to `old`.
        let kind = self.slot.with_mut(|slot| unsafe {
            std::ptr::swap(slot, &mut old);
            (*slot).put_outcome(outcome)
        });
        // Release: publishes the outcome with the FINISHED phase and its kind. COMPLETING
        // + 1 == FINISHED and the kind bits are 0 now, so the add changes only the phase
        // and the kind, and keeps LISTENERS as it is now.
        let prev = self
            .state
            .fetch_add((FINISHED - COMPLETING) + kind.bits(), Ordering::Release);
        // SAFETY: `old` holds what the slot held, of the kind in `cur`; dropped once.
        unsafe { old.drop_content(Kind::of(cur)) };
        if prev & LISTENERS != 0 {
            self.fire();
        }
    }

    /// Waits out another thread's COMPLETING phase (a few stores long; it never runs user
    /// code), so that whoever lost the race to complete sees the future done.
    fn wait_published(&self) {
        self.wait_out(COMPLETING);
    }

    /// Spins while the phase is `phase` (COMPLETING or STARTING: a few stores long, no
    /// user code). Acquire: pairs with the Release that ends the phase.
    fn wait_out(&self, phase: u32) {
        let backoff = Backoff::new();
        while self.state.load(Ordering::Acquire) & PHASE == phase {
            if cfg!(cfutures_loom) {
                thread::yield_now();
            } else {
                backoff.snooze();
            }
        }
    }

    /// Python's `cancel()`: true if the future is now cancelled (also if it already was).
    /// The task is dropped here (an owned task's `arg_free` runs in this thread).
    pub(crate) fn cancel(&self) -> bool {
        // AcqRel: orders the cancellation before the listeners we may now drain, and
        // makes the winner the slot's owner (the kind becomes `Empty` in the same step).
        let cur = match self.transition(
            |cur| match cur & PHASE {
                PENDING => Ok(()),
                CANCELLED => Err(true),
                _ => Err(false),
            },
            |cur| (cur & !(PHASE | KIND)) | CANCELLED,
        ) {
            Ok(cur) => cur,
            Err(already) => return already,
        };
        // SAFETY: winning PENDING → CANCELLED makes us the slot's only user for good (no
        // one starts, claims or reads a cancelled future's slot); `cur` has its kind,
        // now recorded as `Empty`, so it is dropped once, here.
        self.slot
            .with_mut(|slot| unsafe { (*slot).drop_content(Kind::of(cur)) });
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
                    Listener::Callback(..) | Listener::OwnedCallback(..) | Listener::Hook(_) => {}
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
                // Its userdata is freed when the box drops, after the call.
                Listener::OwnedCallback(cb) => self.call(cb.f, cb.userdata),
                Listener::Hook(h) => h.fire(self),
                _ => {}
            }
            p = next;
        }
    }

    fn call(&self, f: CallbackFn, userdata: *mut c_void) {
        let me: *const Core = self;
        // SAFETY: the callback gets this future borrowed for the call (we are inside a
        // method of it, so it is alive) and its own userdata, as the contract says.
        context::call_callback(|| unsafe { f(me, userdata) });
    }

    /// Registers a listener, unless the future is already done or there is no memory for
    /// its node (then nothing is registered; a done future is reported as done, since the
    /// caller can act on it without registering).
    pub(crate) fn try_add_listener(&self, l: Listener) -> Result<(), NotAdded> {
        self.try_add_listener_or_back(l).map_err(|(why, _)| why)
    }

    /// `try_add_listener` that gives the listener back when it was not registered.
    fn try_add_listener_or_back(&self, l: Listener) -> Result<(), (NotAdded, Listener)> {
        let node = match try_node(l) {
            Ok(node) => node,
            Err(l) => {
                let why = if self.is_done() {
                    NotAdded::Done
                } else {
                    NotAdded::NoMemory
                };
                return Err((why, l));
            }
        };
        // SAFETY: a fresh node, ours.
        unsafe { self.link_node(node) }
    }

    /// Registers `hook` in the node room `room` (no allocation): `Err(NotAdded::Done)`,
    /// with the hook dropped, if the future is already done.
    ///
    /// # Safety
    /// `room` is used for this one registration only, and `hook` owns a reference to the
    /// object that holds `room` (see `HookNode`).
    pub(crate) unsafe fn try_add_hook_in(
        &self,
        room: &HookNode,
        hook: Hook,
    ) -> Result<(), NotAdded> {
        // SAFETY: the caller's promise.
        let node = unsafe { room.fill(hook) };
        // SAFETY: the node is ours until linked.
        unsafe { self.link_node(node) }.map_err(|(why, _)| why)
    }

    /// Links `node` at the head of the list, unless the future is done (then the node is
    /// taken back and its listener returned).
    ///
    /// # Safety
    /// `node` came from `try_node` or `HookNode::fill` and is not linked anywhere.
    unsafe fn link_node(&self, node: *mut Node) -> Result<(), (NotAdded, Listener)> {
        let guard = self.lock.lock();
        // AcqRel: see the module comment (a done phase lets the caller read the outcome).
        let prev = self.state.fetch_or(LISTENERS, Ordering::AcqRel);
        match prev & PHASE {
            FINISHED | CANCELLED => {
                drop(guard);
                // SAFETY: never linked.
                Err((NotAdded::Done, unsafe { free_node(node) }))
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

    /// Adds a done callback whose userdata is freed after it ran, or when the future is
    /// dropped unfinished. `Err` with the callback back (nothing called) when there is no
    /// memory to register it on a future not yet done.
    pub(crate) fn add_owned_callback(
        &self,
        cb: Box<OwnedCallback>,
    ) -> Result<(), Box<OwnedCallback>> {
        match self.try_add_listener_or_back(Listener::OwnedCallback(cb)) {
            Ok(()) => Ok(()),
            Err((NotAdded::Done, Listener::OwnedCallback(cb))) => {
                self.call(cb.f, cb.userdata);
                Ok(())
            }
            Err((_, Listener::OwnedCallback(cb))) => Err(cb),
            Err(_) => unreachable!("the listener given back is the one passed in"),
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

mod storage;
pub(crate) use storage::HookNode;
use storage::{Node, Payload, free_node, try_node};
#[cfg(test)]
mod tests;
