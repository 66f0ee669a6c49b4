//! Unit tests of the future core: its size, its state machine, listeners and callbacks.

use super::*;
use crate::rt::task::{Slots, no_bytes};
use std::sync::atomic::AtomicUsize;

static CALLS: AtomicUsize = AtomicUsize::new(0);
unsafe extern "C-unwind" fn count(_: *const Core, ud: *mut c_void) {
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
        let t = std::thread::spawn(move || g.finish(Outcome::Value(std::ptr::null_mut())).is_ok());
        assert!(f.wait(Deadline::FOREVER));
        assert!(t.join().unwrap());
    }
}
