//! [`Admission`]: the queue bound. A pool hands out one permit per submitted
//! task and gets it back when the task ends, so at most `bound` tasks are
//! queued or running at once; submitters wait (blocking or async) for room.
//!
//! Waiting submitters stand in a FIFO list and room is handed to them in
//! order: a release gives its room straight to the head of the list (and to
//! the next ones while it fits) and wakes exactly them, and a newcomer never
//! takes room while anyone waits, so a waiting submitter is never
//! overtaken. Nobody polls: a waiter sleeps until it is handed room or the
//! queue is closed.
//!
//! With nobody waiting, taking and giving back room are a compare-and-swap
//! and an add on one counter, with no lock. A release checks for waiters
//! without taking the lock, and a waiter counts itself before it looks for
//! room; a `SeqCst` fence on each side makes sure one of the two sees the
//! other. (The atomics are `SeqCst` already, which is enough on real
//! hardware, but loom models `SeqCst` loads and stores as acquire/release
//! and only fences as `SeqCst`, and the loom models below check this
//! handshake.)

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering::SeqCst;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use crate::error::{ErrorKind, TaskError};
use crate::loom::{
    fence, park, thread_current, Arc, AtomicBool, AtomicUsize, Condvar, Mutex, MutexGuard, Thread,
};

/// The most room [`Admission::acquire_one_in_burst`] waits for at once.
const BURST_SHARE: usize = 1024;

/// The queue bound of a pool. Closing it is how a pool stops taking work.
#[derive(Debug, Clone)]
pub struct Admission {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    bound: usize,
    /// Room not held by a permit nor handed to a waiter.
    available: AtomicUsize,
    closed: AtomicBool,
    /// Waiters in `queue`: read without the lock by releases (is there
    /// anyone to hand room to?) and by newcomers (may I take room?).
    /// Changed only under the lock.
    queued: AtomicUsize,
    /// Threads in [`Admission::wait_idle`].
    idlers: AtomicUsize,
    /// Acquirers waiting for room, first come first.
    queue: Mutex<VecDeque<Waiter>>,
    /// Where [`Admission::wait_idle`] sleeps; notified by the release that
    /// gives back the last room.
    idle: Condvar,
}

/// One acquirer in the queue.
#[derive(Debug)]
struct Waiter {
    n: usize,
    slot: Arc<Slot>,
    wake: Wake,
}

/// How to wake a waiter once its slot is decided.
#[derive(Debug)]
enum Wake {
    Thread(Thread),
    Task(Waker),
}

impl Wake {
    fn wake(self) {
        match self {
            Wake::Thread(t) => t.unpark(),
            Wake::Task(w) => w.wake(),
        }
    }
}

/// What became of a waiter: set once, under the queue's lock, and read by
/// the waiter without it.
#[derive(Debug)]
struct Slot {
    state: AtomicUsize,
}

/// How many times a blocked acquirer looks at its slot before it sleeps
/// (a few microseconds).
#[cfg(not(loom))]
const WAITER_SPINS: u32 = 256;

/// Still in the queue.
const WAITING: usize = 0;
/// Handed its room: the waiter owns it and makes it a permit.
const GRANTED: usize = 1;
/// Taken off the queue by [`Admission::close`].
const CLOSED: usize = 2;

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

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            Inner::release(&inner, self.n);
        }
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, VecDeque<Waiter>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes `n` of the available room if it is there.
    fn take(&self, n: usize) -> bool {
        let mut cur = self.available.load(SeqCst);
        while cur >= n {
            match self
                .available
                .compare_exchange_weak(cur, cur - n, SeqCst, SeqCst)
            {
                Ok(_) => return true,
                Err(now) => cur = now,
            }
        }
        false
    }

    fn permit(this: &Arc<Self>, n: usize) -> Permit {
        Permit {
            inner: Some(this.clone()),
            n,
        }
    }

    /// Room for `n` now, unless closed or someone is waiting (a newcomer
    /// never goes before a waiter).
    // An associated function, not a method on `&Arc<Self>`: loom's `Arc`
    // cannot be a receiver type.
    fn try_take(this: &Arc<Self>, n: usize) -> Result<Option<Permit>, TaskError> {
        if this.closed.load(SeqCst) {
            return Err(ErrorKind::ShutDown.into());
        }
        if this.queued.load(SeqCst) > 0 || !this.take(n) {
            return Ok(None);
        }
        Ok(Some(Self::permit(this, n)))
    }

    /// Gives `n` room back, handing it to waiters in order.
    fn release(this: &Arc<Self>, n: usize) {
        let before = this.available.fetch_add(n, SeqCst);
        // Pairs with the fence after a waiter counts itself: either this
        // release sees the waiter, or the waiter sees this room.
        fence(SeqCst);
        if this.queued.load(SeqCst) > 0 {
            let woken = this.grant(&mut this.lock());
            wake_served(woken);
        }
        if before + n == this.bound && this.idlers.load(SeqCst) > 0 {
            // Under the lock, so an idler between its check and its wait
            // cannot miss this.
            let _g = this.lock();
            this.idle.notify_all();
        }
    }

    /// Hands the available room to the waiters at the head of `queue`, in
    /// order, while it fits; returns how to wake those served.
    fn grant(&self, queue: &mut VecDeque<Waiter>) -> Vec<Wake> {
        let mut woken = Vec::new();
        while let Some(head) = queue.front() {
            if !self.take(head.n) {
                break;
            }
            let Some(w) = queue.pop_front() else { break };
            self.queued.fetch_sub(1, SeqCst);
            w.slot.state.store(GRANTED, SeqCst);
            woken.push(w.wake);
        }
        woken
    }

    /// Puts a waiter for `n` at the tail of the queue (then serves the
    /// queue, which may grant it at once). Returns its slot, and whether
    /// it was first in line.
    ///
    /// # Errors
    /// [`ErrorKind::ShutDown`] once closed.
    fn enqueue(&self, n: usize, wake: Wake) -> Result<(Arc<Slot>, bool), TaskError> {
        let slot = Arc::new(Slot {
            state: AtomicUsize::new(WAITING),
        });
        let mut queue = self.lock();
        // Checked under the lock: `close` drains the queue under it, so a
        // waiter is either refused here or drained there.
        if self.closed.load(SeqCst) {
            return Err(ErrorKind::ShutDown.into());
        }
        queue.push_back(Waiter {
            n,
            slot: slot.clone(),
            wake,
        });
        let head = queue.len() == 1;
        self.queued.fetch_add(1, SeqCst);
        fence(SeqCst); // see `release`
        let woken = self.grant(&mut queue);
        drop(queue);
        wake_served(woken);
        Ok((slot, head))
    }
}

/// Wakes the waiters served, after the lock is released (a waker may do
/// anything, even touch this queue).
fn wake_served(woken: Vec<Wake>) {
    for w in woken {
        w.wake();
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
                queued: AtomicUsize::new(0),
                idlers: AtomicUsize::new(0),
                queue: Mutex::new(VecDeque::new()),
                idle: Condvar::new(),
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

    /// Acquirers waiting for room now (blocking or async). They are served
    /// in arrival order.
    pub fn waiting(&self) -> usize {
        self.inner.queued.load(SeqCst)
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

    /// Room for `n` tasks if there is some now and nobody is waiting for
    /// it (room that comes back goes to the waiters first).
    ///
    /// # Errors
    /// [`ErrorKind::ShutDown`] once closed; [`ErrorKind::Config`] when `n` exceeds the bound.
    pub fn try_acquire(&self, n: usize) -> Result<Option<Permit>, TaskError> {
        self.check_n(n)?;
        Inner::try_take(&self.inner, n)
    }

    /// Waits (blocking the thread) for room for `n` tasks, after every
    /// acquirer that was already waiting.
    ///
    /// The wait has no deadline of its own: it ends when room comes back
    /// (tasks end, each bounded by its timeout or cancellation) or when the
    /// queue is closed (pool `shutdown`, `shutdown_now` or drop), which
    /// fails it with [`ErrorKind::ShutDown`].
    ///
    /// # Errors
    /// As [`try_acquire`](Self::try_acquire).
    pub fn acquire(&self, n: usize) -> Result<Permit, TaskError> {
        self.check_n(n)?;
        if let Some(p) = Inner::try_take(&self.inner, n)? {
            return Ok(p);
        }
        let (slot, _head) = self.inner.enqueue(n, Wake::Thread(thread_current()))?;
        // Room often comes back within a microsecond or two (short tasks):
        // the head of the line spins briefly to take it without a sleep
        // and a wake-up. Those behind it sleep at once: their spinning
        // would only take the cores the head and the workers need.
        #[cfg(not(loom))]
        for _ in 0..if _head { WAITER_SPINS } else { 0 } {
            if slot.state.load(SeqCst) != WAITING {
                break;
            }
            std::hint::spin_loop();
        }
        loop {
            match slot.state.load(SeqCst) {
                GRANTED => return Ok(Inner::permit(&self.inner, n)),
                CLOSED => return Err(ErrorKind::ShutDown.into()),
                // The state is stored before the unpark, and an unpark
                // before the park is not lost; a spurious return re-checks.
                _ => park(),
            }
        }
    }

    /// Room for one task, as [`acquire`](Self::acquire), for a submitter
    /// that is likely in a burst. One that finds the queue full usually
    /// fills it again at once: taking room one task at a time would wake it
    /// once per finished task. So when there is no room and nobody else
    /// waits, it waits instead (in line, like any acquirer) for room for a
    /// share of the bound (a quarter, at most 1024 tasks), gives
    /// that room back and takes one task's worth: one wake-up per share,
    /// and the room the next submissions find. Every task still holds its
    /// own permit, so the bound holds; those who come later still wait
    /// behind it.
    ///
    /// # Errors
    /// As [`acquire`](Self::acquire).
    pub fn acquire_one_in_burst(&self) -> Result<Permit, TaskError> {
        if let Some(permit) = self.try_acquire(1)? {
            return Ok(permit);
        }
        let share = (self.bound() / 4).min(BURST_SHARE);
        if share > 1 && self.waiting() == 0 {
            drop(self.acquire(share)?);
            if let Some(permit) = self.try_acquire(1)? {
                return Ok(permit);
            }
        }
        self.acquire(1)
    }

    /// Waits (asynchronously) for room for `n` tasks, in the same line as
    /// blocking acquirers. Dropping the future gives up its place (and any
    /// room it was handed).
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
            slot: None,
        }
    }

    /// Stops handing out room: every present and future acquire fails with
    /// [`ErrorKind::ShutDown`], and every waiting acquirer is woken with it.
    /// Permits already out stay valid.
    pub fn close(&self) {
        let inner = &self.inner;
        inner.closed.store(true, SeqCst);
        let woken: Vec<Wake> = {
            let mut queue = inner.lock();
            let drained: Vec<Wake> = queue
                .drain(..)
                .map(|w| {
                    w.slot.state.store(CLOSED, SeqCst);
                    w.wake
                })
                .collect();
            inner.queued.fetch_sub(drained.len(), SeqCst);
            drained
        };
        wake_served(woken);
    }

    /// True once [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(SeqCst)
    }

    /// Waits until no permit is out (every task ended) or `deadline` passes.
    /// Returns true when idle. With no deadline the wait is bounded by the
    /// tasks holding room (their timeout, or a `shutdown_now` that cancels
    /// them); it is woken by the release that gives back the last room.
    pub fn wait_idle(&self, deadline: Option<Instant>) -> bool {
        let inner = &self.inner;
        let idle = || inner.available.load(SeqCst) >= inner.bound;
        if idle() {
            return true;
        }
        let mut guard = inner.lock();
        inner.idlers.fetch_add(1, SeqCst);
        fence(SeqCst); // see `Inner::release`
        let result = loop {
            if idle() {
                break true;
            }
            guard = match deadline {
                None => inner.idle.wait(guard).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        break false;
                    }
                    inner
                        .idle
                        .wait_timeout(guard, d - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        };
        inner.idlers.fetch_sub(1, SeqCst);
        drop(guard);
        result
    }
}

struct AcquireFuture {
    admission: Admission,
    n: usize,
    /// Its place in the queue, once it has one.
    slot: Option<Arc<Slot>>,
}

impl AcquireFuture {
    /// The outcome of a decided slot (and the place given up).
    fn decided(&mut self, state: usize) -> Poll<Result<Permit, TaskError>> {
        self.slot = None;
        Poll::Ready(match state {
            GRANTED => Ok(Inner::permit(&self.admission.inner, self.n)),
            _ => Err(ErrorKind::ShutDown.into()),
        })
    }
}

impl Future for AcquireFuture {
    type Output = Result<Permit, TaskError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.admission.inner.clone();
        let Some(slot) = self.slot.clone() else {
            if let Err(e) = self.admission.check_n(self.n) {
                return Poll::Ready(Err(e));
            }
            if let Some(p) = Inner::try_take(&inner, self.n).transpose() {
                return Poll::Ready(p);
            }
            let (slot, _) = inner.enqueue(self.n, Wake::Task(cx.waker().clone()))?;
            let state = slot.state.load(SeqCst);
            self.slot = Some(slot);
            return match state {
                WAITING => Poll::Pending,
                decided => self.decided(decided),
            };
        };
        let state = slot.state.load(SeqCst);
        if state != WAITING {
            return self.decided(state);
        }
        // Under the lock the slot cannot be decided behind our back: swap
        // in the current waker, or take the decision made meanwhile.
        let mut queue = inner.lock();
        let state = slot.state.load(SeqCst);
        if state != WAITING {
            drop(queue);
            return self.decided(state);
        }
        if let Some(w) = queue.iter_mut().find(|w| Arc::ptr_eq(&w.slot, &slot)) {
            if !matches!(&w.wake, Wake::Task(old) if old.will_wake(cx.waker())) {
                w.wake = Wake::Task(cx.waker().clone());
            }
        }
        Poll::Pending
    }
}

impl Drop for AcquireFuture {
    fn drop(&mut self) {
        let Some(slot) = self.slot.take() else {
            return;
        };
        let inner = &self.admission.inner;
        let mut queue = inner.lock();
        match slot.state.load(SeqCst) {
            WAITING => {
                if let Some(i) = queue.iter().position(|w| Arc::ptr_eq(&w.slot, &slot)) {
                    queue.remove(i);
                    inner.queued.fetch_sub(1, SeqCst);
                }
                // A waiter for more room than is back may have held up
                // smaller ones behind it.
                let woken = inner.grant(&mut queue);
                drop(queue);
                wake_served(woken);
            }
            GRANTED => {
                // Handed room it never took: give it back.
                drop(queue);
                Inner::release(inner, self.n);
            }
            _ => {}
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

    /// Waits (bounded) until `n` acquirers are in `a`'s queue.
    fn until_waiting(a: &Admission, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while a.waiting() != n {
            assert!(Instant::now() < deadline, "{n} waiters never queued");
            std::thread::yield_now();
        }
    }

    /// A waker that counts its wakes.
    #[derive(Default)]
    struct Count(std::sync::atomic::AtomicUsize);
    impl std::task::Wake for Count {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.fetch_add(1, SeqCst);
        }
    }

    fn poll_once<F: Future + Unpin>(f: &mut F, w: &std::sync::Arc<Count>) -> Poll<F::Output> {
        let waker = Waker::from(w.clone());
        Pin::new(f).poll(&mut Context::from_waker(&waker))
    }

    #[test]
    fn room_goes_to_a_waiter_before_a_newcomer() {
        let a = Admission::new(1);
        let held = a.acquire(1).unwrap();
        let a2 = a.clone();
        // The waiter keeps the room it gets until it is joined.
        let t = std::thread::spawn(move || a2.acquire(1));
        until_waiting(&a, 1);
        drop(held);
        // The release handed the room to the waiter: none is left to take,
        // however soon after the release the newcomer comes.
        assert!(a.try_acquire(1).unwrap().is_none());
        drop(t.join().unwrap().unwrap());
        assert!(a.try_acquire(1).unwrap().is_some());
    }

    #[test]
    fn blocked_acquirers_are_served_in_arrival_order() {
        const N: usize = 6;
        let a = Admission::new(1);
        let held = a.acquire(1).unwrap();
        let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let threads: Vec<_> = (0..N)
            .map(|i| {
                let (a2, order) = (a.clone(), order.clone());
                let t = std::thread::spawn(move || {
                    let p = a2.acquire(1).unwrap();
                    // Recorded while the room is held: the next waiter
                    // cannot record before this one.
                    order.lock().unwrap().push(i);
                    drop(p);
                });
                until_waiting(&a, i + 1);
                t
            })
            .collect();
        drop(held);
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(*order.lock().unwrap(), (0..N).collect::<Vec<_>>());
        assert_eq!(a.in_use(), 0);
        assert_eq!(a.waiting(), 0);
    }

    #[test]
    fn a_large_request_at_the_head_is_not_overtaken_by_small_ones() {
        let a = Admission::new(2);
        let p1 = a.acquire(1).unwrap();
        let p2 = a.acquire(1).unwrap();
        let a2 = a.clone();
        let big = std::thread::spawn(move || a2.acquire(2).map(|p| p.n));
        until_waiting(&a, 1);
        drop(p1);
        // One room is back, but it is held for the waiter that needs two.
        assert!(a.try_acquire(1).unwrap().is_none());
        drop(p2);
        assert_eq!(big.join().unwrap().unwrap(), 2);
    }

    #[test]
    fn async_waiter_stands_in_line_and_is_woken() {
        let a = Admission::new(1);
        let held = a.acquire(1).unwrap();
        let count = std::sync::Arc::new(Count::default());
        let mut f = Box::pin(a.acquire_async(1));
        assert!(poll_once(&mut f, &count).is_pending());
        assert_eq!(a.waiting(), 1);
        drop(held);
        assert_eq!(count.0.load(SeqCst), 1, "the release woke the future");
        assert!(a.try_acquire(1).unwrap().is_none(), "room was handed over");
        let Poll::Ready(p) = poll_once(&mut f, &count) else {
            panic!("woken but not ready")
        };
        drop(p.unwrap());
        assert_eq!(a.in_use(), 0);
    }

    #[test]
    fn dropped_async_waiter_gives_back_its_place_and_its_room() {
        let a = Admission::new(1);
        let count = std::sync::Arc::new(Count::default());
        // Dropped while waiting: the next in line is served.
        let held = a.acquire(1).unwrap();
        let mut first = Box::pin(a.acquire_async(1));
        assert!(poll_once(&mut first, &count).is_pending());
        let mut second = Box::pin(a.acquire_async(1));
        assert!(poll_once(&mut second, &count).is_pending());
        assert_eq!(a.waiting(), 2);
        drop(first);
        assert_eq!(a.waiting(), 1);
        drop(held);
        assert!(a.try_acquire(1).unwrap().is_none());
        // Dropped after it was handed room it never took: the room comes back.
        drop(second);
        assert_eq!(a.in_use(), 0);
        assert!(a.try_acquire(1).unwrap().is_some());
    }

    #[test]
    fn close_fails_async_waiters() {
        let a = Admission::new(1);
        let _held = a.acquire(1).unwrap();
        let count = std::sync::Arc::new(Count::default());
        let mut f = Box::pin(a.acquire_async(1));
        assert!(poll_once(&mut f, &count).is_pending());
        a.close();
        assert_eq!(count.0.load(SeqCst), 1);
        let Poll::Ready(r) = poll_once(&mut f, &count) else {
            panic!("closed but not ready")
        };
        assert!(r.unwrap_err().is_shut_down());
        assert_eq!(a.waiting(), 0);
    }

    #[test]
    fn wait_idle_wakes_on_the_last_release() {
        let a = Admission::new(2);
        let p1 = a.acquire(1).unwrap();
        let p2 = a.acquire(1).unwrap();
        let a2 = a.clone();
        let idler = std::thread::spawn(move || a2.wait_idle(None));
        drop(p1);
        drop(p2);
        assert!(idler.join().unwrap());
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

/// Loom models of the queue bound and its waiter list: acquire, release,
/// close and async waiters in every interleaving (see `crate::loom` for how
/// to run them).
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

    /// A queued waiter gets the room a release gives back, never a
    /// newcomer who comes right after the release.
    #[test]
    fn loom_queued_waiter_goes_before_newcomer() {
        loom::model(|| {
            let a = Admission::new(1);
            let held = a.acquire(1).unwrap();
            let a2 = a.clone();
            // The waiter keeps the room it gets until it is joined.
            let waiter = thread::spawn(move || a2.acquire(1));
            while a.waiting() == 0 {
                thread::yield_now();
            }
            drop(held);
            assert!(a.try_acquire(1).unwrap().is_none());
            drop(waiter.join().unwrap().unwrap());
            assert_eq!(a.in_use(), 0);
        });
    }

    /// Two waiters, two releases racing: both are served, none is stranded
    /// with room left over.
    #[test]
    fn loom_two_waiters_two_releases() {
        loom::model(|| {
            let a = Admission::new(2);
            let p1 = a.acquire(1).unwrap();
            let p2 = a.acquire(1).unwrap();
            let spawn = |a: Admission| thread::spawn(move || a.acquire(1).map(drop));
            let w1 = spawn(a.clone());
            let w2 = spawn(a.clone());
            let r = thread::spawn(move || drop(p1));
            drop(p2);
            r.join().unwrap();
            w1.join().unwrap().unwrap();
            w2.join().unwrap().unwrap();
            assert_eq!(a.in_use(), 0);
            assert_eq!(a.waiting(), 0);
        });
    }

    /// An async waiter dropped while a release hands it room: the room is
    /// not lost either way.
    #[test]
    fn loom_async_waiter_dropped_during_release() {
        use std::future::Future;
        use std::task::{Context, Waker};
        loom::model(|| {
            let a = Admission::new(1);
            let held = a.acquire(1).unwrap();
            let mut f = Box::pin(a.acquire_async(1));
            let mut cx = Context::from_waker(Waker::noop());
            assert!(f.as_mut().poll(&mut cx).is_pending());
            let r = thread::spawn(move || drop(held));
            drop(f);
            r.join().unwrap();
            assert_eq!(a.in_use(), 0);
            assert_eq!(a.waiting(), 0);
        });
    }

    /// Polls `f` to the end on this loom thread, parking while it is
    /// pending: a lost wake-up leaves the thread parked for ever, which
    /// loom reports as a deadlock.
    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        struct Unpark(Thread);
        impl std::task::Wake for Unpark {
            fn wake(self: std::sync::Arc<Self>) {
                self.0.unpark();
            }
        }
        let waker = std::task::Waker::from(std::sync::Arc::new(Unpark(thread_current())));
        let mut cx = std::task::Context::from_waker(&waker);
        let mut f = std::pin::pin!(f);
        loop {
            if let std::task::Poll::Ready(out) = f.as_mut().poll(&mut cx) {
                return out;
            }
            park();
        }
    }

    /// Close races a release with an async waiter queued: the future ends
    /// with the room or with `ShutDown`, and is woken either way.
    #[test]
    fn loom_close_vs_release_wakes_async_waiter() {
        loom::model(|| {
            let a = Admission::new(1);
            let held = a.acquire(1).unwrap();
            let a2 = a.clone();
            let waiter = thread::spawn(move || block_on(a2.acquire_async(1)).map(drop));
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
}
