//! The task types the demo and the workloads run. Each is registered with
//! [`concur_core::register!`] so that worker processes (this same binary,
//! re-run) can run them.

use std::error::Error as StdError;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use concur_core::{Executor, Task, TaskContext, WorkerInfo};
use serde::{Deserialize, Serialize};

use crate::exit::Problem;

/// "The" counter of the shared-counter experiment: a plain static. Threads
/// of one process all see this one; every worker process has its own copy.
pub static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The counter experiment [`COUNTER`] belongs to (0: none yet). A worker
/// that is given a task of another experiment starts its copy from 0, so
/// every experiment starts fresh, even on workers that outlive one (a
/// worker on another machine), and however many ran in this process before.
static ROUND: AtomicU64 = AtomicU64::new(0);

/// Reads [`COUNTER`].
pub fn counter() -> u64 {
    COUNTER.load(Ordering::SeqCst)
}

/// Starts a new counter experiment in this process: [`COUNTER`] back to 0,
/// and the [`Rendezvous`] tasks submitted from now on carry the new round.
pub fn fresh_counter() {
    static SEQ: AtomicU64 = AtomicU64::new(1);
    // Unique across callers, not only within this one: pid, time, sequence.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let round =
        nanos ^ u64::from(std::process::id()).rotate_left(40) ^ SEQ.fetch_add(1, Ordering::SeqCst);
    ROUND.store(round.max(1), Ordering::SeqCst);
    COUNTER.store(0, Ordering::SeqCst);
}

/// Checks in with the caller (sends its [`WorkerInfo`]), waits for the
/// caller's go, then adds `add` to [`COUNTER`] one by one.
///
/// A caller that submits N of these and answers only after all N checked in
/// knows they run on N distinct workers: none can finish before every one
/// has started.
#[derive(Debug, Serialize, Deserialize)]
pub struct Rendezvous {
    /// How much to add to the counter after the go.
    pub add: u64,
    /// How long to wait for the go before giving up (panicking).
    pub wait_ms: u64,
    /// The caller's counter experiment (see [`fresh_counter`]); 0 when
    /// the task adds nothing.
    pub round: u64,
}

/// What a [`Rendezvous`] reports.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Checkin {
    /// The worker that ran the task.
    pub worker: WorkerInfo,
    /// The counter as this worker saw it after adding.
    pub counter_after: u64,
}

impl Task for Rendezvous {
    type Output = Checkin;
    type ToCaller = WorkerInfo;
    type FromCaller = ();
    const NAME: &'static str = "concur_cli::Rendezvous";

    fn run(self, cx: &mut TaskContext<'_, Self>) -> Checkin {
        let worker = cx.worker();
        // Before the check-in, so before any task of the round gets its go
        // and adds: a reset here never wipes another task's additions.
        if self.round != 0 && ROUND.swap(self.round, Ordering::SeqCst) != self.round {
            COUNTER.store(0, Ordering::SeqCst);
        }
        cx.send(worker)
            .expect("the caller is waiting for this check-in");
        if cx
            .recv_timeout(Duration::from_millis(self.wait_ms))
            .is_none()
        {
            panic!("no go from the caller within {} ms", self.wait_ms);
        }
        for _ in 0..self.add {
            COUNTER.fetch_add(1, Ordering::SeqCst);
        }
        Checkin {
            worker,
            counter_after: counter(),
        }
    }
}

/// Does nothing: measures the cost of a round trip.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Noop;

impl Task for Noop {
    type Output = ();
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = "concur_cli::Noop";
    fn run(self, _cx: &mut TaskContext<'_, Self>) {}
}

/// CPU-bound work: `rounds` rounds of an integer hash.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Spin {
    /// How many rounds.
    pub rounds: u64,
}

impl Spin {
    /// The work itself, callable without a pool (for calibration).
    pub fn compute(rounds: u64) -> u64 {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for i in 0..rounds {
            // xorshift-multiply: cheap, serial, and not foldable by the optimizer.
            x ^= x >> 31;
            x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9).wrapping_add(i);
            x = std::hint::black_box(x);
        }
        x
    }
}

impl Task for Spin {
    type Output = u64;
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = "concur_cli::Spin";
    fn run(self, _cx: &mut TaskContext<'_, Self>) -> u64 {
        Spin::compute(self.rounds)
    }
}

/// Blocks its worker for `ms` milliseconds without using the CPU, like a
/// task waiting on a disk or a network.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Block {
    /// How long to block.
    pub ms: u64,
}

impl Task for Block {
    type Output = ();
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = "concur_cli::Block";
    fn run(self, _cx: &mut TaskContext<'_, Self>) {
        std::thread::sleep(Duration::from_millis(self.ms));
    }
}

/// Bytes that encode as one block (not one element at a time).
pub type Bytes = serde_bytes::ByteBuf;

/// Sends its payload back, touched so that it is really read and written.
#[derive(Debug, Serialize, Deserialize)]
pub struct Echo {
    /// The payload.
    pub data: Bytes,
}

impl Task for Echo {
    type Output = Bytes;
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = "concur_cli::Echo";
    fn run(self, _cx: &mut TaskContext<'_, Self>) -> Bytes {
        let mut data = self.data;
        if let Some(first) = data.first_mut() {
            *first = first.wrapping_add(1);
        }
        data
    }
}

/// Sends its payload back unchanged after reading both ends; a
/// [`SharedBytes`](concur_core::SharedBytes) crosses a process boundary
/// without being copied, so this is what a task that hands large data
/// through costs.
#[derive(Debug, Serialize, Deserialize)]
pub struct EchoShared {
    /// The payload.
    pub data: concur_core::SharedBytes,
}

impl Task for EchoShared {
    type Output = (u8, u8, concur_core::SharedBytes);
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = "concur_cli::EchoShared";
    fn run(self, _cx: &mut TaskContext<'_, Self>) -> Self::Output {
        let first = self.data.first().copied().unwrap_or(0);
        let last = self.data.last().copied().unwrap_or(0);
        (first, last, self.data)
    }
}

/// Streams `count` numbered messages to its caller, then returns `count`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Stream {
    /// How many messages.
    pub count: u64,
}

impl Task for Stream {
    type Output = u64;
    type ToCaller = u64;
    type FromCaller = ();
    const NAME: &'static str = "concur_cli::Stream";
    fn run(self, cx: &mut TaskContext<'_, Self>) -> u64 {
        for i in 0..self.count {
            cx.send(i).expect("the caller is reading the stream");
        }
        self.count
    }
}

/// Aborts the process it runs in (`std::process::abort`): no unwinding, no
/// catching. On threads that is the caller's own process.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Abort;

impl Task for Abort {
    type Output = ();
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = "concur_cli::Abort";
    fn run(self, _cx: &mut TaskContext<'_, Self>) {
        crate::crash::no_core_dump();
        std::process::abort();
    }
}

concur_core::register!(Rendezvous, Noop, Spin, Block, Echo, EchoShared, Stream, Abort);

/// Runs `n` [`Rendezvous`] tasks on `pool`, all at once: each checks in
/// (`on_checkin` sees it as it arrives, in the order of the handles), and
/// only when all `n` have checked in are they told to go. So each ran on a
/// distinct worker, and all `n` workers were up at the same time. After the
/// go each adds `add` to its [`COUNTER`], in the round of the last
/// [`fresh_counter`].
///
/// # Errors
/// When a task cannot be submitted or fails, or when not all `n` checked in
/// within `within` (the pool has fewer than `n` live workers).
pub fn rendezvous<E: Executor>(
    pool: &E,
    n: usize,
    add: u64,
    within: Duration,
    on_checkin: impl FnMut(WorkerInfo),
) -> Result<Vec<Checkin>, Box<dyn StdError + Send + Sync>> {
    match try_rendezvous(pool, n, add, within, within, on_checkin)? {
        Ok(checkins) => Ok(checkins),
        Err(arrived) => Err(Box::new(Problem(format!(
            "only {arrived} of {n} workers checked in within {within:?}"
        )))),
    }
}

/// Waits until `pool` has `n` workers running at once again (after a crash,
/// say), trying [`try_rendezvous`] rounds with a short, growing patience
/// until `within` has passed.
///
/// # Errors
/// When a task fails, or the pool is not whole within `within`.
pub fn until_whole<E: Executor>(
    pool: &E,
    n: usize,
    within: Duration,
) -> Result<(), Box<dyn StdError + Send + Sync>> {
    let end = Instant::now() + within;
    // A failed round costs its patience, so it starts short (a healthy
    // round is a couple of round trips) to keep the measured time close to
    // the real one, and grows so that a busy machine still gets through.
    let mut patience = Duration::from_micros(500);
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Box::new(Problem(format!(
                "the pool did not have {n} workers again within {within:?}"
            ))));
        }
        if try_rendezvous(pool, n, 0, patience.min(left), left, |_| {})?.is_ok() {
            return Ok(());
        }
        patience = (patience * 3 / 2).min(Duration::from_millis(100));
    }
}

/// One rendezvous round: like [`rendezvous`], but when not all `n` check in
/// within `patience` (two tasks landed on one worker, say, because a worker
/// is being replaced), every task is released, all are joined, and the
/// number that had checked in is returned as `Ok(Err(arrived))`.
///
/// Tasks are released with their go rather than cancelled: cancelling a
/// running task kills its process worker, and cannot stop a thread.
///
/// # Errors
/// When a task cannot be submitted or fails, or a released task does not
/// end within `deadline`.
#[allow(clippy::type_complexity)]
pub fn try_rendezvous<E: Executor>(
    pool: &E,
    n: usize,
    add: u64,
    patience: Duration,
    deadline: Duration,
    mut on_checkin: impl FnMut(WorkerInfo),
) -> Result<Result<Vec<Checkin>, usize>, Box<dyn StdError + Send + Sync>> {
    let started = Instant::now();
    let wait_ms = u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX);
    let handles = (0..n)
        .map(|_| {
            pool.submit(Rendezvous {
                add,
                wait_ms,
                round: if add == 0 {
                    0
                } else {
                    ROUND.load(Ordering::SeqCst)
                },
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let end = started + patience;
    let mut arrived = 0;
    for h in &handles {
        match h.recv_timeout(end.saturating_duration_since(Instant::now())) {
            Some(worker) => {
                on_checkin(worker);
                arrived += 1;
            }
            None => break,
        }
    }
    for h in &handles {
        // A task that already ended (failed) takes no message; its join says why.
        let _ = h.send(());
    }
    let end = started + deadline;
    let mut checkins = Vec::with_capacity(n);
    for h in handles {
        match h.join_timeout(end.saturating_duration_since(Instant::now())) {
            Ok(result) => checkins.push(result?),
            Err(_) => {
                return Err(Box::new(Problem(format!(
                    "a rendezvous task did not end within {deadline:?}"
                ))))
            }
        }
    }
    Ok(if arrived == n {
        Ok(checkins)
    } else {
        Err(arrived)
    })
}
