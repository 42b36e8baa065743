//! The core conformance suite, case by case, on the process backend with
//! workers forked by the fork server: `init()` runs from a constructor,
//! before the test harness starts any thread, so every pool here forks its
//! workers from the template (checked by `workers_are_forked`).

use concur_core::conformance::Backend;
use concur_core::{PoolConfig, TaskError};
use concur_procs::{Configure, ProcessPool, ProcessPoolBuilder};

mod common;

/// Before `main`, while the process has one thread: quiet worker panics
/// (as in `conformance.rs`), then start the fork server.
#[ctor::ctor]
fn start_fork_server() {
    common::set_quiet_worker_panics();
    concur_procs::init();
}

/// Builds process pools for the suite.
struct ForkedBackend;

impl Backend for ForkedBackend {
    type Pool = ProcessPool;
    fn build(&self, config: PoolConfig) -> Result<ProcessPool, TaskError> {
        ProcessPoolBuilder::from_config(config).build()
    }
}

#[test]
fn workers_are_forked() {
    assert!(
        concur_procs::__private::fork_server_pid().is_some(),
        "init() before main started a fork server"
    );
    let pool = ProcessPool::builder().workers(1).build().unwrap();
    let pid = pool.worker_pids()[0].expect("a worker");
    let theirs = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let ours = std::fs::read("/proc/self/cmdline").unwrap();
    assert_eq!(theirs, ours, "worker {pid} was exec'd, not forked");
}

mod conformance {
    concur_core::conformance_suite!(
        backend: crate::ForkedBackend,
        supported: [
            timeout_stops_running_task,
            cancel_running_stops_worker,
            memory_isolated,
            pool_failure_fails_work_in_flight,
        ],
        unsupported: [shared_memory_visible],
    );
}
