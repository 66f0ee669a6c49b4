//! Continuations (`cf_future_then`): a future that runs `fn(arg, antecedent)` once its
//! antecedent is done, on a thread pool or inline in the completing thread.
//!
//! # Protocol
//!
//! `then` makes the continuation's future up front, holding a `Task::Then` with a shared
//! `ThenLink` (the function, its argument, and a place for the antecedent), and registers
//! a `Hook` on the antecedent that owns a reference to the link and one to the new
//! future. Nothing points from the continuation back to the antecedent while it waits,
//! so an antecedent that is never finished frees the hook, and with it the continuation's
//! last engine reference, when it is released (no cycle).
//!
//! When the antecedent is done, the hook stores a counted reference to it in the link
//! (the only write to that cell, before the task can be started: the task reads it only
//! after it is queued or run here) and then:
//! - inline (`ex` NULL): starts and runs the task now, in this thread (`run_inline`);
//! - on a pool: takes the future out of the pool's `Conts` and queues it as a task
//!   (`Pool::enqueue`). A pool shut down in between refuses it: it finishes then with
//!   `CF_SHUTDOWN` (or `CF_BROKEN`).
//!
//! A continuation cancelled before that is simply dropped (its task never starts). The
//! task runs like any other (`Core::start`, then `finish`), so a cancel racing with it is
//! settled by the future's own state word.
//!
//! # Shutdown
//!
//! A pool keeps the continuations it has accepted whose antecedent is not done yet in
//! `Conts` (a slab: O(1) to add and remove). Shutdown closes it and finishes every one
//! of them with `CF_SHUTDOWN`; a later `then` on that pool is refused. A hook that fires
//! after that finds its entry gone (the set is closed) and does nothing: it never queues
//! on a pool that was shut down (and it holds the pool's `Arc`, so even the check touches
//! live memory).
//!
//! # Depth
//!
//! An inline continuation that finishes a future with inline continuations of its own
//! would recurse once per link. `run_inline` nests at most `MAX_NEST` levels per thread;
//! deeper ones go to a per-thread queue that the outermost level drains in a loop. A
//! chain of any length then runs in bounded stack, and no lock is held while user code
//! runs (hooks fire outside the future's listener lock).

use super::{
    context::{UserError, call_task},
    future::{Core, CoreRef, Listener, NotAdded},
    hook::{Hook, HookHead, HookVt},
    pool::{Pool, SubmitError},
    shared::Shared,
    sync::{Arc, AtomicUsize, Mutex, Ordering, UnsafeCell, lock, thread_local},
    task::{Outcome, Task},
};
use crate::{
    future::cf_future,
    status::{CF_BROKEN, CF_SHUTDOWN},
};
use std::{
    cell::{Cell, RefCell},
    collections::VecDeque,
    ffi::c_void,
    ptr::NonNull,
};

/// `cf_then_fn`.
pub(crate) type ThenFn =
    unsafe extern "C-unwind" fn(arg: *mut c_void, antecedent: *mut cf_future) -> *mut c_void;

/// How deeply inline continuations nest in one thread before they are queued instead.
const MAX_NEST: usize = 16;

/// The message of a continuation whose pool was shut down before its antecedent was done.
const SHUT_MESSAGE: &str =
    "the executor was shut down before the continuation's antecedent was done";

/// Where a continuation runs.
enum Target {
    /// In the thread that finishes the antecedent.
    Inline,
    /// On this thread pool; `slot` is its entry in the pool's `Conts`.
    Pool { pool: Arc<Pool>, slot: AtomicUsize },
}

/// What a continuation's task and its hook share. See the module comment.
#[repr(C)]
pub(crate) struct ThenLink {
    head: HookHead,
    f: ThenFn,
    arg: *mut c_void,
    /// The antecedent, once it is done (written once, by the hook).
    antecedent: UnsafeCell<Option<CoreRef>>,
    target: Target,
}

// SAFETY: `arg` is an opaque C value the caller asked us to hand to another thread (the
// contract); `antecedent` is written once before the task can start and read only by the
// task or the last owner (see the module comment).
unsafe impl Send for ThenLink {}
// SAFETY: as above.
unsafe impl Sync for ThenLink {}

static THEN_VT: HookVt = HookVt {
    fire: fire_then,
    drop: drop_then,
};

/// Why `then` made no continuation.
#[derive(Debug)]
pub(crate) enum ThenError {
    Refused(SubmitError),
    NoMemory,
}

impl ThenLink {
    /// Runs `fn(arg, antecedent)` in the current task context (the task of
    /// `Task::Then`).
    pub(crate) fn call(&self) -> Result<*mut c_void, UserError> {
        // SAFETY: written by the hook before the task was queued or run (module comment).
        let ante = self
            .antecedent
            .with(|a| unsafe { (*a).as_ref().map_or(std::ptr::null(), Shared::as_ptr) });
        debug_assert!(!ante.is_null(), "a continuation ran before its antecedent");
        // SAFETY: the caller's function and argument, with the antecedent borrowed for
        // the call (this link holds a reference to it), as the contract says.
        call_task(|| unsafe { (self.f)(self.arg, ante as *mut cf_future) })
    }
}

/// A new counted reference to a future the caller borrows.
fn counted(f: &Core) -> CoreRef {
    // SAFETY: every `Core` lives in a `Shared` (`Core::with_slot`), and the caller's
    // borrow keeps it alive for the increment.
    unsafe {
        Shared::increment_strong_count(f as *const Core);
        Shared::from_raw(f as *const Core)
    }
}

/// `cf_future_then`: a continuation of `antecedent` that runs `f(arg, antecedent)` on
/// `pool` (a thread pool) or inline (`None`).
pub(crate) fn then(
    antecedent: &Core,
    pool: Option<&Arc<Pool>>,
    f: ThenFn,
    arg: *mut c_void,
) -> Result<CoreRef, ThenError> {
    let target = match pool {
        None => Target::Inline,
        Some(p) => {
            if let Some(e) = p.refusal() {
                return Err(ThenError::Refused(e));
            }
            Target::Pool {
                pool: Arc::clone(p),
                slot: AtomicUsize::new(usize::MAX),
            }
        }
    };
    let link = Shared::try_new(ThenLink {
        head: HookHead { vt: &THEN_VT },
        f,
        arg,
        antecedent: UnsafeCell::new(None),
        target,
    })
    .map_err(|_| ThenError::NoMemory)?;
    let cont = Core::with_task(Task::Then(link.clone())).ok_or(ThenError::NoMemory)?;
    if let Target::Pool { pool, slot } = &link.target {
        let i = pool.conts.insert(cont.clone())?;
        // Relaxed: read by the hook, which the listener lock orders after this.
        slot.store(i, Ordering::Relaxed);
    }
    let hook = {
        let obj = NonNull::from(&link.head);
        let (l, c) = (
            Shared::into_raw(link.clone()),
            Shared::into_raw(cont.clone()),
        );
        debug_assert!(std::ptr::eq(l.cast::<HookHead>(), obj.as_ptr()));
        // SAFETY: `obj` is the link's head (its first field); the hook owns the two
        // references just made, which `fire_then` / `drop_then` take back.
        unsafe {
            Hook::new(
                NonNull::new_unchecked(l.cast_mut().cast()),
                c.expose_provenance(),
            )
        }
    };
    match antecedent.try_add_listener(Listener::Hook(hook)) {
        Ok(()) => {}
        Err(NotAdded::Done) => ready(link, cont.clone(), counted(antecedent)),
        Err(NotAdded::NoMemory) => {
            if let Target::Pool { pool, slot } = &link.target {
                pool.conts.remove(slot.load(Ordering::Relaxed));
            }
            return Err(ThenError::NoMemory);
        }
    }
    Ok(cont)
}

/// Takes back the references a then-hook owns.
///
/// # Safety
/// `obj` and `word` are a then-hook's, taken back once.
unsafe fn hook_parts(obj: NonNull<HookHead>, word: usize) -> (Shared<ThenLink>, CoreRef) {
    // SAFETY: made by `then` from `Shared::into_raw` of a link (whose head is its first
    // field) and of the continuation.
    unsafe {
        (
            Shared::from_raw(obj.as_ptr().cast::<ThenLink>()),
            Shared::from_raw(std::ptr::with_exposed_provenance::<Core>(word)),
        )
    }
}

unsafe fn fire_then(obj: NonNull<HookHead>, word: usize, done: &Core) {
    // SAFETY: our hook, fired once.
    let (link, cont) = unsafe { hook_parts(obj, word) };
    ready(link, cont, counted(done));
}

unsafe fn drop_then(obj: NonNull<HookHead>, word: usize) {
    // SAFETY: our hook, dropped unfired once: its references are released.
    drop(unsafe { hook_parts(obj, word) });
}

/// The antecedent is done: run or queue the continuation.
fn ready(link: Shared<ThenLink>, cont: CoreRef, antecedent: CoreRef) {
    if let Target::Pool { pool, slot } = &link.target {
        // Gone from the set: shutdown took it (and finished it).
        if !pool.conts.remove(slot.load(Ordering::Relaxed)) {
            return;
        }
    }
    if cont.is_done() {
        return; // cancelled: its task never starts
    }
    // SAFETY: the only write, made before the task can start (module comment); no other
    // thread reads the cell until then, and this link is alive (we hold it).
    link.antecedent
        .with_mut(|a| unsafe { *a = Some(antecedent) });
    match &link.target {
        Target::Inline => {
            drop(link);
            run_inline(cont);
        }
        Target::Pool { pool, .. } => {
            if let Err(e) = pool.enqueue(cont.clone()) {
                let (status, message) = match e {
                    SubmitError::Shutdown => (CF_SHUTDOWN, SHUT_MESSAGE.to_owned()),
                    SubmitError::Broken => (CF_BROKEN, "the executor is broken".to_owned()),
                    SubmitError::NoMemory => {
                        let _ = cont.finish(Outcome::no_memory());
                        return;
                    }
                    SubmitError::Os(e) => (CF_BROKEN, format!("no worker could be started: {e}")),
                };
                let _ = cont.finish(Outcome::failed(status, 0, &message));
            }
        }
    }
}

/// Starts and runs a continuation's task here, unless it was cancelled.
fn run_task(cont: &Core) {
    if let Some(task) = cont.start() {
        let outcome = task.run();
        let _ = cont.finish(outcome);
    }
}

thread_local! {
    /// Inline continuations running on this thread, nested.
    static DEPTH: Cell<usize> = const { Cell::new(0) };
    /// Inline continuations waiting for the outermost one to return (see `MAX_NEST`).
    static DEFERRED: RefCell<VecDeque<CoreRef>> = const { RefCell::new(VecDeque::new()) };
}

/// Runs an inline continuation in this thread, nested or deferred (module comment).
fn run_inline(cont: CoreRef) {
    let depth = DEPTH.with(Cell::get);
    if depth >= MAX_NEST {
        let deferred = DEFERRED.with(|q| {
            let mut q = q.borrow_mut();
            // Out of memory for the queue: run it nested instead (deeper, but finished).
            q.try_reserve(1).is_ok().then(|| q.push_back(cont.clone()))
        });
        if deferred.is_some() {
            return;
        }
    }
    DEPTH.with(|d| d.set(depth + 1));
    run_task(&cont);
    drop(cont);
    if depth == 0 {
        while let Some(next) = DEFERRED.with(|q| q.borrow_mut().pop_front()) {
            run_task(&next);
        }
    }
    DEPTH.with(|d| d.set(depth));
}

/// A pool's continuations whose antecedent is not done yet (see the module comment).
pub(crate) struct Conts {
    inner: Mutex<ContsInner>,
}

struct ContsInner {
    slots: Vec<Option<CoreRef>>,
    free: Vec<usize>,
    closed: bool,
}

impl Conts {
    pub(crate) fn new() -> Conts {
        Conts {
            inner: Mutex::new(ContsInner {
                slots: Vec::new(),
                free: Vec::new(),
                closed: false,
            }),
        }
    }

    /// Adds `cont`; gives its slot. Refused once the pool is shut down.
    fn insert(&self, cont: CoreRef) -> Result<usize, ThenError> {
        let mut g = lock(&self.inner);
        if g.closed {
            return Err(ThenError::Refused(SubmitError::Shutdown));
        }
        if let Some(i) = g.free.pop() {
            g.slots[i] = Some(cont);
            return Ok(i);
        }
        let room = g.slots.try_reserve(1).and_then(|()| {
            let n = g.slots.len() + 1;
            let free_len = g.free.len();
            g.free.try_reserve(n - free_len)
        });
        room.map_err(|_| ThenError::NoMemory)?;
        g.slots.push(Some(cont));
        Ok(g.slots.len() - 1)
    }

    /// Removes slot `i`; false if the set was closed (shutdown took it).
    fn remove(&self, i: usize) -> bool {
        let mut g = lock(&self.inner);
        if g.closed {
            return false;
        }
        let cont = g.slots[i].take();
        debug_assert!(cont.is_some(), "a continuation's slot removed twice");
        // Never allocates: `insert` made room for every slot in `free`.
        g.free.push(i);
        drop(g);
        drop(cont);
        true
    }

    /// Shutdown: closes the set and finishes every continuation in it with
    /// `CF_SHUTDOWN` (their callbacks run in this thread).
    pub(crate) fn shut(&self) {
        let slots = {
            let mut g = lock(&self.inner);
            g.closed = true;
            g.free = Vec::new();
            std::mem::take(&mut g.slots)
        };
        for cont in slots.into_iter().flatten() {
            let _ = cont.finish(Outcome::failed(CF_SHUTDOWN, 0, SHUT_MESSAGE));
        }
    }
}
