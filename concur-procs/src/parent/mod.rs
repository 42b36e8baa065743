//! The parent's side of the process backend: everything that runs in the
//! process that owns a [`ProcessPool`](crate::ProcessPool).
//!
//! - [`scheduler`]: every decision, without I/O (units, workers, retries,
//!   quarantine, timeouts, pool failure, shutdown), tested without processes;
//! - [`shell`]: the pool's shared state; feeds events to the scheduler and
//!   carries out its effects;
//! - [`supervisor`]: the thread that starts workers, watches their pidfds,
//!   reaps them and checks deadlines;
//! - [`router`]: the thread that reads every worker's results;
//! - [`outbox`]: per-worker sending;
//! - [`pool`], [`builder`]: the public [`ProcessPool`](crate::ProcessPool)
//!   and its builder.
//!
//! Events flow one way: callers, the router and the supervisor call into
//! the shell, which locks the scheduler, feeds it the event with the time,
//! and carries out the effects it returns.

pub(crate) mod builder;
pub(crate) mod outbox;
pub(crate) mod pidfd;
pub(crate) mod pool;
pub(crate) mod router;
pub(crate) mod scheduler;
pub(crate) mod shell;
pub(crate) mod supervisor;
