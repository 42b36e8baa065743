//! A single shared timer thread for deadlines (per-task timeouts). Started
//! on first use; callbacks run on the timer thread and must be short.
//!
//! A deadline that no longer matters (its task finished) is cancelled with
//! [`cancel`]: its callback, and whatever the callback holds, is dropped at
//! once, so a million finished tasks with hour-long timeouts hold no memory
//! but a few bytes each until the heap is next compacted.
//!
//! The thread is shared by every pool in the process, so nothing a callback
//! does may stop it: a callback that panics is caught (the first such panic
//! is reported on stderr) and the thread goes on with the next deadline.
//! When the thread cannot be started, [`at`] fails with
//! [`ErrorKind::Spawn`] and the next call tries again.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::time::Instant;

use crate::error::{ErrorKind, TaskError};

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
    /// The thread runs (set once it was started).
    started: bool,
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

/// Starts the thread that runs a timer's deadlines.
type Spawner = fn(&'static Timer) -> std::io::Result<()>;

struct Timer {
    wheel: Mutex<Wheel>,
    cond: Condvar,
    spawn: Spawner,
    /// A callback has panicked (so later panics are not reported again).
    panicked: AtomicBool,
}

fn spawn_thread(t: &'static Timer) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("concur-timer".into())
        .spawn(move || t.run())
        .map(drop)
}

fn timer() -> &'static Timer {
    static TIMER: OnceLock<&'static Timer> = OnceLock::new();
    TIMER.get_or_init(|| Timer::leaked(spawn_thread))
}

impl Timer {
    /// A timer that lives for the rest of the process (its thread never ends).
    fn leaked(spawn: Spawner) -> &'static Timer {
        Box::leak(Box::new(Timer {
            wheel: Mutex::new(Wheel::default()),
            cond: Condvar::new(),
            spawn,
            panicked: AtomicBool::new(false),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, Wheel> {
        self.wheel.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn run(&'static self) {
        let mut g = self.lock();
        loop {
            let now = Instant::now();
            match g.heap.peek().copied() {
                Some(Reverse((at, key))) if at <= now => {
                    g.heap.pop();
                    if let Some(f) = g.live.remove(&key) {
                        drop(g);
                        if let Err(e) = crate::panic::catch(f) {
                            self.report(&e);
                        }
                        g = self.lock();
                    }
                }
                Some(Reverse((at, _))) => {
                    g = self
                        .cond
                        .wait_timeout(g, at - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
                None => g = self.cond.wait(g).unwrap_or_else(|e| e.into_inner()),
            }
        }
    }

    /// Says once per process that a callback panicked. The panic hook has
    /// printed the panic itself; this says what became of the timer.
    fn report(&self, e: &TaskError) {
        if !self.panicked.swap(true, Ordering::Relaxed) {
            eprintln!(
                "concur: a deadline callback panicked ({e}); the timer thread goes on \
                 (later callback panics are not reported here)"
            );
        }
    }

    fn at(&'static self, at: Instant, f: Callback) -> Result<TimerKey, TaskError> {
        let mut g = self.lock();
        if !g.started {
            // Under the lock, so two first callers never start two threads;
            // the thread's first act is to take this lock.
            (self.spawn)(self).map_err(|e| TaskError::with_source(ErrorKind::Spawn, e))?;
            g.started = true;
        }
        g.next += 1;
        let key = g.next;
        g.live.insert(key, f);
        g.heap.push(Reverse((at, key)));
        self.cond.notify_one();
        Ok(TimerKey(key))
    }

    fn cancel(&self, key: TimerKey) {
        let f = {
            let mut g = self.lock();
            let f = g.live.remove(&key.0);
            g.compact();
            f
        };
        // Dropped outside the lock: it may hold anything.
        drop(f);
    }
}

/// Runs `f` on the timer thread at `at` (or soon after), unless cancelled.
///
/// # Errors
/// [`ErrorKind::Spawn`] (with the I/O error as its source) when the timer
/// thread is not running and cannot be started; the next call tries again.
pub fn at(at: Instant, f: impl FnOnce() + Send + 'static) -> Result<TimerKey, TaskError> {
    timer().at(at, Box::new(f))
}

/// Cancels a callback that has not run yet (a no-op once it ran).
pub fn cancel(key: TimerKey) {
    timer().cancel(key);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn fires_in_deadline_order() {
        let (tx, rx) = mpsc::channel();
        let now = Instant::now();
        let tx2 = tx.clone();
        at(now + Duration::from_millis(20), move || {
            tx2.send(2).unwrap()
        })
        .unwrap();
        at(now + Duration::from_millis(1), move || tx.send(1).unwrap()).unwrap();
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
        })
        .unwrap();
        cancel(key);
        assert_eq!(
            std::sync::Arc::strong_count(&held),
            1,
            "the callback was not dropped"
        );
        assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
    }

    /// Issue 7.11: one panicking callback used to end the thread, and with
    /// it every later deadline in the process.
    #[test]
    fn a_panicking_callback_does_not_stop_the_timer() {
        let t = Timer::leaked(spawn_thread);
        let (tx, rx) = mpsc::channel();
        let now = Instant::now();
        t.at(now, Box::new(|| panic!("a callback panics"))).unwrap();
        t.at(
            now + Duration::from_millis(1),
            Box::new(move || tx.send(7).unwrap()),
        )
        .unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_secs(60)), Ok(7));
        assert!(t.panicked.load(Ordering::Relaxed));
    }

    /// Issue 7.11: a timer thread that cannot start is an error for the
    /// caller (not a panic), and the next call tries again.
    #[test]
    fn a_failed_start_is_an_error_and_retried() {
        static TRIES: AtomicU32 = AtomicU32::new(0);
        fn fail_once(t: &'static Timer) -> std::io::Result<()> {
            if TRIES.fetch_add(1, Ordering::SeqCst) == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::WouldBlock));
            }
            spawn_thread(t)
        }
        let t = Timer::leaked(fail_once);
        let e = t.at(Instant::now(), Box::new(|| {})).unwrap_err();
        assert!(matches!(e.kind(), ErrorKind::Spawn), "{e:?}");
        let (tx, rx) = mpsc::channel();
        t.at(Instant::now(), Box::new(move || tx.send(1).unwrap()))
            .unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_secs(60)), Ok(1));
        assert_eq!(TRIES.load(Ordering::SeqCst), 2);
    }
}
