//! The backend's private errors, mapped into core's [`TaskError`] at the
//! boundary (no ipc-channel type ever reaches the public API).

use std::time::Duration;

use concur_core::{ErrorKind, TaskError, WorkerExit};

/// Why a worker could not be started.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SpawnError {
    /// The process could not be created or the bootstrap channel failed.
    #[error("could not start the worker process")]
    Os(#[source] std::io::Error),
    /// The child ended before it connected.
    #[error("the worker process ended before it connected ({0})")]
    Exited(WorkerExit),
    /// The child did not connect or initialise within the start timeout.
    #[error("the worker process did not start within {0:?}")]
    Deadline(Duration),
    /// Something connected without the worker token.
    #[error("a process connected to the worker bootstrap without the worker token")]
    BadToken,
    /// The child broke the bootstrap protocol.
    #[error("the worker broke the bootstrap protocol: {0}")]
    Protocol(&'static str),
    /// The worker runs another build of the program, or speaks another
    /// version of the protocol: its frames would decode wrongly.
    #[error(
        "the worker process runs a different build of this program ({}); it was refused \
         before any of its frames was decoded",
        BuildDifference { ours: *ours, theirs: *theirs }
    )]
    OtherBuild {
        /// This process's protocol version.
        ours: u32,
        /// The worker's protocol version, when its hello had one.
        theirs: Option<u32>,
    },
    /// This process looks like a worker (the bootstrap variable is in its
    /// environment) but is not in worker mode: it must not start workers.
    #[error(
        "this process has `CONCUR_PROCS_SERVER` in its environment, as a concur worker has, \
         but is not one: it does not start workers of its own"
    )]
    NestedWorker,
    /// The fork server (started by `init`) did not answer in time: it was
    /// stopped, and workers are exec'd from now on.
    #[error(
        "the fork server did not answer within {0:?}; it was stopped, and this process \
         execs its workers from now on"
    )]
    ForkServer(Duration),
    /// A worker's task tried to build a pool of its own.
    #[error("pools cannot be built inside a worker's task (nested pools are not supported)")]
    InsideWorker,
}

impl SpawnError {
    /// How the worker process ended, when that is why it failed.
    pub(crate) fn exit(&self) -> Option<WorkerExit> {
        match self {
            SpawnError::Exited(exit) => Some(*exit),
            _ => None,
        }
    }
}

/// What differs between this build and a worker's, in words.
struct BuildDifference {
    ours: u32,
    theirs: Option<u32>,
}

impl std::fmt::Display for BuildDifference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.theirs {
            Some(theirs) if theirs == self.ours => write!(
                f,
                "another executable build id, same protocol version {theirs}"
            ),
            Some(theirs) => write!(f, "protocol version {} here, {theirs} there", self.ours),
            None => write!(
                f,
                "protocol version {} here, none sent by the worker",
                self.ours
            ),
        }
    }
}

impl From<SpawnError> for TaskError {
    fn from(e: SpawnError) -> Self {
        TaskError::with_source(ErrorKind::Spawn, e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_build_reads_as_words() {
        let text = |theirs| SpawnError::OtherBuild { ours: 3, theirs }.to_string();
        assert!(text(Some(3)).contains("(another executable build id, same protocol version 3)"));
        assert!(text(Some(4)).contains("(protocol version 3 here, 4 there)"));
        assert!(text(None).contains("(protocol version 3 here, none sent by the worker)"));
        for t in [text(Some(3)), text(Some(4)), text(None)] {
            assert!(!t.contains("Some(") && !t.contains("None"), "{t}");
        }
    }

    #[test]
    fn spawn_errors_reach_core_as_words() {
        let e = TaskError::from(SpawnError::Exited(WorkerExit::Signal(9)));
        assert_eq!(
            format!("{e:?}").lines().next(),
            Some("could not start a worker")
        );
        assert!(
            format!("{e:?}").contains("ended before it connected (killed by SIGKILL (signal 9))"),
            "{e:?}"
        );
    }
}
