//! concur's distributed backend: the same tasks run on worker processes on
//! any number of machines, through Redis Streams consumer groups. Depend on
//! it when one machine is not enough, or when workers must live elsewhere;
//! on one machine `concur-procs` is faster and kills on timeout.
//!
//! # Two sides
//!
//! - The **pool** ([`RedisPool`]) submits tasks to a queue and collects
//!   their results. It implements the [`Executor`] contract of every
//!   backend (submit, join or await, `map`, cancel, messages both ways,
//!   shutdown). By default it also starts `workers` **local** worker
//!   processes (this executable re-run: call [`init`] first in `main`).
//! - A **worker** ([`worker`], [`Worker::builder`]) is the same program
//!   (the same build) started anywhere with the broker's URL; any number
//!   join and leave at any time, and share the queue.
//!
//! ```no_run
//! use concur_redis::{Configure, Executor, ExecutorExt, RedisPool, Task, TaskContext};
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
//! concur_redis::register!(Square);
//!
//! fn main() -> Result<(), concur_redis::TaskError> {
//!     concur_redis::init(); // a local worker runs here and exits; returns at once otherwise
//!     if std::env::args().nth(1).as_deref() == Some("worker") {
//!         concur_redis::worker("redis://127.0.0.1:6379/0")?; // on any machine
//!         return Ok(());
//!     }
//!     let pool = RedisPool::builder("redis://127.0.0.1:6379/0").workers(2).build()?;
//!     assert_eq!(pool.submit(Square(7))?.join()?, 49);
//!     let squares: Vec<u64> = pool.map((0..100).map(Square)).collect::<Result<_, _>>()?;
//!     assert_eq!(squares[9], 81);
//!     Ok(())
//! }
//! ```
//!
//! # How it maps onto Redis
//!
//! A stream per queue (`concur:{queue}:tasks`) read by one consumer group
//! of workers. Submitting is an `XADD` (submissions queued together leave
//! as one pipeline; a batch of `map` is one entry). A worker reads with
//! `XREADGROUP`, runs the task by its registered name (the registry of
//! [`register!`]), and in one `MULTI` writes the result to the
//! submitter's result stream, `XACK`s and `XDEL`s the entry. Running tasks
//! renew their lease from a heartbeat; entries of dead workers are taken
//! over after the visibility timeout (`XAUTOCLAIM`; a pool's own local
//! workers hand theirs over at once); an entry delivered more often than
//! its retry limit allows goes to the dead-letter stream and its handle
//! fails with the quarantine error. `DISTRIBUTED.md` in the repository
//! has the design, the guarantees and measured figures.
//!
//! # Guarantees, and how they differ from one machine
//!
//! - **At-least-once.** A task whose worker died (or lost the broker for
//!   longer than the visibility timeout) is run again, up to
//!   [`retries`](Configure::retries) times, then quarantined
//!   ([`ErrorKind::WorkerLost`], `source()` says how many deliveries it
//!   took). The caller still gets exactly one outcome per handle: results
//!   carry the task id and later copies are dropped. Make tasks idempotent.
//! - **Durability is the server's.** With `appendonly yes` a server that
//!   is killed and restarted keeps every queued task and result; without
//!   it the tasks it lost fail with [`ErrorKind::Io`] when the pool sees
//!   the new server (never a hang, never a silent loss).
//! - **Broker unreachable.** Pool and workers reconnect with backoff for
//!   the reconnect timeout (default 30 s); past it, every handle still
//!   waiting fails with [`ErrorKind::Io`] (the tasks themselves may still
//!   run later: they were not cancelled).
//! - **Timeouts and cancel are cooperative.** The worker fails a timed-out
//!   task at once with `TimedOut` and a cancelled one is resolved at once,
//!   and the task is told through [`TaskContext::is_cancelled`]; the
//!   worker process is not killed (it runs other people's tasks too).
//! - **Same build.** Every task carries the submitter's build id
//!   ([`concur_core::build::build_id`]); a worker of another build fails
//!   it at once with [`ErrorKind::Config`] (`worker build`), so a mixed
//!   deployment is loud, not subtly wrong. Function tasks (`submit_fn`)
//!   carry a code address and are refused at submit and by workers.
//! - **Batches.** A batch (a `map` chunk) is one entry: a worker death
//!   retries the whole batch, and a quarantined batch fails every slot.
//!   Panics, timeouts and encoding failures still fail only their slot.
//!
//! # Trust
//!
//! Everything read from the broker (task entries by workers, results by
//! pools) is checked field by field and decoded with core's codec limits
//! (size and depth); a garbage entry fails the task it names with
//! [`ErrorKind::Codec`] or goes to the dead-letter stream, and the worker
//! and the pool go on. Anyone who can write to the broker can submit tasks
//! of registered types to the workers: protect it with a password (in the
//! URL: `redis://:password@host/0`) and TLS (`rediss://`, feature `tls`).
//!
//! # Features and requirements
//!
//! - `tls`: `rediss://` URLs, through the `redis` crate's rustls support
//!   (the `ring` provider; the server's certificate is checked against the
//!   system's roots, or the file `SSL_CERT_FILE` names).
//!
//! Linux (local workers use the parent-death signal). The tests start
//! their own `redis-server` (Debian package `redis-server`).

#![cfg(target_os = "linux")]

mod builder;
mod conn;
mod env;
mod error;
mod ids;
mod keys;
mod local;
mod pool;
pub mod server;
mod wire;
mod worker;

pub use builder::{RedisPoolBuilder, DEFAULT_START_TIMEOUT};
pub use concur_core as core;
pub use concur_core::{
    register, Configure, ErrorKind, Executor, ExecutorExt, PoolConfig, Task, TaskContext,
    TaskError, TaskHandle, WorkerExit,
};
pub use keys::{Keys, GROUP};
pub use local::{DEFAULT_CRASH_WINDOW, DEFAULT_MAX_CRASHES};
pub use pool::RedisPool;
pub use worker::{
    worker, Stop, Worker, WorkerBuilder, DEFAULT_QUEUE, DEFAULT_RECONNECT_TIMEOUT,
    DEFAULT_VISIBILITY_TIMEOUT,
};

/// Enters worker mode when a [`RedisPool`] started this process as one of
/// its local workers; returns at once otherwise. Call it first thing in
/// `main` (test binaries: in the test that
/// [`RedisPoolBuilder::worker_command`] names).
///
/// In a local worker it runs the worker until the pool stops it, then
/// ends the process: it never returns there. The worker also ends when the
/// pool's process dies (parent-death signal).
pub fn init() {
    let Some(worker) = env::worker_from_env() else {
        if env::is_worker() {
            eprintln!("concur-redis: incomplete local worker environment");
            std::process::exit(2);
        }
        return;
    };
    if let Some(local) = &worker.local {
        die_with_parent(local.parent);
    }
    let outcome = worker.run();
    if let Err(e) = &outcome {
        eprintln!("concur-redis worker: {}", conn::error_chain(e));
    }
    std::process::exit(local::exit_code(&outcome));
}

/// True in a process a [`RedisPool`] started as a local worker.
pub fn is_worker() -> bool {
    env::is_worker()
}

/// Asks for SIGKILL when the parent dies, then checks it did not die first.
fn die_with_parent(parent: u32) {
    // SAFETY: prctl(PR_SET_PDEATHSIG) and getppid take and return integers only.
    let ppid = unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        );
        libc::getppid()
    };
    if ppid as u32 != parent {
        std::process::exit(0);
    }
}
