//! Tasks and helpers shared by the process-backend tests.
#![allow(dead_code)]

use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use concur_core::{BatchHandle, BatchResults};
use concur_procs::{Task, TaskContext, TaskError, WorkerExit};
use serde::{Deserialize, Serialize};

/// Joins the batch `h`, failing the test if it does not finish within
/// [`DEADLINE`].
pub fn join_batch<T: Task>(h: BatchHandle<T>) -> BatchResults<T> {
    h.join_timeout(DEADLINE)
        .unwrap_or_else(|_| panic!("a batch did not finish within {DEADLINE:?}"))
}

/// Runs `f` on its own thread and fails the test if it takes longer than
/// `limit` (a deadline that only catches a hang; the thread is left
/// behind). A panic in `f` fails the test with its own message.
pub fn within<R: Send + 'static>(
    what: &str,
    limit: Duration,
    f: impl FnOnce() -> R + Send + 'static,
) -> R {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
    });
    match rx.recv_timeout(limit) {
        Ok(Ok(r)) => r,
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(_) => panic!("{what} did not return within {limit:?}"),
    }
}

// Not every test binary that includes this module calls it.
#[allow(unused_imports)]
pub use concur_core::conformance::{bounded, join, wait_until, DEADLINE};

/// Accepts one connection on `listener`, failing the test if none comes
/// within [`DEADLINE`] (`what` names the peer awaited).
pub fn accept_within(listener: &UnixListener, what: &str) -> UnixStream {
    let mut pfd = libc::pollfd {
        fd: listener.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let end = Instant::now() + DEADLINE;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        let ms = libc::c_int::try_from(left.as_millis()).unwrap();
        // SAFETY: one valid pollfd for the call's duration.
        let ready = unsafe { libc::poll(&mut pfd, 1, ms) };
        if ready == 1 {
            // Readable: a connection waits, so this accept returns at once.
            return listener.accept().unwrap().0;
        }
        let interrupted =
            ready < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted;
        assert!(
            interrupted && Instant::now() < end,
            "{what} did not connect within {DEADLINE:?}"
        );
    }
}

/// Sets `CONCUR_PROCS_QUIET_PANICS` in this process: its workers then keep
/// the panics of tasks off stderr (each panic still fails its task, message
/// and location kept), so a passing run stays quiet. Call it before `main`,
/// while the process has one thread: see [`quiet_worker_panics!`].
pub fn set_quiet_worker_panics() {
    std::env::set_var("CONCUR_PROCS_QUIET_PANICS", "1");
}

/// Defines a constructor that calls [`set_quiet_worker_panics`] before
/// `main`: for test binaries whose tasks panic on purpose.
#[allow(unused_macros)] // each test target uses part of this module
macro_rules! quiet_worker_panics {
    () => {
        #[ctor::ctor]
        fn quiet_worker_panics() {
            crate::common::set_quiet_worker_panics();
        }
    };
}
#[allow(unused_imports)]
pub(crate) use quiet_worker_panics;

/// Pids of this process's child processes (threads are not listed in
/// `/proc`, only processes), zombies included.
pub fn children() -> Vec<u32> {
    let me = std::process::id();
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(me) {
            out.push(pid);
        }
    }
    out
}

/// Lowers this whole process's soft descriptor limit to `limit` (a test
/// binary that calls it should hold only tests that want it).
pub fn lower_fd_limit(limit: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid out-pointer, then a valid in-pointer.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = limit.min(lim.rlim_max);
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
}

/// `x * 3 + 1`, after spinning `spin_us` microseconds (so that kills land
/// while tasks run).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Calc {
    pub x: u64,
    pub spin_us: u64,
}

impl Task for Calc {
    type Output = u64;
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = "procs-tests::Calc";
    fn run(self, _cx: &mut TaskContext<'_, Self>) -> u64 {
        let end = Instant::now() + Duration::from_micros(self.spin_us);
        while Instant::now() < end {
            std::hint::spin_loop();
        }
        self.x * 3 + 1
    }
}

/// Runs the ignored test `role` of the test binary `exe` in a child process
/// (the child sees `role` in the environment variable `role_env`), after
/// `setup` ran in the child between fork and exec; kills the child if it has
/// not ended within [`DEADLINE`]. Returns its status and its standard
/// output, followed by its standard error (its workers' too) after a
/// `--- stderr ---` line, so that a passing run prints nothing and a
/// failing one shows everything. As rayon-core's
/// `stack_overflow_crash.rs`: a crash or a change of process-wide state
/// stays in the child.
pub fn run_role(
    exe: &std::path::Path,
    role_env: &str,
    role: &str,
    setup: impl FnMut() -> std::io::Result<()> + Send + Sync + 'static,
) -> (std::process::ExitStatus, String) {
    let out = run_role_with(exe, role_env, role, &[], setup);
    (
        out.status,
        format!("{}\n--- stderr ---\n{}", out.stdout, out.stderr),
    )
}

/// Fails unless this process runs `role`, as a child that [`run_role`]
/// started with `role` in `role_env`: an ignored role test that the
/// harness was asked to run directly does nothing else.
pub fn in_role(role_env: &str, role: &str) {
    assert_eq!(
        std::env::var(role_env).as_deref(),
        Ok(role),
        "a role run only by its parent test"
    );
}

/// Fails unless the role whose end [`run_role`] gave succeeded and printed
/// `marker` (its last step).
pub fn assert_role_passed((status, out): (std::process::ExitStatus, String), marker: &str) {
    assert!(status.success(), "role failed ({status}): {out}");
    assert!(out.contains(marker), "role did not finish: {out}");
}

/// What a role's process printed, and how it ended.
pub struct RoleOutput {
    pub pid: u32,
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// [`run_role`] with environment changes for the child (`None` removes
/// the variable), and its two streams apart.
pub fn run_role_with(
    exe: &std::path::Path,
    role_env: &str,
    role: &str,
    env: &[(&str, Option<&str>)],
    setup: impl FnMut() -> std::io::Result<()> + Send + Sync + 'static,
) -> RoleOutput {
    use std::os::unix::process::CommandExt;
    let mut command = std::process::Command::new(exe);
    command
        .args([
            "--exact",
            role,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(role_env, role);
    for (name, value) in env {
        match value {
            Some(v) => command.env(name, v),
            None => command.env_remove(name),
        };
    }
    // SAFETY: callers' setup closures only make async-signal-safe calls.
    unsafe {
        command.pre_exec(setup);
    }
    output_within(&mut command, &format!("role {role}"))
}

/// Runs `command` with both streams piped and returns what it printed;
/// kills it and fails the test (naming it `what`) if it has not ended
/// within [`DEADLINE`].
pub fn output_within(command: &mut std::process::Command, what: &str) -> RoleOutput {
    command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    // A binary a test has just written can be "busy" for a moment: another
    // thread of this test process may fork (to start a worker) while the
    // file is still open for writing, and that child holds the descriptor
    // until it execs (close-on-exec). The kernel then refuses to exec the
    // file (ETXTBSY) until that child has exec'd: retry a bounded number
    // of times.
    let mut tries = 0;
    let child = loop {
        match command.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 100 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => break other.unwrap(),
        }
    };
    let pid = child.id();
    // Both pipes are drained while the child runs (a full pipe would stall it).
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(DEADLINE) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            // SAFETY: plain kill(2) of the child this test started, not yet reaped.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("{what} did not finish within {DEADLINE:?}");
        }
    };
    RoleOutput {
        pid,
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The end of a kill-storm test: every result of the map of
/// `Calc { x, .. }` over `0..` is present and correct, the pool still
/// takes work, and dropping it reaps every worker. `kills` says what the
/// storm killed, for the failure messages.
pub fn assert_storm_survived(
    pool: concur_procs::ProcessPool,
    results: &[Result<u64, TaskError>],
    tasks: u64,
    kills: &str,
) {
    use concur_procs::Executor;
    assert_eq!(results.len() as u64, tasks, "one result per input");
    let failed: Vec<_> = results
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.as_ref().err().map(|e| (i, e.clone())))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {tasks} failed after {kills}, first {:?}",
        failed.len(),
        failed.first()
    );
    for (x, r) in (0u64..).zip(results) {
        assert_eq!(*r.as_ref().unwrap(), x * 3 + 1, "item {x}");
    }
    // The pool did not fail: it still takes work.
    let after = pool
        .submit(Calc { x: 1, spin_us: 0 })
        .unwrap()
        .join_timeout(DEADLINE)
        .unwrap_or_else(|_| panic!("the pool hangs after the storm"));
    assert_eq!(after.expect("the pool did not fail"), 4);
    drop(pool);
    wait_until("every worker is reaped", DEADLINE, || children().is_empty());
}

/// The state letter of `stat`, a `/proc/.../stat` file (`R`, `S`, `T`,
/// `Z`, ...); `None` when it cannot be read.
fn stat_state(stat: &std::path::Path) -> Option<char> {
    let stat = std::fs::read_to_string(stat).ok()?;
    // The state follows the name, which is in parentheses and may hold
    // spaces and parentheses itself.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.trim_start().chars().next()
}

/// The state letter of process `pid` (`R`, `S`, `T`, `Z`, ...); `None`
/// when it is gone.
pub fn proc_state(pid: u32) -> Option<char> {
    stat_state(std::path::Path::new(&format!("/proc/{pid}/stat")))
}

/// True while `pid` exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    proc_state(pid).is_some_and(|s| s != 'Z' && s != 'X')
}

/// True once every thread of `pid` is stopped (`T` or `t`): a stop signal
/// stops the threads one by one, and a thread still running could take a
/// message.
pub fn all_threads_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks
        .flatten()
        .all(|t| stat_state(&t.path().join("stat")).is_some_and(|s| s == 'T' || s == 't'))
}

/// Sends `sig` to `pid`, failing the test if it cannot.
pub fn signal(pid: u32, sig: i32) {
    let pid = libc::pid_t::try_from(pid).unwrap();
    // SAFETY: a plain signal to a process of this test.
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0, "kill({pid}, {sig})");
}

/// Resumes, then kills, every pid it holds when dropped, so a failing test
/// leaves no stopped worker or sleeping child behind.
#[derive(Default)]
pub struct KillOnDrop(Vec<(u32, bool)>);

impl KillOnDrop {
    /// Adds `pid` (a child of this test, or a process one of its workers
    /// started).
    pub fn push(&mut self, pid: u32) {
        self.0.push((pid, children().contains(&pid)));
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let ours = children();
        for &(pid, was_child) in &self.0 {
            // A child of ours that is reaped may have its pid reused: only
            // while it is still our child.
            if was_child && !ours.contains(&pid) {
                continue;
            }
            if let Ok(pid) = libc::pid_t::try_from(pid) {
                // SAFETY: plain signals to a pid this test started or stopped.
                unsafe {
                    libc::kill(pid, libc::SIGCONT);
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
    }
}

/// The sockets this process holds.
pub fn sockets() -> Vec<i32> {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read_link(e.path()).is_ok_and(|p| p.to_string_lossy().starts_with("socket:"))
        })
        .filter_map(|e| e.file_name().to_string_lossy().parse().ok())
        .collect()
}

/// An ipc-channel packet, as ipc-channel encodes it, of one frame whose
/// header is `head` (our wire's bytes), with an empty body, no shared
/// memory and no channel: for tasks that forge what a worker sends.
pub fn one_frame_packet(head: &[u8]) -> Vec<u8> {
    // postcard: varint lengths.
    let mut data = vec![1u8]; // one frame
    data.push(u8::try_from(head.len()).unwrap());
    data.extend(head);
    data.push(0); // empty body
    data.push(0); // no shared memory
    data.push(0); // no channel
                  // ipc-channel's record header: fragment size, then total size.
    let mut msg = Vec::new();
    msg.extend(((16 + data.len()) as u64).to_le_bytes());
    msg.extend((data.len() as u64).to_le_bytes());
    msg.extend(data);
    msg
}

/// Sends `msg` on every socket this process holds (in a worker: its
/// channel to the parent among them), without blocking.
pub fn send_on_every_socket(msg: &[u8]) {
    for fd in sockets() {
        // SAFETY: sends a plain buffer on a descriptor of ours.
        unsafe {
            libc::send(fd, msg.as_ptr().cast(), msg.len(), libc::MSG_DONTWAIT);
        }
    }
}

/// Bytes encoded as one block (fast in debug builds, unlike `Vec<u8>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob(pub Vec<u8>);

impl Serialize for Blob {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Blob;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Blob, E> {
                Ok(Blob(v.to_vec()))
            }
            fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Blob, E> {
                Ok(Blob(v))
            }
        }
        d.deserialize_byte_buf(V)
    }
}

/// How a [`Crash`] task ends its worker.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub enum How {
    Abort,
    Segfault,
    Sigkill,
    Panic,
    /// Allocates this many bytes and touches them.
    Allocate(u64),
}

/// Crashes its worker, after waiting for a go-ahead message when `wait` is set.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Crash {
    pub how: How,
    pub wait: bool,
}

impl Task for Crash {
    type Output = u32;
    type ToCaller = u32;
    type FromCaller = ();
    const NAME: &'static str = "procs-tests::Crash";
    fn run(self, cx: &mut TaskContext<'_, Self>) -> u32 {
        cx.send(std::process::id()).unwrap();
        if self.wait {
            cx.recv().expect("go-ahead");
        }
        match self.how {
            How::Abort => std::process::abort(),
            How::Segfault => {
                // SAFETY: none; this write faults on purpose to end the worker.
                unsafe { std::ptr::null_mut::<u8>().write_volatile(1) };
                0
            }
            How::Sigkill => {
                // SAFETY: raise takes a plain signal number.
                unsafe { libc::raise(libc::SIGKILL) };
                0
            }
            How::Panic => panic!("crash test panic {}", 42),
            How::Allocate(n) => {
                // A failed allocation prints its size on stderr before the
                // abort: expected here, so kept out of the test's output.
                let _quiet = Silenced::stderr();
                let v = vec![1u8; usize::try_from(n).unwrap()];
                let v = std::hint::black_box(v);
                u32::from(v[v.len() / 2])
            }
        }
    }
}

/// Standard error sent to `/dev/null` while it lives (in a worker: the
/// process is the task's alone).
struct Silenced(libc::c_int);

impl Silenced {
    fn stderr() -> Self {
        // SAFETY: plain descriptor calls; the copy of fd 2 is kept to be put back.
        unsafe {
            let saved = libc::dup(2);
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY);
            if null >= 0 {
                libc::dup2(null, 2);
                libc::close(null);
            }
            Silenced(saved)
        }
    }
}

impl Drop for Silenced {
    fn drop(&mut self) {
        if self.0 >= 0 {
            // SAFETY: puts back the copy made in `stderr`.
            unsafe {
                libc::dup2(self.0, 2);
                libc::close(self.0);
            }
        }
    }
}

/// A per-worker initializer that sends the worker's standard error to
/// `/dev/null` for good: for pools whose workers are made to fail in ways
/// that print before they end (a failed allocation prints its size).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SilenceStderr;

impl Task for SilenceStderr {
    type Output = ();
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = "procs-tests::SilenceStderr";
    fn run(self, _cx: &mut TaskContext<'_, Self>) {
        std::mem::forget(Silenced::stderr());
    }
}

/// Returns its worker's identity.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Who;

impl Task for Who {
    type Output = concur_core::WorkerInfo;
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = "procs-tests::Who";
    fn run(self, cx: &mut TaskContext<'_, Self>) -> concur_core::WorkerInfo {
        cx.worker()
    }
}

/// Sleeps, after telling the caller its pid.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sleep {
    pub ms: u64,
}

impl Task for Sleep {
    type Output = u32;
    type ToCaller = u32;
    type FromCaller = ();
    const NAME: &'static str = "procs-tests::Sleep";
    fn run(self, cx: &mut TaskContext<'_, Self>) -> u32 {
        let _ = cx.send(std::process::id());
        std::thread::sleep(Duration::from_millis(self.ms));
        std::process::id()
    }
}

/// `len` bytes: `i % 251` at `i`. Built by doubling a block with
/// `memcpy`, so that it is fast in a debug build too.
pub fn pattern(len: usize) -> Vec<u8> {
    let mut v: Vec<u8> = (0..251u8).collect();
    while v.len() < len {
        // A prefix of a whole number of periods: the copy continues the pattern.
        v.extend_from_within(..v.len());
    }
    v.truncate(len);
    v
}

/// The sum of the bytes, eight at a time (a per-byte loop is slow in a
/// debug build, and these tests sum hundreds of megabytes).
pub fn byte_sum(v: &[u8]) -> u64 {
    const LOW_BYTES: u64 = 0x00ff_00ff_00ff_00ff;
    const LOW_PAIRS: u64 = 0x0000_ffff_0000_ffff;
    let words = v.chunks_exact(8);
    let tail: u64 = words.remainder().iter().map(|&b| u64::from(b)).sum();
    words.fold(tail, |acc, w| {
        let w = u64::from_le_bytes(w.try_into().unwrap());
        let pairs = (w & LOW_BYTES) + ((w >> 8) & LOW_BYTES);
        let quads = (pairs & LOW_PAIRS) + ((pairs >> 16) & LOW_PAIRS);
        acc + (quads & 0xffff_ffff) + (quads >> 32)
    })
}

/// Sums its input and returns `out_len` bytes: [`pattern`] when
/// `patterned`, else all 5 (cheap to make).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Echo {
    pub input: Blob,
    pub out_len: usize,
    pub patterned: bool,
}

impl Task for Echo {
    type Output = (u64, Blob);
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = "procs-tests::Echo";
    fn run(self, _cx: &mut TaskContext<'_, Self>) -> (u64, Blob) {
        let sum = byte_sum(&self.input.0);
        if !self.patterned {
            return (sum, Blob(vec![5; self.out_len]));
        }
        (sum, Blob(pattern(self.out_len)))
    }
}

concur_procs::register!(Crash, Who, Sleep, Echo, Calc, SilenceStderr);

/// The expected exit of each crash kind.
pub fn signal_of(how: How) -> WorkerExit {
    match how {
        How::Abort => WorkerExit::Signal(libc::SIGABRT),
        How::Segfault => WorkerExit::Signal(libc::SIGSEGV),
        How::Sigkill => WorkerExit::Signal(libc::SIGKILL),
        How::Panic | How::Allocate(_) => WorkerExit::Unknown,
    }
}

/// Starts `command` (this test binary in a role that prints a report and
/// then waits to be killed) with its standard output piped, and waits up
/// to [`DEADLINE`] for a line holding `marker`. Returns the child, the
/// rest of that line after `marker`, and the thread reading what the
/// child and its descendants print after it (it ends when the last of
/// them is gone). Without such a line the child is killed and reaped, and
/// the test fails.
pub fn spawn_reporting(
    command: &mut std::process::Command,
    marker: &'static str,
) -> (std::process::Child, String, std::thread::JoinHandle<()>) {
    use std::io::BufRead;
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            // libtest may have printed "test <role> ... " before it.
            if let Some((_, rest)) = line.split_once(marker) {
                let _ = tx.send(rest.to_owned());
            }
        }
    });
    match rx.recv_timeout(DEADLINE) {
        Ok(line) => (child, line, reader),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the role did not report ({marker}): {e}");
        }
    }
}
