//! [`ProcessPool`]: the executor, its shared state and dispatch.
//!
//! Three kinds of threads touch the state, always under one lock: callers
//! (submit, cancel, messages), the router (results from every worker, see
//! [`crate::router`]) and the supervisor (worker exits and starts, see
//! [`crate::supervisor`]). Completions are finished outside the lock.

use std::collections::{HashMap, VecDeque};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use concur_core::{
    codec, registry, timer, Admission, BatchHandle, Capabilities, Completion, ErrorKind, Executor,
    Initializer, Link, Payload, Permit, Task, TaskError, TaskHandle, TaskId,
};

use crate::builder::ProcessPoolBuilder;
use crate::outbox::Outbox;
use crate::router::Router;
use crate::shm::Body;
use crate::supervisor::{self, Event};
use crate::sys;
use crate::wire::{Down, Frame, RunKind, Up};

/// A pool of worker processes running this same executable.
///
/// Build it with [`ProcessPool::builder`]; use it through
/// [`Executor`] and [`ExecutorExt`](concur_core::ExecutorExt). Dropping it
/// finishes queued work, then stops and reaps every worker.
pub struct ProcessPool {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ProcessPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessPool")
            .field("workers", &self.shared.settings.workers)
            .finish()
    }
}

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
    name: &'static str,
    kind: RunKind,
    input: Body,
    timeout: Option<Duration>,
    pub(crate) tries: u32,
    down: Vec<Vec<u8>>,
}

pub(crate) struct Worker {
    pub(crate) slot: usize,
    pub(crate) pid: u32,
    pub(crate) out: Arc<Outbox>,
    pub(crate) in_flight: VecDeque<Job>,
    sent: u64,
    pub(crate) retiring: bool,
    pub(crate) killed: Option<Kill>,
    /// When the task now at the front of `in_flight` started being served.
    serving_since: Instant,
    /// Recent time per task (moving average), once known.
    per_task: Option<Duration>,
}

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
            serving_since: Instant::now(),
            per_task: None,
        }
    }

    fn takes_work(&self, depth: usize, adaptive: bool) -> bool {
        let depth = match self.per_task {
            _ if !adaptive => depth,
            Some(t) if t < PIPELINE_BELOW => depth,
            _ => depth.min(2),
        };
        !self.retiring && self.killed.is_none() && self.in_flight.len() < depth
    }

    /// Notes that the front task ended now.
    fn served(&mut self) {
        let now = Instant::now();
        let took = now.saturating_duration_since(self.serving_since);
        self.per_task = Some(match self.per_task {
            Some(avg) => (avg * 3 + took) / 4,
            None => took,
        });
        self.serving_since = now;
    }

    fn holds(&self, id: TaskId) -> Option<usize> {
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
pub(crate) struct Touched(Vec<Arc<Outbox>>);

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

pub(crate) struct Shared {
    pub(crate) settings: Settings,
    admission: Admission,
    state: Mutex<State>,
    pub(crate) changed: Condvar,
    link: Arc<dyn Link>,
    pub(crate) router: Router,
    supervisor: Mutex<Option<mpsc::Sender<Event>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    stopped: Mutex<bool>,
}

struct PoolLink(Weak<Shared>);

impl Link for PoolLink {
    fn deliver(&self, id: TaskId, msg: Payload) -> Result<(), TaskError> {
        let Some(shared) = self.0.upgrade() else {
            return Ok(());
        };
        let bytes = msg.to_bytes()?;
        shared.deliver(id, bytes)
    }

    fn cancel_running(&self, id: TaskId) {
        if let Some(shared) = self.0.upgrade() {
            shared.cancel_running(id);
        }
    }
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn event(&self, e: Event) {
        if let Some(tx) = &*self.supervisor.lock().unwrap_or_else(|e| e.into_inner()) {
            let _ = tx.send(e);
        }
    }

    /// Sends queued jobs to workers with room, least loaded first.
    pub(crate) fn dispatch(&self, st: &mut State) -> Touched {
        let (depth, adaptive) = (self.settings.depth, self.settings.adaptive);
        let mut touched: Vec<Arc<Outbox>> = Vec::new();
        while !st.queue.is_empty() {
            let best = st
                .slots
                .iter()
                .flatten()
                .filter_map(|inc| st.workers.get(inc).map(|w| (*inc, w)))
                .filter(|(_, w)| w.takes_work(depth, adaptive))
                .min_by_key(|(_, w)| w.in_flight.len())
                .map(|(inc, _)| inc);
            let Some(inc) = best else { break };
            let mut job = st.queue.pop_front().expect("queue is not empty");
            if !job.completion.begin() {
                continue; // cancelled while queued
            }
            let head = Down::Run {
                id: job.completion.id(),
                name: job.name.to_owned(),
                kind: job.kind,
            };
            let frame = match Frame::new(&head, job.input.clone()) {
                Ok(f) => f,
                Err(e) => {
                    job.completion.finish(Err(e));
                    continue;
                }
            };
            let w = st.workers.get_mut(&inc).expect("chosen worker exists");
            if w.in_flight.is_empty() {
                w.serving_since = Instant::now();
            }
            w.out.push(frame);
            for msg in job.down.drain(..) {
                if let Ok(f) = Frame::new(
                    &Down::Deliver {
                        id: job.completion.id(),
                    },
                    Body::from_vec(msg, self.settings.shm_threshold),
                ) {
                    w.out.push(f);
                }
            }
            w.in_flight.push_back(job);
            w.sent += 1;
            if !touched.iter().any(|o| Arc::ptr_eq(o, &w.out)) {
                touched.push(w.out.clone());
            }
            if self.settings.max_tasks.is_some_and(|m| w.sent >= m) {
                // Recycle: the worker finishes what it holds, then exits;
                // its replacement starts now.
                w.retiring = true;
                if let Ok(f) = Frame::new(&Down::Shutdown, Body::Empty) {
                    w.out.push(f);
                }
                let slot = w.slot;
                st.slots[slot] = None;
                if !st.closing {
                    self.event(Event::Respawn(slot));
                }
            }
        }
        Touched(touched)
    }

    fn submit_job(&self, job: Job) -> Result<(), TaskError> {
        let touched = {
            let mut st = self.lock();
            if st.closing {
                return Err(ErrorKind::ShutDown.into());
            }
            if let Some(reason) = &st.failed {
                return Err(ErrorKind::PoolFailed {
                    reason: reason.clone(),
                }
                .into());
            }
            st.queue.push_back(job);
            self.dispatch(&mut st)
        };
        touched.flush_here();
        Ok(())
    }

    /// A frame from worker `inc` (router thread). Frames it queues for
    /// workers are added to `touched`, for the router to send after its batch.
    pub(crate) fn on_up(self: &Arc<Self>, inc: u64, up: Up, body: Body, touched: &mut Touched) {
        match up {
            Up::Started { id } => {
                let st = self.lock();
                let timeout = st
                    .workers
                    .get(&inc)
                    .and_then(|w| w.holds(id).map(|i| &w.in_flight[i]))
                    .and_then(|j| j.timeout);
                drop(st);
                if let Some(after) = timeout {
                    let weak = Arc::downgrade(self);
                    timer::at(Instant::now() + after, move || {
                        if let Some(shared) = weak.upgrade() {
                            shared.on_timeout(inc, id, after);
                        }
                    });
                }
            }
            Up::Message { id } => {
                let c = {
                    let st = self.lock();
                    st.workers
                        .get(&inc)
                        .and_then(|w| w.holds(id).map(|i| w.in_flight[i].completion.clone()))
                };
                if let Some(c) = c {
                    c.push_message(body.into_payload());
                }
            }
            Up::Done { id, result } => {
                let job = {
                    let mut st = self.lock();
                    let job = st.workers.get_mut(&inc).and_then(|w| {
                        let i = w.holds(id)?;
                        if i == 0 {
                            w.served();
                        }
                        w.in_flight.remove(i)
                    });
                    touched.merge(self.dispatch(&mut st));
                    job
                };
                if let Some(job) = job {
                    job.completion.finish(result.map(|()| body.into_payload()));
                }
            }
            Up::Hello { .. } | Up::Ready | Up::InitFailed(_) => {}
        }
    }

    fn on_timeout(&self, inc: u64, id: TaskId, after: Duration) {
        let c = {
            let mut st = self.lock();
            let Some(w) = st.workers.get_mut(&inc) else {
                return;
            };
            match w.in_flight.front() {
                Some(j) if j.completion.id() == id && w.killed.is_none() => {
                    w.killed = Some(Kill::Timeout);
                    sys::kill(w.pid);
                    j.completion.clone()
                }
                _ => return,
            }
        };
        c.finish(Err(ErrorKind::TimedOut { after }.into()));
    }

    fn deliver(&self, id: TaskId, bytes: Vec<u8>) -> Result<(), TaskError> {
        let touched = {
            let mut st = self.lock();
            if let Some(job) = st.queue.iter_mut().find(|j| j.completion.id() == id) {
                job.down.push(bytes);
                return Ok(());
            }
            let Some(w) = st.workers.values().find(|w| w.holds(id).is_some()) else {
                return Ok(()); // already done: the message has nobody to read it
            };
            w.out.push(Frame::new(
                &Down::Deliver { id },
                Body::from_vec(bytes, self.settings.shm_threshold),
            )?);
            Touched(vec![w.out.clone()])
        };
        touched.flush_here();
        Ok(())
    }

    fn cancel_running(&self, id: TaskId) {
        let touched = {
            let mut st = self.lock();
            let Some(w) = st.workers.values_mut().find(|w| w.holds(id).is_some()) else {
                return;
            };
            if w.holds(id) == Some(0) {
                // Running (or about to run: the worker takes tasks in order).
                if w.killed.is_none() {
                    w.killed = Some(Kill::Cancel);
                    sys::kill(w.pid);
                }
                return;
            }
            // Sent ahead; the worker drops it, or ends itself if it started.
            match Frame::new(&Down::Cancel { id }, Body::Empty) {
                Ok(f) => w.out.push(f),
                Err(_) => return,
            }
            Touched(vec![w.out.clone()])
        };
        touched.flush_here();
    }

    fn stop(self: &Arc<Self>, now: bool) {
        let mut stopped = self.stopped.lock().unwrap_or_else(|e| e.into_inner());
        if *stopped {
            return;
        }
        self.admission.close();
        if !now {
            self.admission.wait_idle(None);
        }
        let mut finish = Vec::new();
        let touched = {
            let mut st = self.lock();
            st.closing = true;
            if now {
                finish.extend(st.queue.drain(..).map(|j| j.completion));
            }
            let mut touched = Vec::new();
            for w in st.workers.values_mut() {
                if now {
                    finish.extend(w.in_flight.iter().map(|j| j.completion.clone()));
                    if w.killed.is_none() {
                        w.killed = Some(Kill::Shutdown);
                        sys::kill(w.pid);
                    }
                } else if !w.retiring {
                    w.retiring = true;
                    if let Ok(f) = Frame::new(&Down::Shutdown, Body::Empty) {
                        w.out.push(f);
                        touched.push(w.out.clone());
                    }
                }
            }
            st.slots.iter_mut().for_each(|s| *s = None);
            Touched(touched)
        };
        touched.kick();
        for c in finish {
            c.finish(Err(ErrorKind::Cancelled.into()));
        }
        // The supervisor reaps every worker, then ends; then the router.
        self.event(Event::Stop);
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        let mut threads = threads.into_iter();
        if let Some(sup) = threads.next() {
            let _ = sup.join();
        }
        self.router.stop();
        for t in threads {
            let _ = t.join();
        }
        *stopped = true;
    }
}

impl ProcessPool {
    /// A builder with every default.
    pub fn builder() -> ProcessPoolBuilder {
        ProcessPoolBuilder::new()
    }

    /// A pool with every default (as many workers as cores).
    ///
    /// # Errors
    /// As [`ProcessPoolBuilder::build`].
    pub fn new() -> Result<Self, TaskError> {
        ProcessPoolBuilder::new().build()
    }

    pub(crate) fn start(b: ProcessPoolBuilder) -> Result<Self, TaskError> {
        let config = &b.config;
        let workers = config.worker_count();
        let settings = Settings {
            workers,
            timeout: config.task_timeout_value(),
            retries: config.retries_value(),
            max_tasks: config.max_tasks_per_worker_value(),
            memory_limit: b.memory_limit,
            max_crashes: b.max_crashes,
            crash_window: b.crash_window,
            start_timeout: b.start_timeout,
            shm_threshold: b.shm_threshold,
            depth: b
                .in_flight_per_worker
                .unwrap_or(crate::builder::DEFAULT_IN_FLIGHT_PER_WORKER),
            adaptive: b.in_flight_per_worker.is_none(),
            initializer: config.initializer_value().cloned(),
        };
        if crate::worker::is_worker() {
            return Err(crate::error::SpawnError::NestedWorker.into());
        }
        let (router, router_rx) = Router::new()?;
        let (sup_tx, sup_rx) = mpsc::channel();
        let shared = Arc::new_cyclic(|weak: &Weak<Shared>| Shared {
            settings,
            admission: Admission::new(config.queue_bound_value()),
            state: Mutex::new(State {
                slots: vec![None; workers],
                ..State::default()
            }),
            changed: Condvar::new(),
            link: Arc::new(PoolLink(weak.clone())),
            router,
            supervisor: Mutex::new(Some(sup_tx)),
            threads: Mutex::new(Vec::new()),
            stopped: Mutex::new(false),
        });
        let spawn_thread = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn(f)
                .map_err(TaskError::io)
        };
        let (ready_tx, ready_rx) = mpsc::channel();
        let sup = {
            let s = shared.clone();
            spawn_thread(
                "concur-procs-supervisor",
                Box::new(move || supervisor::run(s, sup_rx, ready_tx)),
            )?
        };
        shared
            .threads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(sup);
        let router = {
            let s = shared.clone();
            spawn_thread(
                "concur-procs-router",
                Box::new(move || crate::router::run(s, router_rx)),
            )?
        };
        shared
            .threads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(router);
        let pool = ProcessPool { shared };
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(pool),
            Ok(Err(e)) => {
                pool.shared.stop(true);
                Err(e)
            }
            Err(_) => {
                pool.shared.stop(true);
                Err(crate::error::SpawnError::Protocol("supervisor ended").into())
            }
        }
    }

    /// Process ids of the current workers, by slot (`None` while a slot's
    /// worker is being replaced).
    pub fn worker_pids(&self) -> Vec<Option<u32>> {
        let st = self.shared.lock();
        st.slots
            .iter()
            .map(|s| s.and_then(|inc| st.workers.get(&inc)).map(|w| w.pid))
            .collect()
    }

    fn job<T: Task>(&self, input: Vec<u8>, kind: RunKind, len: usize, permit: Permit) -> Job {
        Job {
            completion: Completion::new(permit, Some(self.shared.link.clone())),
            name: T::NAME,
            kind,
            input: Body::from_vec(input, self.shared.settings.shm_threshold),
            timeout: self
                .shared
                .settings
                .timeout
                .map(|t| t * u32::try_from(len).unwrap_or(u32::MAX)),
            tries: 0,
            down: Vec::new(),
        }
    }
}

impl Executor for ProcessPool {
    fn backend(&self) -> &'static str {
        "procs"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            shared_memory: false,
            kills_on_timeout: true,
            kills_on_cancel: true,
            isolates_crashes: true,
            memory_limit: true,
            zero_copy_payloads: true,
        }
    }

    fn workers(&self) -> usize {
        self.shared.settings.workers
    }

    fn admission(&self) -> &Admission {
        &self.shared.admission
    }

    fn start<T: Task>(&self, task: T, permit: Permit) -> Result<TaskHandle<T>, TaskError> {
        registry::ensure_registered::<T>()?;
        let input = codec::encode(&task, "task")?;
        let job = self.job::<T>(input, RunKind::Single, 1, permit);
        let handle = TaskHandle::new(&job.completion);
        self.shared.submit_job(job)?;
        Ok(handle)
    }

    fn start_batch<T: Task>(
        &self,
        tasks: Vec<T>,
        permit: Permit,
    ) -> Result<BatchHandle<T>, TaskError> {
        registry::ensure_registered::<T>()?;
        let len = tasks.len();
        let input = codec::encode(&tasks, "task batch")?;
        let job = self.job::<T>(input, RunKind::Batch, len, permit);
        let handle = BatchHandle::new(&job.completion, len);
        if len == 0 {
            job.completion.begin();
            job.completion.finish(
                Payload::value(Vec::<Result<T::Output, TaskError>>::new())
                    .to_bytes()
                    .map(Payload::bytes),
            );
            return Ok(handle);
        }
        self.shared.submit_job(job)?;
        Ok(handle)
    }

    fn shutdown(&self) -> Result<(), TaskError> {
        self.shared.stop(false);
        Ok(())
    }

    fn shutdown_now(&self) {
        self.shared.stop(true);
    }
}

impl Drop for ProcessPool {
    fn drop(&mut self) {
        self.shared.stop(false);
    }
}

/// Finishes the jobs of a worker that ended (supervisor thread).
pub(crate) fn settle(
    shared: &Shared,
    st: &mut State,
    w: Worker,
    exit: concur_core::WorkerExit,
) -> Vec<(Completion, TaskError)> {
    use concur_core::WorkerExit;
    let lost = || TaskError::new(ErrorKind::WorkerLost(exit));
    let ours = w.killed.is_some() || exit == WorkerExit::Code(sys::EXIT_CANCELLED);
    let clean = w.retiring && exit == WorkerExit::Code(0);
    let mut jobs = w.in_flight;
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
            if j.tries >= shared.settings.retries {
                fail.push((j.completion, lost()));
                continue;
            }
            j.tries += 1;
        }
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
            .is_some_and(|t| now.duration_since(*t) > shared.settings.crash_window)
        {
            st.crashes.pop_front();
        }
        if st.crashes.len() > shared.settings.max_crashes as usize && st.failed.is_none() {
            fail_pool(shared, st, &mut fail);
        }
    }
    fail
}

/// Marks the pool failed after too many crashes; fails what is queued.
pub(crate) fn fail_pool(shared: &Shared, st: &mut State, fail: &mut Vec<(Completion, TaskError)>) {
    let reason = format!(
        "more than {} worker crashes within {:?}",
        shared.settings.max_crashes, shared.settings.crash_window
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

#[cfg(test)]
mod tests {
    use super::*;
    use concur_core::{Configure, TaskContext};

    #[derive(serde::Serialize, serde::Deserialize)]
    struct Unknown;

    impl Task for Unknown {
        type Output = ();
        type ToCaller = ();
        type FromCaller = ();
        const NAME: &'static str = "pool::tests::Unknown";
        fn run(self, _cx: &mut TaskContext<'_, Self>) {}
    }

    #[test]
    fn worker_answers_not_registered_for_a_name_it_lacks() {
        let p = ProcessPool::builder().workers(1).build().unwrap();
        // Past the parent's check: as if the worker's registry differed.
        let job = p.job::<Unknown>(
            codec::encode(&Unknown, "task").unwrap(),
            RunKind::Single,
            1,
            Permit::none(),
        );
        let h = TaskHandle::<Unknown>::new(&job.completion);
        p.shared.submit_job(job).unwrap();
        let err = h
            .join_timeout(Duration::from_secs(60))
            .unwrap()
            .unwrap_err();
        assert_eq!(
            err.kind(),
            &ErrorKind::NotRegistered {
                task: Unknown::NAME.into()
            }
        );
        // The worker survives it.
        assert!(p.worker_pids()[0].is_some());
    }
}
