//! Tasks and helpers shared by the process-backend tests.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use concur_procs::{Task, TaskContext, TaskError, TaskHandle, WorkerExit};
use serde::{Deserialize, Serialize};

/// Every wait in these tests gives up after this long.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// Joins `h`, failing the test if it does not finish within [`DEADLINE`].
pub fn join<T: Task>(h: TaskHandle<T>) -> Result<T::Output, TaskError> {
    h.join_timeout(DEADLINE)
        .unwrap_or_else(|h| panic!("{h:?} did not finish within {DEADLINE:?}"))
}

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
/// not ended within [`DEADLINE`]. Returns its status and standard output.
/// As rayon-core's `stack_overflow_crash.rs`: a crash or a change of
/// process-wide state stays in the child.
pub fn run_role(
    exe: &std::path::Path,
    role_env: &str,
    role: &str,
    setup: impl FnMut() -> std::io::Result<()> + Send + Sync + 'static,
) -> (std::process::ExitStatus, String) {
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
        .env(role_env, role)
        .stdout(std::process::Stdio::piped());
    // SAFETY: callers' setup closures only make async-signal-safe calls.
    unsafe {
        command.pre_exec(setup);
    }
    let mut child = command.spawn().unwrap();
    let end = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("role {role} hung");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut out).unwrap();
    (status, out)
}

/// Waits until `cond` holds, failing the test after `limit`.
pub fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    let mut pause = Duration::from_millis(1);
    while !cond() {
        assert!(
            Instant::now() < end,
            "{what} did not happen within {limit:?}"
        );
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// True while `pid` exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|s| s != "Z" && s != "X"),
        Err(_) => false,
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
                let v = vec![1u8; usize::try_from(n).unwrap()];
                let v = std::hint::black_box(v);
                u32::from(v[v.len() / 2])
            }
        }
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

/// Sums its input and returns `out_len` bytes: `i % 251` at `i` when
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
        let sum = self.input.0.iter().map(|&b| u64::from(b)).sum();
        if !self.patterned {
            return (sum, Blob(vec![5; self.out_len]));
        }
        (
            sum,
            Blob((0..self.out_len).map(|i| (i % 251) as u8).collect()),
        )
    }
}

concur_procs::register!(Crash, Who, Sleep, Echo, Calc);

/// The expected exit of each crash kind.
pub fn signal_of(how: How) -> WorkerExit {
    match how {
        How::Abort => WorkerExit::Signal(libc::SIGABRT),
        How::Segfault => WorkerExit::Signal(libc::SIGSEGV),
        How::Sigkill => WorkerExit::Signal(libc::SIGKILL),
        How::Panic | How::Allocate(_) => WorkerExit::Unknown,
    }
}
