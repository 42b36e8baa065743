//! The router thread: the one reader of every worker's results.
//!
//! All workers' channels sit in one `IpcReceiverSet`; the router decodes
//! each frame and settles it under the pool lock. It never sends on a
//! worker channel (that could block), so results are always drained and a
//! worker never waits on a parent that waits on it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use concur_core::TaskError;
use ipc_channel::ipc::{self, IpcReceiverSet, IpcSelectionResult};

use crate::shared::Shared;
use crate::shm::Body;
use crate::state::Touched;
use crate::supervisor::Event;
use crate::wire::{Frame, Packet, Rx, Tx, Up};

pub(crate) struct Router {
    control: Mutex<Tx>,
    pending: Mutex<Vec<(u64, Rx)>>,
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

    /// Starts reading worker `incarnation`'s channel.
    pub(crate) fn add(&self, incarnation: u64, rx: Rx) {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((incarnation, rx));
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
    let Ok(mut set) = IpcReceiverSet::new() else {
        return;
    };
    let Ok(control_id) = set.add(control) else {
        return;
    };
    let mut ids: HashMap<u64, u64> = HashMap::new();
    loop {
        let Ok(events) = set.select() else { return };
        // Frames for workers queued while handling this batch go out together.
        let mut touched = Touched::default();
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
                    for (inc, rx) in added {
                        if let Ok(rid) = set.add(rx) {
                            ids.insert(rid, inc);
                        }
                    }
                    if shared.router.stopping.load(Ordering::SeqCst) {
                        return;
                    }
                }
                IpcSelectionResult::MessageReceived(id, msg) => {
                    let Some(&inc) = ids.get(&id) else { continue };
                    let Ok(packet) = msg.to::<Packet>() else {
                        eprintln!(
                            "concur-procs: undecodable message from worker incarnation {inc}"
                        );
                        continue;
                    };
                    for frame in packet {
                        match frame.open::<Up>() {
                            Ok((up, body)) => shared.on_up(inc, up, body, &mut touched),
                            Err(_) => eprintln!(
                                "concur-procs: undecodable frame from worker incarnation {inc}"
                            ),
                        }
                    }
                }
                IpcSelectionResult::ChannelClosed(id) if id == control_id => return,
                IpcSelectionResult::ChannelClosed(id) => {
                    if let Some(inc) = ids.remove(&id) {
                        shared.event(Event::Exited(inc));
                    }
                }
            }
        }
        touched.kick();
    }
}
