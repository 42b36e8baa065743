//! `map_all` on the thread pool, where the workers write each output
//! straight into the returned vector: nothing dropped twice or leaked, no
//! wait for itself when called from a task of the same pool, and
//! `shutdown_now` fails what has not started.

mod common;

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;

use common::{bounded, poll_until};
use concur_core::conformance::{wait_until, Add, DEADLINE};
use concur_core::prelude::*;
use concur_core::ErrorKind;
use concur_threads::ThreadPool;
use serde::{Deserialize, Serialize};

/// Tasks and outputs of [`Counted`] alive now (made minus dropped).
static LIVE_TASKS: AtomicI64 = AtomicI64::new(0);
static LIVE_OUTPUTS: AtomicI64 = AtomicI64::new(0);

/// A task counted while alive; panics when `panic`.
#[derive(Serialize, Deserialize)]
struct Counted {
    n: u64,
    panic: bool,
}

impl Counted {
    fn new(n: u64, panic: bool) -> Self {
        LIVE_TASKS.fetch_add(1, Ordering::SeqCst);
        Counted { n, panic }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        LIVE_TASKS.fetch_sub(1, Ordering::SeqCst);
    }
}

/// An output counted while alive.
#[derive(Debug, Serialize, Deserialize)]
struct Out(u64);

impl Drop for Out {
    fn drop(&mut self) {
        LIVE_OUTPUTS.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Task for Counted {
    type Output = Out;
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = "threads::map_all::Counted";
    fn run(self, _cx: &mut TaskContext<'_, Self>) -> Out {
        assert!(!self.panic, "item {} panics", self.n);
        LIVE_OUTPUTS.fetch_add(1, Ordering::SeqCst);
        Out(self.n)
    }
}

/// Every task is dropped once (by its run or, cancelled, unrun) and every
/// output reaches the caller once, with or without failures.
#[test]
fn every_task_and_output_is_dropped_once() {
    let pool = ThreadPool::new(2).unwrap();
    let n = 20_000;
    let out = bounded("map_all", || {
        pool.map_all((0..n).map(|i| Counted::new(i, false)))
    })
    .unwrap();
    assert_eq!(LIVE_TASKS.load(Ordering::SeqCst), 0);
    assert_eq!(out.len(), n as usize);
    assert!(out.iter().zip(0..).all(|(o, i)| o.0 == i));
    assert_eq!(LIVE_OUTPUTS.load(Ordering::SeqCst), n as i64);
    drop(out);
    assert_eq!(LIVE_OUTPUTS.load(Ordering::SeqCst), 0);

    let panics = |i: u64| i % 997 == 5;
    let e = bounded("map_all", || {
        pool.map_all((0..n).map(|i| Counted::new(i, panics(i))))
    })
    .unwrap_err();
    assert_eq!(LIVE_TASKS.load(Ordering::SeqCst), 0);
    assert_eq!(e.failed(), (0..n).filter(|&i| panics(i)).count());
    for (i, r) in (0..n).zip(e.results()) {
        match r {
            Ok(o) => assert!(!panics(i) && o.0 == i),
            Err(err) => assert!(
                panics(i) && matches!(err.kind(), ErrorKind::Panicked { .. }),
                "item {i}: {err:?}"
            ),
        }
    }
    drop(e);
    assert_eq!(LIVE_OUTPUTS.load(Ordering::SeqCst), 0);
}

/// Outputs of no size are counted, not stored.
#[test]
fn outputs_of_no_size() {
    #[derive(Serialize, Deserialize)]
    struct Unit;
    impl Task for Unit {
        type Output = ();
        type ToCaller = ();
        type FromCaller = ();
        const NAME: &'static str = "threads::map_all::Unit";
        fn run(self, _cx: &mut TaskContext<'_, Self>) {}
    }
    let pool = ThreadPool::new(2).unwrap();
    let out = bounded("map_all", || pool.map_all((0..5000).map(|_| Unit))).unwrap();
    assert_eq!(out.len(), 5000);
}

/// Called from a task of its own pool, whose only worker that task holds,
/// `map_all` runs the tasks itself rather than wait for a free worker.
#[test]
fn map_all_inside_a_task_of_its_own_pool_does_not_wait_for_itself() {
    let pool = Arc::new(ThreadPool::new(1).unwrap());
    let inner = pool.clone();
    let h = pool
        .spawn_fn(move || inner.map_all((0..1000).map(|i| Add(i, 1))))
        .unwrap();
    let out = h
        .join_timeout(DEADLINE)
        .expect("map_all inside the pool's only worker ends")
        .unwrap();
    assert_eq!(out.unwrap(), (1..=1000).collect::<Vec<u64>>());
}

static GATE_STARTED: AtomicBool = AtomicBool::new(false);

/// Says it started, then runs until cancelled.
#[derive(Serialize, Deserialize)]
struct Gate(bool);

impl Task for Gate {
    type Output = bool;
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = "threads::map_all::Gate";
    fn run(self, cx: &mut TaskContext<'_, Self>) -> bool {
        if !self.0 {
            return false;
        }
        GATE_STARTED.store(true, Ordering::SeqCst);
        poll_until(|| cx.is_cancelled())
    }
}

/// `shutdown_now` during `map_all`: the running task is told (and ends),
/// every task not started fails `Cancelled`, and the call returns.
#[test]
fn shutdown_now_cancels_what_map_all_has_not_started() {
    let pool = ThreadPool::new(1).unwrap();
    let e = std::thread::scope(|s| {
        let call = s.spawn(|| bounded("map_all", || pool.map_all((0..1000).map(|i| Gate(i == 0)))));
        wait_until("the first task runs", DEADLINE, || {
            GATE_STARTED.load(Ordering::SeqCst)
        });
        pool.shutdown_now();
        call.join().unwrap()
    })
    .unwrap_err();
    let r = e.results();
    assert!(r[0].as_ref().unwrap(), "the running task saw the cancel");
    assert_eq!(e.failed(), 999);
    assert!(r[1..]
        .iter()
        .all(|r| r.as_ref().unwrap_err().kind() == &ErrorKind::Cancelled));
}

static FIRST_RUNS: AtomicBool = AtomicBool::new(false);
static OTHER_QUEUED: AtomicBool = AtomicBool::new(false);
static OTHER_RAN: AtomicBool = AtomicBool::new(false);

/// The first task waits until other work is queued; every other one
/// until that work has run.
#[derive(Serialize, Deserialize)]
struct AfterOther(u64);

impl Task for AfterOther {
    type Output = bool;
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = "threads::map_all::AfterOther";
    fn run(self, _cx: &mut TaskContext<'_, Self>) -> bool {
        if self.0 == 0 {
            FIRST_RUNS.store(true, Ordering::SeqCst);
            poll_until(|| OTHER_QUEUED.load(Ordering::SeqCst))
        } else {
            poll_until(|| OTHER_RAN.load(Ordering::SeqCst))
        }
    }
}

/// Sets [`OTHER_RAN`].
#[derive(Serialize, Deserialize)]
struct MarkOther;

impl Task for MarkOther {
    type Output = ();
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = "threads::map_all::MarkOther";
    fn run(self, _cx: &mut TaskContext<'_, Self>) {
        OTHER_RAN.store(true, Ordering::SeqCst);
    }
}

/// Work submitted while a `map_all` runs is not held back until the whole
/// call is done: the call holds room in the queue for the tasks it runs
/// at once only, and its job steps aside after its current range.
#[test]
fn work_queued_during_map_all_runs_before_it_ends() {
    let pool = ThreadPool::new(1).unwrap();
    let saw = std::thread::scope(|s| {
        // Eight tasks on one worker: ranges of one task each.
        let call = s.spawn(|| bounded("map_all", || pool.map_all((0..8).map(AfterOther))));
        wait_until("the first task runs", DEADLINE, || {
            FIRST_RUNS.load(Ordering::SeqCst)
        });
        // Submitted, so it needs room in the queue (default bound) too.
        let other = pool.submit(MarkOther).unwrap();
        OTHER_QUEUED.store(true, Ordering::SeqCst);
        other.join_timeout(DEADLINE).unwrap().unwrap();
        call.join().unwrap()
    })
    .unwrap();
    assert_eq!(saw, [true; 8], "a task waited out its deadline");
}

/// The pools the [`Nested`] tasks call `map_all` on, by index.
static POOLS: std::sync::Mutex<Vec<Arc<ThreadPool>>> = std::sync::Mutex::new(Vec::new());

fn register_pool(pool: ThreadPool) -> (usize, Arc<ThreadPool>) {
    let pool = Arc::new(pool);
    let mut pools = POOLS.lock().unwrap();
    pools.push(pool.clone());
    (pools.len() - 1, pool)
}

/// Calls `map_all` on pool `pool` with `fan` tasks, each of them a
/// `Nested` one level down (or an `Add` at the bottom); returns how many
/// `Add`s ran below it and the incarnation of the worker it ran on.
#[derive(Serialize, Deserialize)]
struct Nested {
    pool: usize,
    depth: u32,
    fan: u64,
}

impl Task for Nested {
    type Output = (u64, u64);
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = "threads::map_all::Nested";
    fn run(self, cx: &mut TaskContext<'_, Self>) -> (u64, u64) {
        let pool = POOLS.lock().unwrap()[self.pool].clone();
        let below = if self.depth == 0 {
            let sums = pool.map_all((0..self.fan).map(|i| Add(i, 0))).unwrap();
            sums.len() as u64
        } else {
            let tasks = (0..self.fan).map(|_| Nested {
                depth: self.depth - 1,
                ..self
            });
            pool.map_all(tasks).unwrap().iter().map(|r| r.0).sum()
        };
        (below, cx.worker().incarnation)
    }
}

/// Tasks that call `map_all` on their own pool, whose queue bound leaves
/// no room for helpers, run the nested tasks themselves instead of
/// waiting for room their callers hold.
#[test]
fn nested_map_all_with_a_small_queue_bound_does_not_wait_for_room() {
    for (workers, bound, depth, fan) in [(1, 1, 0, 1), (1, 2, 1, 3), (2, 3, 1, 3), (2, 1, 1, 3)] {
        let (index, pool) = register_pool(
            ThreadPool::builder()
                .workers(workers)
                .queue_bound(bound)
                .build()
                .unwrap(),
        );
        let top = Nested {
            pool: index,
            depth,
            fan,
        };
        let out = bounded("nested map_all", || pool.map_all([top])).unwrap();
        assert_eq!(
            out[0].0,
            fan.pow(depth + 1),
            "{workers} {bound} {depth} {fan}"
        );
    }
}

/// Tasks a calling task runs itself count toward its worker's task limit:
/// the worker is replaced once the calling task returns.
#[test]
fn tasks_run_by_a_calling_task_count_toward_its_workers_limit() {
    let (index, pool) = register_pool(
        ThreadPool::builder()
            .workers(1)
            .max_tasks_per_worker(5)
            .build()
            .unwrap(),
    );
    let top = Nested {
        pool: index,
        depth: 0,
        fan: 20,
    };
    let h = pool.submit(top).unwrap();
    let (ran, first) = h.join_timeout(DEADLINE).unwrap().unwrap();
    assert_eq!(ran, 20);
    let h = pool
        .submit(Nested {
            pool: index,
            depth: 0,
            fan: 0,
        })
        .unwrap();
    let (_, next) = h.join_timeout(DEADLINE).unwrap().unwrap();
    assert_ne!(first, next, "the worker ran 21 tasks under a limit of 5");
}

static INLINE_STARTED: AtomicBool = AtomicBool::new(false);
static INLINE_RAN: AtomicI64 = AtomicI64::new(0);
static INLINE_DONE: AtomicBool = AtomicBool::new(false);

/// Item 0 says it started and runs until cancelled; the others count.
#[derive(Serialize, Deserialize)]
struct InlineItem(u64);

impl Task for InlineItem {
    type Output = ();
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = "threads::map_all::InlineItem";
    fn run(self, cx: &mut TaskContext<'_, Self>) {
        if self.0 > 0 {
            INLINE_RAN.fetch_add(1, Ordering::SeqCst);
            return;
        }
        INLINE_STARTED.store(true, Ordering::SeqCst);
        poll_until(|| cx.is_cancelled());
    }
}

/// Calls `map_all` of [`InlineItem`]s on pool `0`, then says it is done.
#[derive(Serialize, Deserialize)]
struct CallsInline(usize);

impl Task for CallsInline {
    type Output = ();
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = "threads::map_all::CallsInline";
    fn run(self, _cx: &mut TaskContext<'_, Self>) {
        let pool = POOLS.lock().unwrap()[self.0].clone();
        let _ = pool.map_all((0..1000).map(InlineItem));
        INLINE_DONE.store(true, Ordering::SeqCst);
    }
}

/// A call a task runs inline (no room for helpers) stops at the next task
/// after `shutdown_now`, as one with helpers does.
#[test]
fn shutdown_now_stops_a_call_run_inline_at_the_next_task() {
    let (index, pool) = register_pool(ThreadPool::new(1).unwrap());
    let h = pool.submit(CallsInline(index)).unwrap();
    wait_until("the inline call's first task runs", DEADLINE, || {
        INLINE_STARTED.load(Ordering::SeqCst)
    });
    pool.shutdown_now();
    wait_until("the calling task ends", DEADLINE, || {
        INLINE_DONE.load(Ordering::SeqCst)
    });
    drop(h);
    assert_eq!(
        INLINE_RAN.load(Ordering::SeqCst),
        0,
        "tasks ran after shutdown_now"
    );
}
