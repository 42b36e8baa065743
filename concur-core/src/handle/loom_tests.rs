//! Loom models of the result cell: every interleaving of a backend
//! finishing, a caller cancelling, waiting (with a zero or no timeout) and
//! dropping its handle. Run with
//! `RUSTFLAGS="--cfg loom" cargo test -p concur-core --release --lib loom`.

use std::time::Duration;

use loom::sync::atomic::AtomicUsize;
use loom::thread;
use serde::{Deserialize, Serialize};
use std::sync::atomic::Ordering::SeqCst;

use super::*;
use crate::admission::{Admission, Permit};
use crate::error::ErrorKind;
use crate::task::{Task, TaskContext};

#[derive(Serialize, Deserialize)]
struct Echo;
impl Task for Echo {
    type Output = u32;
    type ToCaller = u32;
    type FromCaller = u32;
    const NAME: &'static str = "handle::loom_tests::Echo";
    fn run(self, _cx: &mut TaskContext<'_, Self>) -> u32 {
        0
    }
}

/// Counts what a backend was told.
#[derive(Default)]
struct Told {
    cancel_running: AtomicUsize,
    caller_gone: AtomicUsize,
}

impl Link for Told {
    fn deliver(&self, _id: TaskId, _msg: Payload) -> Result<(), TaskError> {
        Ok(())
    }
    fn cancel_running(&self, _id: TaskId) {
        self.cancel_running.fetch_add(1, SeqCst);
    }
    fn caller_gone(&self, _id: TaskId) {
        self.caller_gone.fetch_add(1, SeqCst);
    }
}

/// Finish and cancel race: exactly one wins, the caller sees the winner's
/// result, and the queue room comes back once.
#[test]
fn loom_finish_vs_cancel() {
    loom::model(|| {
        let adm = Admission::new(1);
        let c = Completion::new(adm.try_acquire(1).unwrap().unwrap(), None);
        let h = TaskHandle::<Echo>::new(&c);
        let backend = thread::spawn(move || c.finish(Ok(Payload::value(7u32))));
        let cancelled = h.cancel();
        let finished = backend.join().unwrap();
        assert!(cancelled != finished, "exactly one side wins");
        match h.join() {
            Ok(v) => assert!(finished && v == 7),
            Err(e) => assert!(cancelled && e.is_cancelled()),
        }
        assert_eq!(adm.in_use(), 0);
    });
}

/// Issue 7.5 in the model: a zero-timeout wait racing the finish either
/// gets the result or gives the handle back with the result still in it.
#[test]
fn loom_finish_vs_join_timeout() {
    loom::model(|| {
        let c = Completion::new(Permit::none(), None);
        let h = TaskHandle::<Echo>::new(&c);
        let backend = thread::spawn(move || {
            assert!(c.finish(Ok(Payload::value(5u32))));
        });
        let got = match h.join_timeout(Duration::ZERO) {
            Ok(r) => r,
            Err(h) => h.join(),
        };
        assert_eq!(got.unwrap(), 5);
        backend.join().unwrap();
    });
}

/// The same race for a batch.
#[test]
fn loom_batch_finish_vs_join_timeout() {
    loom::model(|| {
        let c = Completion::new(Permit::none(), None);
        let h = BatchHandle::<Echo>::new(&c, 1);
        let backend = thread::spawn(move || {
            let results: BatchResults<Echo> = vec![Ok(9)];
            c.finish(Ok(Payload::value(BatchOutputs(results))));
        });
        let got = match h.join_timeout(Duration::ZERO) {
            Ok(r) => r,
            Err(h) => h.join(),
        };
        assert_eq!(*got[0].as_ref().unwrap(), 9);
        backend.join().unwrap();
    });
}

/// A blocked `join` is woken by the finish whichever comes first.
#[test]
fn loom_blocking_join_is_woken() {
    loom::model(|| {
        let c = Completion::new(Permit::none(), None);
        let h = TaskHandle::<Echo>::new(&c);
        let caller = thread::spawn(move || h.join().unwrap());
        assert!(c.begin());
        assert!(c.finish(Ok(Payload::value(3u32))));
        assert_eq!(caller.join().unwrap(), 3);
    });
}

/// Cancel races the backend starting and finishing the task: a task
/// cancelled first never starts; one cancelled while running is stopped
/// (the backend is told) and its late result dropped; one finished first
/// keeps its result.
#[test]
fn loom_cancel_vs_begin() {
    loom::model(|| {
        let told = std::sync::Arc::new(Told::default());
        let c = Completion::new(Permit::none(), Some(told.clone()));
        let h = TaskHandle::<Echo>::new(&c);
        let backend = thread::spawn(move || {
            let began = c.begin();
            let finished = began && c.finish(Ok(Payload::value(1u32)));
            (began, finished)
        });
        let cancelled = h.cancel();
        let (began, finished) = backend.join().unwrap();
        assert!(cancelled != finished);
        assert_eq!(
            told.cancel_running.load(SeqCst),
            usize::from(began && cancelled)
        );
        assert_eq!(h.join().is_ok(), finished);
    });
}

/// The caller drops its handle while the task finishes: the room comes
/// back, and the backend hears "caller gone" only when the task was not done.
#[test]
fn loom_finish_vs_drop() {
    loom::model(|| {
        let adm = Admission::new(1);
        let told = std::sync::Arc::new(Told::default());
        let c = Completion::new(adm.try_acquire(1).unwrap().unwrap(), Some(told.clone()));
        let h = TaskHandle::<Echo>::new(&c);
        let c2 = c.clone();
        let backend = thread::spawn(move || c2.finish(Ok(Payload::value(1u32))));
        drop(h);
        assert!(backend.join().unwrap());
        assert!(told.caller_gone.load(SeqCst) <= 1);
        drop(c);
        assert_eq!(adm.in_use(), 0);
    });
}

/// A task blocked in `recv` ends when its caller drops the handle.
#[test]
fn loom_drop_ends_blocked_recv() {
    loom::model(|| {
        let c = Completion::new(Permit::none(), None);
        let h = TaskHandle::<Echo>::new(&c);
        assert!(c.begin());
        let task = thread::spawn(move || c.pop_down(None).is_none());
        drop(h);
        assert!(task.join().unwrap());
    });
}

/// Messages sent before the finish are all read, in order, then the end.
#[test]
fn loom_messages_then_finish() {
    loom::model(|| {
        let c = Completion::new(Permit::none(), None);
        let h = TaskHandle::<Echo>::new(&c);
        assert!(c.begin());
        let task = thread::spawn(move || {
            c.push_message(Payload::value(1u32));
            c.finish(Ok(Payload::value(0u32)));
        });
        assert_eq!(h.recv(), Some(1));
        assert_eq!(h.recv(), None);
        task.join().unwrap();
        assert_eq!(h.join().unwrap(), 0);
    });
}

/// A cancel and a timeout (a second finisher) race a late result: one
/// error or the value, never two, and a waiting caller always wakes.
#[test]
fn loom_cancel_vs_timeout_vs_waiter() {
    loom::model(|| {
        let c = Completion::new(Permit::none(), None);
        let h = TaskHandle::<Echo>::new(&c);
        let timer = {
            let c = c.clone();
            thread::spawn(move || {
                c.finish(Err(ErrorKind::TimedOut {
                    after: Duration::ZERO,
                }
                .into()))
            })
        };
        let cancelled = h.cancel();
        let timed_out = timer.join().unwrap();
        assert!(cancelled != timed_out);
        let e = h.join().unwrap_err();
        assert_eq!(e.is_cancelled(), cancelled);
        assert_eq!(e.is_timeout(), timed_out);
        drop(c);
    });
}
