//! loom models of the engine's protocols: every interleaving of two or three threads, up
//! to `LOOM_MAX_PREEMPTIONS` preemptions (2 unless set), is run and checked. Run them with
//! `scripts/loom.sh`; they exist only under `--cfg cfutures_loom` (see `rt::sync`).
//!
//! What each model proves is in its doc comment. Common to all: loom fails an execution
//! on a deadlock (every thread blocked: a lost wake-up), on an access to the future's slot
//! that is not ordered after the write it may see (`UnsafeCell` tracking), and on any
//! panic; each model then checks the outcome of the execution: who won, how many times
//! each task and callback ran, that no listener is left registered, and the reference
//! counts. Futures and wait sets are `rt::shared::Shared`s, whose count is a loom atomic
//! and whose memory comes from loom's leak-tracking allocator (`rt::sync::alloc`): loom
//! fails any execution that leaks one or frees one twice.
//!
//! Bookkeeping (how often a task or callback ran) uses std atomics: they observe the
//! model from outside and add no interleavings (loom runs all model threads as
//! coroutines on one OS thread, and each count is read only after every thread joined).

use super::{
    future::{Core, CoreRef, Phase},
    many::{AsCompleted, Next, ReturnWhen, wait_many},
    pool::{Config, Pool, Runner},
    shared::Shared,
    sync::{Arc, thread},
    task::{Failure, Outcome, OutcomeRef, Task},
    time::Deadline,
};
use crate::status::{CF_OK, CF_TASK_FAILED};
use std::{
    ffi::c_void,
    ptr,
    sync::atomic::{AtomicUsize as Count, Ordering::SeqCst},
};

/// Runs `f` under loom and prints how many executions were explored. The preemption
/// bound is `LOOM_MAX_PREEMPTIONS` (then `LOOM_LOG` and `LOOM_LOCATION` work as loom
/// documents), or 2 when that is not set (without a bound the pool models would not
/// finish).
fn model(f: impl Fn() + Sync + Send + 'static) {
    let executions = Arc::new(Count::new(0));
    let counted = {
        let executions = executions.clone();
        move || {
            executions.fetch_add(1, SeqCst);
            f();
        }
    };
    if std::env::var_os("LOOM_MAX_PREEMPTIONS").is_some() {
        loom::model(counted);
    } else {
        let mut builder = loom::model::Builder::new();
        builder.preemption_bound = Some(2);
        builder.check(counted);
    }
    let name = std::thread::current().name().unwrap_or("?").to_owned();
    eprintln!("{name}: {} executions", executions.load(SeqCst));
}

/// A deadline that has already passed: the timeout side of a race, without a clock.
fn expired() -> Deadline {
    let d = Deadline::from_timeout(0.0).expect("0 is a valid timeout");
    assert!(d.expired());
    d
}

fn value(n: usize) -> Outcome {
    Outcome::Value(ptr::without_provenance_mut(n))
}

fn value_of(f: &Core) -> Option<usize> {
    match f.outcome() {
        Some(OutcomeRef::Value(v)) => Some(v as usize),
        _ => None,
    }
}

/// A counter handed to C-style callbacks and tasks as their `void *`.
fn counter() -> Arc<Count> {
    Arc::new(Count::new(0))
}

fn as_arg(c: &Arc<Count>) -> *mut c_void {
    Arc::as_ptr(c).cast_mut().cast()
}

/// Done callback: checks that the future it is given is done (callbacks run only once
/// the state is final), reads its outcome (a tracked read of the slot, which must be
/// ordered after the completer's write), and counts the call.
unsafe extern "C-unwind" fn on_done(f: *const Core, counter: *mut c_void) {
    // SAFETY: the engine passes the `Core` it runs the callback for, alive for the call.
    let core = unsafe { &*f };
    assert!(core.is_done(), "callback ran before the future was done");
    if core.phase() == Phase::Finished {
        assert!(core.outcome().is_some(), "finished without an outcome");
    }
    // SAFETY: the models pass a `Count` they keep alive until every thread joined.
    unsafe { &*counter.cast::<Count>() }.fetch_add(1, SeqCst);
}

/// Task: counts its run and returns 7.
unsafe extern "C-unwind" fn count_task(counter: *mut c_void) -> *mut c_void {
    // SAFETY: the models pass a `Count` they keep alive until the pool is shut down.
    unsafe { &*counter.cast::<Count>() }.fetch_add(1, SeqCst);
    ptr::without_provenance_mut(7)
}

/// Task: waits, on its worker, for the promise passed as its argument; returns 1 if the
/// wait said done. (A panic in a task would be caught and become a failed outcome, so
/// the task reports and the model asserts.)
unsafe extern "C-unwind" fn wait_task(promise: *mut c_void) -> *mut c_void {
    // SAFETY: the model passes a `Core` it keeps alive until the pool is shut down.
    let p = unsafe { &*promise.cast::<Core>() };
    ptr::without_provenance_mut(usize::from(p.wait(Deadline::FOREVER) && p.is_done()))
}

/// Task: finishes the promise passed as its argument with 5; returns 7 if it won.
unsafe extern "C-unwind" fn finish_task(promise: *mut c_void) -> *mut c_void {
    // SAFETY: the model passes a `Core` it keeps alive until the pool is shut down.
    let p = unsafe { &*promise.cast::<Core>() };
    ptr::without_provenance_mut(if p.finish(value(5)).is_ok() { 7 } else { 0 })
}

fn pool(max_workers: usize) -> Arc<Pool> {
    Pool::new(
        Config {
            max_workers,
            name_prefix: None,
            initializer: None,
        },
        Runner::Local,
    )
}

fn count_of(c: &Arc<Count>) -> usize {
    c.load(SeqCst)
}

/// The future of a pool task: it either ran exactly once and finished with its value, or
/// never ran and was cancelled. Never both, never neither.
fn ran_xor_cancelled(f: &Core, runs: &Arc<Count>) {
    match (f.phase(), count_of(runs)) {
        (Phase::Finished, 1) => assert_eq!(value_of(f), Some(7)),
        (Phase::Cancelled, 0) => {}
        (phase, runs) => panic!("task future {phase:?} after {runs} runs"),
    }
}

// ---------------------------------------------------------------------------------------
// (a) The future: finish vs cancel vs add_callback vs wait.
// ---------------------------------------------------------------------------------------

/// A promise finished by one thread and cancelled by another while the main thread adds a
/// callback and then blocks in `wait(FOREVER)`: exactly one of finish/cancel wins, the
/// phase and outcome are the winner's, the waiter is always woken (else: deadlock), the
/// callback runs exactly once whichever side runs it, and no listener is left.
#[test]
fn loom_future_finish_vs_cancel_vs_callback_and_wait() {
    model(|| {
        let f = Core::promise();
        let calls = counter();
        let finisher = {
            let f = f.clone();
            thread::spawn(move || f.finish(value(1)).is_ok())
        };
        let canceller = {
            let f = f.clone();
            thread::spawn(move || f.cancel())
        };
        f.add_callback(on_done, as_arg(&calls));
        assert!(f.wait(Deadline::FOREVER));
        assert!(f.is_done());
        let finished = finisher.join().unwrap();
        let cancelled = canceller.join().unwrap();
        assert!(
            finished ^ cancelled,
            "finish {finished}, cancel {cancelled}"
        );
        if finished {
            assert_eq!(f.phase(), Phase::Finished);
            assert_eq!(value_of(&f), Some(1));
        } else {
            assert_eq!(f.phase(), Phase::Cancelled);
            assert!(f.outcome().is_none());
        }
        assert_eq!(count_of(&calls), 1);
        assert_eq!(f.listener_count(), 0);
        assert_eq!(Shared::strong_count(&f), 1);
    });
}

/// A task future as a worker runs it (`start`, run, `finish`) while the main thread adds
/// a callback and then cancels, and a third thread waits: the task runs iff the cancel
/// lost; the waiter is woken; the callback runs exactly once.
#[test]
fn loom_future_worker_start_vs_cancel_with_waiter() {
    model(|| {
        let runs = counter();
        let calls = counter();
        let f = Core::with_task(Task::Call(count_task, as_arg(&runs))).unwrap();
        let worker = {
            let f = f.clone();
            thread::spawn(move || {
                if let Some(task) = f.start() {
                    assert!(f.finish(task.run()).is_ok());
                }
            })
        };
        let waiter = {
            let f = f.clone();
            thread::spawn(move || f.wait(Deadline::FOREVER))
        };
        f.add_callback(on_done, as_arg(&calls));
        let cancelled = f.cancel();
        assert!(waiter.join().unwrap());
        worker.join().unwrap();
        assert_eq!(cancelled, f.phase() == Phase::Cancelled);
        ran_xor_cancelled(&f, &runs);
        assert_eq!(count_of(&calls), 1);
        assert_eq!(f.listener_count(), 0);
    });
}

/// Two callbacks added from two threads while a third finishes the promise: each runs
/// exactly once (by the completer's drain or by its registrant), none is lost or doubled.
#[test]
fn loom_future_callbacks_added_during_completion() {
    model(|| {
        let f = Core::promise();
        let (a, b) = (counter(), counter());
        let finisher = {
            let f = f.clone();
            thread::spawn(move || assert!(f.finish(value(2)).is_ok()))
        };
        let adder = {
            let (f, b) = (f.clone(), b.clone());
            thread::spawn(move || f.add_callback(on_done, as_arg(&b)))
        };
        f.add_callback(on_done, as_arg(&a));
        finisher.join().unwrap();
        adder.join().unwrap();
        assert_eq!((count_of(&a), count_of(&b)), (1, 1));
        assert_eq!(value_of(&f), Some(2));
        assert_eq!(f.listener_count(), 0);
    });
}

/// Two threads race to finish the same promise while the main thread waits: one wins,
/// the other gets its outcome back (no double completion), the waiter sees the winner's.
#[test]
fn loom_future_double_finish() {
    model(|| {
        let f = Core::promise();
        let spawn_finish = |n| {
            let f = f.clone();
            thread::spawn(move || f.finish(value(n)).is_ok())
        };
        let (t1, t2) = (spawn_finish(1), spawn_finish(2));
        assert!(f.wait(Deadline::FOREVER));
        let won = value_of(&f).expect("finished");
        let (ok1, ok2) = (t1.join().unwrap(), t2.join().unwrap());
        assert!(ok1 ^ ok2);
        assert_eq!(won, if ok1 { 1 } else { 2 });
        assert_eq!(f.listener_count(), 0);
    });
}

// ---------------------------------------------------------------------------------------
// (b) Release racing completion.
// ---------------------------------------------------------------------------------------

/// Every holder lets go of the future while it completes: the finisher drops its
/// reference right after `finish`, another thread adds a callback and drops its own, the
/// main thread drops its reference as soon as both are spawned. Whichever thread drops
/// last frees the core, exactly once (the outcome owns a heap `Failure`: a double drop
/// would be a double free) and never while in use: the callback reads the outcome, and
/// the last drop happens after that. loom's allocation tracking (see the module comment)
/// fails the execution if the core is never freed or freed twice.
#[test]
fn loom_future_release_racing_completion() {
    model(|| {
        let calls = counter();
        let f = Core::promise();
        let finisher = {
            let f = f.clone();
            thread::spawn(move || {
                let failure = Failure::new(CF_TASK_FAILED, 3, "boom");
                assert!(f.finish(Outcome::Failed(failure)).is_ok());
                drop(f);
            })
        };
        let adder = {
            let (f, calls) = (f.clone(), calls.clone());
            thread::spawn(move || {
                f.add_callback(on_done, as_arg(&calls));
                drop(f);
            })
        };
        drop(f);
        finisher.join().unwrap();
        adder.join().unwrap();
        assert_eq!(count_of(&calls), 1);
    });
}

/// The reference count itself (`rt::shared::Shared`, which every future handle is):
/// three threads clone and drop, one of them through the raw-pointer round trip the C
/// API uses (`cf_future_retain`/`_release`), while the main thread drops its own. The
/// value is dropped exactly once, after every use (each thread reads it before its
/// drop; the `Acquire` fence orders those reads before the drop), and loom's allocation
/// tracking fails the execution on a leak or a double free.
#[test]
fn loom_shared_refcount_frees_exactly_once() {
    /// Counts its drops; reading `value` after the free would be caught by loom's
    /// tracked cell.
    struct Probe {
        drops: Arc<Count>,
        value: super::sync::UnsafeCell<usize>,
    }
    impl Drop for Probe {
        fn drop(&mut self) {
            // SAFETY: dropping: no other reference exists.
            self.value.with_mut(|v| unsafe { *v = 0 });
            self.drops.fetch_add(1, SeqCst);
        }
    }
    fn read(p: &Probe) -> usize {
        // SAFETY: only the drop writes, and it runs after every reference is gone.
        p.value.with(|v| unsafe { *v })
    }
    model(|| {
        let drops = counter();
        let s = Shared::try_new(Probe {
            drops: drops.clone(),
            value: super::sync::UnsafeCell::new(9),
        })
        .ok()
        .unwrap();
        let t1 = {
            let s = s.clone();
            thread::spawn(move || {
                let again = s.clone();
                assert_eq!(read(&again), 9);
                drop(s);
                drop(again);
            })
        };
        let t2 = {
            let raw = Shared::into_raw(s.clone()) as usize;
            thread::spawn(move || {
                let p = raw as *const Probe;
                // SAFETY: `raw` holds one reference (from `into_raw`), alive here.
                unsafe { Shared::increment_strong_count(p) };
                // SAFETY: two references are held through `p`; each is taken back once.
                let (a, b) = unsafe { (Shared::from_raw(p), Shared::from_raw(p)) };
                assert_eq!(read(&a), 9);
                drop(a);
                drop(b);
            })
        };
        assert_eq!(read(&s), 9);
        drop(s);
        t1.join().unwrap();
        t2.join().unwrap();
        assert_eq!(count_of(&drops), 1);
    });
}

// ---------------------------------------------------------------------------------------
// (c) Waiting on many: WaitSet registration, notification and removal.
// ---------------------------------------------------------------------------------------

/// `wait_many(ALL_COMPLETED)` on two promises completed by two threads (one finishes, one
/// cancels): the waiter is woken for each completion until both are seen (no lost
/// wake-up: else deadlock), and no registration is left on either future.
#[test]
fn loom_wait_many_all_completed() {
    model(|| {
        let (a, b) = (Core::promise(), Core::promise());
        let t1 = {
            let a = a.clone();
            thread::spawn(move || assert!(a.finish(value(1)).is_ok()))
        };
        let t2 = {
            let b = b.clone();
            thread::spawn(move || assert!(b.cancel()))
        };
        assert!(wait_many(&[&a, &b], ReturnWhen::AllCompleted, Deadline::FOREVER).unwrap());
        assert!(a.is_done() && b.is_done());
        t1.join().unwrap();
        t2.join().unwrap();
        assert_eq!((a.listener_count(), b.listener_count()), (0, 0));
        assert_eq!((Shared::strong_count(&a), Shared::strong_count(&b)), (1, 1));
    });
}

/// `wait_many(FIRST_COMPLETED)` on two promises finished by two threads: it returns after
/// the first, and its removal of the other registration races that future's completion
/// (which may be draining the listener list at the same moment): either way nothing is
/// left registered and the wait set is not leaked.
#[test]
fn loom_wait_many_first_completed_unregisters() {
    model(|| {
        let (a, b) = (Core::promise(), Core::promise());
        let spawn_finish = |f: &CoreRef| {
            let f = f.clone();
            thread::spawn(move || assert!(f.finish(value(1)).is_ok()))
        };
        let (t1, t2) = (spawn_finish(&a), spawn_finish(&b));
        assert!(wait_many(&[&a, &b], ReturnWhen::FirstCompleted, Deadline::FOREVER).unwrap());
        assert!(a.is_done() || b.is_done());
        t1.join().unwrap();
        t2.join().unwrap();
        assert_eq!((a.listener_count(), b.listener_count()), (0, 0));
    });
}

/// `as_completed` (no deadline) over two promises completed by two threads: each future
/// is yielded exactly once (one notification per completion, none lost, none doubled),
/// then the iteration ends.
#[test]
fn loom_as_completed_yields_each_once() {
    model(|| {
        let (a, b) = (Core::promise(), Core::promise());
        let t1 = {
            let a = a.clone();
            thread::spawn(move || assert!(a.finish(value(1)).is_ok()))
        };
        let t2 = {
            let b = b.clone();
            thread::spawn(move || assert!(b.cancel()))
        };
        let mut it = AsCompleted::new(vec![a.clone(), b.clone()], Deadline::FOREVER).unwrap();
        let mut seen = [0usize; 2];
        loop {
            match it.next() {
                Next::Yield(f) => {
                    assert!(f.is_done());
                    seen[usize::from(!Shared::ptr_eq(f, &a))] += 1;
                }
                Next::End => break,
                Next::Timeout => panic!("timeout without a deadline"),
            }
        }
        assert_eq!(seen, [1, 1]);
        drop(it);
        t1.join().unwrap();
        t2.join().unwrap();
        assert_eq!((a.listener_count(), b.listener_count()), (0, 0));
    });
}

/// As above, but the iterator is built (both futures registered) before the completers
/// start, so only the notification path is modelled: each completion is delivered
/// exactly once, through the wait set, to a waiter that may be parked or about to park.
#[test]
fn loom_as_completed_registered_then_completed() {
    model(|| {
        let (a, b) = (Core::promise(), Core::promise());
        let mut it = AsCompleted::new(vec![a.clone(), b.clone()], Deadline::FOREVER).unwrap();
        let t1 = {
            let a = a.clone();
            thread::spawn(move || assert!(a.finish(value(1)).is_ok()))
        };
        let t2 = {
            let b = b.clone();
            thread::spawn(move || assert!(b.cancel()))
        };
        let mut seen = [0usize; 2];
        loop {
            match it.next() {
                Next::Yield(f) => {
                    assert!(f.is_done());
                    seen[usize::from(!Shared::ptr_eq(f, &a))] += 1;
                }
                Next::End => break,
                Next::Timeout => panic!("timeout without a deadline"),
            }
        }
        assert_eq!(seen, [1, 1]);
        drop(it);
        t1.join().unwrap();
        t2.join().unwrap();
        assert_eq!((a.listener_count(), b.listener_count()), (0, 0));
    });
}

/// `as_completed` with a deadline that has already passed, over two promises completed
/// by two threads: it yields only done futures, each at most once, then times out (or
/// ends); dropping the iterator removes its registrations while the completions race it,
/// and a completion after the drop touches nothing of it.
#[test]
fn loom_as_completed_timeout_vs_completion() {
    model(|| {
        let (a, b) = (Core::promise(), Core::promise());
        let spawn_finish = |f: &CoreRef| {
            let f = f.clone();
            thread::spawn(move || assert!(f.finish(value(1)).is_ok()))
        };
        let (t1, t2) = (spawn_finish(&a), spawn_finish(&b));
        let mut it = AsCompleted::new(vec![a.clone(), b.clone()], expired()).unwrap();
        let mut seen = [0usize; 2];
        // Until `Timeout` or `End`.
        while let Next::Yield(f) = it.next() {
            assert!(f.is_done());
            seen[usize::from(!Shared::ptr_eq(f, &a))] += 1;
        }
        assert!(seen[0] <= 1 && seen[1] <= 1, "yielded twice: {seen:?}");
        drop(it);
        t1.join().unwrap();
        t2.join().unwrap();
        assert_eq!((a.listener_count(), b.listener_count()), (0, 0));
        assert_eq!((Shared::strong_count(&a), Shared::strong_count(&b)), (1, 1));
    });
}

// ---------------------------------------------------------------------------------------
// (d) The thread pool: submit, idle, sleep, wake, help while waiting.
// ---------------------------------------------------------------------------------------

/// One worker; the main thread submits a task, then a second one while the worker is
/// finishing the first, going idle, (not) spinning and going to sleep; then shuts down
/// with wait. No lost wake-up: both tasks run exactly once, `shutdown` returns (else:
/// deadlock) and every worker has exited.
#[test]
fn loom_pool_submit_while_worker_goes_to_sleep() {
    model(|| {
        let p = pool(1);
        let (r1, r2) = (counter(), counter());
        let f1 = p.submit(Task::Call(count_task, as_arg(&r1))).unwrap();
        let f2 = p.submit(Task::Call(count_task, as_arg(&r2))).unwrap();
        assert_eq!(p.shutdown(true, false), CF_OK);
        assert_eq!(p.worker_count(), 0);
        assert_eq!((count_of(&r1), count_of(&r2)), (1, 1));
        assert_eq!((value_of(&f1), value_of(&f2)), (Some(7), Some(7)));
        assert_eq!(
            (Shared::strong_count(&f1), Shared::strong_count(&f2)),
            (1, 1)
        );
    });
}

/// Submit, wait, submit, wait on a pool of two: the second submit finds the first worker
/// idle (it counts itself idle before publishing the outcome the main thread waited
/// for), so it wakes or reuses it and never starts a second worker (Python's
/// `test_idle_thread_reuse`); the sleeping worker is woken for the second task.
#[test]
fn loom_pool_idle_reuse_and_wake() {
    model(|| {
        let p = pool(2);
        let (r1, r2) = (counter(), counter());
        let f1 = p.submit(Task::Call(count_task, as_arg(&r1))).unwrap();
        assert!(f1.wait(Deadline::FOREVER));
        let f2 = p.submit(Task::Call(count_task, as_arg(&r2))).unwrap();
        assert!(f2.wait(Deadline::FOREVER));
        assert_eq!(p.worker_count(), 1, "a second worker was started");
        assert_eq!(p.shutdown(true, false), CF_OK);
        assert_eq!(p.worker_count(), 0);
        assert_eq!((count_of(&r1), count_of(&r2)), (1, 1));
    });
}

/// A batch of three tasks on a pool of two (as a map hands over its chunks), then a
/// wait on the last: the batch starts the workers it needs and wakes them as the same
/// submits one by one would, every task runs exactly once, the wait returns, and both
/// workers exit at shutdown.
#[test]
fn loom_pool_submit_batch() {
    model(|| {
        let p = pool(2);
        let rs = [counter(), counter(), counter()];
        let tasks = rs
            .iter()
            .map(|r| Task::Call(count_task, as_arg(r)))
            .collect::<Vec<_>>();
        let fs = p.submit_batch(tasks).unwrap();
        assert_eq!(fs.len(), 3);
        assert!(fs[2].wait(Deadline::FOREVER));
        assert_eq!(p.shutdown(true, false), CF_OK);
        assert_eq!(p.worker_count(), 0);
        for (f, r) in fs.iter().zip(&rs) {
            assert_eq!(count_of(r), 1);
            assert_eq!(value_of(f), Some(7));
        }
    });
}

/// Two workers, two tasks submitted back to back, then shutdown with wait: both workers
/// are started or the first takes both; every task runs exactly once; both exit.
#[test]
fn loom_pool_two_workers() {
    model(|| {
        let p = pool(2);
        let (r1, r2) = (counter(), counter());
        let f1 = p.submit(Task::Call(count_task, as_arg(&r1))).unwrap();
        let f2 = p.submit(Task::Call(count_task, as_arg(&r2))).unwrap();
        assert_eq!(p.shutdown(true, false), CF_OK);
        assert_eq!(p.worker_count(), 0);
        assert_eq!((count_of(&r1), count_of(&r2)), (1, 1));
        assert!(f1.is_done() && f2.is_done());
    });
}

/// A task cancelled while queued never runs: one worker, two tasks; the main thread
/// cancels the second while the worker may be taking it. If the cancel won, the task
/// never runs; if it lost, the task ran (or is running) and finishes. Shutdown returns.
#[test]
fn loom_pool_cancel_queued_task() {
    model(|| {
        let p = pool(1);
        let (r1, r2) = (counter(), counter());
        let f1 = p.submit(Task::Call(count_task, as_arg(&r1))).unwrap();
        let f2 = p.submit(Task::Call(count_task, as_arg(&r2))).unwrap();
        let cancelled = f2.cancel();
        assert_eq!(p.shutdown(true, false), CF_OK);
        assert_eq!(count_of(&r1), 1);
        assert_eq!(cancelled, count_of(&r2) == 0);
        ran_xor_cancelled(&f1, &r1);
        ran_xor_cancelled(&f2, &r2);
    });
}

/// Help while waiting: the only worker runs a task that waits on a promise; the main
/// thread submits a second task (which can only run if the waiting worker, registered as
/// a helper, is woken to run it) and then finishes the promise. No deadlock: the second
/// task runs inside the wait or after it, the wait returns done, shutdown returns.
#[test]
fn loom_pool_worker_helps_while_waiting() {
    model(|| {
        let p = pool(1);
        let promise = Core::promise();
        let runs = counter();
        let waiting = p
            .submit(Task::Call(
                wait_task,
                Shared::as_ptr(&promise).cast_mut().cast(),
            ))
            .unwrap();
        let other = p.submit(Task::Call(count_task, as_arg(&runs))).unwrap();
        assert!(promise.finish(value(5)).is_ok());
        assert_eq!(p.shutdown(true, false), CF_OK);
        assert_eq!(
            value_of(&waiting),
            Some(1),
            "the worker's wait did not see done"
        );
        assert_eq!(value_of(&other), Some(7));
        assert_eq!(count_of(&runs), 1);
        assert_eq!(promise.listener_count(), 0);
    });
}

/// A task that waits for what only a later task of the same one-worker pool provides:
/// the worker, blocked in the first task's wait, must be woken as a helper by the second
/// submit and run the second task inside its wait. Without help (or with its wake-up
/// lost) this deadlocks; with it, both finish and shutdown returns.
#[test]
fn loom_pool_worker_helps_run_what_it_waits_for() {
    model(|| {
        let p = pool(1);
        let promise = Core::promise();
        let arg = || Shared::as_ptr(&promise).cast_mut().cast();
        let waiting = p.submit(Task::Call(wait_task, arg())).unwrap();
        let finishing = p.submit(Task::Call(finish_task, arg())).unwrap();
        assert!(waiting.wait(Deadline::FOREVER));
        assert_eq!(p.shutdown(true, false), CF_OK);
        assert_eq!(
            value_of(&waiting),
            Some(1),
            "the worker's wait did not see done"
        );
        assert_eq!(value_of(&finishing), Some(7));
        assert_eq!(value_of(&promise), Some(5));
        assert_eq!(promise.listener_count(), 0);
    });
}

// ---------------------------------------------------------------------------------------
// (e) Shutdown with cancel_futures.
// ---------------------------------------------------------------------------------------

/// `shutdown(wait, cancel_futures)` racing the worker taking queued tasks: each task is
/// either run (once) or cancelled, never both, never neither; shutdown returns with the
/// worker gone.
#[test]
fn loom_pool_shutdown_cancel_futures_vs_worker() {
    model(|| {
        let p = pool(1);
        let runs = [counter(), counter()];
        let fs: Vec<_> = runs
            .iter()
            .map(|r| p.submit(Task::Call(count_task, as_arg(r))).unwrap())
            .collect();
        assert_eq!(p.shutdown(true, true), CF_OK);
        assert_eq!(p.worker_count(), 0);
        for (f, r) in fs.iter().zip(&runs) {
            ran_xor_cancelled(f, r);
        }
    });
}

/// Four tasks on one worker, so that the worker takes a batch (its next task plus more
/// into its own list) when it finds a backlog, while `shutdown(wait, cancel_futures)`
/// drains the queue and the batches: each task runs once or is cancelled, none is left
/// stranded in a batch, the worker exits.
#[test]
fn loom_pool_shutdown_cancel_futures_vs_batch() {
    model(|| {
        let p = pool(1);
        let runs = [counter(), counter(), counter(), counter()];
        let fs: Vec<_> = runs
            .iter()
            .map(|r| p.submit(Task::Call(count_task, as_arg(r))).unwrap())
            .collect();
        assert_eq!(p.shutdown(true, true), CF_OK);
        assert_eq!(p.worker_count(), 0);
        for (f, r) in fs.iter().zip(&runs) {
            ran_xor_cancelled(f, r);
        }
    });
}

/// Four tasks on one worker, shut down without cancelling: whatever the worker moved
/// into its batch is run too; every task runs exactly once before the worker exits.
#[test]
fn loom_pool_batch_runs_everything() {
    model(|| {
        let p = pool(1);
        let runs = [counter(), counter(), counter(), counter()];
        let fs: Vec<_> = runs
            .iter()
            .map(|r| p.submit(Task::Call(count_task, as_arg(r))).unwrap())
            .collect();
        assert_eq!(p.shutdown(true, false), CF_OK);
        assert_eq!(p.worker_count(), 0);
        for (f, r) in fs.iter().zip(&runs) {
            assert_eq!(count_of(r), 1);
            assert_eq!(value_of(f), Some(7));
        }
    });
}

/// `shutdown(no wait, cancel_futures)` from another thread while the main thread
/// submits: the submit is refused, or its task runs or is cancelled (never lost in the
/// queue of a pool with no worker left to run it); a later `shutdown(wait)` returns.
#[test]
fn loom_pool_shutdown_vs_submit() {
    model(|| {
        let p = pool(1);
        let (r1, r2) = (counter(), counter());
        let f1 = p.submit(Task::Call(count_task, as_arg(&r1))).unwrap();
        let stopper = {
            let p = p.clone();
            thread::spawn(move || assert_eq!(p.shutdown(false, true), CF_OK))
        };
        let f2 = p.submit(Task::Call(count_task, as_arg(&r2)));
        stopper.join().unwrap();
        assert_eq!(p.shutdown(true, false), CF_OK);
        assert_eq!(p.worker_count(), 0);
        ran_xor_cancelled(&f1, &r1);
        match f2 {
            Ok(f2) => ran_xor_cancelled(&f2, &r2),
            Err(_) => assert_eq!(count_of(&r2), 0),
        }
    });
}

/// Counters of an owned task in the deadline model: runs, `arg_free` calls,
/// `result_free` calls. The task's `arg` (and its result) point at it.
type OwnedCounts = [Count; 3];

/// Owned task: counts its run and returns its argument (the counters) as its result.
unsafe extern "C-unwind" fn owned_run(counts: *mut c_void) -> *mut c_void {
    // SAFETY: the model passes an `OwnedCounts` it keeps alive until every thread joined.
    let c = unsafe { &*counts.cast::<OwnedCounts>() };
    c[0].fetch_add(1, SeqCst);
    counts
}

/// `arg_free` of the owned task.
unsafe extern "C-unwind" fn owned_arg_free(counts: *mut c_void) {
    // SAFETY: as for `owned_run`.
    let c = unsafe { &*counts.cast::<OwnedCounts>() };
    c[1].fetch_add(1, SeqCst);
}

/// `result_free` of the owned task.
unsafe extern "C-unwind" fn owned_result_free(counts: *mut c_void) {
    // SAFETY: as for `owned_run`.
    let c = unsafe { &*counts.cast::<OwnedCounts>() };
    c[2].fetch_add(1, SeqCst);
}

/// A deadline racing completion (`cf_task.timeout` on a thread pool): the timer's
/// `Core::expire` against a worker that starts an owned task, runs it and finishes its
/// future. Exactly one outcome wins: the task's result (the task ran, the deadline found
/// the future done) or `CF_DEADLINE` (the task never ran, or ran and lost, its late
/// result then discarded). Whatever the interleaving, `arg_free` runs exactly once, and
/// `result_free` exactly once if the task ran (never if it did not), by the time the
/// future's last reference is gone; no listener or future leaks.
#[test]
fn loom_deadline_races_completion() {
    use super::{
        future::Expiry,
        owned::{OwnedTask, Where, deadline_outcome},
    };
    use crate::status::CF_DEADLINE;
    model(|| {
        let counts: Arc<OwnedCounts> = Arc::new(Default::default());
        let arg = Arc::as_ptr(&counts).cast_mut().cast::<c_void>();
        let task = Task::Owned(Box::new(OwnedTask {
            work: Task::Call(owned_run, arg),
            arg_free: Some(owned_arg_free),
            result_free: Some(owned_result_free),
            deadline: None,
        }));
        let f = Core::with_task(task).expect("no memory limit in the model");
        let w = f.clone();
        let worker = thread::spawn(move || {
            if let Some(t) = w.start() {
                let outcome = t.run();
                // A late result comes back and is dropped here: `result_free`.
                drop(w.finish(outcome));
            }
        });
        let expired = f.expire(true, |running| {
            let at = if running {
                Where::OnThread
            } else {
                Where::NotStarted
            };
            deadline_outcome(0.5, at)
        });
        worker.join().unwrap();
        let ran = counts[0].load(SeqCst);
        assert!(ran <= 1);
        assert_eq!(counts[1].load(SeqCst), 1, "arg_free exactly once");
        match f.outcome() {
            Some(OutcomeRef::Value(v)) => {
                assert_eq!(ran, 1);
                assert_eq!(v, arg);
                assert_eq!(expired, Expiry::Done);
                assert_eq!(counts[2].load(SeqCst), 0, "the result is the future's");
            }
            Some(OutcomeRef::Failed(e)) => {
                assert_eq!(e.status, CF_DEADLINE);
                assert_eq!(expired, Expiry::Finished);
                assert_eq!(counts[2].load(SeqCst), ran, "a late result is discarded");
            }
            other => panic!("unexpected outcome {other:?}"),
        }
        assert_eq!(Shared::strong_count(&f), 1);
        drop(f);
        assert_eq!(
            counts[2].load(SeqCst),
            ran,
            "result_free once iff the task ran"
        );
    });
}

/// Continuations and `cf_when`.
mod then;
