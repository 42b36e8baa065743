//! Batches run item by item, each item under its own deadline.
//!
//! A batch is one job and one result cell, but a per-task timeout bounds
//! each task, not the batch: an item over its timeout fails alone with
//! `TimedOut`. Its thread cannot be stopped, so the rest of the batch is
//! queued again and the next free worker carries on with it; the stuck
//! thread, once its task returns, takes items from the same batch too.
//! The cell is finished when every item has a result.

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use concur_core::{
    panic, BatchOutputs, Completion, ErrorKind, Payload, Port, Task, TaskContext, TaskError,
    WorkerInfo,
};

use crate::dispatch::{arm, disarm, Job};
use crate::generation::lock;
use crate::pool::Inner;

/// A batch as the drain loops see it, whatever its task type.
pub(crate) trait BatchWork: Send + Sync {
    /// The batch's result cell.
    fn completion(&self) -> &Completion;
    /// Claims the batch for running. True when its items may run: the
    /// first claim starts the cell, later ones (a continuation after a
    /// timeout) only check that it is not done.
    fn claim(&self) -> bool;
    /// Runs items until none is left; returns how many this worker ran.
    fn run_items(self: Arc<Self>, pool: &Arc<Inner>, worker: WorkerInfo) -> u64;
    /// The job will not run (the pool stops, or the work is already
    /// cancelled): fails what is left `Cancelled`.
    fn cancel(&self) {
        self.completion().finish(Err(ErrorKind::Cancelled.into()));
    }
}

/// A batch of `T` tasks and the results so far.
pub(crate) struct BatchRun<T: Task> {
    completion: Completion,
    state: Mutex<State<T>>,
}

struct State<T: Task> {
    started: bool,
    todo: std::iter::Enumerate<std::vec::IntoIter<T>>,
    results: Vec<Option<Result<T::Output, TaskError>>>,
    /// Items without a result yet.
    left: usize,
}

impl<T: Task> Drop for State<T> {
    /// Results of a batch that was cancelled with some settled: dropped
    /// one at a time, so outputs whose `Drop` panics cost one panic, not
    /// an abort (see `panic::drop_each`).
    fn drop(&mut self) {
        panic::drop_each(std::mem::take(&mut self.results));
    }
}

impl<T: Task> BatchRun<T> {
    /// A batch of `tasks` finishing `completion`. `timed` when the pool has
    /// a per-task timeout: only then can items settle out of order, so only
    /// then is there a slot per item.
    pub(crate) fn new(completion: Completion, tasks: Vec<T>, timed: bool) -> Self {
        let len = tasks.len();
        Self {
            completion,
            state: Mutex::new(State {
                started: false,
                todo: tasks.into_iter().enumerate(),
                results: if timed {
                    (0..len).map(|_| None).collect()
                } else {
                    Vec::new()
                },
                left: len,
            }),
        }
    }

    /// Runs every item on this thread with no per-item lock: without a
    /// timeout no other thread settles an item, so the results are
    /// gathered here and delivered at once. A cancel (or `shutdown_now`)
    /// finishes the cell; the items not yet started are then dropped.
    ///
    /// One `catch` spans a run of items rather than one per item: a panic
    /// ends the run at the item that panicked, which gets the error, and
    /// the next run starts with the item after it.
    fn run_untimed(&self, worker: WorkerInfo) -> u64 {
        let mut todo = std::mem::replace(
            &mut lock(&self.state).todo,
            Vec::new().into_iter().enumerate(),
        );
        // Gathered as `BatchOutputs` from the start: if the batch is
        // cancelled, its drop drops the outputs so far one at a time.
        let mut results = BatchOutputs(Vec::with_capacity(todo.len()));
        let port = QuietPort(|| self.item_cancelled(None));
        loop {
            let run = panic::catch(|| {
                for (_, task) in todo.by_ref() {
                    if self.completion.is_done() {
                        return false;
                    }
                    results
                        .0
                        .push(Ok(task.run(&mut TaskContext::new(&port, worker))));
                }
                true
            });
            match run {
                Ok(true) => break,
                // Cancelled: the outputs so far are nobody's.
                Ok(false) => return results.0.len() as u64,
                Err(panicked) => results.0.push(Err(panicked)),
            }
        }
        let ran = results.0.len() as u64;
        self.completion.finish(Ok(Payload::value(results)));
        ran
    }

    /// The next item to run, unless the batch is done (cancelled, or
    /// stopped by `shutdown_now`).
    fn next_item(&self) -> Option<(usize, T)> {
        if self.completion.is_done() {
            return None;
        }
        lock(&self.state).todo.next()
    }

    /// What a batch item's port says: cancelled once its result no longer
    /// matters: the batch is done (cancelled, or stopped by
    /// `shutdown_now`), or, for an item of a timed batch (`index`), that
    /// item already has its result (it timed out).
    fn item_cancelled(&self, index: Option<usize>) -> bool {
        self.completion.is_done()
            || index.is_some_and(|index| {
                lock(&self.state)
                    .results
                    .get(index)
                    .is_none_or(Option::is_some)
            })
    }

    fn has_todo(&self) -> bool {
        lock(&self.state).todo.len() > 0
    }

    /// Records item `index`'s result unless it has one (a late result after
    /// its timeout is dropped); finishes the cell with the last one.
    /// Returns false when the item already had a result.
    fn settle(&self, index: usize, result: Result<T::Output, TaskError>) -> bool {
        let mut g = lock(&self.state);
        // Once the batch is finished its results are gone: `get` is `None`.
        match g.results.get_mut(index) {
            Some(slot @ None) => *slot = Some(result),
            _ => return false,
        }
        g.left -= 1;
        if g.left == 0 {
            self.finish_locked(&mut g);
        }
        true
    }

    fn finish_locked(&self, g: &mut State<T>) {
        let results: Vec<Result<T::Output, TaskError>> = g
            .results
            .drain(..)
            .map(|r| r.expect("every item has a result"))
            .collect();
        self.completion
            .finish(Ok(Payload::value(BatchOutputs(results))));
    }

    /// Item `index` is over its timeout: it fails alone, and the items
    /// after it are queued again so a free worker runs them while this
    /// one's thread is still inside the task.
    fn timed_out(self: Arc<Self>, index: usize, after: Duration, pool: &Weak<Inner>) {
        if !self.settle(index, Err(ErrorKind::TimedOut { after }.into())) || !self.has_todo() {
            return;
        }
        if let Some(pool) = pool.upgrade() {
            pool.push_or_cancel(Job::Batch(self));
        }
    }
}

impl<T: Task> BatchWork for BatchRun<T> {
    fn completion(&self) -> &Completion {
        &self.completion
    }

    fn claim(&self) -> bool {
        let mut g = lock(&self.state);
        if std::mem::replace(&mut g.started, true) {
            return !self.completion.is_done();
        }
        if !self.completion.begin() {
            return false;
        }
        if g.left == 0 {
            // An empty batch: nothing will settle it.
            self.finish_locked(&mut g);
        }
        true
    }

    fn run_items(self: Arc<Self>, pool: &Arc<Inner>, worker: WorkerInfo) -> u64 {
        let Some(timeout) = pool.shared.config.task_timeout_value() else {
            return self.run_untimed(worker);
        };
        let mut ran = 0;
        while let Some((index, task)) = self.next_item() {
            ran += 1;
            let deadline = {
                let batch = self.clone();
                let pool = Arc::downgrade(pool);
                arm(timeout, move || batch.timed_out(index, timeout, &pool))
            };
            // A deadline that cannot be set (no timer thread) fails the item.
            let deadline = match deadline {
                Ok(deadline) => deadline,
                Err(e) => {
                    self.settle(index, Err(e));
                    continue;
                }
            };
            let port = QuietPort(|| self.item_cancelled(Some(index)));
            let result = panic::catch(|| task.run(&mut TaskContext::new(&port, worker)));
            disarm(deadline);
            self.settle(index, result);
        }
        ran
    }
}

/// What a task of a batch or of a `map_all` call sees: no messages
/// (neither carries any), and cancelled once `F` says so.
pub(crate) struct QuietPort<F>(pub(crate) F);

impl<F: Fn() -> bool> Port for QuietPort<F> {
    fn send(&self, _msg: Payload) -> Result<(), TaskError> {
        Ok(())
    }

    fn recv(&self, _deadline: Option<Instant>) -> Option<Payload> {
        None
    }

    fn is_cancelled(&self) -> bool {
        (self.0)()
    }
}
