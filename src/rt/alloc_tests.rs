//! Out-of-memory paths, driven by a global allocator (test builds only) that fails every
//! allocation of the current thread once its budget is spent, and counts the current
//! thread's live allocations: each call that reports `NoMemory` must leave nothing
//! registered and nothing allocated, and completion-time degradations must still finish
//! the future.

use super::{
    context,
    future::Core,
    many::{AsCompleted, ReturnWhen, wait_many},
    task::{NO_MEMORY_MESSAGE, Outcome, RAISE_NO_MEMORY_MESSAGE, Task, Values},
    time::Deadline,
};
use crate::status::{CF_NO_MEMORY, CF_TASK_FAILED};
use std::{
    alloc::{GlobalAlloc, Layout, System},
    cell::Cell,
    ffi::{CStr, c_void},
};

struct Failing;

std::thread_local! {
    /// Allocations this thread may still make (`usize::MAX`: unlimited).
    static BUDGET: Cell<usize> = const { Cell::new(usize::MAX) };
    /// Allocations minus frees made on this thread.
    static LIVE: Cell<isize> = const { Cell::new(0) };
}

// SAFETY: forwards to `System`; the bookkeeping uses const-initialised thread-locals
// without destructors, which never allocate.
unsafe impl GlobalAlloc for Failing {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let allowed = BUDGET
            .try_with(|b| match b.get() {
                0 => false,
                usize::MAX => true,
                n => {
                    b.set(n - 1);
                    true
                }
            })
            .unwrap_or(true);
        if !allowed {
            return std::ptr::null_mut();
        }
        let _ = LIVE.try_with(|l| l.set(l.get() + 1));
        // SAFETY: as the caller guarantees for us.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let _ = LIVE.try_with(|l| l.set(l.get() - 1));
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Failing = Failing;

fn live() -> isize {
    LIVE.with(Cell::get)
}

/// Runs `f` with at most `budget` allocations allowed on this thread.
fn with_budget<R>(budget: usize, f: impl FnOnce() -> R) -> R {
    BUDGET.with(|b| b.set(budget));
    let r = f();
    BUDGET.with(|b| b.set(usize::MAX));
    r
}

fn soon() -> Deadline {
    Deadline::from_timeout(0.001).unwrap()
}

#[test]
fn promise_creation_fails_cleanly() {
    let before = live();
    assert!(with_budget(0, Core::try_promise).is_none());
    assert_eq!(live(), before);
    let f = with_budget(1, Core::try_promise).expect("one allocation is enough");
    drop(f);
    assert_eq!(live(), before);
}

#[test]
fn wait_many_fails_at_every_step_without_leaving_anything() {
    let before = live();
    let mut failures = 0;
    for budget in 0..40 {
        let fs: Vec<_> = (0..6).map(|_| Core::promise()).collect();
        let refs: Vec<&Core> = fs.iter().map(|f| &**f).collect();
        match with_budget(budget, || {
            wait_many(&refs, ReturnWhen::AllCompleted, soon())
        }) {
            Err(_) => failures += 1,
            Ok(done) => assert!(!done, "nothing was completed"),
        }
        for f in &fs {
            assert_eq!(
                f.listener_count(),
                0,
                "budget {budget}: a registration was left"
            );
        }
        drop(refs);
        drop(fs);
        assert_eq!(live(), before, "budget {budget}: leaked");
    }
    assert!(failures >= 6, "only {failures} budgets failed");
}

#[test]
fn as_completed_fails_at_every_step_without_leaving_anything() {
    let before = live();
    let mut failures = 0;
    for budget in 0..40 {
        let fs: Vec<_> = (0..6).map(|_| Core::promise()).collect();
        assert!(fs[2].cancel());
        let input: Vec<_> = fs.iter().chain(&fs[..2]).cloned().collect();
        match with_budget(budget, || AsCompleted::new(input, soon())) {
            Err(_) => failures += 1,
            Ok(it) => drop(it),
        }
        for f in &fs {
            assert_eq!(
                f.listener_count(),
                0,
                "budget {budget}: a registration was left"
            );
            assert_eq!(super::shared::Shared::strong_count(f), 1, "budget {budget}");
        }
        drop(fs);
        assert_eq!(live(), before, "budget {budget}: leaked");
    }
    assert!(failures >= 5, "only {failures} budgets failed");
}

unsafe extern "C-unwind" fn raise_long(arg: *mut c_void) -> *mut c_void {
    // SAFETY: a static NUL-terminated message.
    unsafe { context::raise(7, c"a message that needs copying".as_ptr()) };
    arg
}

#[test]
fn completion_degrades_instead_of_aborting() {
    // The raise cannot copy its message and the failure cannot be boxed: the outcome
    // keeps the status and code, with the fixed message.
    let o = with_budget(0, || Task::Call(raise_long, std::ptr::null_mut()).run());
    let (status, code, message) = o.error().expect("an error");
    assert_eq!((status, code), (CF_TASK_FAILED, 7));
    // SAFETY: a static C string.
    assert_eq!(unsafe { CStr::from_ptr(message) }, NO_MEMORY_MESSAGE);
    // The message is copied but the failure cannot be boxed: the same.
    let o = with_budget(1, || Task::Call(raise_long, std::ptr::null_mut()).run());
    assert!(matches!(o, Outcome::Degraded(CF_TASK_FAILED, 7)));
    // The message copy fails (inside the task) but the failure fits.
    unsafe extern "C-unwind" fn raise_starved(arg: *mut c_void) -> *mut c_void {
        // SAFETY: as `raise_long`.
        with_budget(0, || unsafe { raise_long(arg) })
    }
    let o = Task::Call(raise_starved, std::ptr::null_mut()).run();
    let (status, code, message) = o.error().expect("an error");
    assert_eq!((status, code), (CF_TASK_FAILED, 7));
    assert!(matches!(o, Outcome::Failed(_)));
    // SAFETY: owned by `o`, alive.
    assert_eq!(unsafe { CStr::from_ptr(message) }, RAISE_NO_MEMORY_MESSAGE);
    // A chunk of calls allocates nothing to finish when its items succeed: its values
    // box becomes the outcome.
    unsafe extern "C-unwind" fn raise_at_2(arg: *mut c_void) -> *mut c_void {
        if arg as usize == 2 {
            // SAFETY: as `raise_long`.
            unsafe { raise_long(arg) }
        } else {
            arg
        }
    }
    let chunk = |n: usize| {
        let items: Vec<*mut c_void> = (0..n).map(|i| i as *mut c_void).collect();
        let values = Values {
            values: items.into(),
            failure: None,
        };
        Task::Calls(raise_at_2, Box::new(values))
    };
    let task = chunk(2);
    let o = with_budget(0, || task.run());
    assert!(matches!(&o, Outcome::Values(v) if v.values.len() == 2 && v.failure.is_none()));
    // Its third item raises: the message and the failure are stored (two allocations),
    // but its own array of values cannot be shrunk to the two that were returned.
    let task = chunk(3);
    let o = with_budget(2, || task.run());
    assert!(matches!(o, Outcome::Degraded(CF_NO_MEMORY, libc::ENOMEM)));
    // And the future finishes with it.
    let f = Core::promise();
    assert!(f.finish(o).is_ok());
    assert!(f.failed());
}
