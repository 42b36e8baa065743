//! The supervisor thread: starts workers, reaps the ones that end, settles
//! their tasks (retry or fail), counts crashes and replaces workers.
//!
//! It is the only thread that forks workers, and it lives as long as the
//! pool: a worker's parent-death signal follows the thread that forked it.

use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use concur_core::{TaskError, WorkerExit};
use ipc_channel::IpcError;
use ipc_channel::TryRecvError;

use crate::error::SpawnError;
use crate::outbox::Outbox;
use crate::shared::Shared;
use crate::shm::Body;
use crate::spawn::{self, Pending};
use crate::state::{fail_pool, settle, Worker};
use crate::sys;
use crate::wire::{Down, Frame, Up};

/// What the supervisor is asked to do.
pub(crate) enum Event {
    /// Worker `incarnation`'s channel closed: reap it and settle its tasks.
    Exited(u64),
    /// Start a worker for this slot (recycling).
    Respawn(usize),
    /// The pool is stopping: reap every worker, then end.
    Stop,
}

/// How long a worker whose channel closed may take to exit.
const EXIT_GRACE: Duration = Duration::from_secs(2);

/// How long a stopping pool waits for workers to exit before killing them.
const STOP_GRACE: Duration = Duration::from_secs(10);

pub(crate) fn run(
    shared: Arc<Shared>,
    events: Receiver<Event>,
    ready: Sender<Result<(), TaskError>>,
) {
    let slots: Vec<usize> = (0..shared.settings.workers).collect();
    let _ = ready.send(start(&shared, &slots));
    let mut stopping = false;
    let mut stop_deadline = None;
    loop {
        if stopping && shared.lock().workers.is_empty() {
            return;
        }
        let ev = if stopping {
            let deadline = *stop_deadline.get_or_insert_with(|| Instant::now() + STOP_GRACE);
            match events.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(ev) => ev,
                Err(RecvTimeoutError::Timeout) => {
                    // Workers that do not exit when told are killed.
                    for w in shared.lock().workers.values() {
                        w.kill();
                    }
                    stop_deadline = Some(Instant::now() + STOP_GRACE);
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return,
            }
        } else {
            match events.recv() {
                Ok(ev) => ev,
                Err(_) => return,
            }
        };
        match ev {
            Event::Exited(inc) => exited(&shared, inc),
            Event::Respawn(slot) if !stopping => respawn(&shared, slot),
            Event::Respawn(_) => {}
            Event::Stop => stopping = true,
        }
    }
}

fn exited(shared: &Arc<Shared>, inc: u64) {
    let Some(pid) = shared.lock().workers.get_mut(&inc).map(|w| {
        w.reaping = true;
        w.pid
    }) else {
        return;
    };
    // The channel closed: the process is exiting, so this wait is short (a
    // worker that closed its channel and lives on is killed).
    let exit = sys::wait_or_kill(pid, EXIT_GRACE).unwrap_or(WorkerExit::Unknown);
    let (fail, touched, respawn_slot) = {
        let mut st = shared.lock();
        let Some(w) = st.workers.remove(&inc) else {
            return;
        };
        w.out.close();
        let slot = w.slot;
        let current = st.slots[slot] == Some(inc);
        let fail = settle(&shared.settings, &mut st, w, exit);
        if current {
            st.slots[slot] = None;
        }
        let respawn = current && !st.closing && st.failed.is_none();
        let touched = shared.dispatch(&mut st);
        (fail, touched, respawn.then_some(slot))
    };
    touched.kick();
    for (c, e) in fail {
        c.finish(Err(e));
    }
    if let Some(slot) = respawn_slot {
        respawn(shared, slot);
    }
}

/// Starts a worker for `slot`, retrying until it starts or the restart
/// limit makes the pool fail.
fn respawn(shared: &Arc<Shared>, slot: usize) {
    loop {
        {
            let st = shared.lock();
            if st.closing || st.failed.is_some() || st.slots[slot].is_some() {
                return;
            }
        }
        let Err(e) = start(shared, &[slot]) else {
            return;
        };
        eprintln!("concur-procs: could not replace worker {slot}: {e}");
        let mut fail = Vec::new();
        {
            let mut st = shared.lock();
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
                fail_pool(&shared.settings, &mut st, &mut fail);
            }
        }
        for (c, e) in fail {
            c.finish(Err(e));
        }
    }
}

/// Starts one worker per slot, all at once; returns the first failure.
fn start(shared: &Arc<Shared>, slots: &[usize]) -> Result<(), TaskError> {
    let deadline = Instant::now() + shared.settings.start_timeout;
    let mut first_err = None;
    let mut pending = Vec::new();
    for &slot in slots {
        let inc = {
            let mut st = shared.lock();
            st.next_incarnation += 1;
            st.next_incarnation
        };
        match spawn::launch() {
            Ok(p) => pending.push((slot, inc, p)),
            Err(e) => {
                first_err.get_or_insert(TaskError::from(e));
            }
        }
    }
    for (slot, inc, p) in pending {
        if let Err(e) = init(shared, slot, inc, p, deadline) {
            first_err.get_or_insert(e);
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// Connects a launched worker, initialises it and hands it to the pool.
fn init(
    shared: &Arc<Shared>,
    slot: usize,
    inc: u64,
    p: Pending,
    deadline: Instant,
) -> Result<(), TaskError> {
    let s = &shared.settings;
    let started = p.connect(deadline, s.start_timeout)?;
    let pid = started.pid;
    let give_up = |e: TaskError| {
        sys::kill(pid);
        let _ = sys::wait(pid);
        e
    };
    let (initializer, body) = match &s.initializer {
        Some(i) => (
            Some(i.name().to_owned()),
            Body::from_vec(i.encode().map_err(give_up)?, s.shm_threshold),
        ),
        None => (None, Body::Empty),
    };
    let head = Down::Init {
        index: slot,
        incarnation: inc,
        memory_limit: s.memory_limit,
        report_start: s.timeout.is_some(),
        initializer,
        shm_threshold: s.shm_threshold,
    };
    let frame = Frame::new(&head, body).map_err(give_up)?;
    if started.tx.send(vec![frame]).is_err() {
        return Err(give_up(
            SpawnError::Protocol("worker closed its channel").into(),
        ));
    }
    // Without an initializer the worker is ready once it has its init: its
    // `Ready` reaches the router, which ignores it. A worker that fails to
    // set itself up exits, and that is handled as any worker exit.
    let wait = deadline.saturating_duration_since(Instant::now());
    let answer = match s.initializer {
        Some(_) => started.rx.try_recv_timeout(wait),
        None => Ok(vec![Frame::new(&Up::Ready, Body::Empty)?]),
    };
    match answer {
        Ok(packet) => match packet.into_iter().next().map(Frame::open::<Up>) {
            Some(Ok((Up::Ready, _))) => {}
            Some(Ok((Up::InitFailed(e), _))) => return Err(give_up(e)),
            _ => return Err(give_up(SpawnError::Protocol("expected ready").into())),
        },
        Err(TryRecvError::Empty) => {
            return Err(give_up(SpawnError::Deadline(s.start_timeout).into()))
        }
        Err(TryRecvError::IpcError(IpcError::Disconnected)) => {
            let exit = sys::wait(pid).unwrap_or(WorkerExit::Unknown);
            return Err(SpawnError::Exited(exit).into());
        }
        Err(_) => return Err(give_up(SpawnError::Protocol("bad ready").into())),
    }
    let out = Outbox::start(started.tx, format!("concur-procs-send-{inc}"))
        .map_err(|e| give_up(TaskError::io(e)))?;
    shared.router.add(inc, started.rx);
    let touched = {
        let mut st = shared.lock();
        let mut w = Worker::new(slot, pid, out);
        if st.closing {
            w.retiring = true;
            if let Ok(f) = Frame::new(&Down::Shutdown, Body::Empty) {
                w.out.push(f);
            }
            w.out.kick();
        } else {
            st.slots[slot] = Some(inc);
        }
        st.workers.insert(inc, w);
        shared.dispatch(&mut st)
    };
    touched.kick();
    Ok(())
}
