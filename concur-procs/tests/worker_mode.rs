//! A worker enters worker mode before `main`, so it must do itself what
//! Rust's runtime does before `main` and a worker relies on (SIGPIPE
//! ignored, standard streams open), and it reports a task's panic naming
//! the worker and the task, not `thread 'main'`, which read as the user's
//! own `main` panicking.
//!
//! Cases that need their own process (a closed stdout, a captured stderr,
//! an environment) run in a child: this binary re-run for one ignored role.

mod common;

use std::path::PathBuf;

use common::{in_role, join, run_role_with, RoleOutput};
use concur_procs::{Configure, ErrorKind, Executor, ExecutorExt, ProcessPool, Task, TaskContext};
use serde::{Deserialize, Serialize};

const ROLE: &str = "CONCUR_PROCS_TEST_WORKER_MODE_ROLE";

/// Writes to a pipe whose reading end is closed; returns the `errno`.
#[derive(Serialize, Deserialize)]
struct WriteToClosedPipe;

impl Task for WriteToClosedPipe {
    type Output = i32;
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = "procs-worker-mode::WriteToClosedPipe";
    fn run(self, _cx: &mut TaskContext<'_, Self>) -> i32 {
        let mut fds = [0; 2];
        // SAFETY: a valid array for pipe(2), then plain calls on its two descriptors.
        unsafe {
            assert_eq!(libc::pipe(fds.as_mut_ptr()), 0);
            libc::close(fds[0]);
            let r = libc::write(fds[1], b"x".as_ptr().cast(), 1);
            let errno = *libc::__errno_location();
            libc::close(fds[1]);
            assert_eq!(r, -1, "the write cannot succeed");
            errno
        }
    }
}

/// Prints lines to stdout, then returns 7.
#[derive(Serialize, Deserialize)]
struct Chatty;

impl Task for Chatty {
    type Output = u32;
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = "procs-worker-mode::Chatty";
    fn run(self, _cx: &mut TaskContext<'_, Self>) -> u32 {
        for i in 0..100 {
            println!("chatty line {i}");
        }
        7
    }
}

/// Panics with `boom {0}`.
#[derive(Serialize, Deserialize)]
struct Boom(u32);

impl Task for Boom {
    type Output = ();
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = "procs-worker-mode::Boom";
    fn run(self, _cx: &mut TaskContext<'_, Self>) {
        panic!("boom {}", self.0)
    }
}

/// Panics on a thread of its own named `helper`; returns whether it did.
#[derive(Serialize, Deserialize)]
struct BoomOnAThread;

impl Task for BoomOnAThread {
    type Output = bool;
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = "procs-worker-mode::BoomOnAThread";
    fn run(self, _cx: &mut TaskContext<'_, Self>) -> bool {
        std::thread::Builder::new()
            .name("helper".into())
            .spawn(|| panic!("helper down"))
            .unwrap()
            .join()
            .is_err()
    }
}

concur_procs::register!(WriteToClosedPipe, Chatty, Boom, BoomOnAThread);

fn me() -> PathBuf {
    std::env::current_exe().unwrap()
}

/// Rust ignores SIGPIPE before `main`; a worker never reaches `main`, so it
/// ignores it itself: a task writing to a closed pipe gets `EPIPE`, and its
/// worker is not killed by the signal.
#[test]
fn a_write_to_a_closed_pipe_fails_instead_of_killing_the_worker() {
    let pool = ProcessPool::builder().workers(1).build().unwrap();
    let errno = join(pool.submit(WriteToClosedPipe).unwrap()).expect("the worker survives");
    assert_eq!(errno, libc::EPIPE);
}

#[test]
#[ignore = "a role played by a child process of a_task_prints_safely_when_the_parent_closed_stdout"]
fn role_closed_stdout() {
    in_role(ROLE, "role_closed_stdout");
    // SAFETY: closes this process's stdout; nothing here writes to it but
    // the harness, whose writes then fail quietly (EBADF).
    unsafe { libc::close(1) };
    let pool = ProcessPool::builder().workers(1).build().unwrap();
    assert_eq!(join(pool.submit(Chatty).unwrap()).unwrap(), 7);
    assert_eq!(join(pool.submit(Chatty).unwrap()).unwrap(), 7);
    eprintln!("CLOSED-STDOUT-OK");
}

/// A worker started with its stdout closed opens `/dev/null` there, as
/// Rust's runtime does before `main`: otherwise its channel to the parent
/// took descriptor 1, and a task's `println!` wrote into it.
#[test]
fn a_task_prints_safely_when_the_parent_closed_stdout() {
    let out = run_role_with(&me(), ROLE, "role_closed_stdout", &[], || Ok(()));
    assert!(
        out.status.success() && out.stderr.contains("CLOSED-STDOUT-OK"),
        "{}",
        describe(&out)
    );
}

#[test]
#[ignore = "a role played by a child process of the panic report tests"]
fn role_panics() {
    in_role(ROLE, "role_panics");
    let pool = ProcessPool::builder().workers(1).build().unwrap();
    let err = join(pool.submit(Boom(7)).unwrap()).unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::Panicked { message, .. } if message == "boom 7"),
        "{err:?}"
    );
    assert!(join(pool.submit(BoomOnAThread).unwrap()).unwrap());
    assert!(join(pool.submit_fn(boom_fn, 9).unwrap()).is_err());
    println!("WORKER {}", pool.worker_pids()[0].unwrap());
}

/// A function task that panics: its report names the function, as its
/// error does, not the registry entry all function tasks share.
fn boom_fn(n: u32) -> u32 {
    panic!("fn boom {n}")
}

fn describe(out: &RoleOutput) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status, out.stdout, out.stderr
    )
}

/// Runs [`role_panics`] with `env`; returns its worker's pid and its stderr.
fn panics_with(env: &[(&str, Option<&str>)]) -> (u32, String) {
    let out = run_role_with(&me(), ROLE, "role_panics", env, || Ok(()));
    assert!(out.status.success(), "{}", describe(&out));
    // The harness may have printed on the same line before the marker.
    let worker = out
        .stdout
        .split("WORKER ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no worker pid: {}", describe(&out)))
        .parse()
        .unwrap();
    (worker, out.stderr)
}

#[test]
fn a_worker_panic_names_the_worker_and_the_task() {
    let (worker, stderr) = panics_with(&[
        ("RUST_BACKTRACE", None),
        ("CONCUR_PROCS_QUIET_PANICS", None),
    ]);
    let head = format!(
        "concur worker 0 (pid {worker}) panicked in task `procs-worker-mode::Boom` at {}:",
        file!()
    );
    assert!(stderr.contains(&head), "no {head:?} in:\n{stderr}");
    assert!(stderr.contains(":\nboom 7\n"), "{stderr}");
    let thread = format!(
        "concur worker 0 (pid {worker}), thread 'helper', panicked in task \
         `procs-worker-mode::BoomOnAThread` at {}:",
        file!()
    );
    assert!(stderr.contains(&thread), "no {thread:?} in:\n{stderr}");
    let function = format!(
        "concur worker 0 (pid {worker}) panicked in task `worker_mode::boom_fn` at {}:",
        file!()
    );
    assert!(stderr.contains(&function), "no {function:?} in:\n{stderr}");
    assert!(!stderr.contains("concur::fn"), "{stderr}");
    assert!(!stderr.contains("thread 'main'"), "{stderr}");
    // As the default hook: one note on how to get a backtrace, no backtrace.
    assert_eq!(stderr.matches("RUST_BACKTRACE=1").count(), 1, "{stderr}");
    assert!(!stderr.contains("stack backtrace"), "{stderr}");
}

#[test]
fn rust_backtrace_adds_a_backtrace_to_a_worker_panic() {
    let (_, stderr) = panics_with(&[
        ("RUST_BACKTRACE", Some("1")),
        ("CONCUR_PROCS_QUIET_PANICS", None),
    ]);
    assert!(stderr.contains("stack backtrace:"), "{stderr}");
    assert!(
        stderr.contains("Boom"),
        "the backtrace shows the task: {stderr}"
    );
}

/// For test suites whose tasks panic on purpose: the reports are kept out
/// of the output, and the tasks still fail with their panic.
#[test]
fn quiet_panics_keep_worker_panics_off_stderr() {
    let (_, stderr) = panics_with(&[
        ("RUST_BACKTRACE", Some("1")),
        ("CONCUR_PROCS_QUIET_PANICS", Some("1")),
    ]);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("boom 7"), "{stderr}");
}
