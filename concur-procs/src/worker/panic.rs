//! How a panic in a worker is reported on its standard error.
//!
//! The default hook says `thread 'main' panicked at ...`, which reads as
//! the user's own `main` panicking. In a worker the report names the
//! worker, its pid and the task it was running:
//!
//! ```text
//! concur worker 1 (pid 4242) panicked in task `my::Task` at src/x.rs:3:5:
//! the message
//! ```
//!
//! `RUST_BACKTRACE` works as with the default hook (`1`: a backtrace,
//! `full`: the full one, else a note saying how to get one, once).
//! [`QUIET`] turns the reports off (the panic still fails its task with
//! its message and location).

use std::backtrace::Backtrace;
use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::ThreadId;

/// The environment variable that silences workers' panic reports when set
/// to anything but empty or `0`: for test suites whose tasks panic on
/// purpose. A worker reads it when it starts.
pub(crate) const QUIET: &str = "CONCUR_PROCS_QUIET_PANICS";

/// The worker's index, once the parent told it ([`usize::MAX`] before).
static INDEX: AtomicUsize = AtomicUsize::new(usize::MAX);
/// The task the worker runs, if any.
static TASK: Mutex<Option<Running>> = Mutex::new(None);
/// The thread that runs tasks.
static TASK_THREAD: OnceLock<ThreadId> = OnceLock::new();
/// Whether the backtrace note was printed already.
static NOTED: AtomicBool = AtomicBool::new(false);

/// Replaces the panic hook with the worker's, unless [`QUIET`] asks for
/// none; the calling thread is the one that runs tasks.
pub(super) fn install() {
    let _ = TASK_THREAD.set(std::thread::current().id());
    let quiet = std::env::var_os(QUIET).is_some_and(|v| !v.is_empty() && v != "0");
    if quiet {
        std::panic::set_hook(Box::new(|_| {}));
    } else {
        std::panic::set_hook(Box::new(report));
    }
}

/// Records the worker's index, for the reports.
pub(super) fn set_index(index: usize) {
    INDEX.store(index, Ordering::Relaxed);
}

/// What a report names as the running task. A function's path is
/// `'static`: naming it allocates nothing on the worker's per-task path.
pub(super) enum Running {
    /// A registered task, by its registry name.
    Task(Arc<str>),
    /// A function task, by the function's Rust path.
    Function(&'static str),
}

/// Records the task now running (`None`: between tasks), for the reports.
pub(super) fn set_task(task: Option<Running>) {
    let mut t = TASK.lock().unwrap_or_else(|e| e.into_inner());
    *t = task;
}

fn report(info: &std::panic::PanicHookInfo<'_>) {
    let mut text = String::from("concur worker ");
    let index = INDEX.load(Ordering::Relaxed);
    if index != usize::MAX {
        let _ = write!(text, "{index} ");
    }
    let _ = write!(text, "(pid {})", std::process::id());
    let thread = std::thread::current();
    if TASK_THREAD.get() != Some(&thread.id()) {
        let _ = write!(text, ", thread '{}',", thread.name().unwrap_or("<unnamed>"));
    }
    text.push_str(" panicked");
    // Never wait here: the panic may have come from code holding the lock.
    if let Ok(task) = TASK.try_lock() {
        match &*task {
            Some(Running::Task(name)) => {
                let _ = write!(text, " in task `{name}`");
            }
            Some(Running::Function(path)) => {
                let _ = write!(text, " in task `{path}`");
            }
            None => {}
        }
    }
    if let Some(at) = info.location() {
        let _ = write!(text, " at {}:{}:{}", at.file(), at.line(), at.column());
    }
    let message = info
        .payload()
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| info.payload().downcast_ref::<String>().map(String::as_str))
        .unwrap_or("Box<dyn Any>");
    let _ = writeln!(text, ":\n{message}");
    match std::env::var("RUST_BACKTRACE").as_deref() {
        Ok("0") | Err(_) => {
            if !NOTED.swap(true, Ordering::Relaxed) {
                text.push_str(
                    "note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n",
                );
            }
        }
        Ok("full") => {
            let _ = writeln!(text, "stack backtrace:\n{:#}", Backtrace::force_capture());
        }
        Ok(_) => {
            let _ = writeln!(text, "stack backtrace:\n{}", Backtrace::force_capture());
        }
    }
    // One write, so that reports of several workers do not interleave.
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}
