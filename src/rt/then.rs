//! Continuations (`cf_future_then`): a future that runs `fn(arg, antecedent)` once its
//! antecedent is done, on a thread pool or inline in the completing thread.
//!
//! # Protocol
//!
//! `then` makes the continuation's future up front, holding a `Task::Then` with a shared
//! `ThenLink` (the function, its argument, and a place for the antecedent), and registers
//! a `Hook` on the antecedent that owns a reference to the link and one to the new
//! future. The hook's listener node is part of the link (`HookNode`), so a continuation
//! costs two blocks (its future's core and its link), both from the block cache. Nothing points from the continuation back to the antecedent while it waits,
//! so an antecedent that is never finished frees the hook, and with it the continuation's
//! last engine reference, when it is released (no cycle).
//!
//! When the antecedent is done, the hook stores a counted reference to it in the link
//! (the only write to that cell, before the task can be started: the task reads it only
//! after it is queued or run here) and then:
//! - inline (`ex` NULL): starts and runs the task now, in this thread (`run_inline`);
//! - on a pool: claims the link (see Shutdown) and hands the future to the pool as a
//!   task (see below). A pool shut down in between refuses it: it finishes then with
//!   `CF_SHUTDOWN` (or `CF_BROKEN`).
//!
//! A continuation cancelled before that is simply dropped (its task never starts). The
//! task runs like any other (`Core::start`, then `finish`), so a cancel racing with it is
//! settled by the future's own state word.
//!
//! # Shutdown
//!
//! A pool keeps the continuations it has accepted in `Conts`, a lock-free stack of links
//! (one compare-and-swap to add one; nothing to remove one), so that shutdown can find
//! those whose antecedent is not done yet. Each pool link has a `claimed` flag: the
//! first of the hook and shutdown to set it owns the continuation, so exactly one of
//! them acts (the hook runs or queues it; shutdown finishes it with `CF_SHUTDOWN`).
//! Claimed links stay on the stack until a later registration sweeps them off: when at
//! least half the stack is claimed (a count the claiming hooks keep, on its own cache
//! line), so that a sweep visits at most two links per link it frees (O(1) per link,
//! amortised) and the claimed links never outnumber the waiting ones by more than
//! `SWEEP_MIN`. A thread that adds links far ahead of the workers (a long chain) then
//! never walks its stack of waiting links, which is cold in its cache. The condition is
//! looked at when the pushes since the last look reach a quarter of the stack. Shutdown closes
//! the stack (a tag bit in its head: a later `then` on that pool is refused) and
//! claims what it finds; a hook that fires after that loses the claim and does nothing,
//! so it never queues on a pool that was shut down (it holds the pool's `Arc`, so even
//! the check touches live memory). A broken pool sets another tag bit: `then` is
//! refused with `CF_BROKEN`.
//!
//! # Where a ready continuation goes
//!
//! A hook that fires on a worker of the continuation's pool (the antecedent was a task of
//! that pool) hands the continuation to that worker's own batch (`Pool::push_local`): it
//! runs right after the current task, without the pool's queue lock, and stays visible
//! to the other workers' stealing and to shutdown's `cancel_futures` like any batched
//! task. From any other thread it is queued (`Pool::enqueue`).
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
    future::{Core, CoreRef, HookNode, NotAdded},
    hook::{Hook, HookHead, HookVt},
    pool::{Pool, SubmitError},
    shared::Shared,
    sync::{Arc, AtomicU32, AtomicUsize, Mutex, Ordering, UnsafeCell, lock, thread_local},
    task::{Outcome, Task},
};
use crate::status::{CF_BROKEN, CF_SHUTDOWN};
use crossbeam_utils::CachePadded;
use std::{
    cell::{Cell, RefCell},
    collections::VecDeque,
    ffi::c_void,
    ptr::NonNull,
};

/// `cf_then_fn`.
/// A continuation's function, `fn(arg, antecedent)`: the engine's view of `cf_then_fn`
/// (the C layer passes the same function, see `then::engine_then_fn`).
pub(crate) type ThenFn =
    unsafe extern "C-unwind" fn(arg: *mut c_void, antecedent: *const Core) -> *mut c_void;

/// How deeply inline continuations nest in one thread before they are queued instead.
const MAX_NEST: usize = 16;

/// The message of a continuation whose pool was shut down before its antecedent was done.
const SHUT_MESSAGE: &str =
    "the executor was shut down before the continuation's antecedent was done";

/// Where a continuation runs.
enum Target {
    /// In the thread that finishes the antecedent.
    Inline,
    /// On this thread pool, registered in its `Conts`.
    Pool { pool: Arc<Pool>, reg: Reg },
}

/// A pool link's registration in its pool's `Conts` (see the module comment).
struct Reg {
    /// The link below this one on the stack (an exposed address, 0 at the bottom);
    /// written before the link is pushed, then only by whoever has the stack detached.
    next: AtomicUsize,
    /// Set (0 → 1) by the first of the hook and shutdown: that one owns `cont`.
    claimed: AtomicU32,
    /// The continuation, for shutdown; taken by the claimer (which breaks the cycle
    /// link → future → task → link).
    cont: UnsafeCell<Option<CoreRef>>,
}

impl Reg {
    /// Claims the continuation; its reference if this call won.
    fn claim(&self) -> Option<CoreRef> {
        // AcqRel: the winner sees `cont` as written before the push.
        if self.claimed.swap(1, Ordering::AcqRel) != 0 {
            return None;
        }
        // SAFETY: the only access after the push, by the one claimer.
        self.cont.with_mut(|c| unsafe { (*c).take() })
    }
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
    /// The listener node of the hook on the antecedent (one block per link, not two).
    node: HookNode,
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
        super::pool::note_continuation();
        // SAFETY: written by the hook before the task was queued or run (module comment),
        // and read only here: taken, so that the antecedent goes as soon as `fn` returns
        // (the link itself may stay on its pool's stack until a sweep).
        let ante = self.antecedent.with_mut(|a| unsafe { (*a).take() });
        debug_assert!(ante.is_some(), "a continuation ran before its antecedent");
        let p = ante.as_ref().map_or(std::ptr::null(), Shared::as_ptr);
        // SAFETY: the caller's function and argument, with the antecedent borrowed for
        // the call (`ante` holds a reference to it), as the contract says.
        call_task(|| unsafe { (self.f)(self.arg, p) })
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
    if pool.is_some_and(|p| p.is_foreign()) {
        // A child forked after the executor was made: it has no workers here.
        return Err(ThenError::Refused(SubmitError::Forked));
    }
    let target = match pool {
        None => Target::Inline,
        Some(p) => Target::Pool {
            pool: Arc::clone(p),
            reg: Reg {
                next: AtomicUsize::new(0),
                claimed: AtomicU32::new(0),
                cont: UnsafeCell::new(None),
            },
        },
    };
    let link = Shared::try_new(ThenLink {
        head: HookHead { vt: &THEN_VT },
        f,
        arg,
        antecedent: UnsafeCell::new(None),
        target,
        node: HookNode::new(),
    })
    .map_err(|_| ThenError::NoMemory)?;
    // Every reference the link and the continuation get here, made at once (`split`: no
    // atomic increments on the fresh blocks): the link's for this call, the task, the
    // hook and the pool's stack (given back at once for an inline continuation); the
    // continuation's for the caller, the hook and the stack's registration.
    let [link, task_link, hook_link, stack_link] = Shared::split(link);
    let Some(cont) = Core::with_task(Task::Then(task_link)) else {
        drop((hook_link, stack_link));
        return Err(ThenError::NoMemory);
    };
    let [cont, hook_cont, reg_cont] = Shared::split(cont);
    if let Target::Pool { pool, reg } = &link.target {
        // SAFETY: nobody else knows the link yet.
        reg.cont.with_mut(|c| unsafe { *c = Some(reg_cont) });
        if let Err(e) = pool.conts.push(stack_link) {
            // Not pushed: take the cycle apart again.
            drop(reg.claim());
            drop((hook_link, hook_cont));
            return Err(ThenError::Refused(e));
        }
    } else {
        drop((stack_link, reg_cont));
    }
    let hook = {
        let obj = NonNull::from(&link.head);
        let (l, c) = (Shared::into_raw(hook_link), Shared::into_raw(hook_cont));
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
    // SAFETY: the link's one registration, and the hook owns a reference to the link.
    match unsafe { antecedent.try_add_hook_in(&link.node, hook) } {
        Ok(()) => {}
        Err(NotAdded::Done) => ready(link, cont.clone(), counted(antecedent)),
        Err(NotAdded::NoMemory) => {
            // Left on the stack, claimed: a sweep or the pool drops it.
            if let Target::Pool { reg, .. } = &link.target {
                drop(reg.claim());
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
    if let Target::Pool { reg, pool } = &link.target {
        // Claimed by shutdown already (which finished it).
        if reg.claim().is_none() {
            return;
        }
        pool.conts.note_claimed();
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
            // On a worker of this pool: right after its current task, in its batch.
            let cont = match pool.push_local(cont) {
                Ok(()) => return,
                Err(cont) => cont,
            };
            if let Err(e) = pool.enqueue(cont.clone()) {
                let (status, message) = match e {
                    SubmitError::Shutdown => (CF_SHUTDOWN, SHUT_MESSAGE.to_owned()),
                    SubmitError::Broken => (CF_BROKEN, "the executor is broken".to_owned()),
                    SubmitError::NoMemory => {
                        let _ = cont.finish(Outcome::no_memory());
                        return;
                    }
                    SubmitError::Os(e) => (CF_BROKEN, format!("no worker could be started: {e}")),
                    SubmitError::Forked => (
                        CF_BROKEN,
                        "the executor belongs to the process that made it, not to this child \
                         forked after it was made"
                            .to_owned(),
                    ),
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

/// The tag bits of `Conts::head`.
const CLOSED: usize = 1;
const BROKEN: usize = 2;
const TAGS: usize = CLOSED | BROKEN;

/// Registrations on the stack below which no sweep is made.
const SWEEP_MIN: usize = 64;

/// A pool's continuations, for shutdown (see the module comment): a lock-free stack of
/// links, each holding one reference of the stack's.
pub(crate) struct Conts {
    /// The top link (an exposed address) with the tag bits `CLOSED` and `BROKEN`.
    head: AtomicUsize,
    /// Pushes since the last sweep, and the pushes at which the next look is due.
    pushed: AtomicUsize,
    sweep_at: AtomicUsize,
    /// Links kept on the stack by the last sweep.
    kept: AtomicUsize,
    /// Links on the stack claimed by their hooks (an estimate: counted after the claim,
    /// subtracted by the sweep that drops them); on its own cache line, since the
    /// workers write it and the registering thread reads it only now and then.
    claimed: CachePadded<AtomicUsize>,
    /// Held by a sweep while it has the stack detached, and by shutdown (which must find
    /// every link on the stack).
    sweeping: Mutex<()>,
}

/// The link at an address on the stack.
///
/// # Safety
/// `addr` is a link pushed by `Conts::push` whose stack reference is still held.
unsafe fn link_at<'a>(addr: usize) -> &'a ThenLink {
    // SAFETY: as the caller promises.
    unsafe { &*std::ptr::with_exposed_provenance::<ThenLink>(addr) }
}

/// The registration of a link on a pool's stack.
fn reg_of(link: &ThenLink) -> &Reg {
    match &link.target {
        Target::Pool { reg, .. } => reg,
        Target::Inline => unreachable!("an inline continuation on a pool's stack"),
    }
}

impl Conts {
    pub(crate) fn new() -> Conts {
        Conts {
            head: AtomicUsize::new(0),
            pushed: AtomicUsize::new(0),
            sweep_at: AtomicUsize::new(SWEEP_MIN),
            kept: AtomicUsize::new(0),
            claimed: CachePadded::new(AtomicUsize::new(0)),
            sweeping: Mutex::new(()),
        }
    }

    /// Pushes `link` (a pool link), the stack's reference; refused (the reference
    /// dropped) once the pool is shut down or broken.
    fn push(&self, link: Shared<ThenLink>) -> Result<(), SubmitError> {
        let addr = Shared::as_ptr(&link).expose_provenance();
        debug_assert_eq!(addr & TAGS, 0);
        let reg = reg_of(&link);
        let mut head = self.head.load(Ordering::Relaxed);
        loop {
            if head & CLOSED != 0 {
                return Err(SubmitError::Shutdown);
            }
            if head & BROKEN != 0 {
                return Err(SubmitError::Broken);
            }
            reg.next.store(head & !TAGS, Ordering::Relaxed);
            // Release: whoever detaches the stack sees `next` and `cont`.
            match self.head.compare_exchange_weak(
                head,
                addr | (head & TAGS),
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(h) => head = h,
            }
        }
        // The stack holds it now (taken back by `sweep`, `shut` or `release`).
        let _ = Shared::into_raw(link);
        let n = self.pushed.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= self.sweep_at.load(Ordering::Relaxed) {
            // Relaxed, all three: only the decision when to sweep hangs on them.
            let size = self.kept.load(Ordering::Relaxed) + n;
            if 2 * self.claimed.load(Ordering::Relaxed) >= size.max(SWEEP_MIN) {
                self.sweep();
            } else {
                self.sweep_at
                    .store(n + (size / 4).max(SWEEP_MIN), Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// A hook claimed a link of this stack (see `claimed`).
    fn note_claimed(&self) {
        self.claimed.fetch_add(1, Ordering::Relaxed);
    }

    /// Detaches the whole stack, setting `tags`; the old top (address) and tag bits, or
    /// `None` if it was closed already.
    fn detach(&self, tags: usize) -> Option<usize> {
        let mut head = self.head.load(Ordering::Relaxed);
        loop {
            if head & CLOSED != 0 {
                return None;
            }
            // Acquire: see what the pushers wrote before their push.
            match self.head.compare_exchange_weak(
                head,
                (head & TAGS) | tags,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(head & !TAGS),
                Err(h) => head = h,
            }
        }
    }

    /// Drops the stack's references to the claimed links and puts the others back.
    fn sweep(&self) {
        let Ok(guard) = self.sweeping.try_lock() else {
            return; // another sweep (or shutdown) is at it
        };
        let Some(mut addr) = self.detach(0) else {
            return;
        };
        let (mut top, mut bottom, mut kept, mut dropped) = (0usize, 0usize, 0usize, 0usize);
        while addr != 0 {
            // SAFETY: on the stack, which we have detached: its references are ours.
            let link = unsafe { link_at(addr) };
            let reg = reg_of(link);
            let next = reg.next.load(Ordering::Relaxed);
            // Acquire: a claimer's writes happen before we drop the link.
            if reg.claimed.load(Ordering::Acquire) != 0 {
                // SAFETY: the stack's reference, given up once.
                drop(unsafe { Shared::from_raw(link as *const ThenLink) });
                dropped += 1;
            } else {
                reg.next.store(top, Ordering::Relaxed);
                if top == 0 {
                    bottom = addr;
                }
                top = addr;
                kept += 1;
            }
            addr = next;
        }
        if top != 0 {
            // SAFETY: kept, so still referenced by the stack.
            let bottom_reg = reg_of(unsafe { link_at(bottom) });
            let mut head = self.head.load(Ordering::Relaxed);
            loop {
                // Not closed: shutdown waits for `sweeping`.
                bottom_reg.next.store(head & !TAGS, Ordering::Relaxed);
                match self.head.compare_exchange_weak(
                    head,
                    top | (head & TAGS),
                    Ordering::Release,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => break,
                    Err(h) => head = h,
                }
            }
        }
        self.pushed.store(0, Ordering::Relaxed);
        self.kept.store(kept, Ordering::Relaxed);
        self.sweep_at
            .store((kept / 4).max(SWEEP_MIN), Ordering::Relaxed);
        // Links claimed after this sweep looked at them stay counted until the next.
        let _ = self
            .claimed
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
                Some(c.saturating_sub(dropped))
            });
        drop(guard);
    }

    /// The pool is broken: later `then`s are refused with `CF_BROKEN` (those registered
    /// already finish with `CF_BROKEN` when their antecedent is done).
    pub(crate) fn mark_broken(&self) {
        self.head.fetch_or(BROKEN, Ordering::Relaxed);
    }

    /// Shutdown: closes the stack and finishes every continuation on it that no hook
    /// has claimed with `CF_SHUTDOWN` (their callbacks run in this thread).
    pub(crate) fn shut(&self) {
        let guard = lock(&self.sweeping);
        let top = self.detach(CLOSED);
        drop(guard);
        Self::release(top.unwrap_or(0), |cont| {
            let _ = cont.finish(Outcome::failed(CF_SHUTDOWN, 0, SHUT_MESSAGE));
        });
    }

    /// Drops the references of a detached stack from `addr` down, giving each
    /// continuation claimed here to `unclaimed`.
    fn release(mut addr: usize, unclaimed: impl Fn(CoreRef)) {
        while addr != 0 {
            // SAFETY: detached by the caller: the references are ours.
            let link = unsafe { Shared::from_raw(link_at(addr) as *const ThenLink) };
            let reg = reg_of(&link);
            addr = reg.next.load(Ordering::Relaxed);
            if let Some(cont) = reg.claim() {
                unclaimed(cont);
            }
        }
    }
}

impl Drop for Conts {
    fn drop(&mut self) {
        // A pool freed without a shutdown (none in practice): nothing to finish, but the
        // cycles to break and the references to drop.
        Self::release(self.detach(CLOSED).unwrap_or(0), drop);
    }
}

#[cfg(all(test, not(cfutures_loom)))]
mod size_tests {
    #[test]
    fn a_pool_link_is_one_cached_block() {
        // `Shared`'s count and the link: within the block cache's largest class.
        let size = std::mem::size_of::<super::ThenLink>() + std::mem::size_of::<usize>();
        assert!(size <= 96, "a pool continuation's link takes {size} bytes");
    }
}
