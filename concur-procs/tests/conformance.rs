//! The core conformance suite, case by case, on the process backend.

use concur_core::conformance::Backend;
use concur_core::{PoolConfig, TaskError};
use concur_procs::{ProcessPool, ProcessPoolBuilder};

/// Tasks here panic on purpose: their workers keep it off stderr (each
/// panic still fails its task, message and location kept), so a passing
/// run stays quiet. Set before `main`, while the process has one thread.
#[ctor::ctor]
fn quiet_worker_panics() {
    std::env::set_var("CONCUR_PROCS_QUIET_PANICS", "1");
}

/// Builds process pools for the suite.
struct ProcsBackend;

impl Backend for ProcsBackend {
    type Pool = ProcessPool;
    fn build(&self, config: PoolConfig) -> Result<ProcessPool, TaskError> {
        ProcessPoolBuilder::from_config(config).build()
    }
}

mod conformance {
    concur_core::conformance_suite!(
        backend: crate::ProcsBackend,
        supported: [
            timeout_stops_running_task,
            cancel_running_stops_worker,
            memory_isolated,
            pool_failure_fails_work_in_flight,
        ],
        unsupported: [shared_memory_visible],
    );
}
