//! Issue 11 (stall): a worker stopped from outside (`SIGSTOP`; a debugger
//! or a cgroup freezer stop it the same way) while it holds tasks is killed
//! once its heartbeat has not moved for `unresponsive_timeout`, and settled
//! like a crash: its tasks end, none runs more than `retries + 1` times, and
//! it is reaped and replaced. A worker busy in a long task keeps beating and
//! is left alone. Every wait has a deadline that only catches a hang.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{
    all_threads_stopped, children, join, join_batch, signal, wait_until, within, KillOnDrop, Sleep,
    Who, DEADLINE,
};
use concur_procs::{
    Configure, ErrorKind, Executor, ExecutorExt, ProcessPool, Task, TaskContext, WorkerExit,
};
use serde::{Deserialize, Serialize};

/// The bound the tests use: short, so that they end soon.
const BOUND: Duration = Duration::from_secs(1);

/// Tasks in the batch that queues behind the stopped worker's task: more
/// than one group of a batch (256), so the stopped worker holds some.
const ITEMS: u64 = 600;

/// Stops `pid` and waits until all its threads are stopped.
fn stop(pid: u32) {
    signal(pid, libc::SIGSTOP);
    wait_until("the worker stops", DEADLINE, || all_threads_stopped(pid));
}

/// A fresh run log for this test.
fn log_for(test: &str) -> PathBuf {
    let log = std::env::temp_dir().join(format!("concur-stopped-{}-{test}", std::process::id()));
    let _ = std::fs::remove_file(&log);
    log
}

/// One record per run of task `tag`.
fn record(log: &Path, tag: u64) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(log)
        .expect("log");
    f.write_all(&tag.to_le_bytes()).expect("log record");
}

/// How often each tag ran.
fn runs(log: &Path) -> std::collections::HashMap<u64, u32> {
    let bytes = std::fs::read(log).expect("the log");
    let mut n = std::collections::HashMap::new();
    for c in bytes.chunks_exact(8) {
        *n.entry(u64::from_le_bytes(c.try_into().unwrap()))
            .or_default() += 1;
    }
    n
}

/// Logs its run, tells the caller its pid, then waits for the caller's
/// go (or its handle's drop) and returns its pid.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Gate {
    tag: u64,
    log: PathBuf,
}

impl Task for Gate {
    type Output = u32;
    type ToCaller = u32;
    type FromCaller = ();
    const NAME: &'static str = "procs-tests::stopped::Gate";
    fn run(self, cx: &mut TaskContext<'_, Self>) -> u32 {
        record(&self.log, self.tag);
        let _ = cx.send(std::process::id());
        let _ = cx.recv();
        std::process::id()
    }
}

/// Logs its run and returns `x * 3 + 1`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Count {
    x: u64,
    log: PathBuf,
}

impl Task for Count {
    type Output = u64;
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = "procs-tests::stopped::Count";
    fn run(self, _cx: &mut TaskContext<'_, Self>) -> u64 {
        record(&self.log, self.x);
        self.x * 3 + 1
    }
}

concur_procs::register!(Gate, Count, EncodeSlowly);

const GATE_A: u64 = 1_000_001;
const GATE_B: u64 = 1_000_002;

/// A pool of two workers with `retries` and the short [`BOUND`].
fn pool_of_two(retries: u32) -> ProcessPool {
    ProcessPool::builder()
        .workers(2)
        .retries(retries)
        .unresponsive_timeout(BOUND)
        .build()
        .unwrap()
}

/// What [`stop_a_loaded_worker`] set up.
struct Loaded {
    pid_a: u32,
    pid_b: u32,
    a: concur_core::TaskHandle<Gate>,
    b: concur_core::TaskHandle<Gate>,
    batch: concur_core::BatchHandle<Count>,
}

/// In a pool of two, the first worker (pid returned first) runs a gate and
/// holds batch items queued behind it, and the second runs another gate;
/// the first is stopped.
fn stop_a_loaded_worker(p: &ProcessPool, log: &Path, kill: &mut KillOnDrop) -> Loaded {
    let gate = |tag| Gate {
        tag,
        log: log.to_owned(),
    };
    let a = p.submit(gate(GATE_A)).unwrap();
    let pid_a = a.recv_timeout(DEADLINE).expect("gate A starts");
    kill.push(pid_a);
    // The idle worker takes it.
    let b = p.submit(gate(GATE_B)).unwrap();
    let pid_b = b.recv_timeout(DEADLINE).expect("gate B starts");
    kill.push(pid_b);
    assert_ne!(pid_a, pid_b);
    // Both workers have room for one group of the batch each (a group
    // holds at most 256 items), so worker A holds items behind its gate.
    let items = (0..ITEMS)
        .map(|x| Count {
            x,
            log: log.to_owned(),
        })
        .collect();
    let batch = p.submit_batch(items).unwrap();
    stop(pid_a);
    // Worker A cannot read this now; it goes with the gate wherever the
    // gate runs again.
    a.send(()).unwrap();
    b.send(()).unwrap();
    Loaded {
        pid_a,
        pid_b,
        a,
        b,
        batch,
    }
}

/// Every item of the batch ended Ok with its result.
fn assert_counted(batch: concur_core::BatchHandle<Count>) {
    for (x, r) in (0u64..).zip(join_batch(batch)) {
        assert_eq!(r.unwrap(), x * 3 + 1, "item {x}");
    }
}

/// Test 1: with retries, the stopped worker's running task runs again
/// elsewhere, the tasks queued behind it go elsewhere, everything ends Ok,
/// nothing ran more than twice, and the stopped worker is reaped.
#[test]
fn a_stopped_worker_holding_tasks_is_killed_and_its_tasks_complete() {
    let log = log_for("retried");
    let p = pool_of_two(1);
    // After the pool: on a failing test's unwind it goes first, so the
    // pool's drop does not wait on a stopped worker.
    let mut kill = KillOnDrop::default();
    let Loaded {
        pid_a,
        pid_b,
        a,
        b,
        batch,
    } = stop_a_loaded_worker(&p, &log, &mut kill);
    assert_counted(batch);
    let ran_a = join(a).expect("gate A runs again elsewhere");
    assert_ne!(ran_a, pid_a);
    assert_eq!(join(b).unwrap(), pid_b);
    within("drop(pool)", DEADLINE, move || drop(p));
    assert!(!children().contains(&pid_a), "the stopped worker is reaped");
    let runs = runs(&log);
    for x in (0..ITEMS).chain([GATE_A, GATE_B]) {
        let n = runs.get(&x).copied().unwrap_or(0);
        assert!((1..=2).contains(&n), "task {x} ran {n} times");
    }
    assert_eq!(runs[&GATE_A], 2, "the gate ran on A, then once again");
    let _ = std::fs::remove_file(&log);
}

/// Test 2: without retries, the task that ran on the stopped worker fails
/// with the crash kind and says why; the tasks queued behind it succeed
/// elsewhere.
#[test]
fn without_retries_the_stopped_workers_task_fails_as_a_crash() {
    let log = log_for("no-retries");
    let p = pool_of_two(0);
    let mut kill = KillOnDrop::default();
    let Loaded {
        pid_a,
        pid_b,
        a,
        b,
        batch,
    } = stop_a_loaded_worker(&p, &log, &mut kill);
    assert_counted(batch);
    let err = join(a).unwrap_err();
    assert_eq!(
        err.kind(),
        &ErrorKind::WorkerLost(WorkerExit::Signal(libc::SIGKILL))
    );
    let text = format!("{err:?}");
    assert!(
        text.contains("stopped responding") && text.contains("killed"),
        "{text}"
    );
    assert_eq!(join(b).unwrap(), pid_b);
    within("drop(pool)", DEADLINE, move || drop(p));
    assert!(!children().contains(&pid_a), "the stopped worker is reaped");
    let runs = runs(&log);
    for x in (0..ITEMS).chain([GATE_A, GATE_B]) {
        assert_eq!(runs.get(&x).copied(), Some(1), "task {x}");
    }
    let _ = std::fs::remove_file(&log);
}

/// Test 3: a worker busy in one long task keeps beating and is not
/// killed (the task takes many heartbeats and three times the bound, so a
/// loaded machine has a wide margin).
#[test]
fn a_worker_in_a_long_task_is_not_killed() {
    let bound = Duration::from_secs(2);
    let p = ProcessPool::builder()
        .workers(1)
        .retries(0)
        .unresponsive_timeout(bound)
        .build()
        .unwrap();
    let before = join(p.submit(Who).unwrap()).unwrap().pid;
    let ms = u64::try_from((bound * 3).as_millis()).unwrap();
    let pid = join(p.submit(Sleep { ms }).unwrap()).expect("the long task ends Ok");
    assert_eq!(pid, before);
    assert_eq!(
        join(p.submit(Who).unwrap()).unwrap().pid,
        before,
        "not replaced"
    );
    within("drop(pool)", DEADLINE, move || drop(p));
}

/// An output whose `Serialize` takes `ms` milliseconds: the task's own
/// code, run by the worker after the task returned.
#[derive(Debug, Clone, Deserialize)]
struct SlowToEncode {
    ms: u64,
}

impl Serialize for SlowToEncode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        std::thread::sleep(Duration::from_millis(self.ms));
        s.serialize_u64(self.ms)
    }
}

/// Returns a [`SlowToEncode`].
#[derive(Debug, Clone, Serialize, Deserialize)]
struct EncodeSlowly {
    ms: u64,
}

impl Task for EncodeSlowly {
    type Output = SlowToEncode;
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = "procs-tests::stopped::EncodeSlowly";
    fn run(self, _cx: &mut TaskContext<'_, Self>) -> SlowToEncode {
        SlowToEncode { ms: self.ms }
    }
}

/// A worker encoding a task's output for longer than the bound (the task
/// type's own `Serialize`) still holds that task, keeps beating and is not
/// killed (before, its heart stopped once the task returned, and the pool
/// killed it in the middle of encoding the result).
#[test]
fn a_worker_encoding_a_slow_output_is_not_killed() {
    let bound = Duration::from_secs(1);
    let p = ProcessPool::builder()
        .workers(1)
        .retries(0)
        .unresponsive_timeout(bound)
        .build()
        .unwrap();
    let ms = u64::try_from((bound * 4).as_millis()).unwrap();
    let out = join(p.submit(EncodeSlowly { ms }).unwrap()).expect("the slow output arrives");
    assert_eq!(out.ms, ms);
    within("drop(pool)", DEADLINE, move || drop(p));
}

/// Test 4: a graceful drop of a pool whose stopped worker holds a task
/// ends (it waits for that task, which ends once the worker is killed).
#[test]
fn a_graceful_drop_with_a_stopped_worker_ends() {
    let log = log_for("drop");
    let p = pool_of_two(0);
    let mut kill = KillOnDrop::default();
    let a = p
        .submit(Gate {
            tag: GATE_A,
            log: log.clone(),
        })
        .unwrap();
    let pid_a = a.recv_timeout(DEADLINE).expect("the gate starts");
    kill.push(pid_a);
    stop(pid_a);
    let more: Vec<_> = (0..20)
        .map(|x| {
            p.submit(Count {
                x,
                log: log.clone(),
            })
            .unwrap()
        })
        .collect();
    within(
        "a graceful drop with a stopped worker",
        DEADLINE,
        move || drop(p),
    );
    // Nobody sent the gate its go: it ends with its worker.
    assert!(matches!(
        join(a).unwrap_err().kind(),
        ErrorKind::WorkerLost(_)
    ));
    for (x, h) in (0u64..).zip(more) {
        assert_eq!(join(h).unwrap(), x * 3 + 1, "task {x}");
    }
    assert!(!children().contains(&pid_a), "the stopped worker is reaped");
    let _ = std::fs::remove_file(&log);
}

/// `unresponsive_timeout` below five heartbeats is a config error.
#[test]
fn a_bound_below_one_second_is_a_config_error() {
    for bad in [Duration::ZERO, Duration::from_millis(999)] {
        let e = ProcessPool::builder()
            .unresponsive_timeout(bad)
            .build()
            .unwrap_err();
        assert!(matches!(e.kind(), ErrorKind::Config { .. }), "{e:?}");
    }
    let off = ProcessPool::builder()
        .workers(1)
        .unresponsive_timeout(None)
        .build()
        .unwrap();
    assert!(join(off.submit(Who).unwrap()).unwrap().pid > 0);
}

/// Durations too long for the clock (`Duration::MAX`) on every duration
/// setting mean "never" (or the longest wait), not an `Instant` overflow
/// that panicked the supervisor: the pool starts, runs and drops.
#[test]
fn endless_durations_are_accepted() {
    let pool = ProcessPool::builder()
        .workers(1)
        .unresponsive_timeout(Duration::MAX)
        .start_timeout(Duration::MAX)
        .restart_limit(3, Duration::MAX)
        .task_timeout(Duration::MAX)
        .build()
        .unwrap();
    assert!(join(pool.submit(Who).unwrap()).unwrap().pid > 0);
    within("the pool drops", DEADLINE, move || drop(pool));
}
