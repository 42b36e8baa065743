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
///
/// The queues live in a box made on the first message (or the first async
/// wait for one): most tasks send none, and a burst of tasks holds one cell
/// per task, so the cell stays small (one allocation of 168 bytes with its
/// reference counts instead of 248; `handle::tests::cell_stays_small`).
/// Fewer bytes per task is less memory written and, under glibc, fewer
/// pages the allocator hands back after a burst and faults in again for
/// the next (a third fewer page faults per 100k burst, measured).
#[derive(Default)]
pub(super) struct Mailbox {
    queues: Option<Box<Queues>>,
}

/// What [`Mailbox`] holds once a message (or an async wait for one) came.
#[derive(Default)]
struct Queues {
    up: VecDeque<Payload>,
    down: VecDeque<Payload>,
    /// An async caller waiting for the next message (or the end).
    message_waker: Option<Waker>,
}

impl Mailbox {
    fn queues(&mut self) -> &mut Queues {
        self.queues.get_or_insert_with(Box::default)
    }

    fn pop_up(&mut self) -> Option<Payload> {
        self.queues.as_mut()?.up.pop_front()
    }

    fn pop_down(&mut self) -> Option<Payload> {
        self.queues.as_mut()?.down.pop_front()
    }

    /// The async caller waiting for a message, if any (it is woken once).
    pub(super) fn take_message_waker(&mut self) -> Option<Waker> {
        self.queues.as_mut()?.message_waker.take()
    }
}

impl Shared {
    /// Queues a message from the task for the caller. Dropped when the task
    /// is already done or the caller has gone.
    pub(super) fn push_up(&self, msg: Payload) {
        let mut g = self.lock();
        if g.state == State::Done || g.caller_gone {
            return;
        }
        g.mail.queues().up.push_back(msg);
        self.notify(&g, Side::Caller);
        if let Some(w) = g.mail.take_message_waker() {
            w.wake();
        }
    }

    /// Takes the next message from the task, waiting until `deadline`.
    /// `None` once the task is done and every message was read, or at the deadline.
    pub(super) fn pop_up(&self, deadline: Option<Instant>) -> Option<Payload> {
        let mut g = self.lock();
        loop {
            if let Some(m) = g.mail.pop_up() {
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
        if let Some(m) = g.mail.pop_up() {
            return Poll::Ready(Some(m));
        }
        if g.state == State::Done {
            return Poll::Ready(None);
        }
        g.mail.queues().message_waker = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Queues a message from the caller for the task.
    pub(super) fn push_down(&self, msg: Payload) {
        let mut g = self.lock();
        g.mail.queues().down.push_back(msg);
        self.notify(&g, Side::Task);
    }

    /// Takes the next message from the caller, waiting until `deadline`.
    /// `None` once the task is done or the caller has gone (and every
    /// message was read), or at the deadline.
    pub(super) fn pop_down(&self, deadline: Option<Instant>) -> Option<Payload> {
        let mut g = self.lock();
        loop {
            if let Some(m) = g.mail.pop_down() {
                return Some(m);
            }
            if g.state == State::Done || g.caller_gone {
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
        g.caller_gone = true;
        if let Some(q) = g.mail.queues.as_mut() {
            q.up.clear();
        }
        self.notify(&g, Side::Task);
        g.state != State::Done
    }
}
