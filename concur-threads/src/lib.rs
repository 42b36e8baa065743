//! The thread-pool backend of concur, on rayon: tasks run in the caller's
//! memory; task values, outputs and messages are moved, never serialized.
//!
//! Depend on this crate when your tasks trust each other and want the
//! cheapest dispatch: a [`ThreadPool`] implements the
//! [`Executor`] contract of `concur-core` (re-exported
//! here as [`core`]), so the same task types also run unchanged on the
//! process backend (`concur-procs`). Threads also offer what processes
//! cannot: plain closures ([`ThreadPool::spawn_fn`]) and scoped borrowing of
//! stack data ([`ThreadPool::scope`]).
//!
//! ```
//! use concur_threads::core::prelude::*;
//! use concur_threads::ThreadPool;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Shout(String);
//! impl Task for Shout {
//!     type Output = String;
//!     type ToCaller = ();
//!     type FromCaller = ();
//!     const NAME: &'static str = "doc::Shout";
//!     fn run(self, _cx: &mut TaskContext<'_, Self>) -> String {
//!         self.0.to_uppercase()
//!     }
//! }
//!
//! let pool = ThreadPool::builder().workers(2).build()?;
//! assert_eq!(pool.submit(Shout("hi".into()))?.join()?, "HI");
//! let words: Vec<String> = pool
//!     .map(["a", "b"].map(|w| Shout(w.into())))
//!     .collect::<Result<_, _>>()?;
//! assert_eq!(words, ["A", "B"]);
//!
//! // Threads only: borrow stack data.
//! let data = vec![1, 2, 3];
//! let mut sum = 0;
//! pool.scope(|s| s.spawn(|| sum = data.iter().sum()));
//! assert_eq!(sum, 6);
//! # Ok::<(), TaskError>(())
//! ```
//!
//! **What threads cannot do.** A thread cannot be killed: a task over its
//! timeout fails its handle with `TimedOut` and a cancelled running task
//! resolves `Cancelled` at once, but the thread runs on until the task
//! returns (a task may check
//! [`TaskContext::is_cancelled`](concur_core::TaskContext::is_cancelled)).
//! The same holds for each task of a batch, which has its own timeout, and
//! for `shutdown_now`: a worker inside a running task exits when the task
//! returns (see [`ThreadPool`]).
//! A task that aborts or segfaults takes the whole process with it: use
//! `concur-procs` for isolation.
//!
//! No features; requires only `std` threads.

mod all;
mod batch;
mod closure;
mod dispatch;
mod generation;
mod pool;
mod scope;

pub use closure::FnHandle;
pub use concur_core as core;
pub use concur_core::{
    register, Configure, ErrorKind, Executor, ExecutorExt, PoolConfig, Task, TaskContext,
    TaskError, TaskHandle, WorkerExit,
};
pub use pool::{ThreadPool, ThreadPoolBuilder};
pub use scope::Scope;
