//! A user's program as it is written: its own `main`, which prints a line
//! before it builds a pool and calls neither `concur_procs::init()` nor
//! `enable_test_support!()` (and this target has no test harness).
//!
//! Run by `cargo test`, the binary is the driver: it starts itself again
//! as that program, with its output piped, and checks that `main` ran once
//! (in the parent, not once per worker), that the tasks ran in workers, and
//! that the program's own constructor ran in each worker, once.

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use common::output_within;
use concur_procs::{Configure, ExecutorExt, ProcessPool, Task, TaskContext};
use serde::{Deserialize, Serialize};

const ROLE: &str = "CONCUR_PROCS_TEST_NO_INIT_ROLE";

/// How many times this process's constructor ran.
static CONSTRUCTED: AtomicU32 = AtomicU32::new(0);

/// A constructor of the program (no priority, as the `ctor` crate makes
/// them): it runs in workers too, once, before worker mode starts.
#[ctor::ctor]
fn construct() {
    CONSTRUCTED.fetch_add(1, Ordering::SeqCst);
}

/// Reports its worker's pid and how many times that process's constructor ran.
#[derive(Serialize, Deserialize)]
struct Probe;

impl Task for Probe {
    type Output = (u32, u32);
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = "procs-no-init::Probe";
    fn run(self, _cx: &mut TaskContext<'_, Self>) -> (u32, u32) {
        (std::process::id(), CONSTRUCTED.load(Ordering::SeqCst))
    }
}

concur_procs::register!(Probe);

fn main() {
    if std::env::var_os(ROLE).is_some() {
        program();
    } else {
        drive();
    }
}

/// The user's program.
fn program() {
    println!("MAIN-RAN {}", std::process::id());
    let pool = ProcessPool::builder()
        .workers(2)
        .build()
        .expect("a pool without init()");
    for probe in pool.map((0..8).map(|_| Probe)) {
        let (pid, constructed) = probe.expect("the task ran");
        println!("TASK {pid} {constructed}");
    }
    println!("DONE");
}

/// The test.
fn drive() {
    let out = output_within(
        Command::new(std::env::current_exe().unwrap()).env(ROLE, "1"),
        "the program",
    );
    let (pid, stdout, stderr) = (out.pid, &out.stdout, &out.stderr);
    let context = format!(
        "status {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    assert!(out.status.success(), "{context}");
    let mains: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("MAIN-RAN"))
        .collect();
    assert_eq!(
        mains,
        [format!("MAIN-RAN {pid}")],
        "main must run once, in the parent: {context}"
    );
    let tasks: Vec<(u32, u32)> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("TASK "))
        .map(|l| {
            let (p, c) = l.split_once(' ').unwrap();
            (p.parse().unwrap(), c.parse().unwrap())
        })
        .collect();
    assert_eq!(tasks.len(), 8, "{context}");
    for (worker, constructed) in tasks {
        assert_ne!(worker, pid, "tasks run in workers: {context}");
        assert_eq!(
            constructed, 1,
            "the program's constructor runs once in a worker: {context}"
        );
    }
    assert!(stdout.contains("DONE"), "{context}");
    assert!(stderr.is_empty(), "{context}");
}
