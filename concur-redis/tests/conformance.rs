//! The core conformance suite, case by case, on the distributed backend,
//! against a real `redis-server` (one for this test binary, a fresh queue
//! per pool). Local workers are this test binary re-run.

mod support;

use concur_core::conformance::Backend;
use concur_core::{PoolConfig, TaskError};
use concur_redis::RedisPool;

support::worker_entry_test!();

/// Builds Redis pools for the suite.
struct RedisBackend;

impl Backend for RedisBackend {
    type Pool = RedisPool;
    fn build(&self, config: PoolConfig) -> Result<RedisPool, TaskError> {
        support::builder(support::shared_server_url(), config).build()
    }
}

mod conformance {
    concur_core::conformance_suite!(
        backend: crate::RedisBackend,
        supported: [memory_isolated, pool_failure_fails_work_in_flight],
        unsupported: [
            // Timeouts and cancels are cooperative: a worker serves the
            // whole queue and is not killed for one task.
            timeout_stops_running_task,
            cancel_running_stops_worker,
            shared_memory_visible,
        ],
    );
}
