//! What a user sees when `main` returns a `TaskError` (the README's
//! pattern, `fn main() -> Result<(), TaskError>`): the message and its
//! causes in words, not the error's structure.
//!
//! A test without the harness (`harness = false`): run with no argument,
//! it runs itself again with [`ROLE`] set; that child's `main` returns an
//! error, and the parent checks the child's exit status and stderr.

use std::error::Error;
use std::fmt;
use std::process::Command;

use concur_core::{ErrorKind, TaskError};

const ROLE: &str = "CONCUR_CORE_TEST_MAIN_ERROR_ROLE";

/// A cause with a cause of its own, as a backend's private error has.
#[derive(Debug)]
struct Refused(std::io::Error);

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the worker process ended before it connected")
    }
}

impl Error for Refused {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&self.0)
    }
}

fn main() -> Result<(), TaskError> {
    if std::env::var_os(ROLE).is_some() {
        let inner = std::io::Error::other("connection refused");
        return Err(TaskError::with_source(ErrorKind::Spawn, Refused(inner)));
    }
    let out = Command::new(std::env::current_exe().expect("own path"))
        .env(ROLE, "1")
        .output()
        .expect("run the child");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert_eq!(
        stderr,
        "Error: could not start a worker\n\
         \n\
         Caused by:\n    \
         0: the worker process ended before it connected\n    \
         1: connection refused\n"
    );
    assert!(!stderr.contains("Repr"), "{stderr}");
    println!("main_error: ok");
    Ok(())
}
