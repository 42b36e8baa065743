//! Running other programs from a test: with captured output and a deadline
//! that only bounds a hang.

#![allow(dead_code)] // each test target uses part of it

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The build directory of this test binary: `target/<profile>`.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/<profile>/deps/<test>-<hash>
    exe.parent()
        .and_then(|deps| deps.parent())
        .unwrap_or_else(|| panic!("{} is not in target/<profile>/deps", exe.display()))
        .to_path_buf()
}

/// Runs `command` to its end with stdin closed and its output captured;
/// returns its pid and its output. Past `limit` its process group is killed
/// and the test fails: the limit only catches a hang.
pub fn run(what: &str, mut command: Command, limit: Duration) -> (u32, Output) {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what} ({command:?}): {e}"));
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(output) => (
            pid,
            output.unwrap_or_else(|e| panic!("cannot wait for {what}: {e}")),
        ),
        Err(_) => {
            // SAFETY: a plain system call on the process group we started.
            unsafe { libc::kill(-(pid as libc::pid_t), libc::SIGKILL) };
            let _ = rx.recv_timeout(Duration::from_secs(10));
            panic!("{what} did not finish within {limit:?}; it was killed");
        }
    }
}

/// Panics with `what`'s exit status and output unless it succeeded.
pub fn assert_success(what: &str, output: &Output) {
    assert!(
        output.status.success(),
        "{what} failed ({})\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
}
