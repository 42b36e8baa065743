//! Task -> caller messages across processes (issue 11.3): a worker holds a
//! task's small messages back and sends them together, yet every message
//! arrives, in order, before the task's result; none is held while the task
//! computes; a crash loses at most what was still held, and never hangs;
//! a malformed group from a worker is a typed error.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;

use common::{accept_within, join, one_frame_packet, send_on_every_socket, Who, DEADLINE};
use concur_procs::core::conformance::Stream;
use concur_procs::{Configure, ErrorKind, Executor, ProcessPool, Task, TaskContext};
use serde::{Deserialize, Serialize};

/// The bytes of message `i` of [`Mixed`]: mostly small, every 10th above
/// the size that joins a group, every 33rd large enough for shared memory.
fn mixed_message(i: u32) -> Vec<u8> {
    let len = if i % 33 == 0 {
        200_000
    } else if i % 10 == 0 {
        5_000
    } else {
        8
    };
    let mut v = vec![(i % 251) as u8; len];
    v[..4].copy_from_slice(&i.to_le_bytes());
    v
}

/// Sends `count` messages of mixed sizes ([`mixed_message`]), then returns `count`.
#[derive(Serialize, Deserialize)]
struct Mixed {
    count: u32,
}

impl Task for Mixed {
    type Output = u32;
    type ToCaller = Vec<u8>;
    type FromCaller = ();
    const NAME: &'static str = "procs-messages::Mixed";
    fn run(self, cx: &mut TaskContext<'_, Self>) -> u32 {
        for i in 0..self.count {
            cx.send(mixed_message(i)).unwrap();
        }
        self.count
    }
}

/// Sends `before` messages, then waits (at most two [`DEADLINE`]s) for a
/// byte on the Unix socket at `signal`, and returns whether it came; with
/// `crash`, then aborts its worker instead of returning.
#[derive(Serialize, Deserialize)]
struct SendThenWait {
    before: u64,
    signal: PathBuf,
    crash: bool,
}

impl Task for SendThenWait {
    type Output = bool;
    type ToCaller = u64;
    type FromCaller = ();
    const NAME: &'static str = "procs-messages::SendThenWait";
    fn run(self, cx: &mut TaskContext<'_, Self>) -> bool {
        let mut s = UnixStream::connect(&self.signal).unwrap();
        for i in 0..self.before {
            cx.send(i).unwrap();
        }
        // Not `cx.recv`: waiting there sends what is held; this task
        // computes (as far as its worker knows).
        s.set_read_timeout(Some(DEADLINE * 2)).unwrap();
        let got = s.read(&mut [0u8]).is_ok_and(|n| n == 1);
        if self.crash {
            std::process::abort();
        }
        got
    }
}

/// Sends `count` messages, then aborts its worker at once.
#[derive(Serialize, Deserialize)]
struct SendThenAbort {
    count: u64,
}

impl Task for SendThenAbort {
    type Output = ();
    type ToCaller = u64;
    type FromCaller = ();
    const NAME: &'static str = "procs-messages::SendThenAbort";
    fn run(self, cx: &mut TaskContext<'_, Self>) {
        for i in 0..self.count {
            cx.send(i).unwrap();
        }
        std::process::abort();
    }
}

/// Writes, on every socket it holds (its channel to the parent among
/// them), a packet with one `Up::MessageGroup` frame whose ends claim more
/// bytes than it carries, then waits to be stopped.
#[derive(Serialize, Deserialize)]
struct ForgeGroup;

impl Task for ForgeGroup {
    type Output = ();
    type ToCaller = u64;
    type FromCaller = ();
    const NAME: &'static str = "procs-messages::ForgeGroup";
    fn run(self, cx: &mut TaskContext<'_, Self>) {
        // The header, bincode 2 varint: `Up::MessageGroup` (variant 7, as
        // wire.rs's test `message_group_header_bytes` pins), task id 0,
        // one end at byte 5; the body is empty.
        send_on_every_socket(&one_frame_packet(&[7u8, 0, 1, 5]));
        // The caller never sends: this waits until the worker is ended.
        let _ = cx.recv_timeout(DEADLINE * 2);
    }
}

concur_procs::register!(Mixed, SendThenWait, SendThenAbort, ForgeGroup);

/// A fresh Unix socket path for one test.
fn socket_path(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!(
        "concur-messages-{}-{name}.sock",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&p);
    p
}

/// Reads `h`'s messages until the end, each within [`DEADLINE`].
fn read_all<T: Task>(h: &concur_procs::TaskHandle<T>) -> Vec<T::ToCaller> {
    let mut got = Vec::new();
    loop {
        match h.recv_timeout(DEADLINE) {
            Some(m) => got.push(m),
            None => {
                assert!(h.is_finished(), "no message within {DEADLINE:?}");
                return got;
            }
        }
    }
}

/// Many small messages (several full packets' worth) arrive all, in order,
/// and before the task's result: a message after the result would be
/// dropped by the handle, so the count proves the order.
#[test]
fn many_messages_arrive_in_order_before_the_result() {
    let p = ProcessPool::builder().workers(1).build().unwrap();
    const N: u32 = 50_000;
    let h = p.submit(Stream { count: N }).unwrap();
    let got = read_all(&h);
    assert_eq!(got, (0..N).collect::<Vec<_>>());
    assert_eq!(join(h).unwrap(), N);
}

/// Tasks queued back to back on one worker: each one's messages reach its
/// own handle, in order, though they share packets with the previous
/// tasks' results.
#[test]
fn messages_of_tasks_in_a_row_stay_with_their_tasks() {
    let p = ProcessPool::builder().workers(1).build().unwrap();
    let hs: Vec<_> = (0..8u32)
        .map(|i| p.submit(Stream { count: 100 * i }).unwrap())
        .collect();
    for (i, h) in (0..8u32).zip(hs) {
        assert_eq!(read_all(&h), (0..100 * i).collect::<Vec<_>>());
        assert_eq!(join(h).unwrap(), 100 * i);
    }
}

/// Small, medium and shared-memory messages interleaved keep their order.
#[test]
fn messages_of_every_size_keep_their_order() {
    let p = ProcessPool::builder().workers(1).build().unwrap();
    const N: u32 = 400;
    let h = p.submit(Mixed { count: N }).unwrap();
    let got = read_all(&h);
    assert_eq!(got.len(), N as usize);
    for (i, m) in (0..N).zip(got) {
        assert!(m == mixed_message(i), "message {i} differs");
    }
    assert_eq!(join(h).unwrap(), N);
}

/// A task that sends two messages (the second one held: it follows the
/// first at once) and then computes: the caller gets both while the task
/// still runs. The task goes on only when the caller, having received
/// both, signals it; a worker that held the second message until the task
/// ended would leave both waiting until their deadlines.
#[test]
fn a_held_message_is_sent_while_the_task_computes() {
    let p = ProcessPool::builder().workers(1).build().unwrap();
    let path = socket_path("computes");
    let listener = UnixListener::bind(&path).unwrap();
    let h = p
        .submit(SendThenWait {
            before: 2,
            signal: path.clone(),
            crash: false,
        })
        .unwrap();
    assert_eq!(h.recv_timeout(DEADLINE), Some(0), "the first message came");
    assert_eq!(h.recv_timeout(DEADLINE), Some(1), "the held message came");
    assert!(!h.is_finished());
    let mut s = accept_within(&listener, "the task");
    s.write_all(&[1]).unwrap();
    assert!(join(h).unwrap(), "the task saw the signal");
    let _ = std::fs::remove_file(&path);
}

/// The same bound holds for results: a quick task's result, held back
/// while the next task starts, reaches its caller while that next task
/// still computes (it goes on only once the first result was joined). A
/// first task keeps the worker busy while both are queued behind it, so
/// the worker has the next task ready when the quick one ends (sent ahead:
/// a fixed pipelining depth).
#[test]
fn a_result_is_not_held_behind_a_long_task() {
    let p = ProcessPool::builder()
        .workers(1)
        .in_flight_per_worker(4)
        .build()
        .unwrap();
    let (path1, path2) = (socket_path("first"), socket_path("behind"));
    let (l1, l2) = (
        UnixListener::bind(&path1).unwrap(),
        UnixListener::bind(&path2).unwrap(),
    );
    let wait_on = |signal: &PathBuf| SendThenWait {
        before: 0,
        signal: signal.clone(),
        crash: false,
    };
    let first = p.submit(wait_on(&path1)).unwrap();
    let mut s1 = accept_within(&l1, "the first task");
    let quick = p.submit(Who).unwrap();
    let long = p.submit(wait_on(&path2)).unwrap();
    s1.write_all(&[1]).unwrap();
    assert!(join(first).unwrap());
    join(quick).expect("the quick task's result came");
    assert!(!long.is_finished());
    let mut s2 = accept_within(&l2, "the long task");
    s2.write_all(&[1]).unwrap();
    assert!(join(long).unwrap(), "the long task saw the signal");
    for p in [path1, path2] {
        let _ = std::fs::remove_file(p);
    }
}

/// Messages the worker had sent before it crashed reach the caller; the
/// task fails with `WorkerLost`; nothing hangs.
#[test]
fn messages_sent_before_a_crash_arrive_and_the_task_fails() {
    let p = ProcessPool::builder()
        .workers(1)
        .retries(0)
        .build()
        .unwrap();
    let path = socket_path("crash");
    let listener = UnixListener::bind(&path).unwrap();
    const N: u64 = 1_000;
    let h = p
        .submit(SendThenWait {
            before: N,
            signal: path.clone(),
            crash: true,
        })
        .unwrap();
    for i in 0..N {
        assert_eq!(h.recv_timeout(DEADLINE), Some(i));
    }
    let mut s = accept_within(&listener, "the task");
    s.write_all(&[1]).unwrap();
    let err = join(h).unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::WorkerLost(_)), "{err:?}");
    join(p.submit(Who).unwrap()).expect("the pool goes on");
    let _ = std::fs::remove_file(&path);
}

/// A task's first message is never held: a task that sends one and
/// crashes at once still delivers it, then fails with `WorkerLost`.
#[test]
fn a_first_message_survives_an_immediate_crash() {
    let p = ProcessPool::builder()
        .workers(1)
        .retries(0)
        .build()
        .unwrap();
    for _ in 0..3 {
        let h = p.submit(SendThenAbort { count: 1 }).unwrap();
        assert_eq!(read_all(&h), [0]);
        let err = join(h).unwrap_err();
        assert!(matches!(err.kind(), ErrorKind::WorkerLost(_)), "{err:?}");
    }
}

/// A crash right after a stream: messages still held die with the worker
/// (documented), so the caller sees a prefix of them (the first at least),
/// in order, then the task's `WorkerLost`; nothing hangs and the pool goes
/// on.
#[test]
fn a_crash_loses_at_most_a_suffix_of_the_messages() {
    let p = ProcessPool::builder()
        .workers(1)
        .retries(0)
        .build()
        .unwrap();
    const N: u64 = 10_000;
    let h = p.submit(SendThenAbort { count: N }).unwrap();
    let got = read_all(&h);
    assert!(!got.is_empty() && got.len() as u64 <= N);
    assert_eq!(got, (0..got.len() as u64).collect::<Vec<_>>());
    let err = join(h).unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::WorkerLost(_)), "{err:?}");
    join(p.submit(Who).unwrap()).expect("the pool goes on");
}

/// A message group whose ends do not fit its bytes fails the task that
/// runs with a typed codec error, and the pool goes on.
#[test]
fn a_malformed_message_group_is_a_codec_error() {
    let p = ProcessPool::builder().workers(1).build().unwrap();
    let h = p.submit(ForgeGroup).unwrap();
    let err = join(h).unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::Codec { what } if what == "messages from a worker"),
        "expected a codec error on the message group, got {err:?}"
    );
    join(p.submit(Who).unwrap()).expect("the pool goes on");
}
