//! Issue 8, leak test: 50 rounds of build -> tasks with shared-memory
//! payloads, some of which crash their worker (forcing respawns) -> drop.
//! The parent's descriptors, threads, children and memfds are the same
//! after round 50 as after round 1, and a live worker holds only the
//! standard streams, its own channel and what the runtime opens. Alone in
//! its binary: it counts this process's descriptors and children.

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;

use common::{children, join, wait_until, Blob, Crash, Echo, How, DEADLINE};
use concur_procs::{Configure, Executor, ProcessPool};

const ROUNDS: usize = 50;
const TASKS_PER_ROUND: usize = 40;
const CRASHES_PER_ROUND: usize = 3;
/// Above the 64 KiB shared-memory threshold, both ways.
const PAYLOAD: usize = 100 << 10;

/// What one process holds: `(fd, link target, inode)` for each descriptor.
fn fds_of(pid: &str) -> Vec<(u32, String, u64)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return out;
    };
    for e in dir.flatten() {
        let Some(fd) = e.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let Ok(target) = std::fs::read_link(e.path()) else {
            continue;
        };
        let ino = std::fs::metadata(e.path()).map(|m| m.ino()).unwrap_or(0);
        out.push((fd, target.to_string_lossy().into_owned(), ino));
    }
    out
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Usage {
    fds: usize,
    threads: usize,
    children: usize,
    memfds: usize,
}

fn usage() -> Usage {
    let fds = fds_of("self");
    Usage {
        // Minus the descriptor `read_dir` itself holds while listing.
        fds: fds.len() - 1,
        threads: std::fs::read_dir("/proc/self/task").unwrap().count(),
        children: children().len(),
        memfds: fds.iter().filter(|f| f.1.starts_with("/memfd:")).count(),
    }
}

/// Runs one round; with `inherited` (the descriptors this process had
/// before any pool), also checks what a live worker holds.
fn round(inherited: Option<&[(u32, String, u64)]>) {
    let p = ProcessPool::builder()
        .workers(2)
        .retries(0)
        .build()
        .unwrap();
    let mut hs = Vec::new();
    for i in 0..TASKS_PER_ROUND {
        hs.push(
            p.submit(Echo {
                input: Blob(vec![1; PAYLOAD]),
                out_len: PAYLOAD,
                patterned: false,
            })
            .unwrap(),
        );
        if i % (TASKS_PER_ROUND / CRASHES_PER_ROUND) == 0 {
            let h = p
                .submit(Crash {
                    how: How::Abort,
                    wait: false,
                })
                .unwrap();
            assert!(join(h).is_err(), "the crash task crashed");
        }
    }
    for h in hs {
        let (sum, out) = join(h).expect("an echo task");
        assert_eq!(sum, PAYLOAD as u64);
        assert_eq!(out.0.len(), PAYLOAD);
    }
    if let Some(inherited) = inherited {
        check_worker_fds(&p, inherited);
    }
    drop(p);
}

/// A live worker holds only the standard streams, sockets of its own
/// channel (none of them the parent's end of anything), what the runtime
/// opens, and what this test process itself inherited without
/// close-on-exec (the test runner's descriptors, not concur's); nothing
/// the parent opened leaks into it.
fn check_worker_fds(p: &ProcessPool, inherited: &[(u32, String, u64)]) {
    let parent: BTreeSet<u64> = fds_of("self")
        .into_iter()
        .filter(|f| f.0 > 2)
        .map(|f| f.2)
        .collect();
    for pid in p.worker_pids().into_iter().flatten() {
        let fds = fds_of(&pid.to_string());
        eprintln!("worker {pid} holds {fds:?}");
        for (fd, target, ino) in fds {
            if fd <= 2 || inherited.iter().any(|i| i.0 == fd && i.2 == ino) {
                continue;
            }
            let allowed = target.starts_with("socket:")
                || target.starts_with("/memfd:")
                || target.starts_with("anon_inode:");
            assert!(allowed, "worker {pid} holds fd {fd} -> {target}");
            assert!(
                !target.starts_with("socket:") || !parent.contains(&ino),
                "worker {pid} holds fd {fd} -> {target}, which the parent also holds"
            );
        }
    }
}

#[test]
fn fifty_rounds_leak_nothing() {
    let inherited = fds_of("self");
    eprintln!("inherited by this test process: {inherited:?}");
    let threads_before = usage().threads;
    round(Some(&inherited));
    // A pool's sender threads may outlive `drop` for a moment (see
    // faults_join.rs); wait for them so only a lasting leak shows.
    let settled = || children().is_empty() && usage().threads == threads_before;
    wait_until("round 1's workers and threads are gone", DEADLINE, settled);
    let first = usage();
    eprintln!("after round 1: {first:?}");
    for _ in 2..=ROUNDS {
        round(None);
    }
    wait_until("round 50's workers and threads are gone", DEADLINE, settled);
    let last = usage();
    eprintln!("after round {ROUNDS}: {last:?}");
    assert_eq!(
        first, last,
        "the parent's resources grew over {ROUNDS} rounds"
    );
}
