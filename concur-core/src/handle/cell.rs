//! The cell a task's two sides share: its state, its result, its mailbox
//! and who is waiting on it.
//!
//! Every decision about the result is taken under the cell's one lock:
//! whoever moves the state to `Done` first stores the result (a cancel or a
//! timeout beats a late result), and a waiter decides "done" or "not yet"
//! from the same locked look at the state, so a result that lands while a
//! caller gives up is never dropped (issue 7.5).

use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use super::mailbox::Mailbox;
use super::{Link, TaskId};
use crate::admission::Permit;
use crate::error::{ErrorKind, TaskError};
use crate::loom::{AtomicBool, Condvar, Mutex, MutexGuard};
use crate::payload::Payload;
use std::sync::atomic::Ordering;

/// Where a task is in its life. Only ever moves forward, except that a
/// backend may put a running task back to `Queued` to retry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
    Queued,
    Running,
    Done,
}

/// The cell's contents, behind its lock.
pub(super) struct Inner {
    pub(super) state: State,
    /// Set when the state becomes `Done`; taken by the one caller that reads it.
    result: Option<Result<Payload, TaskError>>,
    pub(super) cancelled: bool,
    result_waker: Option<Waker>,
    pub(super) mail: Mailbox,
    /// The caller dropped its handle: nobody reads the task's messages,
    /// nobody sends it more (kept outside the boxed queues: it is set
    /// whether or not a message was ever sent).
    pub(super) caller_gone: bool,
    /// Room in the pool's queue, given back when the task is done.
    permit: Option<Permit>,
    /// Threads blocked on `to_caller` / `to_task`: a notify without waiters
    /// would still cost a system call, on the hot path of every task.
    caller_waiting: u32,
    task_waiting: u32,
}

/// Which condition variable a thread waits on.
#[derive(Clone, Copy)]
pub(super) enum Side {
    /// The caller: waiting for the result or a message from the task.
    Caller,
    /// The task: waiting for a message from the caller.
    Task,
}

/// The shared cell of one task or batch.
pub(super) struct Shared {
    pub(super) id: TaskId,
    /// Set (after the result is stored) when the cell is done; read without
    /// the lock by a caller spinning for a quick result.
    done: AtomicBool,
    pub(super) link: Option<std::sync::Arc<dyn Link>>,
    inner: Mutex<Inner>,
    to_caller: Condvar,
    to_task: Condvar,
}

/// What a wait for the result saw, decided under one lock.
pub(super) enum Outcome {
    /// The task is done; its result, now taken out of the cell.
    Done(Result<Payload, TaskError>),
    /// The task was not done when the deadline passed; the result (when
    /// it comes) stays in the cell for a later wait.
    Pending,
}

/// The longest a caller spins and yields for a result before it sleeps.
#[cfg(not(loom))]
const SPIN_BUDGET: Duration = Duration::from_micros(150);

/// The least a caller spins once its results have been coming slowly.
#[cfg(not(loom))]
const SPIN_FLOOR: Duration = Duration::from_micros(20);

/// A result that comes within this is a quick one, worth spinning for.
/// It is measured to the moment the caller has the result, so it includes
/// the wake-up when the caller slept: a process round trip that slept
/// (about 70 µs here) still counts as quick, while a task that sleeps
/// 50 µs (at least 100 µs with the kernel's timer slack) does not.
#[cfg(not(loom))]
const QUICK: Duration = Duration::from_micros(100);

#[cfg(not(loom))]
std::thread_local! {
    /// This thread's spin budget: [`SPIN_BUDGET`] while its results come
    /// quickly, halved (down to [`SPIN_FLOOR`]) after each wait that took
    /// longer than [`QUICK`]. A thread that waits on long tasks then
    /// burns little CPU per wait (issue 11: at most 50 µs per `join`
    /// measured for tasks of 50 µs to 100 ms),
    /// and one that waits on quick round trips keeps taking them without
    /// a sleep and a wake-up.
    static SPIN: std::cell::Cell<Duration> = const { std::cell::Cell::new(SPIN_BUDGET) };
    /// Waits by this thread at a reduced budget: every [`PROBE`]th of
    /// them spins the full budget, so a thread whose slow waits were only
    /// slow because it slept (the wake-up is part of the wait) finds its
    /// quick results again.
    static REDUCED_WAITS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// See [`REDUCED_WAITS`].
#[cfg(not(loom))]
const PROBE: u32 = 8;

/// This thread's spin budget for its next wait.
#[cfg(not(loom))]
fn spin_budget() -> Duration {
    let budget = SPIN.get();
    if budget >= SPIN_BUDGET {
        return budget;
    }
    let n = REDUCED_WAITS.get().wrapping_add(1);
    REDUCED_WAITS.set(n);
    if n % PROBE == 0 {
        SPIN_BUDGET
    } else {
        budget
    }
}

/// The time left until `deadline`: `None` once it has passed, `Some(None)`
/// for no deadline. A deadline of "now" has no time left, so a zero
/// timeout is a poll and never sleeps.
pub(super) fn time_left(deadline: Option<Instant>) -> Option<Option<Duration>> {
    match deadline {
        None => Some(None),
        Some(d) => {
            let left = d.saturating_duration_since(Instant::now());
            (!left.is_zero()).then_some(Some(left))
        }
    }
}

/// `now + timeout`, or no deadline when that is past the end of time.
pub(super) fn deadline_after(timeout: Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
}

impl Shared {
    /// A queued cell holding `permit` until it is done.
    pub(super) fn new(permit: Permit, link: Option<std::sync::Arc<dyn Link>>) -> Self {
        Shared {
            id: TaskId::next(),
            done: AtomicBool::new(false),
            link,
            inner: Mutex::new(Inner {
                state: State::Queued,
                result: None,
                cancelled: false,
                result_waker: None,
                mail: Mailbox::default(),
                caller_gone: false,
                permit: Some(permit),
                caller_waiting: 0,
                task_waiting: 0,
            }),
            to_caller: Condvar::new(),
            to_task: Condvar::new(),
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wakes the threads blocked on `side`, if any.
    pub(super) fn notify(&self, g: &Inner, side: Side) {
        match side {
            Side::Caller if g.caller_waiting > 0 => self.to_caller.notify_all(),
            Side::Task if g.task_waiting > 0 => self.to_task.notify_all(),
            _ => {}
        }
    }

    /// Waits for a notification on `side`, at most `left` (`None`: no limit).
    /// The caller re-checks what it waits for under the returned guard.
    pub(super) fn wait<'a>(
        &'a self,
        mut g: MutexGuard<'a, Inner>,
        side: Side,
        left: Option<Duration>,
    ) -> MutexGuard<'a, Inner> {
        let (cond, waiting) = match side {
            Side::Caller => (&self.to_caller, &mut g.caller_waiting),
            Side::Task => (&self.to_task, &mut g.task_waiting),
        };
        *waiting += 1;
        let mut g = match left {
            None => cond.wait(g).unwrap_or_else(|e| e.into_inner()),
            Some(t) => cond.wait_timeout(g, t).unwrap_or_else(|e| e.into_inner()).0,
        };
        match side {
            Side::Caller => g.caller_waiting -= 1,
            Side::Task => g.task_waiting -= 1,
        }
        g
    }

    /// Marks a queued task running; false when it is not queued (done).
    pub(super) fn begin(&self) -> bool {
        let mut g = self.lock();
        if g.state != State::Queued {
            return false;
        }
        g.state = State::Running;
        true
    }

    /// Puts a task back in the queue unless it is done.
    pub(super) fn requeue(&self) -> bool {
        let mut g = self.lock();
        if g.state == State::Done {
            return false;
        }
        g.state = State::Queued;
        true
    }

    /// Read without the lock: `done` is set under it together with the
    /// state, and a batch's worker asks before every item.
    #[inline]
    pub(super) fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    pub(super) fn is_cancelled(&self) -> bool {
        self.lock().cancelled
    }

    /// Finishes the cell with `result`. False (and `result` dropped) when it
    /// was already done.
    pub(super) fn finish(&self, result: Result<Payload, TaskError>) -> bool {
        let mut g = self.lock();
        self.finish_locked(&mut g, result)
    }

    /// Finishes the cell under `g`. Returns false when it was already done.
    fn finish_locked(&self, g: &mut Inner, result: Result<Payload, TaskError>) -> bool {
        if g.state == State::Done {
            return false;
        }
        g.state = State::Done;
        g.result = Some(result);
        self.done.store(true, Ordering::Release);
        drop(g.permit.take());
        self.notify(g, Side::Caller);
        self.notify(g, Side::Task);
        if let Some(w) = g.result_waker.take() {
            w.wake();
        }
        if let Some(w) = g.mail.take_message_waker() {
            w.wake();
        }
        true
    }

    /// The result if the cell is done (taking it), from the state seen under `g`.
    fn take_if_done(g: &mut Inner) -> Option<Result<Payload, TaskError>> {
        (g.state == State::Done).then(|| {
            // Taken already (a future polled to the end, then joined): the
            // caller has had it, so there is nothing left but to say so.
            g.result
                .take()
                .unwrap_or_else(|| Err(ErrorKind::Cancelled.into()))
        })
    }

    /// Waits until the cell is done or `deadline` passes. "Done" and "not
    /// yet" are both read under the lock in the same look at the state.
    pub(super) fn wait_result(&self, deadline: Option<Instant>) -> Outcome {
        let spun = self.spin_until_done(deadline);
        let mut g = self.lock();
        let outcome = loop {
            if let Some(r) = Self::take_if_done(&mut g) {
                break Outcome::Done(r);
            }
            let Some(left) = time_left(deadline) else {
                break Outcome::Pending;
            };
            g = self.wait(g, Side::Caller, left);
        };
        drop(g);
        Self::learn(spun);
        outcome
    }

    /// Sets this thread's next spin budget from how long this wait took
    /// (`spun`: when it began, if it did not find the result at once).
    #[cfg(not(loom))]
    fn learn(spun: Option<Instant>) {
        if let Some(start) = spun {
            let budget = if start.elapsed() <= QUICK {
                SPIN_BUDGET
            } else {
                (SPIN.get() / 2).max(SPIN_FLOOR)
            };
            SPIN.set(budget);
        }
    }

    #[cfg(loom)]
    fn learn(_spun: Option<Instant>) {}

    /// Spins, then yields, for a short while before the caller blocks:
    /// waking a sleeping thread on the other core costs several times a
    /// short task here, so a result that arrives within the budget is taken
    /// with no sleep or wake-up on either side. Yielding leaves the core to
    /// any worker that wants it. Measured: a process round trip drops from
    /// ~70 µs to ~35 µs; the cost is at most this thread's spin budget
    /// ([`SPIN`], up to [`SPIN_BUDGET`]) of CPU per wait that then sleeps
    /// anyway. Returns when the wait began, unless the result was there at
    /// once.
    #[cfg(not(loom))]
    fn spin_until_done(&self, deadline: Option<Instant>) -> Option<Instant> {
        const SPINS: u32 = 64;
        // Joining a finished task (a burst joined after it ran) reads no clock.
        if self.done.load(Ordering::Acquire) {
            return None;
        }
        let start = Instant::now();
        let budget = start + spin_budget();
        let limit = deadline.map_or(budget, |d| d.min(budget));
        let mut i = 0u32;
        while !self.done.load(Ordering::Acquire) {
            if i < SPINS {
                std::hint::spin_loop();
                i += 1;
            } else if Instant::now() >= limit {
                break;
            } else {
                std::thread::yield_now();
            }
        }
        Some(start)
    }

    /// Loom cannot model elapsed time, so the models go straight to the lock.
    #[cfg(loom)]
    fn spin_until_done(&self, _deadline: Option<Instant>) -> Option<Instant> {
        let _ = self.done.load(Ordering::Acquire);
        None
    }

    /// The result if the cell is done; else registers `cx`'s waker.
    pub(super) fn poll_result(&self, cx: &mut Context<'_>) -> Poll<Result<Payload, TaskError>> {
        let mut g = self.lock();
        if let Some(r) = Self::take_if_done(&mut g) {
            return Poll::Ready(r);
        }
        g.result_waker = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Cancels the cell; tells the backend when the task was running.
    /// False when it was already done.
    pub(super) fn cancel(&self) -> bool {
        let mut g = self.lock();
        let was_running = g.state == State::Running;
        g.cancelled = true;
        if !self.finish_locked(&mut g, Err(ErrorKind::Cancelled.into())) {
            return false;
        }
        drop(g);
        if was_running {
            if let Some(link) = &self.link {
                link.cancel_running(self.id);
            }
        }
        true
    }
}
