//! The messages a running task and its caller exchange, kept in the task's
//! cell: `up` from the task to the caller, `down` from the caller to the task.
//!
//! Messages end with the task: once the cell is done the task's messages
//! are dropped, and once the caller has gone the task's `recv` ends after
//! the messages already sent.

use std::collections::VecDeque;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use super::cell::{time_left, Shared, Side, State};
use crate::payload::Payload;

/// The two message queues of one task.
#[derive(Default)]
pub(super) struct Mailbox {
    up: VecDeque<Payload>,
    down: VecDeque<Payload>,
    /// The caller dropped its handle: nobody reads `up`, nobody adds to `down`.
    caller_gone: bool,
    /// An async caller waiting for the next message (or the end).
    pub(super) message_waker: Option<Waker>,
}

impl Shared {
    /// Queues a message from the task for the caller. Dropped when the task
    /// is already done or the caller has gone.
    pub(super) fn push_up(&self, msg: Payload) {
        let mut g = self.lock();
        if g.state == State::Done || g.mail.caller_gone {
            return;
        }
        g.mail.up.push_back(msg);
        self.notify(&g, Side::Caller);
        if let Some(w) = g.mail.message_waker.take() {
            w.wake();
        }
    }

    /// Takes the next message from the task, waiting until `deadline`.
    /// `None` once the task is done and every message was read, or at the deadline.
    pub(super) fn pop_up(&self, deadline: Option<Instant>) -> Option<Payload> {
        let mut g = self.lock();
        loop {
            if let Some(m) = g.mail.up.pop_front() {
                return Some(m);
            }
            if g.state == State::Done {
                return None;
            }
            g = self.wait(g, Side::Caller, time_left(deadline)?);
        }
    }

    /// As [`pop_up`](Self::pop_up), for an async caller.
    pub(super) fn poll_up(&self, cx: &mut Context<'_>) -> Poll<Option<Payload>> {
        let mut g = self.lock();
        if let Some(m) = g.mail.up.pop_front() {
            return Poll::Ready(Some(m));
        }
        if g.state == State::Done {
            return Poll::Ready(None);
        }
        g.mail.message_waker = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Queues a message from the caller for the task.
    pub(super) fn push_down(&self, msg: Payload) {
        let mut g = self.lock();
        g.mail.down.push_back(msg);
        self.notify(&g, Side::Task);
    }

    /// Takes the next message from the caller, waiting until `deadline`.
    /// `None` once the task is done or the caller has gone (and every
    /// message was read), or at the deadline.
    pub(super) fn pop_down(&self, deadline: Option<Instant>) -> Option<Payload> {
        let mut g = self.lock();
        loop {
            if let Some(m) = g.mail.down.pop_front() {
                return Some(m);
            }
            if g.state == State::Done || g.mail.caller_gone {
                return None;
            }
            g = self.wait(g, Side::Task, time_left(deadline)?);
        }
    }

    /// The caller dropped its handle: its unread messages go, the task's
    /// `recv` ends. True when the task was not done yet (the backend may
    /// need telling).
    pub(super) fn caller_left(&self) -> bool {
        let mut g = self.lock();
        g.mail.caller_gone = true;
        g.mail.up.clear();
        self.notify(&g, Side::Task);
        g.state != State::Done
    }
}
