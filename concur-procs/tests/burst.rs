//! Bursts of small tasks submitted alone: the parent packs the tasks it
//! gives a worker at once into one frame, and each still ends on its own
//! (one crash fails one task, the rest of its frame runs elsewhere or
//! again, nothing is lost or delivered twice). Every wait has a deadline
//! that only catches a hang.

mod common;

use common::join;
use concur_procs::{Configure, ErrorKind, Executor, ProcessPool, Task, TaskContext, WorkerExit};
use serde::{Deserialize, Serialize};

/// Returns its number; aborts its worker when `abort` is set.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Step {
    i: u64,
    abort: bool,
}

impl Task for Step {
    type Output = u64;
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = "procs-tests::burst::Step";
    fn run(self, _cx: &mut TaskContext<'_, Self>) -> u64 {
        if self.abort {
            std::process::abort();
        }
        self.i
    }
}

concur_procs::register!(Step);

const N: u64 = 3_000;

fn burst(pool: &ProcessPool, crash_at: &[u64]) -> Vec<Result<u64, concur_procs::TaskError>> {
    let handles: Vec<_> = (0..N)
        .map(|i| {
            pool.submit(Step {
                i,
                abort: crash_at.contains(&i),
            })
            .unwrap()
        })
        .collect();
    handles.into_iter().map(join).collect()
}

#[test]
fn a_burst_of_small_tasks_delivers_each_result_once_and_in_place() {
    let pool = ProcessPool::builder()
        .workers(2)
        .queue_bound(N as usize)
        .build()
        .unwrap();
    for round in 0..2 {
        let results = burst(&pool, &[]);
        for (i, r) in results.into_iter().enumerate() {
            assert_eq!(r.unwrap(), i as u64, "round {round}");
        }
    }
}

#[test]
fn a_crash_in_a_burst_fails_only_the_task_that_ran() {
    let crash_at = [5, 1_234, 2_999];
    let pool = ProcessPool::builder()
        .workers(2)
        .queue_bound(N as usize)
        .build()
        .unwrap();
    let results = burst(&pool, &crash_at);
    for (i, r) in results.into_iter().enumerate() {
        let i = i as u64;
        if crash_at.contains(&i) {
            let e = r.unwrap_err();
            assert_eq!(
                e.kind(),
                &ErrorKind::WorkerLost(WorkerExit::Signal(libc::SIGABRT)),
                "task {i}"
            );
        } else {
            assert_eq!(r.unwrap(), i, "task {i}");
        }
    }
    // The pool kept its size and goes on.
    assert!(burst(&pool, &[]).into_iter().all(|r| r.is_ok()));
    assert_eq!(pool.worker_pids().len(), 2);
}

/// The channel's receive buffer is kept per thread and reused for small
/// messages (the ipc-channel patch): messages of every size, small after
/// large and large after small, arrive whole on one receiving thread.
#[test]
fn messages_of_every_size_arrive_whole_on_one_thread() {
    let (tx, rx) = ipc_channel::ipc::bytes_channel().unwrap();
    let sizes = [
        0usize,
        1,
        100,
        64 * 1024,
        64 * 1024 + 1,
        3,
        150 * 1024,
        5,
        1 << 20,
        7,
        64 * 1024 - 1,
        0,
    ];
    let sender = std::thread::spawn(move || {
        for (k, &n) in sizes.iter().enumerate() {
            let msg: Vec<u8> = (0..n).map(|i| (i * 7 + k) as u8).collect();
            tx.send(&msg).unwrap();
        }
    });
    for (k, &n) in sizes.iter().enumerate() {
        let got = rx.recv().unwrap();
        let want: Vec<u8> = (0..n).map(|i| (i * 7 + k) as u8).collect();
        assert!(got == want, "message {k} of {n} bytes came back changed");
    }
    sender.join().unwrap();
}
