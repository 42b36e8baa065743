//! concur-threads against raw rayon, in one process and one run:
//! `cargo run --release -p concur-bench --bin threads_vs_rayon`.

use std::sync::mpsc;

use concur_bench::tasks::{mix, Mix, Noop};
use concur_bench::{header, interleaved, rounds, Comparison};
use concur_core::prelude::*;
use concur_core::MapOptions;
use concur_threads::ThreadPool;
use rayon::prelude::*;

fn main() {
    let workers = concur_core::default_workers();
    let rounds = rounds(9);
    let pool = ThreadPool::new(workers).expect("thread pool");
    let rayon_pool = rayon::ThreadPoolBuilder::new()
        .num_threads(workers)
        .build()
        .expect("rayon pool");
    println!("concur-threads vs rayon, {workers} workers, median of {rounds} interleaved rounds");
    header();

    const R: u64 = 2_000;
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
    Comparison::new(
        "1 in flight no-op round trip",
        "rayon spawn+channel",
        peer,
        ours,
        1.2,
    )
    .print(R, "us/task");

    const N: u64 = 100_000;
    let (peer, ours) = interleaved(
        rounds,
        || {
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
        },
        || {
            let handles: Vec<_> = (0..N).map(|i| pool.submit(Noop(i)).unwrap()).collect();
            let sum: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
            assert_eq!(sum, N * (N - 1) / 2);
        },
    );
    Comparison::new(
        "100k no-op submit+join",
        "rayon spawn+channel",
        peer,
        ours,
        1.2,
    )
    .print(N, "us/task");

    const M: u64 = 1_000_000;
    let par_iter = || {
        let v: Vec<u64> = rayon_pool.install(|| (0..M).into_par_iter().map(mix).collect());
        assert_eq!(v.len(), M as usize);
    };
    let map_with = |options: MapOptions| {
        let v: Vec<u64> = pool
            .map_with((0..M).map(Mix), options)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(v.len(), M as usize);
    };
    for (what, options) in [
        ("map 1M trivial items", MapOptions::default()),
        (
            "map 1M, batch 4096",
            MapOptions::default().batch(4096).in_flight(16384),
        ),
    ] {
        let (peer, ours) = interleaved(rounds, par_iter, || map_with(options));
        Comparison::new(what, "rayon par_iter", peer, ours, 1.1).print(M, "us/item");
    }
}
