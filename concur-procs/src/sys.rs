//! The few operating-system calls the backend needs, each wrapped once with
//! its safety argument (Linux).

use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use concur_core::WorkerExit;

/// Exit code of a worker that could not receive a task (its input could
/// not be mapped or read).
pub(crate) const EXIT_UNREADABLE_INPUT: i32 = 96;
/// Exit code of a worker whose allocation failed under its memory limit.
pub(crate) const EXIT_MEMORY_LIMIT: i32 = 97;
/// Exit code of a worker that ended itself because its running task was cancelled.
pub(crate) const EXIT_CANCELLED: i32 = 98;
/// Exit code of a worker that lost its parent or its channel.
pub(crate) const EXIT_ORPHANED: i32 = 99;
/// Exit code of a worker whose channel to a parent that still lives broke
/// (the parent closed it on a frame it could not read, or the worker's
/// task closed it).
pub(crate) const EXIT_CHANNEL_BROKE: i32 = 95;

/// The parent pid a worker checked in [`die_with_parent`] (0: not a worker).
static PARENT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// In a worker whose send to the parent failed: exits with
/// [`EXIT_CHANNEL_BROKE`] when the parent still lives (the parent then
/// tells that death from an outside kill), else [`EXIT_ORPHANED`].
pub(crate) fn exit_channel_lost() -> ! {
    let parent = PARENT.load(std::sync::atomic::Ordering::Relaxed);
    // SAFETY: getppid never fails.
    let ppid = unsafe { libc::getppid() } as u32;
    exit_now(if parent != 0 && ppid == parent {
        EXIT_CHANNEL_BROKE
    } else {
        EXIT_ORPHANED
    })
}

/// Sends SIGKILL to `pid`. An already gone process is not an error.
///
/// Never call it for a pid that was already reaped (by [`wait`] or
/// [`try_wait`]): the number may belong to another process by then.
pub(crate) fn kill(pid: u32) {
    #[cfg(test)]
    KILLED.with(|k| k.borrow_mut().push(pid));
    // SAFETY: kill(2) takes plain integers. Callers only signal children
    // they have not reaped yet (the pool marks a worker before reaping it),
    // so the pid cannot belong to another process.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGKILL);
    }
}

/// True when process `pid` cannot run: stopped (`SIGSTOP`, a debugger),
/// exited and not yet reaped, or gone.
pub(crate) fn cannot_run(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the name, which is in parentheses and may hold
        // anything, so it is read after the last `)`.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_none_or(|state| matches!(state, "T" | "t" | "Z" | "X")),
        Err(_) => true,
    }
}

/// Waits for child `pid` to end and reaps it.
pub(crate) fn wait(pid: u32) -> io::Result<WorkerExit> {
    let mut status: libc::c_int = 0;
    loop {
        // SAFETY: `status` is a valid out-pointer for the call's duration.
        let r = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, 0) };
        if r >= 0 {
            return Ok(decode_status(status));
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Reaps child `pid` if it has ended, without waiting.
pub(crate) fn try_wait(pid: u32) -> io::Result<Option<WorkerExit>> {
    let mut status: libc::c_int = 0;
    // SAFETY: as in `wait`.
    let r = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, libc::WNOHANG) };
    match r {
        0 => Ok(None),
        r if r > 0 => Ok(Some(decode_status(status))),
        _ => Err(io::Error::last_os_error()),
    }
}

fn decode_status(status: libc::c_int) -> WorkerExit {
    if libc::WIFSIGNALED(status) {
        WorkerExit::Signal(libc::WTERMSIG(status))
    } else if libc::WIFEXITED(status) {
        match libc::WEXITSTATUS(status) {
            EXIT_MEMORY_LIMIT => WorkerExit::MemoryLimit,
            code => WorkerExit::Code(code),
        }
    } else {
        WorkerExit::Unknown
    }
}

/// In a worker: asks for SIGKILL when the parent dies, then checks that the
/// parent (`parent_pid`) did not die before the request took effect.
pub(crate) fn die_with_parent(parent_pid: u32) {
    PARENT.store(parent_pid, std::sync::atomic::Ordering::Relaxed);
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes integers only.
    unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        );
    }
    // SAFETY: getppid never fails.
    if unsafe { libc::getppid() } as u32 != parent_pid {
        exit_now(EXIT_ORPHANED);
    }
}

/// Ends the process at once, running no destructors or exit handlers (a
/// worker that lost its parent must not flush or wait on anything).
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: _exit is always safe to call; it does not return.
    unsafe { libc::_exit(code) }
}

/// The calling process's mapped address space, in bytes.
fn address_space() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().next()?.parse().ok()?;
    // SAFETY: sysconf takes an integer.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

/// In a worker: limits the address space to what it uses now plus `extra`
/// bytes, and makes an allocation failure under that limit end the process
/// with [`EXIT_MEMORY_LIMIT`] instead of a plain abort.
pub(crate) fn limit_memory(extra: u64) -> io::Result<()> {
    let now = address_space().ok_or_else(|| io::Error::other("cannot read /proc/self/statm"))?;
    let limit = libc::rlimit {
        rlim_cur: now.saturating_add(extra),
        rlim_max: now.saturating_add(extra),
    };
    // SAFETY: `limit` is a valid rlimit for the call's duration.
    if unsafe { libc::setrlimit(libc::RLIMIT_AS, &limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: installs a handler that only reads errno and calls _exit,
    // both async-signal-safe; the sigaction struct is fully initialised.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_abort as *const () as libc::sighandler_t;
        action.sa_flags = libc::SA_RESETHAND;
        libc::sigemptyset(&mut action.sa_mask);
        if libc::sigaction(libc::SIGABRT, &action, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// SIGABRT handler of a memory-limited worker. Rust aborts when an
/// allocation fails; the failed `malloc`/`mmap` left `ENOMEM` in this
/// thread's errno (printing the message succeeded and did not reset it). Any
/// other abort returns here, and `abort` then ends the process by SIGABRT as
/// usual (the handler was reset by `SA_RESETHAND`).
extern "C" fn on_abort(_sig: libc::c_int) {
    // SAFETY: __errno_location returns this thread's errno slot.
    if unsafe { *libc::__errno_location() } == libc::ENOMEM {
        exit_now(EXIT_MEMORY_LIMIT);
    }
}

/// An `.init_array` entry as glibc calls it: with the program's `argc`,
/// `argv` and `envp` (a GNU extension, which std's own argument capture
/// relies on as well).
pub(crate) type Constructor =
    extern "C" fn(libc::c_int, *const *const libc::c_char, *const *const libc::c_char);

unsafe extern "C" {
    // The bounds of this executable's `.init_array`, defined by the linker
    // (GNU ld, gold, lld and mold alike) for the C runtime's own use.
    static __init_array_start: [usize; 0];
    static __init_array_end: [usize; 0];
}

/// Runs, in order, the constructors that come after `me` in this
/// executable's `.init_array`, with the arguments the loader gave `me`:
/// what the loader would have done next. Does nothing when `me` is not in
/// the array.
///
/// # Safety
/// Call it only from the constructor `me` during the loader's constructor
/// pass, with the arguments it received, and never return to the loader
/// afterwards (it would run them a second time).
pub(crate) unsafe fn run_constructors_after(
    me: Constructor,
    argc: libc::c_int,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
) {
    // SAFETY: the linker puts both symbols at the bounds of one array of
    // pointer-sized entries, which the loader relocated before it called
    // the first constructor and which nothing writes afterwards.
    let entries = unsafe {
        let start = std::ptr::addr_of!(__init_array_start).cast::<usize>();
        let end = std::ptr::addr_of!(__init_array_end).cast::<usize>();
        let len = (end as usize).saturating_sub(start as usize) / std::mem::size_of::<usize>();
        std::slice::from_raw_parts(start, len)
    };
    let Some(at) = entries.iter().position(|&f| f == me as usize) else {
        return;
    };
    for &f in &entries[at + 1..] {
        // 0 and -1 are the placeholders old toolchains leave in such
        // arrays; they are never code.
        if f == 0 || f == usize::MAX {
            continue;
        }
        // SAFETY: every other entry of `.init_array` is a constructor the
        // loader would call with exactly these arguments.
        let f: Constructor = unsafe { std::mem::transmute::<usize, Constructor>(f) };
        f(argc, argv, envp);
    }
}

/// Opens `/dev/null` on any of the standard descriptors 0, 1 and 2 that is
/// closed, as Rust's runtime does before `main`: otherwise the next file or
/// socket opened would take its number, and a task's `println!` would
/// write into it.
pub(crate) fn ensure_standard_streams() {
    for fd in 0..3 {
        // SAFETY: fcntl(F_GETFD) only inspects the descriptor table.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } != -1
            || io::Error::last_os_error().raw_os_error() != Some(libc::EBADF)
        {
            continue;
        }
        // SAFETY: open with a valid C string; the lowest free number is
        // `fd` itself, since the ones below it are open.
        let opened = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) };
        if opened != fd && opened >= 0 {
            // SAFETY: moves the descriptor just opened to `fd`.
            unsafe {
                libc::dup2(opened, fd);
                libc::close(opened);
            }
        }
    }
}

/// Ignores SIGPIPE, as Rust's runtime does before `main`: a write to a
/// closed pipe or socket then fails with `EPIPE` instead of killing the
/// process. Children started afterwards get the default back from
/// `std::process::Command`.
pub(crate) fn ignore_sigpipe() {
    // SAFETY: installs the SIG_IGN disposition, no handler code.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}

#[cfg(test)]
thread_local! {
    /// The pids this thread sent SIGKILL to (unit tests check that a reaped
    /// child is never signalled).
    pub(crate) static KILLED: std::cell::RefCell<Vec<u32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `close_range`'s flag that marks the descriptors close-on-exec instead of
/// closing them (Linux 5.11; not in the libc crate for every target).
const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;

/// In a forked child, before exec: marks every descriptor from 3 up
/// close-on-exec, then clears the flag on `keep` alone, so the exec'd
/// program holds only the standard streams and `keep`.
///
/// Marking instead of closing leaves the standard library's own exec-error
/// pipe working (it is close-on-exec already), so a failed exec is still
/// reported to the parent. Only async-signal-safe system calls are made.
pub(crate) fn inherit_only(keep: RawFd) -> io::Result<()> {
    // SAFETY: close_range takes integers and touches only the descriptor table.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_uint,
            libc::c_uint::MAX,
            CLOSE_RANGE_CLOEXEC,
        )
    };
    if r != 0 {
        // Kernels before 5.11: mark each possible descriptor.
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `limit` is a valid out-pointer; fcntl on a closed fd only fails with EBADF.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
                return Err(io::Error::last_os_error());
            }
            let end = limit.rlim_cur.min(1 << 20) as RawFd;
            for fd in 3..end {
                libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
            }
        }
    }
    // SAFETY: plain fcntl on an fd this process owns.
    if unsafe { libc::fcntl(keep, libc::F_SETFD, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A pipe already holding `secret`, its writing end closed: returns the
/// reading end (close-on-exec, numbered 3 or above so that setting up a
/// child's standard streams cannot overwrite it).
pub(crate) fn secret_pipe(secret: &[u8]) -> io::Result<OwnedFd> {
    // A pipe's buffer holds at least a page: the write below never blocks.
    assert!(
        secret.len() <= 4096,
        "a bootstrap secret fits a pipe buffer"
    );
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded: both are fresh descriptors owned by nobody else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let read = if read.as_raw_fd() < 3 {
        // SAFETY: duplicating an owned descriptor; the result is owned below.
        let fd = unsafe { libc::fcntl(read.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fcntl returned a fresh descriptor.
        unsafe { OwnedFd::from_raw_fd(fd) }
    } else {
        read
    };
    let mut write = std::fs::File::from(write);
    io::Write::write_all(&mut write, secret)?;
    Ok(read)
}

/// In a worker: reads the secret its parent left in the pipe at `fd` (given
/// on the command line) and closes the pipe.
pub(crate) fn read_secret(fd: RawFd) -> io::Result<Vec<u8>> {
    read_secret_within(fd, SECRET_DEADLINE)
}

/// [`read_secret`], waiting at most `limit` for the token.
fn read_secret_within(fd: RawFd, limit: std::time::Duration) -> io::Result<Vec<u8>> {
    // Standard streams are never the secret pipe; and the descriptor must be a pipe,
    // so that a bad argument cannot make this take over some other file.
    if fd < 3 {
        return Err(io::Error::other("bad bootstrap descriptor"));
    }
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat fills `st` when it returns 0.
    if unsafe { libc::fstat(fd, st.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fstat succeeded.
    if unsafe { st.assume_init() }.st_mode & libc::S_IFMT != libc::S_IFIFO {
        return Err(io::Error::other("the bootstrap descriptor is not a pipe"));
    }
    // SAFETY: the parent made `fd` for this process alone and nothing else uses it;
    // the `File` owns and closes it.
    let mut pipe = unsafe { std::fs::File::from_raw_fd(fd) };
    let deadline = std::time::Instant::now() + limit;
    let mut secret = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        // The parent wrote the whole secret and closed its end before it
        // started this process; a pipe that stays open and empty (a worker
        // started by hand) must not keep it waiting for ever.
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let mut p = libc::pollfd {
            fd: pipe.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = i32::try_from(left.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: one valid pollfd for the call's duration.
        match unsafe { libc::poll(&mut p, 1, ms) } {
            0 => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no token arrived within {limit:?}"),
                ))
            }
            r if r < 0 => {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            _ => {}
        }
        let n = match pipe.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            return Ok(secret);
        }
        if secret.len() + n > 4096 {
            return Err(io::Error::other("the token is too long"));
        }
        secret.extend_from_slice(&buf[..n]);
    }
}

/// How long a worker waits for its token in the secret pipe. The parent
/// writes it before the worker starts, so only a worker started by hand
/// with a pipe that stays open and empty ever waits this long (the default
/// start timeout).
const SECRET_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// Raises the soft limit on open descriptors to the hard limit (as Go's
/// runtime does at start): a pool holds descriptors for its workers and
/// their shared memory, and the common soft default of 1024 is a
/// historical leftover of `select(2)`, which nothing here uses.
pub(crate) fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid rlimit for both calls.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            // Failure leaves the soft limit as it was, which is no worse.
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// This process's id, remembered: `getpid` is a system call, and every
/// submit and every task a worker runs asks (a burst of small tasks paid
/// several per task). A child
/// made by `fork()` runs the handler registered here, which forgets the
/// remembered id, so the child reads its own. (A child made by a raw
/// `clone` system call runs no fork handler; such a child must not use
/// the pool's copy, as its documentation says of any forked child.)
pub(crate) fn current_pid() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static PID: AtomicU32 = AtomicU32::new(0);
    static HANDLER: std::sync::Once = std::sync::Once::new();
    extern "C" fn forget() {
        PID.store(0, Ordering::Relaxed);
    }
    HANDLER.call_once(|| {
        // SAFETY: registers a handler that only stores to an atomic (safe
        // in the child of a multithreaded fork); it stays valid for the
        // program's life (a static function).
        let rc = unsafe { libc::pthread_atfork(None, None, Some(forget)) };
        if rc != 0 {
            // Without the handler a remembered id could be a parent's:
            // never remember one (0 means "ask").
            PID.store(u32::MAX, Ordering::Relaxed);
        }
    });
    match PID.load(Ordering::Relaxed) {
        0 => {
            let pid = std::process::id();
            PID.store(pid, Ordering::Relaxed);
            pid
        }
        u32::MAX => std::process::id(),
        pid => pid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::IntoRawFd;
    use std::time::Duration;

    /// A pipe whose write end stays open and empty (a worker started by
    /// hand) ends the read with `TimedOut` instead of waiting for ever.
    #[test]
    fn an_open_empty_secret_pipe_times_out() {
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills two descriptors, owned below.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: fresh descriptors from pipe2; the read end is owned by
        // `read_secret_within`, the write end here.
        let _write = unsafe { OwnedFd::from_raw_fd(fds[1]) };
        let e = read_secret_within(fds[0], Duration::from_millis(50)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
    }

    #[test]
    fn a_written_secret_is_read_whole() {
        let read = secret_pipe(b"token").unwrap();
        let fd = read.into_raw_fd();
        assert_eq!(read_secret(fd).unwrap(), b"token");
    }
}
