//! Hooks: listeners that belong to the engine itself (a continuation waiting for its
//! antecedent, a `cf_when` waiting for its inputs), registered on a future like a done
//! callback but owning what they point at.
//!
//! A hook is two words, as a listener node's payload: a pointer to an object whose first
//! field is a `HookHead` (a table of two functions) and a word of the object's choosing.
//! The future that holds it either fires it once it is done (`Hook::fire`, which hands
//! the object its own references) or drops it unfired when the future itself is freed
//! without ever finishing (`Drop`, which releases them): so what a hook holds is never
//! leaked and never released twice, unlike a C callback's `userdata`.

use super::future::Core;
use std::{mem::ManuallyDrop, ptr::NonNull};

/// What a hook does when fired and when dropped. Both get the object and the word.
pub(crate) struct HookVt {
    /// Called once, by whoever finishes or cancels the future (`done` is that future),
    /// outside every lock; takes over whatever the hook owns.
    pub(crate) fire: unsafe fn(obj: NonNull<HookHead>, word: usize, done: &Core),
    /// Called instead of `fire` when the hook is dropped unfired.
    pub(crate) drop: unsafe fn(obj: NonNull<HookHead>, word: usize),
}

/// The first field of every object a hook points at (`#[repr(C)]`, so that a pointer to
/// the object is a pointer to its head).
#[repr(C)]
pub(crate) struct HookHead {
    pub(crate) vt: &'static HookVt,
}

/// A listener owned by the engine: see the module comment.
pub(crate) struct Hook {
    obj: NonNull<HookHead>,
    word: usize,
}

// SAFETY: the objects behind hooks are shared, thread-safe engine objects (`Shared`s of
// `Send + Sync` types) whose ownership the hook carries to whichever thread fires it.
unsafe impl Send for Hook {}

impl Hook {
    /// A hook on `obj` with `word`.
    ///
    /// # Safety
    /// `obj` points at a live object starting with a `HookHead`, whose `fire` and `drop`
    /// accept it with `word`; the hook owns whatever those two functions release.
    pub(crate) unsafe fn new(obj: NonNull<HookHead>, word: usize) -> Hook {
        Hook { obj, word }
    }

    /// The object this hook points at (to find a registration again).
    pub(crate) fn obj(&self) -> NonNull<HookHead> {
        self.obj
    }

    /// Fires the hook for the done future `done`.
    pub(crate) fn fire(self, done: &Core) {
        let this = ManuallyDrop::new(self);
        // SAFETY: the object is alive (the hook owns it, see `new`); `fire` runs once
        // and takes over what `drop` would have released.
        unsafe { ((*this.obj.as_ptr()).vt.fire)(this.obj, this.word, done) }
    }
}

impl Drop for Hook {
    fn drop(&mut self) {
        // SAFETY: as in `fire`: unfired, so `drop` releases what the hook owns, once.
        unsafe { ((*self.obj.as_ptr()).vt.drop)(self.obj, self.word) }
    }
}
