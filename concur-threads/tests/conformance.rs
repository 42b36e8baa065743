//! The core conformance suite, run on the thread backend: one test per case
//! (`cargo test -p concur-threads conformance::` lists them).

use concur_core::conformance::Backend;
use concur_core::{PoolConfig, TaskError};
use concur_threads::ThreadPool;

/// Builds thread pools for the suite.
struct Threads;

impl Backend for Threads {
    type Pool = ThreadPool;
    fn build(&self, config: PoolConfig) -> Result<ThreadPool, TaskError> {
        ThreadPool::with_config(config)
    }
}

mod conformance {
    concur_core::conformance_suite!(
        backend: super::Threads,
        supported: [shared_memory_visible],
        unsupported: [
            timeout_stops_running_task,
            cancel_running_stops_worker,
            memory_isolated,
            pool_failure_fails_work_in_flight,
        ],
    );
}
