//! Batches without a per-task timeout run on one worker with no per-item
//! lock and one panic guard per run of items; these tests hold that path
//! to the batch guarantees (a panic fails its item only, a cancel stops the
//! items not yet started) and check `map`'s exact size hint.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use common::bounded;
use concur_core::conformance::DEADLINE;
use concur_core::prelude::*;
use concur_core::{ErrorKind, MapOptions};
use concur_threads::ThreadPool;
use serde::{Deserialize, Serialize};

/// Items of the gate test that ran.
static RAN: AtomicUsize = AtomicUsize::new(0);
/// Set once the first item of the gate test has started.
static STARTED: (Mutex<bool>, Condvar) = (Mutex::new(false), Condvar::new());

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Step {
    /// Returns its number.
    Value(u64),
    /// Panics with its number as message.
    Panic(u64),
    /// Says it started, then waits until its batch is cancelled.
    Gate,
    /// Counts itself in `RAN`.
    Count,
    /// Takes a millisecond: longer than a caller spins for a batch.
    Nap(u64),
}

impl Task for Step {
    type Output = u64;
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = "threads::tests::Step";
    fn run(self, cx: &mut TaskContext<'_, Self>) -> u64 {
        match self {
            Step::Value(n) => n,
            Step::Panic(n) => panic!("{n}"),
            Step::Gate => {
                *STARTED.0.lock().unwrap() = true;
                STARTED.1.notify_all();
                let deadline = Instant::now() + DEADLINE;
                while !cx.is_cancelled() {
                    assert!(Instant::now() < deadline, "the batch was never cancelled");
                    std::thread::yield_now();
                }
                0
            }
            Step::Count => {
                RAN.fetch_add(1, Ordering::SeqCst);
                0
            }
            Step::Nap(n) => {
                std::thread::sleep(Duration::from_millis(1));
                n
            }
        }
    }
}

/// Panics next to each other, first and last in a batch each fail their
/// own item; every other item keeps its value, in order.
#[test]
fn untimed_batch_panics_fail_only_their_items() {
    let pool = ThreadPool::new(2).unwrap();
    let panics = [0u64, 3, 4, 5, 9];
    let tasks: Vec<Step> = (0..10)
        .map(|n| {
            if panics.contains(&n) {
                Step::Panic(n)
            } else {
                Step::Value(n)
            }
        })
        .collect();
    let results = pool
        .submit_batch(tasks)
        .unwrap()
        .join_timeout(DEADLINE)
        .expect("the batch finishes within the deadline");
    assert_eq!(results.len(), 10);
    for (n, r) in (0u64..).zip(results) {
        if panics.contains(&n) {
            match r.unwrap_err().kind() {
                ErrorKind::Panicked { message, .. } => assert_eq!(message, &n.to_string()),
                other => panic!("item {n}: expected Panicked, got {other:?}"),
            }
        } else {
            assert_eq!(r.unwrap(), n);
        }
    }
}

/// A batch cancelled while its first item runs never starts the others.
#[test]
fn cancelled_untimed_batch_starts_no_more_items() {
    let pool = ThreadPool::new(1).unwrap();
    let mut tasks = vec![Step::Gate];
    tasks.extend((0..100).map(|_| Step::Count));
    let handle = pool.submit_batch(tasks).unwrap();
    {
        let (lock, cond) = &STARTED;
        let g = lock.lock().unwrap();
        let (g, _) = cond.wait_timeout_while(g, DEADLINE, |s| !*s).unwrap();
        assert!(*g, "the first item did not start within the deadline");
    }
    assert!(handle.cancel());
    // The pool's one worker runs this only after the batch has returned.
    assert_eq!(
        pool.submit(Step::Value(1))
            .unwrap()
            .join_timeout(DEADLINE)
            .expect("the pool's worker is free again within the deadline")
            .unwrap(),
        1
    );
    assert_eq!(RAN.load(Ordering::SeqCst), 0);
}

/// `map` yields exactly one item per input, and says so: collecting into a
/// vector allocates once.
#[test]
fn map_size_hint_is_exact() {
    let pool = ThreadPool::new(2).unwrap();
    bounded("the map", || {
        let mut results = pool.map((0..1000).map(Step::Value));
        assert_eq!(results.size_hint(), (1000, Some(1000)));
        for n in 0..10 {
            assert_eq!(results.next().unwrap().unwrap(), n);
        }
        assert_eq!(results.size_hint(), (990, Some(990)));
        assert_eq!(results.by_ref().count(), 990);
        assert_eq!(results.size_hint(), (0, Some(0)));
    });
}

/// A `map` whose batches outlast the caller's spin sleeps while it waits
/// and is woken by the batch; moved to another thread between two items, it
/// wakes that thread, not the one it came from.
#[test]
fn map_of_slow_items_wakes_whichever_thread_reads_it() {
    // Leaked so the reading thread need not be joined: a hang fails the
    // test at the deadline instead of blocking it.
    let pool: &'static ThreadPool = Box::leak(Box::new(ThreadPool::new(2).unwrap()));
    let mut results = pool.map((0..40).map(Step::Nap));
    bounded("the first items", || {
        for n in 0..10 {
            assert_eq!(results.next().unwrap().unwrap(), n);
        }
    });
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rest: Vec<u64> = results.map(Result::unwrap).collect();
        tx.send(rest).unwrap();
    });
    let rest = rx
        .recv_timeout(DEADLINE)
        .expect("the moved map finishes within the deadline");
    assert_eq!(rest, (10..40).collect::<Vec<_>>());
}

/// A long map of quick items on a pool with a deep queue grows its batches
/// as the workers keep ahead; every item still comes back once, in order.
#[test]
fn long_map_on_a_deep_queue_keeps_order() {
    let pool = ThreadPool::builder()
        .workers(2)
        .queue_bound(1 << 16)
        .build()
        .unwrap();
    let n = 300_000u64;
    let out: Vec<u64> = bounded("the map", || {
        pool.map((0..n).map(Step::Value))
            .collect::<Result<_, _>>()
            .unwrap()
    });
    assert!(out.iter().copied().eq(0..n));
}

/// Extreme `MapOptions` are clamped to the pool, never an overflow: a
/// batch or in-flight bound of `usize::MAX` maps every item in order.
#[test]
fn extreme_map_options_are_clamped() {
    let pool = ThreadPool::new(2).unwrap();
    for options in [
        MapOptions::default().batch(usize::MAX),
        MapOptions::default().in_flight(usize::MAX),
        MapOptions::default()
            .batch(usize::MAX)
            .in_flight(usize::MAX),
        MapOptions::default().batch(0).in_flight(0),
    ] {
        let got: Vec<u64> = bounded("an extreme map", || {
            pool.map_with((0..50).map(Step::Value), options)
                .collect::<Result<_, _>>()
                .unwrap()
        });
        assert_eq!(got, (0..50).collect::<Vec<_>>(), "{options:?}");
    }
}
