//! The parent's decisions, in one place and without I/O: which worker
//! gets which task, what happens when a worker dies, when a task has run
//! too long, when the pool gives up, how it stops.
//!
//! Events come in as method calls with the time passed in (`now`); what
//! must be done comes out as [`Effects`] (frames queued per worker in
//! [`Worker::outgoing`], handles to finish, workers to kill or start). The
//! I/O threads around it ([`super::shell`]) only feed it events and carry
//! the effects out, so every decision here is tested without processes
//! (see the tests at the end of this file).
//!
//! # Delivery rules (the contract this module keeps)
//! - Every unit (a task, or one task of a batch) ends exactly once: its
//!   [`Sink`] is finished by one of done, timeout, cancel, quarantine,
//!   pool failure, shutdown.
//! - A worker that dies blames only the unit it was running (read from its
//!   progress word, see [`Progress`]), or, when it ran none, the unit that
//!   ended last if that unit's result never arrived; units waiting behind
//!   it are sent again at no cost: they never started. Units ahead of it
//!   (it runs them in the order they were sent) did run: their results were
//!   held back and died with it, and running them again spends one of
//!   their retries (`lost_runs`), so `retries` bounds how often a unit
//!   runs. With no retries, workers hold no result across a task start.
//! - The running unit is run again while it has been running in at most
//!   `retries` deaths (lost runs included); past that it is quarantined:
//!   it fails with `WorkerLost` and a note of how many workers it ended. A
//!   unit run again after a death runs alone on an idle worker, and units
//!   whose result a death took go with their like only ([`Taint`]): that
//!   worker takes nothing else until they are done.
//! - A kill the pool decides (timeout, cancel, shutdown) finishes the unit
//!   it targets with that cause *before* the kill, so the death that
//!   follows never reads as a lost worker.
//! - A worker that holds units and whose heartbeat (progress word) has not
//!   moved for `unresponsive` (stopped, frozen) is killed and its death is
//!   settled like a crash: units it had not started go elsewhere at no
//!   cost, the running one spends a retry or fails with `WorkerLost` and a
//!   note that the worker stopped responding ([`Unresponsive`]). Staleness
//!   is timed by the parent's own checks, and forgiven after a check that
//!   ran much later than planned (the parent was stopped or starved).
//! - A bad frame (bytes from a worker that cannot be read) kills its
//!   worker, and the death is settled like a crash that blames the unit
//!   running when the frame was read (or else the one that ended last):
//!   the frame may have been written by the unit before it, so the blamed
//!   unit runs again alone while it has retries, and fails with the
//!   frame's `Codec` error once they are spent.
//! - Restart intensity counts only deaths that failed work and workers
//!   that died before they became ready; an external kill storm whose
//!   tasks all succeed on retry never fails the pool. A start ended by an
//!   outside signal counts only toward the failed starts in a row (reset
//!   by any good start), so a storm that also hits starting workers does
//!   not fail it either. A kill for unresponsiveness counts as an outside
//!   fault too (never toward restart intensity): a stopped worker must not
//!   fail the pool by itself.
//! - A failed pool fails everything queued and everything it would have
//!   sent again; nothing is left waiting for a worker that will never come.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use concur_core::{Completion, ErrorKind, Payload, TaskError, TaskId, WorkerExit};

pub(crate) use crate::progress::Progress;
use crate::shm::Body;
use crate::sys;

/// Identifies one worker process (its incarnation number; never reused).
pub(crate) type WorkerId = u64;

/// The pool's settings that decisions depend on.
#[derive(Debug, Clone)]
pub(crate) struct Rules {
    pub(crate) workers: usize,
    pub(crate) timeout: Option<Duration>,
    /// How long a worker holding units may show no heartbeat.
    pub(crate) unresponsive: Option<Duration>,
    pub(crate) retries: u32,
    pub(crate) max_tasks: Option<u64>,
    pub(crate) max_crashes: u32,
    pub(crate) crash_window: Duration,
    pub(crate) depth: usize,
    /// The depth adapts to task length (not set by the user).
    pub(crate) adaptive: bool,
}

/// Most units in one group frame, and most inline bytes.
const GROUP_UNITS: usize = 256;
const GROUP_BYTES: usize = 64 * 1024;

impl Rules {
    /// Takes from the front of `queue` the units that can travel with
    /// `first` in one frame: tasks of the same batch, small, with no
    /// messages, and of the same [`Taint`] (a suspect travels alone, and
    /// units whose result was lost travel only with their like, so a crash
    /// of a task that never ran takes none of them again). Units found
    /// cancelled on the way are dropped.
    fn group_with(&self, first: &Unit, queue: &mut VecDeque<Unit>) -> Vec<Unit> {
        let Sink::Item(batch, _) = &first.sink else {
            return Vec::new();
        };
        if first.taint() == Taint::Suspect {
            return Vec::new();
        }
        let small = |u: &Unit| matches!(*u.input, Body::Empty | Body::Inline(_));
        if !small(first) {
            return Vec::new();
        }
        let mut bytes = first.input.as_slice().len();
        let mut group = Vec::new();
        while group.len() + 1 < GROUP_UNITS {
            let Some(next) = queue.front() else { break };
            let same = matches!(&next.sink, Sink::Item(b, _) if Arc::ptr_eq(b, batch));
            if !same
                || next.taint() != first.taint()
                || next.name != first.name
                || !small(next)
                || !next.down.is_empty()
                || bytes + next.input.as_slice().len() > GROUP_BYTES
            {
                break;
            }
            let u = queue.pop_front().expect("front exists");
            if !u.sink.begin() {
                continue;
            }
            bytes += u.input.as_slice().len();
            group.push(u);
        }
        group
    }
}

/// A unit that may travel in a run frame with others: a small input
/// (inline), and no caller messages or caller-gone notice to follow its
/// run frame.
fn small_alone(unit: &Unit) -> bool {
    matches!(*unit.input, Body::Empty | Body::Inline(_))
        && unit.down.is_empty()
        && !unit.caller_gone
}

/// Where a unit's result goes.
#[derive(Clone)]
pub(crate) enum Sink {
    /// A task submitted alone: its own handle.
    Single(Completion),
    /// Task `index` of a batch.
    Item(Arc<Batch>, usize),
}

/// A batch's handle and the results of its tasks so far.
pub(crate) struct Batch {
    pub(crate) completion: Completion,
    slots: Mutex<BatchSlots>,
}

struct BatchSlots {
    results: Vec<Option<Result<Vec<u8>, TaskError>>>,
    /// The `SharedBytes` regions each result came with.
    regions: Vec<Vec<Arc<dyn concur_core::shared::Region>>>,
    left: usize,
}

impl Batch {
    pub(crate) fn new(completion: Completion, len: usize) -> Arc<Batch> {
        Arc::new(Batch {
            completion,
            slots: Mutex::new(BatchSlots {
                results: (0..len).map(|_| None).collect(),
                regions: (0..len).map(|_| Vec::new()).collect(),
                left: len,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BatchSlots> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Sink {
    /// The id of the handle the caller holds.
    pub(crate) fn handle_id(&self) -> TaskId {
        match self {
            Sink::Single(c) => c.id(),
            Sink::Item(b, _) => b.completion.id(),
        }
    }

    /// True once nobody waits for this unit any more (done, cancelled).
    pub(crate) fn is_done(&self) -> bool {
        match self {
            Sink::Single(c) => c.is_done(),
            Sink::Item(b, i) => b.completion.is_done() || b.lock().results[*i].is_some(),
        }
    }

    /// Marks the unit running; false when it must not run (cancelled).
    fn begin(&self) -> bool {
        match self {
            Sink::Single(c) => c.begin(),
            // The first task to start moves the batch to running; the
            // others run while it is not done (cancelled).
            Sink::Item(b, _) => b.completion.begin() || !b.completion.is_done(),
        }
    }

    /// Puts the unit back to queued (it will be sent again).
    fn requeue(&self) -> bool {
        match self {
            Sink::Single(c) => c.requeue(),
            Sink::Item(..) => !self.is_done(),
        }
    }

    /// Delivers the unit's result; finishing the last task of a batch
    /// finishes the batch.
    pub(crate) fn finish(&self, result: Result<Body, TaskError>) {
        match self {
            Sink::Single(c) => {
                c.finish(result.map(Body::into_payload));
            }
            Sink::Item(b, i) => {
                let all = {
                    let mut s = b.lock();
                    if s.results[*i].is_some() {
                        return;
                    }
                    s.results[*i] = Some(result.map(|mut body| {
                        s.regions[*i] = body.take_views();
                        body.into_vec()
                    }));
                    s.left -= 1;
                    if s.left > 0 {
                        return;
                    }
                    (
                        std::mem::take(&mut s.results),
                        std::mem::take(&mut s.regions),
                    )
                };
                let (all, regions) = all;
                let items: Vec<Result<Vec<u8>, TaskError>> = all
                    .into_iter()
                    .map(|r| r.unwrap_or_else(|| Err(ErrorKind::Cancelled.into())))
                    .collect();
                let out = concur_core::encode_batch_items(&items);
                b.completion
                    .finish(out.map(|bytes| Payload::batch_with_regions(bytes, regions)));
            }
        }
    }
}

/// One task on its way to a worker: a task submitted alone, or one task of
/// a batch.
pub(crate) struct Unit {
    /// Its id on the wire (a single task's is its handle's id).
    pub(crate) id: TaskId,
    pub(crate) sink: Sink,
    pub(crate) name: &'static str,
    /// Shared with the frames that carry it (no descriptor is duplicated
    /// to keep it for a retry).
    pub(crate) input: Arc<Body>,
    /// Every message the caller sent it, kept for a retry.
    pub(crate) down: Vec<Vec<u8>>,
    /// The caller dropped its handle.
    pub(crate) caller_gone: bool,
    /// Worker deaths it was running in.
    pub(crate) deaths: u32,
    /// Runs that ended on a worker which died before their result reached
    /// the parent (results are held back to leave together): they count
    /// against the retries as deaths do, so `retries(n)` bounds how often
    /// a task runs, not only how often it crashes.
    pub(crate) lost_runs: u32,
    /// Asked back from the worker it waits on.
    recalled: bool,
    /// Its place in the order its worker received run frames (1-based):
    /// units that travel in one frame share it.
    seq: u64,
    /// Its place in the worker's pipeline (units of a batch's group share
    /// one; tasks submitted alone take one each, even when several travel
    /// in one frame).
    group: u64,
}

/// What a unit's past says about where it may run (see [`Unit::taint`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Taint {
    /// Never lost a run: travels and shares a worker with anything.
    Fresh,
    /// Ran to its end before, but its result died with its worker: it goes
    /// to an idle worker, with only its like, and that worker takes nothing
    /// else until they are done, so no new crash takes them again.
    Lost,
    /// Was running in a worker death: runs alone on an idle worker.
    Suspect,
}

impl Unit {
    /// Where it may run, from its past deaths and lost runs.
    pub(crate) fn taint(&self) -> Taint {
        if self.deaths > 0 {
            Taint::Suspect
        } else if self.lost_runs > 0 {
            Taint::Lost
        } else {
            Taint::Fresh
        }
    }

    pub(crate) fn new(id: TaskId, sink: Sink, name: &'static str, input: Body) -> Unit {
        Unit {
            id,
            sink,
            name,
            input: Arc::new(input),
            down: Vec::new(),
            caller_gone: false,
            deaths: 0,
            lost_runs: 0,
            recalled: false,
            seq: 0,
            group: 0,
        }
    }
}

/// A frame for a worker, before encoding.
#[derive(Debug)]
pub(crate) enum Out {
    Run {
        id: TaskId,
        name: &'static str,
        input: Arc<Body>,
    },
    /// Several small tasks of one batch in one frame.
    RunGroup {
        name: &'static str,
        units: Vec<(TaskId, Arc<Body>)>,
        /// The inputs' bytes summed, kept as units join (see
        /// `Worker::join_last_frame`) rather than summed again each time.
        bytes: usize,
    },
    Deliver {
        id: TaskId,
        bytes: Vec<u8>,
    },
    CallerGone {
        id: TaskId,
    },
    Cancel {
        id: TaskId,
    },
    Recall {
        ids: Vec<TaskId>,
    },
    Shutdown,
}

/// Reads workers' progress words.
pub(crate) trait Probe {
    fn progress(&self, w: WorkerId) -> Progress;
    /// False when worker `w`'s process cannot run (stopped, exited): read
    /// only when a silent worker is about to be judged.
    fn can_run(&self, w: WorkerId) -> bool;
}

/// What the shell must do after an event.
#[must_use]
#[derive(Default)]
pub(crate) struct Effects {
    /// Workers with new frames in [`Worker::outgoing`].
    pub(crate) touched: Vec<WorkerId>,
    /// Handles to finish (outside the lock).
    pub(crate) finish: Vec<(Sink, Result<Body, TaskError>)>,
    /// Messages from tasks to their callers, delivered before any finish.
    pub(crate) messages: Vec<(Completion, Body)>,
    /// Workers to kill now.
    pub(crate) kill: Vec<WorkerId>,
    /// Slots that need a new worker.
    pub(crate) start: Vec<usize>,
    /// Slots whose start failed and that need a new worker after the
    /// slot's backoff (only [`Scheduler::on_start_failed`] sets it).
    pub(crate) start_later: Vec<usize>,
    /// A worker with a timeout to watch went busy: the deadline checker
    /// must look again.
    pub(crate) arm: bool,
}

impl Effects {
    fn touch(&mut self, w: WorkerId) {
        if !self.touched.contains(&w) {
            self.touched.push(w);
        }
    }
    /// Finishes each of `units` with `e`.
    fn fail_all(&mut self, units: impl IntoIterator<Item = Unit>, e: &TaskError) {
        self.finish
            .extend(units.into_iter().map(|u| (u.sink, Err(e.clone()))));
    }

    pub(crate) fn merge(&mut self, other: Effects) {
        for w in other.touched {
            self.touch(w);
        }
        self.finish.extend(other.finish);
        self.messages.extend(other.messages);
        self.kill.extend(other.kill);
        self.start.extend(other.start);
        self.start_later.extend(other.start_later);
        self.arm |= other.arm;
    }
}

/// A live worker, as the scheduler sees it.
pub(crate) struct Worker {
    pub(crate) slot: usize,
    pub(crate) in_flight: VecDeque<Unit>,
    /// Frames decided and not yet handed to the worker's outbox.
    pub(crate) outgoing: Vec<Out>,
    /// Tasks sent (for recycling after `max_tasks`).
    sent: u64,
    /// Run frames sent (numbering [`Unit::seq`]).
    frames: u64,
    /// Places in the pipeline taken (numbering [`Unit::group`]): a task
    /// alone takes one, a group of a batch's tasks one for them all.
    runs: u64,
    /// Run frames with a unit still in flight: the pipelining depth counts
    /// these, so a group of small tasks takes one place.
    open_groups: usize,
    retiring: bool,
    /// The pool ended it itself (timeout, cancel, shutdown, a bad frame):
    /// the unit that caused it was finished with that cause, so its death
    /// blames nobody and counts nothing (but see `bad_frame`).
    pub(crate) killed: bool,
    /// It sent a frame the parent could not read, and was killed for it:
    /// the unit blamed (the one running when the frame was read, or else
    /// the one that ended last) and the error it fails with once its
    /// retries are spent. Its death is then settled like a crash that
    /// blames that unit: the frame may have been written by the unit
    /// before it, so the blamed one runs again, alone, while it has
    /// retries left.
    bad_frame: Option<(Option<u64>, TaskError)>,
    /// When the unit now at the front of `in_flight` started being served.
    serving_since: Instant,
    /// Recent time per task (moving average), once known.
    per_task: Option<Duration>,
    /// The progress sequence last seen and when it last moved.
    last_seq: u64,
    last_change: Instant,
    /// While it holds units: its heartbeat last seen, and when the parent
    /// first saw that value (`None` while it holds none).
    beat_seen: Option<(u64, Instant)>,
    /// Killed for showing no heartbeat for this long: its death is settled
    /// like a crash (see [`Unresponsive`]), though the pool killed it.
    unresponsive: Option<Duration>,
    /// Seen running one task for longer than its stall bound while the
    /// queue waited on the cap of awake workers (see
    /// [`Scheduler::packing`]): it does not count toward that cap until
    /// its front unit is served.
    long_task: bool,
}

/// A front task running longer than this (or four times the worker's
/// average, if longer) counts as stalled.
const STALL_AFTER: Duration = Duration::from_micros(500);

/// Tasks shorter than this on average are pipelined to the full depth;
/// longer ones are sent two at a time.
const PIPELINE_BELOW: Duration = Duration::from_millis(1);

/// Tasks shorter than this on average are pipelined up to [`TINY_DEPTH`]
/// times deeper (counted in tasks, not places). A worker holds its results back while it has work and sends
/// them when it runs out, then waits one round trip for more: a wider
/// window spreads that wait (and the wake-ups of both sides) over more
/// tasks. Measured on a 10k burst of no-ops (`procs_vs_peers`), four
/// times the depth halved the time per task; sixteen times was worse.
const TINY_BELOW: Duration = Duration::from_micros(50);
const TINY_DEPTH: usize = 4;

/// While tasks are packed (see [`Scheduler::packing`]) and the queue waits
/// on the cap of awake workers, the parent looks again this often at the
/// soonest for a worker that stalled on a long task (and so no longer
/// counts toward the cap).
const HELD_CHECK: Duration = Duration::from_millis(1);

/// Tasks are packed onto awake workers while the pool's recent time per
/// task is under this. The figure is a reply's span over the tasks it
/// settled, so when tasks are spread one per worker it holds the wake-up
/// and the round trip too: 16 workers on this project's 2 cores showed
/// 50-300 us per no-op task spread, 2-5 us packed. Longer tasks (and any
/// I/O-bound ones that sleep this long) spread over every worker.
const PACK_BELOW: Duration = Duration::from_micros(250);

impl Worker {
    fn new(slot: usize, now: Instant) -> Self {
        Worker {
            slot,
            in_flight: VecDeque::new(),
            outgoing: Vec::new(),
            sent: 0,
            frames: 0,
            runs: 0,
            open_groups: 0,
            retiring: false,
            killed: false,
            bad_frame: None,
            serving_since: now,
            per_task: None,
            last_seq: 0,
            last_change: now,
            beat_seen: None,
            unresponsive: None,
            long_task: false,
        }
    }

    /// It runs units that are not [`Taint::Fresh`] (a suspect, or units
    /// whose result a death took): it takes nothing else until they are
    /// done, so a second crash loses no other task's held result, and no
    /// new crash takes theirs again.
    fn holds_tainted(&self) -> bool {
        // Tainted units are only given to an idle worker, which then takes
        // nothing else until they are done: if any is in flight, the first
        // one is (one check per dispatch, not a scan of the pipeline).
        debug_assert!(
            self.in_flight
                .front()
                .is_some_and(|u| u.taint() != Taint::Fresh)
                || self.in_flight.iter().all(|u| u.taint() == Taint::Fresh)
        );
        self.in_flight
            .front()
            .is_some_and(|u| u.taint() != Taint::Fresh)
    }

    fn takes_work(&self, rules: &Rules) -> bool {
        let (depth, tiny) = match self.per_task {
            _ if !rules.adaptive => (rules.depth, false),
            Some(t) if t < TINY_BELOW => (rules.depth, true),
            Some(t) if t < PIPELINE_BELOW => (rules.depth, false),
            _ => (rules.depth.min(2), false),
        };
        // Tiny tasks sent alone go deeper; groups of a batch already carry
        // many tasks per place and keep the plain depth (a deeper window
        // of groups made `map` slower).
        let room = self.open_groups < depth || (tiny && self.in_flight.len() < depth * TINY_DEPTH);
        !self.retiring && !self.killed && room
    }

    /// Adds `unit` to the run frame last queued for this worker, if that
    /// frame is still waiting to be sent and `unit` can travel in it (see
    /// [`small_alone`]): same task name, within [`GROUP_UNITS`] and
    /// [`GROUP_BYTES`].
    fn join_last_frame(&mut self, unit: &Unit) -> bool {
        if !small_alone(unit) {
            return false;
        }
        let len = unit.input.as_slice().len();
        match self.outgoing.last_mut() {
            Some(Out::Run { id, name, input })
                if *name == unit.name
                    && matches!(**input, Body::Empty | Body::Inline(_))
                    && input.as_slice().len() + len <= GROUP_BYTES =>
            {
                let bytes = input.as_slice().len() + len;
                let units = vec![(*id, input.clone()), (unit.id, unit.input.clone())];
                *self.outgoing.last_mut().expect("a last frame") = Out::RunGroup {
                    name: unit.name,
                    units,
                    bytes,
                };
                true
            }
            Some(Out::RunGroup { name, units, bytes })
                if *name == unit.name
                    && units.len() < GROUP_UNITS
                    && *bytes + len <= GROUP_BYTES =>
            {
                *bytes += len;
                units.push((unit.id, unit.input.clone()));
                true
            }
            _ => false,
        }
    }

    /// Takes unit `i` out of flight (units of a group are contiguous).
    fn take(&mut self, i: usize) -> Option<Unit> {
        let u = self.in_flight.remove(i)?;
        let same = |j: usize| self.in_flight.get(j).is_some_and(|o| o.group == u.group);
        let shares_a_group = same(i) || (i > 0 && same(i - 1));
        if !shares_a_group {
            self.open_groups -= 1;
        }
        Some(u)
    }

    /// How many of its units (from the front) have run, as the progress
    /// word says: those up to the one it ended last. Their results are on
    /// the way (held by the worker, or sent and not yet read here).
    fn ran_through(&self, p: &Progress) -> usize {
        self.in_flight
            .iter()
            .position(|u| u.id.0 == p.last_ended)
            .map_or(0, |i| i + 1)
    }

    /// Takes every unit out of flight.
    fn take_all(&mut self) -> std::collections::vec_deque::Drain<'_, Unit> {
        self.open_groups = 0;
        self.in_flight.drain(..)
    }

    /// How long its front task may run before it counts as stalled.
    fn usual(&self) -> Duration {
        self.per_task
            .map_or(STALL_AFTER, |t| (t * 4).max(STALL_AFTER))
    }

    fn stalled(&self, now: Instant) -> bool {
        !self.in_flight.is_empty()
            && now.saturating_duration_since(self.serving_since) > self.usual()
    }

    /// When its running unit (as the progress word `p` says) counts as a
    /// long task: its start plus the shorter of its usual time and the
    /// pool's (`pool_usual`, see [`Scheduler::pool_usual`]). `None` while
    /// no unit of its own has started.
    fn long_after(&self, p: &Progress, pool_usual: Option<Duration>) -> Option<Instant> {
        let usual = pool_usual.map_or(self.usual(), |u| u.min(self.usual()));
        let ours = self.in_flight.iter().any(|u| u.id.0 == p.running);
        p.started.filter(|_| ours).map(|started| started + usual)
    }

    /// True when units wait behind its running one, not yet recalled.
    fn holds_units_behind(&self) -> bool {
        !self.killed
            && self.in_flight.len() >= 2
            && self.in_flight.iter().skip(1).any(|u| !u.recalled)
    }

    fn served(&mut self, now: Instant) {
        let took = now.saturating_duration_since(self.serving_since);
        self.per_task = Some(match self.per_task {
            Some(avg) => (avg * 3 + took) / 4,
            None => took,
        });
        self.serving_since = now;
        self.long_task = false;
    }

    fn position(&self, id: TaskId) -> Option<usize> {
        self.in_flight.iter().position(|u| u.id == id)
    }
}

/// The whole state of a process pool's parent.
pub(crate) struct Scheduler {
    pub(crate) rules: Rules,
    queue: VecDeque<Unit>,
    pub(crate) workers: HashMap<WorkerId, Worker>,
    /// The current worker of each slot; `None` while one is being started.
    pub(crate) slots: Vec<Option<WorkerId>>,
    next_worker: WorkerId,
    crashes: VecDeque<Instant>,
    /// Starts that failed since a worker last became ready: slow failures
    /// (each up to the start timeout) would never fill the crash window.
    failed_starts: u32,
    /// The last of those failed starts' error (`None` while there are
    /// none): what a graceful stop tells the units it strands.
    last_failed_start: Option<TaskError>,
    failed: Option<String>,
    closing: bool,
    /// A graceful stop waits for the queued work ([`Scheduler::drain`]).
    draining: bool,
    /// The heartbeat check (see [`Scheduler::on_tick`]).
    liveness: Liveness,
    /// Recent time per task over the whole pool: decides whether tasks are
    /// packed onto awake workers ([`Self::packing`]).
    recent: Recent,
    /// How many workers a burst of tiny tasks keeps busy at most: the
    /// machine's cores.
    awake_cap: usize,
    /// Tasks are packed and either units wait on [`Self::awake_cap`] while
    /// an idle worker could take them, or a worker holds units behind the
    /// one it runs: the tick watches for a long task (see
    /// [`Scheduler::on_tick`]).
    watching: bool,
    /// The tick looks for a worker that stalls behind its running unit
    /// while another idles (see [`Scheduler::check_stalls`]).
    stall_watch: bool,
    /// The last dispatch left units queued: no worker could take the front
    /// one (see [`Scheduler::submit`]).
    blocked: bool,
}

/// The pool's recent time per task: replies' spans over the tasks they
/// settled, both summed with a decay per reply. Weighted by tasks, so the
/// last lone replies of a burst (one task, a whole round trip) do not
/// outweigh the replies of 64 before them.
#[derive(Default)]
struct Recent {
    /// Seconds of reply spans, decayed.
    span: f64,
    /// Tasks those replies settled, decayed.
    tasks: f64,
}

impl Recent {
    /// Each reply keeps this share of the sums before it.
    const KEEP: f64 = 0.75;

    fn add(&mut self, span: Duration, settled: u32) {
        self.span = self.span * Self::KEEP + span.as_secs_f64();
        self.tasks = self.tasks * Self::KEEP + f64::from(settled);
    }

    fn per_task(&self) -> Option<Duration> {
        (self.tasks > 0.0).then(|| Duration::from_secs_f64(self.span / self.tasks))
    }
}

/// When the parent checks workers' heartbeats.
#[derive(Default)]
struct Liveness {
    /// The last check asked to be run again (a worker held units, or went
    /// busy since the check before): a worker going busy need not wake the
    /// checker.
    ticking: bool,
    /// A worker went from idle to busy since the last check.
    went_busy: bool,
    /// When the last check ran.
    last: Option<Instant>,
}

impl Scheduler {
    pub(crate) fn new(rules: Rules) -> Self {
        Scheduler {
            slots: vec![None; rules.workers],
            rules,
            queue: VecDeque::new(),
            workers: HashMap::new(),
            next_worker: 0,
            crashes: VecDeque::new(),
            failed_starts: 0,
            last_failed_start: None,
            failed: None,
            closing: false,
            draining: false,
            liveness: Liveness::default(),
            recent: Recent::default(),
            awake_cap: std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
            watching: false,
            stall_watch: false,
            blocked: false,
        }
    }

    /// The cap of awake workers when tasks are to be packed, `None` when
    /// they are spread (least loaded first).
    ///
    /// Tasks are packed while the pool's recent task time is under
    /// [`PACK_BELOW`] and the pool has more workers than cores. A burst of
    /// tiny tasks spread one per worker wakes a sleeping process per task,
    /// and past the cores those processes only take turns on them: 16
    /// workers on 2 cores ran a 10k no-op burst at a tenth of the
    /// throughput of 2 (3.5 context switches per task against 0.2). Packed,
    /// the queue goes to workers already awake that have pipeline room,
    /// and an idle one is woken only while fewer than `awake_cap` are
    /// awake (a worker stalled on a long task does not count, so a slow
    /// task never holds the rest back). Longer tasks spread over every
    /// worker as before: there the work, not the wake-up, is the cost.
    fn packing(&self) -> Option<usize> {
        let tiny = || self.recent.per_task().is_some_and(|t| t < PACK_BELOW);
        (self.rules.adaptive && self.rules.workers > self.awake_cap && tiny())
            .then_some(self.awake_cap)
    }

    /// A fresh worker id for a process about to be started.
    pub(crate) fn next_worker_id(&mut self) -> WorkerId {
        self.next_worker += 1;
        self.next_worker
    }

    /// True when nothing is queued or in flight.
    #[cfg(test)]
    pub(crate) fn is_idle(&self) -> bool {
        self.queue.is_empty() && self.workers.values().all(|w| w.in_flight.is_empty())
    }

    /// Why new work is refused, if it is.
    fn refusal(&self) -> Option<TaskError> {
        if self.closing {
            return Some(ErrorKind::ShutDown.into());
        }
        self.failed.as_ref().map(|reason| {
            ErrorKind::PoolFailed {
                reason: reason.clone(),
            }
            .into()
        })
    }

    /// New units from a caller.
    ///
    /// # Errors
    /// `ShutDown` or `PoolFailed` when the pool takes no more work (then no
    /// unit was accepted).
    pub(crate) fn submit(&mut self, units: Vec<Unit>, now: Instant) -> Result<Effects, TaskError> {
        if let Some(e) = self.refusal() {
            return Err(e);
        }
        let blocked = self.blocked && !self.queue.is_empty();
        self.queue.extend(units);
        if blocked {
            // No worker could take the front unit, and nothing that could
            // change that has happened since (every such event
            // dispatches): units added behind it change nothing. A burst
            // that outruns its workers would otherwise scan every worker
            // once per task.
            return Ok(Effects::default());
        }
        Ok(self.dispatch(now))
    }

    /// Worker `w` (started for `slot`) is ready for work.
    pub(crate) fn on_ready(&mut self, w: WorkerId, slot: usize, now: Instant) -> Effects {
        self.failed_starts = 0;
        self.last_failed_start = None;
        let mut worker = Worker::new(slot, now);
        let mut fx = Effects::default();
        if self.closing || self.failed.is_some() || self.slots[slot].is_some() {
            worker.retiring = true;
            worker.outgoing.push(Out::Shutdown);
            fx.touch(w);
        } else {
            self.slots[slot] = Some(w);
        }
        self.workers.insert(w, worker);
        fx.merge(self.dispatch(now));
        fx
    }

    /// A worker for `slot` could not be started (or died before it was
    /// ready): counts toward the restart limits; starts another unless the
    /// pool gave up.
    ///
    /// A start ended by an outside signal (`SIGKILL`, `SIGTERM`: someone
    /// killed the process; see [`outside_kill`]) counts only toward the
    /// failed starts in a row, which any good start resets: a kill storm
    /// that also hits starting workers never fails the pool while workers
    /// still start between the kills, yet a start that can never succeed
    /// (every one killed, or crashing, or exiting) still does.
    pub(crate) fn on_start_failed(
        &mut self,
        slot: usize,
        why: &TaskError,
        now: Instant,
    ) -> Effects {
        let mut fx = Effects::default();
        self.failed_starts += 1;
        self.last_failed_start = Some(why.clone());
        if self.failed_starts > self.rules.max_crashes {
            self.fail(
                format!(
                    "{} worker starts failed in a row, the last: {}",
                    self.failed_starts,
                    causes(why)
                ),
                &mut fx,
            );
        }
        if !outside_kill(why) {
            self.count_crash(now, &mut fx, || {
                format!("workers could not be started, the last: {}", causes(why))
            });
        }
        if self.draining {
            self.fail_stranded(why, &mut fx);
        }
        if !self.closing && self.failed.is_none() && self.slots[slot].is_none() {
            // Not at once: when good and failed starts alternate, the
            // failed starts in a row never add up, and only a delay keeps
            // such a slot from spinning.
            fx.start_later.push(slot);
        }
        fx
    }

    /// A graceful stop begins: it waits for the queued work. Work that no
    /// worker is left to run while starts fail (a restart limit that never
    /// runs out, starts that always fail) would keep that wait going for
    /// ever: it fails now if a start has failed since the last good one,
    /// or at the next failed start otherwise.
    pub(crate) fn drain(&mut self) -> Effects {
        let mut fx = Effects::default();
        self.draining = true;
        if let Some(why) = self.last_failed_start.clone() {
            self.fail_stranded(&why, &mut fx);
        }
        fx
    }

    /// While draining, with no worker ready: fails the queued units (see
    /// [`Scheduler::drain`]).
    fn fail_stranded(&mut self, why: &TaskError, fx: &mut Effects) {
        if self.slots.iter().any(Option::is_some) || self.queue.is_empty() {
            return;
        }
        let e: TaskError = ErrorKind::PoolFailed {
            reason: format!(
                "the pool is shutting down and no worker could be started to run this task: {}",
                causes(why)
            ),
        }
        .into();
        fx.fail_all(self.queue.drain(..), &e);
    }

    /// Sends queued units to workers with room, least loaded first.
    pub(crate) fn dispatch(&mut self, now: Instant) -> Effects {
        let mut fx = Effects::default();
        let pack = self.packing();
        let mut held = false;
        while let Some(front) = self.queue.front() {
            // A suspect (it was running in a worker death) goes alone to an
            // idle worker, and units whose result a death took go with
            // their like only; that worker then takes nothing else until
            // they are done.
            let tainted = front.taint() != Taint::Fresh;
            let live = || {
                self.slots
                    .iter()
                    .flatten()
                    .filter_map(|id| self.workers.get(id).map(|w| (*id, w)))
            };
            let fit = |w: &Worker| {
                w.takes_work(&self.rules)
                    && !w.holds_tainted()
                    && (!tainted || w.in_flight.is_empty())
            };
            let best = match pack {
                None => live()
                    .filter(|(_, w)| fit(w))
                    .min_by_key(|(id, w)| (w.stalled(now), w.in_flight.len(), *id))
                    .map(|(id, _)| id),
                Some(cap) => {
                    // Awake first, then an idle worker while fewer than
                    // `cap` are awake, one running a long task last. A
                    // tainted unit needs an idle worker: it is not held.
                    // (Not `stalled`: that times from the dispatch, and a
                    // loaded host's wake-up alone passes it, so every
                    // worker would be woken again.) One pass over the
                    // workers, as this runs per unit of a burst: the best
                    // of each kind, and how many are awake.
                    let mut awake = 0;
                    let mut best: [Option<(usize, WorkerId)>; 3] = [None; 3];
                    for (id, w) in live() {
                        let kind = match (w.in_flight.is_empty(), w.long_task) {
                            (false, false) => 0,
                            (true, _) => 1,
                            (false, true) => 2,
                        };
                        awake += usize::from(kind == 0);
                        let key = (w.in_flight.len(), id);
                        if fit(w) && best[kind].is_none_or(|k| key < k) {
                            best[kind] = Some(key);
                        }
                    }
                    let may_wake = tainted || awake < cap;
                    let [awake_best, idle, long] = best;
                    let best = awake_best.or(if may_wake { idle.or(long) } else { None });
                    held = best.is_none() && idle.is_some();
                    best.map(|(_, id)| id)
                }
            };
            let Some(wid) = best else { break };
            let mut unit = self.queue.pop_front().expect("queue is not empty");
            if !unit.sink.begin() {
                continue; // cancelled while queued
            }
            let w = self.workers.get_mut(&wid).expect("chosen worker exists");
            if w.in_flight.is_empty() {
                w.serving_since = now;
                w.last_change = now;
                fx.arm |= self.rules.timeout.is_some();
                if self.rules.unresponsive.is_some() {
                    // While the checker ticks, it sees this worker at its
                    // next tick: no wake-up per task for a pool at work.
                    fx.arm |= !self.liveness.ticking;
                    self.liveness.ticking = true;
                    self.liveness.went_busy = true;
                }
            }
            w.runs += 1;
            w.open_groups += 1;
            unit.group = w.runs;
            // A suspect's group is empty (`group_with`).
            let group = self.rules.group_with(&unit, &mut self.queue);
            if group.is_empty() && !tainted && w.join_last_frame(&unit) {
                // Travels in the run frame before it: one frame (one
                // header, one allocation, one worker wake-up) for all the
                // small tasks a worker is given at once.
                unit.seq = w.frames;
                w.in_flight.push_back(unit);
            } else if group.is_empty() {
                w.frames += 1;
                unit.seq = w.frames;
                w.outgoing.push(Out::Run {
                    id: unit.id,
                    name: unit.name,
                    input: unit.input.clone(),
                });
                for bytes in &unit.down {
                    w.outgoing.push(Out::Deliver {
                        id: unit.id,
                        bytes: bytes.clone(),
                    });
                }
                if unit.caller_gone {
                    w.outgoing.push(Out::CallerGone { id: unit.id });
                }
                w.in_flight.push_back(unit);
            } else {
                w.frames += 1;
                unit.seq = w.frames;
                let mut units = Vec::with_capacity(group.len() + 1);
                units.push((unit.id, unit.input.clone()));
                units.extend(group.iter().map(|u| (u.id, u.input.clone())));
                let bytes = units.iter().map(|(_, b)| b.as_slice().len()).sum();
                w.outgoing.push(Out::RunGroup {
                    name: unit.name,
                    units,
                    bytes,
                });
                w.in_flight.push_back(unit);
                for mut u in group {
                    u.seq = w.frames;
                    u.group = w.runs;
                    w.sent += 1;
                    w.in_flight.push_back(u);
                }
            }
            w.sent += 1;
            fx.touch(wid);
            if self.rules.max_tasks.is_some_and(|m| w.sent >= m) {
                // Recycle: the worker finishes what it holds, then exits;
                // its replacement starts now.
                w.retiring = true;
                w.outgoing.push(Out::Shutdown);
                let slot = w.slot;
                self.slots[slot] = None;
                if !self.closing {
                    fx.start.push(slot);
                }
            }
        }
        // While packed, the tick looks for long tasks that hold units, in
        // the queue or behind them; one wake-up when that starts, then it
        // keeps ticking (`on_tick`).
        let watch = pack.is_some()
            && (held
                || self.queue.is_empty()
                    && self
                        .workers
                        .values()
                        .any(|w| !w.killed && !w.long_task && w.in_flight.len() >= 2));
        fx.arm |= watch && !self.watching;
        self.watching = watch;
        self.blocked = !self.queue.is_empty();
        self.recall_from_stalled(now, pack.is_some(), &mut fx);
        // Not packed: a worker that will stall behind its running unit
        // while another idles is recalled at that moment by the tick, as
        // no event may come then (the other workers are done).
        let stall_watch = pack.is_none() && self.may_stall();
        fx.arm |= stall_watch && !self.stall_watch;
        self.stall_watch |= stall_watch;
        fx
    }

    /// True while a worker idles with nothing queued and another holds
    /// units behind its running one: the tick then watches that unit
    /// ([`Scheduler::check_stalls`]).
    fn may_stall(&self) -> bool {
        let rules = &self.rules;
        self.queue.is_empty()
            && self
                .workers
                .values()
                .any(|w| w.in_flight.is_empty() && w.takes_work(rules))
            && self.workers.values().any(Worker::holds_units_behind)
    }

    /// The pool's usual task time, as a worker's (`Worker::usual`), from
    /// its recent replies.
    fn pool_usual(&self) -> Option<Duration> {
        self.recent.per_task().map(|t| (t * 4).max(STALL_AFTER))
    }

    /// The tick's side of [`Scheduler::may_stall`]: a unit that has run
    /// (timed from its start, in the progress word) past its worker's
    /// usual time or the pool's, whichever is shorter, is long, and what
    /// waits behind it is recalled. The pool's time counts because a
    /// worker that ran a long task before has a long usual time of its
    /// own: the units behind its next long task would wait for all of it
    /// while the other workers, used to tiny tasks, idle. Returns when to
    /// look again.
    fn check_stalls(
        &mut self,
        now: Instant,
        probe: &dyn Probe,
        fx: &mut Effects,
    ) -> Option<Instant> {
        if !self.stall_watch || self.watching || !self.may_stall() {
            self.stall_watch = false;
            return None;
        }
        let pool_usual = self.pool_usual();
        let mut next: Option<Instant> = None;
        for (wid, w) in self.workers.iter_mut() {
            if w.killed || w.long_task || !w.holds_units_behind() {
                continue;
            }
            let at = match w.long_after(&probe.progress(*wid), pool_usual) {
                Some(at) if now > at => {
                    w.long_task = true;
                    continue;
                }
                Some(at) => at,
                // Not begun yet (or between units): look again soon.
                None => now + STALL_AFTER,
            };
            let at = at.max(now) + Duration::from_micros(100);
            sooner(&mut next, at);
        }
        self.recall_from_stalled(now, false, fx);
        self.stall_watch = next.is_some();
        next
    }

    /// With nothing queued and a worker idle, asks stalled workers to give
    /// back the units waiting behind their long task. `packed`: tasks are
    /// packed (see [`Self::packing`]), so idle workers are the rule, not a
    /// sign of a long task; only a worker whose running task is seen long
    /// by the tick ([`Worker::long_task`]) is asked. (Timed from the
    /// dispatch, as `stalled` is, a loaded host's wake-up alone sent one
    /// recall per 20 packed tiny tasks.)
    fn recall_from_stalled(&mut self, now: Instant, packed: bool, fx: &mut Effects) {
        let rules = &self.rules;
        if !self.queue.is_empty()
            || !self
                .workers
                .values()
                .any(|w| w.in_flight.is_empty() && w.takes_work(rules))
        {
            return;
        }
        for (id, w) in self.workers.iter_mut() {
            // A task a tick saw run long saw run long stays long until its
            // worker replies, packed or not.
            let long = w.long_task || !packed && w.stalled(now);
            if w.killed || w.in_flight.len() < 2 || !long {
                continue;
            }
            let ids: Vec<TaskId> = w
                .in_flight
                .iter_mut()
                .skip(1)
                .filter(|u| !u.recalled)
                .map(|u| {
                    u.recalled = true;
                    u.id
                })
                .collect();
            if !ids.is_empty() {
                w.outgoing.push(Out::Recall { ids });
                fx.touched.push(*id);
            }
        }
    }

    /// Worker `w` finished unit `id` (`result` carries the output body).
    #[cfg(test)]
    pub(crate) fn on_done(
        &mut self,
        w: WorkerId,
        id: TaskId,
        result: Result<Body, TaskError>,
        now: Instant,
    ) -> Effects {
        self.on_results(w, vec![(id, result)], now)
    }

    /// Worker `w` finished these units (each result carries its output
    /// body); what was queued then goes out, once for them all.
    pub(crate) fn on_results(
        &mut self,
        w: WorkerId,
        results: Vec<(TaskId, Result<Body, TaskError>)>,
        now: Instant,
    ) -> Effects {
        let mut fx = Effects::default();
        if let Some(worker) = self.workers.get_mut(&w) {
            let since = worker.serving_since;
            let mut settled: u32 = 0;
            for (id, result) in results {
                let Some(i) = worker.position(id) else {
                    continue;
                };
                if i == 0 {
                    worker.served(now);
                }
                settled += 1;
                let unit = worker.take(i).expect("position is valid");
                fx.finish.push((unit.sink, result));
            }
            // A worker sends its results together when it runs out of
            // work: the span over the count is the time per task (the
            // per-worker average sees the first of them carry it all).
            if settled > 0 {
                self.recent
                    .add(now.saturating_duration_since(since), settled);
            }
        }
        fx.merge(self.dispatch(now));
        fx
    }

    /// Frames for units `ids` on worker `w` could not be made or sent
    /// (out of descriptors, say): each fails with `error`, and a worker
    /// that already runs one of them is stopped (its caller has its answer).
    pub(crate) fn on_unsent(
        &mut self,
        w: WorkerId,
        ids: &[TaskId],
        error: &TaskError,
        probe: &dyn Probe,
        now: Instant,
    ) -> Effects {
        let mut fx = Effects::default();
        let Some(worker) = self.workers.get_mut(&w) else {
            return fx;
        };
        let running = probe.progress(w).running;
        for id in ids {
            let Some(i) = worker.position(*id) else {
                continue;
            };
            let unit = worker.take(i).expect("position is valid");
            worker.sent = worker.sent.saturating_sub(1);
            if unit.id.0 == running && !worker.killed {
                worker.killed = true;
                fx.kill.push(w);
            } else {
                worker.outgoing.push(Out::Cancel { id: unit.id });
                fx.touch(w);
            }
            fx.finish.push((unit.sink, Err(error.clone())));
        }
        // Their places are free: nothing else would fill them.
        fx.merge(self.dispatch(now));
        fx
    }

    /// A message from unit `id` on worker `w` for its caller.
    pub(crate) fn message_sink(&self, w: WorkerId, id: TaskId) -> Option<Completion> {
        let worker = self.workers.get(&w)?;
        let unit = &worker.in_flight[worker.position(id)?];
        match &unit.sink {
            Sink::Single(c) => Some(c.clone()),
            Sink::Item(..) => None,
        }
    }

    /// Worker `w` gave back units it had not started.
    pub(crate) fn on_recalled(&mut self, w: WorkerId, ids: &[TaskId], now: Instant) -> Effects {
        let mut back = Vec::new();
        if let Some(worker) = self.workers.get_mut(&w) {
            for id in ids {
                if let Some(mut unit) = worker.position(*id).and_then(|i| worker.take(i)) {
                    unit.recalled = false;
                    worker.sent = worker.sent.saturating_sub(1);
                    if unit.sink.requeue() {
                        back.push(unit);
                    }
                }
            }
        }
        let mut fx = Effects::default();
        self.put_back(back, &mut fx);
        fx.merge(self.dispatch(now));
        fx
    }

    /// Worker `w` sent something the parent cannot read: it is ended, and
    /// its death blames the unit it was running (or else the one that
    /// ended last), which fails with `error` once its retries are spent.
    pub(crate) fn on_bad_frame(
        &mut self,
        w: WorkerId,
        error: TaskError,
        probe: &dyn Probe,
    ) -> Effects {
        let mut fx = Effects::default();
        let Some(worker) = self.workers.get_mut(&w) else {
            return fx;
        };
        if worker.killed {
            return fx;
        }
        // The unit that runs, or else the one that ended last (the frame
        // may be its result); none when neither is in flight.
        let p = probe.progress(w);
        let target = [p.running, p.last_ended]
            .into_iter()
            .filter(|id| *id != 0)
            .find(|id| worker.in_flight.iter().any(|u| u.id.0 == *id));
        // Settled when the worker's exit is seen (`on_exit`): the kill is
        // SIGKILL, so that is bounded.
        worker.bad_frame = Some((target, error));
        worker.killed = true;
        fx.kill.push(w);
        fx
    }

    /// Worker `w`'s process ended with `exit`; `progress` is its progress
    /// word as it died.
    pub(crate) fn on_exit(
        &mut self,
        w: WorkerId,
        exit: WorkerExit,
        progress: Progress,
        now: Instant,
    ) -> Effects {
        let mut fx = Effects::default();
        let Some(mut worker) = self.workers.remove(&w) else {
            return fx;
        };
        let slot = worker.slot;
        let current = self.slots[slot] == Some(w);
        if current {
            self.slots[slot] = None;
        }
        let bad_frame = worker.bad_frame.take();
        // Killed for showing no sign of life: settled as a crash (the pool
        // cannot know what the worker was doing), but not the worker's fault.
        // Only if our kill ended it: a worker that died of its own accord
        // while it looked stopped (a crash whose core dump took longer than
        // the bound) is an ordinary crash, and counts toward the limit.
        let unresponsive = worker
            .unresponsive
            .filter(|_| exit == WorkerExit::Signal(libc::SIGKILL));
        let ours = (worker.killed && worker.unresponsive.is_none())
            || exit == WorkerExit::Code(sys::EXIT_CANCELLED);
        let clean = worker.retiring && exit == WorkerExit::Code(0);
        let blame = if let Some((target, _)) = &bad_frame {
            *target
        } else if ours || clean {
            None
        } else if progress.running != 0 {
            Some(progress.running)
        } else if exit == WorkerExit::MemoryLimit
            || exit == WorkerExit::Code(sys::EXIT_UNREADABLE_INPUT)
        {
            // It died receiving a task (mapping its input, say): the first
            // task it had not received yet is the one.
            worker
                .in_flight
                .iter()
                .find(|u| u.seq == progress.received + 1)
                .map(|u| u.id.0)
        } else if worker
            .in_flight
            .iter()
            .any(|u| u.id.0 == progress.last_ended)
        {
            // It died after a unit ended and before that unit's result
            // reached us (the unit closed the channel, say): that unit.
            // Without this, such a unit would be sent again for ever.
            Some(progress.last_ended)
        } else {
            None
        };
        // The worker takes units in the order they were sent, one at a
        // time: those before the one it runs have run, and so has the one
        // that ended last when the one it runs is no longer ours (timed
        // out or cancelled). Their results, held back to leave with
        // others, died with it.
        let position = |id: u64| {
            (id != 0)
                .then(|| worker.in_flight.iter().position(|u| u.id.0 == id))
                .flatten()
        };
        let ran_through = match position(progress.running) {
            // Killed for a bad frame while another unit ran: that one
            // started too, and the kill took its run.
            Some(i) if bad_frame.is_some() && Some(progress.running) != blame => Some(i),
            Some(i) => i.checked_sub(1),
            None => position(progress.last_ended),
        };
        let mut back = Vec::new();
        let mut failed_work = false;
        for (i, mut unit) in worker.in_flight.into_iter().enumerate() {
            if unit.sink.is_done() {
                continue;
            }
            unit.recalled = false;
            if ran_through.is_some_and(|last| i <= last) && Some(unit.id.0) != blame {
                if bad_frame.is_some() {
                    // Any unit that ran since the last frame read may have
                    // written the bad one: each is a suspect and runs
                    // again alone, where a writer of junk is caught.
                    unit.deaths += 1;
                } else {
                    unit.lost_runs += 1;
                }
                if unit.deaths + unit.lost_runs > self.rules.retries {
                    fx.finish.push((
                        unit.sink,
                        Err(TaskError::with_source(
                            ErrorKind::WorkerLost(exit),
                            ResultLost {
                                bad_frame: bad_frame.is_some(),
                            },
                        )),
                    ));
                    continue;
                }
            }
            if Some(unit.id.0) == blame {
                unit.deaths += 1;
                if unit.deaths + unit.lost_runs > self.rules.retries {
                    failed_work = true;
                    // The worker ended itself on a broken channel (a
                    // worker that outlives its channel is stopped through
                    // `on_bad_frame` instead, with the same cause).
                    let broke = exit == WorkerExit::Code(sys::EXIT_CHANNEL_BROKE);
                    let error = match (&bad_frame, unresponsive) {
                        (Some((_, e)), _) => e.clone(),
                        (None, Some(after)) => {
                            unresponsive_lost(exit, after, unit.deaths, self.rules.retries)
                        }
                        (None, None) => lost(exit, unit.deaths, self.rules.retries, broke),
                    };
                    fx.finish.push((unit.sink, Err(error)));
                    continue;
                }
            }
            if unit.sink.requeue() {
                back.push(unit);
            }
        }
        // An unresponsive worker was stopped from outside (or froze): like
        // an outside kill, it says nothing about the task and never counts
        // toward restart intensity.
        if failed_work && unresponsive.is_none() {
            self.count_crash(now, &mut fx, || {
                format!("too many tasks ended their workers, the last {exit}")
            });
        }
        self.put_back(back, &mut fx);
        if current && !self.closing && self.failed.is_none() {
            fx.start.push(slot);
        }
        fx.merge(self.dispatch(now));
        fx
    }

    /// Puts units back at the front of the queue, in order; fails them
    /// instead when the pool gave up.
    fn put_back(&mut self, units: Vec<Unit>, fx: &mut Effects) {
        // A closing pool starts no worker: nothing queued now would run.
        if let Some(e) = self.refusal() {
            fx.fail_all(units, &e);
            return;
        }
        for u in units.into_iter().rev() {
            self.queue.push_front(u);
        }
    }

    /// Counts a crash; past the restart limit the pool fails.
    fn count_crash(&mut self, now: Instant, fx: &mut Effects, why: impl FnOnce() -> String) {
        self.crashes.push_back(now);
        while self
            .crashes
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.rules.crash_window)
        {
            self.crashes.pop_front();
        }
        if self.crashes.len() > self.rules.max_crashes as usize && self.failed.is_none() {
            let reason = format!(
                "more than {} worker failures within {:?}: {}",
                self.rules.max_crashes,
                self.rules.crash_window,
                why()
            );
            self.fail(reason, fx);
        }
    }

    /// The pool gives up: everything queued fails now, and everything in
    /// flight fails when its worker ends (see [`Self::put_back`]). Live
    /// workers finish what they hold, then exit.
    pub(crate) fn fail(&mut self, reason: String, fx: &mut Effects) {
        if self.failed.is_some() {
            return;
        }
        let e: TaskError = ErrorKind::PoolFailed {
            reason: reason.clone(),
        }
        .into();
        fx.fail_all(self.queue.drain(..), &e);
        self.failed = Some(reason);
        for (id, w) in self.workers.iter_mut() {
            if !w.retiring {
                w.retiring = true;
                w.outgoing.push(Out::Shutdown);
                fx.touch(*id);
            }
        }
        self.slots.iter_mut().for_each(|s| *s = None);
    }

    /// The pool failed in a way that leaves nothing to wait for (its
    /// result router ended): everything fails now and every worker is
    /// killed.
    pub(crate) fn fail_now(&mut self, reason: String) -> Effects {
        let mut fx = Effects::default();
        self.fail(reason.clone(), &mut fx);
        let e: TaskError = ErrorKind::PoolFailed { reason }.into();
        for (id, w) in self.workers.iter_mut() {
            fx.fail_all(w.take_all(), &e);
            if !w.killed {
                w.killed = true;
                fx.kill.push(*id);
            }
        }
        fx
    }

    /// The caller sent task `id` a message.
    pub(crate) fn deliver(&mut self, id: TaskId, bytes: Vec<u8>) -> Effects {
        let mut fx = Effects::default();
        if let Some(u) = self.queue.iter_mut().find(|u| u.id == id) {
            u.down.push(bytes);
            return fx;
        }
        for (wid, w) in self.workers.iter_mut() {
            if let Some(i) = w.position(id) {
                w.in_flight[i].down.push(bytes.clone());
                w.outgoing.push(Out::Deliver { id, bytes });
                fx.touch(*wid);
                break;
            }
        }
        fx
    }

    /// The caller of task `id` dropped its handle.
    pub(crate) fn caller_gone(&mut self, id: TaskId) -> Effects {
        let mut fx = Effects::default();
        if let Some(u) = self.queue.iter_mut().find(|u| u.id == id) {
            u.caller_gone = true;
            return fx;
        }
        for (wid, w) in self.workers.iter_mut() {
            if let Some(i) = w.position(id) {
                w.in_flight[i].caller_gone = true;
                w.outgoing.push(Out::CallerGone { id });
                fx.touch(*wid);
                break;
            }
        }
        fx
    }

    /// The caller cancelled handle `handle` (its cell is already done):
    /// a running unit's worker is killed, units sent ahead are dropped by
    /// their worker, queued ones are dropped at dispatch.
    pub(crate) fn cancel(&mut self, handle: TaskId, probe: &dyn Probe, now: Instant) -> Effects {
        let mut fx = Effects::default();
        for (wid, w) in self.workers.iter_mut() {
            if w.killed {
                continue;
            }
            let running = probe.progress(*wid).running;
            let mut i = 0;
            while i < w.in_flight.len() {
                if w.in_flight[i].sink.handle_id() != handle {
                    i += 1;
                    continue;
                }
                let unit = w.take(i).expect("index is valid");
                if unit.id.0 == running {
                    w.killed = true;
                    fx.kill.push(*wid);
                } else {
                    // If it starts before this arrives, the worker ends
                    // itself (EXIT_CANCELLED), which counts as ours.
                    w.outgoing.push(Out::Cancel { id: unit.id });
                    fx.touch(*wid);
                }
                w.sent = w.sent.saturating_sub(1);
            }
        }
        fx.merge(self.dispatch(now));
        fx
    }

    /// Checks running units against the timeout, and workers holding units
    /// against the heartbeat bound. Returns the effects and when to check
    /// again (`None`: nothing to watch).
    pub(crate) fn on_tick(
        &mut self,
        now: Instant,
        probe: &dyn Probe,
    ) -> (Effects, Option<Instant>) {
        let mut fx = Effects::default();
        let next = self.check_timeouts(now, probe, &mut fx);
        let beat = self.check_heartbeats(now, probe, &mut fx);
        let packed = self.check_packed(now, probe, &mut fx);
        let stall = self.check_stalls(now, probe, &mut fx);
        let next = [next, beat, packed, stall].into_iter().flatten().min();
        (fx, next)
    }

    /// While tasks are packed and units wait (see [`Self::packing`] and
    /// `watching`): a busy worker whose running task (as its progress word
    /// says) has run longer than its usual stall bound is marked as
    /// running a long task, and packing ends until replies show tasks tiny
    /// again: the dispatch that follows spreads the queue over idle
    /// workers and recalls the units behind that task. Without this,
    /// workers held up together by long tasks would hold the queue until
    /// one of them replied. Returns when to look again.
    fn check_packed(
        &mut self,
        now: Instant,
        probe: &dyn Probe,
        fx: &mut Effects,
    ) -> Option<Instant> {
        if !self.watching {
            return None;
        }
        let mut marked = false;
        let pool_usual = self.pool_usual();
        for (wid, w) in self.workers.iter_mut() {
            if w.killed || w.long_task || w.in_flight.is_empty() {
                continue;
            }
            if w.long_after(&probe.progress(*wid), pool_usual)
                .is_some_and(|at| now > at)
            {
                w.long_task = true;
                marked = true;
            }
        }
        if marked {
            // The pool's task time said tiny, and a task says otherwise:
            // tasks spread again until replies show them tiny. Else a
            // burst of long tasks after tiny ones (its units all packed
            // onto one worker) would move on one worker per tick, and
            // the estimate, weighted by the tiny ones, would take several
            // long replies to turn.
            self.recent = Recent::default();
            fx.merge(self.dispatch(now));
        }
        self.watching.then_some(now + HELD_CHECK)
    }

    /// Workers holding units whose heartbeat has not moved for
    /// `unresponsive` (as seen by these checks) are killed; their death is
    /// settled like a crash ([`Worker::unresponsive`]). Returns when to
    /// check again: every quarter of the bound while a worker holds units.
    ///
    /// A check that runs much later than planned (the parent was stopped,
    /// by `Ctrl-Z` say, which does not reach the workers: each leads its
    /// own process group; or it was starved) saw nothing in between: what
    /// it saw before proves nothing, so every worker's staleness starts
    /// again from now. Without that, `Ctrl-Z` and `fg` of the program would
    /// kill every busy worker.
    fn check_heartbeats(
        &mut self,
        now: Instant,
        probe: &dyn Probe,
        fx: &mut Effects,
    ) -> Option<Instant> {
        let bound = self.rules.unresponsive?;
        let tick = bound / 4;
        let lv = &mut self.liveness;
        // Checks run at most `tick` apart while ticking; twice that is
        // still below the bound minus a heartbeat (bound >= 1 s, beats
        // every 200 ms), so a pause shorter than this cannot add up to a
        // kill either.
        let forgive = lv.ticking
            && lv
                .last
                .is_some_and(|t| now.saturating_duration_since(t) > tick * 2);
        lv.last = Some(now);
        let mut busy = std::mem::take(&mut lv.went_busy);
        let mut next = now + tick;
        for (wid, w) in self.workers.iter_mut() {
            if w.killed || w.in_flight.is_empty() {
                w.beat_seen = None;
                continue;
            }
            busy = true;
            let p = probe.progress(*wid);
            let mut seen = match w.beat_seen {
                Some((b, at)) if b == p.beat && !forgive => at,
                _ => now,
            };
            // A worker whose units have all run sleeps its heart, and its
            // results may wait here unread (the router held up by another
            // worker's message): silence then says nothing, unless the
            // process really cannot run (stopped after its last unit).
            if now.saturating_duration_since(seen) >= bound
                && w.ran_through(&p) == w.in_flight.len()
                && probe.can_run(*wid)
            {
                seen = now;
            }
            w.beat_seen = Some((p.beat, seen));
            if now.saturating_duration_since(seen) >= bound {
                w.killed = true;
                w.unresponsive = Some(bound);
                fx.kill.push(*wid);
            } else {
                next = next.min(seen + bound);
            }
        }
        lv.ticking = busy;
        busy.then_some(next)
    }

    /// Checks running units against the timeout; returns when to check
    /// again (`None`: no timeout pending).
    fn check_timeouts(
        &mut self,
        now: Instant,
        probe: &dyn Probe,
        fx: &mut Effects,
    ) -> Option<Instant> {
        let timeout = self.rules.timeout?;
        let mut next: Option<Instant> = None;
        for (wid, w) in self.workers.iter_mut() {
            if w.killed || w.in_flight.is_empty() {
                continue;
            }
            let p = probe.progress(*wid);
            if p.seq != w.last_seq {
                w.last_seq = p.seq;
                w.last_change = now;
            }
            let running = w.in_flight.iter().position(|u| u.id.0 == p.running);
            let (target, deadline) = match (running, p.started) {
                (Some(i), Some(started)) => (i, started + timeout),
                // Nothing of ours runs, yet work waits and the worker has
                // not moved (stopped, wedged): the first unit it has not
                // run has waited on it for the whole timeout. Units up to
                // the one it ended last have run: their results are on
                // the way (held, or not yet read here), not late. A worker
                // that can run is only slow to start it (a loaded
                // machine): the task has not started, so its timeout has
                // not either; the unresponsive check (when on) moves its
                // units elsewhere if it never does.
                _ => {
                    let ran = w.ran_through(&p);
                    if ran >= w.in_flight.len() {
                        continue;
                    }
                    let deadline = w.last_change + timeout;
                    if self.rules.unresponsive.is_some() && now >= deadline && probe.can_run(*wid) {
                        // Look again soon: once it starts, its own
                        // deadline counts.
                        let again = now + (timeout / 4).max(Duration::from_millis(1));
                        sooner(&mut next, again);
                        continue;
                    }
                    (ran, deadline)
                }
            };
            if now >= deadline {
                let unit = w.take(target).expect("index is valid");
                fx.finish.push((
                    unit.sink,
                    Err(ErrorKind::TimedOut { after: timeout }.into()),
                ));
                w.killed = true;
                fx.kill.push(*wid);
            } else {
                sooner(&mut next, deadline);
            }
        }
        next
    }

    /// Stops taking work. `now`: cancel everything queued and in flight and
    /// kill every worker; otherwise workers finish what they hold, then exit.
    pub(crate) fn close(&mut self, now: bool) -> Effects {
        let mut fx = Effects::default();
        self.closing = true;
        let cancelled: TaskError = ErrorKind::Cancelled.into();
        if now {
            fx.fail_all(self.queue.drain(..), &cancelled);
        }
        for (id, w) in self.workers.iter_mut() {
            if now {
                fx.fail_all(w.take_all(), &cancelled);
                if !w.killed {
                    w.killed = true;
                    fx.kill.push(*id);
                }
            } else if !w.retiring {
                w.retiring = true;
                w.outgoing.push(Out::Shutdown);
                fx.touch(*id);
            }
        }
        self.slots.iter_mut().for_each(|s| *s = None);
        fx
    }

    /// Marks worker `w` as killed by the pool itself (a stop that waited too
    /// long for it).
    pub(crate) fn mark_killed(&mut self, w: WorkerId) -> bool {
        match self.workers.get_mut(&w) {
            Some(worker) if !worker.killed => {
                worker.killed = true;
                true
            }
            _ => false,
        }
    }
}

/// Plans the next look (`next`) at `at`, unless one is planned sooner.
fn sooner(next: &mut Option<Instant>, at: Instant) {
    *next = Some(next.map_or(at, |n| n.min(at)));
}

/// The start failure `why` was an outside signal: the worker process was
/// killed (`SIGKILL`, `SIGTERM`) before it was ready. A crash (`SIGSEGV`,
/// `SIGABRT`), an exit code or a timeout is the worker's own failure.
fn outside_kill(why: &TaskError) -> bool {
    use std::error::Error as _;
    let exit = why
        .source()
        .and_then(|s| s.downcast_ref::<crate::error::SpawnError>())
        .and_then(crate::error::SpawnError::exit);
    matches!(
        exit,
        Some(WorkerExit::Signal(libc::SIGKILL | libc::SIGTERM))
    )
}

/// An error and its causes in one line: `could not start a worker: the
/// worker process ended before it connected (killed by SIGKILL (signal 9))`.
fn causes(e: &TaskError) -> String {
    let mut text = e.to_string();
    let mut next = std::error::Error::source(e);
    // Bounded: a cyclic chain must not loop.
    for _ in 0..16 {
        let Some(c) = next else { break };
        text.push_str(": ");
        text.push_str(&c.to_string());
        next = c.source();
    }
    text
}

/// The error of a unit that was running when its worker died for the last
/// time it may.
/// `broke`: its channel broke before it died (see [`ChannelBroke`]).
fn lost(exit: WorkerExit, deaths: u32, retries: u32, broke: bool) -> TaskError {
    let kind = ErrorKind::WorkerLost(exit);
    let quarantined = (retries > 0).then_some(Quarantined { deaths });
    match (broke, quarantined) {
        (true, quarantined) => TaskError::with_source(kind, ChannelBroke { quarantined }),
        (false, Some(q)) => TaskError::with_source(kind, q),
        (false, None) => TaskError::new(kind),
    }
}

/// The error of a unit that was running on a worker killed for showing no
/// heartbeat for `after`, when it may not run again.
fn unresponsive_lost(exit: WorkerExit, after: Duration, deaths: u32, retries: u32) -> TaskError {
    let quarantined = (retries > 0).then_some(Quarantined { deaths });
    TaskError::with_source(
        ErrorKind::WorkerLost(exit),
        Unresponsive { after, quarantined },
    )
}

/// The note on the error of a task whose worker stopped responding (its
/// heartbeat did not move; stopped or frozen) and was killed by the pool.
#[derive(Debug)]
struct Unresponsive {
    after: Duration,
    quarantined: Option<Quarantined>,
}

impl std::fmt::Display for Unresponsive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the worker stopped responding (no heartbeat for {:?}: stopped or frozen) and was \
             killed by the pool",
            self.after
        )
    }
}

impl std::error::Error for Unresponsive {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.quarantined
            .as_ref()
            .map(|q| q as &(dyn std::error::Error + 'static))
    }
}

/// The note on the error of a task whose worker's channel broke while the
/// worker lived: the death that followed was the worker's own exit on a
/// broken channel or the pool's doing, not an outside kill.
#[derive(Debug)]
pub(crate) struct ChannelBroke {
    quarantined: Option<Quarantined>,
}

impl ChannelBroke {
    /// The error of the task running on a worker that outlived its broken
    /// channel and is stopped by the pool.
    pub(crate) fn stopped() -> TaskError {
        TaskError::codec("message from a worker", ChannelBroke { quarantined: None })
    }
}

impl std::fmt::Display for ChannelBroke {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(
            "the worker's channel broke while it ran: it sent a frame that could not be read \
             (or its task closed the channel), and it was stopped",
        )
    }
}

impl std::error::Error for ChannelBroke {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.quarantined
            .as_ref()
            .map(|q| q as &(dyn std::error::Error + 'static))
    }
}

/// The note on a quarantined task's error.
#[derive(Debug)]
struct Quarantined {
    deaths: u32,
}

impl std::fmt::Display for Quarantined {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the task was running in {} worker deaths and is quarantined (never run again)",
            self.deaths
        )
    }
}

impl std::error::Error for Quarantined {}

/// Why a task that ran to its end failed anyway: its result was held back
/// in its worker and lost with it (or, `bad_frame`, its worker was stopped
/// for sending bytes that could not be read before its result was read),
/// and running it again would exceed its retries.
#[derive(Debug)]
struct ResultLost {
    bad_frame: bool,
}

impl std::fmt::Display for ResultLost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.bad_frame {
            f.write_str(
                "the task ran, but its worker sent bytes that could not be read before its \
                 result was read, and was stopped (this task or another that ran there may have \
                 written them); running it again would exceed its retries",
            )
        } else {
            f.write_str(
                "the task ran, but its worker ended before its result was sent, and running it \
                 again would exceed its retries",
            )
        }
    }
}

impl std::error::Error for ResultLost {}

#[cfg(test)]
mod tests;
