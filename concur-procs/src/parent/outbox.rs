//! The parent's sending side of one worker's channel.
//!
//! An ipc-channel send blocks while the socket is full. The thread that
//! submits a task sends it itself (no thread hop on the fast path); the
//! router thread, which must never block, only queues frames and wakes the
//! worker's sender thread. One drainer at a time keeps frames in order.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use concur_core::{TaskError, TaskId};
use ipc_channel::IpcError;

use crate::wire::{Frame, Tx, PACKET_FDS};

/// Frames are packed together up to about this many bytes per message.
pub(crate) const PACKET_BYTES: usize = 64 * 1024;

/// Reports units whose frames could not be sent.
pub(crate) type Unsent = Box<dyn Fn(Vec<TaskId>, TaskError) + Send + Sync>;

/// Sends one packet. A worker that is gone is not an error here (its
/// pidfd reports its end and the supervisor settles its units); any other
/// failure (no descriptor left to duplicate a region, a message too large)
/// fails the units the packet carried.
fn send(tx: &Tx, packet: Vec<Frame>, unsent: &Unsent) {
    let ids: Vec<TaskId> = packet
        .iter()
        .flat_map(|f| f.units.iter().copied())
        .collect();
    let sent = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| tx.send(packet)));
    let error = match sent {
        Ok(Ok(())) => return,
        Ok(Err(IpcError::Io(e)))
            if matches!(
                e.raw_os_error(),
                Some(libc::EPIPE) | Some(libc::ECONNRESET) | Some(libc::ENOTCONN)
            ) =>
        {
            return
        }
        Ok(Err(IpcError::Disconnected)) => return,
        Ok(Err(IpcError::Io(e))) => TaskError::io(e),
        Ok(Err(e)) => TaskError::io(std::io::Error::other(e.to_string())),
        Err(_) => TaskError::io(std::io::Error::other("sending to the worker failed")),
    };
    if !ids.is_empty() {
        unsent(ids, error);
    }
}

#[derive(Default)]
struct Queue {
    frames: VecDeque<Frame>,
    busy: bool,
    closed: bool,
    /// The sender thread has returned (and dropped nothing it still needs).
    ended: bool,
}

pub(crate) struct Outbox {
    queue: Mutex<Queue>,
    cond: Condvar,
    tx: Mutex<Tx>,
    unsent: Unsent,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Outbox {
    /// An outbox over `tx` with its sender thread started.
    pub(crate) fn start(tx: Tx, name: String, unsent: Unsent) -> std::io::Result<Arc<Outbox>> {
        let out = Arc::new(Outbox {
            queue: Mutex::default(),
            cond: Condvar::new(),
            tx: Mutex::new(tx),
            unsent,
            thread: Mutex::new(None),
        });
        let o = out.clone();
        let handle = std::thread::Builder::new().name(name).spawn(move || {
            o.run();
            let mut q = o.lock();
            q.ended = true;
            o.cond.notify_all();
        })?;
        *out.thread.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
        Ok(out)
    }

    /// True once the sender thread has returned.
    pub(crate) fn ended(&self) -> bool {
        self.lock().ended
    }

    /// Closes the outbox and joins its sender thread, waiting until
    /// `deadline` at most: a thread blocked sending to a worker whose
    /// socket a descendant of that worker keeps open and full is left
    /// behind (it ends when that descendant does). True when joined.
    pub(crate) fn close_and_join(&self, deadline: std::time::Instant) -> bool {
        self.close();
        let mut q = self.lock();
        while !q.ended {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            q = self
                .cond
                .wait_timeout(q, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        drop(q);
        if let Some(h) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = h.join();
        }
        true
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a frame (callers hold the pool lock: order is the pool's order).
    pub(crate) fn push(&self, frame: Frame) {
        let mut q = self.lock();
        if !q.closed {
            q.frames.push_back(frame);
        }
    }

    /// Sends what is queued from this thread, unless another thread already does.
    pub(crate) fn flush_here(&self) {
        {
            let mut q = self.lock();
            if q.busy || q.frames.is_empty() {
                return;
            }
            q.busy = true;
        }
        self.drain();
    }

    /// Lets the sender thread send what is queued (never blocks).
    pub(crate) fn kick(&self) {
        self.cond.notify_all();
    }

    /// Drops what is queued and ends the sender thread.
    pub(crate) fn close(&self) {
        let mut q = self.lock();
        q.closed = true;
        q.frames.clear();
        self.cond.notify_all();
    }

    fn drain(&self) {
        loop {
            let batch = {
                let mut q = self.lock();
                if q.frames.is_empty() || q.closed {
                    q.busy = false;
                    self.cond.notify_all();
                    return;
                }
                std::mem::take(&mut q.frames)
            };
            let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner());
            let mut packet = Vec::new();
            let (mut bytes, mut fds) = (0, 0);
            for frame in batch {
                let frame_fds = frame.descriptors();
                if !packet.is_empty() && fds + frame_fds > PACKET_FDS {
                    send(&tx, std::mem::take(&mut packet), &self.unsent);
                    (bytes, fds) = (0, 0);
                }
                bytes += frame.head.0.len() + frame.body.0.len();
                fds += frame_fds;
                packet.push(frame);
                if bytes >= PACKET_BYTES {
                    send(&tx, std::mem::take(&mut packet), &self.unsent);
                    (bytes, fds) = (0, 0);
                }
            }
            if !packet.is_empty() {
                send(&tx, packet, &self.unsent);
            }
        }
    }

    fn run(&self) {
        loop {
            {
                let mut q = self.lock();
                loop {
                    if q.closed {
                        return;
                    }
                    if !q.busy && !q.frames.is_empty() {
                        q.busy = true;
                        break;
                    }
                    q = self.cond.wait(q).unwrap_or_else(|e| e.into_inner());
                }
            }
            self.drain();
        }
    }
}
