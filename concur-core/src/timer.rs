//! A single shared timer thread for deadlines (per-task timeouts). Started
//! on first use; callbacks run on the timer thread and must be short.
//!
//! A deadline that no longer matters (its task finished) is cancelled with
//! [`cancel`]: its callback, and whatever the callback holds, is dropped at
//! once, so a million finished tasks with hour-long timeouts hold no memory
//! but a few bytes each until the heap is next compacted.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::time::Instant;

type Callback = Box<dyn FnOnce() + Send>;

/// Identifies a scheduled callback, for [`cancel`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerKey(u64);

#[derive(Default)]
struct Wheel {
    /// Deadlines in order; an entry whose key is no longer in `live` was cancelled.
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    live: HashMap<u64, Callback>,
    next: u64,
}

impl Wheel {
    /// Drops cancelled entries from the heap once they outnumber live ones.
    fn compact(&mut self) {
        if self.heap.len() > 2 * self.live.len() + 1024 {
            let live = &self.live;
            self.heap.retain(|Reverse((_, k))| live.contains_key(k));
        }
    }
}

struct Timer {
    wheel: Mutex<Wheel>,
    cond: Condvar,
}

impl Timer {
    fn lock(&self) -> MutexGuard<'_, Wheel> {
        self.wheel.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn timer() -> &'static Timer {
    static TIMER: OnceLock<&'static Timer> = OnceLock::new();
    TIMER.get_or_init(|| {
        let t: &'static Timer = Box::leak(Box::new(Timer {
            wheel: Mutex::new(Wheel::default()),
            cond: Condvar::new(),
        }));
        std::thread::Builder::new()
            .name("concur-timer".into())
            .spawn(move || run(t))
            .expect("cannot start the concur timer thread");
        t
    })
}

fn run(t: &'static Timer) {
    let mut g = t.lock();
    loop {
        let now = Instant::now();
        match g.heap.peek().copied() {
            Some(Reverse((at, key))) if at <= now => {
                g.heap.pop();
                if let Some(f) = g.live.remove(&key) {
                    drop(g);
                    f();
                    g = t.lock();
                }
            }
            Some(Reverse((at, _))) => {
                g = t
                    .cond
                    .wait_timeout(g, at - now)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            None => g = t.cond.wait(g).unwrap_or_else(|e| e.into_inner()),
        }
    }
}

/// Runs `f` on the timer thread at `at` (or soon after), unless cancelled.
pub fn at(at: Instant, f: impl FnOnce() + Send + 'static) -> TimerKey {
    let t = timer();
    let mut g = t.lock();
    g.next += 1;
    let key = g.next;
    g.live.insert(key, Box::new(f));
    g.heap.push(Reverse((at, key)));
    t.cond.notify_one();
    TimerKey(key)
}

/// Cancels a callback that has not run yet (a no-op once it ran).
pub fn cancel(key: TimerKey) {
    let f = {
        let mut g = timer().lock();
        let f = g.live.remove(&key.0);
        g.compact();
        f
    };
    // Dropped outside the lock: it may hold anything.
    drop(f);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn fires_in_deadline_order() {
        let (tx, rx) = mpsc::channel();
        let now = Instant::now();
        let tx2 = tx.clone();
        at(now + Duration::from_millis(20), move || {
            tx2.send(2).unwrap()
        });
        at(now + Duration::from_millis(1), move || tx.send(1).unwrap());
        let got: Vec<i32> = (0..2)
            .map(|_| rx.recv_timeout(Duration::from_secs(10)).unwrap())
            .collect();
        assert_eq!(got, vec![1, 2]);
    }

    #[test]
    fn cancelled_callback_never_runs_and_is_dropped_at_once() {
        let (tx, rx) = mpsc::channel::<i32>();
        let held = std::sync::Arc::new(());
        let h = held.clone();
        let key = at(Instant::now() + Duration::from_millis(30), move || {
            let _ = &h;
            tx.send(1).unwrap();
        });
        cancel(key);
        assert_eq!(
            std::sync::Arc::strong_count(&held),
            1,
            "the callback was not dropped"
        );
        assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
    }
}
