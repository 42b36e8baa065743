//! Helpers shared by the cross-backend scenarios: every wait on a pool has
//! a deadline that only bounds a hang.

#![allow(dead_code)] // each test target uses part of it

use std::io::Write;
use std::sync::mpsc;
use std::time::Duration;

use concur_core::{Task, TaskError, TaskHandle};

/// Bounds every wait in these tests.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// Joins `h`, failing the test instead of hanging past [`DEADLINE`].
pub fn join<T: Task>(h: TaskHandle<T>) -> Result<T::Output, TaskError> {
    h.join_timeout(DEADLINE)
        .unwrap_or_else(|h| panic!("{h:?} did not finish within {DEADLINE:?}"))
}

/// Runs `f` on this thread under a watchdog: if it has not returned
/// within [`DEADLINE`], says that `what` hung and aborts the test binary.
/// For waits that borrow from the test (a `map` over a pool on its stack):
/// a panic could not end them, since a thread that borrows would have to
/// be joined first. The message goes to the real standard error (the
/// harness's capture would die with the process); process workers end by
/// their parent-death signal.
pub fn bounded<R>(what: &str, f: impl FnOnce() -> R) -> R {
    let (disarm, armed) = mpsc::channel::<()>();
    let what = what.to_owned();
    std::thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = armed.recv_timeout(DEADLINE) {
            let _ = writeln!(
                std::io::stderr(),
                "{what} did not finish within {DEADLINE:?}: aborting the test binary"
            );
            std::process::abort();
        }
    });
    let r = f();
    drop(disarm);
    r
}
