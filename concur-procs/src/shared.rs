//! The pool's shared core: dispatch, results, timeouts, caller messages,
//! cancellation and stopping.
//!
//! Three kinds of threads touch the state, always under one lock: callers
//! (submit, cancel, messages), the router (results from every worker, see
//! [`crate::router`]) and the supervisor (worker exits and starts, see
//! [`crate::supervisor`]). Completions are finished outside the lock.

use std::sync::{mpsc, Arc, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use concur_core::{timer, Admission, ErrorKind, Link, Payload, TaskError, TaskId};

use crate::outbox::Outbox;
use crate::router::Router;
use crate::shm::Body;
use crate::state::{Job, Kill, Settings, State, Touched};
use crate::supervisor::Event;
use crate::wire::{Down, Frame, Up};

pub(crate) struct Shared {
    pub(crate) settings: Settings,
    pub(crate) admission: Admission,
    pub(crate) state: Mutex<State>,
    pub(crate) link: Arc<dyn Link>,
    pub(crate) router: Router,
    pub(crate) supervisor: Mutex<Option<mpsc::Sender<Event>>>,
    pub(crate) threads: Mutex<Vec<JoinHandle<()>>>,
    pub(crate) stopped: Mutex<bool>,
}

pub(crate) struct PoolLink(pub(crate) Weak<Shared>);

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

    fn caller_gone(&self, id: TaskId) {
        if let Some(shared) = self.0.upgrade() {
            shared.caller_gone(id);
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
        let now = Instant::now();
        let mut touched: Vec<Arc<Outbox>> = Vec::new();
        while !st.queue.is_empty() {
            let best = st
                .slots
                .iter()
                .flatten()
                .filter_map(|inc| st.workers.get(inc).map(|w| (*inc, w)))
                .filter(|(_, w)| w.takes_work(depth, adaptive))
                // A worker whose task runs long comes last: work sent ahead
                // to it would wait (it can be recalled, but better not sent).
                .min_by_key(|(_, w)| (w.stalled(now), w.in_flight.len()))
                .map(|(inc, _)| inc);
            let Some(inc) = best else { break };
            let job = st.queue.pop_front().expect("queue is not empty");
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
            let id = job.completion.id();
            for msg in &job.down {
                if let Ok(f) = Frame::new(
                    &Down::Deliver { id },
                    Body::from_vec(msg.clone(), self.settings.shm_threshold),
                ) {
                    w.out.push(f);
                }
            }
            if job.caller_gone {
                if let Ok(f) = Frame::new(&Down::CallerGone { id }, Body::Empty) {
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
        self.recall_from_stalled(st, now, depth, adaptive, &mut touched);
        Touched(touched)
    }

    /// With nothing queued and a worker idle, asks stalled workers to give
    /// back the tasks waiting behind their long task, so that one slow task
    /// does not hold back others sent ahead to the same worker.
    fn recall_from_stalled(
        &self,
        st: &mut State,
        now: Instant,
        depth: usize,
        adaptive: bool,
        touched: &mut Vec<Arc<Outbox>>,
    ) {
        if !st.queue.is_empty()
            || !st
                .workers
                .values()
                .any(|w| w.in_flight.is_empty() && w.takes_work(depth, adaptive))
        {
            return;
        }
        for w in st.workers.values_mut() {
            if w.killed.is_some() || w.in_flight.len() < 2 || !w.stalled(now) {
                continue;
            }
            let ids = w.recall_waiting();
            if ids.is_empty() {
                continue;
            }
            if let Ok(f) = Frame::new(&Down::Recall { ids }, Body::Empty) {
                w.out.push(f);
                if !touched.iter().any(|o| Arc::ptr_eq(o, &w.out)) {
                    touched.push(w.out.clone());
                }
            }
        }
    }

    pub(crate) fn submit_job(&self, job: Job) -> Result<(), TaskError> {
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
                let mut st = self.lock();
                let job = st
                    .workers
                    .get_mut(&inc)
                    .and_then(|w| w.holds(id).map(|i| &mut w.in_flight[i]));
                if let Some(job) = job {
                    if let Some(after) = job.timeout {
                        let weak = Arc::downgrade(self);
                        job.deadline = Some(timer::at(Instant::now() + after, move || {
                            if let Some(shared) = weak.upgrade() {
                                shared.on_timeout(inc, id, after);
                            }
                        }));
                    }
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
                    if let Some(key) = job.deadline {
                        timer::cancel(key);
                    }
                    job.completion.finish(result.map(|()| body.into_payload()));
                }
            }
            Up::Recalled { ids } => {
                let mut st = self.lock();
                let mut back = Vec::new();
                if let Some(w) = st.workers.get_mut(&inc) {
                    for id in ids {
                        if let Some(mut job) = w.holds(id).and_then(|i| w.in_flight.remove(i)) {
                            job.recalled = false;
                            w.sent = w.sent.saturating_sub(1);
                            // Done already (cancelled): its handle has its answer.
                            if job.completion.requeue() {
                                back.push(job);
                            }
                        }
                    }
                }
                for job in back.into_iter().rev() {
                    st.queue.push_front(job);
                }
                touched.merge(self.dispatch(&mut st));
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
                    w.kill();
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
            let Some(w) = st.workers.values_mut().find(|w| w.holds(id).is_some()) else {
                return Ok(()); // already done: the message has nobody to read it
            };
            let frame = Frame::new(
                &Down::Deliver { id },
                Body::from_vec(bytes.clone(), self.settings.shm_threshold),
            )?;
            if let Some(job) = w.in_flight.iter_mut().find(|j| j.completion.id() == id) {
                job.down.push(bytes); // for a retry on another worker
            }
            w.out.push(frame);
            Touched(vec![w.out.clone()])
        };
        touched.flush_here();
        Ok(())
    }

    /// The caller of task `id` dropped its handle: tell the task, now or
    /// when it is sent (and again if it is retried).
    fn caller_gone(&self, id: TaskId) {
        let touched = {
            let mut st = self.lock();
            if let Some(job) = st.queue.iter_mut().find(|j| j.completion.id() == id) {
                job.caller_gone = true;
                return;
            }
            let Some(w) = st.workers.values_mut().find(|w| w.holds(id).is_some()) else {
                return; // already done
            };
            if let Some(job) = w.in_flight.iter_mut().find(|j| j.completion.id() == id) {
                job.caller_gone = true;
            }
            match Frame::new(&Down::CallerGone { id }, Body::Empty) {
                Ok(f) => w.out.push(f),
                Err(_) => return,
            }
            Touched(vec![w.out.clone()])
        };
        touched.flush_here();
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
                    w.kill();
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

    pub(crate) fn stop(self: &Arc<Self>, now: bool) {
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
                        w.kill();
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
