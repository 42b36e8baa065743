//! [`Task`]: the unit of work, and [`TaskContext`]: what a running task can
//! see of its worker and its caller.

use std::marker::PhantomData;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::TaskError;
use crate::payload::Payload;

/// A value that can travel between caller and task: moved on threads,
/// encoded with the [codec](crate::codec) on processes.
///
/// Implemented for every `Serialize + DeserializeOwned + Send + 'static` type.
pub trait Message: Serialize + DeserializeOwned + Send + 'static {}

impl<T: Serialize + DeserializeOwned + Send + 'static> Message for T {}

/// A unit of work: a plain serializable value with a `run` method.
///
/// The same task type runs unchanged on every backend. On threads the value
/// is moved to a pool thread; on processes it is encoded, sent to a worker
/// process running the same executable and looked up there by [`Task::NAME`]
/// (see [`register!`](crate::register)).
///
/// A task that can fail in its own terms returns a `Result` as its
/// [`Output`](Task::Output): the handle then yields `Ok(Err(your_error))`,
/// keeping task failures apart from pool failures ([`TaskError`]).
///
/// ```
/// use concur_core::{Task, TaskContext};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct Square(u64);
///
/// impl Task for Square {
///     type Output = u64;
///     type ToCaller = ();
///     type FromCaller = ();
///     const NAME: &'static str = "doc::Square";
///     fn run(self, _cx: &mut TaskContext<'_, Self>) -> u64 {
///         self.0 * self.0
///     }
/// }
/// concur_core::register!(Square);
/// ```
pub trait Task: Message + Sized {
    /// What the task produces.
    type Output: Message;
    /// Messages the task sends to its caller while it runs (`()` for none).
    type ToCaller: Message;
    /// Messages the caller sends to the running task (`()` for none).
    type FromCaller: Message;
    /// A stable name, unique in the program: process workers find the task's
    /// code by it. Keep it the same across versions that must interoperate.
    const NAME: &'static str;

    /// Does the work. Panics are caught and become the task's
    /// [`ErrorKind::Panicked`](crate::ErrorKind::Panicked) error.
    fn run(self, cx: &mut TaskContext<'_, Self>) -> Self::Output;
}

/// Who is running a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct WorkerInfo {
    /// The worker's slot in the pool, `0..workers`. A replacement worker takes
    /// the slot of the one it replaces.
    pub index: usize,
    /// The process id the task runs in.
    pub pid: u32,
    /// Counts workers started by this pool, replacements included: two
    /// tasks saw the same worker exactly when they saw the same incarnation.
    pub incarnation: u64,
    /// The operating-system id of the thread that runs the worker's tasks
    /// (Linux `gettid`; 0 where unknown).
    pub thread: u64,
}

impl WorkerInfo {
    /// Describes the calling thread as worker `index`, `incarnation`.
    /// Backends call this once when a worker starts.
    pub fn current(index: usize, incarnation: u64) -> Self {
        Self {
            index,
            pid: std::process::id(),
            incarnation,
            thread: current_thread_os_id(),
        }
    }
}

/// The OS id of the calling thread, read from `/proc/thread-self` (0 elsewhere).
fn current_thread_os_id() -> u64 {
    std::fs::read_link("/proc/thread-self")
        .ok()
        .and_then(|p| p.file_name()?.to_str()?.parse().ok())
        .unwrap_or(0)
}

/// The backend side of a running task's link to its caller.
///
/// Backends implement this; tasks use it through [`TaskContext`].
pub trait Port {
    /// Sends a message to the caller. A message nobody will read (the
    /// caller dropped its handle, or the task runs in a `map` or a batch)
    /// is dropped, not an error: a task never depends on being heard.
    ///
    /// # Errors
    /// When the message cannot be encoded or carried (process backends).
    fn send(&self, msg: Payload) -> Result<(), TaskError>;
    /// Waits for the next message from the caller until `deadline`
    /// (`None`: as long as the task is not cancelled and the caller may still send).
    fn recv(&self, deadline: Option<Instant>) -> Option<Payload>;
    /// True once the caller has cancelled the task or the pool is stopping.
    fn is_cancelled(&self) -> bool;
}

/// A port that goes nowhere: for tasks whose handle takes no messages
/// (tasks run by `map` and batches, initializers).
#[derive(Debug, Default, Clone, Copy)]
pub struct NullPort;

impl Port for NullPort {
    fn send(&self, _msg: Payload) -> Result<(), TaskError> {
        Ok(())
    }
    fn recv(&self, _deadline: Option<Instant>) -> Option<Payload> {
        None
    }
    fn is_cancelled(&self) -> bool {
        false
    }
}

/// What a running task sees: its worker and a typed two-way channel to its caller.
pub struct TaskContext<'a, T: Task> {
    port: &'a dyn Port,
    worker: WorkerInfo,
    _task: PhantomData<fn(T)>,
}

impl<'a, T: Task> TaskContext<'a, T> {
    /// Builds a context over a backend's port. Backends call this.
    pub fn new(port: &'a dyn Port, worker: WorkerInfo) -> Self {
        Self {
            port,
            worker,
            _task: PhantomData,
        }
    }

    /// The worker running this task.
    pub fn worker(&self) -> WorkerInfo {
        self.worker
    }

    /// Sends a message to the caller, who reads it with
    /// [`TaskHandle::recv`](crate::TaskHandle::recv). Messages arrive in order.
    ///
    /// Sending never waits: messages queue, without a bound, on the
    /// caller's side until it reads them or drops the handle (then they are
    /// freed, and later ones are dropped as they come). A task that may send
    /// more than its caller keeps up with should pace itself, for instance
    /// by waiting for the caller's acknowledgement through
    /// [`recv`](Self::recv).
    ///
    /// # Errors
    /// [`ErrorKind::Codec`](crate::ErrorKind::Codec) when the message cannot be
    /// encoded (process backends).
    pub fn send(&self, msg: T::ToCaller) -> Result<(), TaskError> {
        self.port.send(Payload::value(msg))
    }

    /// Waits for the next message from the caller. `None` when the caller
    /// will send no more (handle dropped, task cancelled, task run by `map`).
    pub fn recv(&self) -> Option<T::FromCaller> {
        self.decode(self.port.recv(None))
    }

    /// As [`recv`](Self::recv), giving up after `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Option<T::FromCaller> {
        self.decode(self.port.recv(Some(Instant::now() + timeout)))
    }

    /// A message from the caller if one is already waiting.
    pub fn try_recv(&self) -> Option<T::FromCaller> {
        self.decode(self.port.recv(Some(Instant::now())))
    }

    /// True once the task's result is no longer wanted (cancelled, timed
    /// out, pool stopping): a long task should check this and return early
    /// (threads cannot be stopped from outside).
    pub fn is_cancelled(&self) -> bool {
        self.port.is_cancelled()
    }

    fn decode(&self, p: Option<Payload>) -> Option<T::FromCaller> {
        // A message that does not decode is a protocol bug; surface it loudly.
        p.map(|p| {
            p.into_value("message from caller")
                .unwrap_or_else(|e| panic!("{e}"))
        })
    }
}
