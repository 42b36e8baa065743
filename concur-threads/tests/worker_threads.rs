//! Worker threads come and go when the pool says so: `shutdown_now` stops
//! them, and recycled generations free theirs.
//!
//! These tests count the pool's worker threads in `/proc/self/task`, so
//! they run one at a time (they share the process with each other) and
//! count only threads named as concur names its workers. A joined thread
//! leaves `/proc` a moment after the join returns, so every count is waited
//! for with a deadline that only bounds a hang.

mod common;

use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::bounded;
use concur_core::conformance::{Add, DEADLINE};
use concur_core::prelude::*;
use concur_threads::ThreadPool;
use serde::{Deserialize, Serialize};

/// One counting test at a time, starting once the workers of the one
/// before have left `/proc`.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    let guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    wait_for_threads("the workers of earlier tests are gone", |n| n == 0);
    guard
}

/// How many concur worker threads this process has now.
fn worker_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task is readable")
        .filter_map(Result::ok)
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .is_ok_and(|name| name.starts_with("concur-worker"))
        })
        .count()
}

/// Waits until `cond` holds for the worker thread count; panics with the
/// last count after [`DEADLINE`].
fn wait_for_threads(what: &str, cond: impl Fn(usize) -> bool) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let n = worker_threads();
        if cond(n) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting until {what}: {n} worker threads"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs until it is cancelled (it checks [`TaskContext::is_cancelled`]
/// whenever the caller's side wakes it, which a cancel does).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct UntilCancelled;
impl Task for UntilCancelled {
    type Output = ();
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = "threads::tests::UntilCancelled";
    fn run(self, cx: &mut TaskContext<'_, Self>) {
        let _ = cx.send(());
        let give_up = Instant::now() + DEADLINE * 10;
        while !cx.is_cancelled() && Instant::now() < give_up {
            let _ = cx.recv_timeout(DEADLINE);
        }
    }
}

/// After `shutdown_now` the workers go with the pool still alive: tasks
/// that were running are cancelled, and once they return every worker
/// thread exits.
#[test]
fn shutdown_now_stops_every_worker() {
    let _serial = serial();
    let pool = ThreadPool::new(3).unwrap();
    let running: Vec<_> = (0..2)
        .map(|_| pool.submit(UntilCancelled).unwrap())
        .collect();
    for h in &running {
        h.recv_timeout(DEADLINE).expect("the task starts");
    }
    let handles: Vec<_> = (0..10).map(|i| pool.submit(Add(i, 1)).unwrap()).collect();
    for h in handles {
        h.join_timeout(DEADLINE).unwrap().unwrap();
    }
    // A thread takes its name when it first runs, so count once all have.
    wait_for_threads("the workers have started", |n| n == 3);

    pool.shutdown_now();
    for h in running {
        assert!(h
            .join_timeout(DEADLINE)
            .unwrap()
            .unwrap_err()
            .is_cancelled());
    }
    wait_for_threads("every worker is gone", |n| n == 0);
    drop(pool);
}

/// A worker inside work it is not told to stop (a closure) keeps its
/// thread after `shutdown_now`; the thread exits as soon as the work
/// returns, without waiting for the pool's drop.
#[test]
fn shutdown_now_worker_exits_when_its_work_returns() {
    let _serial = serial();
    let pool = ThreadPool::new(2).unwrap();
    let (started_tx, started_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let held = pool
        .spawn_fn(move || {
            started_tx.send(()).unwrap();
            release_rx.recv_timeout(DEADLINE * 10).is_ok()
        })
        .unwrap();
    started_rx
        .recv_timeout(DEADLINE)
        .expect("the closure starts");
    wait_for_threads("the workers have started", |n| n == 2);
    pool.shutdown_now();
    assert!(worker_threads() >= 1, "the busy worker was stopped");
    release_tx.send(()).unwrap();
    assert!(held.join_timeout(DEADLINE).unwrap().unwrap());
    wait_for_threads("every worker is gone", |n| n == 0);
    drop(pool);
}

/// `shutdown_now` from another thread ends a `shutdown` that waits for a
/// running task which only returns when cancelled.
#[test]
fn shutdown_now_ends_a_waiting_shutdown() {
    let _serial = serial();
    let pool = Arc::new(ThreadPool::new(1).unwrap());
    let h = pool.submit(UntilCancelled).unwrap();
    h.recv_timeout(DEADLINE).expect("the task starts");
    let (done_tx, done_rx) = mpsc::channel();
    let waiter = {
        let pool = pool.clone();
        std::thread::spawn(move || {
            let r = pool.shutdown();
            done_tx.send(()).unwrap();
            r
        })
    };
    pool.shutdown_now();
    done_rx
        .recv_timeout(DEADLINE)
        .expect("shutdown returns once shutdown_now has cancelled the task");
    waiter.join().unwrap().unwrap();
    assert!(h
        .join_timeout(DEADLINE)
        .unwrap()
        .unwrap_err()
        .is_cancelled());
    wait_for_threads("the worker is gone", |n| n == 0);
}

/// With a task limit of one, every task retires a generation; retired
/// generations free their threads, so the count stays bounded.
#[test]
fn recycled_generations_free_their_threads() {
    let _serial = serial();
    let workers = 2;
    let pool = ThreadPool::builder()
        .workers(workers)
        .max_tasks_per_worker(1)
        .build()
        .unwrap();
    for i in 0..100 {
        let h = pool.submit(Add(i, 1)).unwrap();
        assert_eq!(h.join_timeout(DEADLINE).unwrap().unwrap(), i + 1);
    }
    wait_for_threads("retired generations are gone", |n| n <= workers * 3 + 2);
    // Still a working pool after all that recycling.
    let out: Vec<u64> = bounded("the map", || {
        pool.map((0..50).map(|i| Add(i, 0)))
            .collect::<Result<_, _>>()
            .unwrap()
    });
    assert_eq!(out, (0..50).collect::<Vec<_>>());
    drop(pool);
    wait_for_threads("every worker is gone after drop", |n| n == 0);
}
