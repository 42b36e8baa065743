//! [`TaskHandle`]: the caller's side of one submitted task.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use super::cell::{deadline_after, Outcome, Shared};
use super::completion::Completion;
use super::TaskId;
use crate::error::{ErrorKind, TaskError};
use crate::loom::Arc;
use crate::payload::Payload;
use crate::task::{Message, Task};

/// The caller's side of one submitted task: join it (blocking), await it
/// (it is a `Future`), cancel it, and exchange messages with it.
///
/// Dropping a handle detaches the task: it still runs and its permit is
/// returned when it ends.
pub struct TaskHandle<T: Task> {
    shared: Arc<Shared>,
    _task: PhantomData<fn() -> T>,
}

impl<T: Task> fmt::Debug for TaskHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskHandle")
            .field("id", &self.shared.id)
            .field("task", &T::NAME)
            .finish()
    }
}

fn decode_output<O: Message>(r: Result<Payload, TaskError>) -> Result<O, TaskError> {
    r?.into_value("output")
}

fn decode_message<M: Message>(m: Payload) -> M {
    // The task side encoded exactly this type; a mismatch is a protocol bug.
    m.into_value("message from task")
        .unwrap_or_else(|e| panic!("{e}"))
}

impl<T: Task> TaskHandle<T> {
    /// The caller's side of `completion`.
    pub fn new(completion: &Completion) -> Self {
        Self {
            shared: completion.shared.clone(),
            _task: PhantomData,
        }
    }

    /// The task's id.
    pub fn id(&self) -> TaskId {
        self.shared.id
    }

    /// True once the task is done (a `join` would not block).
    pub fn is_finished(&self) -> bool {
        self.shared.is_done()
    }

    /// Waits for the task and returns its output.
    ///
    /// # Errors
    /// The [`TaskError`] that ended the task.
    pub fn join(self) -> Result<T::Output, TaskError> {
        match self.shared.wait_result(None) {
            Outcome::Done(r) => decode_output(r),
            // Unreachable: a wait with no deadline ends only when done.
            Outcome::Pending => Err(ErrorKind::Cancelled.into()),
        }
    }

    /// Waits at most `timeout`; gives the handle back if the task is not
    /// done. A result that arrives while the wait gives up stays in the
    /// handle for the next wait: it is never lost.
    ///
    /// # Errors
    /// `Err(self)` on timeout; the inner result is as [`join`](Self::join).
    #[allow(clippy::result_large_err)]
    pub fn join_timeout(self, timeout: Duration) -> Result<Result<T::Output, TaskError>, Self> {
        match self.shared.wait_result(deadline_after(timeout)) {
            Outcome::Done(r) => Ok(decode_output(r)),
            Outcome::Pending => Err(self),
        }
    }

    /// Cancels the task. A queued task never runs. A running one is stopped
    /// where the backend can (a process worker is killed and replaced) or
    /// told through [`TaskContext::is_cancelled`](crate::TaskContext::is_cancelled)
    /// where it cannot (threads). The handle resolves to
    /// [`ErrorKind::Cancelled`] at once. Returns false when the task was
    /// already done.
    pub fn cancel(&self) -> bool {
        self.shared.cancel()
    }

    /// Sends a message to the running task (it reads it with
    /// [`TaskContext::recv`](crate::TaskContext::recv)).
    ///
    /// # Errors
    /// [`ErrorKind::ShutDown`] when the task is already done (nobody will
    /// read the message); a codec or I/O error when a process backend
    /// cannot carry it.
    pub fn send(&self, msg: T::FromCaller) -> Result<(), TaskError> {
        if self.is_finished() {
            return Err(ErrorKind::ShutDown.into());
        }
        let msg = Payload::value(msg);
        match &self.shared.link {
            Some(link) => link.deliver(self.shared.id, msg),
            None => {
                self.shared.push_down(msg);
                Ok(())
            }
        }
    }

    /// The next message from the task, waiting for it. `None` once the task
    /// is done and every message it sent has been read.
    pub fn recv(&self) -> Option<T::ToCaller> {
        self.recv_until(None)
    }

    /// As [`recv`](Self::recv), waiting at most `timeout` (then `None`).
    pub fn recv_timeout(&self, timeout: Duration) -> Option<T::ToCaller> {
        self.recv_until(deadline_after(timeout))
    }

    /// A message from the task if one is waiting.
    pub fn try_recv(&self) -> Option<T::ToCaller> {
        self.recv_until(Some(Instant::now()))
    }

    fn recv_until(&self, deadline: Option<Instant>) -> Option<T::ToCaller> {
        self.shared.pop_up(deadline).map(decode_message)
    }

    /// The next message from the task, awaited. `None` once the task is done
    /// and every message has been read.
    pub fn next_message(&self) -> impl Future<Output = Option<T::ToCaller>> + '_ {
        std::future::poll_fn(move |cx| self.shared.poll_up(cx).map(|m| m.map(decode_message)))
    }
}

impl<T: Task> Drop for TaskHandle<T> {
    fn drop(&mut self) {
        if Arc::strong_count(&self.shared) == 1 {
            // The backend let go of the task: nobody is left to tell.
            return;
        }
        if self.shared.caller_left() {
            if let Some(link) = &self.shared.link {
                link.caller_gone(self.shared.id);
            }
        }
    }
}

impl<T: Task> Future for TaskHandle<T> {
    type Output = Result<T::Output, TaskError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.shared.poll_result(cx).map(decode_output)
    }
}
