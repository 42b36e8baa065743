//! Unit tests of the handles over a bare cell (no pool).

use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::*;
use crate::admission::{Admission, Permit};
use crate::error::ErrorKind;
use crate::task::{Task, TaskContext};

/// Bounds every wait here: a hang fails the test instead of blocking the run.
const DEADLINE: Duration = Duration::from_secs(60);

/// Runs `f` on its own thread and fails the test if it has not returned
/// within [`DEADLINE`] (a hang bound only; the thread is left behind). A
/// panic in `f` fails the test with its own message.
fn within<R: Send + 'static>(what: &str, f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
    });
    match rx.recv_timeout(DEADLINE) {
        Ok(Ok(r)) => r,
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(_) => panic!("{what} did not return within {DEADLINE:?}"),
    }
}

#[derive(Serialize, Deserialize)]
struct Echo;
impl Task for Echo {
    type Output = u32;
    type ToCaller = String;
    type FromCaller = String;
    const NAME: &'static str = "handle::tests::Echo";
    fn run(self, _cx: &mut TaskContext<'_, Self>) -> u32 {
        0
    }
}

#[test]
fn finish_once_and_permit_returned() {
    let adm = Admission::new(1);
    let c = Completion::new(adm.acquire(1).unwrap(), None);
    let h = TaskHandle::<Echo>::new(&c);
    assert!(c.begin());
    assert_eq!(adm.in_use(), 1);
    assert!(c.finish(Ok(Payload::value(7u32))));
    assert!(!c.finish(Ok(Payload::value(8u32))));
    assert_eq!(adm.in_use(), 0);
    assert_eq!(within("join", move || h.join()).unwrap(), 7);
}

#[test]
fn cancel_before_begin_prevents_run() {
    let c = Completion::new(Permit::none(), None);
    let h = TaskHandle::<Echo>::new(&c);
    assert!(h.cancel());
    assert!(!c.begin());
    assert!(within("join", move || h.join()).unwrap_err().is_cancelled());
}

#[test]
fn messages_flow_and_end() {
    let c = Completion::new(Permit::none(), None);
    let h = TaskHandle::<Echo>::new(&c);
    c.begin();
    h.send("down".into()).unwrap();
    assert_eq!(
        c.pop_down(Some(Instant::now()))
            .unwrap()
            .into_value::<String>("m")
            .unwrap(),
        "down"
    );
    c.push_message(Payload::value(String::from("up")));
    c.finish(Ok(Payload::value(1u32)));
    let (first, second) = within("recv", move || (h.recv(), h.recv()));
    assert_eq!(first.as_deref(), Some("up"));
    assert_eq!(second, None);
}

#[test]
fn join_timeout_gives_handle_back() {
    let c = Completion::new(Permit::none(), None);
    let h = TaskHandle::<Echo>::new(&c);
    let h = h.join_timeout(Duration::from_millis(5)).unwrap_err();
    c.finish(Ok(Payload::value(3u32)));
    assert_eq!(h.join_timeout(Duration::from_secs(5)).unwrap().unwrap(), 3);
}

/// Issue 7.5: a result that lands while `join_timeout` gives up used to be
/// reported as `Cancelled` and dropped. A finisher thread races a caller
/// that polls with a zero timeout; every result must come back as sent.
#[test]
fn join_timeout_never_loses_a_racing_result() {
    let (tx, rx) = mpsc::channel::<(Completion, u32)>();
    let finisher = std::thread::spawn(move || {
        for (c, n) in rx {
            c.finish(Ok(Payload::value(n)));
        }
    });
    let end = Instant::now() + DEADLINE;
    for n in 0..50_000u32 {
        let c = Completion::new(Permit::none(), None);
        let mut h = TaskHandle::<Echo>::new(&c);
        tx.send((c, n)).unwrap();
        let got = loop {
            match h.join_timeout(Duration::ZERO) {
                Ok(r) => break r,
                Err(back) => h = back,
            }
            assert!(
                Instant::now() < end,
                "round {n}: no result within {DEADLINE:?}"
            );
        };
        assert_eq!(got.unwrap(), n, "round {n}");
    }
    drop(tx);
    finisher.join().unwrap();
}

#[test]
fn batch_join_timeout_gives_handle_back_then_results() {
    let c = Completion::new(Permit::none(), None);
    let h = BatchHandle::<Echo>::new(&c, 2);
    let h = h.join_timeout(Duration::ZERO).unwrap_err();
    assert!(!h.is_finished());
    let results: BatchResults<Echo> = vec![Ok(1), Err(ErrorKind::Cancelled.into())];
    c.finish(Ok(Payload::value(BatchOutputs(results))));
    let got = h.join_timeout(DEADLINE).unwrap();
    assert_eq!(got[0].as_ref().unwrap(), &1);
    assert!(got[1].as_ref().unwrap_err().is_cancelled());
}

#[test]
fn batch_join_timeout_never_loses_a_racing_result() {
    let (tx, rx) = mpsc::channel::<(Completion, u32)>();
    let finisher = std::thread::spawn(move || {
        for (c, n) in rx {
            let results: BatchResults<Echo> = vec![Ok(n)];
            c.finish(Ok(Payload::value(BatchOutputs(results))));
        }
    });
    let end = Instant::now() + DEADLINE;
    for n in 0..20_000u32 {
        let c = Completion::new(Permit::none(), None);
        let mut h = BatchHandle::<Echo>::new(&c, 1);
        tx.send((c, n)).unwrap();
        let got = loop {
            match h.join_timeout(Duration::ZERO) {
                Ok(r) => break r,
                Err(back) => h = back,
            }
            assert!(
                Instant::now() < end,
                "round {n}: no result within {DEADLINE:?}"
            );
        };
        assert_eq!(*got[0].as_ref().unwrap(), n, "round {n}");
    }
    drop(tx);
    finisher.join().unwrap();
}

/// A task's cell stays small: a burst holds one per task (100k tasks
/// submitted at once hold 100k cells), and the message queues, which most
/// tasks never use, are boxed on first use rather than kept inline. With
/// its two reference counts the cell is one allocation of 168 bytes (248
/// with the queues inline).
#[test]
fn cell_stays_small() {
    let with_counts = std::mem::size_of::<super::cell::Shared>() + 2 * std::mem::size_of::<usize>();
    assert!(
        with_counts <= 168,
        "a task's cell takes {with_counts} bytes with its reference counts"
    );
}
