//! How each backend scales with its worker count, in one process and one
//! run: `cargo run --release -p concur-bench --bin scaling`.
//!
//! Two workloads, each at 1, 2, 4, 8 and 16 workers on threads and on
//! processes, with the speedup over the same backend's one-worker figure:
//!
//! - **cpu**: 64 CPU-bound tasks of about 5 ms each (the same total work at
//!   every count, so the speedup is how many cores the pool really uses);
//! - **burst**: 10k no-op tasks submitted at once, then joined (throughput:
//!   how dispatch holds up as workers are added);
//! - **mixed** (processes only): a burst, then the cpu tasks at once on the
//!   same pool, timed together: the burst leaves the pool's task time tiny,
//!   so the cpu tasks must still spread over every worker (compare with
//!   the burst's and the cpu row's times).
//!
//! On a machine with C cores the cpu speedup should grow until C workers
//! and stay flat after; this project's machine has 2, bigger machines fill
//! the rest of the table. Settings: `ROUNDS=n` (default 3, medians),
//! `COUNTS=1,2,4` (worker counts; 1 is always measured, as the baseline),
//! `ONLY=threads|procs|cpu|burst|mixed` (a backend or a workload).

use std::time::{Duration, Instant};

use concur_bench::median;
use concur_bench::tasks::{spin, spin_rounds_for, Noop, Spin};
use concur_core::prelude::*;
use concur_procs::ProcessPool;
use concur_threads::ThreadPool;

/// CPU-bound tasks per `cpu` run: enough for 16 workers to get four each.
const CPU_TASKS: usize = 64;
/// How long one CPU task is meant to take.
const CPU_TASK: Duration = Duration::from_millis(5);
/// Tasks per `burst` run.
const BURST: u64 = 10_000;

/// The worker counts to measure: `COUNTS` or 1, 2, 4, 8, 16; always with 1.
fn counts() -> Vec<usize> {
    let mut counts: Vec<usize> = std::env::var("COUNTS")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 2, 4, 8, 16]);
    counts.retain(|&n| n > 0);
    counts.push(1);
    counts.sort_unstable();
    counts.dedup();
    counts
}

/// True when `ONLY` is unset or names the workload or the backend.
fn wanted(workload: &str, backend: &str) -> bool {
    std::env::var("ONLY").map_or(true, |only| only == workload || only == backend)
}

/// Runs every CPU task on `pool` and waits for all of them.
fn cpu<E: Executor>(pool: &E, rounds: u64, expected: u64) {
    let hs: Vec<_> = (0..CPU_TASKS)
        .map(|_| pool.submit(Spin(rounds)).expect("submit"))
        .collect();
    for h in hs {
        assert_eq!(h.join().expect("cpu task"), expected);
    }
}

/// Submits the whole burst, then joins it.
fn burst<E: Executor>(pool: &E) {
    let hs: Vec<_> = (0..BURST)
        .map(|i| pool.submit(Noop(i)).expect("submit"))
        .collect();
    for (i, h) in (0..).zip(hs) {
        assert_eq!(h.join().expect("no-op task"), i);
    }
}

/// One backend's figures for one workload: the median time per count.
/// Every count's pool is built first and the counts take turns within
/// each round (after one warm-up run each), so a change in the machine's
/// load during the run falls on every count alike.
fn measure<E: Executor>(
    counts: &[usize],
    rounds: usize,
    build: impl Fn(usize) -> E,
    run: impl Fn(&E),
) -> Vec<(usize, Duration)> {
    let pools: Vec<E> = counts.iter().map(|&n| build(n)).collect();
    pools.iter().for_each(&run);
    let mut samples = vec![Vec::with_capacity(rounds); pools.len()];
    for _ in 0..rounds {
        for (pool, samples) in pools.iter().zip(&mut samples) {
            let t = Instant::now();
            run(pool);
            samples.push(t.elapsed().as_secs_f64());
        }
    }
    for pool in &pools {
        pool.shutdown().expect("shutdown");
    }
    counts
        .iter()
        .zip(&mut samples)
        .map(|(&n, samples)| (n, Duration::from_secs_f64(median(samples))))
        .collect()
}

/// Prints one table row per count: time, what it means per task, speedup.
fn print(workload: &str, backend: &str, per: &str, figures: &[(usize, Duration)], tasks: f64) {
    let one = figures
        .iter()
        .find(|(n, _)| *n == 1)
        .map(|(_, t)| t.as_secs_f64())
        .expect("1 worker is always measured");
    for &(n, t) in figures {
        let secs = t.as_secs_f64();
        let (value, unit) = match per {
            "tasks/s" => (tasks / secs, "tasks/s"),
            _ => (secs * 1e3, "ms"),
        };
        println!(
            "{workload:<8} {backend:<8} {n:>7} {value:>14.1} {unit:<8} {:>7.2}x",
            one / secs
        );
    }
}

fn main() {
    concur_procs::init();
    let rounds = concur_bench::rounds(3);
    let counts = counts();
    let cores = concur_core::default_workers();
    let spin_rounds = spin_rounds_for(CPU_TASK);
    let expected = spin(spin_rounds);
    println!(
        "scaling: {cores} cores here; cpu = {CPU_TASKS} tasks of ~{} ms, burst = {BURST} no-op tasks; median of {rounds} rounds",
        CPU_TASK.as_millis()
    );
    println!(
        "{:<8} {:<8} {:>7} {:>23} {:>8}",
        "workload", "backend", "workers", "figure", "speedup"
    );
    let threads = |n: usize| ThreadPool::new(n).expect("thread pool");
    // Every queued task of the burst fits, so submission never waits.
    let procs = |n: usize| {
        ProcessPool::builder()
            .workers(n)
            .queue_bound(BURST as usize)
            .build()
            .expect("process pool")
    };
    let threads_burst = |n: usize| {
        ThreadPool::builder()
            .workers(n)
            .queue_bound(BURST as usize)
            .build()
            .expect("thread pool")
    };
    if wanted("cpu", "threads") {
        let f = measure(&counts, rounds, threads, |p| cpu(p, spin_rounds, expected));
        print("cpu", "threads", "ms", &f, CPU_TASKS as f64);
    }
    if wanted("cpu", "procs") {
        let f = measure(&counts, rounds, procs, |p| cpu(p, spin_rounds, expected));
        print("cpu", "procs", "ms", &f, CPU_TASKS as f64);
    }
    if wanted("burst", "threads") {
        let f = measure(&counts, rounds, threads_burst, burst);
        print("burst", "threads", "tasks/s", &f, BURST as f64);
    }
    if wanted("burst", "procs") {
        let f = measure(&counts, rounds, procs, burst);
        print("burst", "procs", "tasks/s", &f, BURST as f64);
    }
    if wanted("mixed", "procs") {
        let f = measure(&counts, rounds, procs, |p| {
            burst(p);
            cpu(p, spin_rounds, expected);
        });
        print("mixed", "procs", "ms", &f, CPU_TASKS as f64);
    }
}
