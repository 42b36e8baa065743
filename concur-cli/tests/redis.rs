//! End-to-end tests of the `concur` binary's `redis` backend (feature
//! `redis`; they need `redis-server` on PATH: the binary starts its own
//! when no `--redis` URL is given). Every child has a deadline.

#![cfg(feature = "redis")]

mod common;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(120);

/// Runs `concur args...` to its end (killed past the deadline).
fn concur(args: &[&str]) -> Output {
    let child = Command::new(env!("CARGO_BIN_EXE_concur"))
        .args(args)
        .env_remove("CONCUR_BACKEND")
        .env_remove("CONCUR_REDIS_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("concur runs");
    common::finish(child, DEADLINE, &format!("concur {args:?}"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `concur demo --backend redis` starts its own server, runs local
/// workers (this binary re-run) and shows they are other processes.
#[test]
fn demo_on_redis_runs_workers_in_other_processes() {
    let out = concur(&["demo", "--backend", "redis", "--workers", "2"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(
        stdout.contains("redis: all 2 workers joined; 2 distinct process ids"),
        "{stdout}"
    );
}

/// `concur bench --backend redis` measures the dispatch workload and
/// recommends when to go distributed.
#[test]
fn bench_on_redis_reports_and_recommends() {
    let out = concur(&[
        "bench",
        "--backend",
        "procs,redis",
        "--workload",
        "dispatch",
        "--quick",
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("redis"), "{stdout}");
    assert!(stdout.contains("go distributed when"), "{stdout}");
}

/// `concur worker` without `--redis` (or `CONCUR_REDIS_URL`) is bad usage.
#[test]
fn worker_without_a_url_is_bad_usage() {
    let out = concur(&["worker"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}
