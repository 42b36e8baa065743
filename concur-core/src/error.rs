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
///
/// `Debug` (`{:?}`) reads as words: the message, then each cause on a
/// `Caused by:` line, so `fn main() -> Result<(), TaskError>` prints what
/// went wrong and why. `{:#?}` shows the structure (kind and source).
#[derive(Clone)]
pub struct TaskError(Box<Repr>);

impl std::fmt::Debug for TaskError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if f.alternate() {
            return f
                .debug_struct("TaskError")
                .field("kind", &self.0.kind)
                .field("source", &self.0.source)
                .finish();
        }
        std::fmt::Display::fmt(self, f)?;
        let causes = chain(self.source());
        match causes.as_slice() {
            [] => Ok(()),
            [only] => {
                f.write_str("\n\nCaused by:\n")?;
                write_indented(f, "    ", &only.to_string())
            }
            many => {
                f.write_str("\n\nCaused by:")?;
                for (i, cause) in many.iter().enumerate() {
                    f.write_str("\n")?;
                    write_indented(f, &format!("{i:>5}: "), &cause.to_string())?;
                }
                Ok(())
            }
        }
    }
}

/// The causes from `first` down, at most [`MAX_CAUSES`] of them (a cyclic
/// chain must not loop).
fn chain<'a>(first: Option<&'a (dyn StdError + 'static)>) -> Vec<&'a (dyn StdError + 'static)> {
    std::iter::successors(first, |&e| e.source())
        .take(MAX_CAUSES)
        .collect()
}

/// Writes `text` after `lead`, its later lines indented to line up under
/// the first, so a multi-line cause stays inside its `Caused by:` entry.
fn write_indented(f: &mut std::fmt::Formatter<'_>, lead: &str, text: &str) -> std::fmt::Result {
    let pad = " ".repeat(lead.len());
    f.write_str(lead)?;
    for (i, line) in text.lines().enumerate() {
        if i > 0 {
            f.write_str("\n")?;
            if !line.is_empty() {
                f.write_str(&pad)?;
            }
        }
        f.write_str(line)?;
    }
    Ok(())
}

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

#[derive(Clone)]
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
        let causes = chain(self.source())
            .into_iter()
            .map(|c| c.to_string())
            .collect();
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
    /// The task type is not registered for process workers. The message
    /// says how to register it, naming the `register!` of the crate the
    /// program built its pool with (`concur_procs::register!`, ...).
    #[error(
        "task `{task}` is not registered for process workers ({})",
        register_advice()
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

/// Which layer of concur names the way to register a task (see
/// [`set_register_advice`]): an outer layer's advice wins over an inner
/// one's.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AdviceLayer {
    /// A backend crate (`concur-procs`, ...), used on its own.
    Backend,
    /// The facade (`concur`), which builds backend pools underneath.
    Facade,
}

/// The advice in the [`ErrorKind::NotRegistered`] message until a pool is
/// built: the macro every other path re-exports.
const DEFAULT_REGISTER_ADVICE: &str = "add `concur_core::register!` for it";

static REGISTER_ADVICE: std::sync::Mutex<Option<(AdviceLayer, &'static str)>> =
    std::sync::Mutex::new(None);

/// Sets how the [`ErrorKind::NotRegistered`] message tells the user to
/// register a task: the text inside its parentheses, a clause such as
/// ``"add `concur_procs::register!` for it"``. Users reach concur through
/// the facade or a backend crate and should be told the path they use, not
/// core's.
///
/// A backend's pool builder calls it with [`AdviceLayer::Backend`] and its
/// own macro; the facade's builder calls it with [`AdviceLayer::Facade`]
/// (for example ``"add `#[concur::task]` to its type or `concur::register!`
/// for it"``), before or after the backend's, and wins either way. Within a
/// layer the first call wins, so a program that builds pools of two backend
/// crates keeps the first one's advice (both macros work). The setting is
/// process-wide and read each time the message is shown. Not part of the
/// public API: for concur's own crates.
#[doc(hidden)]
pub fn set_register_advice(layer: AdviceLayer, advice: &'static str) {
    let mut current = REGISTER_ADVICE.lock().unwrap_or_else(|e| e.into_inner());
    if current.is_none_or(|(set_by, _)| layer > set_by) {
        *current = Some((layer, advice));
    }
}

fn register_advice() -> &'static str {
    REGISTER_ADVICE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .map_or(DEFAULT_REGISTER_ADVICE, |(_, advice)| advice)
}

/// How a worker ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerExit {
    /// The worker exited with this exit code.
    #[error("exited with code {0}")]
    Code(i32),
    /// The worker was ended by this signal number (for example 6 for
    /// `SIGABRT`). Shown with its name where it is known:
    /// `killed by SIGABRT (signal 6)`.
    #[error("killed by {}", SignalText(*.0))]
    Signal(i32),
    /// The worker exceeded its memory limit (it was then ended by signal or code).
    #[error("exceeded its memory limit")]
    MemoryLimit,
    /// The worker vanished in a way that could not be determined.
    #[error("ended for an unknown reason")]
    Unknown,
}

impl WorkerExit {
    /// The name of the signal that ended the worker (`"SIGABRT"`), when it
    /// was ended by a signal this platform numbers in a known way.
    pub fn signal_name(&self) -> Option<&'static str> {
        match *self {
            WorkerExit::Signal(n) => signal_name(n),
            _ => None,
        }
    }
}

/// `SIGABRT (signal 6)`, or `signal 40` for a number without a known name.
struct SignalText(i32);

impl std::fmt::Display for SignalText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match signal_name(self.0) {
            Some(name) => write!(f, "{name} (signal {})", self.0),
            None => write!(f, "signal {}", self.0),
        }
    }
}

/// The name of signal number `n` on this platform. Core has no libc, so
/// the numbers are spelled out: POSIX fixes only the classic ones, the rest
/// follow the kernel's numbering (Linux's generic table; the BSD table on
/// Apple and the BSDs). Architectures with their own tables (MIPS, SPARC)
/// get the POSIX ones only.
fn signal_name(n: i32) -> Option<&'static str> {
    let posix = match n {
        1 => Some("SIGHUP"),
        2 => Some("SIGINT"),
        3 => Some("SIGQUIT"),
        4 => Some("SIGILL"),
        5 => Some("SIGTRAP"),
        6 => Some("SIGABRT"),
        8 => Some("SIGFPE"),
        9 => Some("SIGKILL"),
        11 => Some("SIGSEGV"),
        13 => Some("SIGPIPE"),
        14 => Some("SIGALRM"),
        15 => Some("SIGTERM"),
        _ => None,
    };
    posix.or_else(|| platform_signal_name(n))
}

#[cfg(all(
    any(target_os = "linux", target_os = "android"),
    not(any(
        target_arch = "mips",
        target_arch = "mips64",
        target_arch = "sparc",
        target_arch = "sparc64"
    ))
))]
fn platform_signal_name(n: i32) -> Option<&'static str> {
    Some(match n {
        7 => "SIGBUS",
        10 => "SIGUSR1",
        12 => "SIGUSR2",
        16 => "SIGSTKFLT",
        17 => "SIGCHLD",
        18 => "SIGCONT",
        19 => "SIGSTOP",
        20 => "SIGTSTP",
        21 => "SIGTTIN",
        22 => "SIGTTOU",
        23 => "SIGURG",
        24 => "SIGXCPU",
        25 => "SIGXFSZ",
        26 => "SIGVTALRM",
        27 => "SIGPROF",
        28 => "SIGWINCH",
        29 => "SIGIO",
        30 => "SIGPWR",
        31 => "SIGSYS",
        _ => return None,
    })
}

#[cfg(any(
    target_vendor = "apple",
    target_os = "freebsd",
    target_os = "netbsd",
    target_os = "openbsd",
    target_os = "dragonfly"
))]
fn platform_signal_name(n: i32) -> Option<&'static str> {
    Some(match n {
        7 => "SIGEMT",
        10 => "SIGBUS",
        12 => "SIGSYS",
        16 => "SIGURG",
        17 => "SIGSTOP",
        18 => "SIGTSTP",
        19 => "SIGCONT",
        20 => "SIGCHLD",
        21 => "SIGTTIN",
        22 => "SIGTTOU",
        23 => "SIGIO",
        24 => "SIGXCPU",
        25 => "SIGXFSZ",
        26 => "SIGVTALRM",
        27 => "SIGPROF",
        28 => "SIGWINCH",
        29 => "SIGINFO",
        30 => "SIGUSR1",
        31 => "SIGUSR2",
        _ => return None,
    })
}

#[cfg(not(any(
    all(
        any(target_os = "linux", target_os = "android"),
        not(any(
            target_arch = "mips",
            target_arch = "mips64",
            target_arch = "sparc",
            target_arch = "sparc64"
        ))
    ),
    target_vendor = "apple",
    target_os = "freebsd",
    target_os = "netbsd",
    target_os = "openbsd",
    target_os = "dragonfly"
)))]
fn platform_signal_name(_: i32) -> Option<&'static str> {
    None
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
        assert_eq!(e.to_string(), "worker lost: killed by SIGABRT (signal 6)");
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
    fn signals_are_named_with_their_number() {
        let text = |n| WorkerExit::Signal(n).to_string();
        assert_eq!(text(6), "killed by SIGABRT (signal 6)");
        assert_eq!(text(9), "killed by SIGKILL (signal 9)");
        assert_eq!(text(11), "killed by SIGSEGV (signal 11)");
        assert_eq!(text(15), "killed by SIGTERM (signal 15)");
        assert_eq!(text(8), "killed by SIGFPE (signal 8)");
        // A number with no name (a real-time signal) keeps the plain form.
        assert_eq!(text(40), "killed by signal 40");
        assert_eq!(WorkerExit::Signal(2).signal_name(), Some("SIGINT"));
        assert_eq!(WorkerExit::Code(6).signal_name(), None);
        assert_eq!(WorkerExit::Code(3).to_string(), "exited with code 3");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn linux_numbers_name_linux_signals() {
        assert_eq!(
            WorkerExit::Signal(7).to_string(),
            "killed by SIGBUS (signal 7)"
        );
        assert_eq!(WorkerExit::Signal(10).signal_name(), Some("SIGUSR1"));
        assert_eq!(WorkerExit::Signal(24).signal_name(), Some("SIGXCPU"));
    }

    #[test]
    fn debug_without_causes_is_the_message() {
        let e = TaskError::new(ErrorKind::WorkerLost(WorkerExit::Signal(9)));
        assert_eq!(
            format!("{e:?}"),
            "worker lost: killed by SIGKILL (signal 9)"
        );
    }

    #[test]
    fn debug_shows_one_cause_in_words() {
        let e = TaskError::io(std::io::Error::other("disk on fire"));
        assert_eq!(
            format!("{e:?}"),
            "i/o failure\n\nCaused by:\n    disk on fire"
        );
    }

    #[test]
    fn debug_numbers_a_chain_and_indents_long_causes() {
        let e = TaskError::with_source(
            ErrorKind::Spawn,
            Outer(std::io::Error::other("first line\nsecond line")),
        );
        assert_eq!(
            format!("{e:?}"),
            "could not start a worker\n\nCaused by:\n    0: outer cause\n    1: first line\n       second line"
        );
    }

    #[test]
    fn debug_of_a_deserialized_error_keeps_its_chain() {
        let e = TaskError::with_source(ErrorKind::Io, Outer(std::io::Error::other("inner cause")));
        let back: TaskError =
            crate::codec::decode(&crate::codec::encode(&e, "error").unwrap(), "error").unwrap();
        assert_eq!(format!("{back:?}"), format!("{e:?}"));
        assert!(!format!("{back:?}").contains("RemoteCause"));
    }

    #[test]
    fn alternate_debug_keeps_the_structure() {
        let e = TaskError::io(std::io::Error::other("disk on fire"));
        let text = format!("{e:#?}");
        assert!(text.starts_with("TaskError {"), "{text}");
        assert!(text.contains("kind: Io"), "{text}");
        assert!(text.contains("source: Some("), "{text}");
    }

    #[test]
    fn advice_of_an_outer_layer_wins_and_first_wins_within_a_layer() {
        // Process-wide state: this is the only test in this binary that sets it.
        let message = || {
            ErrorKind::NotRegistered {
                task: "t::T".into(),
            }
            .to_string()
        };
        assert_eq!(
            message(),
            "task `t::T` is not registered for process workers (add `concur_core::register!` for it)"
        );
        set_register_advice(AdviceLayer::Backend, "add `backend_a::register!` for it");
        set_register_advice(AdviceLayer::Backend, "add `backend_b::register!` for it");
        assert!(
            message().contains("(add `backend_a::register!` for it)"),
            "{}",
            message()
        );
        set_register_advice(AdviceLayer::Facade, "add `#[facade::task]` to its type");
        set_register_advice(AdviceLayer::Backend, "add `backend_c::register!` for it");
        assert_eq!(
            message(),
            "task `t::T` is not registered for process workers (add `#[facade::task]` to its type)"
        );
    }

    #[test]
    fn source_is_kept_and_not_in_message() {
        let io = std::io::Error::other("disk on fire");
        let e = TaskError::io(io);
        assert_eq!(e.to_string(), "i/o failure");
        assert_eq!(e.source().unwrap().to_string(), "disk on fire");
    }
}
