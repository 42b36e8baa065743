//! The pool's state, guarded by one lock: queued jobs, workers and the
//! tasks each holds, crash accounting; and how a dead worker's tasks are
//! settled (failed or retried).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use concur_core::timer::{self, TimerKey};
use concur_core::{Completion, ErrorKind, Initializer, TaskError, TaskId};

use crate::outbox::Outbox;
use crate::shm::Body;
use crate::sys;
use crate::wire::RunKind;

pub(crate) struct Settings {
    pub(crate) workers: usize,
    pub(crate) timeout: Option<Duration>,
    pub(crate) retries: u32,
    pub(crate) max_tasks: Option<u64>,
    pub(crate) memory_limit: Option<u64>,
    pub(crate) max_crashes: u32,
    pub(crate) crash_window: Duration,
    pub(crate) start_timeout: Duration,
    pub(crate) shm_threshold: usize,
    pub(crate) depth: usize,
    /// The depth adapts to task length (not set by the user).
    pub(crate) adaptive: bool,
    pub(crate) initializer: Option<Initializer>,
}

/// Why the pool ended a worker itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kill {
    Timeout,
    Cancel,
    Shutdown,
}

pub(crate) struct Job {
    pub(crate) completion: Completion,
    pub(crate) name: &'static str,
    pub(crate) kind: RunKind,
    pub(crate) input: Body,
    pub(crate) timeout: Option<Duration>,
    pub(crate) tries: u32,
    /// Every message the caller sent the task, kept so that a retried task
    /// gets them all again.
    pub(crate) down: Vec<Vec<u8>>,
    /// The caller dropped its handle: after `down`, the task gets no more.
    pub(crate) caller_gone: bool,
    /// Asked back from the worker it waits on (see [`Worker::stalled`]).
    pub(crate) recalled: bool,
    /// Its running deadline, cancelled when it ends.
    pub(crate) deadline: Option<TimerKey>,
}

pub(crate) struct Worker {
    pub(crate) slot: usize,
    pub(crate) pid: u32,
    pub(crate) out: Arc<Outbox>,
    pub(crate) in_flight: VecDeque<Job>,
    pub(crate) sent: u64,
    pub(crate) retiring: bool,
    pub(crate) killed: Option<Kill>,
    /// The supervisor is reaping it: its pid must not be signalled any more
    /// (once reaped, the number may belong to another process).
    pub(crate) reaping: bool,
    /// When the task now at the front of `in_flight` started being served.
    pub(crate) serving_since: Instant,
    /// Recent time per task (moving average), once known.
    pub(crate) per_task: Option<Duration>,
}

/// A front task running longer than this (or four times the worker's
/// average, if longer) counts as stalled: see [`Worker::stalled`].
const STALL_AFTER: Duration = Duration::from_micros(500);

/// Tasks shorter than this on average are pipelined to the full depth;
/// longer ones are sent two at a time, so that a long task does not hold
/// others back that an idle worker could run.
const PIPELINE_BELOW: Duration = Duration::from_millis(1);

impl Worker {
    pub(crate) fn new(slot: usize, pid: u32, out: Arc<Outbox>) -> Self {
        Worker {
            slot,
            pid,
            out,
            in_flight: VecDeque::new(),
            sent: 0,
            retiring: false,
            killed: None,
            reaping: false,
            serving_since: Instant::now(),
            per_task: None,
        }
    }

    pub(crate) fn takes_work(&self, depth: usize, adaptive: bool) -> bool {
        let depth = match self.per_task {
            _ if !adaptive => depth,
            Some(t) if t < PIPELINE_BELOW => depth,
            _ => depth.min(2),
        };
        !self.retiring && self.killed.is_none() && self.in_flight.len() < depth
    }

    /// True when the task it runs has taken much longer than its tasks
    /// usually do: nothing more should wait behind it.
    pub(crate) fn stalled(&self, now: Instant) -> bool {
        let usual = self
            .per_task
            .map_or(STALL_AFTER, |t| (t * 4).max(STALL_AFTER));
        !self.in_flight.is_empty() && now.saturating_duration_since(self.serving_since) > usual
    }

    /// Asks back the tasks waiting behind a stalled front task; returns
    /// their ids (none when nothing waits or all were asked already).
    pub(crate) fn recall_waiting(&mut self) -> Vec<TaskId> {
        self.in_flight
            .iter_mut()
            .skip(1)
            .filter(|j| !j.recalled)
            .map(|j| {
                j.recalled = true;
                j.completion.id()
            })
            .collect()
    }

    /// Kills the worker unless it is being reaped (callers hold the pool lock).
    pub(crate) fn kill(&self) {
        if !self.reaping {
            sys::kill(self.pid);
        }
    }

    /// Notes that the front task ended now.
    pub(crate) fn served(&mut self) {
        let now = Instant::now();
        let took = now.saturating_duration_since(self.serving_since);
        self.per_task = Some(match self.per_task {
            Some(avg) => (avg * 3 + took) / 4,
            None => took,
        });
        self.serving_since = now;
    }

    pub(crate) fn holds(&self, id: TaskId) -> Option<usize> {
        self.in_flight.iter().position(|j| j.completion.id() == id)
    }
}

#[derive(Default)]
pub(crate) struct State {
    pub(crate) queue: VecDeque<Job>,
    pub(crate) workers: HashMap<u64, Worker>,
    pub(crate) slots: Vec<Option<u64>>,
    pub(crate) next_incarnation: u64,
    pub(crate) crashes: VecDeque<Instant>,
    pub(crate) failed: Option<String>,
    pub(crate) closing: bool,
}

/// Frames queued for workers while the lock was held, sent after it is released.
#[must_use]
#[derive(Default)]
pub(crate) struct Touched(pub(crate) Vec<Arc<Outbox>>);

impl Touched {
    /// Adds `other`'s outboxes to these.
    pub(crate) fn merge(&mut self, other: Touched) {
        for o in other.0 {
            if !self.0.iter().any(|x| Arc::ptr_eq(x, &o)) {
                self.0.push(o);
            }
        }
    }

    /// Sends from this thread (callers).
    pub(crate) fn flush_here(self) {
        for o in self.0 {
            o.flush_here();
        }
    }
    /// Hands the sending to the workers' sender threads (router, supervisor).
    pub(crate) fn kick(self) {
        for o in self.0 {
            o.kick();
        }
    }
}

/// Finishes the jobs of a worker that ended (supervisor thread).
pub(crate) fn settle(
    settings: &Settings,
    st: &mut State,
    w: Worker,
    exit: concur_core::WorkerExit,
) -> Vec<(Completion, TaskError)> {
    use concur_core::WorkerExit;
    let lost = || TaskError::new(ErrorKind::WorkerLost(exit));
    let ours = w.killed.is_some() || exit == WorkerExit::Code(sys::EXIT_CANCELLED);
    let clean = w.retiring && exit == WorkerExit::Code(0);
    let mut jobs = w.in_flight;
    for j in jobs.iter_mut() {
        if let Some(key) = j.deadline.take() {
            timer::cancel(key);
        }
    }
    let mut fail = Vec::new();
    if !clean {
        if let Some(culprit) = jobs.pop_front() {
            if !culprit.completion.is_done() {
                fail.push((culprit.completion, lost()));
            }
        }
    }
    let mut again = Vec::new();
    for mut j in jobs {
        if j.completion.is_done() {
            continue;
        }
        if !ours && !clean {
            if j.tries >= settings.retries {
                fail.push((j.completion, lost()));
                continue;
            }
            j.tries += 1;
        }
        j.recalled = false;
        if j.completion.requeue() {
            again.push(j);
        }
    }
    for j in again.into_iter().rev() {
        st.queue.push_front(j);
    }
    if !ours && !clean {
        let now = Instant::now();
        st.crashes.push_back(now);
        while st
            .crashes
            .front()
            .is_some_and(|t| now.duration_since(*t) > settings.crash_window)
        {
            st.crashes.pop_front();
        }
        if st.crashes.len() > settings.max_crashes as usize && st.failed.is_none() {
            fail_pool(settings, st, &mut fail);
        }
    }
    fail
}

/// Marks the pool failed after too many crashes; fails what is queued.
pub(crate) fn fail_pool(
    settings: &Settings,
    st: &mut State,
    fail: &mut Vec<(Completion, TaskError)>,
) {
    let reason = format!(
        "more than {} worker crashes within {:?}",
        settings.max_crashes, settings.crash_window
    );
    for j in st.queue.drain(..) {
        fail.push((
            j.completion,
            ErrorKind::PoolFailed {
                reason: reason.clone(),
            }
            .into(),
        ));
    }
    st.failed = Some(reason);
}
