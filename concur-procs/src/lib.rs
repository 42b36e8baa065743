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
//! A worker is this same executable started again with a worker argument.
//! **Nothing is asked of the program**: no line in `main`, nothing in test
//! binaries. A worker process becomes a worker before `main` would run, from
//! a constructor this crate places in the executable whenever it builds a
//! [`ProcessPool`] (an ELF `.init_array` entry at priority 200: after Rust's
//! own start-up, before the constructors without a priority). So the
//! program's `main`, and whatever it does before building a pool, runs once,
//! in the parent, never in a worker; a test binary's harness never starts in
//! a worker either.
//!
//! In a worker, that constructor first runs the program's remaining
//! constructors (as the loader would), so crates that register things from
//! constructors see them in workers too; then it enters worker mode and
//! never returns. Task registrations ([`register!`]) are gathered by the
//! linker, so every task is known at that point.
//!
//! [`init`] stays, recommended as the first line of `main`: it starts the
//! fork server (below), which makes starting workers several times faster,
//! and raises the descriptor limit for a pool that holds many descriptors.
//! It is idempotent and harmless, and on a C library other than glibc,
//! which does not give constructors the program's arguments, it is what
//! enters worker mode. [`enable_test_support!`] is kept, as a no-op, for
//! code written against older versions.
//!
//! ```no_run
//! fn main() {
//!     concur_procs::init(); // recommended, not required
//!     println!("printed once, by the parent only");
//!     run_the_program();
//! }
//! # fn run_the_program() {} // the program, which may build a ProcessPool
//! ```
//!
//! # The fork server
//!
//! When [`init`] runs while the program has a single thread (the first line
//! of `main`), it forks a small *template* process, and pools fork their
//! workers from it instead of exec'ing the executable again: a fork of a
//! small process instead of the loader, relocations and runtime start-up
//! of the whole binary. [`ProcessPoolBuilder::spawn_mode`] chooses
//! ([`SpawnMode::Auto`], the default, uses the template when there is one;
//! [`SpawnMode::Exec`] always execs). Without `init`, or with `init` called
//! once threads exist (a test harness), workers are exec'd as before.
//!
//! Isolation is the same as with exec: the template is a copy of the
//! program as it was when `init` ran (before `main` did anything else, when
//! `init` is its first line; at most one thread exists then), holds only
//! the standard streams and a private channel to the parent, and runs
//! nothing but a loop that forks on request. A forked worker is a copy of
//! that template, so it holds no state, thread, lock or descriptor of the
//! parent's beyond what existed when `init` ran. What the parent may have
//! changed since, its environment and working directory, is sent with each
//! request and applied in the new worker; its resource limits, signal
//! dispositions and standard streams are those of `init`'s time. The
//! worker is the parent's own child (forked with `CLONE_PARENT`), leads its
//! own process group, gets the parent-death signal, reads standard input
//! from `/dev/null` and proves its token in the same hello as an exec'd
//! worker. A template that dies or stops answering is killed and never used
//! again: pools then exec (a start already waiting on it fails with
//! `Spawn`, never hangs). If the parent dies, the template and its workers
//! exit with it.
//!
//! A worker differs from a program running `main` in two small ways: the
//! thread that runs tasks has no name, and a task that overflows its stack
//! ends its worker by SIGSEGV without std's "has overflowed its stack"
//! message (the task fails with `WorkerLost`, as for any crash).
//!
//! # Panics in workers
//!
//! A task's panic fails that task with [`ErrorKind::Panicked`] (message and
//! location kept) and is reported on the worker's standard error, which is
//! the parent's, naming the worker and the task:
//!
//! ```text
//! concur worker 1 (pid 4242) panicked in task `my::Task` at src/x.rs:3:5:
//! the message
//! ```
//!
//! `RUST_BACKTRACE` adds a backtrace as usual. A test suite whose tasks
//! panic on purpose can set `CONCUR_PROCS_QUIET_PANICS=1` in its
//! environment to keep these reports out of its output.
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
mod forkserver;
mod parent;
mod progress;
mod shm;
mod spawn;
mod sys;
mod wire;
mod worker;

pub use concur_core as core;
pub use concur_core::{
    register, Configure, ErrorKind, Executor, ExecutorExt, PoolConfig, SharedBytes, Task,
    TaskContext, TaskError, TaskHandle, WorkerExit,
};
pub use parent::builder::{
    ProcessPoolBuilder, DEFAULT_CRASH_WINDOW, DEFAULT_IN_FLIGHT_PER_WORKER, DEFAULT_MAX_CRASHES,
    DEFAULT_START_TIMEOUT, DEFAULT_UNRESPONSIVE_TIMEOUT,
};
pub use parent::pool::ProcessPool;
pub use shm::DEFAULT_SHM_THRESHOLD;
pub use spawn::SpawnMode;

/// Recommended first line of `main`, no longer required: starts the fork
/// server and raises the soft limit on open file descriptors, then returns.
///
/// Called while the program has a single thread, it forks the template
/// process that pools fork their workers from (see the crate docs, "The
/// fork server"); called later (other threads exist), it starts none, and
/// workers are exec'd. Either way it starts at most one per process.
///
/// It raises the soft limit (`RLIMIT_NOFILE`) to the hard limit, as Go's
/// runtime does at start: a pool holds descriptors for its workers'
/// channels and for shared memory in flight, and the usual soft default of
/// 1024 only exists for `select(2)`, which nothing here uses. Child
/// processes inherit the raised limit; a program that needs the old one can
/// lower it again after `init`. Workers raise their own limit.
///
/// A worker process never reaches `main`: it enters worker mode before
/// (see the crate docs). Only where that cannot happen (a C library other
/// than glibc) does `init` enter worker mode itself, in which case it never
/// returns in a worker. Calling it more than once is harmless.
pub fn init() {
    sys::raise_fd_limit();
    shm::install_allocator();
    if worker::is_worker() {
        worker::main();
    }
    forkserver::start();
}

/// True in a worker process (in its tasks and its initializer); false in the program that
/// owns the pool and in programs a task starts.
pub fn is_worker() -> bool {
    // Set when worker mode starts (before `main`), so it holds in tasks
    // after the marking environment variables have been cleared.
    worker::is_worker()
}

/// Kept for compatibility: does nothing. Test binaries no longer need any
/// set-up, since worker mode starts before the test harness would (see the
/// crate docs).
///
/// ```
/// concur_procs::enable_test_support!();
/// ```
#[macro_export]
macro_rules! enable_test_support {
    () => {};
}

#[doc(hidden)]
pub mod __private {
    /// Test support only: makes this process expect workers of another
    /// build (`identity` replaces the protocol version and build id it
    /// checks workers against), so a test can watch a mismatch be refused.
    /// Takes effect once per process.
    pub fn pretend_other_build(identity: &[u8]) {
        let _ = crate::spawn::PRETEND.set(identity.to_vec());
    }

    /// Test support only: the fork server's pid while pools use it (see
    /// `SpawnMode::Auto`), so a test can watch it or kill it.
    pub fn fork_server_pid() -> Option<u32> {
        crate::forkserver::pid()
    }
}
