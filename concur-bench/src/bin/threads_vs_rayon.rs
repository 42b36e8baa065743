//! concur-threads against raw rayon, in one process and one run:
//! `cargo run --release -p concur-bench --bin threads_vs_rayon`
//! (`ROUNDS=n` sets the rounds per figure, default 9; `ONLY=word` runs only
//! the figures whose name contains `word`, for profiling one of them; `QB=n`
//! sets the default pool's queue bound, 2048 otherwise).
//!
//! The 100k burst holds one result cell per task until it is joined, about
//! 17 MB, and frees them together. glibc then hands the top of its heap back
//! to the kernel whenever it exceeds the trim threshold (which glibc raises
//! by itself as the process frees larger mapped blocks), and the next burst
//! faults those pages in again: the burst lines print concur's page faults
//! per round, which say which state a run was in. `MALLOC_TRIM_THRESHOLD_=
//! 4000000000` in the environment switches the trimming off for comparison
//! (see PERFORMANCE.md, "Issue 11: threads (fourth pass)").
//!
//! 1. one task in flight, no-op round trip vs rayon `spawn` + channel
//!    (target <= 1.2x);
//! 2. 100k no-op tasks, `submit` all then `join` all, vs rayon `spawn` +
//!    channel (target <= 1.2x), on the default pool and on one whose queue
//!    bound fits the burst (the anchor has none), the two pools taking
//!    turns within each round;
//! 3. `map` over 100k items of about 1 us of work each vs rayon
//!    `par_iter().map().collect()` on the same items (target <= 1.05x);
//! 4. `map` over 1M trivial items (one multiply-rotate-xor) vs rayon
//!    `par_iter` (target <= 5x), on the default pool and on one whose queue
//!    bound (which also bounds `map`'s tasks in flight) is 64k;
//! 5. `map_all` over the same 1M items vs the same anchor (target <= 5x).

use std::cell::Cell;
use std::sync::mpsc;
use std::time::Duration;

use concur_bench::tasks::{mix, spin, spin_rounds_for, Mix, Noop, Spin};
use concur_bench::{header, interleaved, median, rounds, time, wanted, Comparison};
use concur_core::prelude::*;
use concur_threads::ThreadPool;
use rayon::prelude::*;

/// Minor page faults of this process so far.
fn minor_faults() -> u64 {
    concur_bench::self_usage().ru_minflt as u64
}

fn main() {
    let workers = concur_core::default_workers();
    let rounds = rounds(9);
    let pool = ThreadPool::builder()
        .workers(workers)
        .queue_bound(
            std::env::var("QB")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(2048),
        )
        .build()
        .expect("thread pool");
    let rayon_pool = rayon::ThreadPoolBuilder::new()
        .num_threads(workers)
        .build()
        .expect("rayon pool");
    println!("concur-threads vs rayon, {workers} workers, median of {rounds} interleaved rounds");
    header();

    const R: u64 = 2_000;
    let what = "1 in flight no-op round trip";
    if wanted(what) {
        let (peer, ours) = interleaved(
            rounds,
            || {
                for i in 0..R {
                    let (tx, rx) = mpsc::sync_channel(1);
                    rayon_pool.spawn(move || {
                        let _ = tx.send(i);
                    });
                    assert_eq!(rx.recv().unwrap(), i);
                }
            },
            || {
                for i in 0..R {
                    assert_eq!(pool.submit(Noop(i)).unwrap().join().unwrap(), i);
                }
            },
        );
        Comparison::new(what, "rayon spawn+channel", peer, ours, 1.2).print(R, "us/task");
    }

    const N: u64 = 100_000;
    // With the default queue bound (1024 per worker) the submitter waits for
    // room every few hundred tasks; the anchor has no bound. A pool whose
    // bound fits the burst shows the submit and join path alone.
    let roomy = ThreadPool::builder()
        .workers(workers)
        .queue_bound(N as usize)
        .build()
        .expect("thread pool");
    // Both pools take turns within each round (their order alternating), each
    // right after its own anchor run: a figure measured first in the process
    // ran slower than the same pool measured second (the heap was still
    // growing, see the module docs), which made the two lines differ by
    // their order rather than by their bound.
    let bursts: Vec<(&str, &ThreadPool)> = [
        ("100k no-op submit+join", &pool),
        ("100k no-op submit+join, bound 100k", &roomy),
    ]
    .into_iter()
    .filter(|(what, _)| wanted(what))
    .collect();
    if !bursts.is_empty() {
        let peer = || {
            let (tx, rx) = mpsc::channel();
            for i in 0..N {
                let tx = tx.clone();
                rayon_pool.spawn(move || {
                    let _ = tx.send(i);
                });
            }
            drop(tx);
            let sum: u64 = rx.iter().sum();
            assert_eq!(sum, N * (N - 1) / 2);
        };
        let faults = bursts.iter().map(|_| Cell::new(0u64)).collect::<Vec<_>>();
        let ours = |k: usize| {
            let before = minor_faults();
            let handles: Vec<_> = (0..N)
                .map(|i| bursts[k].1.submit(Noop(i)).unwrap())
                .collect();
            let sum: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
            assert_eq!(sum, N * (N - 1) / 2);
            faults[k].set(faults[k].get() + minor_faults() - before);
        };
        // Two warm-up rounds: the first rounds of a process still grow
        // (and trim) the heap.
        let mut samples = vec![(Vec::new(), Vec::new()); bursts.len()];
        for round in 0..rounds + 2 {
            for j in 0..bursts.len() {
                let k = (j + round) % bursts.len();
                let p = time(peer).as_secs_f64();
                let o = time(|| ours(k)).as_secs_f64();
                if round >= 2 {
                    samples[k].0.push(p);
                    samples[k].1.push(o);
                }
            }
        }
        for (k, (p, o)) in samples.iter_mut().enumerate() {
            let (peer, ours) = (
                Duration::from_secs_f64(median(p)),
                Duration::from_secs_f64(median(o)),
            );
            Comparison::new(bursts[k].0, "rayon spawn+channel", peer, ours, 1.2)
                .print(N, "us/task");
            // Mean over every round: whether glibc trimmed the heap between them.
            println!(
                "  (concur: {} page faults per round)",
                faults[k].get() / (rounds as u64 + 2)
            );
        }
    }

    const K: u64 = 100_000;
    let what = "map 100k ~1us items";
    if wanted(what) {
        let work = spin_rounds_for(Duration::from_micros(1));
        let expected: u64 = spin(work);
        let (peer, ours) = interleaved(
            rounds,
            || {
                let v: Vec<u64> =
                    rayon_pool.install(|| (0..K).into_par_iter().map(|_| spin(work)).collect());
                assert!(v.len() == K as usize && v[0] == expected);
            },
            || {
                let v: Vec<u64> = pool
                    .map((0..K).map(|_| Spin(work)))
                    .collect::<Result<_, _>>()
                    .unwrap();
                assert!(v.len() == K as usize && v[0] == expected);
            },
        );
        Comparison::new(what, "rayon par_iter", peer, ours, 1.05).print(K, "us/item");
    }

    const M: u64 = 1_000_000;
    // The default queue bound (1024 per worker) also bounds `map`'s tasks
    // in flight; a pool with room for more shows what that bound costs.
    let deep = ThreadPool::builder()
        .workers(workers)
        .queue_bound(1 << 16)
        .build()
        .expect("thread pool");
    let par_iter = || {
        let v: Vec<u64> = rayon_pool.install(|| (0..M).into_par_iter().map(mix).collect());
        assert_eq!(v.len(), M as usize);
    };
    let map = |pool: &ThreadPool| {
        let v: Vec<u64> = pool.map((0..M).map(Mix)).collect::<Result<_, _>>().unwrap();
        assert_eq!(v.len(), M as usize);
    };
    for (what, pool) in [
        ("map 1M trivial items", &pool),
        ("map 1M trivial, queue bound 64k", &deep),
    ] {
        if wanted(what) {
            let (peer, ours) = interleaved(rounds, par_iter, || map(pool));
            // In ns: the anchor's figure is under a nanosecond per item.
            Comparison::new(what, "rayon par_iter", peer, ours, 5.0).print(M / 1000, "ns/item");
        }
    }
    // The eager form, as `par_iter().collect()` is: every output written
    // in place by the worker that ran its task.
    let what = "map_all 1M trivial items";
    if wanted(what) {
        let (peer, ours) = interleaved(rounds, par_iter, || {
            let v: Vec<u64> = pool.map_all((0..M).map(Mix)).unwrap();
            assert_eq!(v.len(), M as usize);
        });
        Comparison::new(what, "rayon par_iter", peer, ours, 5.0).print(M / 1000, "ns/item");
    }
}
