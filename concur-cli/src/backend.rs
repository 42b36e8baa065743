//! The backends this binary was built with, and how code that is generic
//! over [`Executor`] is run on one chosen at run time.
//!
//! [`BackendName`] knows every backend concur has, compiled in or not, so
//! that asking for a missing one gets a precise message. [`Backend`] exists
//! only for backends compiled in; [`Backend::visit`] hands its pool type to
//! generic code.

use std::error::Error as StdError;
use std::fmt;

use concur_core::{Capabilities, Executor};
use serde::Serialize;

/// Every backend concur has, whether or not this binary contains it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendName {
    /// Threads in this process (`concur-threads`).
    Threads,
    /// Worker processes (`concur-procs`).
    Procs,
    /// Workers anywhere, through a Redis server (`concur-redis`).
    Redis,
}

impl BackendName {
    /// The name as written on the command line and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendName::Threads => "threads",
            BackendName::Procs => "procs",
            BackendName::Redis => "redis",
        }
    }

    /// The cargo feature that compiles this backend in.
    pub fn feature(self) -> &'static str {
        self.as_str()
    }
}

impl fmt::Display for BackendName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// A backend compiled into this binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Backend(BackendName);

/// A pool type and how to build it.
pub trait PoolKind {
    /// The backend's executor.
    type Pool: Executor;
    /// What the backend can do (no pool needed to know).
    const CAPABILITIES: Capabilities;
    /// Builds a pool of `workers` workers.
    ///
    /// # Errors
    /// When the backend cannot start its workers.
    fn build(workers: usize) -> Result<Self::Pool, Box<dyn StdError + Send + Sync>>;
}

/// Generic code to run with a backend's pool type (see [`Backend::visit`]).
pub trait Visit {
    /// What the code produces.
    type Output;
    /// Runs the code with pool kind `K`.
    fn visit<K: PoolKind>(self, backend: Backend) -> Self::Output;
}

/// The thread backend.
#[cfg(feature = "threads")]
pub struct Threads;

#[cfg(feature = "threads")]
impl PoolKind for Threads {
    type Pool = concur_threads::ThreadPool;
    const CAPABILITIES: Capabilities = concur_threads::ThreadPool::CAPABILITIES;
    fn build(workers: usize) -> Result<Self::Pool, Box<dyn StdError + Send + Sync>> {
        use concur_core::Configure;
        Ok(concur_threads::ThreadPool::builder()
            .workers(workers)
            .build()?)
    }
}

/// The worker-process backend.
#[cfg(feature = "procs")]
pub struct Procs;

#[cfg(feature = "procs")]
impl PoolKind for Procs {
    type Pool = concur_procs::ProcessPool;
    const CAPABILITIES: Capabilities = concur_procs::ProcessPool::CAPABILITIES;
    fn build(workers: usize) -> Result<Self::Pool, Box<dyn StdError + Send + Sync>> {
        use concur_core::Configure;
        Ok(concur_procs::ProcessPool::builder()
            .workers(workers)
            .build()?)
    }
}

/// The distributed backend: local workers (this binary re-run) on the
/// server of `--redis URL`, or on a server this process starts.
#[cfg(feature = "redis")]
pub struct Redis;

#[cfg(feature = "redis")]
impl PoolKind for Redis {
    type Pool = concur_redis::RedisPool;
    const CAPABILITIES: Capabilities = concur_redis::RedisPool::CAPABILITIES;
    fn build(workers: usize) -> Result<Self::Pool, Box<dyn StdError + Send + Sync>> {
        use concur_core::Configure;
        // A queue per pool: a bench's pools never share workers.
        let queue = format!("concur-cli-{}-{}", std::process::id(), next_queue());
        Ok(concur_redis::RedisPool::builder(&crate::redis::url()?)
            .queue(&queue)
            .workers(workers)
            .build()?)
    }
}

#[cfg(feature = "redis")]
fn next_queue() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

impl Backend {
    /// Every backend compiled in, in a fixed order.
    pub const ALL: &'static [Backend] = &[
        #[cfg(feature = "threads")]
        Backend(BackendName::Threads),
        #[cfg(feature = "procs")]
        Backend(BackendName::Procs),
        #[cfg(feature = "redis")]
        Backend(BackendName::Redis),
    ];

    /// The backend called `name`, if it is compiled in.
    pub fn compiled(name: BackendName) -> Option<Backend> {
        Self::ALL.iter().copied().find(|b| b.0 == name)
    }

    /// The backend's name.
    pub fn name(self) -> BackendName {
        self.0
    }

    /// The names of the backends compiled in, for messages.
    pub fn compiled_names() -> String {
        if Self::ALL.is_empty() {
            return "none".to_owned();
        }
        Self::ALL
            .iter()
            .map(|b| b.0.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Runs `v` with this backend's pool type.
    #[cfg_attr(
        not(any(feature = "threads", feature = "procs", feature = "redis")),
        allow(unused_variables)
    )]
    pub fn visit<V: Visit>(self, v: V) -> V::Output {
        match self.0 {
            #[cfg(feature = "threads")]
            BackendName::Threads => v.visit::<Threads>(self),
            #[cfg(feature = "procs")]
            BackendName::Procs => v.visit::<Procs>(self),
            #[cfg(feature = "redis")]
            BackendName::Redis => v.visit::<Redis>(self),
            #[allow(unreachable_patterns)]
            _ => unreachable!("a Backend exists only for backends compiled in"),
        }
    }

    /// What the backend can do, without starting any worker.
    pub fn capabilities(self) -> Capabilities {
        struct Ask;
        impl Visit for Ask {
            type Output = Capabilities;
            fn visit<K: PoolKind>(self, _: Backend) -> Capabilities {
                K::CAPABILITIES
            }
        }
        self.visit(Ask)
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Each capability with its short name, as `concur backends` prints them.
pub fn describe(caps: &Capabilities) -> [(&'static str, bool); 7] {
    [
        ("shared memory", caps.shared_memory),
        ("kill on timeout", caps.kills_on_timeout),
        ("kill on cancel", caps.kills_on_cancel),
        ("survive crashes", caps.isolates_crashes),
        ("memory limit", caps.memory_limit),
        ("zero-copy payloads", caps.zero_copy_payloads),
        ("function tasks", caps.function_tasks),
    ]
}
