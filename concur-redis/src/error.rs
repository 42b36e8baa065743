//! The causes this backend puts in `TaskError::source()`: private types,
//! whose text is what crosses to the caller.

use std::fmt;

use concur_core::{ErrorKind, TaskError};

/// The note on a quarantined task's error (as the process backend's).
#[derive(Debug)]
pub(crate) struct Quarantined {
    /// Deliveries that ended without a result (a worker died, or lost the
    /// broker, while it held the task).
    pub(crate) deaths: u64,
}

impl fmt::Display for Quarantined {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the task was running in {} worker deaths and is quarantined (moved to the dead-letter stream, never run again)",
            self.deaths
        )
    }
}

impl std::error::Error for Quarantined {}

/// A worker refused a task of another build.
#[derive(Debug)]
pub(crate) struct WrongBuild {
    pub(crate) worker: String,
}

impl fmt::Display for WrongBuild {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "worker `{}` runs another build of the program than the one that submitted the task",
            self.worker
        )
    }
}

impl std::error::Error for WrongBuild {}

/// The refusal of a function task (`submit_fn`).
pub(crate) fn fn_task_refused() -> TaskError {
    TaskError::new(ErrorKind::Config {
        field: "task".into(),
        reason: "function tasks (submit_fn, map_fn) cannot run on the redis backend: they carry \
                 a code address, which a worker must never take from a broker; use a struct task"
            .into(),
    })
}
