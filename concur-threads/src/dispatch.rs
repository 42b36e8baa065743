//! How work reaches the worker threads: one FIFO of [`Job`]s drained by at
//! most one loop per worker.
//!
//! Jobs go through our own queue rather than one rayon spawn each: a burst
//! of submissions wakes at most `workers` threads instead of paying rayon's
//! injection and wake-up for every task, and a task job is stored by value
//! (its cell, its input and a function pointer), so submitting a task costs
//! one allocation, its result cell.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use concur_core::timer::{self, TimerKey};
use concur_core::{
    panic, Completion, ErrorKind, Payload, Task, TaskContext, TaskError, WorkerInfo,
};

use crate::batch::{BatchRun, BatchWork};
use crate::generation::{lock, with_worker, Life};
use crate::pool::Inner;

/// The most jobs a drain loop takes from the queue at once. The jobs it
/// took wait for the one it runs: a long task holds up to `TAKE - 1`
/// others while the other workers run the rest of the queue. Measured
/// (100k no-op tasks, A/B in one process): 8 beat 1 in every pair.
const TAKE: usize = 8;

/// Runs one task: the input payload holds the task; the result goes into
/// the completion.
type RunFn = fn(&Completion, Payload, WorkerInfo);

/// A unit of work for a drain loop.
pub(crate) enum Job {
    /// One task.
    Task {
        completion: Completion,
        input: Payload,
        run: RunFn,
    },
    /// A batch, from its start or (after an item's timeout) where it is.
    Batch(Arc<dyn BatchWork>),
    /// A plain closure ([`ThreadPool::spawn_fn`](crate::ThreadPool::spawn_fn)).
    Plain(Box<dyn FnOnce() + Send>),
}

impl Job {
    /// A job that runs `task`.
    pub(crate) fn task<T: Task>(completion: Completion, task: T) -> Self {
        Job::Task {
            completion,
            input: Payload::value(task),
            run: run_task::<T>,
        }
    }

    /// A job that runs `tasks`, each under its own deadline when `timed`.
    pub(crate) fn batch<T: Task>(completion: Completion, tasks: Vec<T>, timed: bool) -> Self {
        Job::Batch(Arc::new(BatchRun::new(completion, tasks, timed)))
    }

    /// Drops the job, cancelling its task if it has one.
    pub(crate) fn cancel(self) {
        let cancelled = || Err(ErrorKind::Cancelled.into());
        match self {
            Job::Task { completion, .. } => {
                completion.finish(cancelled());
            }
            Job::Batch(batch) => batch.cancel(),
            Job::Plain(_) => {}
        }
    }
}

/// Calls `f` on the timer thread once `after` has passed, unless disarmed.
/// The crate's one use of `timer::at`, so a change to that function's
/// signature is made here only.
///
/// # Errors
/// [`ErrorKind::Spawn`] when the timer thread cannot be started.
pub(crate) fn arm(
    after: Duration,
    f: impl FnOnce() + Send + 'static,
) -> Result<TimerKey, TaskError> {
    timer::at(Instant::now() + after, f)
}

/// Drops a deadline that no longer matters.
pub(crate) fn disarm(key: TimerKey) {
    timer::cancel(key);
}

fn run_task<T: Task>(c: &Completion, input: Payload, info: WorkerInfo) {
    let task: T = input.into_value("task").expect("a task job holds its task");
    let result = panic::catch(|| task.run(&mut TaskContext::new(c.port(), info)));
    c.finish(result.map(Payload::value));
}

impl Inner {
    /// Queues `job` for the workers. Gives it back when the pool has
    /// stopped; the check is under the queue's lock, which the stopping
    /// side also holds while it sets the flag and empties the queue, so no
    /// job is left behind in a stopped pool's queue.
    pub(crate) fn push(self: &Arc<Self>, job: Job) -> Result<(), Job> {
        {
            let mut q = lock(&self.queue);
            if self.has_stopped() {
                return Err(job);
            }
            q.push_back(job);
        }
        self.ensure_drainer();
        Ok(())
    }

    /// Queues `job`, or cancels it when the pool has stopped (what is
    /// left of it fails `Cancelled`).
    pub(crate) fn push_or_cancel(self: &Arc<Self>, job: Job) {
        if let Err(job) = self.push(job) {
            job.cancel();
        }
    }

    /// Starts a drain loop if fewer than `workers` run.
    pub(crate) fn ensure_drainer(self: &Arc<Self>) {
        let mut n = self.drainers.load(Ordering::SeqCst);
        while n < self.shared.workers {
            match self
                .drainers
                .compare_exchange_weak(n, n + 1, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => {
                    let Some(generation) = self.current_generation() else {
                        self.drainers.fetch_sub(1, Ordering::SeqCst);
                        return;
                    };
                    let inner = self.clone();
                    generation.pool.spawn(move || inner.drain());
                    return;
                }
                Err(now) => n = now,
            }
        }
    }

    /// Runs queued jobs on this worker until the queue is empty or the
    /// worker has retired (reached its task limit).
    fn drain(self: &Arc<Self>) {
        let life = with_worker(|w| w.life.clone());
        // Jobs this loop took from the queue and has not run yet.
        let mut taken: VecDeque<Job> = VecDeque::new();
        loop {
            if with_worker(|w| w.retired) {
                // Its generation has been replaced: hand the queue over.
                self.give_back(&mut taken, &life);
                self.drainers.fetch_sub(1, Ordering::SeqCst);
                if !lock(&self.queue).is_empty() {
                    self.ensure_drainer();
                }
                return;
            }
            if taken.is_empty() {
                self.take_jobs(&mut taken, &life);
            }
            match taken.pop_front() {
                Some(job) => {
                    // A task's own panic is caught where it runs; this catches
                    // one from its cleanup (an output whose `Drop` panics,
                    // dropped here when its handle is gone), which would
                    // otherwise unwind into rayon and abort the process.
                    let ran =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.run(job)));
                    if ran.is_err() {
                        eprintln!("concur-threads: a panic in a task's cleanup (a value's Drop) was caught; the pool goes on");
                    }
                    life.busy.fetch_sub(1, Ordering::SeqCst);
                }
                None => {
                    self.drainers.fetch_sub(1, Ordering::SeqCst);
                    // A job pushed after our pop but before the decrement saw
                    // a full set of drainers: make sure someone runs it.
                    if lock(&self.queue).is_empty() {
                        return;
                    }
                    let n = self.drainers.fetch_add(1, Ordering::SeqCst);
                    if n >= self.shared.workers {
                        self.drainers.fetch_sub(1, Ordering::SeqCst);
                        return;
                    }
                }
            }
        }
    }

    /// Takes the next jobs from the queue into `taken` (which is empty):
    /// one, or, from a queue of at least four jobs per worker, a share of
    /// it up to [`TAKE`] tasks or closures (one lock for several jobs; a
    /// burst of short tasks otherwise takes the queue's lock, which the
    /// submitter also wants, once per task).
    fn take_jobs(&self, taken: &mut VecDeque<Job>, life: &Life) {
        // Counted busy under the queue's lock, so `shutdown_now`, which
        // empties the queue under it, sees every thread that took a job.
        let mut q = lock(&self.queue);
        let len = q.len();
        let workers = self.shared.workers;
        let n = if len >= 4 * workers {
            (len / (2 * workers)).clamp(1, TAKE)
        } else {
            len.min(1)
        };
        // A batch is taken alone: it already stands for many tasks, and one
        // held behind another would idle a worker that could run it.
        while taken.len() < n {
            let batch_next = matches!(q.front(), Some(Job::Batch(_)));
            if batch_next && !taken.is_empty() {
                break;
            }
            let Some(job) = q.pop_front() else { break };
            taken.push_back(job);
            if batch_next {
                break;
            }
        }
        life.busy.fetch_add(taken.len(), Ordering::SeqCst);
    }

    /// Puts the jobs a retiring worker took and did not run back at the
    /// head of the queue, in order (or cancels them if the pool stopped).
    fn give_back(&self, taken: &mut VecDeque<Job>, life: &Life) {
        if taken.is_empty() {
            return;
        }
        let n = taken.len();
        let refused = {
            let mut q = lock(&self.queue);
            if self.has_stopped() {
                std::mem::take(taken)
            } else {
                for job in taken.drain(..).rev() {
                    q.push_front(job);
                }
                VecDeque::new()
            }
        };
        refused.into_iter().for_each(Job::cancel);
        life.busy.fetch_sub(n, Ordering::SeqCst);
    }

    fn run(self: &Arc<Self>, job: Job) {
        match job {
            // A closure taken before `shutdown_now` emptied the queue is
            // dropped like the queued ones.
            Job::Plain(_) if self.stopping.load(Ordering::SeqCst) => {}
            Job::Plain(f) => f(),
            Job::Task {
                completion,
                input,
                run,
            } => self.run_published(&completion, |info| {
                if self.stopping.load(Ordering::SeqCst) || !completion.begin() {
                    completion.finish(Err(ErrorKind::Cancelled.into()));
                    return 1;
                }
                let deadline = self.shared.config.task_timeout_value().map(|after| {
                    let c = completion.clone();
                    arm(after, move || {
                        c.finish(Err(ErrorKind::TimedOut { after }.into()));
                    })
                });
                // A deadline that cannot be set (no timer thread) fails
                // the task: running it unbounded would break its timeout.
                match deadline.transpose() {
                    Ok(deadline) => {
                        run(&completion, input, info);
                        if let Some(key) = deadline {
                            disarm(key);
                        }
                    }
                    Err(e) => {
                        completion.finish(Err(e));
                    }
                }
                1
            }),
            Job::Batch(batch) => self.run_published(batch.completion(), |info| {
                if self.stopping.load(Ordering::SeqCst) || !batch.claim() {
                    batch.cancel();
                    return 0;
                }
                batch.clone().run_items(self, info)
            }),
        }
    }

    /// Runs `body` (which returns how many tasks it counts as run) with
    /// `completion` published in this worker's running slot. Published
    /// before `body` checks for `shutdown_now`, which sets its flag before
    /// it scans the slots: one of the two sees the other.
    fn run_published(&self, completion: &Completion, body: impl FnOnce(WorkerInfo) -> u64) {
        let (info, slot) = with_worker(|w| (w.info, w.running.clone()));
        *lock(&slot) = Some(completion.clone());
        let ran = body(info);
        lock(&slot).take();
        self.count_runs(ran);
    }

    /// Counts `count` tasks run by this worker. At the task limit the
    /// worker's generation is replaced and the worker retires; when no
    /// fresh generation can be started, the worker keeps going and tries
    /// again after another `limit` tasks (rather than retrying at once,
    /// which would spin while thread creation keeps failing).
    fn count_runs(&self, count: u64) {
        let Some(limit) = self.shared.config.max_tasks_per_worker_value() else {
            return;
        };
        let (generation, runs) = with_worker(|w| {
            w.runs += count;
            (w.generation, w.runs)
        });
        if runs < limit {
            return;
        }
        let retired = self.rotate(generation);
        with_worker(|w| {
            if retired {
                w.retired = true;
            } else {
                w.runs = 0;
            }
        });
    }
}
