//! loom models of continuations and `cf_when` (`rt::then`, `rt::when`): cancel racing a
//! `then` registration and the antecedent's completion, `cf_when` registration racing
//! its inputs' completions, and shutdown racing a continuation's hook. The helpers and
//! the leak tracking are the parent module's.

use super::{as_arg, count_of, counter, model, pool, value, value_of};
use crate::{
    rt::{
        future::{Core, CoreRef, Phase},
        many::ReturnWhen,
        pool::Pool,
        shared::Shared,
        sync::{Arc, thread},
        task::{OutcomeRef, Task},
        then::then,
        when::when,
    },
    status::{CF_OK, CF_SHUTDOWN},
};
use std::{
    ffi::c_void,
    ptr,
    sync::atomic::{AtomicUsize as Count, Ordering::SeqCst},
};

/// Continuation: checks that its antecedent is done and has an outcome (a tracked read
/// of its slot, ordered after the completer's write), counts its run, returns 9.
unsafe extern "C-unwind" fn count_then(counter: *mut c_void, ante: *const Core) -> *mut c_void {
    // SAFETY: the engine lends the antecedent's `Core` for the call.
    let a = unsafe { &*ante };
    assert!(
        a.is_done(),
        "a continuation ran before its antecedent was done"
    );
    if a.phase() == Phase::Finished {
        assert!(
            a.outcome().is_some(),
            "antecedent finished without an outcome"
        );
    }
    // SAFETY: the models pass a `Count` they keep alive until every thread joined.
    unsafe { &*counter.cast::<Count>() }.fetch_add(1, SeqCst);
    ptr::without_provenance_mut(9)
}

/// Task: counts its run and returns 7 (the antecedent on a pool).
unsafe extern "C-unwind" fn count_task(counter: *mut c_void) -> *mut c_void {
    // SAFETY: as in `count_then`.
    unsafe { &*counter.cast::<Count>() }.fetch_add(1, SeqCst);
    ptr::without_provenance_mut(7)
}

/// Done callback counting its calls.
unsafe extern "C-unwind" fn count_done(_f: *const Core, counter: *mut c_void) {
    // SAFETY: as in `count_then`.
    unsafe { &*counter.cast::<Count>() }.fetch_add(1, SeqCst);
}

/// A future the model shares with a spawned thread (one reference each).
fn shared(f: &CoreRef) -> CoreRef {
    f.clone()
}

/// The continuation either ran once and finished with 9, or never ran and is cancelled
/// (then `cancelled`, what its cancel returned, is true). Exactly one outcome.
fn ran_xor_cancelled(cont: &Core, runs: &Arc<Count>, cancelled: bool) {
    match (cont.phase(), count_of(runs)) {
        (Phase::Finished, 1) => {
            assert_eq!(value_of(cont), Some(9));
            assert!(!cancelled, "cancel said yes, yet fn ran");
        }
        (Phase::Cancelled, 0) => assert!(cancelled),
        (phase, n) => panic!("continuation {phase:?} after {n} runs"),
    }
}

/// The continuation either ran once (finished with 9) or never ran and finished with
/// `CF_SHUTDOWN`: exactly one of the two.
fn ran_xor_shut(cont: &Core, runs: &Arc<Count>) {
    match (cont.outcome(), count_of(runs)) {
        (Some(OutcomeRef::Value(v)), 1) => assert_eq!(v as usize, 9),
        (Some(OutcomeRef::Failed(e)), 0) => assert_eq!(e.status, CF_SHUTDOWN),
        (_, n) => panic!("continuation {:?} after {n} runs", cont.phase()),
    }
}

/// Inline `then` racing the antecedent's completion in another thread, and a cancel of
/// the continuation right after the registration: `fn` runs at most once (exactly when
/// the cancel lost), the continuation has exactly one outcome, no listener is left on
/// the antecedent, and every reference is dropped (loom's leak check); a continuation
/// cancelled after its hook fired keeps the antecedent only until it is freed.
#[test]
fn loom_then_inline_cancel_vs_registration_vs_completion() {
    model(|| {
        let ante = Core::promise();
        let runs = counter();
        let a = shared(&ante);
        let t = thread::spawn(move || {
            let _ = a.finish(value(1));
        });
        let cont = then(&ante, None, count_then, as_arg(&runs)).unwrap();
        let cancelled = cont.cancel();
        t.join().unwrap();
        ran_xor_cancelled(&cont, &runs, cancelled);
        assert_eq!(ante.listener_count(), 0);
        assert_eq!(Shared::strong_count(&cont), 1);
        // A continuation cancelled after its hook fired keeps the antecedent until it is
        // freed itself.
        drop(cont);
        assert_eq!(Shared::strong_count(&ante), 1);
    });
}

/// The same on a thread pool of one worker: the continuation is queued by whichever
/// thread finishes the antecedent (or by `then` itself), and the cancel may hit it
/// queued, before its start. Then shutdown with wait: `fn` ran once iff the cancel lost.
#[test]
fn loom_then_pool_cancel_vs_registration_vs_completion() {
    model(|| {
        let p = pool(1);
        let ante = Core::promise();
        let runs = counter();
        let a = shared(&ante);
        let t = thread::spawn(move || {
            let _ = a.finish(value(1));
        });
        let cont = then(&ante, Some(&p), count_then, as_arg(&runs)).unwrap();
        let cancelled = cont.cancel();
        t.join().unwrap();
        assert_eq!(p.shutdown(true, false), CF_OK);
        ran_xor_cancelled(&cont, &runs, cancelled);
        assert_eq!(ante.listener_count(), 0);
        drop(p);
        assert_eq!(Shared::strong_count(&cont), 1);
        drop(cont);
        assert_eq!(Shared::strong_count(&ante), 1);
    });
}

/// Shutdown racing the hook: the antecedent is finished by another thread while the
/// main thread shuts the pool down (with wait). Exactly one of: the continuation runs
/// once, or it finishes with `CF_SHUTDOWN` and never runs; shutdown returns (no lost
/// task, no worker left), and a `then` after it is refused.
#[test]
fn loom_then_shutdown_vs_hook() {
    model(|| {
        let p = pool(1);
        let ante = Core::promise();
        let runs = counter();
        let cont = then(&ante, Some(&p), count_then, as_arg(&runs)).unwrap();
        let a = shared(&ante);
        let t = thread::spawn(move || {
            let _ = a.finish(value(1));
        });
        assert_eq!(p.shutdown(true, false), CF_OK);
        t.join().unwrap();
        ran_xor_shut(&cont, &runs);
        assert!(then(&ante, Some(&p), count_then, as_arg(&runs)).is_err());
        assert_eq!(p.worker_count(), 0);
        drop(p);
        assert_eq!(Shared::strong_count(&cont), 1);
    });
}

/// A continuation of a pool task on the same pool: the hook fires on the worker, which
/// takes the continuation into its own batch (`Pool::push_local`), while the main thread
/// shuts the pool down. Exactly one of: it runs once (the worker drains its batch before
/// it exits), or `CF_SHUTDOWN`; the task itself runs once; shutdown returns.
#[test]
fn loom_then_worker_local_vs_shutdown() {
    model(|| {
        let p: Arc<Pool> = pool(1);
        let (r0, runs) = (counter(), counter());
        let f0 = p.submit(Task::Call(count_task, as_arg(&r0))).unwrap();
        let cont = then(&f0, Some(&p), count_then, as_arg(&runs)).unwrap();
        assert_eq!(p.shutdown(true, false), CF_OK);
        assert_eq!(count_of(&r0), 1);
        ran_xor_shut(&cont, &runs);
        assert_eq!(p.worker_count(), 0);
        drop(p);
        assert_eq!(Shared::strong_count(&cont), 1);
        assert_eq!(Shared::strong_count(&f0), 1);
    });
}

/// `cf_when` registering on two promises while two threads finish them: the result
/// finishes exactly once (one callback call), with an index in range (for
/// `ALL_COMPLETED`: after both are done), every registration on the inputs is gone and
/// every reference dropped.
fn when_vs_completion(mode: ReturnWhen) {
    model(move || {
        let (a, b) = (Core::promise(), Core::promise());
        let (ta, tb) = (shared(&a), shared(&b));
        let t1 = thread::spawn(move || {
            let _ = ta.finish(value(1));
        });
        let t2 = thread::spawn(move || {
            let _ = tb.finish(value(2));
        });
        let out = when(&[&a, &b], mode).unwrap();
        let calls = counter();
        assert!(out.add_callback(count_done, as_arg(&calls)));
        t1.join().unwrap();
        t2.join().unwrap();
        assert_eq!(out.phase(), Phase::Finished);
        assert!(value_of(&out).is_some_and(|i| i < 2));
        assert_eq!(count_of(&calls), 1);
        assert_eq!((a.listener_count(), b.listener_count()), (0, 0));
        assert_eq!((Shared::strong_count(&a), Shared::strong_count(&b)), (1, 1));
        assert_eq!(Shared::strong_count(&out), 1);
    });
}

#[test]
fn loom_when_all_registration_vs_completion() {
    when_vs_completion(ReturnWhen::AllCompleted);
}

#[test]
fn loom_when_first_registration_vs_completion() {
    when_vs_completion(ReturnWhen::FirstCompleted);
}

/// `cf_when(FIRST_COMPLETED)` on a promise finished by another thread, cancelled by the
/// main thread right after the call: exactly one outcome (the index 0, or cancelled),
/// its registration gone either way, no reference kept.
#[test]
fn loom_when_cancel_vs_completion() {
    model(|| {
        let a = Core::promise();
        let ta = shared(&a);
        let t = thread::spawn(move || {
            let _ = ta.finish(value(1));
        });
        let out = when(&[&a], ReturnWhen::FirstCompleted).unwrap();
        let cancelled = out.cancel();
        t.join().unwrap();
        match out.phase() {
            Phase::Finished => assert!(!cancelled && value_of(&out) == Some(0)),
            Phase::Cancelled => assert!(cancelled),
            phase => panic!("when {phase:?}"),
        }
        assert_eq!(a.listener_count(), 0);
        assert_eq!(Shared::strong_count(&a), 1);
    });
}
