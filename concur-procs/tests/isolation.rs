//! Crash isolation: a task that panics, aborts, segfaults, is killed or
//! exceeds its memory limit fails alone with a precise error; its worker is
//! replaced; tasks that waited on the dead worker are sent again.

mod common;

use std::time::Duration;

use common::{alive, join, wait_until, Crash, How, Sleep, Who, DEADLINE};
use concur_procs::{Configure, ErrorKind, Executor, ProcessPool, TaskError, WorkerExit};

// Tasks here panic on purpose.
common::quiet_worker_panics!();

fn pool(workers: usize) -> concur_procs::ProcessPoolBuilder {
    ProcessPool::builder().workers(workers)
}

/// Crashes one task on a 2-worker pool and checks the error, the
/// replacement of the worker, and that the pool still runs tasks.
fn crash_fails_alone(how: How) {
    // No retry: the crash is seen once, on one worker.
    let p = pool(2).retries(0).build().unwrap();
    let before = p.worker_pids();
    let h = p.submit(Crash { how, wait: false }).unwrap();
    let pid = h.recv_timeout(DEADLINE).expect("crash task started");
    let err = join(h).unwrap_err();
    assert_eq!(
        err.kind(),
        &ErrorKind::WorkerLost(common::signal_of(how)),
        "{err}"
    );
    wait_until("the crashed worker is replaced", DEADLINE, || {
        let now = p.worker_pids();
        now.iter().all(Option::is_some) && !now.contains(&Some(pid))
    });
    assert!(!alive(pid));
    let after = p.worker_pids();
    assert_eq!(after.len(), 2);
    assert_eq!(
        before.iter().filter(|x| after.contains(x)).count(),
        1,
        "only the crashed worker changed"
    );
    for _ in 0..4 {
        join(p.submit(Who).unwrap()).unwrap();
    }
}

#[test]
fn abort_is_worker_lost_sigabrt() {
    crash_fails_alone(How::Abort);
}

#[test]
fn segfault_is_worker_lost_sigsegv() {
    crash_fails_alone(How::Segfault);
}

#[test]
fn sigkill_is_worker_lost_sigkill() {
    crash_fails_alone(How::Sigkill);
}

#[test]
fn panic_keeps_message_and_worker() {
    let p = pool(1).build().unwrap();
    let pid = p.worker_pids()[0].unwrap();
    let err = join(
        p.submit(Crash {
            how: How::Panic,
            wait: false,
        })
        .unwrap(),
    )
    .unwrap_err();
    match err.kind() {
        ErrorKind::Panicked { message, location } => {
            assert_eq!(message, "crash test panic 42");
            assert!(
                location
                    .as_deref()
                    .is_some_and(|l| l.contains("common/mod.rs")),
                "{location:?}"
            );
        }
        other => panic!("expected Panicked, got {other:?}"),
    }
    assert_eq!(
        join(p.submit(Who).unwrap()).unwrap().pid,
        pid,
        "a panic does not cost the worker"
    );
}

#[test]
fn memory_limit_is_worker_lost_memory_limit() {
    let p = pool(1).memory_limit(256 << 20).build().unwrap();
    // Well within the limit: fine.
    assert_eq!(
        join(
            p.submit(Crash {
                how: How::Allocate(16 << 20),
                wait: false
            })
            .unwrap()
        )
        .unwrap(),
        1
    );
    let err = join(
        p.submit(Crash {
            how: How::Allocate(1 << 30),
            wait: false,
        })
        .unwrap(),
    )
    .unwrap_err();
    assert_eq!(
        err.kind(),
        &ErrorKind::WorkerLost(WorkerExit::MemoryLimit),
        "{err}"
    );
    // An abort under a memory limit is still an abort.
    let err = join(
        p.submit(Crash {
            how: How::Abort,
            wait: false,
        })
        .unwrap(),
    )
    .unwrap_err();
    assert_eq!(
        err.kind(),
        &ErrorKind::WorkerLost(WorkerExit::Signal(libc::SIGABRT)),
        "{err}"
    );
    join(p.submit(Who).unwrap()).unwrap();
}

/// One worker holding a crashing task and three innocent ones sent ahead.
fn crash_with_innocents(retries: u32) -> Vec<Result<u32, TaskError>> {
    let p = pool(1)
        .in_flight_per_worker(4)
        .retries(retries)
        .build()
        .unwrap();
    let crash = p
        .submit(Crash {
            how: How::Abort,
            wait: true,
        })
        .unwrap();
    crash.recv_timeout(DEADLINE).expect("crash task started");
    let innocents: Vec<_> = (0..3).map(|_| p.submit(Sleep { ms: 0 }).unwrap()).collect();
    // The go-ahead travels behind the innocents: they are on the worker when it dies.
    crash.send(()).unwrap();
    let err = join(crash).unwrap_err();
    assert_eq!(
        err.kind(),
        &ErrorKind::WorkerLost(WorkerExit::Signal(libc::SIGABRT))
    );
    innocents.into_iter().map(join).collect()
}

#[test]
fn innocent_tasks_are_retried_after_a_crash() {
    for r in crash_with_innocents(1) {
        r.expect("an innocent task is retried on the replacement worker");
    }
}

/// Tasks that waited on a worker that died never started: they are sent
/// again even with retries off (issue 7.7: only the running task is blamed).
#[test]
fn innocent_tasks_are_sent_again_even_with_retries_zero() {
    for r in crash_with_innocents(0) {
        r.expect("a task that never started is not blamed for a crash");
    }
}

#[test]
fn restart_limit_fails_the_pool() {
    let p = pool(1)
        .restart_limit(2, Duration::from_secs(600))
        .build()
        .unwrap();
    for _ in 0..3 {
        let err = join(
            p.submit(Crash {
                how: How::Abort,
                wait: false,
            })
            .unwrap(),
        )
        .unwrap_err();
        assert!(matches!(err.kind(), ErrorKind::WorkerLost(_)), "{err}");
    }
    match p.submit(Who) {
        Err(e) => assert!(matches!(e.kind(), ErrorKind::PoolFailed { .. }), "{e}"),
        Ok(h) => panic!("a failed pool took work: {:?}", join(h)),
    }
}

#[test]
fn crashes_under_the_limit_keep_the_pool() {
    let p = pool(1)
        .restart_limit(3, Duration::from_secs(600))
        .build()
        .unwrap();
    for _ in 0..3 {
        join(
            p.submit(Crash {
                how: How::Sigkill,
                wait: false,
            })
            .unwrap(),
        )
        .unwrap_err();
    }
    join(p.submit(Who).unwrap()).unwrap();
}
