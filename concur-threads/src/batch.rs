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
    panic, Completion, ErrorKind, Payload, Port, Task, TaskContext, TaskError, WorkerInfo,
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

impl<T: Task> BatchRun<T> {
    /// A batch of `tasks` finishing `completion`.
    pub(crate) fn new(completion: Completion, tasks: Vec<T>) -> Self {
        let len = tasks.len();
        Self {
            completion,
            state: Mutex::new(State {
                started: false,
                todo: tasks.into_iter().enumerate(),
                results: (0..len).map(|_| None).collect(),
                left: len,
            }),
        }
    }

    /// The next item to run, unless the batch is done (cancelled, or
    /// stopped by `shutdown_now`).
    fn next_item(&self) -> Option<(usize, T)> {
        if self.completion.is_done() {
            return None;
        }
        lock(&self.state).todo.next()
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
        self.completion.finish(Ok(Payload::value(results)));
    }

    /// Item `index` is over its timeout: it fails alone, and the items
    /// after it are queued again so a free worker runs them while this
    /// one's thread is still inside the task.
    fn timed_out(self: Arc<Self>, index: usize, after: Duration, pool: &Weak<Inner>) {
        if !self.settle(index, Err(ErrorKind::TimedOut { after }.into())) || !self.has_todo() {
            return;
        }
        if let Some(pool) = pool.upgrade() {
            if let Err(job) = pool.push(Job::Batch(self)) {
                job.cancel();
            }
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
        let timeout = pool.shared.config.task_timeout_value();
        let mut ran = 0;
        while let Some((index, task)) = self.next_item() {
            ran += 1;
            let deadline = timeout.map(|after| {
                let batch = self.clone();
                let pool = Arc::downgrade(pool);
                arm(after, move || batch.timed_out(index, after, &pool))
            });
            // A deadline that cannot be set (no timer thread) fails the item.
            let deadline = match deadline.transpose() {
                Ok(deadline) => deadline,
                Err(e) => {
                    self.settle(index, Err(e));
                    continue;
                }
            };
            let port = ItemPort {
                batch: &*self,
                index,
            };
            let result = panic::catch(|| task.run(&mut TaskContext::new(&port, worker)));
            if let Some(key) = deadline {
                disarm(key);
            }
            self.settle(index, result);
        }
        ran
    }
}

/// What a batch item sees: no messages (a batch handle carries none), and
/// cancelled once its own result no longer matters (it timed out, or the
/// batch was cancelled).
struct ItemPort<'a, T: Task> {
    batch: &'a BatchRun<T>,
    index: usize,
}

impl<T: Task> Port for ItemPort<'_, T> {
    fn send(&self, _msg: Payload) -> Result<(), TaskError> {
        Ok(())
    }

    fn recv(&self, _deadline: Option<Instant>) -> Option<Payload> {
        None
    }

    fn is_cancelled(&self) -> bool {
        self.batch.completion.is_done()
            || lock(&self.batch.state)
                .results
                .get(self.index)
                .is_none_or(Option::is_some)
    }
}
