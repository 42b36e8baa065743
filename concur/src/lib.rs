//! Run the same tasks on a pool of **threads** or of **worker processes**,
//! with one API. This is the crate to depend on: its cargo features pick the
//! backends compiled in, and [`Pool`] runs on whichever one the program
//! chooses.
//!
//! Pick the backend in `Cargo.toml`, with one line:
//!
//! ```toml
//! concur = "0.1"                                                               # threads
//! concur = { version = "0.1", default-features = false, features = ["procs"] } # worker processes
//! ```
//!
//! or, with both compiled in (`features = ["threads", "procs"]`), at run
//! time: `CONCUR_BACKEND=procs ./my-program`, or
//! `Pool::builder().backend(Backend::Procs)` in code.
//!
//! A task is a plain serializable value (`serde = { version = "1",
//! features = ["derive"] }`) with a `run` method; the same task type runs
//! unchanged on every backend:
//!
//! ```
//! use concur::prelude::*;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Square(u64);
//!
//! impl Task for Square {
//!     type Output = u64;
//!     type ToCaller = ();
//!     type FromCaller = ();
//!     const NAME: &'static str = "example::Square";
//!     fn run(self, _cx: &mut TaskContext<'_, Self>) -> u64 {
//!         self.0 * self.0
//!     }
//! }
//! concur::register!(Square); // lets worker processes run it
//!
//! fn main() -> Result<(), TaskError> {
//!     concur::init(); // first line of main: worker processes start here
//!     let pool = Pool::new()?; // threads, procs, ...: chosen by feature or CONCUR_BACKEND
//!     assert_eq!(pool.submit(Square(7))?.join()?, 49);
//!     let squares: Vec<u64> = pool.map((0..10).map(Square)).collect::<Result<_, _>>()?;
//!     assert_eq!(squares[9], 81);
//!     Ok(())
//! }
//! ```
//!
//! # Features
//!
//! | feature | default | adds |
//! |---|---|---|
//! | `threads` | yes | `concur::threads` (`concur-threads`): a thread pool on rayon; values are moved, never serialized; cheapest dispatch |
//! | `procs` | no | `concur::procs` (`concur-procs`, Linux): worker processes running this same executable; a crash fails only its task, a timeout or cancel kills the worker, memory limits |
//! | `redis` | no | `concur::redis` (`concur-redis`, Linux): worker processes on any machine behind a Redis broker (URL from `PoolBuilder::redis_url` or `CONCUR_REDIS_URL`); at-least-once, cooperative timeouts and cancel, no function tasks; `concur::redis::server` starts a local `redis-server` for tests |
//!
//! At least one backend feature must be enabled. With several, the pool
//! runs on the one named by [`PoolBuilder::backend`], else by the
//! `CONCUR_BACKEND` environment variable (`threads`, `procs` or `redis`),
//! else on threads (else procs, else redis). Asking for a backend this build does not contain, or a bad
//! `CONCUR_BACKEND`, fails with
//! [`ErrorKind::Config`] naming the valid choices and the feature to
//! enable.
//!
//! # Worker processes
//!
//! With `procs`, a worker is this executable started again. Worker mode
//! starts before `main` (and before a test harness), so neither a program
//! nor a test target needs any set-up: the program's `main` never runs in a
//! worker. [`init`] stays the recommended first line of `main` (it raises
//! the open-files limit; without `procs` it does nothing), and
//! [`enable_test_support!`] still compiles and does nothing. The program's
//! own constructors (`#[ctor]`, statics registered by `inventory`) do run
//! in every worker, as they would in any new process of the executable.
//! Function tasks ([`ExecutorExt::submit_fn`]) need nothing else; struct
//! task types run by worker processes are registered with
//! [`#[concur::task]`](task) or one [`register!`] line each. [`is_worker`]
//! tells code whether it runs in a worker.
//!
//! # Delivery
//!
//! Every accepted task ends in exactly one result or one typed
//! [`TaskError`], delivered to its handle: never a hang, never a silent
//! loss; with [`retries`](Configure::retries), a task whose worker died
//! under it runs again, so tasks are at-least-once and should be idempotent.
//! The full contract is on [`Executor`], and the
//! [README](https://docs.rs/crate/concur/latest/source/README.md) (section
//! *What happens to a task*) tells it with examples.
//!
//! # One type for every backend
//!
//! [`Executor`] has generic methods, so `&dyn Executor` does not compile
//! (error E0038). [`Pool`] replaces it: one concrete type over every
//! compiled-in backend, chosen at run time. Code generic over executors
//! takes `&impl Executor` (or `E: Executor`) and accepts a `Pool` as well as
//! a backend's own pool (`threads::ThreadPool`, `procs::ProcessPool`),
//! which stay reachable for what only one backend offers.

// Without a backend the one error below is the message; the rest stays quiet.
#![cfg_attr(
    not(any(feature = "threads", feature = "procs", feature = "redis")),
    allow(unused, unreachable_code)
)]

#[cfg(not(any(feature = "threads", feature = "procs", feature = "redis")))]
compile_error!(
    "the `concur` crate needs at least one backend: enable its cargo feature `threads`, `procs` or `redis`"
);

mod backend;
mod pool;

pub use backend::{Backend, ENV_BACKEND};
#[cfg(feature = "redis")]
pub use pool::ENV_REDIS_URL;
pub use pool::{Pool, PoolBuilder};

pub use concur_core as core;
pub use concur_core::{
    register, BatchHandle, BatchResults, Capabilities, Configure, ErrorKind, Executor, ExecutorExt,
    Initializer, Map, MapAllError, MapOptions, MapUnordered, PoolConfig, SharedBytes, Task,
    TaskContext, TaskError, TaskHandle, TaskId, WorkerExit, WorkerInfo,
};
/// Turns an `impl Task for T` into a full task: fills `NAME` (module path
/// and type), unit message types and the context parameter when absent,
/// and registers the type for process workers. See [`concur_macros::task`].
pub use concur_macros::task;

/// The thread backend (`concur-threads`), for what only threads offer:
/// closures ([`ThreadPool::spawn_fn`](threads::ThreadPool::spawn_fn)) and
/// scoped borrowing of stack data.
#[cfg(feature = "threads")]
pub use concur_threads as threads;

/// The process backend (`concur-procs`), for what only processes offer:
/// its own builder settings (memory limit, restart limit, ...) and worker
/// pids.
#[cfg(feature = "procs")]
pub use concur_procs as procs;

/// The distributed backend (`concur-redis`), for what only it offers:
/// independent workers on other machines ([`redis::worker`]), queues,
/// visibility timeouts, and [`redis::server::LocalServer`] for tests.
#[cfg(feature = "redis")]
pub use concur_redis as redis;

/// The names most code needs: `use concur::prelude::*;`.
pub mod prelude {
    pub use crate::{
        Backend, Configure, ErrorKind, Executor, ExecutorExt, MapOptions, Pool, Task, TaskContext,
        TaskError, WorkerInfo,
    };
}

/// The recommended first line of `main`; returns at once.
///
/// With the `procs` feature this is `concur_procs::init`. Worker mode itself
/// starts before `main` (so a program that forgets this line still never
/// runs its `main` in a worker); where the C library gives constructors no
/// arguments (not glibc), this call is where a worker enters worker mode.
/// It also raises the soft limit on open file descriptors to the hard
/// limit (see `concur_procs::init` for why). Without `procs` it does nothing,
/// so the line can stay when the feature is off. Calling it again is
/// harmless.
///
/// With the `redis` feature it also calls `concur_redis::init`: in a local
/// worker of a Redis pool (this executable re-run by the pool) it runs the
/// worker and never returns; elsewhere it returns at once. Redis local
/// workers start here, not before `main`, so the line is required there.
/// That check comes first, so a Redis local worker starts no fork server
/// (`concur_procs::init` starts one for process pools).
pub fn init() {
    #[cfg(feature = "redis")]
    concur_redis::init();
    #[cfg(feature = "procs")]
    concur_procs::init();
}

/// True in a worker process of a process pool or in a local worker of a
/// Redis pool (in its tasks and its initializer); false in the program that
/// owns the pool, and always false without the `procs` and `redis`
/// features. Threads of a thread pool are not worker processes: tasks there
/// see false.
pub fn is_worker() -> bool {
    #[cfg(feature = "procs")]
    if concur_procs::is_worker() {
        return true;
    }
    #[cfg(feature = "redis")]
    if concur_redis::is_worker() {
        return true;
    }
    false
}

/// The test-harness equivalent of [`init`]: put it once at the crate root
/// of each test target (whose `main` is the test harness's) that builds a
/// process pool.
///
/// ```
/// concur::enable_test_support!();
/// # fn main() {}
/// ```
///
/// With `procs` it is `concur_procs::enable_test_support!()`; without, it
/// expands to nothing, so test code stays the same on every backend.
#[cfg(feature = "procs")]
#[macro_export]
macro_rules! enable_test_support {
    () => {
        $crate::procs::enable_test_support!();
    };
}

/// The test-harness equivalent of [`init`]: put it once at the crate root
/// of each test target (whose `main` is the test harness's) that builds a
/// process pool.
///
/// ```
/// concur::enable_test_support!();
/// # fn main() {}
/// ```
///
/// With `procs` it is `concur_procs::enable_test_support!()`; without, it
/// expands to nothing, so test code stays the same on every backend.
#[cfg(not(feature = "procs"))]
#[macro_export]
macro_rules! enable_test_support {
    () => {};
}

/// The README's Rust examples compile and run as doctests of this crate.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
