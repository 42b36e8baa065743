//! [`Completion`]: the backend's side of a submitted task or batch.

use std::fmt;
use std::time::Instant;

use super::cell::Shared;
use super::{Link, TaskId};
use crate::admission::Permit;
use crate::error::TaskError;
use crate::loom::Arc;
use crate::payload::Payload;
use crate::task::Port;

/// The backend's side of a submitted task or batch.
#[derive(Clone)]
pub struct Completion {
    pub(super) shared: Arc<Shared>,
}

impl fmt::Debug for Completion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Completion")
            .field("id", &self.shared.id)
            .finish()
    }
}

impl Completion {
    /// A queued task holding `permit` until it is done.
    pub fn new(permit: Permit, link: Option<std::sync::Arc<dyn Link>>) -> Self {
        Self {
            shared: Arc::new(Shared::new(permit, link)),
        }
    }

    /// The task's id.
    pub fn id(&self) -> TaskId {
        self.shared.id
    }

    /// Marks the task running. False when it is already done (cancelled
    /// before it started): the backend must then not run it.
    pub fn begin(&self) -> bool {
        self.shared.begin()
    }

    /// Puts a running task back in the queued state (its worker died before
    /// it could finish and the backend will retry it). False when done.
    pub fn requeue(&self) -> bool {
        self.shared.requeue()
    }

    /// Delivers the task's result. Returns false (and drops `result`) when
    /// the task was already done, for example cancelled or timed out.
    pub fn finish(&self, result: Result<Payload, TaskError>) -> bool {
        self.shared.finish(result)
    }

    /// True once the task is done (finished, failed or cancelled).
    #[inline]
    pub fn is_done(&self) -> bool {
        self.shared.is_done()
    }

    /// True once the caller cancelled the task.
    pub fn is_cancelled(&self) -> bool {
        self.shared.is_cancelled()
    }

    /// Queues a message from the task for the caller. Dropped when the task
    /// is already done.
    pub fn push_message(&self, msg: Payload) {
        self.shared.push_up(msg);
    }

    /// Queues a message from the caller for the task (backends that carry
    /// caller messages themselves push them here on the task's side).
    pub fn push_down(&self, msg: Payload) {
        self.shared.push_down(msg);
    }

    /// Takes the next message from the caller, waiting until `deadline`.
    /// `None` once the task is done or cancelled or the caller dropped its handle.
    pub fn pop_down(&self, deadline: Option<Instant>) -> Option<Payload> {
        self.shared.pop_down(deadline)
    }

    /// A [`Port`] for a task running in this process: messages are moved.
    pub fn port(&self) -> &dyn Port {
        self
    }
}

impl Port for Completion {
    fn send(&self, msg: Payload) -> Result<(), TaskError> {
        self.push_message(msg);
        Ok(())
    }
    fn recv(&self, deadline: Option<Instant>) -> Option<Payload> {
        self.pop_down(deadline)
    }
    /// True once the task's result no longer matters: cancelled, timed out
    /// or otherwise finished by someone else.
    fn is_cancelled(&self) -> bool {
        self.is_done()
    }
}
