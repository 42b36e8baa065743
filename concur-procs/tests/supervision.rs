//! Supervision: timeouts and cancellation really stop the work, workers are
//! recycled, the initializer runs in every new worker, workers leave no
//! process and no zombie behind.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{alive, join, join_batch, wait_until, Sleep, Who, DEADLINE};
use concur_procs::{Configure, ErrorKind, Executor, ProcessPool, Task, TaskContext};
use serde::{Deserialize, Serialize};

// Tasks here panic on purpose.
common::quiet_worker_panics!();

/// Set by the initializer in each worker process.
static INITIALIZED_AS: AtomicU64 = AtomicU64::new(0);

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Init;

impl Task for Init {
    type Output = ();
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = "procs-supervision::Init";
    fn run(self, cx: &mut TaskContext<'_, Self>) {
        INITIALIZED_AS.store(cx.worker().incarnation, Ordering::SeqCst);
    }
}

/// The incarnation the initializer saw in this worker, and the task's own.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Seen;

impl Task for Seen {
    type Output = (u64, u64);
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = "procs-supervision::Seen";
    fn run(self, cx: &mut TaskContext<'_, Self>) -> (u64, u64) {
        (
            INITIALIZED_AS.load(Ordering::SeqCst),
            cx.worker().incarnation,
        )
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct FailingInit;

impl Task for FailingInit {
    type Output = ();
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = "procs-supervision::FailingInit";
    fn run(self, _cx: &mut TaskContext<'_, Self>) {
        panic!("initializer refuses");
    }
}

concur_procs::register!(Init, Seen, FailingInit);

#[test]
fn timeout_kills_and_replaces_the_worker() {
    let p = ProcessPool::builder()
        .workers(2)
        .task_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let slow = p.submit(Sleep { ms: 60_000 }).unwrap();
    let pid = slow.recv_timeout(DEADLINE).expect("slow task started");
    let other = p.submit(Sleep { ms: 10 }).unwrap();
    let started = Instant::now();
    let err = join(slow).unwrap_err();
    assert_eq!(
        err.kind(),
        &ErrorKind::TimedOut {
            after: Duration::from_millis(300)
        }
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    wait_until("the timed-out worker is gone", DEADLINE, || !alive(pid));
    join(other).expect("the other task is unaffected");
    wait_until("the pool is full again", DEADLINE, || {
        let pids = p.worker_pids();
        pids.iter().all(Option::is_some) && !pids.contains(&Some(pid))
    });
}

#[test]
fn timeout_does_not_count_queue_time() {
    // One worker, four tasks of 100 ms: the last waits 300 ms in the queue,
    // longer than the timeout, and still succeeds (each task stays well
    // inside the timeout even on a loaded machine).
    let p = ProcessPool::builder()
        .workers(1)
        .task_timeout(Duration::from_millis(250))
        .build()
        .unwrap();
    let hs: Vec<_> = (0..4)
        .map(|_| p.submit(Sleep { ms: 100 }).unwrap())
        .collect();
    for h in hs {
        join(h).expect("queue time is not task time");
    }
}

#[test]
fn cancel_running_kills_and_replaces_the_worker() {
    let p = ProcessPool::builder().workers(1).build().unwrap();
    let h = p.submit(Sleep { ms: 60_000 }).unwrap();
    let pid = h.recv_timeout(DEADLINE).expect("task started");
    let queued = p.submit(Sleep { ms: 0 }).unwrap();
    assert!(h.cancel());
    assert!(join(h).unwrap_err().is_cancelled());
    wait_until("the cancelled task's worker is gone", DEADLINE, || {
        !alive(pid)
    });
    let next = join(queued).expect("the task sent ahead runs on the replacement");
    assert_ne!(next, pid);
}

#[test]
fn cancel_of_a_task_sent_ahead_keeps_the_worker() {
    let p = ProcessPool::builder()
        .workers(1)
        .in_flight_per_worker(4)
        .build()
        .unwrap();
    let first = p.submit(Sleep { ms: 300 }).unwrap();
    let pid = first.recv_timeout(DEADLINE).expect("first task started");
    let ahead = p.submit(Sleep { ms: 60_000 }).unwrap();
    assert!(ahead.cancel());
    assert!(join(ahead).unwrap_err().is_cancelled());
    assert_eq!(
        join(first).unwrap(),
        pid,
        "the running task was not disturbed"
    );
    assert_eq!(
        join(p.submit(Sleep { ms: 0 }).unwrap()).unwrap(),
        pid,
        "the worker was kept"
    );
}

#[test]
fn max_tasks_recycles_workers_with_fresh_processes() {
    let p = ProcessPool::builder()
        .workers(1)
        .max_tasks_per_worker(2)
        .build()
        .unwrap();
    let seen: Vec<_> = (0..6)
        .map(|_| join(p.submit(Who).unwrap()).unwrap())
        .collect();
    let mut pids: Vec<u32> = seen.iter().map(|w| w.pid).collect();
    let mut incs: Vec<u64> = seen.iter().map(|w| w.incarnation).collect();
    pids.dedup();
    incs.dedup();
    assert_eq!(pids.len(), 3, "{seen:?}");
    assert_eq!(incs.len(), 3, "{seen:?}");
    for w in &seen {
        wait_until("recycled workers exit", DEADLINE, || {
            w.pid == seen[5].pid || !alive(w.pid)
        });
    }
}

#[test]
fn initializer_runs_in_every_new_worker() {
    let p = ProcessPool::builder()
        .workers(2)
        .max_tasks_per_worker(1)
        .initializer(Init)
        .build()
        .unwrap();
    for _ in 0..6 {
        let (init, own) = join(p.submit(Seen).unwrap()).unwrap();
        assert_eq!(
            init, own,
            "the initializer ran in this worker before its task"
        );
    }
    // Also in a worker that replaces a crashed one.
    let h = p
        .submit(common::Crash {
            how: common::How::Sigkill,
            wait: false,
        })
        .unwrap();
    join(h).unwrap_err();
    let (init, own) = join(p.submit(Seen).unwrap()).unwrap();
    assert_eq!(init, own);
}

#[test]
fn failing_initializer_fails_the_build() {
    let err = ProcessPool::builder()
        .workers(1)
        .initializer(FailingInit)
        .build()
        .unwrap_err();
    match err.kind() {
        ErrorKind::Panicked { message, .. } => assert_eq!(message, "initializer refuses"),
        other => panic!("expected the initializer's panic, got {other:?}"),
    }
}

#[test]
fn drop_reaps_every_worker() {
    let p = ProcessPool::builder().workers(3).build().unwrap();
    let pids: Vec<u32> = p.worker_pids().into_iter().map(Option::unwrap).collect();
    let h = p.submit(Sleep { ms: 100 }).unwrap();
    drop(h);
    drop(p);
    for pid in pids {
        // Reaped: not even a zombie entry is left.
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "worker {pid} left behind"
        );
    }
}

#[test]
fn shutdown_now_kills_busy_workers() {
    let p = ProcessPool::builder().workers(2).build().unwrap();
    let pids: Vec<u32> = p.worker_pids().into_iter().map(Option::unwrap).collect();
    let hs: Vec<_> = (0..2)
        .map(|_| p.submit(Sleep { ms: 60_000 }).unwrap())
        .collect();
    for h in &hs {
        h.recv_timeout(DEADLINE).expect("task started");
    }
    let started = Instant::now();
    p.shutdown_now();
    assert!(started.elapsed() < Duration::from_secs(10));
    for h in hs {
        assert!(join(h).unwrap_err().is_cancelled());
    }
    for pid in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "worker {pid} left behind"
        );
    }
    assert!(p.submit(Who).unwrap_err().is_shut_down());
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct NotRegistered;

impl Task for NotRegistered {
    type Output = ();
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = "procs-supervision::NotRegistered";
    fn run(self, _cx: &mut TaskContext<'_, Self>) {}
}

#[test]
fn unregistered_task_fails_at_once_naming_it() {
    let p = ProcessPool::builder().workers(1).build().unwrap();
    let err = p.submit(NotRegistered).unwrap_err();
    assert_eq!(
        err.kind(),
        &ErrorKind::NotRegistered {
            task: "procs-supervision::NotRegistered".into()
        }
    );
    assert_eq!(p.shared_admission_in_use(), 0);
}

trait InUse {
    fn shared_admission_in_use(&self) -> usize;
}

impl InUse for ProcessPool {
    fn shared_admission_in_use(&self) -> usize {
        self.admission().in_use()
    }
}

/// Issue 7.4: the per-task timeout bounds each task of a batch (not
/// `timeout × len`), and only the task that ran too long fails.
#[test]
fn batch_timeout_bounds_each_task() {
    use concur_procs::ExecutorExt;
    let p = ProcessPool::builder()
        .workers(1)
        .task_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let got = join_batch(
        p.submit_batch(vec![Sleep { ms: 0 }, Sleep { ms: 60_000 }, Sleep { ms: 0 }])
            .unwrap(),
    );
    assert!(got[0].is_ok(), "{got:?}");
    assert_eq!(
        got[1].as_ref().unwrap_err().kind(),
        &ErrorKind::TimedOut {
            after: Duration::from_millis(300)
        }
    );
    assert!(got[2].is_ok(), "{got:?}");
    join(p.submit(Who).unwrap()).expect("the pool goes on");
}
