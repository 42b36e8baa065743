//! Watching and signalling worker processes through pidfds: a pidfd names
//! one process for good (no pid reuse), becomes readable when the process
//! exits whether or not its channel closed (a forked child may hold the
//! channel open), and can be polled together with a wake-up descriptor.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use concur_core::WorkerExit;

use crate::error::SpawnError;

/// Opens a pidfd for child `pid` (not yet reaped, so the pid is still ours).
pub(crate) fn open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags; the result is a new fd we own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a fresh descriptor (close-on-exec by default).
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Sends SIGKILL to the process behind `fd`. A process that already ended
/// is not an error (nothing else can be hit: the pidfd names only it).
pub(crate) fn kill(fd: &OwnedFd) {
    // SAFETY: pidfd_send_signal with a valid pidfd, a signal number, no info.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        );
    }
}

/// Sends SIGKILL to process group `pgid` (a worker's: what its tasks
/// forked). Call it only while the worker that leads the group is not yet
/// reaped: its zombie keeps the group's number from being reused.
pub(crate) fn kill_group(pgid: u32) {
    // SAFETY: kill(2) with a negative pid (a process group) and a signal.
    unsafe {
        libc::kill(-(pgid as libc::pid_t), libc::SIGKILL);
    }
}

/// True when child `pid` has exited; it is left unreaped (`WNOWAIT`), as a
/// readable pidfd leaves it, so its group can still be ended safely.
pub(crate) fn has_exited(pid: u32) -> bool {
    // SAFETY: waitid with a zeroed, valid out-pointer for the call.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let r = libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        );
        r == 0 && info.si_pid() != 0
    }
}

/// An eventfd to wake a thread blocked in [`poll`].
pub(crate) struct Waker(OwnedFd);

impl Waker {
    pub(crate) fn new() -> io::Result<Waker> {
        // SAFETY: eventfd takes integers; the result is a new fd we own.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fresh descriptor from the kernel.
        Ok(Waker(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    pub(crate) fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64 to our eventfd.
        unsafe {
            libc::write(self.0.as_raw_fd(), (&one as *const u64).cast(), 8);
        }
    }

    fn drain(&self) {
        let mut n: u64 = 0;
        // SAFETY: reads 8 bytes into a valid u64 (non-blocking eventfd).
        unsafe {
            libc::read(self.0.as_raw_fd(), (&mut n as *mut u64).cast(), 8);
        }
    }
}

/// How long a starting worker whose channel failed may take to end on its
/// own before the pool kills it (it is normally ending already).
const START_EXIT_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

/// A start failed with `failed` while starting worker `pid` (behind `fd`)
/// was not yet reaped. Waits up to half a second for it to end: if it did,
/// reaps it and returns [`SpawnError::Exited`] with how it ended (an outside
/// kill or a crash, not a broken protocol); if it still runs, kills and
/// reaps it and returns `failed` (its end would only show the pool's own
/// kill).
pub(crate) fn exited_or_end(fd: &OwnedFd, pid: u32, failed: SpawnError) -> SpawnError {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = START_EXIT_GRACE.as_millis() as i32;
    // SAFETY: one valid pollfd for the call's duration.
    let r = unsafe { libc::poll(&mut p, 1, ms) };
    if r == 1 {
        return SpawnError::Exited(crate::sys::wait(pid).unwrap_or(WorkerExit::Unknown));
    }
    kill(fd);
    // Killed: its end is imminent.
    let _ = crate::sys::wait(pid);
    failed
}

/// Waits until the waker fires, one of `fds` becomes readable, or
/// `timeout` passes (`None`: no limit). Returns the indices of readable fds.
pub(crate) fn poll(
    waker: &Waker,
    fds: &[RawFd],
    timeout: Option<std::time::Duration>,
) -> io::Result<Vec<usize>> {
    let mut set: Vec<libc::pollfd> = Vec::with_capacity(fds.len() + 1);
    set.push(libc::pollfd {
        fd: waker.0.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    });
    set.extend(fds.iter().map(|&fd| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }));
    let ms = timeout.map_or(-1, |t| {
        // Round up, so a deadline is never checked early and spun on.
        i32::try_from(t.as_micros().div_ceil(1000)).unwrap_or(i32::MAX)
    });
    // SAFETY: `set` is a valid array of pollfd for the call's duration.
    let r = unsafe { libc::poll(set.as_mut_ptr(), set.len() as libc::nfds_t, ms) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(Vec::new());
        }
        return Err(e);
    }
    if set[0].revents != 0 {
        waker.drain();
    }
    Ok(set[1..]
        .iter()
        .enumerate()
        .filter(|(_, p)| p.revents != 0)
        .map(|(i, _)| i)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn has_exited_sees_an_exit_without_reaping() {
        let mut sleeper = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        assert!(!has_exited(sleeper.id()));
        let mut done = std::process::Command::new("true").spawn().unwrap();
        let end = Instant::now() + Duration::from_secs(60);
        while !has_exited(done.id()) {
            assert!(Instant::now() < end, "the exit was never seen");
            std::thread::sleep(Duration::from_millis(1));
        }
        // Still a zombie of ours: reaping it works.
        assert!(done.wait().unwrap().success());
        sleeper.kill().unwrap();
        sleeper.wait().unwrap();
    }
}
