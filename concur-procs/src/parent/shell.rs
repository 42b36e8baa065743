//! The I/O shell around the [`Scheduler`]: the pool's shared state, how an
//! event reaches the scheduler (callers, the router thread, the supervisor
//! thread) and how its effects are carried out.
//!
//! Every event runs as: lock, feed the scheduler, move the frames it
//! decided into the workers' outboxes and signal the kills it decided
//! (still under the lock, so frames keep the scheduler's order), unlock,
//! then send and finish handles (never under the lock).

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use concur_core::{Admission, Initializer, Link, Payload, TaskError, TaskId};

use super::outbox::Outbox;
use super::pidfd;
use super::router::Router;
use super::scheduler::{Effects, Out, Probe, Progress, Scheduler, WorkerId};
use super::supervisor::Supervisor;
use crate::progress::ProgressWord;
use crate::shm::Body;
use crate::wire::{Down, Frame};

/// Settings the shell needs beyond the scheduler's rules.
pub(crate) struct Settings {
    pub(crate) workers: usize,
    pub(crate) memory_limit: Option<u64>,
    pub(crate) start_timeout: Duration,
    pub(crate) shm_threshold: usize,
    /// Workers hold finished results back to send them together (see
    /// `Down::Init::hold_results`).
    pub(crate) hold_results: bool,
    pub(crate) initializer: Option<Initializer>,
    pub(crate) spawn_mode: crate::spawn::SpawnMode,
}

/// The I/O side of one live worker.
pub(crate) struct WorkerIo {
    pub(crate) pid: u32,
    pub(crate) pidfd: Arc<OwnedFd>,
    pub(crate) out: Arc<Outbox>,
    pub(crate) progress: Arc<ProgressWord>,
}

/// Everything behind the pool lock.
pub(crate) struct Core {
    pub(crate) sched: Scheduler,
    pub(crate) io: HashMap<WorkerId, WorkerIo>,
}

/// Reads progress words of the workers in `io`.
pub(crate) struct IoProbe<'a>(
    pub(crate) &'a HashMap<WorkerId, WorkerIo>,
    pub(crate) Instant,
);

impl Probe for IoProbe<'_> {
    fn progress(&self, w: WorkerId) -> Progress {
        self.0
            .get(&w)
            .map(|io| io.progress.read(self.1))
            .unwrap_or_default()
    }
    fn can_run(&self, w: WorkerId) -> bool {
        self.0
            .get(&w)
            .is_some_and(|io| !crate::sys::cannot_run(io.pid))
    }
}

/// Who carries out the sending after an event.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sender {
    /// The calling thread sends itself (callers: no thread hop).
    Here,
    /// The workers' sender threads (router and supervisor must not block).
    Threads,
}

/// How long a stopping pool waits for its sender threads.
const SENDER_GRACE: Duration = Duration::from_secs(2);

#[derive(Default)]
struct StopState {
    /// The threads have been joined.
    done: bool,
    /// Someone is joining them.
    joining: bool,
}

pub(crate) struct Shared {
    pub(crate) settings: Settings,
    pub(crate) admission: Admission,
    pub(crate) core: Mutex<Core>,
    pub(crate) link: Arc<dyn Link>,
    pub(crate) router: Router,
    pub(crate) supervisor: Supervisor,
    pub(crate) threads: Mutex<Vec<JoinHandle<()>>>,
    /// Every worker's outbox whose sender thread may still run.
    pub(crate) senders: Mutex<Vec<Arc<Outbox>>>,
    stop: Mutex<StopState>,
    stopped: Condvar,
    /// The process that built the pool: only it has the pool's threads
    /// and is the parent of its workers.
    owner: u32,
}

/// Why a pool refuses work in a process forked from the one that built it.
#[derive(Debug)]
pub(crate) struct ForkedChild {
    owner: u32,
}

impl std::fmt::Display for ForkedChild {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "this pool belongs to process {}; a forked child must build its own pool",
            self.owner
        )
    }
}

impl std::error::Error for ForkedChild {}

pub(crate) struct PoolLink(pub(crate) Weak<Shared>);

impl PoolLink {
    /// The pool, unless it is gone or this process is a forked child
    /// holding a copy of it (see [`Shared::foreign`]).
    fn pool(&self) -> Option<Arc<Shared>> {
        self.0.upgrade().filter(|s| s.foreign().is_none())
    }
}

impl Link for PoolLink {
    fn deliver(&self, id: TaskId, msg: Payload) -> Result<(), TaskError> {
        let Some(shared) = self.0.upgrade() else {
            return Ok(());
        };
        let bytes = msg.to_bytes()?;
        if shared.foreign().is_some() {
            return Ok(());
        }
        shared.event(Sender::Here, |c, _| c.sched.deliver(id, bytes));
        Ok(())
    }

    fn cancel_running(&self, id: TaskId) {
        if let Some(shared) = self.pool() {
            shared.event(Sender::Here, |c, now| {
                c.sched.cancel(id, &IoProbe(&c.io, now), now)
            });
        }
    }

    fn caller_gone(&self, id: TaskId) {
        if let Some(shared) = self.pool() {
            shared.event(Sender::Here, |c, _| c.sched.caller_gone(id));
        }
    }
}

impl Shared {
    pub(crate) fn new(
        settings: Settings,
        admission: Admission,
        sched: Scheduler,
        router: Router,
        supervisor: Supervisor,
        link: Arc<dyn Link>,
    ) -> Shared {
        Shared {
            settings,
            admission,
            core: Mutex::new(Core {
                sched,
                io: HashMap::new(),
            }),
            link,
            router,
            supervisor,
            threads: Mutex::new(Vec::new()),
            senders: Mutex::new(Vec::new()),
            stop: Mutex::new(StopState::default()),
            stopped: Condvar::new(),
            owner: crate::sys::current_pid(),
        }
    }

    /// The error for a use of the pool in a process forked from the one
    /// that built it, or `None` in that process. A forked child has a copy
    /// of the pool's memory but none of its threads and is not its
    /// workers' parent: a task it submitted would never run, a stop would
    /// wait for ever, and a kill would hit the parent's workers.
    pub(crate) fn foreign(&self) -> Option<TaskError> {
        let me = crate::sys::current_pid();
        (me != self.owner).then(|| {
            TaskError::with_source(
                concur_core::ErrorKind::ShutDown,
                ForkedChild { owner: self.owner },
            )
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs one event through the scheduler and carries out its effects.
    ///
    /// Never called in a forked child (see [`Self::foreign`]): the lock may
    /// have been held by a thread that does not exist there, and the
    /// effects could signal the parent's workers. The pool's own threads
    /// exist only in the process that built it, and the caller-side entry
    /// points ([`PoolLink`], the pool's methods, [`Self::stop`]) check
    /// before they come here; so the router's per-frame events cost no
    /// `getpid`.
    pub(crate) fn event(&self, sender: Sender, f: impl FnOnce(&mut Core, Instant) -> Effects) {
        let mut core = self.lock();
        let fx = f(&mut core, Instant::now());
        self.carry_out(core, fx, sender);
    }

    /// Carries out `fx`: frames and kills under the lock `core`, then sends
    /// and finishes after releasing it.
    pub(crate) fn carry_out(
        &self,
        mut core: MutexGuard<'_, Core>,
        mut fx: Effects,
        sender: Sender,
    ) {
        let mut outs: Vec<Arc<Outbox>> = Vec::new();
        let now = Instant::now();
        // Frames that cannot be made fail their units, which may queue
        // more frames (cancels): go round until nothing is left.
        let mut touched = std::mem::take(&mut fx.touched);
        while !touched.is_empty() {
            let mut unsent: Vec<(WorkerId, Vec<TaskId>, TaskError)> = Vec::new();
            {
                let Core { sched, io } = &mut *core;
                for w in &touched {
                    let (Some(worker), Some(wio)) = (sched.workers.get_mut(w), io.get(w)) else {
                        continue;
                    };
                    for out in worker.outgoing.drain(..) {
                        match frame(out, self.settings.shm_threshold) {
                            Ok(f) => wio.out.push(f),
                            Err((ids, e)) if !ids.is_empty() => unsent.push((*w, ids, e)),
                            Err((_, e)) => eprintln!("concur-procs: cannot encode a frame: {e}"),
                        }
                    }
                    if !outs.iter().any(|o| Arc::ptr_eq(o, &wio.out)) {
                        outs.push(wio.out.clone());
                    }
                }
            }
            touched.clear();
            for (w, ids, e) in unsent {
                let c = &mut *core;
                let mut more = c.sched.on_unsent(w, &ids, &e, &IoProbe(&c.io, now), now);
                touched.append(&mut more.touched);
                fx.merge(more);
            }
        }
        {
            let io = &core.io;
            for w in &fx.kill {
                if let Some(wio) = io.get(w) {
                    pidfd::kill(&wio.pidfd);
                }
            }
        }
        drop(core);
        if !fx.start.is_empty() || !fx.start_later.is_empty() || fx.arm {
            self.supervisor.start(&fx.start, &fx.start_later);
        }
        for o in outs {
            match sender {
                Sender::Here => o.flush_here(),
                Sender::Threads => o.kick(),
            }
        }
        for (c, body) in fx.messages {
            c.push_message(body.into_payload());
        }
        for (sink, result) in fx.finish {
            sink.finish(result);
        }
    }

    /// Frames for `ids` on worker `w` could not be sent (outbox thread).
    pub(crate) fn unsent(&self, w: WorkerId, ids: Vec<TaskId>, e: TaskError) {
        self.event(Sender::Threads, |c, now| {
            c.sched.on_unsent(w, &ids, &e, &IoProbe(&c.io, now), now)
        });
    }

    /// New units from a caller.
    pub(crate) fn submit(&self, units: Vec<super::scheduler::Unit>) -> Result<(), TaskError> {
        if let Some(e) = self.foreign() {
            return Err(e);
        }
        let mut core = self.lock();
        let fx = core.sched.submit(units, Instant::now())?;
        self.carry_out(core, fx, Sender::Here);
        Ok(())
    }

    /// Stops the pool: `now` cancels everything; otherwise queued and
    /// running work is finished first. Safe to call from several threads at
    /// once: a `shutdown_now` during a `shutdown` cancels what that
    /// `shutdown` waits for, and both return once every worker is reaped.
    ///
    /// In a forked child it does nothing: the child has none of the pool's
    /// threads to wait for and must not end the parent's workers.
    pub(crate) fn stop(&self, now: bool) {
        if self.foreign().is_some() {
            return;
        }
        self.admission.close();
        if now {
            self.event(Sender::Threads, |c, _| c.sched.close(true));
        } else {
            // Waits for the work the caller asked to finish: bounded by the
            // tasks themselves (their timeout, or a `shutdown_now`, which
            // cancels them and so ends this wait), and by the starts: work
            // no worker can be started for fails (see `Scheduler::drain`).
            self.event(Sender::Threads, |c, _| c.sched.drain());
            self.admission.wait_idle(None);
            self.event(Sender::Threads, |c, _| c.sched.close(false));
        }
        self.supervisor.stop();
        let threads = {
            let mut st = self.stop.lock().unwrap_or_else(|e| e.into_inner());
            if st.joining {
                while !st.done {
                    st = self.stopped.wait(st).unwrap_or_else(|e| e.into_inner());
                }
                return;
            }
            st.joining = true;
            std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()))
        };
        // The supervisor ends once every worker is reaped; then the router.
        let mut threads = threads.into_iter();
        if let Some(sup) = threads.next() {
            let _ = sup.join();
        }
        self.router.stop();
        for t in threads {
            let _ = t.join();
        }
        // Every worker is reaped, so each sender's send has returned or
        // fails now; the bound only covers a socket a worker's descendant
        // keeps open and full.
        let senders = std::mem::take(&mut *self.senders.lock().unwrap_or_else(|e| e.into_inner()));
        let deadline = Instant::now() + SENDER_GRACE;
        for o in senders {
            o.close_and_join(deadline);
        }
        // Whatever is still unfinished has no worker left to finish it.
        self.event(Sender::Threads, |c, _| {
            c.sched.fail_now("the pool stopped".to_owned())
        });
        let mut st = self.stop.lock().unwrap_or_else(|e| e.into_inner());
        st.done = true;
        self.stopped.notify_all();
    }

    /// The result router failed: nothing can come back from any worker.
    pub(crate) fn router_failed(&self, why: String) {
        eprintln!("concur-procs: {why}");
        self.event(Sender::Threads, |c, _| c.sched.fail_now(why));
    }
}

/// The frame for `out`; on failure, the units it concerns and why.
pub(crate) fn frame(out: Out, threshold: usize) -> Result<Frame, (Vec<TaskId>, TaskError)> {
    let (ids, made) = match out {
        Out::Run { id, name, input } => (
            vec![id],
            input.try_clone().and_then(|body| {
                Frame::new(
                    &Down::Run {
                        id,
                        name: name.to_owned(),
                    },
                    body,
                )
            }),
        ),
        Out::RunGroup { name, units, .. } => {
            let (bytes, ends) = crate::wire::join(units.iter().map(|(_, b)| b.as_slice()));
            let ids: Vec<TaskId> = units.into_iter().map(|(id, _)| id).collect();
            let made = Frame::new(
                &Down::RunGroup {
                    name: name.to_owned(),
                    ids: ids.clone(),
                    ends,
                },
                Body::inline(bytes),
            );
            (ids, made)
        }
        Out::Deliver { id, bytes } => (
            vec![id],
            Body::from_vec(bytes, threshold).and_then(|b| Frame::new(&Down::Deliver { id }, b)),
        ),
        Out::CallerGone { id } => (vec![], Frame::new(&Down::CallerGone { id }, Body::Empty)),
        Out::Cancel { id } => (vec![], Frame::new(&Down::Cancel { id }, Body::Empty)),
        Out::Recall { ids } => (vec![], Frame::new(&Down::Recall { ids }, Body::Empty)),
        Out::Shutdown => (vec![], Frame::new(&Down::Shutdown, Body::Empty)),
    };
    match made {
        Ok(mut f) => {
            f.units = ids;
            Ok(f)
        }
        Err(e) => Err((ids, e)),
    }
}
