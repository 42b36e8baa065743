//! The core conformance suite, case by case, on the process backend.

mod common;

use concur_core::conformance::Backend;
use concur_core::{PoolConfig, TaskError};
use concur_procs::{ProcessPool, ProcessPoolBuilder};

// Tasks here panic on purpose.
common::quiet_worker_panics!();

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
