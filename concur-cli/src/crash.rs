//! The crash experiment for backends that cannot survive an abort: the
//! binary re-runs itself (`concur __internal crash-child`) and watches the
//! child die.
//!
//! The child builds a pool, submits one [`Abort`] task and some
//! well-behaved [`Block`] tasks, prints `finished` for each of those that
//! returns and `survived` if it gets to the end. The parent counts the lines
//! and reads the exit status.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use concur_core::{Executor, WorkerExit};

use crate::backend::{Backend, PoolKind, Visit};
use crate::cli::InternalJob;
use crate::exit::{BoxError, CliError, CliResult, Problem};
use crate::output;
use crate::tasks::{Abort, Block};

/// Keeps a process that is about to abort from writing a core dump (slow,
/// and litter on the user's disk).
pub fn no_core_dump() {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit only read and write the struct we pass,
        // which lives for the duration of each call.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_CORE, &mut lim) == 0 {
                lim.rlim_cur = 0;
                libc::setrlimit(libc::RLIMIT_CORE, &lim);
            }
        }
    }
}

/// What the parent saw of one child run.
#[derive(Debug)]
pub struct ChildOutcome {
    /// The child reached its end alive.
    pub survived: bool,
    /// Well-behaved tasks the child saw finish before it ended.
    pub others_finished: usize,
    /// How the child ended, in words (`killed by SIGABRT (signal 6)`).
    pub exit: String,
}

/// Runs the crash experiment for `backend` in a child process.
///
/// # Errors
/// When the child cannot be started, does not end within `deadline` (it is
/// then killed), or fails for another reason than the experiment.
pub fn run_child(
    backend: Backend,
    workers: usize,
    others: usize,
    sleep_ms: u64,
    deadline: Duration,
) -> Result<ChildOutcome, BoxError> {
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .args([
            "__internal",
            "crash-child",
            "--backend",
            backend.name().as_str(),
        ])
        .args(["--workers", &workers.to_string()])
        .args(["--others", &others.to_string()])
        .args(["--sleep-ms", &sleep_ms.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });

    let end = Instant::now() + deadline;
    let mut lines = Vec::new();
    loop {
        match rx.recv_timeout(end.saturating_duration_since(Instant::now())) {
            Ok(line) => lines.push(line),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Box::new(Problem(format!(
                    "the crash experiment's child process did not end within {deadline:?}"
                ))));
            }
        }
    }
    let status = child.wait()?;
    let _ = reader.join();
    let stderr = err_reader.join().unwrap_or_default();

    if !lines.iter().any(|l| l == "ready") {
        let why = stderr.lines().last().unwrap_or("no output").to_owned();
        return Err(Box::new(Problem(format!(
            "the crash experiment's child process failed before the experiment ({}): {why}",
            describe(status)
        ))));
    }
    Ok(ChildOutcome {
        survived: status.success() && lines.iter().any(|l| l == "survived"),
        others_finished: lines.iter().filter(|l| *l == "finished").count(),
        exit: describe(status),
    })
}

/// How a process ended, in core's words ([`WorkerExit`]'s, which name
/// the signal): `killed by SIGABRT (signal 6)`.
pub fn describe(status: ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            return WorkerExit::Signal(sig).to_string();
        }
    }
    status
        .code()
        .map_or(WorkerExit::Unknown, WorkerExit::Code)
        .to_string()
}

/// Runs an internal job (the child side).
///
/// # Errors
/// When the job cannot run.
pub fn internal(job: InternalJob) -> CliResult<()> {
    match job {
        InternalJob::CrashChild {
            backend,
            workers,
            others,
            sleep_ms,
        } => {
            let backend = backend
                .name()
                .and_then(Backend::compiled)
                .ok_or_else(|| CliError::usage("crash-child needs a backend compiled in"))?;
            backend.visit(Child {
                workers,
                others,
                sleep_ms,
            })
        }
    }
}

struct Child {
    workers: usize,
    others: usize,
    sleep_ms: u64,
}

impl Visit for Child {
    type Output = CliResult<()>;
    fn visit<K: PoolKind>(self, backend: Backend) -> CliResult<()> {
        let doing = || format!("crash experiment on {backend}");
        let pool = K::build(self.workers).map_err(|e| CliError::runtime(doing(), e))?;
        output::stdout("ready\n")?;
        let abort = pool
            .submit(Abort)
            .map_err(|e| CliError::runtime(doing(), e))?;
        let others = (0..self.others)
            .map(|_| pool.submit(Block { ms: self.sleep_ms }))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| CliError::runtime(doing(), e))?;
        for h in others {
            if h.join().is_ok() {
                output::stdout("finished\n")?;
            }
        }
        let _ = abort.join();
        output::stdout("survived\n")
    }
}
