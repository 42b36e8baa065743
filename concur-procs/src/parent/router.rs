//! The router thread: the one reader of every worker's results.
//!
//! All workers' channels sit in one `IpcReceiverSet`; the router decodes
//! each frame and feeds it to the scheduler. It never sends on a worker
//! channel (that could block), so results are always drained and a worker
//! never waits on a parent that waits on it. A frame it cannot read ends
//! the worker that sent it (the task it ran fails with the codec error);
//! if the router itself cannot go on, the pool fails every task at once
//! rather than leave them waiting.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use concur_core::TaskError;
use ipc_channel::ipc::{self, IpcReceiverSet, IpcSelectionResult};

use super::scheduler::WorkerId;
use super::shell::{IoProbe, Sender, Shared};
use crate::shm::Body;
use crate::wire::{Frame, Packet, Rx, Tx, Up};

pub(crate) struct Router {
    control: Mutex<Tx>,
    pending: Mutex<Vec<(WorkerId, Rx)>>,
    stopping: AtomicBool,
}

impl Router {
    /// A router handle and the control channel its thread listens on.
    pub(crate) fn new() -> Result<(Router, Rx), TaskError> {
        let (tx, rx) = ipc::channel().map_err(TaskError::io)?;
        Ok((
            Router {
                control: Mutex::new(tx),
                pending: Mutex::new(Vec::new()),
                stopping: AtomicBool::new(false),
            },
            rx,
        ))
    }

    /// Starts reading worker `w`'s channel.
    pub(crate) fn add(&self, w: WorkerId, rx: Rx) {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((w, rx));
        self.wake();
    }

    /// Ends the router thread.
    pub(crate) fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.wake();
    }

    fn wake(&self) {
        if let Ok(f) = Frame::new(&(), Body::Empty) {
            let _ = self
                .control
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .send(vec![f]);
        }
    }
}

pub(crate) fn run(shared: Arc<Shared>, control: Rx) {
    let mut set = match IpcReceiverSet::new() {
        Ok(s) => s,
        Err(e) => return shared.router_failed(format!("cannot read results: {e}")),
    };
    let control_id = match set.add(control) {
        Ok(id) => id,
        Err(e) => return shared.router_failed(format!("cannot read results: {e}")),
    };
    let mut ids: HashMap<u64, WorkerId> = HashMap::new();
    loop {
        let events = match set.select() {
            Ok(ev) => ev,
            Err(e) => {
                if !shared.router.stopping.load(Ordering::SeqCst) {
                    shared.router_failed(format!("the result router failed: {e}"));
                }
                return;
            }
        };
        for ev in events {
            match ev {
                IpcSelectionResult::MessageReceived(id, _) if id == control_id => {
                    let added = std::mem::take(
                        &mut *shared
                            .router
                            .pending
                            .lock()
                            .unwrap_or_else(|e| e.into_inner()),
                    );
                    for (w, rx) in added {
                        match set.add(rx) {
                            Ok(rid) => {
                                ids.insert(rid, w);
                            }
                            Err(e) => bad_frame(&shared, w, TaskError::io(e)),
                        }
                    }
                    if shared.router.stopping.load(Ordering::SeqCst) {
                        return;
                    }
                }
                IpcSelectionResult::MessageReceived(id, msg) => {
                    let Some(&w) = ids.get(&id) else { continue };
                    match msg.to::<Packet>() {
                        Ok(packet) => on_packet(&shared, w, packet),
                        Err(e) => {
                            bad_frame(&shared, w, TaskError::codec("message from a worker", e))
                        }
                    }
                }
                IpcSelectionResult::ChannelClosed(id) if id == control_id => return,
                IpcSelectionResult::ChannelClosed(id) => {
                    if let Some(w) = ids.remove(&id) {
                        shared.supervisor.channel_closed(w);
                    }
                }
                // Only this process writes the control channel.
                IpcSelectionResult::ChannelBroken(id, _) if id == control_id => return,
                IpcSelectionResult::ChannelBroken(id, e) => {
                    // The worker sent what could not be read: it is broken,
                    // not exiting, so it is stopped now (its running task
                    // fails with this cause) instead of after the grace a
                    // hang-up gets. The bad frame is settled before the
                    // channel counts as closed, so its worker's exit, if it
                    // races, settles after it.
                    if let Some(w) = ids.remove(&id) {
                        bad_frame(&shared, w, TaskError::codec("message from a worker", e));
                        shared.supervisor.channel_closed(w);
                    }
                }
            }
        }
    }
}

/// Worker `w` sent something unreadable: it is ended.
fn bad_frame(shared: &Shared, w: WorkerId, e: TaskError) {
    shared.event(Sender::Threads, |c, now| {
        c.sched.on_bad_frame(w, e, &IoProbe(&c.io, now))
    });
}

/// Feeds one packet's frames to the scheduler, under one lock.
fn on_packet(shared: &Shared, w: WorkerId, packet: Packet) {
    let mut core = shared.lock();
    let now = std::time::Instant::now();
    let mut fx = super::scheduler::Effects::default();
    let mut messages = Vec::new();
    let mut done = Vec::new();
    for frame in packet {
        let (up, mut body) = match frame.open::<Up>() {
            Ok(x) => x,
            Err(e) => {
                let c = &mut *core;
                fx.merge(c.sched.on_bad_frame(w, e, &IoProbe(&c.io, now)));
                break;
            }
        };
        body.release_descriptor();
        match up {
            Up::Done { id, result } => {
                done.push((id, result.map(|()| body)));
            }
            Up::DoneGroup { ids, results, ends } => {
                let bytes = body.as_slice();
                let Some(parts) = crate::wire::split(bytes, &ends)
                    .filter(|p| p.len() == ids.len() && results.len() == ids.len())
                else {
                    let c = &mut *core;
                    let e = TaskError::codec(
                        "results from a worker",
                        std::io::Error::other("a result group that does not add up"),
                    );
                    fx.merge(c.sched.on_bad_frame(w, e, &IoProbe(&c.io, now)));
                    break;
                };
                for ((id, result), part) in ids.into_iter().zip(results).zip(parts) {
                    done.push((id, result.map(|()| Body::inline(part.to_vec()))));
                }
            }
            Up::Message { id } => {
                // Results before this message stay ahead of it.
                if !done.is_empty() {
                    fx.merge(core.sched.on_results(w, std::mem::take(&mut done), now));
                }
                if let Some(c) = core.sched.message_sink(w, id) {
                    messages.push((c, body));
                }
            }
            Up::MessageGroup { id, ends } => {
                let Some(parts) = crate::wire::split(body.as_slice(), &ends) else {
                    let c = &mut *core;
                    let e = TaskError::codec(
                        "messages from a worker",
                        std::io::Error::other("a message group that does not add up"),
                    );
                    fx.merge(c.sched.on_bad_frame(w, e, &IoProbe(&c.io, now)));
                    break;
                };
                // Results before these messages stay ahead of them.
                if !done.is_empty() {
                    fx.merge(core.sched.on_results(w, std::mem::take(&mut done), now));
                }
                if let Some(c) = core.sched.message_sink(w, id) {
                    messages.extend(
                        parts
                            .into_iter()
                            .map(|part| (c.clone(), Body::inline(part.to_vec()))),
                    );
                }
            }
            Up::Recalled { ids } => fx.merge(core.sched.on_recalled(w, &ids, now)),
            Up::Hello { .. } | Up::Ready | Up::InitFailed(_) => {}
        }
    }
    if !done.is_empty() {
        fx.merge(core.sched.on_results(w, done, now));
    }
    // Messages go to their handles before any result is delivered (a handle
    // drops messages that arrive after it is done): `carry_out` delivers
    // them first, after releasing the lock, as it does results.
    fx.messages = messages;
    shared.carry_out(core, fx, Sender::Threads);
}
