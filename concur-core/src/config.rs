//! Pool configuration shared by every backend: [`PoolConfig`] and the
//! [`Configure`] trait that gives every backend builder the same setters.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::error::TaskError;
use crate::panic;
use crate::payload::Payload;
use crate::task::{NullPort, Task, TaskContext, WorkerInfo};

/// A task run once in every new worker before it takes work (replacement
/// workers included). Built from any registered [`Task`] with `Output = ()`.
#[derive(Clone)]
pub struct Initializer {
    name: &'static str,
    run_here: Arc<dyn Fn(WorkerInfo) -> Result<(), TaskError> + Send + Sync>,
    encode: Arc<dyn Fn() -> Result<Vec<u8>, TaskError> + Send + Sync>,
}

impl Initializer {
    /// An initializer that runs a clone of `task` in each worker.
    pub fn new<T: Task<Output = ()> + Clone + Sync>(task: T) -> Self {
        let here = task.clone();
        Self {
            name: T::NAME,
            run_here: Arc::new(move |worker| {
                let t = here.clone();
                panic::catch(|| t.run(&mut TaskContext::new(&NullPort, worker)))
            }),
            encode: Arc::new(move || Payload::value(task.clone()).to_bytes()),
        }
    }

    /// The initializer task's name (for process workers to look it up).
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Runs the initializer in this thread, as `worker` (in-process backends).
    ///
    /// # Errors
    /// The initializer's panic.
    pub fn run_here(&self, worker: WorkerInfo) -> Result<(), TaskError> {
        (self.run_here)(worker)
    }

    /// The encoded initializer task (process backends send it to each worker).
    ///
    /// # Errors
    /// When the task cannot be encoded.
    pub fn encode(&self) -> Result<Vec<u8>, TaskError> {
        (self.encode)()
    }
}

impl fmt::Debug for Initializer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Initializer")
            .field("task", &self.name)
            .finish()
    }
}

/// The settings every pool understands. Build it with the [`Configure`]
/// setters, directly or through a backend's builder.
#[derive(Debug, Clone, Default)]
pub struct PoolConfig {
    workers: Option<usize>,
    queue_bound: Option<usize>,
    task_timeout: Option<Duration>,
    max_tasks_per_worker: Option<u64>,
    retries: Option<u32>,
    initializer: Option<Initializer>,
}

/// The default queue bound per worker.
pub const DEFAULT_QUEUE_PER_WORKER: usize = 1024;
/// The default number of retries for tasks whose worker died under them.
pub const DEFAULT_RETRIES: u32 = 1;
/// The most workers one pool takes: far beyond any core count concur runs
/// on, where blocking (I/O) workloads can still use the workers, and well
/// below the thousands of threads or processes a typo (`100000`) would
/// start. More is a config error, not a pool that never finishes starting.
pub const MAX_WORKERS: usize = 1024;
/// Durations at least this long (100 years) mean "never": a timeout of
/// `Duration::MAX` is no timeout, rather than a deadline the clock cannot
/// represent.
pub const NEVER: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

impl PoolConfig {
    /// All defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks every value.
    ///
    /// # Errors
    /// [`ErrorKind::Config`](crate::ErrorKind::Config) naming the first bad field.
    pub fn validate(&self) -> Result<(), TaskError> {
        if self.workers == Some(0) {
            return Err(TaskError::config("workers", "must be at least 1"));
        }
        if let Some(n) = self.workers.filter(|&n| n > MAX_WORKERS) {
            return Err(TaskError::config(
                "workers",
                &format!("must be at most {MAX_WORKERS}, not {n}"),
            ));
        }
        if self.queue_bound == Some(0) {
            return Err(TaskError::config("queue_bound", "must be at least 1"));
        }
        if self.task_timeout == Some(Duration::ZERO) {
            return Err(TaskError::config(
                "task_timeout",
                "must be longer than zero",
            ));
        }
        if self.max_tasks_per_worker == Some(0) {
            return Err(TaskError::config(
                "max_tasks_per_worker",
                "must be at least 1",
            ));
        }
        Ok(())
    }

    /// Worker count (default: the cores available to this process).
    pub fn worker_count(&self) -> usize {
        self.workers.unwrap_or_else(default_workers)
    }

    /// Most tasks queued or running at once (default: 1024 per worker).
    pub fn queue_bound_value(&self) -> usize {
        self.queue_bound
            .unwrap_or_else(|| DEFAULT_QUEUE_PER_WORKER.saturating_mul(self.worker_count()))
    }

    /// The per-task timeout, if any (one of [`NEVER`] or longer is none).
    pub fn task_timeout_value(&self) -> Option<Duration> {
        self.task_timeout.filter(|&t| t < NEVER)
    }

    /// Tasks a worker runs before it is replaced, if limited.
    pub fn max_tasks_per_worker_value(&self) -> Option<u64> {
        self.max_tasks_per_worker
    }

    /// Retries for a task whose worker died while it waited on that worker.
    pub fn retries_value(&self) -> u32 {
        self.retries.unwrap_or(DEFAULT_RETRIES)
    }

    /// The per-worker initializer, if any.
    pub fn initializer_value(&self) -> Option<&Initializer> {
        self.initializer.as_ref()
    }
}

/// The cores available to this process (1 when unknown).
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The setters every pool builder has. Implemented by [`PoolConfig`] and by
/// each backend's builder, so configuration code is the same for all.
pub trait Configure: Sized {
    /// The configuration being built.
    fn config_mut(&mut self) -> &mut PoolConfig;

    /// Number of workers (threads or processes). Default: available cores.
    fn workers(mut self, n: usize) -> Self {
        self.config_mut().workers = Some(n);
        self
    }

    /// Most tasks queued or running at once; `submit` waits for room beyond it.
    fn queue_bound(mut self, n: usize) -> Self {
        self.config_mut().queue_bound = Some(n);
        self
    }

    /// Per-task time limit. Processes kill the worker; threads fail the
    /// handle with `TimedOut` while the thread runs on (it cannot be killed).
    fn task_timeout(mut self, timeout: Duration) -> Self {
        self.config_mut().task_timeout = Some(timeout);
        self
    }

    /// Tasks a worker runs before it is replaced by a fresh one.
    fn max_tasks_per_worker(mut self, n: u64) -> Self {
        self.config_mut().max_tasks_per_worker = Some(n);
        self
    }

    /// Runs of a task again after its worker died while running it
    /// (default 1).
    ///
    /// A task whose worker dies under it (a crash, the OOM killer, an
    /// operator's `kill`) is run again on another worker up to `n` times,
    /// so with retries a task may run more than once: tasks are
    /// *at-least-once* and should be idempotent. A task that was running in
    /// `n + 1` worker deaths is quarantined: it fails with
    /// [`ErrorKind::WorkerLost`](crate::ErrorKind::WorkerLost), whose
    /// `source()` says how many workers it ended, and is never run again.
    /// Tasks that were only waiting on a worker that died never started:
    /// they are sent again whatever `n` is, and never count as a run.
    /// Backends whose workers cannot die alone (threads) ignore it.
    fn retries(mut self, n: u32) -> Self {
        self.config_mut().retries = Some(n);
        self
    }

    /// A task run once in every new worker before it takes work.
    fn initializer<T: Task<Output = ()> + Clone + Sync>(mut self, task: T) -> Self {
        self.config_mut().initializer = Some(Initializer::new(task));
        self
    }
}

impl Configure for PoolConfig {
    fn config_mut(&mut self) -> &mut PoolConfig {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let c = PoolConfig::new();
        c.validate().unwrap();
        assert_eq!(c.worker_count(), default_workers());
        assert_eq!(c.queue_bound_value(), 1024 * default_workers());
        assert_eq!(c.retries_value(), DEFAULT_RETRIES);
    }
}
