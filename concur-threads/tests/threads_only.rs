//! What only the thread backend offers (plain closures, scoped borrowing)
//! and what it documents it cannot do (stop a running thread).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use common::{bounded, poll_until};
use concur_core::conformance::{Block, DEADLINE};
use concur_core::prelude::*;
use concur_core::{ErrorKind, MapOptions, TaskHandle};
use concur_threads::ThreadPool;
use serde::{Deserialize, Serialize};

#[test]
fn closures_return_any_send_value() {
    let pool = ThreadPool::new(2).unwrap();
    let shared = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..10)
        .map(|i| {
            let shared = shared.clone();
            pool.spawn_fn(move || {
                shared.fetch_add(1, Ordering::SeqCst);
                // Not serializable: an Rc-free but non-serde value is fine.
                std::sync::Mutex::new(i * 2)
            })
            .unwrap()
        })
        .collect();
    let values: Vec<usize> = handles
        .into_iter()
        .map(|h| {
            h.join_timeout(DEADLINE)
                .unwrap()
                .unwrap()
                .into_inner()
                .unwrap()
        })
        .collect();
    assert_eq!(values, (0..10).map(|i| i * 2).collect::<Vec<_>>());
    assert_eq!(shared.load(Ordering::SeqCst), 10);
}

#[test]
fn closure_panic_becomes_error() {
    let pool = ThreadPool::new(1).unwrap();
    let h = pool
        .spawn_fn(|| -> u8 { panic!("closure went wrong") })
        .unwrap();
    match h.join_timeout(DEADLINE).unwrap().unwrap_err().kind() {
        ErrorKind::Panicked { message, .. } => assert_eq!(message, "closure went wrong"),
        other => panic!("expected Panicked, got {other:?}"),
    }
    let h = pool.spawn_fn(|| 5).unwrap();
    assert_eq!(h.join_timeout(DEADLINE).unwrap().unwrap(), 5);
}

#[test]
fn closure_after_shutdown_fails() {
    let pool = ThreadPool::new(1).unwrap();
    bounded("shutdown", || pool.shutdown()).unwrap();
    assert!(pool.spawn_fn(|| 1).unwrap_err().is_shut_down());
}

#[test]
fn scope_borrows_stack_data() {
    let pool = ThreadPool::new(2).unwrap();
    let data: Vec<u64> = (1..=1000).collect();
    let (left, right) = data.split_at(500);
    let mut sums = [0u64; 2];
    let (a, b) = sums.split_at_mut(1);
    bounded("the scope", || {
        pool.scope(|s| {
            s.spawn(|| a[0] = left.iter().sum());
            s.spawn(|| b[0] = right.iter().sum());
        })
    });
    assert_eq!(sums[0] + sums[1], 500_500);
}

#[test]
fn scope_runs_on_pool_threads() {
    let pool = ThreadPool::new(2).unwrap();
    let caller = std::thread::current().id();
    let mut seen = None;
    bounded("the scope", || {
        pool.scope(|s| s.spawn(|| seen = Some(std::thread::current().id())))
    });
    assert_ne!(seen.unwrap(), caller);
}

/// A thread cannot be killed: after a timeout the handle fails at once and
/// the task is told (it sees `is_cancelled`), but it is the task that stops.
#[test]
fn timeout_fails_handle_and_tells_task() {
    let pool = ThreadPool::builder()
        .workers(1)
        .task_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let h: TaskHandle<Block> = pool.submit(Block).unwrap();
    let worker = h.recv_timeout(DEADLINE).expect("block starts");
    assert!(h.join_timeout(DEADLINE).unwrap().unwrap_err().is_timeout());
    // The worker thread is still the same one: nothing was killed.
    let again = pool.submit(Block).unwrap();
    let w2 = again.recv_timeout(DEADLINE).expect("next task starts");
    assert_eq!(w2.incarnation, worker.incarnation);
    again.send(()).unwrap();
}

#[test]
fn pools_and_handles_are_send_sync() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<ThreadPool>();
    send_sync::<TaskHandle<Block>>();
    send_sync::<concur_core::BatchHandle<Block>>();
    send::<concur_threads::FnHandle<String>>();
    send_sync::<concur_core::TaskError>();
}

#[test]
fn pool_is_usable_behind_arc_from_many_threads() {
    let pool = Arc::new(ThreadPool::new(2).unwrap());
    let joins: Vec<_> = (0..4u64)
        .map(|t| {
            let pool = pool.clone();
            std::thread::spawn(move || {
                pool.submit(concur_core::conformance::Add(t, 1))
                    .unwrap()
                    .join_timeout(DEADLINE)
                    .expect("finishes within the deadline")
                    .unwrap()
            })
        })
        .collect();
    let mut got: Vec<u64> = joins.into_iter().map(|j| j.join().unwrap()).collect();
    got.sort_unstable();
    assert_eq!(got, vec![1, 2, 3, 4]);
}

static RELEASE: (Mutex<bool>, Condvar) = (Mutex::new(false), Condvar::new());

/// A batch item for the per-item timeout tests.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Item {
    /// Returns its number at once.
    Quick(u64),
    /// Returns its number when told it no longer matters (its timeout), or
    /// after the duration at most.
    Slow(u64, Duration),
    /// Holds its thread until the test releases it, whatever it is told.
    Stuck(u64),
    /// Panics.
    Panic,
}
impl Task for Item {
    type Output = u64;
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = "threads::tests::Item";
    fn run(self, cx: &mut TaskContext<'_, Self>) -> u64 {
        match self {
            Item::Quick(n) => n,
            Item::Slow(n, d) => {
                let until = Instant::now() + d;
                while !cx.is_cancelled() && Instant::now() < until {
                    std::thread::sleep(Duration::from_millis(5));
                }
                n
            }
            Item::Stuck(n) => {
                let (lock, cond) = &RELEASE;
                let g = lock.lock().unwrap();
                let _g = cond
                    .wait_timeout_while(g, DEADLINE, |released| !*released)
                    .unwrap();
                n
            }
            Item::Panic => panic!("item panicked"),
        }
    }
}

fn assert_timed_out(r: &Result<u64, TaskError>, t: Duration) {
    match r.as_ref().unwrap_err().kind() {
        ErrorKind::TimedOut { after } => assert_eq!(*after, t),
        other => panic!("expected TimedOut, got {other:?}"),
    }
}

/// The per-task timeout bounds each task of a batch: only the slow item
/// times out (after the task timeout, not the timeout times the batch
/// length), and the items after it still run and give their own results.
#[test]
fn batch_timeout_is_per_item() {
    let t = Duration::from_millis(300);
    let pool = ThreadPool::builder()
        .workers(1)
        .task_timeout(t)
        .build()
        .unwrap();
    let batch = vec![Item::Quick(0), Item::Slow(1, t * 3), Item::Quick(2)];
    let results = pool
        .submit_batch(batch)
        .unwrap()
        .join_timeout(DEADLINE)
        .expect("the batch finishes within the deadline");
    assert_eq!(results.len(), 3);
    assert_eq!(results[0].as_ref().unwrap(), &0);
    assert_timed_out(&results[1], t);
    assert_eq!(results[2].as_ref().unwrap(), &2);
}

/// A batch item stuck past its timeout does not hold back the rest of its
/// batch: they run on another worker and the batch resolves while the
/// stuck thread is still inside its task. A panic fails its item only.
#[test]
fn batch_items_after_a_stuck_one_run_elsewhere() {
    // Long enough that a panic (which prints a backtrace) finishes within
    // it on a loaded machine: only the stuck item may time out.
    let t = Duration::from_secs(2);
    let pool = ThreadPool::builder()
        .workers(2)
        .task_timeout(t)
        .build()
        .unwrap();
    let batch = vec![Item::Quick(0), Item::Stuck(1), Item::Panic, Item::Quick(3)];
    let results = pool
        .submit_batch(batch)
        .unwrap()
        .join_timeout(DEADLINE)
        .expect("the batch finishes within the deadline");
    assert_eq!(results.len(), 4);
    assert_eq!(results[0].as_ref().unwrap(), &0);
    assert_timed_out(&results[1], t);
    assert!(matches!(
        results[2].as_ref().unwrap_err().kind(),
        ErrorKind::Panicked { .. }
    ));
    assert_eq!(results[3].as_ref().unwrap(), &3);
    *RELEASE.0.lock().unwrap() = true;
    RELEASE.1.notify_all();
    // The stuck worker is usable again once its task returns.
    let again: Vec<u64> = bounded("the map after the stuck item", || {
        pool.map((0..20).map(Item::Quick))
            .collect::<Result<_, _>>()
            .unwrap()
    });
    assert_eq!(again, (0..20).collect::<Vec<_>>());
}

/// An output whose `Drop` panics.
#[derive(Serialize, Deserialize)]
struct Loud(u64);

impl Drop for Loud {
    fn drop(&mut self) {
        panic!("panic in Drop of output {}", self.0);
    }
}

/// Makes a [`Loud`].
#[derive(Serialize, Deserialize)]
struct MakeLoud(u64);

impl Task for MakeLoud {
    type Output = Loud;
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = "threads::tests::MakeLoud";
    fn run(self, _cx: &mut TaskContext<'_, Self>) -> Loud {
        std::thread::sleep(Duration::from_millis(2));
        Loud(self.0)
    }
}

/// An output whose `Drop` panics, dropped on the worker because its handle
/// is gone: the panic is caught and the process goes on (before, it unwound
/// into rayon, which aborts the process).
#[test]
fn a_panicking_drop_of_an_unjoined_output_does_not_abort() {
    let pool = ThreadPool::builder().workers(2).build().unwrap();
    for i in 0..20 {
        drop(pool.submit(MakeLoud(i)).unwrap());
    }
    let h = pool.submit(Item::Quick(9)).unwrap();
    assert_eq!(h.join_timeout(DEADLINE).unwrap().unwrap(), 9);
    bounded("shutdown", || pool.shutdown()).unwrap();
}

/// Many outputs whose `Drop` panics, dropped together by the library: an
/// unjoined batch (on the worker) and the unread rest of a dropped `map`
/// (on the caller's thread). Dropping them as one `Vec` aborted the process
/// at the second panic; now each is dropped on its own, the worker goes on
/// and the caller sees one panic, as for one value.
#[test]
fn panicking_drops_of_many_unread_outputs_do_not_abort() {
    let pool = ThreadPool::builder().workers(2).build().unwrap();
    let batch = pool.submit_batch((0..8).map(MakeLoud).collect()).unwrap();
    drop(batch);
    // Every batch is dropped unread on the worker that finished it.
    for _ in 0..4 {
        drop(pool.submit_batch((0..8).map(MakeLoud).collect()).unwrap());
    }
    // Batches of 8: once the first item is out, the other 7 of its batch
    // wait in the map, unread, and its drop drops them.
    let mut map = pool.map_with((0..64).map(MakeLoud), MapOptions::default().batch(8));
    std::mem::forget(map.next().unwrap());
    let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(map)));
    let message = concur_core::panic::payload_message(&*dropped.unwrap_err());
    assert!(message.contains("panic in Drop of output"), "{message}");
    let h = pool.submit(Item::Quick(9)).unwrap();
    assert_eq!(h.join_timeout(DEADLINE).unwrap().unwrap(), 9);
    bounded("shutdown", || pool.shutdown()).unwrap();
}

/// The last `Arc` of a pool dropped inside one of its own tasks: the drop
/// cannot wait for the task that runs it, so it returns, the task ends with
/// its value, and the pool's workers are joined afterwards (before, the
/// drop waited for its own task for ever).
#[test]
fn a_pool_dropped_inside_its_own_task_does_not_wait_for_itself() {
    let pool = Arc::new(ThreadPool::new(1).unwrap());
    let (go, wait) = std::sync::mpsc::channel::<()>();
    let last = pool.clone();
    let h = pool
        .spawn_fn(move || {
            wait.recv_timeout(DEADLINE)
                .expect("the test lets the task go");
            let thread = concur_core::WorkerInfo::current(0, 0).thread;
            drop(last);
            thread
        })
        .unwrap();
    drop(pool);
    go.send(()).unwrap();
    let thread = h
        .join_timeout(DEADLINE)
        .expect("the task that dropped its pool ends")
        .unwrap();
    concur_core::conformance::wait_until("the pool's worker is joined", DEADLINE, || {
        !std::path::Path::new(&format!("/proc/self/task/{thread}")).exists()
    });
}

/// Items of [`SlowLoud`] batches that have run.
static SLOW_LOUD_RAN: AtomicUsize = AtomicUsize::new(0);

/// Makes a [`Loud`]; item 3 first waits until its batch is cancelled, so
/// the batch is still running when the test cancels it.
#[derive(Serialize, Deserialize)]
struct SlowLoud(u64);

impl Task for SlowLoud {
    type Output = Loud;
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = "threads::tests::SlowLoud";
    fn run(self, cx: &mut TaskContext<'_, Self>) -> Loud {
        SLOW_LOUD_RAN.fetch_add(1, Ordering::SeqCst);
        if self.0 == 3 {
            poll_until(|| cx.is_cancelled());
        }
        Loud(self.0)
    }
}

/// A batch cancelled after several of its items ran: the worker drops
/// their outputs (nobody will read them) one at a time, so outputs whose
/// `Drop` panics cost one caught panic. Before, dropping them as one `Vec`
/// aborted the process at the second.
#[test]
fn a_cancelled_batch_drops_its_finished_outputs_without_aborting() {
    let pool = ThreadPool::builder().workers(1).build().unwrap();
    let batch = pool.submit_batch((0..50).map(SlowLoud).collect()).unwrap();
    concur_core::conformance::wait_until("three items ran and the fourth waits", DEADLINE, || {
        SLOW_LOUD_RAN.load(Ordering::SeqCst) > 3
    });
    assert!(batch.cancel());
    let h = pool.submit(Item::Quick(9)).unwrap();
    assert_eq!(h.join_timeout(DEADLINE).unwrap().unwrap(), 9);
    bounded("shutdown", || pool.shutdown()).unwrap();
}
