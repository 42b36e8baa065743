//! A program that calls neither `concur_procs::init()` nor
//! `enable_test_support!()` (this test binary) forgot nothing: worker mode
//! starts before `main`, so its pools work. Its harness's `main` never runs
//! in a worker (there, it used to reject the worker argument, and a program
//! that ignored its arguments ran its whole `main` again in every worker).

mod common;

use std::error::Error;
use std::process::Command;
use std::time::Duration;

use common::{bounded, join, Calc};
use concur_procs::{Configure, ErrorKind, Executor, ExecutorExt, ProcessPool};

#[test]
fn pools_work_without_init() {
    let pool = ProcessPool::builder()
        .workers(2)
        .start_timeout(Duration::from_secs(30))
        .build()
        .expect("workers start without init()");
    assert_eq!(
        join(pool.submit(Calc { x: 4, spin_us: 0 }).unwrap()).unwrap(),
        13
    );
    let all: Vec<u64> = bounded("the map", || {
        pool.map((0..50).map(|x| Calc { x, spin_us: 0 }))
            .collect::<Result<_, _>>()
            .unwrap()
    });
    assert_eq!(all, (0..50).map(|x| x * 3 + 1).collect::<Vec<_>>());
}

const ROLE: &str = "CONCUR_PROCS_TEST_NESTED_ROLE";

/// Run only as a child of `marked_child_cannot_build_a_pool`, with the
/// bootstrap variable in its environment but not the worker argument.
#[test]
#[ignore = "a role played by a child process of marked_child_cannot_build_a_pool"]
fn nested_role() {
    assert!(
        std::env::var_os(ROLE).is_some(),
        "run by marked_child_cannot_build_a_pool only"
    );
    let err = ProcessPool::builder().workers(1).build().unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Spawn);
    let cause = err.source().unwrap().to_string();
    assert!(cause.contains("CONCUR_PROCS_SERVER"), "{cause}");
    println!("NESTED-REFUSED");
}

/// A process with a worker's environment but not started as a worker runs
/// its own `main` (it is not taken for a worker) and refuses to start
/// workers: never a fork bomb.
#[test]
fn marked_child_cannot_build_a_pool() {
    let out = common::output_within(
        Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "nested_role",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ROLE, "1")
            .env("CONCUR_PROCS_SERVER", "/nonexistent/socket")
            .env("CONCUR_PROCS_PARENT", std::process::id().to_string()),
        "the marked child",
    );
    let stdout = &out.stdout;
    assert!(
        out.status.success(),
        "child failed: {stdout}\n{}",
        out.stderr
    );
    assert!(stdout.contains("NESTED-REFUSED"), "{stdout}");
}
