//! Task -> caller messages across processes, against raw ipc-channel sends
//! of the same values, in one process and one run:
//! `cargo run --release -p concur-bench --bin messages`
//! (`ROUNDS=n` sets the rounds, default 7; `N=n` the messages per round,
//! default 100k).
//!
//! - concur-procs: one task sends `N` `u64`s to its caller with
//!   `TaskContext::send`; the caller reads them all with `TaskHandle::recv`
//!   and then joins the task;
//! - the anchor: a raw ipc-channel child process sends the same `N` values,
//!   one `IpcSender<u64>::send` each, and this process receives them all;
//!   the child is started once and asked for each round's stream, as the
//!   pool is built once;
//! - for reference, concur-threads running the same task, and a procs
//!   task exchanging messages with its caller one at a time (latency).
//!
//! Target: concur's throughput >= 0.8x the raw sends' (its time <= 1.25x).

use concur_bench::{header, hello, interleaved, rounds, Comparison, Helper};
use concur_core::prelude::*;
use concur_core::{Task, TaskContext};
use concur_procs::ProcessPool;
use concur_threads::ThreadPool;
use ipc_channel::ipc::{self, IpcReceiver, IpcSender};
use serde::{Deserialize, Serialize};

/// Streams `0..count` to its caller, then returns `count`.
#[derive(Serialize, Deserialize)]
struct Stream {
    count: u64,
}

impl Task for Stream {
    type Output = u64;
    type ToCaller = u64;
    type FromCaller = ();
    const NAME: &'static str = "concur-bench::messages::Stream";
    fn run(self, cx: &mut TaskContext<'_, Self>) -> u64 {
        for i in 0..self.count {
            cx.send(i).expect("the caller reads the stream");
        }
        self.count
    }
}

/// Sends `0..count` to its caller, waiting for the caller's answer to
/// each before the next.
#[derive(Serialize, Deserialize)]
struct PingPong {
    count: u64,
}

impl Task for PingPong {
    type Output = u64;
    type ToCaller = u64;
    type FromCaller = u64;
    const NAME: &'static str = "concur-bench::messages::PingPong";
    fn run(self, cx: &mut TaskContext<'_, Self>) -> u64 {
        for i in 0..self.count {
            cx.send(i).expect("the caller reads");
            assert_eq!(cx.recv(), Some(i), "the caller answers");
        }
        self.count
    }
}

concur_core::register!(Stream, PingPong);

const SENDER_ROLE: &str = "CONCUR_BENCH_MESSAGE_SENDER";

/// What the raw peer's child sends at start: where to ask for streams, and
/// where to send the channel for their values.
type Hello = (IpcSender<u64>, IpcSender<IpcSender<u64>>);

/// The raw peer's child process: for each request `n`, sends `0..n`, one
/// `send` per value.
fn sender_role(name: String) -> ! {
    let (ask_tx, ask_rx) = ipc::channel::<u64>().expect("channel");
    let (give_tx, give_rx) = ipc::channel::<IpcSender<u64>>().expect("channel");
    hello::<Hello>(name, (ask_tx, give_tx));
    let out = give_rx.recv().expect("the parent's receiving channel");
    while let Ok(n) = ask_rx.recv() {
        for i in 0..n {
            if out.send(i).is_err() {
                std::process::exit(0);
            }
        }
    }
    std::process::exit(0)
}

/// The raw ipc-channel peer: a child process that streams values on request.
struct RawSender {
    _process: Helper,
    ask: IpcSender<u64>,
    values: IpcReceiver<u64>,
}

impl RawSender {
    fn start() -> RawSender {
        let (process, (ask, give)) = Helper::start::<Hello>(SENDER_ROLE);
        let (tx, values) = ipc::channel::<u64>().expect("channel");
        give.send(tx).expect("send");
        RawSender {
            _process: process,
            ask,
            values,
        }
    }

    /// Asks for `n` values and receives them all, checking their order.
    fn stream(&self, n: u64) {
        self.ask.send(n).expect("ask");
        for i in 0..n {
            assert_eq!(self.values.recv().expect("value"), i);
        }
    }
}

/// Runs one [`Stream`] task of `n` messages and reads them all, checking
/// their order.
fn stream<E: Executor>(pool: &E, n: u64) {
    let h = pool.submit(Stream { count: n }).expect("submit");
    let mut next = 0;
    while let Some(v) = h.recv() {
        assert_eq!(v, next);
        next += 1;
    }
    assert_eq!(next, n, "every message arrives");
    assert_eq!(h.join().expect("join"), n);
}

/// Runs one [`PingPong`] task of `n` exchanges.
fn ping_pong<E: Executor>(pool: &E, n: u64) {
    let h = pool.submit(PingPong { count: n }).expect("submit");
    for i in 0..n {
        assert_eq!(h.recv(), Some(i));
        h.send(i).expect("answer");
    }
    assert_eq!(h.join().expect("join"), n);
}

fn main() {
    concur_procs::init();
    if let Ok(name) = std::env::var(SENDER_ROLE) {
        sender_role(name);
    }
    let rounds = rounds(7);
    let n: u64 = std::env::var("N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    println!("task -> caller messages, {n} u64s per round, median of {rounds} interleaved rounds");
    header();

    let raw = RawSender::start();
    let procs = ProcessPool::builder().workers(1).build().expect("pool");
    let (theirs, ours) = interleaved(rounds, || raw.stream(n), || stream(&procs, n));
    Comparison::new("procs messages", "raw ipc sends", theirs, ours, 1.25).print(n, "us");
    let rate = |d: std::time::Duration| n as f64 / d.as_secs_f64();
    println!(
        "{:<34} {:>10.0} msg/s vs {:.0} msg/s: {:.2}x raw ipc-channel's throughput (target >= 0.8x)",
        "  throughput",
        rate(ours),
        rate(theirs),
        rate(ours) / rate(theirs)
    );

    // Latency: a message and its answer, one at a time (a message the task
    // waits after is never held back). Printed per exchange, for reference.
    const EXCHANGES: u64 = 5_000;
    let (_, exchanges) = interleaved(rounds, || {}, || ping_pong(&procs, EXCHANGES));
    println!(
        "{:<34} {:>10.3} us     per message and answer (reference)",
        "procs message ping-pong",
        exchanges.as_secs_f64() * 1e6 / EXCHANGES as f64
    );

    let threads = ThreadPool::builder().workers(1).build().expect("pool");
    let (_, on_threads) = interleaved(rounds, || {}, || stream(&threads, n));
    println!(
        "{:<34} {:>10.3} us     {:>10.0} msg/s (reference: no serialization, no process)",
        "threads messages",
        on_threads.as_secs_f64() * 1e6 / n as f64,
        rate(on_threads)
    );
}
