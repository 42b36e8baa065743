//! [`Admission`]: the queue bound. A pool hands out one permit per submitted
//! task and gets it back when the task ends, so at most `bound` tasks are
//! queued or running at once; submitters wait (blocking or async) for room.
//!
//! A release checks for waiters without taking the lock, and a waiter
//! counts itself before it looks for room; a `SeqCst` fence on each side
//! makes sure one of the two sees the other. (The atomics are `SeqCst`
//! already, which is enough on real hardware, but loom models `SeqCst`
//! loads and stores as acquire/release and only fences as `SeqCst`, and
//! the loom models below check this handshake.)

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering::SeqCst;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use crate::error::{ErrorKind, TaskError};
use crate::loom::{fence, Arc, AtomicBool, AtomicUsize, Condvar, Mutex};

/// The queue bound of a pool. Closing it is how a pool stops taking work.
#[derive(Debug, Clone)]
pub struct Admission {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    bound: usize,
    available: AtomicUsize,
    closed: AtomicBool,
    /// Blocked acquirers and idle-waiters (any kind).
    waiters: AtomicUsize,
    /// Async acquirers among them: they cannot re-check on their own.
    async_waiters: AtomicUsize,
    /// Room at which blocked threads are woken. Waking a thread per
    /// finished task would cost a system call and a context switch per
    /// task; blocked threads also re-check every [`RECHECK`] so none is
    /// stranded below the mark.
    low_water: usize,
    lock: Mutex<VecDeque<Waker>>,
    cond: Condvar,
}

/// Room for `n` tasks in a pool's queue, given back when dropped.
///
/// Only an [`Admission`] hands out permits (`acquire`, `try_acquire`,
/// `acquire_async`), and a pool's `start` takes only a permit of its own
/// queue that holds room for the work it starts (see
/// [`Admission::admits`]), so the queue bound cannot be skipped. There is
/// no permit that holds no room:
///
/// ```compile_fail
/// let _ = concur_core::Permit::none();
/// ```
#[derive(Debug)]
#[must_use = "dropping a permit gives its room back at once"]
pub struct Permit {
    inner: Option<Arc<Inner>>,
    n: usize,
}

impl Permit {
    /// A permit that holds no room, for core's own tests of the result
    /// cell: a public one would let any caller skip a pool's queue bound.
    #[cfg(test)]
    pub(crate) fn none() -> Self {
        Self { inner: None, n: 0 }
    }
}

/// How often a blocked acquirer re-checks for room on its own.
const RECHECK: std::time::Duration = std::time::Duration::from_millis(1);

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            let before = inner.available.fetch_add(self.n, SeqCst);
            // Pairs with the fence after a waiter counts itself: either this
            // release sees the waiter, or the waiter sees this room.
            fence(SeqCst);
            let now = before + self.n;
            // Wake blocked threads when room crosses the mark (not on every
            // release above it) or when the pool falls idle.
            let crossed = before < inner.low_water && now >= inner.low_water;
            if crossed || now == inner.bound || inner.async_waiters.load(SeqCst) > 0 {
                inner.notify();
            }
        }
    }
}

impl Inner {
    /// Wakes waiters, if there are any.
    fn notify(&self) {
        if self.waiters.load(SeqCst) > 0 {
            self.wake_all();
        }
    }

    fn wake_all(&self) {
        let mut wakers = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.cond.notify_all();
        for w in wakers.drain(..) {
            w.wake();
        }
    }

    // An associated function, not a method on `&Arc<Self>`: loom's `Arc`
    // cannot be a receiver type.
    fn try_take(this: &Arc<Self>, n: usize) -> Result<Option<Permit>, TaskError> {
        if this.closed.load(SeqCst) {
            return Err(ErrorKind::ShutDown.into());
        }
        let mut cur = this.available.load(SeqCst);
        while cur >= n {
            match this
                .available
                .compare_exchange_weak(cur, cur - n, SeqCst, SeqCst)
            {
                Ok(_) => {
                    return Ok(Some(Permit {
                        inner: Some(this.clone()),
                        n,
                    }))
                }
                Err(now) => cur = now,
            }
        }
        Ok(None)
    }
}

impl Admission {
    /// Room for `bound` tasks.
    pub fn new(bound: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                bound,
                available: AtomicUsize::new(bound),
                closed: AtomicBool::new(false),
                waiters: AtomicUsize::new(0),
                async_waiters: AtomicUsize::new(0),
                low_water: (bound / 8).max(1),
                lock: Mutex::new(VecDeque::new()),
                cond: Condvar::new(),
            }),
        }
    }

    /// The bound.
    pub fn bound(&self) -> usize {
        self.inner.bound
    }

    /// Tasks holding room now (queued or running).
    pub fn in_use(&self) -> usize {
        self.inner.bound - self.inner.available.load(SeqCst).min(self.inner.bound)
    }

    fn check_n(&self, n: usize) -> Result<(), TaskError> {
        if n > self.inner.bound {
            return Err(TaskError::config(
                "queue_bound",
                &format!(
                    "a batch of {n} tasks does not fit a queue bound of {}",
                    self.inner.bound
                ),
            ));
        }
        Ok(())
    }

    /// Checks that `permit` was handed out by this admission and holds room
    /// for `tasks` tasks. Every backend's `start` and `start_batch` call it
    /// before they accept work, so a permit of another queue (or one too
    /// small for a batch) cannot carry work past this pool's bound.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] (field `permit`) when it was not, or holds
    /// room for fewer tasks.
    pub fn admits(&self, permit: &Permit, tasks: usize) -> Result<(), TaskError> {
        let ours = permit
            .inner
            .as_ref()
            .is_some_and(|inner| Arc::ptr_eq(inner, &self.inner));
        if !ours {
            return Err(TaskError::config(
                "permit",
                "the permit was not handed out by this pool's queue; \
                 acquire it from the pool's `admission()` (or use `submit`)",
            ));
        }
        if permit.n < tasks {
            return Err(TaskError::config(
                "permit",
                &format!(
                    "the permit holds room for {} tasks, not the {tasks} started with it",
                    permit.n
                ),
            ));
        }
        Ok(())
    }

    /// Room for `n` tasks if there is some now.
    ///
    /// # Errors
    /// [`ErrorKind::ShutDown`] once closed; [`ErrorKind::Config`] when `n` exceeds the bound.
    pub fn try_acquire(&self, n: usize) -> Result<Option<Permit>, TaskError> {
        self.check_n(n)?;
        Inner::try_take(&self.inner, n)
    }

    /// Waits (blocking the thread) for room for `n` tasks.
    ///
    /// # Errors
    /// As [`try_acquire`](Self::try_acquire).
    pub fn acquire(&self, n: usize) -> Result<Permit, TaskError> {
        self.check_n(n)?;
        if let Some(p) = Inner::try_take(&self.inner, n)? {
            return Ok(p);
        }
        let inner = &self.inner;
        let mut guard = inner.lock.lock().unwrap_or_else(|e| e.into_inner());
        inner.waiters.fetch_add(1, SeqCst);
        fence(SeqCst); // see `Permit::drop`
        let result = loop {
            match Inner::try_take(inner, n) {
                Ok(Some(p)) => break Ok(p),
                Err(e) => break Err(e),
                Ok(None) => {
                    guard = inner
                        .cond
                        .wait_timeout(guard, RECHECK)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            }
        };
        inner.waiters.fetch_sub(1, SeqCst);
        result
    }

    /// Waits (asynchronously) for room for `n` tasks.
    ///
    /// # Errors
    /// As [`try_acquire`](Self::try_acquire).
    pub fn acquire_async(
        &self,
        n: usize,
    ) -> impl Future<Output = Result<Permit, TaskError>> + Send + 'static {
        AcquireFuture {
            admission: self.clone(),
            n,
            registered: false,
        }
    }

    /// Stops handing out room: every present and future acquire fails with
    /// [`ErrorKind::ShutDown`]. Permits already out stay valid.
    pub fn close(&self) {
        self.inner.closed.store(true, SeqCst);
        self.inner.wake_all();
    }

    /// True once [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(SeqCst)
    }

    /// Waits until no permit is out (every task ended) or `deadline` passes.
    /// Returns true when idle.
    pub fn wait_idle(&self, deadline: Option<Instant>) -> bool {
        let inner = &self.inner;
        let idle = || inner.available.load(SeqCst) >= inner.bound;
        if idle() {
            return true;
        }
        let mut guard = inner.lock.lock().unwrap_or_else(|e| e.into_inner());
        inner.waiters.fetch_add(1, SeqCst);
        fence(SeqCst); // see `Permit::drop`
        let result = loop {
            if idle() {
                break true;
            }
            let wait = match deadline {
                None => RECHECK,
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        break false;
                    }
                    (d - now).min(RECHECK)
                }
            };
            guard = inner
                .cond
                .wait_timeout(guard, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        };
        inner.waiters.fetch_sub(1, SeqCst);
        result
    }
}

struct AcquireFuture {
    admission: Admission,
    n: usize,
    registered: bool,
}

impl Future for AcquireFuture {
    type Output = Result<Permit, TaskError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Err(e) = self.admission.check_n(self.n) {
            return Poll::Ready(Err(e));
        }
        let inner = self.admission.inner.clone();
        if let Some(p) = Inner::try_take(&inner, self.n).transpose() {
            return Poll::Ready(p);
        }
        let mut wakers = inner.lock.lock().unwrap_or_else(|e| e.into_inner());
        if !self.registered {
            inner.waiters.fetch_add(1, SeqCst);
            inner.async_waiters.fetch_add(1, SeqCst);
            fence(SeqCst); // see `Permit::drop`
            self.registered = true;
        }
        // Re-check under the lock: a release in between has seen our waiter count.
        if let Some(p) = Inner::try_take(&inner, self.n).transpose() {
            return Poll::Ready(p);
        }
        wakers.push_back(cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for AcquireFuture {
    fn drop(&mut self) {
        if self.registered {
            self.admission.inner.waiters.fetch_sub(1, SeqCst);
            self.admission.inner.async_waiters.fetch_sub(1, SeqCst);
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bound_holds_and_room_returns() {
        let a = Admission::new(2);
        let p1 = a.acquire(1).unwrap();
        let _p2 = a.acquire(1).unwrap();
        assert!(a.try_acquire(1).unwrap().is_none());
        assert_eq!(a.in_use(), 2);
        drop(p1);
        assert!(a.try_acquire(1).unwrap().is_some());
    }

    #[test]
    fn blocked_acquire_wakes_on_release() {
        let a = Admission::new(1);
        let p = a.acquire(1).unwrap();
        let a2 = a.clone();
        let t = std::thread::spawn(move || a2.acquire(1).map(|_| ()));
        drop(p);
        t.join().unwrap().unwrap();
    }

    #[test]
    fn close_fails_waiters() {
        let a = Admission::new(1);
        let _p = a.acquire(1).unwrap();
        let a2 = a.clone();
        let t = std::thread::spawn(move || a2.acquire(1).map(|_| ()));
        a.close();
        assert!(t.join().unwrap().unwrap_err().is_shut_down());
        assert!(!a.wait_idle(Some(Instant::now() + Duration::from_millis(1))));
    }

    #[test]
    fn admits_only_its_own_permits_for_enough_tasks() {
        let a = Admission::new(4);
        let other = Admission::new(4);
        let own = a.acquire(2).unwrap();
        assert_eq!(own.n, 2);
        a.admits(&own, 2).unwrap();
        a.admits(&own, 1).unwrap();
        let short = a.admits(&own, 3).unwrap_err();
        assert!(
            matches!(short.kind(), ErrorKind::Config { field, .. } if field == "permit"),
            "{short:?}"
        );
        let foreign = other.acquire(1).unwrap();
        let e = a.admits(&foreign, 1).unwrap_err();
        assert!(
            matches!(e.kind(), ErrorKind::Config { field, .. } if field == "permit"),
            "{e:?}"
        );
        assert!(a.admits(&Permit::none(), 0).is_err());
    }

    #[test]
    fn oversize_request_is_config_error() {
        let a = Admission::new(1);
        assert!(matches!(
            a.acquire(2).unwrap_err().kind(),
            ErrorKind::Config { .. }
        ));
    }
}

/// Loom models of the queue bound: acquire, release and close in every
/// interleaving (see `crate::loom` for how to run them). Requests are for
/// one task each: a blocked request for several may wait for its re-check
/// by design (see [`Inner::low_water`]), which loom cannot model.
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::thread;

    /// A blocked acquirer is woken by the release that makes room.
    #[test]
    fn loom_release_wakes_blocked_acquire() {
        loom::model(|| {
            let a = Admission::new(1);
            let held = a.acquire(1).unwrap();
            let a2 = a.clone();
            let waiter = thread::spawn(move || a2.acquire(1).map(drop));
            drop(held);
            waiter.join().unwrap().unwrap();
            assert_eq!(a.in_use(), 0);
        });
    }

    /// Two acquirers, one room: the bound holds and both get it in turn.
    #[test]
    fn loom_bound_holds_between_acquirers() {
        loom::model(|| {
            let a = Admission::new(1);
            let peak = Arc::new(AtomicUsize::new(0));
            let spawn = |a: Admission, peak: Arc<AtomicUsize>| {
                thread::spawn(move || {
                    let p = a.acquire(1).unwrap();
                    peak.fetch_max(a.in_use(), SeqCst);
                    drop(p);
                })
            };
            let t1 = spawn(a.clone(), peak.clone());
            let t2 = spawn(a.clone(), peak.clone());
            t1.join().unwrap();
            t2.join().unwrap();
            assert_eq!(peak.load(SeqCst), 1);
            assert_eq!(a.in_use(), 0);
        });
    }

    /// Closing fails a blocked acquirer (or it got the room first).
    #[test]
    fn loom_close_ends_blocked_acquire() {
        loom::model(|| {
            let a = Admission::new(1);
            let held = a.acquire(1).unwrap();
            let a2 = a.clone();
            let waiter = thread::spawn(move || a2.acquire(1).map(drop));
            a.close();
            assert!(waiter.join().unwrap().unwrap_err().is_shut_down());
            drop(held);
            assert!(a.try_acquire(1).unwrap_err().is_shut_down());
        });
    }

    /// Close races a release and a blocked acquirer: the acquirer ends
    /// either way, with the room or with `ShutDown`.
    #[test]
    fn loom_close_vs_release_vs_acquire() {
        loom::model(|| {
            let a = Admission::new(1);
            let held = a.acquire(1).unwrap();
            let a2 = a.clone();
            let waiter = thread::spawn(move || a2.acquire(1).map(drop));
            let a3 = a.clone();
            let closer = thread::spawn(move || a3.close());
            drop(held);
            closer.join().unwrap();
            match waiter.join().unwrap() {
                Ok(()) => {}
                Err(e) => assert!(e.is_shut_down()),
            }
            assert_eq!(a.in_use(), 0);
        });
    }

    /// `wait_idle` returns once the last permit is back.
    #[test]
    fn loom_wait_idle_sees_last_release() {
        loom::model(|| {
            let a = Admission::new(2);
            let p1 = a.acquire(1).unwrap();
            let p2 = a.acquire(1).unwrap();
            let a2 = a.clone();
            let idler = thread::spawn(move || a2.wait_idle(None));
            let t = thread::spawn(move || drop(p1));
            drop(p2);
            t.join().unwrap();
            assert!(idler.join().unwrap());
        });
    }
}
