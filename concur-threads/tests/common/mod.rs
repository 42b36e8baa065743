//! Helpers shared by the thread-backend tests.

// Not every test binary that includes this module calls it.
#[allow(unused_imports)]
pub use concur_core::conformance::bounded;

/// Polls `cond` from inside a task until it holds (true) or [`DEADLINE`]
/// passes (false): a task has no other signal to wait on, and a backend
/// that never makes `cond` true fails the case instead of hanging it.
///
/// [`DEADLINE`]: concur_core::conformance::DEADLINE
#[allow(dead_code)]
pub fn poll_until(mut cond: impl FnMut() -> bool) -> bool {
    let give_up = std::time::Instant::now() + concur_core::conformance::DEADLINE;
    loop {
        if cond() {
            return true;
        }
        if std::time::Instant::now() > give_up {
            return false;
        }
        // A poll, not a synchronisation.
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}
