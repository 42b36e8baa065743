//! The conformance suite: one function per clause of the [`Executor`]
//! contract, run by every backend as one named `#[test]` per case.
//!
//! A backend implements [`Backend`] and pastes the suite into a test module:
//!
//! ```ignore
//! struct Threads;
//! impl concur_core::conformance::Backend for Threads {
//!     type Pool = concur_threads::ThreadPool;
//!     fn build(&self, config: concur_core::PoolConfig) -> Result<Self::Pool, concur_core::TaskError> {
//!         concur_threads::ThreadPool::with_config(config)
//!     }
//! }
//! mod conformance {
//!     concur_core::conformance_suite!(
//!         backend: super::Threads,
//!         supported: [shared_memory_visible],
//!         unsupported: [
//!             timeout_stops_running_task,
//!             cancel_running_stops_worker,
//!             memory_isolated,
//!             pool_failure_fails_work_in_flight,
//!         ],
//!     );
//! }
//! ```
//!
//! Cases that need a [`Capabilities`] flag are *gated*: the backend lists
//! each gated case as supported or unsupported. Unsupported cases become
//! `#[ignore]`d tests (visible in every run as "ignored"), and the generated
//! test `declared_capabilities_match` fails when the lists disagree with the
//! pool's [`Executor::capabilities`] or leave a gated case out.
//!
//! The suite's tasks are registered, so process backends run them as they
//! are. Every wait has a deadline ([`DEADLINE`]): a hang fails the case.

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::{
    Capabilities, Configure, ErrorKind, Executor, ExecutorExt, MapOptions, PoolConfig, Task,
    TaskContext, TaskError, TaskHandle, WorkerInfo,
};

/// How a backend builds pools for the suite.
pub trait Backend {
    /// The backend's pool type.
    type Pool: Executor + 'static;
    /// Builds a pool from `config`.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] for invalid settings; anything else the backend reports.
    fn build(&self, config: PoolConfig) -> Result<Self::Pool, TaskError>;
}

/// The longest any single wait in the suite may take before the case fails.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// Runs `f` on this thread under a watchdog: if it has not returned
/// within [`DEADLINE`], says that `what` hung and aborts the test binary.
/// For waits that borrow from the test (a `map` or a `scope` over a pool on
/// its stack): a panic could not end them, since a thread that borrows
/// would have to be joined first. The message goes to the real standard
/// error (the harness's capture would die with the process); process
/// workers end by their parent-death signal.
pub fn bounded<R>(what: &str, f: impl FnOnce() -> R) -> R {
    let (disarm, armed) = mpsc::channel::<()>();
    let what = what.to_owned();
    std::thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = armed.recv_timeout(DEADLINE) {
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "{what} did not finish within {DEADLINE:?}: aborting the test binary"
            );
            std::process::abort();
        }
    });
    let r = f();
    drop(disarm);
    r
}

// ---------------------------------------------------------------- tasks --

/// Adds two numbers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Add(pub u64, pub u64);
impl Task for Add {
    type Output = u64;
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = "concur::conformance::Add";
    fn run(self, _cx: &mut TaskContext<'_, Self>) -> u64 {
        self.0 + self.1
    }
}

/// Returns `Err` in its own terms when asked to.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fallible {
    /// Fail with this text instead of returning the value.
    pub fail: Option<String>,
}
impl Task for Fallible {
    type Output = Result<u32, String>;
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = "concur::conformance::Fallible";
    fn run(self, _cx: &mut TaskContext<'_, Self>) -> Result<u32, String> {
        match self.fail {
            Some(e) => Err(e),
            None => Ok(42),
        }
    }
}

/// Panics with the given message when `panic` is set; else returns `n`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MaybePanic {
    /// The value to return.
    pub n: u64,
    /// Panic instead, with this message.
    pub panic: Option<String>,
}
impl Task for MaybePanic {
    type Output = u64;
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = "concur::conformance::MaybePanic";
    fn run(self, _cx: &mut TaskContext<'_, Self>) -> u64 {
        if let Some(msg) = self.panic {
            panic!("{msg}");
        }
        self.n
    }
}

/// Tells the caller it started (with its worker), then waits for one
/// message from the caller (or [`DEADLINE`]) and returns its worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Block;
impl Task for Block {
    type Output = WorkerInfo;
    type ToCaller = WorkerInfo;
    type FromCaller = ();
    const NAME: &'static str = "concur::conformance::Block";
    fn run(self, cx: &mut TaskContext<'_, Self>) -> WorkerInfo {
        let _ = cx.send(cx.worker());
        let deadline = Instant::now() + DEADLINE;
        while Instant::now() < deadline && !cx.is_cancelled() {
            if cx.recv_timeout(Duration::from_millis(50)).is_some() {
                break;
            }
        }
        cx.worker()
    }
}

thread_local! {
    static MARKS: Cell<u64> = const { Cell::new(0) };
    static INITS: Cell<u64> = const { Cell::new(0) };
    static RUNS: Cell<u64> = const { Cell::new(0) };
}

/// Counts one run on the worker's thread.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Mark;
impl Task for Mark {
    type Output = ();
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = "concur::conformance::Mark";
    fn run(self, _cx: &mut TaskContext<'_, Self>) {
        MARKS.with(|m| m.set(m.get() + 1));
    }
}

/// Reports how many [`Mark`]s ran on this worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CountMarks;
impl Task for CountMarks {
    type Output = u64;
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = "concur::conformance::CountMarks";
    fn run(self, _cx: &mut TaskContext<'_, Self>) -> u64 {
        MARKS.with(Cell::get)
    }
}

/// The initializer used by the suite: counts its runs on the worker's thread.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CountInit;
impl Task for CountInit {
    type Output = ();
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = "concur::conformance::CountInit";
    fn run(self, _cx: &mut TaskContext<'_, Self>) {
        INITS.with(|m| m.set(m.get() + 1));
    }
}

/// What a worker looked like to one task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    /// The worker.
    pub worker: WorkerInfo,
    /// Initializer runs seen on the worker's thread.
    pub inits: u64,
    /// Tasks run on the worker's thread so far, this one included.
    pub runs: u64,
}

impl Seen {
    /// Asserts that the worker had run at most `limit` tasks, this one
    /// included, and its initializer once.
    fn check_limit(&self, limit: u64) {
        assert!(
            self.runs <= limit,
            "a worker ran {} tasks with a limit of {limit}",
            self.runs
        );
        assert_eq!(
            self.inits, 1,
            "a recycled worker did not run its initializer"
        );
    }
}

/// Reports the worker and its thread's counters.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WhoAmI;
impl Task for WhoAmI {
    type Output = Seen;
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = "concur::conformance::WhoAmI";
    fn run(self, cx: &mut TaskContext<'_, Self>) -> Seen {
        let runs = RUNS.with(|r| {
            r.set(r.get() + 1);
            r.get()
        });
        Seen {
            worker: cx.worker(),
            inits: INITS.with(Cell::get),
            runs,
        }
    }
}

/// Sends `count` numbers to the caller, then returns `count`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stream {
    /// How many messages.
    pub count: u32,
}
impl Task for Stream {
    type Output = u32;
    type ToCaller = u32;
    type FromCaller = ();
    const NAME: &'static str = "concur::conformance::Stream";
    fn run(self, cx: &mut TaskContext<'_, Self>) -> u32 {
        for i in 0..self.count {
            cx.send(i).expect("send to caller");
        }
        self.count
    }
}

/// Answers each number from the caller with its double until it gets 0;
/// returns how many it answered.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Doubler;
impl Task for Doubler {
    type Output = u32;
    type ToCaller = u64;
    type FromCaller = u64;
    const NAME: &'static str = "concur::conformance::Doubler";
    fn run(self, cx: &mut TaskContext<'_, Self>) -> u32 {
        let mut answered = 0;
        while let Some(n) = cx.recv_timeout(DEADLINE) {
            if n == 0 {
                break;
            }
            cx.send(n * 2).expect("send to caller");
            answered += 1;
        }
        answered
    }
}

/// Reads messages from the caller with a blocking `recv` until there are
/// no more; returns how many it read.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Drain;
impl Task for Drain {
    type Output = u32;
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = "concur::conformance::Drain";
    fn run(self, cx: &mut TaskContext<'_, Self>) -> u32 {
        let mut n = 0;
        while cx.recv().is_some() {
            n += 1;
        }
        n
    }
}

static SHARED: Mutex<Option<HashMap<u64, u64>>> = Mutex::new(None);

/// Adds `add` to the process-global counter `key` and returns its new value.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Bump {
    /// Which counter (each case picks its own).
    pub key: u64,
    /// How much to add.
    pub add: u64,
}
impl Task for Bump {
    type Output = u64;
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = "concur::conformance::Bump";
    fn run(self, _cx: &mut TaskContext<'_, Self>) -> u64 {
        bump(self.key, self.add)
    }
}

fn bump(key: u64, add: u64) -> u64 {
    let mut g = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    let v = g.get_or_insert_with(HashMap::new).entry(key).or_insert(0);
    *v += add;
    *v
}

fn fresh_key() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    (u64::from(std::process::id()) << 32) | NEXT.fetch_add(1, Ordering::Relaxed)
}

/// How many [`Hold`]s with each key are running in this process (a task
/// that ran in another process leaves the count here unchanged).
static RUNNING: Mutex<Option<HashMap<u64, i64>>> = Mutex::new(None);

fn running(key: u64, add: i64) -> i64 {
    let mut g = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
    let v = g.get_or_insert_with(HashMap::new).entry(key).or_insert(0);
    *v += add;
    *v
}

/// A task that only ends when cancelled: it tells the caller it started
/// (with its worker), then waits until `cx.is_cancelled()` (or ten times
/// [`DEADLINE`], so a backend that never tells it fails the case instead
/// of passing late). With `quick` it returns at once. While it runs it
/// counts itself under `key` in this process.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hold {
    /// Its counter (each case picks its own).
    pub key: u64,
    /// Return at once instead.
    pub quick: bool,
}
impl Task for Hold {
    type Output = bool;
    type ToCaller = WorkerInfo;
    type FromCaller = ();
    const NAME: &'static str = "concur::conformance::Hold";
    fn run(self, cx: &mut TaskContext<'_, Self>) -> bool {
        if self.quick {
            return false;
        }
        running(self.key, 1);
        let _ = cx.send(cx.worker());
        let give_up = Instant::now() + 10 * DEADLINE;
        while !cx.is_cancelled() && Instant::now() < give_up {
            // A poll, not a synchronisation: the task has no other signal.
            std::thread::sleep(Duration::from_millis(5));
        }
        running(self.key, -1);
        true
    }
}

/// Sleeps `ms` milliseconds (ending early once cancelled), then returns `n`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Nap {
    /// The value to return.
    pub n: u64,
    /// How long to sleep.
    pub ms: u64,
}
impl Task for Nap {
    type Output = u64;
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = "concur::conformance::Nap";
    fn run(self, cx: &mut TaskContext<'_, Self>) -> u64 {
        let end = Instant::now() + Duration::from_millis(self.ms);
        while !cx.is_cancelled() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(5).min(end - Instant::now()));
        }
        self.n
    }
}

/// Ends its worker's process at once (`std::process::abort`). Only for
/// backends that isolate crashes: on threads it would end the test.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Abort;
impl Task for Abort {
    type Output = ();
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = "concur::conformance::Abort";
    fn run(self, _cx: &mut TaskContext<'_, Self>) {
        std::process::abort();
    }
}

crate::register!(
    Add, Fallible, MaybePanic, Block, Mark, CountMarks, CountInit, WhoAmI, Stream, Doubler, Drain,
    Bump, Hold, Nap, Abort
);

// -------------------------------------------------------------- helpers --

fn pool<B: Backend>(b: &B, config: PoolConfig) -> Guard<B::Pool> {
    Guard(b.build(config).expect("the backend builds a valid pool"))
}

/// A pool that, when a case fails, is stopped with `shutdown_now` rather
/// than the graceful shutdown of its drop, which would wait for the very
/// task that made the case fail.
struct Guard<P: Executor>(P);

impl<P: Executor> std::ops::Deref for Guard<P> {
    type Target = P;
    fn deref(&self) -> &P {
        &self.0
    }
}

impl<P: Executor> Drop for Guard<P> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.shutdown_now();
        }
    }
}

/// A pool shared with helper threads, for cases whose calls may hang on a
/// broken backend: each such call runs on a thread of its own, bounded by
/// [`DEADLINE`].
fn shared_pool<B: Backend>(b: &B, config: PoolConfig) -> Arc<B::Pool> {
    Arc::new(b.build(config).expect("the backend builds a valid pool"))
}

/// Runs `f` on the pool from a thread of its own and waits at most
/// [`DEADLINE`] for it (a panic in `f` fails the case as usual). If it
/// does not return, [abandons](abandon) the pool and fails the case (the
/// stuck thread is left behind rather than hanging the test).
fn within_deadline<P: Executor + 'static>(
    p: &Arc<P>,
    what: &str,
    f: impl FnOnce(&P) + Send + 'static,
) {
    let (tx, rx) = mpsc::channel();
    let p2 = p.clone();
    std::thread::spawn(move || {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&p2)));
        drop(p2);
        let _ = tx.send(r);
    });
    match rx.recv_timeout(DEADLINE) {
        Ok(Ok(())) => {}
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(_) => {
            abandon(p);
            panic!("{what} did not return within {DEADLINE:?}");
        }
    }
}

/// Gives up on a pool whose case failed: `shutdown_now` from a thread of
/// its own, and the pool is never dropped (leaked), so neither call can
/// hang the test on a broken backend.
fn abandon<P: Executor + 'static>(p: &Arc<P>) {
    let p = p.clone();
    std::thread::spawn(move || {
        p.shutdown_now();
        std::mem::forget(p);
    });
}

/// Drops the last reference to the pool on a thread of its own; fails the
/// case if the drop does not return within [`DEADLINE`].
fn drop_within_deadline<P: Executor + 'static>(p: Arc<P>) {
    assert_eq!(Arc::strong_count(&p), 1, "the pool is still shared");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        drop(p);
        let _ = tx.send(());
    });
    assert!(
        rx.recv_timeout(DEADLINE).is_ok(),
        "dropping the pool did not return within {DEADLINE:?}"
    );
}

/// Joins `h`, failing the test instead of waiting past [`DEADLINE`] (a
/// deadline that only turns a hang into a failure).
pub fn join<T: Task>(h: TaskHandle<T>) -> Result<T::Output, TaskError> {
    match h.join_timeout(DEADLINE) {
        Ok(r) => r,
        Err(h) => panic!("{h:?} did not finish within {DEADLINE:?}"),
    }
}

fn ok<T: Task>(h: TaskHandle<T>) -> T::Output {
    join(h).unwrap_or_else(|e| panic!("task failed: {e}"))
}

/// Submits a [`Block`] and waits until it runs; returns its handle and worker.
fn started_block<P: Executor>(p: &P) -> (TaskHandle<Block>, WorkerInfo) {
    let h = p.submit(Block).expect("submit");
    let w = h
        .recv_timeout(DEADLINE)
        .expect("a blocking task starts within the deadline");
    (h, w)
}

/// True while the worker's thread (and so, for processes, its process) exists.
pub fn worker_alive(w: &WorkerInfo) -> bool {
    std::path::Path::new(&format!("/proc/{}/task/{}", w.pid, w.thread)).exists()
}

/// Polls `cond` until it holds, failing the test after `limit`: for states
/// another thread or process reaches with no event to wait on (a worker
/// gone, a submitter parked). The pause between polls grows from 1 ms to
/// 20 ms.
pub fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    let mut pause = Duration::from_millis(1);
    while !cond() {
        assert!(
            Instant::now() < end,
            "timed out after {limit:?} waiting until {what}"
        );
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// Counts how many items a map pulled from its input and not yet yielded.
struct Watch {
    pulled: Cell<usize>,
    yielded: Cell<usize>,
    max_out: Cell<usize>,
}

impl Watch {
    fn new() -> Self {
        Self {
            pulled: Cell::new(0),
            yielded: Cell::new(0),
            max_out: Cell::new(0),
        }
    }
    fn pull(&self) {
        self.pulled.set(self.pulled.get() + 1);
        let out = self.pulled.get() - self.yielded.get();
        self.max_out.set(self.max_out.get().max(out));
    }
    fn yielded(&self) {
        self.yielded.set(self.yielded.get() + 1);
    }
}

// ---------------------------------------------------------------- cases --

/// Delivery: a task's output comes back through its handle.
pub fn value_returned<B: Backend>(b: &B) {
    let p = pool(b, PoolConfig::new().workers(2));
    assert_eq!(ok(p.submit(Add(2, 40)).unwrap()), 42);
}

/// Tasks: a task's own error (an `Err` output) reaches the caller as a
/// value, apart from pool errors.
pub fn error_returned<B: Backend>(b: &B) {
    let p = pool(b, PoolConfig::new().workers(2));
    let h = p
        .submit(Fallible {
            fail: Some("no such file".into()),
        })
        .unwrap();
    assert_eq!(ok(h), Err("no such file".to_owned()));
    assert_eq!(ok(p.submit(Fallible { fail: None }).unwrap()), Ok(42));
}

/// Panics: a panic becomes that task's `Panicked` error with message and location.
pub fn panic_becomes_error<B: Backend>(b: &B) {
    let p = pool(b, PoolConfig::new().workers(1));
    let h = p
        .submit(MaybePanic {
            n: 0,
            panic: Some("kaboom 17".into()),
        })
        .unwrap();
    match join(h).unwrap_err().kind() {
        ErrorKind::Panicked { message, location } => {
            assert_eq!(message, "kaboom 17");
            let at = location.as_deref().expect("panic location kept");
            assert!(at.contains("conformance.rs"), "location {at}");
        }
        other => panic!("expected Panicked, got {other:?}"),
    }
}

/// Panics: the pool keeps its size and runs other tasks after panics.
pub fn pool_survives_panic<B: Backend>(b: &B) {
    let p = pool(b, PoolConfig::new().workers(2));
    let handles: Vec<_> = (0..20)
        .map(|n| {
            let panic = (n % 4 == 0).then(|| format!("panic {n}"));
            p.submit(MaybePanic { n, panic }).unwrap()
        })
        .collect();
    for (n, h) in (0..20).zip(handles) {
        match join(h) {
            Ok(v) => assert_eq!(v, n),
            Err(e) => assert!(n % 4 == 0 && matches!(e.kind(), ErrorKind::Panicked { .. })),
        }
    }
    assert_eq!(p.workers(), 2);
    assert_eq!(ok(p.submit(Add(1, 1)).unwrap()), 2);
}

/// Panics: a panic inside `map` fails that item alone.
pub fn map_panic_fails_one_item<B: Backend>(b: &B) {
    let p = pool(b, PoolConfig::new().workers(2));
    let results: Vec<_> = p
        .map((0..50).map(|n| MaybePanic {
            n,
            panic: (n == 7).then(|| "seven".into()),
        }))
        .collect();
    assert_eq!(results.len(), 50);
    for (n, r) in (0..50).zip(results) {
        if n == 7 {
            assert!(
                matches!(r.unwrap_err().kind(), ErrorKind::Panicked { message, .. } if message == "seven")
            );
        } else {
            assert_eq!(r.unwrap(), n);
        }
    }
}

/// Map: results come back in input order.
pub fn map_keeps_order<B: Backend>(b: &B) {
    let p = pool(b, PoolConfig::new().workers(2));
    let out: Vec<u64> = p
        .map((0..2000).map(|i| Add(i, 1)))
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(out, (1..=2000).collect::<Vec<_>>());
}

/// Map: an empty input yields nothing.
pub fn map_empty_input<B: Backend>(b: &B) {
    let p = pool(b, PoolConfig::new().workers(2));
    assert_eq!(p.map(std::iter::empty::<Add>()).count(), 0);
    assert_eq!(p.map_unordered(std::iter::empty::<Add>()).count(), 0);
}

/// Map all: every output comes back, in input order; an empty input gives
/// an empty vector.
pub fn map_all_returns_every_output_in_order<B: Backend>(b: &B) {
    let p = pool(b, PoolConfig::new().workers(2));
    let out = bounded("map_all", || p.map_all((0..2000).map(|i| Add(i, 1))));
    assert_eq!(out.unwrap(), (1..=2000).collect::<Vec<_>>());
    let none = bounded("map_all of nothing", || p.map_all(Vec::<Add>::new()));
    assert_eq!(none.unwrap(), Vec::<u64>::new());
}

/// Map all: a failed task fails alone; the error holds every task's own
/// result (the others' outputs included) and converts into the first
/// failure.
pub fn map_all_keeps_every_result_when_one_fails<B: Backend>(b: &B) {
    let p = pool(b, PoolConfig::new().workers(2));
    let tasks = (0..50).map(|n| MaybePanic {
        n,
        panic: [7, 30].contains(&n).then(|| format!("no {n}")),
    });
    let e = bounded("map_all", || p.map_all(tasks)).unwrap_err();
    assert_eq!(e.failed(), 2);
    assert_eq!(e.first_error().0, 7);
    assert_eq!(e.results().len(), 50);
    for (n, r) in (0..50).zip(e.results()) {
        match r {
            Ok(v) => assert_eq!(*v, n),
            Err(err) => assert!(
                [7, 30].contains(&n)
                    && matches!(err.kind(), ErrorKind::Panicked { message, .. } if *message == format!("no {n}")),
                "task {n}: {err:?}"
            ),
        }
    }
    let first: TaskError = e.into();
    assert!(matches!(first.kind(), ErrorKind::Panicked { message, .. } if message == "no 7"));
    // The pool goes on.
    assert_eq!(bounded("map_all", || p.map_all([Add(1, 2)])).unwrap(), [3]);
}

/// Map all: after shutdown every task fails `ShutDown` (none is lost).
pub fn map_all_after_shutdown_fails_every_task<B: Backend>(b: &B) {
    let p = pool(b, PoolConfig::new().workers(1));
    p.shutdown().unwrap();
    let e = bounded("map_all", || p.map_all((0..3).map(|i| Add(i, i)))).unwrap_err();
    assert_eq!(e.failed(), 3);
    for r in e.results() {
        assert_eq!(r.as_ref().unwrap_err().kind(), &ErrorKind::ShutDown);
    }
}

/// Map all: a worker's task limit holds (each worker runs at most its
/// limit, and each new worker runs the initializer once).
pub fn map_all_honours_the_task_limit<B: Backend>(b: &B) {
    let p = pool(
        b,
        PoolConfig::new()
            .workers(2)
            .max_tasks_per_worker(3)
            .initializer(CountInit),
    );
    // Workers part-way to their limit when the call starts.
    for _ in 0..2 {
        ok(p.submit(WhoAmI).unwrap());
    }
    let seen = bounded("map_all", || p.map_all((0..60).map(|_| WhoAmI))).unwrap();
    assert_eq!(seen.len(), 60);
    seen.iter().for_each(|s| s.check_limit(3));
}

/// Map all: the task timeout bounds each task; the one over it fails
/// alone with `TimedOut`.
pub fn map_all_timeout_fails_one_task<B: Backend>(b: &B) {
    let t = Duration::from_millis(500);
    let p = pool(b, PoolConfig::new().workers(1).task_timeout(t));
    let slow = u64::try_from(t.as_millis() * 20).unwrap();
    let tasks = [(1, 0), (2, slow), (3, 0)].map(|(n, ms)| Nap { n, ms });
    let e = bounded("map_all", || p.map_all(tasks)).unwrap_err();
    assert_eq!(e.failed(), 1);
    let r = e.results();
    assert_eq!(*r[0].as_ref().unwrap(), 1);
    assert!(
        matches!(r[1].as_ref().unwrap_err().kind(), ErrorKind::TimedOut { after } if *after == t)
    );
    assert_eq!(*r[2].as_ref().unwrap(), 3);
}

/// Map (unordered): every input yields exactly one result, with its index.
pub fn map_unordered_complete<B: Backend>(b: &B) {
    let p = pool(b, PoolConfig::new().workers(2));
    let mut seen = vec![false; 2000];
    for (i, r) in p.map_unordered((0..2000).map(|i| Add(i, 0))) {
        assert_eq!(r.unwrap(), i as u64);
        assert!(!std::mem::replace(&mut seen[i], true), "index {i} twice");
    }
    assert!(seen.iter().all(|s| *s));
}

fn check_in_flight<B: Backend>(b: &B, unordered: bool) {
    let p = pool(b, PoolConfig::new().workers(2));
    let watch = Watch::new();
    let input = (0..500u64).map(|i| {
        watch.pull();
        Add(i, 0)
    });
    let opts = MapOptions::default().in_flight(5);
    let mut count = 0;
    if unordered {
        for (_, r) in p.map_unordered_with(input, opts) {
            r.unwrap();
            watch.yielded();
            count += 1;
        }
    } else {
        for r in p.map_with(input, opts) {
            r.unwrap();
            watch.yielded();
            count += 1;
        }
    }
    assert_eq!(count, 500);
    assert!(
        watch.max_out.get() <= 5,
        "{} tasks in flight with a bound of 5",
        watch.max_out.get()
    );
    assert!(watch.max_out.get() >= 2, "the map never overlapped tasks");
}

/// Map: never more tasks in flight (pulled from the input, not yet yielded)
/// than the bound.
pub fn map_in_flight_bound_holds<B: Backend>(b: &B) {
    check_in_flight(b, false);
}

/// Map (unordered): the in-flight bound holds too.
pub fn map_unordered_in_flight_bound_holds<B: Backend>(b: &B) {
    check_in_flight(b, true);
}

/// Map: the input is pulled lazily; an endless iterator works.
pub fn map_lazy_endless_input<B: Backend>(b: &B) {
    let p = pool(b, PoolConfig::new().workers(2));
    let watch = Watch::new();
    let endless = (0u64..).map(|i| {
        watch.pull();
        Add(i, i)
    });
    let first: Vec<u64> = p
        .map_with(endless, MapOptions::default().in_flight(64))
        .take(100)
        .map(Result::unwrap)
        .collect();
    assert_eq!(first, (0..100).map(|i| i * 2).collect::<Vec<_>>());
    assert!(
        watch.pulled.get() <= 100 + 64,
        "pulled {}",
        watch.pulled.get()
    );
}

/// Cancellation: a task cancelled before it starts never runs and resolves `Cancelled`.
pub fn cancel_before_start<B: Backend>(b: &B) {
    let p = pool(b, PoolConfig::new().workers(1));
    let (blocker, _) = started_block(&*p);
    let queued = p.submit(Mark).unwrap();
    assert!(queued.cancel());
    assert!(!queued.cancel(), "a second cancel is a no-op");
    blocker.send(()).unwrap();
    ok(blocker);
    assert!(join(queued).unwrap_err().is_cancelled());
    assert_eq!(
        ok(p.submit(CountMarks).unwrap()),
        0,
        "the cancelled task ran"
    );
}

/// Cancellation: cancelling a running task resolves its handle at once and
/// the pool keeps working.
pub fn cancel_running_resolves<B: Backend>(b: &B) {
    let p = pool(b, PoolConfig::new().workers(1));
    let (h, _) = started_block(&*p);
    assert!(h.cancel());
    assert!(join(h).unwrap_err().is_cancelled());
    assert_eq!(ok(p.submit(Add(3, 4)).unwrap()), 7);
}

/// Shutdown: `shutdown` finishes queued work before it returns.
pub fn shutdown_finishes_queued<B: Backend>(b: &B) {
    let p = pool(b, PoolConfig::new().workers(1));
    let handles: Vec<_> = (0..30).map(|i| p.submit(Add(i, 1)).unwrap()).collect();
    p.shutdown().unwrap();
    for (i, h) in (0..30).zip(handles) {
        assert!(
            h.is_finished(),
            "shutdown returned before task {i} finished"
        );
        assert_eq!(ok(h), i + 1);
    }
}

/// Shutdown: `shutdown_now` cancels queued and running work.
pub fn shutdown_now_cancels<B: Backend>(b: &B) {
    let p = pool(b, PoolConfig::new().workers(1));
    let (running, _) = started_block(&*p);
    let queued: Vec<_> = (0..10).map(|_| p.submit(Mark).unwrap()).collect();
    p.shutdown_now();
    assert!(join(running).unwrap_err().is_cancelled());
    for h in queued {
        assert!(join(h).unwrap_err().is_cancelled());
    }
}

/// Shutdown: a submit after shutdown fails with the shut-down kind.
pub fn submit_after_shutdown_fails<B: Backend>(b: &B) {
    let p = pool(b, PoolConfig::new().workers(1));
    p.shutdown().unwrap();
    assert!(p.submit(Add(1, 1)).unwrap_err().is_shut_down());
    assert!(p.submit_batch(vec![Add(1, 1)]).unwrap_err().is_shut_down());
    let p2 = pool(b, PoolConfig::new().workers(1));
    p2.shutdown_now();
    assert!(p2.submit(Add(1, 1)).unwrap_err().is_shut_down());
}

/// Shutdown: dropping the pool finishes its work and joins every worker.
pub fn drop_joins_workers<B: Backend>(b: &B) {
    let p = pool(b, PoolConfig::new().workers(2));
    let (h1, w1) = started_block(&*p);
    let (h2, w2) = started_block(&*p);
    assert_ne!(w1.incarnation, w2.incarnation);
    let tail: Vec<_> = (0..10).map(|i| p.submit(Add(i, 0)).unwrap()).collect();
    h1.send(()).unwrap();
    h2.send(()).unwrap();
    drop(p);
    // Joined threads and reaped processes leave /proc a moment after the
    // join or wait returns (the kernel finishes the exit asynchronously), so
    // this waits; a worker left running never goes and fails the case.
    wait_until("every worker of the dropped pool is gone", DEADLINE, || {
        !worker_alive(&w1) && !worker_alive(&w2)
    });
    assert_eq!(ok(h1), w1);
    assert_eq!(ok(h2), w2);
    for (i, h) in (0..10).zip(tail) {
        assert_eq!(ok(h), i);
    }
}

/// Messages: a task streams messages to its caller, in order, while it runs.
pub fn messages_task_to_caller<B: Backend>(b: &B) {
    let p = pool(b, PoolConfig::new().workers(2));
    let h = p.submit(Stream { count: 500 }).unwrap();
    for i in 0..500 {
        assert_eq!(h.recv_timeout(DEADLINE), Some(i));
    }
    assert_eq!(h.recv_timeout(DEADLINE), None);
    assert_eq!(ok(h), 500);
}

/// Messages: the caller talks to a running task and gets answers.
pub fn messages_both_ways<B: Backend>(b: &B) {
    let p = pool(b, PoolConfig::new().workers(2));
    let h = p.submit(Doubler).unwrap();
    for n in 1..=50u64 {
        h.send(n).unwrap();
        assert_eq!(h.recv_timeout(DEADLINE), Some(n * 2));
    }
    h.send(0).unwrap();
    assert_eq!(ok(h), 50);
}

/// Messages: when the caller drops its handle, the task's `recv` returns
/// `None` after the messages already sent, so a task waiting for more ends.
pub fn dropped_handle_ends_recv<B: Backend>(b: &B) {
    let p = pool(b, PoolConfig::new().workers(1));
    let h = p.submit(Drain).unwrap();
    for _ in 0..3 {
        h.send(()).unwrap();
    }
    drop(h);
    // One worker: this runs only once `Drain` has seen the end of its messages.
    assert_eq!(ok(p.submit(Add(1, 2)).unwrap()), 3);
}

/// Async: handles are futures and `submit_async` works inside a tokio runtime.
pub fn await_in_tokio<B: Backend>(b: &B) {
    let p = pool(b, PoolConfig::new().workers(2));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let sum = rt.block_on(async {
        let mut total = 0;
        for i in 0..20 {
            let h = p.submit_async(Add(i, 1)).await.unwrap();
            total += h.await.unwrap();
        }
        let s = p.submit_async(Stream { count: 3 }).await.unwrap();
        let mut got = Vec::new();
        while let Some(m) = s.next_message().await {
            got.push(m);
        }
        assert_eq!(got, vec![0, 1, 2]);
        total + u64::from(s.await.unwrap())
    });
    assert_eq!(sum, (1..=20).sum::<u64>() + 3);
}

/// Delivery: 100k submitted tasks all complete, each exactly once.
pub fn many_tasks_complete<B: Backend>(b: &B) {
    let p = pool(b, PoolConfig::new().workers(2));
    let handles: Vec<_> = (0..100_000).map(|i| p.submit(Add(i, 1)).unwrap()).collect();
    let mut sum = 0u64;
    for h in handles {
        sum += ok(h);
    }
    assert_eq!(sum, (1..=100_000u64).sum());
}

/// Delivery: several threads can submit and join at once.
pub fn submit_from_many_threads<B: Backend>(b: &B) {
    let p = pool(b, PoolConfig::new().workers(2));
    std::thread::scope(|s| {
        let joins: Vec<_> = (0..4u64)
            .map(|t| {
                let p = &p;
                s.spawn(move || {
                    let hs: Vec<_> = (0..500)
                        .map(|i| p.submit(Add(t * 1000, i)).unwrap())
                        .collect();
                    hs.into_iter().map(ok).sum::<u64>()
                })
            })
            .collect();
        for (t, j) in (0..4u64).zip(joins) {
            assert_eq!(j.join().unwrap(), t * 1000 * 500 + (0..500).sum::<u64>());
        }
    });
}

/// Handles: every task has its own id.
pub fn task_ids_unique<B: Backend>(b: &B) {
    let p = pool(b, PoolConfig::new().workers(2));
    let hs: Vec<_> = (0..100).map(|i| p.submit(Add(i, 0)).unwrap()).collect();
    let ids: HashSet<_> = hs.iter().map(TaskHandle::id).collect();
    assert_eq!(ids.len(), 100);
    hs.into_iter().for_each(|h| {
        ok(h);
    });
}

/// Batches: one result per task in order; a panic fails its slot only.
pub fn batch_results_in_order<B: Backend>(b: &B) {
    let p = pool(b, PoolConfig::new().workers(2));
    let tasks = (0..10)
        .map(|n| MaybePanic {
            n,
            panic: (n == 3).then(|| "three".into()),
        })
        .collect();
    let results = p
        .submit_batch(tasks)
        .unwrap()
        .join_timeout(DEADLINE)
        .unwrap_or_else(|h| panic!("{h:?} did not finish within {DEADLINE:?}"));
    assert_eq!(results.len(), 10);
    for (n, r) in (0..10).zip(results) {
        match r {
            Ok(v) => assert_eq!(v, n),
            Err(e) => assert!(n == 3 && matches!(e.kind(), ErrorKind::Panicked { .. })),
        }
    }
}

/// Workers: the pool runs exactly the configured number of workers at once.
pub fn worker_count_honoured<B: Backend>(b: &B) {
    let p = pool(b, PoolConfig::new().workers(3));
    assert_eq!(p.workers(), 3);
    let blocks: Vec<_> = (0..3).map(|_| started_block(&*p)).collect();
    let indices: HashSet<_> = blocks.iter().map(|(_, w)| w.index).collect();
    assert_eq!(indices, HashSet::from([0, 1, 2]));
    let fourth = p.submit(Block).unwrap();
    assert_eq!(
        fourth.recv_timeout(Duration::from_millis(200)),
        None,
        "a fourth task ran while three workers were busy"
    );
    for (h, _) in &blocks {
        h.send(()).unwrap();
    }
    let w = fourth.recv_timeout(DEADLINE).expect("fourth task starts");
    assert!(w.index < 3);
    fourth.send(()).unwrap();
    ok(fourth);
    blocks.into_iter().for_each(|(h, _)| {
        ok(h);
    });
}

/// Workers: the default worker count is the cores available.
pub fn default_worker_count<B: Backend>(b: &B) {
    let p = pool(b, PoolConfig::new());
    assert_eq!(p.workers(), crate::default_workers());
}

/// Workers: the initializer runs once in each worker, before its first task.
pub fn initializer_runs_once_per_worker<B: Backend>(b: &B) {
    let p = pool(b, PoolConfig::new().workers(2).initializer(CountInit));
    let handles: Vec<_> = (0..40).map(|_| p.submit(WhoAmI).unwrap()).collect();
    for s in handles.into_iter().map(ok) {
        assert_eq!(
            s.inits, 1,
            "worker {:?} ran its initializer {} times",
            s.worker, s.inits
        );
    }
}

/// Workers: with a task limit, a worker that reached it is replaced by a
/// fresh one (which runs the initializer again).
pub fn max_tasks_recycles_worker<B: Backend>(b: &B) {
    let p = pool(
        b,
        PoolConfig::new()
            .workers(2)
            .max_tasks_per_worker(3)
            .initializer(CountInit),
    );
    let seen: Vec<Seen> = (0..18).map(|_| ok(p.submit(WhoAmI).unwrap())).collect();
    let mut per_incarnation: HashMap<u64, u64> = HashMap::new();
    for s in &seen {
        s.check_limit(3);
        *per_incarnation.entry(s.worker.incarnation).or_default() += 1;
    }
    assert!(per_incarnation.values().all(|n| *n <= 3));
    assert!(
        per_incarnation.len() >= 6,
        "18 tasks with a limit of 3 need 6 workers, saw {}",
        per_incarnation.len()
    );
}

/// Configuration: invalid values fail at build time naming the field.
pub fn invalid_config_rejected<B: Backend>(b: &B) {
    for (config, field) in [
        (PoolConfig::new().workers(0), "workers"),
        (PoolConfig::new().workers(crate::MAX_WORKERS + 1), "workers"),
        (PoolConfig::new().workers(usize::MAX), "workers"),
        (PoolConfig::new().queue_bound(0), "queue_bound"),
        (
            PoolConfig::new().task_timeout(Duration::ZERO),
            "task_timeout",
        ),
        (
            PoolConfig::new().max_tasks_per_worker(0),
            "max_tasks_per_worker",
        ),
    ] {
        match b.build(config) {
            Err(e) => match e.kind() {
                ErrorKind::Config { field: f, .. } => assert_eq!(f, field),
                other => panic!("expected a Config error for {field}, got {other:?}"),
            },
            Ok(_) => panic!("a pool with an invalid {field} was built"),
        }
    }
}

/// A timeout too long for the clock (`Duration::MAX`) is no timeout: tasks
/// and batches run to their result and the pool drops cleanly.
pub fn endless_timeout_is_none<B: Backend>(b: &B) {
    let p = pool(b, PoolConfig::new().workers(1).task_timeout(Duration::MAX));
    assert_eq!(ok(p.submit(Add(3, 4)).unwrap()), 7);
    let results = bounded("a batch with an endless timeout", || {
        p.submit_batch(vec![Add(0, 1), Add(1, 1)]).unwrap().join()
    });
    assert_eq!(
        results.into_iter().map(Result::unwrap).collect::<Vec<_>>(),
        vec![1, 2]
    );
    bounded("the pool drops", move || drop(p));
}

/// Queue bound: at most `queue_bound` tasks are queued or running; room
/// comes back as tasks finish.
pub fn queue_bound_applies_backpressure<B: Backend>(b: &B) {
    let p = pool(b, PoolConfig::new().workers(1).queue_bound(2));
    let (blocker, _) = started_block(&*p);
    let queued = p.submit(Add(1, 1)).unwrap();
    assert!(
        p.admission().try_acquire(1).unwrap().is_none(),
        "queue bound of 2 exceeded"
    );
    blocker.send(()).unwrap();
    ok(blocker);
    assert_eq!(ok(queued), 2);
    wait_until("room comes back", DEADLINE, || p.admission().in_use() == 0);
    assert_eq!(ok(p.submit(Add(2, 2)).unwrap()), 4);
}

/// Queue bound: a submitter blocked on a full queue gets the next room
/// before anyone who comes after it.
pub fn blocked_submitter_goes_first<B: Backend>(b: &B) {
    let p = shared_pool(b, PoolConfig::new().workers(1).queue_bound(1));
    let held = p.admission().acquire(1).unwrap();
    let (tx, rx) = mpsc::channel();
    let p2 = p.clone();
    std::thread::spawn(move || {
        let _ = tx.send(p2.submit(Block));
    });
    wait_until("the submitter waits for room", DEADLINE, || {
        p.admission().waiting() == 1
    });
    drop(held);
    assert!(
        p.admission().try_acquire(1).unwrap().is_none(),
        "a newcomer took the room a waiting submitter was owed"
    );
    let block = rx
        .recv_timeout(DEADLINE)
        .expect("the waiting submitter got the room")
        .expect("submit");
    block.send(()).unwrap();
    ok(block);
}

/// Queue bound: submitters blocked on a full queue are admitted in the
/// order they came.
pub fn blocked_submitters_keep_their_order<B: Backend>(b: &B) {
    const N: usize = 4;
    let p = shared_pool(b, PoolConfig::new().workers(1).queue_bound(1));
    let key = fresh_key();
    let held = p.admission().acquire(1).unwrap();
    let (tx, rx) = mpsc::channel();
    for i in 0..N {
        let (p2, tx) = (p.clone(), tx.clone());
        std::thread::spawn(move || {
            // With room for one task, tasks run one at a time in the order
            // they were admitted: the counter tells that order.
            let r = p2.submit(Bump { key, add: 1 }).and_then(join);
            let _ = tx.send((i, r));
        });
        wait_until("the submitter waits for room", DEADLINE, || {
            p.admission().waiting() == i + 1
        });
    }
    drop(held);
    let mut admitted = vec![0; N];
    for _ in 0..N {
        let (i, r) = rx
            .recv_timeout(DEADLINE)
            .expect("every blocked submitter is admitted");
        admitted[i] = r.expect("bump");
    }
    assert_eq!(
        admitted,
        (1..=N as u64).collect::<Vec<_>>(),
        "blocked submitters were admitted out of order"
    );
}

/// Shutdown: `shutdown` and `shutdown_now` wake submitters blocked on a
/// full queue with the shut-down kind, while work is still running.
pub fn shutdown_wakes_blocked_submitters<B: Backend>(b: &B) {
    for now in [false, true] {
        let p = shared_pool(b, PoolConfig::new().workers(1).queue_bound(1));
        let (block, _) = started_block(&*p);
        let (tx, rx) = mpsc::channel();
        for i in 0..2 {
            let (p2, tx) = (p.clone(), tx.clone());
            std::thread::spawn(move || {
                let _ = tx.send(p2.submit(Add(1, 1)).map(drop));
            });
            wait_until("the submitter waits for room", DEADLINE, || {
                p.admission().waiting() == i + 1
            });
        }
        let (stopped_tx, stopped) = mpsc::channel();
        let p2 = p.clone();
        std::thread::spawn(move || {
            let r = if now {
                p2.shutdown_now();
                Ok(())
            } else {
                p2.shutdown()
            };
            let _ = stopped_tx.send(r);
        });
        for _ in 0..2 {
            let r = rx
                .recv_timeout(DEADLINE)
                .expect("the blocked submitter was woken");
            let e = r.expect_err("a blocked submitter got room after shutdown");
            assert!(e.is_shut_down(), "{e:?}");
        }
        if now {
            assert!(join(block).unwrap_err().is_cancelled());
        } else {
            block.send(()).unwrap();
            ok(block);
        }
        stopped
            .recv_timeout(DEADLINE)
            .expect("shutdown returns")
            .expect("shutdown");
    }
}

/// Queue bound: `start` takes only a permit handed out by the pool's own
/// queue with room for what it starts, so the bound cannot be skipped
/// through the public API; a refused start holds no room.
pub fn start_refuses_a_foreign_permit<B: Backend>(b: &B) {
    let p = pool(b, PoolConfig::new().workers(1).queue_bound(1));
    let is_permit_error =
        |e: &TaskError| matches!(e.kind(), ErrorKind::Config { field, .. } if field == "permit");
    let elsewhere = crate::Admission::new(8);
    let e = p
        .start(Add(1, 1), elsewhere.acquire(1).unwrap())
        .unwrap_err();
    assert!(is_permit_error(&e), "{e:?}");
    let e = p
        .start_batch(vec![Add(1, 1)], elsewhere.acquire(1).unwrap())
        .unwrap_err();
    assert!(is_permit_error(&e), "{e:?}");
    let one = p.admission().acquire(1).unwrap();
    let e = p.start_batch(vec![Add(1, 1), Add(2, 2)], one).unwrap_err();
    assert!(is_permit_error(&e), "{e:?}");
    assert_eq!(p.admission().in_use(), 0, "a refused start kept its room");
    let own = p.admission().acquire(1).unwrap();
    assert_eq!(ok(p.start(Add(2, 3), own).unwrap()), 5);
}

/// Timeout: a task over its time limit fails with `TimedOut`; the pool goes on.
pub fn timeout_fails_handle<B: Backend>(b: &B) {
    let p = pool(
        b,
        PoolConfig::new()
            .workers(1)
            .task_timeout(Duration::from_millis(200)),
    );
    let h = p.submit(Block).unwrap();
    match join(h).unwrap_err().kind() {
        ErrorKind::TimedOut { after } => assert_eq!(*after, Duration::from_millis(200)),
        other => panic!("expected TimedOut, got {other:?}"),
    }
    assert_eq!(ok(p.submit(Add(5, 5)).unwrap()), 10);
}

/// Timeout (gated: `kills_on_timeout`): the timed-out task's worker is
/// stopped and replaced.
pub fn timeout_stops_running_task<B: Backend>(b: &B) {
    let p = pool(
        b,
        PoolConfig::new()
            .workers(1)
            .task_timeout(Duration::from_millis(300)),
    );
    let (h, w) = started_block(&*p);
    assert!(join(h).unwrap_err().is_timeout());
    wait_until("the timed-out worker is gone", DEADLINE, || {
        !worker_alive(&w)
    });
    let after = ok(p.submit(WhoAmI).unwrap());
    assert_ne!(after.worker.incarnation, w.incarnation);
    assert_eq!(
        after.worker.index, w.index,
        "the replacement takes the same slot"
    );
}

/// Cancellation (gated: `kills_on_cancel`): cancelling a running task stops
/// its worker, which is replaced.
pub fn cancel_running_stops_worker<B: Backend>(b: &B) {
    let p = pool(b, PoolConfig::new().workers(1));
    let (h, w) = started_block(&*p);
    assert!(h.cancel());
    wait_until("the cancelled worker is gone", DEADLINE, || {
        !worker_alive(&w)
    });
    let after = ok(p.submit(WhoAmI).unwrap());
    assert_ne!(after.worker.incarnation, w.incarnation);
}

/// Memory (gated: `shared_memory`): tasks change the caller's memory.
pub fn shared_memory_visible<B: Backend>(b: &B) {
    let p = pool(b, PoolConfig::new().workers(2));
    let key = fresh_key();
    let hs: Vec<_> = (0..4)
        .map(|_| p.submit(Bump { key, add: 1000 }).unwrap())
        .collect();
    hs.into_iter().for_each(|h| {
        ok(h);
    });
    assert_eq!(bump(key, 0), 4000);
}

/// Memory (gated: not `shared_memory`): tasks see their own copy; the
/// caller's memory is unchanged.
pub fn memory_isolated<B: Backend>(b: &B) {
    let p = pool(b, PoolConfig::new().workers(2));
    let key = fresh_key();
    let seen: Vec<u64> = (0..4)
        .map(|_| ok(p.submit(Bump { key, add: 1000 }).unwrap()))
        .collect();
    assert_eq!(bump(key, 0), 0, "the caller's counter changed");
    assert!(seen.iter().all(|v| v % 1000 == 0 && *v >= 1000));
}

/// Delivery (`TaskHandle::join_timeout`): a result that arrives while a
/// zero-timeout wait gives up stays in the handle; polling until done
/// always yields the task's real result, never a spurious `Cancelled`.
pub fn join_timeout_never_loses_a_result<B: Backend>(b: &B) {
    let p = pool(b, PoolConfig::new().workers(2));
    let deadline = Instant::now() + DEADLINE;
    for i in 0..5_000u64 {
        let mut h = p.submit(Add(i, 1)).unwrap();
        let r = loop {
            match h.join_timeout(Duration::ZERO) {
                Ok(r) => break r,
                Err(back) => h = back,
            }
            assert!(Instant::now() < deadline, "task {i} not done in time");
        };
        assert_eq!(r.unwrap_or_else(|e| panic!("task {i}: {e}")), i + 1);
    }
}

/// Map: dropping a `Map` (or `MapUnordered`) before its end cancels every
/// task it submitted and did not yield, as Python's `Executor.map` does;
/// so a pool whose map was abandoned still shuts down, with none of those
/// tasks left running.
pub fn dropping_a_map_cancels_what_it_did_not_yield<B: Backend>(b: &B) {
    let p = shared_pool(b, PoolConfig::new().workers(2));
    let key = fresh_key();
    let opts = MapOptions::default().in_flight(8).batch(1);
    within_deadline(&p, "a map's first result", move |p| {
        let mut m = p.map_with((0..50).map(|i| Hold { key, quick: i == 0 }), opts);
        assert!(!m.next().expect("a first result").unwrap());
    });
    // Both workers are free again only if the dropped map's tasks were cancelled.
    within_deadline(&p, "an unordered map's first result", move |p| {
        let mut m = p.map_unordered_with((0..50).map(|i| Hold { key, quick: i == 0 }), opts);
        let (i, r) = m.next().expect("a first result");
        assert_eq!((i, r.unwrap()), (0, false));
    });
    within_deadline(&p, "shutdown after dropping a map", |p| {
        let _ = p.shutdown();
    });
    assert_eq!(
        running(key, 0),
        0,
        "a task of a dropped map is still running"
    );
    drop_within_deadline(p);
}

/// Timeout (batches): the per-task timeout bounds each task of a batch, not
/// the batch: `[quick, sleeps well past T, quick]` gives
/// `[Ok, TimedOut { after: T }, Ok]`.
pub fn batch_timeout_is_per_task<B: Backend>(b: &B) {
    let t = Duration::from_millis(500);
    let p = pool(b, PoolConfig::new().workers(1).task_timeout(t));
    let slow = u64::try_from(t.as_millis() * 20).unwrap();
    let h = p
        .submit_batch(vec![
            Nap { n: 1, ms: 0 },
            Nap { n: 2, ms: slow },
            Nap { n: 3, ms: 0 },
        ])
        .unwrap();
    let results = h
        .join_timeout(DEADLINE)
        .unwrap_or_else(|h| panic!("{h:?} did not finish within {DEADLINE:?}"));
    assert_eq!(results.len(), 3);
    assert_eq!(*results[0].as_ref().expect("the first task succeeds"), 1);
    match results[1].as_ref().map_err(TaskError::kind) {
        Err(ErrorKind::TimedOut { after }) => assert_eq!(*after, t),
        other => panic!("expected TimedOut {{ after: {t:?} }}, got {other:?}"),
    }
    assert_eq!(*results[2].as_ref().expect("the third task succeeds"), 3);
}

/// Shutdown: `shutdown_now` from another thread interrupts a `shutdown`
/// that is waiting for a running task: the `shutdown` returns and the
/// task's handle is `Cancelled`.
pub fn shutdown_now_interrupts_shutdown<B: Backend>(b: &B) {
    let p = shared_pool(b, PoolConfig::new().workers(1));
    let h = p
        .submit(Hold {
            key: fresh_key(),
            quick: false,
        })
        .unwrap();
    h.recv_timeout(DEADLINE).expect("the task starts");
    let (tx, rx) = mpsc::channel();
    let p2 = p.clone();
    std::thread::spawn(move || {
        let _ = p2.shutdown();
        drop(p2);
        let _ = tx.send(());
    });
    wait_until("shutdown has begun (the queue is closed)", DEADLINE, || {
        p.admission().is_closed()
    });
    within_deadline(&p, "shutdown_now during shutdown", |p| p.shutdown_now());
    if rx.recv_timeout(DEADLINE).is_err() {
        abandon(&p);
        panic!("shutdown did not return within {DEADLINE:?} after shutdown_now");
    }
    let e = join(h).unwrap_err();
    assert!(e.is_cancelled(), "expected Cancelled, got {e:?}");
    drop_within_deadline(p);
}

/// Delivery (gated: `isolates_crashes`): when workers keep dying until the
/// pool gives up, every task in flight still ends, in `WorkerLost` or
/// `PoolFailed`, and dropping the pool returns.
pub fn pool_failure_fails_work_in_flight<B: Backend>(b: &B) {
    let p = shared_pool(b, PoolConfig::new().workers(2).retries(2));
    let deadline = Instant::now() + DEADLINE;
    let mut handles = Vec::new();
    for i in 0..100 {
        match p.submit(Abort) {
            Ok(h) => handles.push(h),
            // A pool that has already failed may refuse new work at once.
            Err(e) => assert!(
                matches!(e.kind(), ErrorKind::PoolFailed { .. } | ErrorKind::ShutDown),
                "submission {i}: {e:?}"
            ),
        }
    }
    for (i, mut h) in handles.into_iter().enumerate() {
        let r = loop {
            match h.join_timeout(Duration::from_millis(50)) {
                Ok(r) => break r,
                Err(back) => h = back,
            }
            if Instant::now() >= deadline {
                abandon(&p);
                panic!("task {i} of a failing pool did not end within {DEADLINE:?}");
            }
        };
        let e = r.expect_err("a task that aborts cannot succeed");
        assert!(
            matches!(
                e.kind(),
                ErrorKind::WorkerLost(_) | ErrorKind::PoolFailed { .. }
            ),
            "task {i}: expected WorkerLost or PoolFailed, got {e:?}"
        );
    }
    drop_within_deadline(p);
}

// ------------------------------------------------------ function tasks --

/// A `fn` item for the function-task cases.
fn square(x: u64) -> u64 {
    x * x
}

/// Several arguments, as one tuple.
fn label((name, n, scale): (String, u32, f64)) -> String {
    format!("{name}={}", f64::from(n) * scale)
}

/// Panics with its input in the message.
fn explode(n: u64) -> u64 {
    panic!("exploded on {n}")
}

/// A pool for a function-task case, or `None` when the backend declares it
/// does not run function tasks: then it must refuse them at submit with a
/// typed error (never accept one and lose it), which this checks.
fn fn_pool<B: Backend>(b: &B, config: PoolConfig) -> Option<Guard<B::Pool>> {
    let p = pool(b, config);
    if p.capabilities().function_tasks {
        return Some(p);
    }
    let refused = p.submit_fn(square, 3).err();
    assert!(
        matches!(refused.as_ref().map(TaskError::kind), Some(ErrorKind::Config { .. })),
        "a backend without function tasks refuses them at submit with a Config error, got {refused:?}"
    );
    let refused = p.map_fn(square, 0..3u64).next();
    assert!(
        matches!(refused, Some(Err(ref e)) if matches!(e.kind(), ErrorKind::Config { .. })),
        "map_fn on a backend without function tasks fails with a Config error, got {refused:?}"
    );
    None
}

/// Function tasks: a `fn` item runs as a task, unregistered, on every
/// backend that declares `function_tasks`.
pub fn fn_item_runs<B: Backend>(b: &B) {
    let Some(p) = fn_pool(b, PoolConfig::new().workers(2)) else {
        return;
    };
    assert_eq!(ok(p.submit_fn(square, 12).unwrap()), 144);
}

/// Function tasks: a closure that captures nothing runs as a task.
pub fn fn_closure_runs<B: Backend>(b: &B) {
    let Some(p) = fn_pool(b, PoolConfig::new().workers(2)) else {
        return;
    };
    let sum = |v: Vec<u32>| v.into_iter().map(u64::from).sum::<u64>();
    assert_eq!(ok(p.submit_fn(sum, vec![1, 2, 3]).unwrap()), 6);
    let h = p
        .submit_fn(|s: String| s.to_uppercase(), "abc".to_owned())
        .unwrap();
    assert_eq!(ok(h), "ABC");
}

/// Function tasks: several arguments travel as one tuple, and the output is
/// any serializable value (here a `String`, then a `Result` in the
/// function's own terms).
pub fn fn_tuple_args<B: Backend>(b: &B) {
    let Some(p) = fn_pool(b, PoolConfig::new().workers(2)) else {
        return;
    };
    let h = p.submit_fn(label, ("x".to_owned(), 3, 0.5)).unwrap();
    assert_eq!(ok(h), "x=1.5");
    let div = |(a, b): (i64, i64)| a.checked_div(b).ok_or_else(|| format!("{a}/{b}"));
    assert_eq!(ok(p.submit_fn(div, (7, 2)).unwrap()), Ok(3));
    assert_eq!(ok(p.submit_fn(div, (7, 0)).unwrap()), Err("7/0".to_owned()));
}

/// Function tasks (map): `map_fn` yields `f(input)` for every input, in
/// input order; 2,000 inputs are enough that `map` sends them in batches.
pub fn map_fn_keeps_order<B: Backend>(b: &B) {
    let Some(p) = fn_pool(b, PoolConfig::new().workers(2)) else {
        return;
    };
    let out: Vec<u64> = p
        .map_fn(square, 0..2000u64)
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(out, (0..2000u64).map(|x| x * x).collect::<Vec<_>>());
    // Explicit batches through `FnTask` and the unordered map.
    let opts = MapOptions::default().batch(64);
    let mut seen = vec![false; 500];
    for (i, r) in p.map_unordered_with((0..500u64).map(|x| crate::FnTask::new(square, x)), opts) {
        assert_eq!(r.unwrap(), (i as u64) * (i as u64));
        assert!(!std::mem::replace(&mut seen[i], true), "index {i} twice");
    }
    assert!(seen.iter().all(|&s| s));
}

/// Function tasks (panics): a panicking function fails alone with
/// `Panicked`, its message naming the function and its location kept; in
/// `map_fn` only that item fails, and the pool goes on.
pub fn fn_panic_names_function<B: Backend>(b: &B) {
    let Some(p) = fn_pool(b, PoolConfig::new().workers(1)) else {
        return;
    };
    match join(p.submit_fn(explode, 7).unwrap()).unwrap_err().kind() {
        ErrorKind::Panicked { message, location } => {
            assert_eq!(
                message,
                "in `concur_core::conformance::explode`: exploded on 7"
            );
            let at = location.as_deref().expect("panic location kept");
            assert!(at.contains("conformance.rs"), "location {at}");
        }
        other => panic!("expected Panicked, got {other:?}"),
    }
    let three = |n: u64| if n == 3 { panic!("three") } else { n };
    let results: Vec<_> = p.map_fn(three, 0..10u64).collect();
    assert_eq!(results.len(), 10);
    for (n, r) in (0..10u64).zip(results) {
        match r {
            Ok(v) => assert_eq!(v, n),
            Err(e) => match e.kind() {
                ErrorKind::Panicked { message, .. } => {
                    assert_eq!(n, 3);
                    assert!(
                        message.contains("fn_panic_names_function") && message.ends_with(": three"),
                        "message {message}"
                    );
                }
                other => panic!("item {n}: expected Panicked, got {other:?}"),
            },
        }
    }
    assert_eq!(ok(p.submit_fn(square, 3).unwrap()), 9);
}

/// Gated cases and the capability each needs (`true`: the flag must be set;
/// `false`: it must be clear).
pub const GATED: &[(&str, &str, bool)] = &[
    ("timeout_stops_running_task", "kills_on_timeout", true),
    ("cancel_running_stops_worker", "kills_on_cancel", true),
    ("shared_memory_visible", "shared_memory", true),
    ("memory_isolated", "shared_memory", false),
    (
        "pool_failure_fails_work_in_flight",
        "isolates_crashes",
        true,
    ),
];

fn flag(c: &Capabilities, name: &str) -> bool {
    match name {
        "kills_on_timeout" => c.kills_on_timeout,
        "kills_on_cancel" => c.kills_on_cancel,
        "shared_memory" => c.shared_memory,
        "isolates_crashes" => c.isolates_crashes,
        "memory_limit" => c.memory_limit,
        "zero_copy_payloads" => c.zero_copy_payloads,
        "function_tasks" => c.function_tasks,
        other => panic!("unknown capability {other}"),
    }
}

/// Checks a backend's supported/unsupported lists against its capabilities.
pub fn check_declared<B: Backend>(b: &B, supported: &[&str], unsupported: &[&str]) {
    let caps = pool(b, PoolConfig::new().workers(1)).capabilities();
    for (case, cap, needs) in GATED {
        let can = flag(&caps, cap) == *needs;
        let listed_s = supported.contains(case);
        let listed_u = unsupported.contains(case);
        assert!(
            listed_s != listed_u,
            "gated case {case} must be listed exactly once"
        );
        assert_eq!(
            listed_s,
            can,
            "case {case}: capability {cap} is {} on this backend",
            flag(&caps, cap)
        );
    }
    for case in supported.iter().chain(unsupported) {
        assert!(
            GATED.iter().any(|(c, _, _)| c == case),
            "{case} is not a gated case"
        );
    }
}

/// Pastes the suite into the calling module: one `#[test]` per case.
/// See the [module docs](crate::conformance) for the grammar.
#[macro_export]
macro_rules! conformance_suite {
    (backend: $backend:expr, supported: [$($yes:ident),* $(,)?], unsupported: [$($no:ident),* $(,)?] $(,)?) => {
        $crate::conformance_suite!(@cases $backend;
            value_returned, error_returned, panic_becomes_error, pool_survives_panic,
            map_panic_fails_one_item, map_keeps_order, map_empty_input, map_unordered_complete,
            map_in_flight_bound_holds, map_unordered_in_flight_bound_holds, map_lazy_endless_input,
            cancel_before_start, cancel_running_resolves, shutdown_finishes_queued,
            shutdown_now_cancels, submit_after_shutdown_fails, drop_joins_workers,
            messages_task_to_caller, messages_both_ways, dropped_handle_ends_recv, await_in_tokio, many_tasks_complete,
            submit_from_many_threads, task_ids_unique, batch_results_in_order,
            worker_count_honoured, default_worker_count, initializer_runs_once_per_worker,
            max_tasks_recycles_worker, invalid_config_rejected, endless_timeout_is_none,
            queue_bound_applies_backpressure,
            start_refuses_a_foreign_permit,
            blocked_submitter_goes_first, blocked_submitters_keep_their_order,
            shutdown_wakes_blocked_submitters,
            timeout_fails_handle, join_timeout_never_loses_a_result,
            dropping_a_map_cancels_what_it_did_not_yield, batch_timeout_is_per_task,
            shutdown_now_interrupts_shutdown, fn_item_runs, fn_closure_runs, fn_tuple_args,
            map_fn_keeps_order, fn_panic_names_function,
            map_all_returns_every_output_in_order, map_all_keeps_every_result_when_one_fails,
            map_all_after_shutdown_fails_every_task, map_all_honours_the_task_limit,
            map_all_timeout_fails_one_task
            $(, $yes)*
        );
        $(
            #[test]
            #[ignore = "this backend declares it cannot support this case (see its capabilities)"]
            fn $no() {
                $crate::conformance::$no(&$backend)
            }
        )*
        #[test]
        fn declared_capabilities_match() {
            $crate::conformance::check_declared(
                &$backend,
                &[$(stringify!($yes)),*],
                &[$(stringify!($no)),*],
            );
        }
    };
    (@cases $backend:expr; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                $crate::conformance::$case(&$backend)
            }
        )*
    };
}
