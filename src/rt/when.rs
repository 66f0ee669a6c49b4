//! `cf_when`: a future that finishes when `cf_wait` on the same futures would return,
//! naming the future that completed the condition.
//!
//! # Protocol
//!
//! One `When` (shared) per call, holding the result future, the condition, a countdown of
//! the distinct inputs not yet done, and a reference to every distinct input. Inputs
//! already done at the call are looked at first, as one group in index order (the lowest
//! index names the condition when they complete it). Each other input gets one `Hook`
//! whose word is its first index in the caller's array; firing it counts the input down
//! and finishes the result when the condition holds (`finish` picks one winner when two
//! inputs race). The result future carries a hook too (word `CLEANUP`), registered
//! before any input's: once the result is done, finished or cancelled, it removes the
//! hooks still registered on the inputs and drops the references. No thread waits.

use super::{
    future::{Core, CoreRef, Listener, NotAdded},
    hook::{Hook, HookHead, HookVt},
    many::{NoMemory, ReturnWhen},
    shared::Shared,
    sync::{AtomicUsize, Mutex, Ordering, lock},
    task::Outcome,
};
use std::{collections::HashSet, ptr::NonNull};

/// The word of the hook on the result future.
const CLEANUP: usize = usize::MAX;

#[repr(C)]
struct When {
    head: HookHead,
    out: CoreRef,
    mode: ReturnWhen,
    /// Distinct inputs not yet counted as done.
    remaining: AtomicUsize,
    /// The distinct inputs, until the result is done.
    inputs: Mutex<Option<Vec<CoreRef>>>,
}

static WHEN_VT: HookVt = HookVt {
    fire: fire_when,
    drop: drop_when,
};

/// The result value naming index `i`.
fn named(i: usize) -> Outcome {
    Outcome::Value(std::ptr::without_provenance_mut(i))
}

impl When {
    /// Input `i` (a first index) is done: count it, and finish the result if that
    /// completes the condition.
    fn record(&self, i: usize, input: &Core) {
        // AcqRel: the input that takes the count to zero sees every other's decrement.
        let prev = self.remaining.fetch_sub(1, Ordering::AcqRel);
        let hit = match self.mode {
            ReturnWhen::FirstCompleted => true,
            ReturnWhen::FirstException => input.failed() || prev == 1,
            ReturnWhen::AllCompleted => prev == 1,
        };
        if hit {
            let _ = self.out.finish(named(i));
        }
    }

    /// The result is done: unregister from the inputs and drop them.
    fn cleanup(&self) {
        let inputs = lock(&self.inputs).take();
        let me: *const HookHead = &self.head;
        for f in inputs.iter().flatten() {
            f.remove_listener(
                |l| matches!(l, Listener::Hook(h) if std::ptr::eq(h.obj().as_ptr(), me)),
            );
        }
    }

    /// A hook on this `When` with `word`, owning one reference to it.
    fn hook(this: &Shared<When>, word: usize) -> Hook {
        let p = Shared::into_raw(this.clone());
        // SAFETY: the head is the first field; the hook owns the reference just made,
        // which `fire_when` / `drop_when` take back.
        unsafe { Hook::new(NonNull::new_unchecked(p.cast_mut().cast()), word) }
    }
}

/// Takes back the reference a when-hook owns.
///
/// # Safety
/// `obj` is a when-hook's, taken back once.
unsafe fn when_of(obj: NonNull<HookHead>) -> Shared<When> {
    // SAFETY: made by `When::hook` from `Shared::into_raw`.
    unsafe { Shared::from_raw(obj.as_ptr().cast::<When>()) }
}

unsafe fn fire_when(obj: NonNull<HookHead>, word: usize, done: &Core) {
    // SAFETY: our hook, fired once.
    let w = unsafe { when_of(obj) };
    if word == CLEANUP {
        w.cleanup();
    } else {
        w.record(word, done);
    }
}

unsafe fn drop_when(obj: NonNull<HookHead>, _word: usize) {
    // SAFETY: our hook, dropped unfired once.
    drop(unsafe { when_of(obj) });
}

/// `cf_when`: see the module comment. `Err` (nothing registered, nothing kept) when
/// memory runs out.
pub(crate) fn when(fs: &[&Core], mode: ReturnWhen) -> Result<CoreRef, NoMemory> {
    let out = Core::try_promise().ok_or(NoMemory)?;
    if fs.is_empty() {
        let _ = out.finish(named(0));
        return Ok(out);
    }
    // The distinct inputs with their first index.
    let mut seen = HashSet::new();
    seen.try_reserve(fs.len()).map_err(|_| NoMemory)?;
    let mut distinct: Vec<(usize, &Core)> = Vec::new();
    distinct.try_reserve_exact(fs.len()).map_err(|_| NoMemory)?;
    distinct.extend(
        fs.iter()
            .enumerate()
            .filter(|(_, f)| seen.insert(**f as *const Core))
            .map(|(i, f)| (i, *f)),
    );
    drop(seen);
    // Those done already, as one group: the lowest index names the condition.
    let (mut first_done, mut first_failed) = (None, None);
    let mut pending: Vec<(usize, &Core)> = Vec::new();
    pending
        .try_reserve_exact(distinct.len())
        .map_err(|_| NoMemory)?;
    for &(i, f) in &distinct {
        if f.is_done() {
            first_done = first_done.or(Some(i));
            if f.failed() {
                first_failed = first_failed.or(Some(i));
            }
        } else {
            pending.push((i, f));
        }
    }
    let now = match mode {
        ReturnWhen::FirstCompleted => first_done,
        ReturnWhen::FirstException => first_failed.or(first_done.filter(|_| pending.is_empty())),
        ReturnWhen::AllCompleted => first_done.filter(|_| pending.is_empty()),
    };
    if let Some(i) = now {
        let _ = out.finish(named(i));
        return Ok(out);
    }
    let mut inputs = Vec::new();
    inputs
        .try_reserve_exact(pending.len())
        .map_err(|_| NoMemory)?;
    // SAFETY: each is a live future the caller lends us; every `Core` is in a `Shared`.
    inputs.extend(pending.iter().map(|&(_, f)| unsafe {
        Shared::increment_strong_count(f as *const Core);
        Shared::from_raw(f as *const Core)
    }));
    let w = Shared::try_new(When {
        head: HookHead { vt: &WHEN_VT },
        out: out.clone(),
        mode,
        remaining: AtomicUsize::new(pending.len()),
        inputs: Mutex::new(Some(inputs)),
    })
    .map_err(|_| NoMemory)?;
    // The result is pending and nobody else knows it yet: this cannot find it done.
    if let Err(NotAdded::NoMemory | NotAdded::Done) =
        out.try_add_listener(Listener::Hook(When::hook(&w, CLEANUP)))
    {
        drop(w.inputs_taken());
        return Err(NoMemory);
    }
    for &(i, f) in &pending {
        if out.is_done() {
            break;
        }
        match f.try_add_listener(Listener::Hook(When::hook(&w, i))) {
            Ok(()) => {}
            Err(NotAdded::Done) => w.record(i, f),
            Err(NotAdded::NoMemory) => {
                // Cancelling runs the cleanup hook: every registration made goes.
                out.cancel();
                return Err(NoMemory);
            }
        }
    }
    Ok(out)
}

impl When {
    /// The inputs, taken (when giving up before any hook was registered on them).
    fn inputs_taken(&self) -> Option<Vec<CoreRef>> {
        lock(&self.inputs).take()
    }
}
