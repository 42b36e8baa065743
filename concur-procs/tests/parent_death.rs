//! If the parent dies, even by SIGKILL, its workers exit within a second,
//! busy or idle. The test re-runs its own binary as the parent (like
//! rayon-core's `stack_overflow_crash.rs`), kills it and watches the workers.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{alive, spawn_reporting, wait_until, Sleep, DEADLINE};
use concur_procs::{Configure, Executor, ProcessPool};

const ROLE: &str = "CONCUR_PROCS_TEST_PARENT_ROLE";

/// The parent's role, run only as a child of `killed_parent_leaves_no_worker`:
/// two workers, one busy, one idle; prints their pids, then waits to be killed.
#[test]
#[ignore = "a role played by a child process of killed_parent_leaves_no_worker"]
fn parent_role() {
    assert!(
        std::env::var_os(ROLE).is_some(),
        "run by killed_parent_leaves_no_worker only"
    );
    let p = ProcessPool::builder().workers(2).build().unwrap();
    let busy = p.submit(Sleep { ms: 600_000 }).unwrap();
    let busy_pid = busy.recv_timeout(DEADLINE).expect("busy task started");
    let pids: Vec<String> = p
        .worker_pids()
        .into_iter()
        .map(|p| p.unwrap().to_string())
        .collect();
    println!("WORKERS {} BUSY {busy_pid}", pids.join(" "));
    std::thread::sleep(DEADLINE);
    // Not killed: the outer test failed. Leave at once (a graceful drop
    // would wait for the busy task); the workers follow their parent.
    eprintln!("the parent role was not killed");
    std::process::exit(1);
}

#[test]
fn killed_parent_leaves_no_worker() {
    let (mut child, line, _reader) = spawn_reporting(
        Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "parent_role",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ROLE, "1"),
        "WORKERS ",
    );
    let (workers, busy) = line.split_once(" BUSY ").unwrap();
    let pids: Vec<u32> = workers
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    let busy: u32 = busy.parse().unwrap();
    let all_alive = pids.iter().all(|&p| alive(p));
    child.kill().unwrap(); // SIGKILL, before any assertion can leave it running
    child.wait().unwrap();
    assert_eq!(pids.len(), 2);
    assert!(pids.contains(&busy));
    assert!(all_alive);
    for &pid in &pids {
        wait_until(
            &format!("worker {pid} exits"),
            Duration::from_secs(5),
            || !alive(pid),
        );
    }
}
