//! The one error type of concur: [`TaskError`] with its matchable [`ErrorKind`].

use std::error::Error as StdError;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Why a task did not produce its output.
///
/// The kind is matchable ([`TaskError::kind`]); the underlying cause, when
/// there is one, is in [`std::error::Error::source`]. A `TaskError` crosses
/// process boundaries: its kind is serialized as it is, and its cause chain
/// as text, so on the other side `source()` (and each cause's own
/// `source()`) still gives the same messages, though no longer the original
/// error types.
///
/// It is one pointer wide, so `Result<T, TaskError>` stays small in the
/// result vectors of `map` and batches.
#[derive(Debug, Clone)]
pub struct TaskError(Box<Repr>);

impl std::fmt::Display for TaskError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0.kind, f)
    }
}

impl StdError for TaskError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.0
            .source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

#[derive(Debug, Clone)]
struct Repr {
    kind: ErrorKind,
    source: Option<Arc<dyn StdError + Send + Sync>>,
}

/// How a `TaskError` travels: its kind and the `Display` text of each cause
/// in its source chain, outermost first.
#[derive(Serialize)]
struct WireRef<'a> {
    kind: &'a ErrorKind,
    causes: Vec<String>,
}

#[derive(Deserialize)]
struct Wire {
    kind: ErrorKind,
    causes: Vec<String>,
}

/// At most this many causes are carried: a cyclic or absurdly long chain
/// must not make serializing an error loop or grow without bound.
const MAX_CAUSES: usize = 32;

impl Serialize for TaskError {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut causes = Vec::new();
        let mut next = self.source();
        while let Some(cause) = next {
            if causes.len() == MAX_CAUSES {
                break;
            }
            causes.push(cause.to_string());
            next = cause.source();
        }
        WireRef {
            kind: &self.0.kind,
            causes,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for TaskError {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let Wire { kind, causes } = Wire::deserialize(d)?;
        // Rebuilt innermost first, so each cause's source is the next one.
        let source = causes.into_iter().rev().fold(None, |inner, text| {
            Some(Arc::new(RemoteCause { text, inner }) as Arc<dyn StdError + Send + Sync>)
        });
        Ok(Self(Box::new(Repr { kind, source })))
    }
}

/// A cause that crossed a process boundary: its text, and the cause under it.
#[derive(Debug)]
struct RemoteCause {
    text: String,
    inner: Option<Arc<dyn StdError + Send + Sync>>,
}

impl std::fmt::Display for RemoteCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl StdError for RemoteCause {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.inner
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

/// What went wrong, with the detail that kind keeps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The task panicked; its message and source location are kept.
    #[error("task panicked{}: {message}", location.as_ref().map(|l| format!(" at {l}")).unwrap_or_default())]
    Panicked {
        /// The panic message (`"<non-string panic payload>"` when it was not a string).
        message: String,
        /// `file:line:column` of the panic, when known.
        location: Option<String>,
    },
    /// The worker running the task died (crash, abort, signal, memory limit).
    #[error("worker lost: {0}")]
    WorkerLost(WorkerExit),
    /// The task ran longer than the configured per-task timeout.
    #[error("task timed out after {after:?}")]
    TimedOut {
        /// The timeout that was exceeded.
        after: Duration,
    },
    /// The task was cancelled through its handle or by `shutdown_now`.
    #[error("task cancelled")]
    Cancelled,
    /// A value could not be encoded or decoded.
    #[error("could not encode or decode the {what}")]
    Codec {
        /// Which value: "task", "output", "message" and so on.
        what: String,
    },
    /// The task type is not registered for process workers.
    #[error(
        "task `{task}` is not registered for process workers (add `concur_core::register!` for it)"
    )]
    NotRegistered {
        /// The task's stable name.
        task: String,
    },
    /// The pool is shut down (or shutting down) and takes no more work.
    #[error("pool is shut down")]
    ShutDown,
    /// The pool has given up on a failing task or workers (restart limit hit).
    #[error("pool stopped taking work: {reason}")]
    PoolFailed {
        /// Why the pool stopped taking work.
        reason: String,
    },
    /// A worker could not be started.
    #[error("could not start a worker")]
    Spawn,
    /// A configuration value is invalid.
    #[error("invalid `{field}`: {reason}")]
    Config {
        /// The field that is wrong, as named by the builder method.
        field: String,
        /// What a valid value looks like.
        reason: String,
    },
    /// An operating-system I/O failure.
    #[error("i/o failure")]
    Io,
}

/// How a worker ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerExit {
    /// The worker exited with this exit code.
    #[error("exited with code {0}")]
    Code(i32),
    /// The worker was ended by this signal number (for example 6 for `SIGABRT`).
    #[error("killed by signal {0}")]
    Signal(i32),
    /// The worker exceeded its memory limit (it was then ended by signal or code).
    #[error("exceeded its memory limit")]
    MemoryLimit,
    /// The worker vanished in a way that could not be determined.
    #[error("ended for an unknown reason")]
    Unknown,
}

impl TaskError {
    /// An error of `kind` with no further cause.
    pub fn new(kind: ErrorKind) -> Self {
        Self(Box::new(Repr { kind, source: None }))
    }

    /// An error of `kind` caused by `source`.
    pub fn with_source(kind: ErrorKind, source: impl StdError + Send + Sync + 'static) -> Self {
        Self(Box::new(Repr {
            kind,
            source: Some(Arc::new(source)),
        }))
    }

    /// The matchable kind.
    pub fn kind(&self) -> &ErrorKind {
        &self.0.kind
    }

    /// Consumes the error and returns its kind.
    pub fn into_kind(self) -> ErrorKind {
        self.0.kind
    }

    /// A [`ErrorKind::Config`] error for `field`.
    pub fn config(field: &str, reason: &str) -> Self {
        Self::new(ErrorKind::Config {
            field: field.to_owned(),
            reason: reason.to_owned(),
        })
    }

    /// A [`ErrorKind::Codec`] error about `what`, caused by `source`.
    pub fn codec(what: &str, source: impl StdError + Send + Sync + 'static) -> Self {
        Self::with_source(
            ErrorKind::Codec {
                what: what.to_owned(),
            },
            source,
        )
    }

    /// A [`ErrorKind::Io`] error caused by `source`.
    pub fn io(source: std::io::Error) -> Self {
        Self::with_source(ErrorKind::Io, source)
    }

    /// True for [`ErrorKind::Cancelled`].
    pub fn is_cancelled(&self) -> bool {
        self.0.kind == ErrorKind::Cancelled
    }

    /// True for [`ErrorKind::TimedOut`].
    pub fn is_timeout(&self) -> bool {
        matches!(self.0.kind, ErrorKind::TimedOut { .. })
    }

    /// True for [`ErrorKind::ShutDown`].
    pub fn is_shut_down(&self) -> bool {
        self.0.kind == ErrorKind::ShutDown
    }
}

impl From<ErrorKind> for TaskError {
    fn from(kind: ErrorKind) -> Self {
        Self::new(kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_is_one_pointer_wide() {
        assert_eq!(
            std::mem::size_of::<TaskError>(),
            std::mem::size_of::<usize>()
        );
    }

    #[test]
    fn display_is_one_lowercase_clause() {
        let e = TaskError::new(ErrorKind::WorkerLost(WorkerExit::Signal(6)));
        assert_eq!(e.to_string(), "worker lost: killed by signal 6");
        let e = TaskError::config("workers", "must be at least 1");
        assert_eq!(e.to_string(), "invalid `workers`: must be at least 1");
    }

    #[derive(Debug, thiserror::Error)]
    #[error("outer cause")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn cause_chain_text_survives_serialization() {
        let e = TaskError::with_source(ErrorKind::Io, Outer(std::io::Error::other("inner cause")));
        let bytes = crate::codec::encode(&e, "error").unwrap();
        let back: TaskError = crate::codec::decode(&bytes, "error").unwrap();
        assert_eq!(back.kind(), &ErrorKind::Io);
        assert_eq!(back.to_string(), "i/o failure");
        let first = back.source().expect("first cause carried");
        assert_eq!(first.to_string(), "outer cause");
        assert_eq!(
            first.source().expect("second cause").to_string(),
            "inner cause"
        );
        assert!(first.source().unwrap().source().is_none());
        let plain: TaskError = crate::codec::decode(
            &crate::codec::encode(&TaskError::new(ErrorKind::Cancelled), "e").unwrap(),
            "e",
        )
        .unwrap();
        assert!(plain.source().is_none());
    }

    #[test]
    fn source_is_kept_and_not_in_message() {
        let io = std::io::Error::other("disk on fire");
        let e = TaskError::io(io);
        assert_eq!(e.to_string(), "i/o failure");
        assert_eq!(e.source().unwrap().to_string(), "disk on fire");
    }
}
