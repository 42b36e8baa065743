//! SECURITY.md, kill storms: an outside kill storm that also hits workers
//! while they start (before they are ready) never fails a pool with
//! retries, as long as workers still start between the kills. Every result
//! is present exactly once and correct. Alone in its binary: it counts
//! this process's children.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::{assert_storm_survived, bounded, children, Calc};
use concur_procs::{Configure, ExecutorExt, ProcessPool};

#[test]
fn a_kill_storm_on_starting_workers_does_not_fail_the_pool() {
    const TASKS: u64 = 5_000;
    let pool = ProcessPool::builder()
        .workers(2)
        .retries(1000)
        .build()
        .unwrap();
    let stop = AtomicBool::new(false);
    let start_kills = AtomicUsize::new(0);
    let ready_kills = AtomicUsize::new(0);
    let results: Vec<_> = std::thread::scope(|s| {
        s.spawn(|| {
            // Ready workers seen so far: a starting worker is killed only
            // after a new one became ready, so workers do start between
            // kills (a pool whose every start is killed fails, rightly).
            let mut seen: HashSet<u32> = HashSet::new();
            let mut fresh = true;
            while !stop.load(Ordering::Relaxed) {
                // Pacing of the fault injection, not synchronisation.
                std::thread::sleep(Duration::from_millis(5));
                let ready: Vec<u32> = pool.worker_pids().into_iter().flatten().collect();
                for p in &ready {
                    fresh |= seen.insert(*p);
                }
                let starting: Vec<u32> = children()
                    .into_iter()
                    .filter(|p| !ready.contains(p) && !seen.contains(p))
                    .collect();
                let (victim, counter) = match (starting.first(), ready.first()) {
                    (Some(p), _) if fresh => (*p, &start_kills),
                    (None, Some(p)) => (*p, &ready_kills),
                    _ => continue,
                };
                // SAFETY: a plain signal to a child of this process.
                let r =
                    unsafe { libc::kill(libc::pid_t::try_from(victim).unwrap(), libc::SIGKILL) };
                if r == 0 {
                    counter.fetch_add(1, Ordering::Relaxed);
                    if std::ptr::eq(counter, &start_kills) {
                        fresh = false;
                        seen.insert(victim);
                    }
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
    let (start_kills, ready_kills) = (start_kills.into_inner(), ready_kills.into_inner());
    assert!(start_kills > 0, "the storm killed no starting worker");
    assert_storm_survived(
        pool,
        &results,
        TASKS,
        &format!("{start_kills} kills of starting workers and {ready_kills} of ready ones"),
    );
    eprintln!("{start_kills} starting and {ready_kills} ready workers killed during the map");
}
