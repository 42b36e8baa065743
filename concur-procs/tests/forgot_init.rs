//! A program that forgets `concur_procs::init()` gets a clear `Spawn` error,
//! never a hang or a fork bomb. This test target deliberately does not use
//! `enable_test_support!()`.

use std::error::Error;
use std::process::Command;
use std::time::{Duration, Instant};

use concur_procs::{Configure, ErrorKind, ProcessPool};

#[test]
fn forgotten_init_is_a_spawn_error_naming_the_fix() {
    let started = Instant::now();
    let err = ProcessPool::builder()
        .workers(2)
        .start_timeout(Duration::from_secs(30))
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Spawn, "{err}");
    let cause = err.source().expect("the cause says why").to_string();
    assert!(cause.contains("concur_procs::init()"), "{cause}");
    assert!(cause.contains("ended before it connected"), "{cause}");
    // The worker rejected the unknown argument and exited: no need to wait for the deadline.
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
}

const ROLE: &str = "CONCUR_PROCS_TEST_NESTED_ROLE";

/// Run only as a child of `marked_child_cannot_build_a_pool`, with the worker
/// environment set as a worker that did not enter worker mode would have it.
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
    assert!(cause.contains("did not enter worker mode"), "{cause}");
    println!("NESTED-REFUSED");
}

#[test]
fn marked_child_cannot_build_a_pool() {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "nested_role",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ROLE, "1")
        .env("CONCUR_PROCS_SERVER", "/nonexistent/socket")
        .env("CONCUR_PROCS_TOKEN", "0")
        .env("CONCUR_PROCS_PARENT", std::process::id().to_string())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("NESTED-REFUSED"), "{stdout}");
}
