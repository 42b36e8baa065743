//! concur's worker-process backend: tasks run in worker processes that are
//! this same executable re-run in worker mode. Each task gets isolated
//! memory, a crash or abort fails only that task, a timeout or cancel really
//! stops the work (the worker is killed and replaced), and workers can be
//! given a memory limit. Depend on it when tasks must not share memory with
//! the caller or may crash; for cheap in-memory parallelism use
//! `concur-threads`.
//!
//! # Entering worker mode (read this first)
//!
//! A worker is started by running the current executable again. The first
//! line of `main` must give it the chance to become a worker:
//!
//! ```no_run
//! fn main() {
//!     concur_procs::init(); // returns at once in the parent; never returns in a worker
//!     run_the_program();
//! }
//! # fn run_the_program() {} // the program, which may build a ProcessPool
//! ```
//!
//! Test binaries have no `main` of their own: put
//! `concur_procs::enable_test_support!();` once at the crate root of each
//! test target that builds a pool (it runs [`init`] before the test harness
//! starts).
//!
//! **If you forget**, the worker process starts the program's normal `main`
//! with an unknown argument (`--concur-procs-worker`), which most programs
//! reject at once. Building a pool then fails with
//! [`ErrorKind::Spawn`] whose
//! [`source`](std::error::Error::source) tells you to add
//! `concur_procs::init()`. A program that ignores its arguments instead runs
//! on, but any pool it tries to build fails at once (it knows it was started
//! as a worker), and the parent gives up at its start deadline. Never a hang,
//! never a fork bomb.
//!
//! # Example
//!
//! ```no_run
//! use concur_procs::{Configure, Executor, ExecutorExt, ProcessPool, Task, TaskContext};
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
//! concur_procs::register!(Square);
//!
//! fn main() -> Result<(), concur_procs::TaskError> {
//!     concur_procs::init();
//!     let pool = ProcessPool::builder().workers(2).build()?;
//!     assert_eq!(pool.submit(Square(7))?.join()?, 49);
//!     let squares: Vec<u64> = pool.map((0..100).map(Square)).collect::<Result<_, _>>()?;
//!     assert_eq!(squares[9], 81);
//!     Ok(())
//! }
//! ```
//!
//! # How it works
//!
//! Tasks and results are encoded with core's codec (bincode) and carried by
//! `ipc-channel`; payloads above [`ProcessPoolBuilder::shm_threshold`] go
//! through shared memory, written once by the sender and decoded in place
//! by the receiver. Several tasks are kept in flight per worker (see
//! [`ProcessPoolBuilder::in_flight_per_worker`]), frames queued together
//! leave as one socket message, and all results come back to one router
//! thread, so a small task costs about one socket round trip; `map` sends
//! small tasks in batches. A worker whose task runs much longer than its
//! tasks usually do is sent no more work while another worker can take
//! it, and when a worker falls idle, tasks already waiting behind such a
//! long task are asked back (if they have not started) and run elsewhere:
//! one slow task does not hold back the others.
//!
//! In the parent, a router thread reads every worker's results and never
//! sends; a supervisor thread starts workers, reaps them and replaces the
//! ones that end; callers send their own tasks, and a sender thread per
//! worker sends what the router queues. In a worker, a reader thread always
//! reads while the main thread runs tasks one after another. Each side
//! always reads while it computes or sends, so no mix of large inputs,
//! large outputs and slow callers can deadlock them.
//!
//! A worker that dies (signal, abort, memory limit, `exit`) fails the task
//! it was running with `WorkerLost` and the exit it had; the tasks sent
//! ahead to it are retried on other workers (up to the `retries` setting)
//! or fail with the same error. A timeout or a cancel of a running task
//! kills its worker. Workers exit when the parent dies (parent-death signal
//! and end of channel), and every worker is reaped.
//!
//! # Features and requirements
//!
//! No cargo features. Linux only: it relies on `prctl(PR_SET_PDEATHSIG)`,
//! `/proc` and `RLIMIT_AS`. Worker stdout and stderr are the parent's.
//!
//! [`init`] raises the soft limit on open file descriptors
//! (`RLIMIT_NOFILE`) to the hard limit in the parent and in workers, as Go's
//! runtime does: a pool holds descriptors for its workers and for shared
//! memory in flight. Children the program starts inherit the raised limit.
//!
//! # Trust
//!
//! The parent survives whatever a task does in its worker: bytes from a
//! worker are read with bounded framing (a patched ipc-channel, see
//! `vendor/ipc-channel/PATCHES.md`), a worker inherits only the standard
//! streams and its own channel, its token never appears in its environment,
//! the bootstrap socket is reachable by this user only, and a worker of
//! another build is refused. Not covered: malicious code running as the same
//! user. The threat model and the tests of each protection are in the
//! repository's `SECURITY.md`.

#![cfg(target_os = "linux")]

mod error;
mod parent;
mod progress;
mod shm;
mod spawn;
mod sys;
mod wire;
mod worker;

pub use concur_core as core;
pub use concur_core::{
    register, Configure, ErrorKind, Executor, ExecutorExt, PoolConfig, Task, TaskContext,
    TaskError, TaskHandle, WorkerExit,
};
pub use parent::builder::{
    ProcessPoolBuilder, DEFAULT_CRASH_WINDOW, DEFAULT_IN_FLIGHT_PER_WORKER, DEFAULT_MAX_CRASHES,
    DEFAULT_START_TIMEOUT,
};
pub use parent::pool::ProcessPool;
pub use shm::DEFAULT_SHM_THRESHOLD;

/// Enters worker mode when this process was started as a worker; returns
/// at once otherwise. Call it first thing in `main`.
///
/// In a worker it connects to the parent, runs tasks until told to stop or
/// until the parent is gone, then ends the process: it never returns there.
///
/// In every process it first raises the soft limit on open file
/// descriptors (`RLIMIT_NOFILE`) to the hard limit, as Go's runtime does at
/// start: a pool holds descriptors for its workers' channels and for shared
/// memory in flight, and the usual soft default of 1024 only exists for
/// `select(2)`, which nothing here uses. Child processes inherit the raised
/// limit; a program that needs the old one can lower it again after `init`.
pub fn init() {
    sys::raise_fd_limit();
    if worker::is_worker() {
        worker::main();
    }
}

/// True in a worker process (in its tasks and its initializer, and in the
/// program's own code if it forgot [`init`]); false in the program that
/// owns the pool and in programs a task starts.
pub fn is_worker() -> bool {
    // Worker mode clears the environment variables that mark a worker once
    // it has read them (so programs its tasks start are not workers); the
    // worker argument the parent started it with stays.
    worker::is_worker()
        || std::env::args_os()
            .nth(1)
            .is_some_and(|a| a == spawn::WORKER_ARG)
}

/// The test-harness equivalent of [`init`]: put it once at the crate root of
/// a test target (a binary whose `main` is libtest's) that builds a
/// [`ProcessPool`].
///
/// ```ignore
/// concur_procs::enable_test_support!();
/// ```
///
/// In a worker process it cannot enter worker mode from a constructor
/// (task registrations are constructors too, and may not have run yet).
/// Instead the constructor arranges for worker mode to start when the
/// harness exits: the harness rejects the worker argument and exits at
/// once (its message is silenced), and worker mode then runs with every
/// registration in place. In the parent it does nothing.
#[macro_export]
macro_rules! enable_test_support {
    () => {
        #[$crate::__private::ctor::ctor]
        fn __concur_procs_enter_worker_mode() {
            $crate::__private::enter_worker_mode_at_exit();
        }
    };
}

#[cfg(test)]
enable_test_support!();

#[doc(hidden)]
pub mod __private {
    pub use ctor;

    /// Test support only: makes this process expect workers of another
    /// build (`identity` replaces the protocol version and build id it
    /// checks workers against), so a test can watch a mismatch be refused.
    /// Takes effect once per process.
    pub fn pretend_other_build(identity: &[u8]) {
        let _ = crate::spawn::PRETEND.set(identity.to_vec());
    }

    /// See [`enable_test_support!`](crate::enable_test_support).
    pub fn enter_worker_mode_at_exit() {
        if crate::worker::is_worker() {
            crate::sys::run_at_exit(crate::worker::main);
        }
    }
}
