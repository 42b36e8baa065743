//! Handles: the caller's side of a submitted task ([`TaskHandle`],
//! [`BatchHandle`]) and the backend's side ([`Completion`]).
//!
//! Both sides share one cell (`cell`): the backend moves the task through
//! queued -> running -> done and pushes its messages (`mailbox`); the
//! caller waits (blocking or async), reads messages, sends messages and
//! cancels. Whoever finishes the cell first wins: a cancelled task's late
//! result is dropped. The cell is model-checked with loom (see
//! `crate::loom`).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::TaskError;
use crate::payload::Payload;

mod batch;
mod cell;
mod completion;
mod mailbox;
mod task;

#[cfg(all(test, loom))]
mod loom_tests;
#[cfg(all(test, not(loom)))]
mod tests;

pub use batch::{BatchHandle, BatchOutputs, BatchResults};
pub use completion::Completion;
pub use task::TaskHandle;

/// A task's id, unique in the process for the life of the program.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct TaskId(pub u64);

impl TaskId {
    /// A fresh id.
    pub fn next() -> Self {
        // A plain std atomic even under loom: ids are not part of any model.
        static NEXT: AtomicU64 = AtomicU64::new(1);
        TaskId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "task#{}", self.0)
    }
}

/// What a backend does for a handle beyond filling its cell. Backends whose
/// tasks run in this process need none (pass `None` to [`Completion::new`]).
pub trait Link: Send + Sync {
    /// Carries a message from the caller to task `id` (the message is still
    /// a value; a process backend encodes it).
    ///
    /// # Errors
    /// When the message cannot be encoded or sent.
    fn deliver(&self, id: TaskId, msg: Payload) -> Result<(), TaskError>;
    /// The caller cancelled task `id` while it was running.
    fn cancel_running(&self, id: TaskId);
    /// The caller dropped its handle to task `id` before the task was done:
    /// no more messages will come, so the task's `recv` must return `None`
    /// once it has read the ones already sent.
    fn caller_gone(&self, id: TaskId) {
        let _ = id;
    }
}
