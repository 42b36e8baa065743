//! Worker stdout and stderr are the parent's: what a task prints in a
//! worker process shows up where the parent's own output goes. The test
//! re-runs its own binary as the parent with both streams piped, and reads
//! what arrived.

mod common;

use common::run_role_with;
use concur_procs::{Configure, Executor, ProcessPool, Task, TaskContext};
use serde::{Deserialize, Serialize};

const ROLE: &str = "CONCUR_PROCS_TEST_OUTPUT_ROLE";

/// Prints a marker with its process id to stdout and to stderr.
#[derive(Serialize, Deserialize)]
struct Print;

impl Task for Print {
    type Output = u32;
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = "concur_procs::tests::output::Print";
    fn run(self, _cx: &mut TaskContext<'_, Self>) -> u32 {
        use std::io::Write;
        let pid = std::process::id();
        println!("TASK-STDOUT {pid}");
        eprintln!("TASK-STDERR {pid}");
        let _ = std::io::stdout().flush();
        pid
    }
}

concur_procs::register!(Print);

/// The parent's role, run only as a child of `task_output_reaches_the_parents_streams`.
#[test]
#[ignore = "a role played by a child process of task_output_reaches_the_parents_streams"]
fn output_role() {
    assert!(
        std::env::var_os(ROLE).is_some(),
        "run by the outer test only"
    );
    let pool = ProcessPool::builder().workers(1).build().unwrap();
    let worker = pool.submit(Print).unwrap().join().unwrap();
    println!("PARENT {} WORKER {worker}", std::process::id());
}

#[test]
fn task_output_reaches_the_parents_streams() {
    let out = run_role_with(
        &std::env::current_exe().unwrap(),
        ROLE,
        "output_role",
        &[],
        || Ok(()),
    );
    let (stdout, stderr) = (&out.stdout, &out.stderr);
    assert!(out.status.success(), "role failed:\n{stdout}\n{stderr}");
    let line = stdout
        .lines()
        .find_map(|l| l.split_once("PARENT ").map(|(_, r)| r.to_owned()))
        .expect("the role reports its pids");
    let (parent, worker) = line.split_once(" WORKER ").unwrap();
    assert_ne!(parent, worker, "the task ran in the parent itself");
    assert!(
        stdout.contains(&format!("TASK-STDOUT {worker}")),
        "worker stdout missing:\n{stdout}"
    );
    assert!(
        stderr.contains(&format!("TASK-STDERR {worker}")),
        "worker stderr missing:\n{stderr}"
    );
}
