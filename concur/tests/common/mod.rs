//! Deadlines for the waits of these tests, and running other programs from
//! a test with captured output and a deadline that only bounds a hang.

#![allow(dead_code)] // each test target uses part of it

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

// Not every test binary that includes this module calls it.
#[allow(unused_imports)]
pub use concur_core::conformance::{bounded, join, DEADLINE};

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
///
/// The child is reaped by a thread of its own, apart from the reading of its
/// pipes: a process that outlives it and holds a pipe open (one that left
/// the group) delays the output, never the reaping.
pub fn run(what: &str, mut command: Command, limit: Duration) -> (u32, Output) {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what} ({command:?}): {e}"));
    let pid = child.id();
    let end = Instant::now() + limit;
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let (tx, exited) = mpsc::channel();
    let reaper = std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    let left = || end.saturating_duration_since(Instant::now());
    let outcome = (|| {
        let status = exited.recv_timeout(left()).ok()?;
        Some((
            status,
            stdout.recv_timeout(left()).ok()?,
            stderr.recv_timeout(left()).ok()?,
        ))
    })();
    match outcome {
        Some((status, stdout, stderr)) => {
            let status = status.unwrap_or_else(|e| panic!("cannot wait for {what}: {e}"));
            (
                pid,
                Output {
                    status,
                    stdout,
                    stderr,
                },
            )
        }
        None => {
            // SAFETY: a plain system call on the process group we started.
            unsafe { libc::kill(-(pid as libc::pid_t), libc::SIGKILL) };
            // SIGKILL cannot be caught: the reaper's wait returns at once.
            let _ = reaper.join();
            panic!("{what} did not finish within {limit:?}; it was killed");
        }
    }
}

/// Reads `pipe` to its end on a thread of its own; the bytes come on the
/// returned channel.
fn drain(pipe: Option<impl Read + Send + 'static>) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        let _ = tx.send(bytes);
    });
    rx
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

/// Set in the child a test re-runs itself in (see [`rerun_with_env`]).
pub const CHILD: &str = "CONCUR_TESTS_ENV_CHILD";

/// True in the child [`rerun_with_env`] started.
pub fn in_rerun() -> bool {
    std::env::var_os(CHILD).is_some()
}

/// Runs test `test` alone again in a child of this test binary with `env`
/// set (a `None` value removes the variable), and passes when the child
/// does: tests that read the environment never change the environment of
/// the process the other tests share.
pub fn rerun_with_env(test: &str, env: &[(&str, Option<&str>)], limit: Duration) {
    let exe = std::env::current_exe().expect("this test binary's path");
    let mut command = Command::new(exe);
    command
        .args([test, "--exact", "--test-threads=1", "--nocapture"])
        .env(CHILD, "1");
    for (name, value) in env {
        match value {
            Some(v) => command.env(name, v),
            None => command.env_remove(name),
        };
    }
    let what = format!("`{test}` with {env:?}");
    let (_, output) = run(&what, command, limit);
    assert_success(&what, &output);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("test result: ok. 1 passed"),
        "{what} did not run exactly that test:\n{stdout}"
    );
}
