//! The [`Executor`] contract every backend implements, and [`Capabilities`].

use serde::Serialize;

use crate::admission::{Admission, Permit};
use crate::error::TaskError;
use crate::handle::{BatchHandle, TaskHandle};
use crate::task::Task;

/// What a backend can do beyond the common contract. The conformance suite
/// skips (visibly) the cases a backend declares it cannot support.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Capabilities {
    /// Tasks run in the caller's memory: values are moved, never serialized.
    pub shared_memory: bool,
    /// A timed-out task is really stopped (its worker is killed).
    pub kills_on_timeout: bool,
    /// A running task can be stopped from outside by `cancel`.
    pub kills_on_cancel: bool,
    /// A task that aborts or segfaults fails alone; the pool survives.
    pub isolates_crashes: bool,
    /// Workers can be given a memory limit.
    pub memory_limit: bool,
    /// Large payloads are not copied through a socket (moved, or shared memory).
    pub zero_copy_payloads: bool,
    /// Function tasks (`submit_fn`, `map_fn`) run here. A backend whose
    /// workers take work from a shared broker refuses them at submit with
    /// a typed error: a function task names code by its address, which a
    /// worker must never take from anyone but its own parent.
    pub function_tasks: bool,
}

/// A pool of workers that runs [`Task`]s.
///
/// # Contract (checked for every backend by the conformance suite)
/// - **Delivery.** Every task accepted by `submit` (or `start`) ends in
///   exactly one result or one [`TaskError`], delivered through its handle:
///   never a hang, never a silent loss. Every wait inside a pool has a
///   bound or a documented reason (`join` and `shutdown` wait for the task
///   itself: bound them with a task timeout, `join_timeout` or
///   `shutdown_now`). With [`retries`](crate::Configure::retries), a task
///   whose worker died under it is run again, so tasks are at-least-once
///   (make them idempotent); a task that ended `retries + 1` workers is
///   quarantined and fails with `WorkerLost`. In a batch or `map`, only
///   the failing task fails. Every kill the pool decides itself (timeout,
///   cancel, `shutdown_now`, recycling) is reported as that cause, never as
///   a lost worker. If the pool gives up (restart limit), everything queued
///   or waiting fails with `PoolFailed` at once.
/// - **Panics.** A task that panics fails alone with
///   [`ErrorKind::Panicked`](crate::ErrorKind::Panicked) (message and
///   location kept); the pool keeps its size and keeps running other tasks.
/// - **Queue bound.** At most the configured queue bound of tasks are queued
///   or running; `submit` waits for room. `start` and `start_batch` accept
///   only a [`Permit`] of the pool's own [`admission`](Self::admission)
///   with room for what they start (checked with [`Admission::admits`]),
///   so nothing skips the bound.
/// - **Cancellation.** A cancelled queued task never runs; its handle
///   resolves to `Cancelled` at once.
/// - **Shutdown.** [`shutdown`](Self::shutdown) takes no new work, finishes
///   what is queued and running, then stops and joins every worker.
///   [`shutdown_now`](Self::shutdown_now) cancels what is queued and
///   running, then stops every worker. Dropping the pool is `shutdown`.
///   After either, `submit` fails with
///   [`ErrorKind::ShutDown`](crate::ErrorKind::ShutDown).
/// - **Workers.** The pool runs the configured number of workers; the
///   initializer runs once in each new worker before its first task; with a
///   task limit per worker, a worker that reached it is replaced.
///
/// Keep this trait minimal: conveniences live in [`ExecutorExt`](crate::ExecutorExt).
pub trait Executor: Send + Sync {
    /// The backend's name (`"threads"`, `"procs"`).
    fn backend(&self) -> &'static str;

    /// What this backend can do beyond the common contract.
    fn capabilities(&self) -> Capabilities;

    /// The number of workers.
    fn workers(&self) -> usize;

    /// The pool's queue bound; closed once the pool shuts down.
    fn admission(&self) -> &Admission;

    /// Starts `task`, which already holds room in the queue (`permit`,
    /// from this pool's [`admission`](Self::admission)). Most callers use
    /// [`submit`](Self::submit) instead. Implementations check the permit
    /// first with [`Admission::admits`].
    ///
    /// # Errors
    /// [`ErrorKind::Config`](crate::ErrorKind::Config) (field `permit`)
    /// for a permit of another queue;
    /// [`ErrorKind::ShutDown`](crate::ErrorKind::ShutDown) after shutdown;
    /// [`ErrorKind::NotRegistered`](crate::ErrorKind::NotRegistered) when a
    /// process backend does not know the task type.
    fn start<T: Task>(&self, task: T, permit: Permit) -> Result<TaskHandle<T>, TaskError>;

    /// Starts `tasks` as one unit; results come back together, in input
    /// order. A batch is one unit of dispatch: its tasks run one after
    /// another on one worker (the process backend may split a long batch
    /// into groups), so it suits many small tasks; to spread tasks that take
    /// a while over every worker, use `map` or several batches. Each task
    /// of a batch is still a task of its own: the per-task timeout bounds
    /// each one, a failure (panic, crash, timeout, a value that cannot be
    /// encoded or decoded) fails only that task's slot, and retries apply
    /// to each task. Tasks in a batch take no messages. `map` uses batches
    /// to amortize dispatch for small tasks. `permit` must hold room for
    /// every task of the batch.
    ///
    /// # Errors
    /// As [`start`](Self::start), and
    /// [`ErrorKind::Config`](crate::ErrorKind::Config) (field `permit`)
    /// when `permit` holds room for fewer tasks than `tasks`.
    fn start_batch<T: Task>(
        &self,
        tasks: Vec<T>,
        permit: Permit,
    ) -> Result<BatchHandle<T>, TaskError>;

    /// Finishes queued and running work, then stops and joins every worker.
    ///
    /// # Errors
    /// When a worker could not be stopped cleanly.
    fn shutdown(&self) -> Result<(), TaskError>;

    /// Cancels queued and running work, then stops every worker.
    fn shutdown_now(&self);

    /// Submits a task, waiting (blocking) for room in the queue.
    ///
    /// # Errors
    /// As [`start`](Self::start).
    fn submit<T: Task>(&self, task: T) -> Result<TaskHandle<T>, TaskError> {
        let permit = self.admission().acquire(1)?;
        self.start(task, permit)
    }

    /// Runs every task of `tasks` and waits for all of them: every output,
    /// in input order. The eager counterpart of
    /// [`map`](crate::ExecutorExt::map), for when every output is wanted
    /// at once (what `par_iter().map(..).collect()` gives in rayon).
    ///
    /// ```
    /// use concur_core::{Executor, Task, TaskContext, TaskError};
    /// use serde::{Deserialize, Serialize};
    ///
    /// #[derive(Serialize, Deserialize)]
    /// struct Square(u64);
    /// impl Task for Square {
    ///     type Output = u64;
    ///     type ToCaller = ();
    ///     type FromCaller = ();
    ///     const NAME: &'static str = "doc::Square";
    ///     fn run(self, _cx: &mut TaskContext<'_, Self>) -> u64 {
    ///         self.0 * self.0
    ///     }
    /// }
    ///
    /// fn squares(pool: &impl Executor) -> Result<Vec<u64>, TaskError> {
    ///     // `?` keeps the first failed task's error; the `MapAllError`
    ///     // itself holds every task's result.
    ///     Ok(pool.map_all((0..100).map(Square))?)
    /// }
    /// ```
    ///
    /// Each task is a task of its own, as in `map`: a failure fails only
    /// that task, the others still run, and their outputs are kept. The
    /// queue bound holds: at most the bound of its tasks are queued or
    /// running at once (the thread pool queues none: it holds room for the
    /// tasks running, one per worker, and the rest wait in the input). The
    /// call waits for the tasks themselves (bound them with a task timeout;
    /// `shutdown_now` cancels what has not started). Called from a task of
    /// a thread pool on that same pool, the calling task runs tasks too, so
    /// it never waits for the worker it occupies.
    /// Backends may do this faster than `map`: the thread pool writes each
    /// output straight into the vector it returns.
    ///
    /// # Errors
    /// [`MapAllError`](crate::MapAllError) when at least one task failed
    /// (including every task when the pool is shut down): it holds every
    /// task's own result, in input order, so nothing is lost.
    fn map_all<T, I>(&self, tasks: I) -> Result<Vec<T::Output>, crate::MapAllError<T::Output>>
    where
        T: Task,
        I: IntoIterator<Item = T>,
        Self: Sized,
    {
        crate::MapAllError::collect(crate::ExecutorExt::map(self, tasks))
    }
}
