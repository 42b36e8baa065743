//! The contract of concur: what a task is, what every executor guarantees,
//! and the pieces every backend shares.
//!
//! concur runs the same task on a pool of threads (`concur-threads`: shared
//! memory, values moved) or on a pool of worker processes (`concur-procs`:
//! isolated memory, values encoded). This crate names no backend. Depend on
//! it directly when you write tasks or code that is generic over backends;
//! applications usually depend on a backend crate, which re-exports it.
//!
//! - [`Task`]: a serializable value with `run`; [`register!`] makes it
//!   runnable by process workers.
//! - [`FnTask`]: a `fn` item or a closure that captures nothing, run as a
//!   task with nothing to write or register (`submit_fn`, `map_fn`).
//! - [`Executor`]: the minimal contract (submit, batches, shutdown);
//!   [`ExecutorExt`]: async submit and `map` with bounded in-flight work.
//! - [`TaskHandle`]: join, await, cancel, and typed messages both ways.
//! - [`TaskError`] with its matchable [`ErrorKind`]: the one error type.
//! - [`PoolConfig`] and [`Configure`]: settings every pool understands.
//! - [`codec`]: the one place values become bytes (bincode 2).
//! - [`build::build_id`]: which build of the program this is (backends
//!   refuse work from another build).
//! - `conformance` (feature `conformance`): the suite every backend passes.
//!
//! ```
//! use concur_core::{Executor, ExecutorExt, Task, TaskContext, TaskError};
//! use serde::{Deserialize, Serialize};
//!
//! /// Counts the primes below `n`, reporting progress every 10,000 numbers.
//! #[derive(Serialize, Deserialize)]
//! struct CountPrimes { below: u64 }
//!
//! impl Task for CountPrimes {
//!     type Output = u64;
//!     type ToCaller = u64; // progress: numbers checked so far
//!     type FromCaller = ();
//!     const NAME: &'static str = "example::CountPrimes";
//!
//!     fn run(self, cx: &mut TaskContext<'_, Self>) -> u64 {
//!         let is_prime = |n: u64| n >= 2 && (2..).take_while(|d| d * d <= n).all(|d| n % d != 0);
//!         let mut count = 0;
//!         for n in 0..self.below {
//!             if n % 10_000 == 0 { let _ = cx.send(n); }
//!             count += u64::from(is_prime(n));
//!         }
//!         count
//!     }
//! }
//! concur_core::register!(CountPrimes); // lets process workers run it
//!
//! /// Works on any backend: threads or processes.
//! fn primes_below_each(pool: &impl Executor, limits: Vec<u64>) -> Result<Vec<u64>, TaskError> {
//!     pool.map(limits.into_iter().map(|below| CountPrimes { below })).collect()
//! }
//! ```

mod admission;
mod batch;
pub mod build;
pub mod codec;
mod config;
mod error;
mod executor;
mod ext;
mod func;
mod handle;
mod loom;
pub mod panic;
mod payload;
pub mod registry;
pub mod shared;
mod task;
pub mod timer;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use admission::{Admission, Permit};
pub use batch::{decode_batch_items, encode_batch_items};
pub use config::{
    default_workers, Configure, Initializer, PoolConfig, DEFAULT_QUEUE_PER_WORKER, DEFAULT_RETRIES,
    MAX_WORKERS, NEVER,
};
pub use error::{ErrorKind, TaskError, WorkerExit};
pub use executor::{Capabilities, Executor};
pub use ext::{ExecutorExt, Map, MapAllError, MapOptions, MapUnordered};
pub use func::{function_task_name, FnTask, FnTasks, FN_TASK_NAME};
pub use handle::{BatchHandle, BatchOutputs, BatchResults, Completion, Link, TaskHandle, TaskId};
pub use payload::Payload;
pub use shared::SharedBytes;
pub use task::{Message, NullPort, Port, Task, TaskContext, WorkerInfo};

/// The names most code needs: `use concur_core::prelude::*;`.
pub mod prelude {
    pub use crate::{Configure, Executor, ExecutorExt, Task, TaskContext, TaskError, TaskHandle};
}

#[doc(hidden)]
pub mod __private {
    pub use crate::error::{set_register_advice, AdviceLayer};
    pub use linkme;
}
