//! Plain closures on the pool: no `Task` type, no serialization, any
//! `Send` value back. Only threads can offer this.

use std::sync::mpsc;
use std::time::Duration;

use concur_core::{panic, ErrorKind, Executor, TaskError};

use crate::dispatch::Job;
use crate::ThreadPool;

/// The caller's side of a closure run with [`ThreadPool::spawn_fn`].
#[derive(Debug)]
pub struct FnHandle<R> {
    rx: mpsc::Receiver<Result<R, TaskError>>,
}

impl<R> FnHandle<R> {
    /// Waits for the closure's value.
    ///
    /// # Errors
    /// [`ErrorKind::Panicked`] when the closure panicked;
    /// [`ErrorKind::ShutDown`] when the pool stopped before running it.
    pub fn join(self) -> Result<R, TaskError> {
        self.rx
            .recv()
            .unwrap_or_else(|_| Err(ErrorKind::ShutDown.into()))
    }

    /// As [`join`](Self::join), waiting at most `timeout`.
    ///
    /// # Errors
    /// As [`join`](Self::join); `Err(self)` on timeout.
    #[allow(clippy::result_large_err)]
    pub fn join_timeout(self, timeout: Duration) -> Result<Result<R, TaskError>, Self> {
        match self.rx.recv_timeout(timeout) {
            Ok(r) => Ok(r),
            Err(mpsc::RecvTimeoutError::Disconnected) => Ok(Err(ErrorKind::ShutDown.into())),
            Err(mpsc::RecvTimeoutError::Timeout) => Err(self),
        }
    }
}

impl ThreadPool {
    /// Runs a plain closure on a worker thread, counted against the queue
    /// bound like a task. Panics are caught and returned as
    /// [`ErrorKind::Panicked`].
    ///
    /// # Errors
    /// [`ErrorKind::ShutDown`] after shutdown.
    pub fn spawn_fn<F, R>(&self, f: F) -> Result<FnHandle<R>, TaskError>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let permit = self.admission().acquire(1)?;
        let (tx, rx) = mpsc::sync_channel(1);
        let job = Job::Plain(Box::new(move || {
            let r = panic::catch(f);
            drop(permit);
            let _ = tx.send(r);
        }));
        match self.inner().push(job) {
            Ok(()) => Ok(FnHandle { rx }),
            Err(_) => Err(ErrorKind::ShutDown.into()),
        }
    }
}
