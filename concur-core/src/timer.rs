//! A single shared timer thread for deadlines (per-task timeouts). Started
//! on first use; callbacks run on the timer thread and must be short.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::Instant;

type Callback = Box<dyn FnOnce() + Send>;

struct Entry {
    at: Instant,
    seq: u64,
    f: Callback,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

struct Timer {
    heap: Mutex<(BinaryHeap<Reverse<Entry>>, u64)>,
    cond: Condvar,
}

fn timer() -> &'static Timer {
    static TIMER: OnceLock<&'static Timer> = OnceLock::new();
    TIMER.get_or_init(|| {
        let t: &'static Timer = Box::leak(Box::new(Timer {
            heap: Mutex::new((BinaryHeap::new(), 0)),
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
    let mut g = t.heap.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let now = Instant::now();
        match g.0.peek() {
            Some(Reverse(e)) if e.at <= now => {
                let Reverse(e) = g.0.pop().expect("peeked");
                drop(g);
                (e.f)();
                g = t.heap.lock().unwrap_or_else(|e| e.into_inner());
            }
            Some(Reverse(e)) => {
                let wait = e.at - now;
                g = t
                    .cond
                    .wait_timeout(g, wait)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            None => g = t.cond.wait(g).unwrap_or_else(|e| e.into_inner()),
        }
    }
}

/// Runs `f` on the timer thread at `at` (or soon after).
pub fn at(at: Instant, f: impl FnOnce() + Send + 'static) {
    let t = timer();
    let mut g = t.heap.lock().unwrap_or_else(|e| e.into_inner());
    g.1 += 1;
    let seq = g.1;
    g.0.push(Reverse(Entry {
        at,
        seq,
        f: Box::new(f),
    }));
    t.cond.notify_one();
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
}
