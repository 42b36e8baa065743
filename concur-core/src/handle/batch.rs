//! [`BatchHandle`]: the caller's side of several tasks run as one unit.

use std::fmt;
use std::marker::PhantomData;
use std::task::{Context, Poll};
use std::time::Duration;

use super::cell::{deadline_after, Outcome, Shared};
use super::completion::Completion;
use crate::error::{ErrorKind, TaskError};
use crate::loom::Arc;
use crate::payload::Payload;
use crate::task::Task;

/// The caller's side of a batch of tasks submitted as one unit (see
/// [`Executor::start_batch`](crate::Executor::start_batch)): one result per
/// task, in input order.
pub struct BatchHandle<T: Task> {
    shared: Arc<Shared>,
    len: usize,
    _task: PhantomData<fn() -> T>,
}

impl<T: Task> fmt::Debug for BatchHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchHandle")
            .field("id", &self.shared.id)
            .field("len", &self.len)
            .finish()
    }
}

/// One result per task of a batch, in input order.
pub type BatchResults<T> = Vec<Result<<T as Task>::Output, TaskError>>;

/// A batch's results as a backend that moves values hands them over (the
/// payload it finishes a [`BatchHandle`]'s completion with). Dropped
/// unread, when nobody joins the batch, each output is dropped on its own
/// ([`crate::panic::drop_each`]): outputs whose `Drop` panics then cost one
/// caught panic, not the abort that dropping them as one `Vec` would be.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct BatchOutputs<O>(pub Vec<Result<O, TaskError>>);

impl<O> Drop for BatchOutputs<O> {
    fn drop(&mut self) {
        crate::panic::drop_each(std::mem::take(&mut self.0));
    }
}

impl<T: Task> BatchHandle<T> {
    /// The caller's side of `completion`, a batch of `len` tasks. The backend
    /// finishes it with a payload holding [`BatchOutputs`] of `T`'s output.
    pub fn new(completion: &Completion, len: usize) -> Self {
        Self {
            shared: completion.shared.clone(),
            len,
            _task: PhantomData,
        }
    }

    /// How many tasks the batch holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for an empty batch.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True once the batch is done (a `join` would not block).
    pub fn is_finished(&self) -> bool {
        self.shared.is_done()
    }

    /// Cancels the batch as a whole: tasks not yet started never run,
    /// running ones are stopped where the backend can (a process worker is
    /// killed) or told where it cannot (threads), and the batch resolves at
    /// once with `Cancelled` in **every** slot, including the slots of tasks
    /// that had already finished (their results are dropped: the batch has
    /// one outcome, like a single task). Returns false when the batch was
    /// already done. To keep finished results, submit the tasks one by one
    /// or use `map_unordered`.
    pub fn cancel(&self) -> bool {
        self.shared.cancel()
    }

    fn spread(&self, r: Result<Payload, TaskError>) -> BatchResults<T> {
        // Encoded results (process backends) hold each task's output on its
        // own, so one undecodable output fails only its task.
        let decoded = r.and_then(|mut p| {
            let regions = p.take_item_regions();
            if let Some(bytes) = p.as_encoded() {
                crate::batch::decode_batch_items_with::<T::Output>(bytes, regions)
            } else {
                p.into_value::<BatchOutputs<T::Output>>("batch output")
                    .map(|mut outputs| std::mem::take(&mut outputs.0))
            }
        });
        match decoded {
            Ok(v) if v.len() == self.len => v,
            Ok(v) => {
                let e = TaskError::codec(
                    "batch output",
                    std::io::Error::other(format!("{} results for {} tasks", v.len(), self.len)),
                );
                (0..self.len).map(|_| Err(e.clone())).collect()
            }
            Err(e) => (0..self.len).map(|_| Err(e.clone())).collect(),
        }
    }

    /// Waits for the batch; one result per task, in input order. A failure
    /// of the batch as a whole (worker lost, cancelled) is each task's error.
    pub fn join(self) -> BatchResults<T> {
        match self.shared.wait_result(None) {
            Outcome::Done(r) => self.spread(r),
            // Unreachable: a wait with no deadline ends only when done.
            Outcome::Pending => self.spread(Err(ErrorKind::Cancelled.into())),
        }
    }

    /// Waits at most `timeout` for the batch (see [`join`](Self::join));
    /// gives the handle back if it is not done. As with
    /// [`TaskHandle::join_timeout`](crate::TaskHandle::join_timeout), a
    /// result that arrives while the wait gives up is kept for the next wait.
    ///
    /// # Errors
    /// `Err(self)` when the batch is not done within `timeout`.
    pub fn join_timeout(self, timeout: Duration) -> Result<BatchResults<T>, Self> {
        match self.shared.wait_result(deadline_after(timeout)) {
            Outcome::Done(r) => Ok(self.spread(r)),
            Outcome::Pending => Err(self),
        }
    }

    /// Polls the batch (see [`join`](Self::join)).
    pub fn poll_join(&self, cx: &mut Context<'_>) -> Poll<BatchResults<T>> {
        self.shared.poll_result(cx).map(|r| self.spread(r))
    }
}
