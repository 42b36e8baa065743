//! Fault injection through the public API: forked children holding a
//! worker's sockets, stopped workers, external kills, kills the pool
//! decides itself, one bad item in a batched `map`, panicking serde impls
//! in the worker, and a memory limit below an input's size. Every wait has
//! a deadline that only catches a hang.

mod common;

use std::time::Duration;

use common::{
    alive, join, join_batch, signal, wait_until, within, Blob, Calc, Crash, Echo, How, KillOnDrop,
    SilenceStderr, Sleep, Who, DEADLINE,
};
use concur_procs::{
    Configure, ErrorKind, Executor, ExecutorExt, ProcessPool, Task, TaskContext, TaskError,
    WorkerExit,
};
use serde::{Deserialize, Serialize};

// Tasks here panic on purpose.
common::quiet_worker_panics!();

/// Bound for anything that must not wait on a forked child's 60 s sleep.
const SHORT: Duration = Duration::from_secs(30);

fn live_pids(p: &ProcessPool) -> Vec<u32> {
    p.worker_pids().into_iter().flatten().collect()
}

/// Forks a child (no exec) that sleeps about 60 s holding every descriptor
/// of the worker, tells the caller `(worker pid, child pid)`, then returns
/// at once or, with `block`, waits for a message that never comes.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Fork {
    block: bool,
}

impl Task for Fork {
    type Output = u32;
    type ToCaller = (u32, u32);
    type FromCaller = ();
    const NAME: &'static str = "procs-faults::Fork";
    fn run(self, cx: &mut TaskContext<'_, Self>) -> u32 {
        // SAFETY: the child only calls async-signal-safe functions
        // (nanosleep, _exit) before it ends.
        let child = unsafe { libc::fork() };
        if child == 0 {
            let ts = libc::timespec {
                tv_sec: 60,
                tv_nsec: 0,
            };
            // SAFETY: as above; the child never returns into Rust code.
            unsafe {
                libc::nanosleep(&ts, std::ptr::null_mut());
                libc::_exit(0);
            }
        }
        assert!(child > 0, "fork failed");
        let child = u32::try_from(child).unwrap();
        cx.send((std::process::id(), child)).unwrap();
        if self.block {
            let _ = cx.recv_timeout(DEADLINE);
        }
        child
    }
}

/// The value at which the serde impls of [`SerdePanic`] panic.
const SPECIAL: u64 = 777;
/// The output value [`Picky`] refuses to decode.
const BAD_OUTPUT: u64 = 1_000_000;
/// The value [`Touchy`] refuses to encode.
const BAD_INPUT: u64 = 2_000_000;

/// An output whose `Deserialize` (run in the parent) fails for [`BAD_OUTPUT`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct Picky(u64);

impl<'de> Deserialize<'de> for Picky {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = u64::deserialize(d)?;
        if v == BAD_OUTPUT {
            return Err(serde::de::Error::custom("picky refuses it"));
        }
        Ok(Picky(v))
    }
}

/// A value whose `Serialize` (run in the parent for a task) fails for [`BAD_INPUT`].
#[derive(Debug, Clone, Deserialize)]
#[serde(transparent)]
struct Touchy(u64);

impl Serialize for Touchy {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0 == BAD_INPUT {
            return Err(serde::ser::Error::custom("touchy refuses it"));
        }
        s.serialize_u64(self.0)
    }
}

/// One `map` item: aborts its worker when `abort`, else returns `x + 1`
/// wrapped in a [`Picky`].
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Item {
    x: Touchy,
    abort: bool,
}

impl Task for Item {
    type Output = Picky;
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = "procs-faults::Item";
    fn run(self, _cx: &mut TaskContext<'_, Self>) -> Picky {
        if self.abort {
            std::process::abort();
        }
        Picky(self.x.0 + 1)
    }
}

/// A value whose `Deserialize` panics for [`SPECIAL`] (run in the worker
/// for a task's input).
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
struct PanicsOnDecode(u64);

impl<'de> Deserialize<'de> for PanicsOnDecode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = u64::deserialize(d)?;
        assert_ne!(v, SPECIAL, "decode panic {v}");
        Ok(PanicsOnDecode(v))
    }
}

/// A value whose `Serialize` panics for [`SPECIAL`] (run in the worker for
/// a task's output).
#[derive(Debug, Clone, Deserialize)]
#[serde(transparent)]
struct PanicsOnEncode(u64);

impl Serialize for PanicsOnEncode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        assert_ne!(self.0, SPECIAL, "encode panic {}", self.0);
        s.serialize_u64(self.0)
    }
}

/// Its input may panic while the worker decodes it; its output may panic
/// while the worker encodes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SerdePanic {
    input: PanicsOnDecode,
    output: u64,
}

impl Task for SerdePanic {
    type Output = (u32, PanicsOnEncode);
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = "procs-faults::SerdePanic";
    fn run(self, _cx: &mut TaskContext<'_, Self>) -> (u32, PanicsOnEncode) {
        (std::process::id(), PanicsOnEncode(self.output))
    }
}

concur_procs::register!(Fork, Item, SerdePanic);

/// Issue 7.3 (a): a child forked by a task holds the worker's sockets for
/// 60 s; dropping the pool does not wait for it, and the child does not
/// outlive its worker (it is in the worker's process group).
#[test]
fn drop_does_not_wait_for_a_forked_child() {
    let mut kill = KillOnDrop::default();
    let p = ProcessPool::builder().workers(1).build().unwrap();
    let h = p.submit(Fork { block: false }).unwrap();
    let (_, child) = h.recv_timeout(DEADLINE).expect("task forked");
    kill.push(child);
    assert_eq!(join(h).unwrap(), child);
    within("drop(pool) with a forked child alive", SHORT, move || {
        drop(p)
    });
    // Drop returned long before the child's 60 s were up, and the child
    // went with its worker's process group.
    wait_until("the forked child ends with its worker", DEADLINE, || {
        !alive(child)
    });
}

/// Issue 7.3 (a), the same through `shutdown()`, with the forking task
/// still running.
#[test]
fn shutdown_does_not_wait_for_a_forked_child() {
    let mut kill = KillOnDrop::default();
    let p = ProcessPool::builder().workers(1).build().unwrap();
    let h = p.submit(Fork { block: false }).unwrap();
    let (_, child) = h.recv_timeout(DEADLINE).expect("task forked");
    kill.push(child);
    assert_eq!(join(h).unwrap(), child);
    within("shutdown() with a forked child alive", SHORT, move || {
        p.shutdown().unwrap();
        drop(p);
    });
    wait_until("the forked child ends with its worker", DEADLINE, || {
        !alive(child)
    });
}

/// Issue 7.3 (b): the worker is SIGKILLed while its task runs and its
/// forked child (holding the worker's sockets) lives: the handle resolves
/// `WorkerLost` without waiting for the child.
#[test]
fn killed_worker_with_a_forked_child_fails_its_task_at_once() {
    let mut kill = KillOnDrop::default();
    let p = ProcessPool::builder()
        .workers(1)
        .retries(0)
        .build()
        .unwrap();
    let h = p.submit(Fork { block: true }).unwrap();
    let (worker, child) = h.recv_timeout(DEADLINE).expect("task forked");
    kill.push(child);
    signal(worker, libc::SIGKILL);
    let got = h
        .join_timeout(SHORT)
        .unwrap_or_else(|_| panic!("the task waited on the forked child"));
    assert_eq!(
        got.unwrap_err().kind(),
        &ErrorKind::WorkerLost(WorkerExit::Signal(libc::SIGKILL))
    );
    // It resolved at once (not after the child's 60 s), and the child went
    // with its worker's process group.
    wait_until("the forked child ends with its worker", DEADLINE, || {
        !alive(child)
    });
    // The pool goes on with a replacement.
    assert_ne!(join(p.submit(Who).unwrap()).unwrap().pid, worker);
    within("drop(pool) after the kill", SHORT, move || drop(p));
}

/// Issue 7.4: a worker stopped while idle gets a task with a timeout: the
/// task ends `TimedOut` (it never reported a start) and the worker is
/// replaced.
#[test]
fn stopped_idle_worker_times_out_its_task() {
    let mut kill = KillOnDrop::default();
    let p = ProcessPool::builder()
        .workers(1)
        .task_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let pid = live_pids(&p)[0];
    kill.push(pid);
    signal(pid, libc::SIGSTOP);
    let err = join(p.submit(Sleep { ms: 0 }).unwrap()).unwrap_err();
    assert_eq!(
        err.kind(),
        &ErrorKind::TimedOut {
            after: Duration::from_millis(500)
        }
    );
    wait_until("the stopped worker is gone", DEADLINE, || !alive(pid));
    let next = join(p.submit(Who).unwrap()).expect("the replacement runs");
    assert_ne!(next.pid, pid);
}

/// Issue 7.4: a default-batched `map` with a 1 s timeout and one worker
/// stopped still completes; each task is bounded by its own timeout.
#[test]
fn batched_map_completes_past_a_stopped_worker() {
    let mut kill = KillOnDrop::default();
    let p = ProcessPool::builder()
        .workers(2)
        .task_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let pid = live_pids(&p)[0];
    kill.push(pid);
    signal(pid, libc::SIGSTOP);
    let got = within("map past a stopped worker", DEADLINE, move || {
        let got: Vec<_> = p.map((0..200).map(|x| Calc { x, spin_us: 0 })).collect();
        drop(p);
        got
    });
    assert_eq!(got.len(), 200);
    let mut timed_out = 0;
    for (x, r) in (0u64..).zip(got) {
        match r {
            Ok(v) => assert_eq!(v, x * 3 + 1),
            Err(e) if e.is_timeout() => timed_out += 1,
            Err(e) => panic!("item {x}: {e:?}"),
        }
    }
    assert!(timed_out <= 200);
}

/// Issue 7.7: tasks submitted right after an external SIGKILL never ran on
/// the dead worker, so none is blamed (retries off).
#[test]
fn tasks_submitted_after_an_external_kill_all_succeed() {
    for _ in 0..3 {
        let p = ProcessPool::builder()
            .workers(2)
            .retries(0)
            .build()
            .unwrap();
        let pid = live_pids(&p)[0];
        signal(pid, libc::SIGKILL);
        let hs: Vec<_> = (0..30)
            .map(|x| p.submit(Calc { x, spin_us: 0 }).unwrap())
            .collect();
        for (x, h) in (0u64..).zip(hs) {
            assert_eq!(join(h).unwrap(), x * 3 + 1, "task {x}");
        }
    }
}

/// Issue 7.9: tasks running when `shutdown_now` is called end `Cancelled`,
/// never `WorkerLost`.
#[test]
fn shutdown_now_cancels_running_tasks_every_time() {
    for round in 0..10 {
        let p = ProcessPool::builder().workers(2).build().unwrap();
        let hs: Vec<_> = (0..2)
            .map(|_| p.submit(Sleep { ms: 60_000 }).unwrap())
            .collect();
        for h in &hs {
            h.recv_timeout(DEADLINE).expect("task started");
        }
        within("shutdown_now", SHORT, move || p.shutdown_now());
        for h in hs {
            let err = join(h).unwrap_err();
            assert!(err.is_cancelled(), "round {round}: {err:?}");
        }
    }
}

/// Issue 7.9: a timed-out task is `TimedOut`, never `WorkerLost(Signal(9))`.
#[test]
fn timeout_is_reported_as_timeout_every_time() {
    let p = ProcessPool::builder()
        .workers(2)
        .task_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    for round in 0..10 {
        let hs: Vec<_> = (0..2)
            .map(|_| p.submit(Sleep { ms: 60_000 }).unwrap())
            .collect();
        for h in hs {
            let err = join(h).unwrap_err();
            assert_eq!(
                err.kind(),
                &ErrorKind::TimedOut {
                    after: Duration::from_millis(200)
                },
                "round {round}"
            );
        }
    }
}

/// A 2,000-item `map` (long enough to be batched) of `x -> x + 1` whose
/// item `bad` is replaced by `bad_item`; checks every other item.
fn map_with_one_bad_item(bad_item: Item, expect: impl Fn(&TaskError)) {
    let p = ProcessPool::builder()
        .workers(2)
        .retries(0)
        .build()
        .unwrap();
    let bad = 1234;
    let mut bad_item = Some(bad_item);
    let items: Vec<Item> = (0..2000)
        .map(|x| match x {
            x if x == bad => bad_item.take().unwrap(),
            x => Item {
                x: Touchy(x),
                abort: false,
            },
        })
        .collect();
    let results = within("map", DEADLINE, move || {
        let r = p.map(items).collect::<Vec<_>>();
        drop(p);
        r
    });
    assert_eq!(results.len(), 2000);
    for (x, r) in (0u64..).zip(results) {
        if x == bad {
            expect(&r.expect_err("the bad item fails"));
        } else {
            assert_eq!(
                r.unwrap_or_else(|e| panic!("item {x}: {e:?}")),
                Picky(x + 1)
            );
        }
    }
}

/// Issue 7.6: one item of a long (batched) `map` aborts its worker: only
/// that item is `WorkerLost`.
#[test]
fn map_item_that_aborts_fails_alone() {
    let item = Item {
        x: Touchy(1),
        abort: true,
    };
    map_with_one_bad_item(item, |e| {
        assert_eq!(
            e.kind(),
            &ErrorKind::WorkerLost(WorkerExit::Signal(libc::SIGABRT))
        );
    });
}

/// Issue 7.6: one item's output fails to decode in the parent: only that
/// item fails, with a codec error that keeps serde's message.
#[test]
fn map_item_whose_output_does_not_decode_fails_alone() {
    let item = Item {
        x: Touchy(BAD_OUTPUT - 1),
        abort: false,
    };
    map_with_one_bad_item(item, |e| {
        assert!(matches!(e.kind(), ErrorKind::Codec { .. }), "{e:?}");
        assert!(chain(e).contains("picky refuses"), "{}", chain(e));
    });
}

/// Issue 7.6: one item's task fails to encode in the parent: only that
/// item fails, with a codec error.
#[test]
fn map_item_whose_task_does_not_encode_fails_alone() {
    let item = Item {
        x: Touchy(BAD_INPUT),
        abort: false,
    };
    map_with_one_bad_item(item, |e| {
        assert!(matches!(e.kind(), ErrorKind::Codec { .. }), "{e:?}");
    });
}

/// Issue 7.8 ("the codec error text must keep the underlying serde
/// error's message"): a task that fails to encode keeps serde's message,
/// submitted alone or as an item of a batch.
#[test]
fn task_encode_error_keeps_serde_message() {
    let p = ProcessPool::builder().workers(1).build().unwrap();
    let bad = || Item {
        x: Touchy(BAD_INPUT),
        abort: false,
    };
    let e = p.submit(bad()).unwrap_err();
    assert!(chain(&e).contains("touchy refuses"), "alone: {}", chain(&e));
    let got = join_batch(p.submit_batch(vec![bad(), bad()]).unwrap());
    let e = got[0].as_ref().unwrap_err();
    assert!(matches!(e.kind(), ErrorKind::Codec { .. }), "{e:?}");
    assert!(
        chain(e).contains("touchy refuses"),
        "in a batch: {}",
        chain(e)
    );
}

/// An error and its sources, as one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

fn expect_panicked(e: &TaskError, text: &str) {
    match e.kind() {
        ErrorKind::Panicked { message, .. } => {
            assert!(message.contains(text), "message {message:?} lacks {text:?}");
        }
        other => panic!("expected Panicked, got {other:?}"),
    }
}

/// Issue 7.8: a task whose `Deserialize` panics in the worker and one whose
/// output's `Serialize` panics there are the task's `Panicked` (message
/// kept); the worker survives and the pool goes on.
#[test]
fn serde_panics_in_the_worker_are_the_tasks_panic() {
    let p = ProcessPool::builder().workers(1).build().unwrap();
    let before = join(p.submit(Who).unwrap()).unwrap();
    let e = join(
        p.submit(SerdePanic {
            input: PanicsOnDecode(SPECIAL),
            output: 1,
        })
        .unwrap(),
    )
    .unwrap_err();
    expect_panicked(&e, "decode panic 777");
    let e = join(
        p.submit(SerdePanic {
            input: PanicsOnDecode(1),
            output: SPECIAL,
        })
        .unwrap(),
    )
    .unwrap_err();
    expect_panicked(&e, "encode panic 777");
    let (pid, out) = join(
        p.submit(SerdePanic {
            input: PanicsOnDecode(1),
            output: 2,
        })
        .unwrap(),
    )
    .expect("the pool is not failed");
    assert_eq!(out.0, 2);
    assert_eq!(pid, before.pid, "the worker survived");
    assert_eq!(join(p.submit(Who).unwrap()).unwrap(), before);
}

/// Issue 7.8, in a batch: only the panicking item fails.
#[test]
fn serde_panics_in_a_batch_fail_only_their_item() {
    let p = ProcessPool::builder().workers(1).build().unwrap();
    let before = join(p.submit(Who).unwrap()).unwrap();
    let tasks = (0..10)
        .map(|x| SerdePanic {
            input: PanicsOnDecode(if x == 3 { SPECIAL } else { x }),
            output: if x == 6 { SPECIAL } else { x },
        })
        .collect();
    let got = join_batch(p.submit_batch(tasks).unwrap());
    for (x, r) in (0u64..).zip(&got) {
        match x {
            3 => expect_panicked(r.as_ref().unwrap_err(), "decode panic 777"),
            6 => expect_panicked(r.as_ref().unwrap_err(), "encode panic 777"),
            _ => assert_eq!(r.as_ref().unwrap().1 .0, x, "item {x}"),
        }
    }
    assert_eq!(join(p.submit(Who).unwrap()).unwrap(), before);
}

/// An input whose shared memory cannot even be mapped under the worker's
/// memory limit fails its task as the memory limit's, at its first
/// worker's death. It used to end the worker as if its parent were gone,
/// which blamed no task: the input went to each new worker in turn, until
/// one of them happened to map it.
#[test]
fn an_input_that_cannot_be_mapped_fails_typed() {
    let p = ProcessPool::builder()
        .workers(1)
        .retries(0)
        .memory_limit(256 << 20)
        .build()
        .unwrap();
    let before = join(p.submit(Who).unwrap()).unwrap();
    // Far beyond the limit: mapping it fails, while small allocations
    // still succeed (nothing aborts).
    echo_fails_for_memory(&p, 640 << 20);
    let after = join(p.submit(Who).unwrap()).expect("the pool goes on");
    assert_eq!(
        after.incarnation,
        before.incarnation + 1,
        "one worker ended for the input, not one per attempt"
    );
}

/// Submits an `Echo` of `len` bytes to `p` and checks that it fails with
/// `WorkerLost(MemoryLimit)` within [`SHORT`].
#[track_caller]
fn echo_fails_for_memory(p: &ProcessPool, len: usize) {
    let h = p
        .submit(Echo {
            input: Blob(vec![1; len]),
            out_len: 0,
            patterned: false,
        })
        .unwrap();
    let err = h
        .join_timeout(SHORT)
        .unwrap_or_else(|_| panic!("the task never ended"))
        .unwrap_err();
    assert_eq!(
        err.kind(),
        &ErrorKind::WorkerLost(WorkerExit::MemoryLimit),
        "{err:?}"
    );
}

/// Issue 8.5: a memory limit below an input's size ends the task with a
/// typed error naming the cause, and dropping the pool returns.
#[test]
fn input_larger_than_the_memory_limit_fails_typed() {
    let p = ProcessPool::builder()
        .workers(1)
        .retries(0)
        .memory_limit(256 << 20)
        // The worker's failed allocation prints its size: expected here.
        .initializer(SilenceStderr)
        .build()
        .unwrap();
    echo_fails_for_memory(&p, 300 << 20);
    // A crash of the same kind still fails alone, and the pool goes on.
    let h = p
        .submit(Crash {
            how: How::Allocate(300 << 20),
            wait: false,
        })
        .unwrap();
    assert_eq!(
        join(h).unwrap_err().kind(),
        &ErrorKind::WorkerLost(WorkerExit::MemoryLimit)
    );
    join(p.submit(Who).unwrap()).expect("the pool goes on");
    within("drop(pool)", SHORT, move || drop(p));
}
