//! Helpers shared by the thread-backend tests.

use std::io::Write;
use std::sync::mpsc;

use concur_core::conformance::DEADLINE;

/// Runs `f` on this thread under a watchdog: if it has not returned
/// within [`DEADLINE`], says that `what` hung and aborts the test binary.
/// For waits that borrow from the test (a `map` or a `scope` over a pool on
/// its stack): a panic could not end them, since a thread that borrows
/// would have to be joined first. The message goes to the real standard
/// error (the harness's capture would die with the process).
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
