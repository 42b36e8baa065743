//! [`ProcessPoolBuilder`]: the common settings (through [`Configure`]) plus
//! the ones only processes have.

use std::time::Duration;

use concur_core::{Configure, PoolConfig, TaskError, NEVER};

use super::pool::ProcessPool;
use crate::shm::DEFAULT_SHM_THRESHOLD;
use crate::spawn::SpawnMode;

/// The most tasks sent ahead to each worker when the depth is adaptive (the
/// default); four times this for tasks submitted alone that take under
/// 50 µs (a batch's small tasks travel in groups, each group counting as one).
pub const DEFAULT_IN_FLIGHT_PER_WORKER: usize = 16;
/// The default deadline for a worker to start.
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(10);
/// The default restart intensity: more than this many crashes ...
pub const DEFAULT_MAX_CRASHES: u32 = 16;
/// ... within this window make the pool fail.
pub const DEFAULT_CRASH_WINDOW: Duration = Duration::from_secs(10);
/// The default bound on a worker holding tasks without a sign of life
/// (see [`ProcessPoolBuilder::unresponsive_timeout`]).
pub const DEFAULT_UNRESPONSIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// The shortest `unresponsive_timeout`: five heartbeats of a worker, so a
/// busy worker is never mistaken for a stopped one.
const MIN_UNRESPONSIVE_TIMEOUT: Duration = crate::worker::BEAT_EVERY.saturating_mul(5);

/// Builds a [`ProcessPool`].
///
/// ```no_run
/// use std::time::Duration;
/// use concur_procs::{Configure, ProcessPoolBuilder};
///
/// let pool = ProcessPoolBuilder::new()
///     .workers(4)
///     .task_timeout(Duration::from_secs(30))
///     .memory_limit(512 << 20)
///     .build()?;
/// # Ok::<(), concur_procs::TaskError>(())
/// ```
#[derive(Debug, Clone)]
pub struct ProcessPoolBuilder {
    pub(crate) config: PoolConfig,
    pub(crate) memory_limit: Option<u64>,
    pub(crate) max_crashes: u32,
    pub(crate) crash_window: Duration,
    pub(crate) start_timeout: Duration,
    pub(crate) shm_threshold: usize,
    pub(crate) in_flight_per_worker: Option<usize>,
    pub(crate) spawn_mode: SpawnMode,
    pub(crate) unresponsive_timeout: Option<Duration>,
}

impl Default for ProcessPoolBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl Configure for ProcessPoolBuilder {
    fn config_mut(&mut self) -> &mut PoolConfig {
        &mut self.config
    }
}

impl ProcessPoolBuilder {
    /// All defaults.
    pub fn new() -> Self {
        Self::from_config(PoolConfig::new())
    }

    /// Starts from common settings built elsewhere.
    pub fn from_config(config: PoolConfig) -> Self {
        Self {
            config,
            memory_limit: None,
            max_crashes: DEFAULT_MAX_CRASHES,
            crash_window: DEFAULT_CRASH_WINDOW,
            start_timeout: DEFAULT_START_TIMEOUT,
            shm_threshold: DEFAULT_SHM_THRESHOLD,
            in_flight_per_worker: None,
            spawn_mode: SpawnMode::Auto,
            unresponsive_timeout: Some(DEFAULT_UNRESPONSIVE_TIMEOUT),
        }
    }

    /// Address space each worker may use beyond what it uses when it starts
    /// (`RLIMIT_AS`, so virtual memory: thread stacks and allocator arenas
    /// count). A task whose allocation fails under it ends its worker and
    /// fails with `WorkerLost(WorkerExit::MemoryLimit)`; the worker is
    /// replaced. The failure is recognised in the worker's abort handler by
    /// the `ENOMEM` the failed allocation left, which is why memory-limited
    /// workers print no backtrace on that abort (`RUST_BACKTRACE` is unset
    /// in them).
    pub fn memory_limit(mut self, bytes: u64) -> Self {
        self.memory_limit = Some(bytes);
        self
    }

    /// Restart intensity: when more than `max_crashes` worker failures
    /// happen within `window`, the pool stops respawning and fails further
    /// work with `PoolFailed` (work queued or waiting on a worker fails at
    /// once; nothing is left waiting). Default: 16 in 10 s.
    ///
    /// A failure is a worker death that failed a task (the task's retries
    /// were used up, or retries are off) or a worker that died or could not
    /// be started before it became ready. A death whose task is retried
    /// does not count, so an external kill storm never fails a pool whose
    /// tasks all succeed on retry; workers the pool ends itself (timeout,
    /// cancel, recycling, shutdown) never count.
    ///
    /// A limit that never runs out (`u32::MAX`) means "keep trying": while
    /// every start fails, queued tasks wait for a worker (a `task_timeout`
    /// counts from a task's start, so it does not bound this; a `shutdown`
    /// or the drop fails them with `PoolFailed`, and `shutdown_now` cancels
    /// them), and the slot is restarted at most ten times a second.
    pub fn restart_limit(mut self, max_crashes: u32, window: Duration) -> Self {
        self.max_crashes = max_crashes;
        self.crash_window = window.min(NEVER);
        self
    }

    /// How long a worker may take to start and run its initializer
    /// (default 10 s); past it, starting fails with `Spawn`.
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout.min(NEVER);
        self
    }

    /// Payloads (task inputs, outputs, messages) longer than this travel
    /// through shared memory instead of the socket (default 64 KiB).
    pub fn shm_threshold(mut self, bytes: usize) -> Self {
        self.shm_threshold = bytes;
        self
    }

    /// Tasks sent ahead to each worker, so that it never waits for the
    /// next one; 1 disables pipelining.
    ///
    /// Default: adaptive, up to [`DEFAULT_IN_FLIGHT_PER_WORKER`]. The full
    /// depth is used while a worker's tasks take under a millisecond on
    /// average (a group of a batch's small tasks counting as one), and up
    /// to four times as many tasks while they take under 50 µs; longer (or not yet measured) tasks are sent two at a time,
    /// so that they do not queue behind each other while another worker
    /// idles. Setting a value fixes the depth.
    pub fn in_flight_per_worker(mut self, n: usize) -> Self {
        self.in_flight_per_worker = Some(n);
        self
    }

    /// How workers are started (default [`SpawnMode::Auto`]).
    ///
    /// `Auto` forks them from the fork server that [`init`](crate::init)
    /// starts when it is called while the program has one thread (its
    /// first line in `main`): a fork of a small process instead of an exec
    /// of the whole executable, several times faster. A forked worker is a
    /// copy of the program as it was when `init` ran, plus the parent's
    /// environment and working directory of the moment it is started; it
    /// shares nothing with the parent's threads. Without such an `init`, or
    /// once the fork server has failed (it is then killed and never used
    /// again), workers are exec'd. `Exec` always execs: a worker then also
    /// gets the parent's resource limits and standard streams of the
    /// moment, not those of `init`'s time.
    pub fn spawn_mode(mut self, mode: SpawnMode) -> Self {
        self.spawn_mode = mode;
        self
    }

    /// How long a worker that holds tasks (running or sent to it) may show
    /// no sign of life before the pool kills it (default
    /// [`DEFAULT_UNRESPONSIVE_TIMEOUT`], 10 s; `None` turns the check off).
    ///
    /// A worker's heartbeat moves every 200 ms while it holds work, from a
    /// thread that runs no task code, so a task that computes for an hour
    /// keeps its worker alive; it stops when the whole process stops
    /// (`SIGSTOP`, a debugger, a cgroup freezer). Such a worker is killed
    /// (`SIGKILL`) and settled like a crash: the tasks it had not started
    /// go to other workers at no cost, and the task it was running spends
    /// one of its `retries`, or fails with
    /// `WorkerLost(WorkerExit::Signal(SIGKILL))` whose cause says that the
    /// worker stopped responding and was killed. The worker is replaced.
    /// Such a kill is not counted toward the [restart
    /// limit](Self::restart_limit): a worker stopped from outside says
    /// nothing about the tasks, and must not fail the pool by itself.
    ///
    /// Staleness is measured on the parent's own observations, and forgiven
    /// when the parent itself was stopped or starved (its check ran much
    /// later than planned), so `Ctrl-Z` of the whole program kills no
    /// worker on resume. Without a `task_timeout`, this is what bounds the
    /// wait for a frozen worker's tasks (and a graceful drop's).
    ///
    /// Shorter than 1 s (five heartbeats) is a configuration error; one of
    /// [`NEVER`] or longer is `None`.
    pub fn unresponsive_timeout(mut self, bound: impl Into<Option<Duration>>) -> Self {
        self.unresponsive_timeout = bound.into().filter(|&d| d < NEVER);
        self
    }

    /// Starts the workers and waits until each is ready.
    ///
    /// # Errors
    /// [`ErrorKind::Config`](concur_core::ErrorKind::Config) for an invalid
    /// setting; [`ErrorKind::Spawn`](concur_core::ErrorKind::Spawn) when a
    /// worker could not be started (its cause says why); the initializer's
    /// error when it failed in a worker.
    pub fn build(self) -> Result<ProcessPool, TaskError> {
        // Users of this crate write `concur_procs::register!`: the
        // not-registered message should name that, not core's path.
        concur_core::__private::set_register_advice(
            concur_core::__private::AdviceLayer::Backend,
            "add `concur_procs::register!` for it",
        );
        // A program that builds a pool must contain worker mode's entry.
        crate::worker::keep_linked();
        // Large `SharedBytes` of this program then live in shared memory.
        crate::shm::install_allocator();
        self.config.validate()?;
        if self.in_flight_per_worker == Some(0) {
            return Err(TaskError::config(
                "in_flight_per_worker",
                "must be at least 1",
            ));
        }
        if self.start_timeout.is_zero() {
            return Err(TaskError::config(
                "start_timeout",
                "must be longer than zero",
            ));
        }
        if self.crash_window.is_zero() {
            return Err(TaskError::config(
                "restart_limit",
                "the window must be longer than zero",
            ));
        }
        if self
            .unresponsive_timeout
            .is_some_and(|t| t < MIN_UNRESPONSIVE_TIMEOUT)
        {
            return Err(TaskError::config(
                "unresponsive_timeout",
                "must be at least 1 s (five heartbeats of a worker)",
            ));
        }
        if self.memory_limit == Some(0) {
            return Err(TaskError::config("memory_limit", "must be at least 1 byte"));
        }
        ProcessPool::start(self)
    }
}
