//! Issue 7, retry semantics: a 5,000-task `map` with retries on while a
//! killer thread SIGKILLs a random worker every 20-100 ms. Every result is
//! present exactly once and correct, the pool does not fail, and dropping
//! it leaves no child process. Alone in its binary: it counts this
//! process's children.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::{assert_storm_survived, bounded, Calc};
use concur_procs::{Configure, ExecutorExt, ProcessPool};

/// xorshift64: a seeded, reproducible choice of victims and pauses.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn every_result_exactly_once_under_a_kill_storm() {
    const TASKS: u64 = 5_000;
    let pool = ProcessPool::builder()
        .workers(2)
        .retries(50)
        .build()
        .unwrap();
    let stop = AtomicBool::new(false);
    let kills = AtomicUsize::new(0);
    let results: Vec<_> = std::thread::scope(|s| {
        s.spawn(|| {
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
            while !stop.load(Ordering::Relaxed) {
                // Pacing of the fault injection, not synchronisation.
                std::thread::sleep(Duration::from_millis(20 + rng.below(81)));
                let pids: Vec<u32> = pool.worker_pids().into_iter().flatten().collect();
                if pids.is_empty() {
                    continue;
                }
                let pid = pids[usize::try_from(rng.below(pids.len() as u64)).unwrap()];
                // SAFETY: a plain signal to a worker of this pool.
                if unsafe { libc::kill(libc::pid_t::try_from(pid).unwrap(), libc::SIGKILL) } == 0 {
                    kills.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        // A hung map aborts the binary (the scope would wait for it); a
        // panicking one still stops the killer, which the scope joins.
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            bounded("the map", || {
                pool.map((0..TASKS).map(|x| Calc { x, spin_us: 1000 }))
                    .collect::<Vec<_>>()
            })
        }));
        stop.store(true, Ordering::Relaxed);
        r.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    });
    let kills = kills.into_inner();
    assert!(kills > 0, "the storm killed nothing");
    assert_storm_survived(pool, &results, TASKS, &format!("{kills} kills"));
    eprintln!("{kills} workers killed during the map");
}
