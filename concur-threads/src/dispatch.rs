//! How work reaches the worker threads: one FIFO of [`Job`]s drained by at
//! most one loop per worker.
//!
//! Jobs go through our own queue rather than one rayon spawn each: a burst
//! of submissions wakes at most `workers` threads instead of paying rayon's
//! injection and wake-up for every task, and a task job is stored by value
//! (its cell, its input and a function pointer), so submitting a task costs
//! one allocation, its result cell.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use concur_core::{
    panic, timer, Completion, ErrorKind, Payload, Port, Task, TaskContext, TaskError, WorkerInfo,
};

use crate::generation::{lock, with_worker};
use crate::pool::Inner;

/// Runs one task or batch: the input payload holds the task (or the `Vec`
/// of tasks); the result goes into the completion.
type RunFn = fn(&Completion, Payload, WorkerInfo);

/// A unit of work for a drain loop.
pub(crate) enum Job {
    /// A task or a batch of `count` tasks.
    Task {
        completion: Completion,
        input: Payload,
        count: u64,
        run: RunFn,
    },
    /// A plain closure ([`ThreadPool::spawn_fn`](crate::ThreadPool::spawn_fn)).
    Plain(Box<dyn FnOnce() + Send>),
}

impl Job {
    /// A job that runs `task`.
    pub(crate) fn task<T: Task>(completion: Completion, task: T) -> Self {
        Job::Task {
            completion,
            input: Payload::value(task),
            count: 1,
            run: run_task::<T>,
        }
    }

    /// A job that runs `tasks` one after another.
    pub(crate) fn batch<T: Task>(completion: Completion, tasks: Vec<T>) -> Self {
        Job::Task {
            completion,
            count: tasks.len().max(1) as u64,
            input: Payload::value(tasks),
            run: run_batch_job::<T>,
        }
    }

    /// Drops the job, cancelling its task if it has one.
    pub(crate) fn cancel(self) {
        if let Job::Task { completion, .. } = self {
            completion.finish(Err(ErrorKind::Cancelled.into()));
        }
    }
}

fn run_task<T: Task>(c: &Completion, input: Payload, info: WorkerInfo) {
    let task: T = input.into_value("task").expect("a task job holds its task");
    let result = panic::catch(|| task.run(&mut TaskContext::new(c.port(), info)));
    c.finish(result.map(Payload::value));
}

/// What a task of a batch sees: no messages, and "cancelled" once its batch
/// is done (cancelled, timed out, pool stopped), so a long task can stop
/// (a dropped `map` cancels its batches).
struct BatchPort<'a>(&'a Completion);

impl Port for BatchPort<'_> {
    fn send(&self, _msg: Payload) -> Result<(), TaskError> {
        Ok(())
    }
    fn recv(&self, _deadline: Option<Instant>) -> Option<Payload> {
        None
    }
    fn is_cancelled(&self) -> bool {
        self.0.is_done()
    }
}

fn run_batch_job<T: Task>(c: &Completion, input: Payload, info: WorkerInfo) {
    let tasks: Vec<T> = input
        .into_value("task batch")
        .expect("a batch job holds its tasks");
    let port = BatchPort(c);
    let results: Vec<Result<T::Output, TaskError>> = tasks
        .into_iter()
        .map(|t| panic::catch(|| t.run(&mut TaskContext::new(&port, info))))
        .collect();
    c.finish(Ok(Payload::value(results)));
}

impl Inner {
    /// Queues `job` for the workers. Gives it back when the pool has stopped.
    pub(crate) fn push(self: &Arc<Self>, job: Job) -> Result<(), Job> {
        if self.has_stopped() {
            return Err(job);
        }
        lock(&self.queue).push_back(job);
        self.ensure_drainer();
        Ok(())
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
    /// worker has reached its task limit.
    fn drain(self: &Arc<Self>) {
        loop {
            if self.must_retire() {
                self.drainers.fetch_sub(1, Ordering::SeqCst);
                if !lock(&self.queue).is_empty() {
                    self.ensure_drainer();
                }
                return;
            }
            let job = lock(&self.queue).pop_front();
            match job {
                Some(job) => self.run(job),
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

    fn run(self: &Arc<Self>, job: Job) {
        let (completion, input, count, run) = match job {
            Job::Plain(f) => return f(),
            Job::Task {
                completion,
                input,
                count,
                run,
            } => (completion, input, count, run),
        };
        let (info, slot) = with_worker(|w| (w.info, w.running.clone()));
        // Publish the running task before checking for `shutdown_now`, which
        // sets its flag before it scans the slots: one of the two sees the other.
        *lock(&slot) = Some(completion.clone());
        if !self.stopping.load(Ordering::SeqCst) && completion.begin() {
            let deadline = self.shared.config.task_timeout_value().map(|t| {
                let c = completion.clone();
                let scaled = t * u32::try_from(count).unwrap_or(u32::MAX);
                timer::at(Instant::now() + scaled, move || {
                    c.finish(Err(ErrorKind::TimedOut { after: t }.into()));
                })
            });
            // A deadline that cannot be set (no timer thread) fails the task:
            // running it unbounded would break its timeout.
            match deadline.transpose() {
                Ok(deadline) => {
                    run(&completion, input, info);
                    if let Some(key) = deadline {
                        timer::cancel(key);
                    }
                }
                Err(e) => {
                    completion.finish(Err(e));
                }
            }
        } else {
            completion.finish(Err(ErrorKind::Cancelled.into()));
        }
        lock(&slot).take();
        self.count_runs(count);
    }

    /// True when this worker has run its task limit (its generation is
    /// being replaced) and must take no more jobs.
    fn must_retire(&self) -> bool {
        let Some(limit) = self.shared.config.max_tasks_per_worker_value() else {
            return false;
        };
        let (generation, runs) = with_worker(|w| (w.generation, w.runs));
        if runs >= limit && !self.stopping.load(Ordering::SeqCst) {
            self.rotate(generation);
            return true;
        }
        false
    }

    /// Counts `count` tasks run by this worker; retires its generation at the limit.
    fn count_runs(&self, count: u64) {
        let (generation, runs) = with_worker(|w| {
            w.runs += count;
            (w.generation, w.runs)
        });
        if self
            .shared
            .config
            .max_tasks_per_worker_value()
            .is_some_and(|l| runs >= l)
        {
            self.rotate(generation);
        }
    }
}
