//! Soak test of the process backend (not run by CI):
//! `cargo run --release -p concur-bench --bin soak`.
//!
//! 1. Fault injection: a `map` of 20,000 tasks (`SOAK_TASKS`) with
//!    `retries(50)` while a killer thread SIGKILLs a random worker every
//!    20-100 ms (seeded xorshift, `SOAK_SEED`). Prints how many results are
//!    missing, duplicated, wrong, quarantined (`WorkerLost`) or failed
//!    otherwise; all must be 0 when every task succeeds on retry.
//! 2. Leaks: 50 rounds (`SOAK_ROUNDS`) of build a 2-worker pool -> 200
//!    tasks with shared-memory payloads, some of which abort their worker
//!    -> drop, printing the parent's open descriptors, threads, child
//!    processes and memfds after each round (all must stay flat).
//!
//! Exits with code 1 when a count is not 0 or a resource grew.
//! `SOAK_DIAG=1` also prints the thread names and descriptors per round.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use concur_core::{Configure, ErrorKind, Executor, ExecutorExt, Task, TaskContext};
use concur_procs::ProcessPool;
use serde::{Deserialize, Serialize};

/// Returns its input with `x * 3 + 1` after spinning `spin_us`
/// microseconds, so kills land while tasks run and results can be matched
/// to inputs.
#[derive(Serialize, Deserialize)]
struct Calc {
    x: u64,
    spin_us: u64,
}

impl Task for Calc {
    type Output = (u64, u64);
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = "concur-soak::Calc";
    fn run(self, _cx: &mut TaskContext<'_, Self>) -> (u64, u64) {
        let end = Instant::now() + Duration::from_micros(self.spin_us);
        while Instant::now() < end {
            std::hint::spin_loop();
        }
        (self.x, self.x * 3 + 1)
    }
}

/// Sums a payload and returns one as large; aborts its worker when `abort`.
#[derive(Serialize, Deserialize)]
struct Payload {
    #[serde(with = "bytes")]
    data: Vec<u8>,
    abort: bool,
}

/// Bytes as one block (fast, unlike a sequence of `u8`).
mod bytes {
    pub fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
        }
        d.deserialize_byte_buf(V)
    }
}

/// The output of [`Payload`]: the input's sum and an equally long block.
#[derive(Serialize, Deserialize)]
struct Summed {
    sum: u64,
    #[serde(with = "bytes")]
    data: Vec<u8>,
}

impl Task for Payload {
    type Output = Summed;
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = "concur-soak::Payload";
    fn run(self, _cx: &mut TaskContext<'_, Self>) -> Summed {
        if self.abort {
            std::process::abort();
        }
        Summed {
            sum: self.data.iter().map(|&b| u64::from(b)).sum(),
            data: vec![7; self.data.len()],
        }
    }
}

concur_core::register!(Calc, Payload);

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// xorshift64: a seeded, reproducible choice of victims and pauses.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// Runs the kill storm; true when every result came back once and right.
fn storm() -> bool {
    let tasks = env_or("SOAK_TASKS", 20_000);
    let seed = env_or("SOAK_SEED", 0x9E37_79B9_7F4A_7C15).max(1);
    let pool = match ProcessPool::builder().workers(2).retries(50).build() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("soak: cannot build the pool: {e}");
            return false;
        }
    };
    let stop = AtomicBool::new(false);
    let kills = AtomicUsize::new(0);
    let started = Instant::now();
    let results: Vec<_> = std::thread::scope(|s| {
        s.spawn(|| {
            let mut rng = Rng(seed);
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(20 + rng.below(81)));
                let pids: Vec<u32> = pool.worker_pids().into_iter().flatten().collect();
                if pids.is_empty() {
                    continue;
                }
                let pid = pids[usize::try_from(rng.below(pids.len() as u64)).unwrap_or(0)];
                let Ok(pid) = libc::pid_t::try_from(pid) else {
                    continue;
                };
                // SAFETY: a plain signal to a worker of this pool.
                if unsafe { libc::kill(pid, libc::SIGKILL) } == 0 {
                    kills.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        let r: Vec<_> = pool
            .map((0..tasks).map(|x| Calc { x, spin_us: 200 }))
            .collect();
        stop.store(true, Ordering::Relaxed);
        r
    });
    let elapsed = started.elapsed();
    let mut seen: HashMap<u64, usize> = HashMap::new();
    let (mut wrong, mut quarantined, mut failed) = (0u64, 0u64, 0u64);
    let mut pool_failed = false;
    for (i, r) in (0u64..).zip(&results) {
        match r {
            Ok((x, y)) => {
                *seen.entry(*x).or_default() += 1;
                if *x != i || *y != x * 3 + 1 {
                    wrong += 1;
                }
            }
            Err(e) => {
                *seen.entry(i).or_default() += 1;
                match e.kind() {
                    ErrorKind::WorkerLost(_) => quarantined += 1,
                    ErrorKind::PoolFailed { .. } => {
                        pool_failed = true;
                        failed += 1;
                    }
                    _ => failed += 1,
                }
            }
        }
    }
    let missing = (0..tasks).filter(|x| !seen.contains_key(x)).count();
    let duplicated = seen.values().filter(|&&n| n > 1).count();
    println!(
        "storm: {tasks} tasks in {elapsed:.1?}, {} workers killed: \
         missing {missing}, duplicated {duplicated}, wrong {wrong}, \
         quarantined {quarantined}, other errors {failed}{}",
        kills.into_inner(),
        if pool_failed { " (pool failed)" } else { "" }
    );
    drop(pool);
    missing == 0 && duplicated == 0 && wrong == 0 && quarantined == 0 && failed == 0
}

/// The parent's resources: open descriptors, threads, child processes, memfds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Usage {
    fds: usize,
    threads: usize,
    children: usize,
    memfds: usize,
}

fn usage() -> Usage {
    let targets: Vec<String> = std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .map(|t| t.to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    let me = std::process::id();
    let children = std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
                .filter(|stat| {
                    stat.rsplit_once(')')
                        .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                        .and_then(|p| p.parse::<u32>().ok())
                        == Some(me)
                })
                .count()
        })
        .unwrap_or(0);
    Usage {
        // Minus the descriptor that listed them.
        fds: targets.len().saturating_sub(1),
        threads: std::fs::read_dir("/proc/self/task").map_or(0, Iterator::count),
        children,
        memfds: targets.iter().filter(|t| t.starts_with("/memfd:")).count(),
    }
}

/// One round of build -> 200 tasks (every 25th aborts) -> drop.
fn round() -> Result<(), String> {
    let pool = ProcessPool::builder()
        .workers(2)
        .retries(0)
        .build()
        .map_err(|e| format!("build: {e}"))?;
    let handles: Vec<_> = (0..200)
        .map(|i| {
            pool.submit(Payload {
                data: vec![1; 100 << 10],
                abort: i % 25 == 24,
            })
        })
        .collect::<Result<_, _>>()
        .map_err(|e| format!("submit: {e}"))?;
    for (i, h) in handles.into_iter().enumerate() {
        let r = h
            .join_timeout(Duration::from_secs(60))
            .map_err(|_| format!("task {i} hung"))?;
        match (i % 25 == 24, r) {
            (true, Err(_)) => {}
            (false, Ok(s)) if s.sum == 100 << 10 && s.data.len() == 100 << 10 => {}
            (_, r) => return Err(format!("task {i}: unexpected {:?}", r.map(|s| s.sum))),
        }
    }
    drop(pool);
    Ok(())
}

fn leaks() -> bool {
    let rounds = env_or("SOAK_ROUNDS", 50);
    let mut first = None;
    let mut ok = true;
    for n in 1..=rounds {
        if let Err(e) = round() {
            println!("round {n}: {e}");
            ok = false;
        }
        // Let the last reaped workers' entries go (bounded, not a sync).
        let deadline = Instant::now() + Duration::from_secs(10);
        while usage().children > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let u = usage();
        if std::env::var_os("SOAK_DIAG").is_some() {
            let names: Vec<String> = std::fs::read_dir("/proc/self/task")
                .map(|d| {
                    d.flatten()
                        .filter_map(|e| std::fs::read_to_string(e.path().join("comm")).ok())
                        .map(|s| s.trim().to_owned())
                        .collect()
                })
                .unwrap_or_default();
            let fds: Vec<String> = std::fs::read_dir("/proc/self/fd")
                .map(|d| {
                    d.flatten()
                        .filter_map(|e| std::fs::read_link(e.path()).ok())
                        .map(|t| t.to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            println!("  threads {names:?} fds {fds:?}");
        }
        println!(
            "round {n}: fds {} threads {} children {} memfds {}",
            u.fds, u.threads, u.children, u.memfds
        );
        let base = *first.get_or_insert(u);
        if u != base {
            ok = false;
        }
    }
    ok
}

fn main() {
    concur_procs::init();
    let storm_ok = storm();
    let leaks_ok = leaks();
    println!(
        "soak: storm {}, leaks {}",
        if storm_ok { "ok" } else { "FAILED" },
        if leaks_ok { "flat" } else { "GREW" }
    );
    if !(storm_ok && leaks_ok) {
        std::process::exit(1);
    }
}
