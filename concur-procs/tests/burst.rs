//! Bursts of small tasks submitted alone: the parent packs the tasks it
//! gives a worker at once into one frame, and each still ends on its own
//! (one crash fails one task, the rest of its frame runs elsewhere or
//! again, nothing is lost or delivered twice). Every wait has a deadline
//! that only catches a hang.

mod common;

use common::{bounded, join};
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
    common::wait_until("both workers are up", common::DEADLINE, || {
        pool.worker_pids().iter().flatten().count() == 2
    });
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
    common::within("the messages", common::DEADLINE, move || {
        for (k, &n) in sizes.iter().enumerate() {
            let got = rx.recv().unwrap();
            let want: Vec<u8> = (0..n).map(|i| (i * 7 + k) as u8).collect();
            assert!(got == want, "message {k} of {n} bytes came back changed");
        }
        sender.join().unwrap();
    });
}

/// Appends its number to a log file (one record per run, so the test can
/// count runs), then aborts its worker when `abort` is set.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Logged {
    i: u64,
    log: std::path::PathBuf,
    abort: bool,
}

impl Task for Logged {
    type Output = u64;
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = "procs-tests::burst::Logged";
    fn run(self, _cx: &mut TaskContext<'_, Self>) -> u64 {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&self.log)
            .expect("log");
        f.write_all(&self.i.to_le_bytes()).expect("log record");
        drop(f);
        if self.abort {
            std::process::abort();
        }
        self.i
    }
}
concur_procs::register!(Logged);

/// `retries(n)` bounds how often a task runs, even when results are held
/// back in a worker (small results leave together) and the worker dies
/// before sending them: with `retries(0)` nothing is held and each task
/// runs once; with `retries(1)` a task whose held result died with its
/// worker runs once more (that spends its retry), and the aborting task,
/// run again alone, takes no other task's result with it the second time.
#[test]
fn retries_bound_the_runs_of_tasks_whose_results_were_held() {
    for retries in [0u32, 1] {
        let log =
            std::env::temp_dir().join(format!("concur-runs-{}-{retries}", std::process::id()));
        let _ = std::fs::remove_file(&log);
        let p = ProcessPool::builder()
            .workers(1)
            .retries(retries)
            .build()
            .unwrap();
        for round in 0..5u64 {
            let base = round * 100;
            let handles: Vec<_> = (0..8)
                .map(|k| {
                    p.submit(Logged {
                        i: base + k,
                        log: log.clone(),
                        abort: k == 7,
                    })
                    .unwrap()
                })
                .collect();
            for (k, h) in handles.into_iter().enumerate() {
                match join(h) {
                    Ok(v) => assert_eq!(v, base + k as u64),
                    Err(e) => {
                        assert_eq!(k, 7, "retries({retries}): task {k} failed: {e:?}");
                        assert!(matches!(e.kind(), ErrorKind::WorkerLost(_)), "{e:?}");
                    }
                }
            }
        }
        let bytes = std::fs::read(&log).expect("the log");
        let _ = std::fs::remove_file(&log);
        let mut runs = std::collections::HashMap::<u64, u32>::new();
        for rec in bytes.chunks_exact(8) {
            *runs
                .entry(u64::from_le_bytes(rec.try_into().unwrap()))
                .or_default() += 1;
        }
        let over: Vec<_> = runs.iter().filter(|(_, n)| **n > 1 + retries).collect();
        assert!(
            over.is_empty(),
            "retries({retries}): run too often: {over:?}"
        );
        assert_eq!(runs.len(), 40, "every task ran");
    }
}

/// Crashes its worker (SIGKILL) when `always`, or on its first run only
/// when `once` is a path that does not exist yet (it is created first).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Crashy {
    i: u64,
    always: bool,
    once: Option<std::path::PathBuf>,
}

impl Task for Crashy {
    type Output = u64;
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = "procs-tests::burst::Crashy";
    fn run(self, _cx: &mut TaskContext<'_, Self>) -> u64 {
        let first_time = self.once.as_ref().is_some_and(|p| {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(p)
                .is_ok()
        });
        if self.always || first_time {
            // SAFETY: kill takes integers; this ends our own worker.
            unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        }
        self.i
    }
}
concur_procs::register!(Crashy);

/// In a `map`, a task that always crashes fails alone whatever the
/// retries: the tasks batched with it, whose held results its first crash
/// took, run again without it, and its retries run alone.
#[test]
fn in_a_map_a_crashing_task_fails_alone_whatever_the_retries() {
    use concur_procs::ExecutorExt;
    for retries in [0u32, 1, 3] {
        let p = ProcessPool::builder()
            .workers(1)
            .retries(retries)
            .build()
            .unwrap();
        let tasks = (0..100u64).map(|i| Crashy {
            i,
            always: i == 7,
            once: None,
        });
        let failed: Vec<usize> = bounded("the map", || {
            p.map(tasks)
                .enumerate()
                .filter_map(|(i, r)| match r {
                    Ok(v) => {
                        assert_eq!(v, i as u64);
                        None
                    }
                    Err(e) => {
                        assert!(matches!(e.kind(), ErrorKind::WorkerLost(_)), "{e:?}");
                        Some(i)
                    }
                })
                .collect()
        });
        assert_eq!(failed, vec![7], "retries({retries})");
    }
}

/// Tasks that crash their worker on their first run only: with one retry
/// every task of the `map` succeeds (a crash never takes a task's second
/// chance through a neighbour's crash).
#[test]
fn tasks_that_crash_once_all_succeed_with_one_retry() {
    use concur_procs::ExecutorExt;
    let dir = std::env::temp_dir().join(format!("concur-crash-once-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let p = ProcessPool::builder()
        .workers(2)
        .retries(1)
        .restart_limit(1_000, std::time::Duration::from_secs(60))
        .build()
        .unwrap();
    let tasks = (0..600u64).map(|i| Crashy {
        i,
        always: false,
        once: (i % 10 == 3).then(|| dir.join(i.to_string())),
    });
    let failed: Vec<(usize, String)> = bounded("the map", || {
        p.map(tasks)
            .enumerate()
            .filter_map(|(i, r)| r.err().map(|e| (i, format!("{e:?}"))))
            .collect()
    });
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
}
