//! How cheaply a caller waits, on both backends, in one run:
//! `cargo run --release -p concur-bench --bin waiting`
//! (`ROUNDS=n` scales the samples per figure, default 5).
//!
//! 1. The caller's CPU per `join` (`CLOCK_THREAD_CPUTIME_ID` read around
//!    `join`) for tasks that sleep 50 us to 100 ms, on threads and on
//!    processes (target <= 50 us). The anchor is a caller blocked in a std
//!    channel's `recv` for a helper thread that sleeps as long.
//! 2. Submit throughput with a queue bound of 2 (submitters block on every
//!    task but two), from 1 and from 4 submitting threads, against the same
//!    pool kind with a bound that never blocks.

use std::sync::mpsc;
use std::time::Duration;

use concur_bench::tasks::Noop;
use concur_bench::{median, rounds, time};
use concur_core::prelude::*;
use concur_procs::ProcessPool;
use concur_threads::ThreadPool;
use serde::{Deserialize, Serialize};

/// A task that sleeps for its number of microseconds.
#[derive(Serialize, Deserialize)]
struct Nap(u64);

impl Task for Nap {
    type Output = u64;
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = "concur-bench::waiting::Nap";
    fn run(self, _cx: &mut TaskContext<'_, Self>) -> u64 {
        std::thread::sleep(Duration::from_micros(self.0));
        self.0
    }
}

concur_core::register!(Nap);

/// The calling thread's CPU time so far.
fn thread_cpu() -> Duration {
    concur_bench::clock(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// The task lengths measured, in microseconds.
const NAPS: [u64; 5] = [50, 200, 1_000, 10_000, 100_000];

/// Samples for a task of `us` microseconds: many for short tasks, a few
/// for long ones, so each figure takes well under a second.
fn samples(us: u64, scale: usize) -> usize {
    let per_round = (20_000 / us).clamp(1, 40) as usize;
    (per_round * scale).max(3)
}

/// Median CPU of the caller per wait, in microseconds, over `n` waits
/// done by `wait` (which returns the CPU spent in its wait).
fn median_cpu(n: usize, mut wait: impl FnMut() -> Duration) -> f64 {
    let mut cpu: Vec<f64> = (0..n).map(|_| wait().as_secs_f64() * 1e6).collect();
    median(&mut cpu)
}

/// A helper thread that sleeps as asked and answers on a channel: the
/// anchor for a caller blocked on a result.
struct Sleeper {
    ask: mpsc::Sender<u64>,
    answer: mpsc::Receiver<u64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sleeper {
    fn start() -> Self {
        let (ask, asks) = mpsc::channel::<u64>();
        let (answers, answer) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            for us in asks {
                std::thread::sleep(Duration::from_micros(us));
                if answers.send(us).is_err() {
                    break;
                }
            }
        });
        Self {
            ask,
            answer,
            thread: Some(thread),
        }
    }

    fn wait_cpu(&self, us: u64) -> Duration {
        self.ask.send(us).expect("sleeper");
        let t = thread_cpu();
        assert_eq!(self.answer.recv().expect("sleeper"), us);
        thread_cpu() - t
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let (dead, _) = mpsc::channel();
        drop(std::mem::replace(&mut self.ask, dead));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The caller's CPU around one `join` of a `Nap(us)`.
fn join_cpu<E: Executor>(pool: &E, us: u64) -> Duration {
    let h = pool.submit(Nap(us)).expect("submit");
    let t = thread_cpu();
    assert_eq!(h.join().expect("join"), us);
    thread_cpu() - t
}

fn cpu_per_join(scale: usize) {
    let threads = ThreadPool::new(2).expect("thread pool");
    let procs = ProcessPool::builder().workers(2).build().expect("pool");
    let sleeper = Sleeper::start();
    println!("caller CPU per join (median us), target <= 50 us");
    println!(
        "{:<12} {:>10} {:>10} {:>14} {:>8}",
        "task", "threads", "procs", "anchor (recv)", "target"
    );
    for us in NAPS {
        let n = samples(us, scale);
        // Warm each path once so the first sample pays no start-up.
        let _ = (
            join_cpu(&threads, us),
            join_cpu(&procs, us),
            sleeper.wait_cpu(us),
        );
        let t = median_cpu(n, || join_cpu(&threads, us));
        let p = median_cpu(n, || join_cpu(&procs, us));
        let a = median_cpu(n, || sleeper.wait_cpu(us));
        let met = t <= 50.0 && p <= 50.0;
        println!(
            "{:<12} {t:>10.1} {p:>10.1} {a:>14.1} {:>8}",
            format!("{} us", us),
            if met { "met" } else { "MISSED" }
        );
    }
}

/// Submits `n` no-op tasks from `submitters` threads, then joins them all.
fn burst<E: Executor + Sync>(pool: &E, n: u64, submitters: u64) {
    std::thread::scope(|s| {
        for k in 0..submitters {
            s.spawn(move || {
                let hs: Vec<_> = (k..n)
                    .step_by(submitters as usize)
                    .map(|i| (i, pool.submit(Noop(i)).expect("submit")))
                    .collect();
                for (i, h) in hs {
                    assert_eq!(h.join().expect("join"), i);
                }
            });
        }
    });
}

/// Tasks per second through `bounded` (bound 2) and `open` (a bound that
/// never blocks), medians of `rounds` interleaved runs.
fn throughput<E: Executor + Sync>(name: &str, bounded: &E, open: &E, n: u64, rounds: usize) {
    for submitters in [1, 4] {
        burst(bounded, n / 10, submitters);
        burst(open, n / 10, submitters);
        let mut b = Vec::new();
        let mut o = Vec::new();
        for _ in 0..rounds {
            b.push(time(|| burst(bounded, n, submitters)).as_secs_f64());
            o.push(time(|| burst(open, n, submitters)).as_secs_f64());
        }
        let (b, o) = (median(&mut b), median(&mut o));
        println!(
            "{:<30} {:>12.0} {:>12.0} {:>7.2}x",
            format!("{name}, {submitters} submitter(s)"),
            n as f64 / b,
            n as f64 / o,
            b / o
        );
    }
}

fn submit_bound_2(rounds: usize) {
    const N: u64 = 10_000;
    println!();
    println!("submit throughput with a queue bound of 2 (tasks/s, median of {rounds} rounds)");
    println!(
        "{:<30} {:>12} {:>12} {:>8}",
        "pool", "bound 2", "unbounded", "time"
    );
    {
        let bounded = ThreadPool::builder()
            .workers(2)
            .queue_bound(2)
            .build()
            .expect("pool");
        let open = ThreadPool::builder()
            .workers(2)
            .queue_bound(N as usize)
            .build()
            .expect("pool");
        throughput("threads, 2 workers", &bounded, &open, N, rounds);
    }
    {
        let bounded = ProcessPool::builder()
            .workers(2)
            .queue_bound(2)
            .build()
            .expect("pool");
        let open = ProcessPool::builder()
            .workers(2)
            .queue_bound(N as usize)
            .build()
            .expect("pool");
        throughput("procs, 2 workers", &bounded, &open, N, rounds);
    }
}

fn main() {
    concur_procs::init();
    let rounds = rounds(5);
    println!(
        "waiting: {} cores, {rounds} rounds",
        concur_core::default_workers()
    );
    cpu_per_join(rounds);
    submit_bound_2(rounds);
}
