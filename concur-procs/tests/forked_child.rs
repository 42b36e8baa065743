//! A pool used in a child forked from the process that built it: the
//! child's copy refuses work at once with a typed error and dropping it
//! returns at once, without touching the parent's workers. Alone in its
//! binary: it forks.

mod common;

use std::error::Error as _;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use common::{Calc, DEADLINE};
use concur_procs::{Configure, ErrorKind, Executor, ExecutorExt, ProcessPool};

/// How the forked child reports (its exit code).
const OK: i32 = 0;
const SUBMIT_ACCEPTED: i32 = 10;
const WRONG_KIND: i32 = 11;
const NO_EXPLANATION: i32 = 12;
const BATCH_ACCEPTED: i32 = 13;
const SAW_WORKERS: i32 = 14;

/// What the child does with its copy of `p`; its exit code.
fn in_child(p: ProcessPool) -> i32 {
    let code = match p.submit(Calc { x: 1, spin_us: 0 }) {
        Ok(_) => SUBMIT_ACCEPTED,
        Err(e) if !e.is_shut_down() && *e.kind() != ErrorKind::ShutDown => WRONG_KIND,
        Err(e) => match e.source().map(|s| s.to_string()) {
            Some(s) if s.contains("a forked child must build its own pool") => OK,
            _ => NO_EXPLANATION,
        },
    };
    let batch = p.map((0..3).map(|x| Calc { x, spin_us: 0 })).next();
    let code = match batch {
        Some(Ok(_)) => BATCH_ACCEPTED,
        _ => code,
    };
    let code = if p.worker_pids().is_empty() {
        code
    } else {
        SAW_WORKERS
    };
    // Must return at once (the test's deadline catches a hang).
    drop(p);
    code
}

#[test]
fn a_pool_in_a_forked_child_refuses_work_and_drops_at_once() {
    let p = ProcessPool::builder().workers(1).build().unwrap();
    let before = p.worker_pids();
    // SAFETY: the child runs only this test's code and leaves with _exit.
    let child = unsafe { libc::fork() };
    assert!(child >= 0, "fork failed");
    if child == 0 {
        let code =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| in_child(p))).unwrap_or(99);
        // SAFETY: ends the forked child without running the parent's exit
        // handlers or destructors.
        unsafe { libc::_exit(code) };
    }
    // SAFETY: pidfd_open on our own unreaped child.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, child, 0) };
    assert!(fd >= 0, "pidfd_open failed");
    // SAFETY: a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = i32::try_from(DEADLINE.as_millis()).unwrap();
    // SAFETY: one valid pollfd for the call's duration.
    let ready = unsafe { libc::poll(&mut pfd, 1, ms) };
    if ready != 1 {
        // SAFETY: our own child.
        unsafe { libc::kill(child, libc::SIGKILL) };
    }
    let mut status = 0;
    // SAFETY: our own child, a valid out-pointer.
    assert_eq!(unsafe { libc::waitpid(child, &mut status, 0) }, child);
    assert_eq!(ready, 1, "the forked child hung using the pool");
    assert!(libc::WIFEXITED(status), "the child died: status {status}");
    assert_eq!(libc::WEXITSTATUS(status), OK, "see the codes at the top");
    // The parent's pool and workers are untouched.
    assert_eq!(p.worker_pids(), before);
    let r = p
        .submit(Calc { x: 2, spin_us: 0 })
        .unwrap()
        .join_timeout(DEADLINE)
        .unwrap_or_else(|_| panic!("the parent's pool hangs"));
    assert_eq!(r.unwrap(), 7);
}
