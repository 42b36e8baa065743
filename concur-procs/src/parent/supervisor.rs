//! The supervisor thread: starts workers, watches every live worker
//! process through its pidfd, reaps the ones that end, and checks task
//! deadlines.
//!
//! It is the only thread that forks workers, and it lives as long as the
//! pool: a worker's parent-death signal follows the thread that forked it.
//! A worker's death is seen from the process itself (its pidfd), not from
//! its channel closing, so a task that forked a child which holds the
//! channel open cannot hide its worker's death or hold up a stopping pool.
//! Connecting a started worker (handshake, initializer) runs on a short
//! helper thread per worker, so a slow start never delays deadlines; that
//! thread also hands the connected worker to the pool (router, scheduler),
//! and the supervisor then only watches it.
//!
//! A worker's replacement is started the moment its death is seen, before
//! its tasks are settled (see [`Spare`]): the fork and the handshake run
//! while the failed task's error travels to its caller.

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use concur_core::{TaskError, WorkerExit};
use ipc_channel::{IpcError, TryRecvError};

use super::outbox::Outbox;
use super::pidfd::{self, Waker};
use super::scheduler::WorkerId;
use super::shell::{IoProbe, Sender, Shared, WorkerIo};
use crate::error::SpawnError;
use crate::progress::ProgressWord;
use crate::shm::Body;
use crate::spawn::{self, Pending};
use crate::sys;
use crate::wire::{Down, Frame, Rx, Tx, Up};

/// How long a worker whose channel closed may take to exit before it is
/// killed (it is normally exiting already).
const EXIT_GRACE: Duration = Duration::from_secs(2);

/// How long a stopping pool waits for workers to exit before killing them.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// A worker that connected and is ready for work.
struct Connected {
    w: WorkerId,
    slot: usize,
    pid: u32,
    pidfd: Arc<OwnedFd>,
    tx: Tx,
    rx: Rx,
    progress: Arc<ProgressWord>,
}

/// A worker its connect thread handed to the pool itself, for the
/// supervisor to watch.
struct Registered {
    w: WorkerId,
    slot: usize,
    pid: u32,
    pidfd: Arc<OwnedFd>,
    /// Started as a spare (see [`Spare`]): not one of the pool's first.
    spare: bool,
}

#[derive(Default)]
struct Commands {
    start: Vec<usize>,
    /// Spares connected before they were asked for (see [`Claim`]).
    connected: Vec<Connected>,
    registered: Vec<Registered>,
    /// Spares their connect thread ended: `(slot, w)`.
    gone: Vec<(usize, WorkerId)>,
    failed: Vec<(usize, TaskError)>,
    /// Slots whose start failed: started again after their backoff.
    retry: Vec<usize>,
    closed: Vec<WorkerId>,
    stop: bool,
}

/// The handle other threads use to reach the supervisor thread.
pub(crate) struct Supervisor {
    waker: Waker,
    commands: Mutex<Commands>,
}

impl Supervisor {
    pub(crate) fn new() -> std::io::Result<Supervisor> {
        Ok(Supervisor {
            waker: Waker::new()?,
            commands: Mutex::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Commands> {
        self.commands.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts workers for `slots` now, and for `later` (slots whose start
    /// failed) after each slot's backoff (none: only look at deadlines
    /// again).
    pub(crate) fn start(&self, slots: &[usize], later: &[usize]) {
        let mut cmds = self.lock();
        cmds.start.extend_from_slice(slots);
        cmds.retry.extend_from_slice(later);
        drop(cmds);
        self.waker.wake();
    }

    /// Worker `w`'s channel closed.
    pub(crate) fn channel_closed(&self, w: WorkerId) {
        self.lock().closed.push(w);
        self.waker.wake();
    }

    /// The pool is stopping: reap every worker, then end.
    pub(crate) fn stop(&self) {
        self.lock().stop = true;
        self.waker.wake();
    }

    fn connected(&self, c: Connected) {
        self.lock().connected.push(c);
        self.waker.wake();
    }

    fn registered(&self, r: Registered) {
        self.lock().registered.push(r);
        self.waker.wake();
    }

    fn gone(&self, slot: usize, w: WorkerId) {
        self.lock().gone.push((slot, w));
        self.waker.wake();
    }

    fn failed(&self, slot: usize, e: TaskError) {
        self.lock().failed.push((slot, e));
        self.waker.wake();
    }
}

/// Hands a failed start of `slot` to the scheduler; the start it asks for
/// in its place (`Effects::start_later`) waits for the slot's backoff (the
/// supervisor's `later`).
fn start_failed(shared: &Shared, slot: usize, e: &TaskError) {
    shared.event(Sender::Threads, |c, now| {
        c.sched.on_start_failed(slot, e, now)
    });
}

/// How long an exited worker's channel may stay open (a child it forked
/// may hold it) before its tasks are settled anyway. While it is open,
/// the router may still be reading what the worker sent before it died:
/// settling after the channel closed keeps a task's last messages and
/// results ahead of its worker's death.
const SETTLE_GRACE: Duration = Duration::from_millis(200);

/// A live worker process, as the supervisor watches it.
struct Live {
    slot: usize,
    pid: u32,
    pidfd: Arc<OwnedFd>,
    /// Its channel closed; killed if it has not exited by then.
    grace: Option<Instant>,
    closed: bool,
    /// It exited (and was reaped); settled once its channel closed or at
    /// the deadline.
    exited: Option<(WorkerExit, Instant)>,
}

/// The wait before a slot's start after its first failed start in a row.
const BACKOFF_FIRST: Duration = Duration::from_millis(4);
/// The longest wait before a slot's start after failed ones.
const BACKOFF_CAP: Duration = Duration::from_millis(100);

pub(crate) fn run(shared: Arc<Shared>, ready: mpsc::Sender<Result<(), TaskError>>) {
    let sup = &shared.supervisor;
    // Dropped last (declared first): the fork server's spare outlives no
    // pool that could use it.
    let _spares =
        (shared.settings.spawn_mode == spawn::SpawnMode::Auto).then(crate::forkserver::hold);
    let slots = shared.lock().sched.rules.workers;
    let mut live: HashMap<WorkerId, Live> = HashMap::new();
    let mut starting = 0usize;
    // The first start: `build` waits for every slot.
    let mut initial = Some((slots, None::<TaskError>, ready));
    for slot in 0..slots {
        launch(&shared, slot, &mut starting, None);
    }
    let mut stopping = false;
    let mut poll_failed = false;
    let mut stop_deadline: Option<Instant> = None;
    // Workers started ahead of their slot's restart, by slot.
    let mut spares: HashMap<usize, Spare> = HashMap::new();
    // Channels closed of workers not yet heard of (see `closed`).
    let mut closed_early: HashSet<WorkerId> = HashSet::new();
    // Each slot's wait before its next start after a failed one, doubling
    // from [`BACKOFF_FIRST`] to [`BACKOFF_CAP`] until a worker of the slot
    // is ready; and the starts so put off (when, which slot).
    let mut backoff: HashMap<usize, Duration> = HashMap::new();
    let mut later: Vec<(Instant, usize)> = Vec::new();
    loop {
        let cmds = std::mem::take(&mut *sup.lock());
        let now = Instant::now();
        stopping |= cmds.stop;
        for r in cmds.registered {
            starting -= 1;
            // Its slot starts well again: the next failure waits little.
            backoff.remove(&r.slot);
            if matches!(spares.get(&r.slot), Some(Spare::Starting { w, .. }) if *w == r.w) {
                spares.remove(&r.slot);
            }
            live.insert(
                r.w,
                Live {
                    slot: r.slot,
                    pid: r.pid,
                    pidfd: r.pidfd,
                    grace: None,
                    // Its channel may have closed before this was heard.
                    closed: closed_early.remove(&r.w),
                    exited: None,
                },
            );
            if !r.spare {
                if let Some((left, _, _)) = &mut initial {
                    *left -= 1;
                }
            }
        }
        for (slot, w) in cmds.gone {
            starting -= 1;
            if let Some(Spare::Starting { w: s, claim }) = spares.get(&slot) {
                if *s == w {
                    // Asked for after its connect thread ended it: the
                    // slot still gets its worker.
                    let asked = lock_claim(claim).asked == Some(true);
                    spares.remove(&slot);
                    if asked && !stopping {
                        launch(&shared, slot, &mut starting, None);
                    }
                }
            }
        }
        // Spares whose connect thread found them not asked for (yet).
        for c in cmds.connected {
            starting -= 1;
            let asked = match spares.get(&c.slot) {
                Some(Spare::Starting { w, claim }) if *w == c.w => lock_claim(claim).asked,
                // Not a spare this supervisor knows: cannot happen; ended.
                _ => Some(false),
            };
            match asked {
                Some(true) if !stopping => {
                    spares.remove(&c.slot);
                    take_live(&shared, &mut live, c);
                }
                None if !stopping => {
                    // Kept until the scheduler asks for its slot, or
                    // given up.
                    spares.insert(c.slot, Spare::Parked(c));
                }
                _ => {
                    spares.remove(&c.slot);
                    discard(c);
                }
            }
        }
        for (slot, e) in cmds.failed {
            starting -= 1;
            match spares.remove(&slot) {
                // A spare that failed before it was asked for is
                // forgotten: the slot's start, when it comes, launches
                // another, and only that one counts.
                Some(Spare::Starting { claim, .. }) if lock_claim(&claim).asked != Some(true) => {
                    continue
                }
                Some(parked @ Spare::Parked(_)) => {
                    // Not this slot's spare that failed (it connected).
                    spares.insert(slot, parked);
                }
                Some(Spare::Starting { .. }) | None => {}
            }
            match &mut initial {
                Some((left, first, _)) => {
                    *left -= 1;
                    first.get_or_insert(e);
                }
                None => start_failed(&shared, slot, &e),
            }
        }
        if let Some((0, first, ready)) = &initial {
            let _ = ready.send(first.clone().map_or(Ok(()), Err));
            initial = None;
        }
        // Failed starts from this thread (above) come in the next
        // commands; their slots wait, each longer than its last.
        for slot in cmds
            .retry
            .into_iter()
            .chain(std::mem::take(&mut sup.lock().retry))
        {
            let wait = backoff.entry(slot).or_insert(BACKOFF_FIRST);
            later.retain(|(_, s)| *s != slot);
            later.push((now + *wait, slot));
            *wait = (*wait * 2).min(BACKOFF_CAP);
        }
        // Starts put off after a failure, now due (a start asked for
        // meanwhile takes their place).
        let mut starts = cmds.start;
        later.retain(|&(at, slot)| {
            if starts.contains(&slot) {
                false
            } else if now >= at {
                starts.push(slot);
                false
            } else {
                true
            }
        });
        if stopping {
            // Shutdown never waits for a backoff.
            later.clear();
            give_up_spares(&mut spares, |_| true);
        } else {
            for slot in starts {
                match spares.remove(&slot) {
                    Some(Spare::Parked(c)) => take_live(&shared, &mut live, c),
                    Some(Spare::Starting { w, claim }) => {
                        // Its connect thread hands it to the pool itself,
                        // or has handed it here already (then it is in
                        // the next commands).
                        lock_claim(&claim).asked = Some(true);
                        spares.insert(slot, Spare::Starting { w, claim });
                    }
                    None => {
                        launch(&shared, slot, &mut starting, None);
                    }
                }
            }
        }
        for w in cmds.closed {
            if let Some(l) = live.get_mut(&w) {
                l.closed = true;
                if l.exited.is_none() {
                    l.grace.get_or_insert(now + EXIT_GRACE);
                }
            } else {
                // Handed to the pool by its connect thread, and not yet
                // heard of here.
                closed_early.insert(w);
            }
        }
        let settle: Vec<(WorkerId, WorkerExit)> = live
            .iter()
            .filter_map(|(w, l)| match l.exited {
                Some((exit, by)) if l.closed || now >= by => Some((*w, exit)),
                _ => None,
            })
            .collect();
        for (w, exit) in settle {
            if let Some(l) = live.remove(&w) {
                settle_exit(&shared, w, exit);
                keep_spare_if_asked(sup, &mut spares, l.slot);
            }
        }
        // Deadlines: checked on every wake-up (cheap), so a worker that
        // just went busy is watched at once.
        let mut core = shared.lock();
        let (fx, next) = {
            let super::shell::Core { sched, io } = &mut *core;
            sched.on_tick(now, &IoProbe(io, now))
        };
        let next_tick = next;
        shared.carry_out(core, fx, Sender::Threads);

        if stopping && live.is_empty() && starting == 0 {
            return;
        }
        if stopping {
            let deadline = *stop_deadline.get_or_insert(now + STOP_GRACE);
            if now >= deadline {
                // Workers that do not exit when told are killed.
                let mut core = shared.lock();
                for (w, l) in &live {
                    core.sched.mark_killed(*w);
                    pidfd::kill(&l.pidfd);
                }
                drop(core);
                stop_deadline = Some(now + STOP_GRACE);
            }
        }
        for (w, l) in live.iter_mut() {
            if l.exited.is_none() && l.grace.is_some_and(|g| now >= g) {
                // Its channel broke (a frame the router could not read
                // closed it, or its task did) but it lives on: the pool
                // stops it, and the task it ran fails with that cause
                // rather than as a lost worker.
                shared.event(Sender::Threads, |c, now| {
                    let e = super::scheduler::ChannelBroke::stopped();
                    c.sched.on_bad_frame(*w, e, &IoProbe(&c.io, now))
                });
                pidfd::kill(&l.pidfd);
                l.grace = None;
            }
        }

        let wake_at = [
            next_tick,
            stopping.then_some(stop_deadline).flatten(),
            live.values().filter_map(|l| l.grace).min(),
            live.values()
                .filter_map(|l| l.exited.map(|(_, by)| by))
                .min(),
            later.iter().map(|(at, _)| *at).min(),
        ]
        .into_iter()
        .flatten()
        .min();
        let ids: Vec<WorkerId> = live
            .iter()
            .filter(|(_, l)| l.exited.is_none())
            .map(|(w, _)| *w)
            .collect();
        let fds: Vec<_> = ids.iter().map(|w| live[w].pidfd.as_raw_fd()).collect();
        let timeout = wake_at.map(|t| t.saturating_duration_since(Instant::now()));
        let readable = match pidfd::poll(&sup.waker, &fds, timeout) {
            Ok(r) => r,
            Err(e) => {
                // poll itself failed (no memory, more descriptors than the
                // limit): look at each worker directly, without reaping it,
                // and try poll again shortly. Deaths are still seen, so a
                // stopping pool still ends.
                if !poll_failed {
                    eprintln!("concur-procs: cannot poll worker processes ({e}); checking them every 10 ms");
                    poll_failed = true;
                }
                std::thread::sleep(Duration::from_millis(10));
                ids.iter()
                    .enumerate()
                    .filter(|(_, w)| pidfd::has_exited(live[w].pid))
                    .map(|(i, _)| i)
                    .collect()
            }
        };
        for i in readable {
            let w = ids[i];
            let Some(l) = live.get(&w) else { continue };
            // The worker is a zombie now: its group's number is still
            // ours. End what its tasks forked, then reap it.
            pidfd::kill_group(l.pid);
            let exit = sys::wait(l.pid).unwrap_or(WorkerExit::Unknown);
            let slot = l.slot;
            if !stopping && !spares.contains_key(&slot) && wants_spare(&shared, w, slot, exit) {
                let claim: ClaimCell = Arc::default();
                let spare = launch(&shared, slot, &mut starting, Some(claim.clone()));
                spares.insert(slot, Spare::Starting { w: spare, claim });
            }
            let Some(l) = live.get_mut(&w) else { continue };
            if l.closed {
                live.remove(&w);
                settle_exit(&shared, w, exit);
                keep_spare_if_asked(sup, &mut spares, slot);
            } else {
                l.exited = Some((exit, Instant::now() + SETTLE_GRACE));
            }
        }
    }
}

/// Hands a reaped worker's end to the scheduler.
fn settle_exit(shared: &Shared, w: WorkerId, exit: WorkerExit) {
    shared.event(Sender::Threads, |c, now| {
        let progress =
            c.io.get(&w)
                .map(|io| io.progress.read(now))
                .unwrap_or_default();
        let fx = c.sched.on_exit(w, exit, progress, now);
        if let Some(io) = c.io.remove(&w) {
            io.out.close();
        }
        fx
    });
}

/// A worker started for a slot before the scheduler asked for it: when a
/// worker dies, its replacement is started the moment the death is seen,
/// while its task is still being settled and its caller is waking, so the
/// fork (or exec) and the handshake are off the path from the task's error
/// to the next task's start. The scheduler still decides: the spare is
/// used only when it asks for the slot (it always does after a crash,
/// unless the pool is stopping or gave up), and ended otherwise.
enum Spare {
    /// Starting; what becomes of it is in `claim`.
    Starting { w: WorkerId, claim: ClaimCell },
    /// Connected, not asked for yet.
    Parked(Connected),
}

/// What becomes of a spare, decided by whichever of the supervisor and its
/// connect thread comes second: once connected, the connect thread hands
/// a spare asked for to the pool itself (no wake-up of the supervisor on
/// the way), ends one given up, and gives one not asked for yet to the
/// supervisor, which then decides by `asked` when it hears of it.
#[derive(Default)]
struct Claim {
    /// `Some(true)`: the scheduler asked for its slot; `Some(false)`: given
    /// up; `None`: neither yet.
    asked: Option<bool>,
}

type ClaimCell = Arc<Mutex<Claim>>;

fn lock_claim(c: &ClaimCell) -> MutexGuard<'_, Claim> {
    c.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether worker `w` of `slot`, which just ended with `exit`, gets a spare
/// started at once: it still holds its slot (so the scheduler will start
/// another for it), the pool takes work, and it did not exit cleanly (a
/// clean exit is a retiring worker: a stopping pool, one that gave up, or
/// a recycled worker whose replacement is already under way).
fn wants_spare(shared: &Shared, w: WorkerId, slot: usize, exit: WorkerExit) -> bool {
    exit != WorkerExit::Code(0)
        && !shared.admission.is_closed()
        && shared.lock().sched.slots.get(slot) == Some(&Some(w))
}

/// A worker's death in `slot` was just settled: its spare stays only if
/// the scheduler asked for the slot (the start it asked for is queued in
/// the supervisor's commands by then: the settling ran on this thread).
fn keep_spare_if_asked(sup: &Supervisor, spares: &mut HashMap<usize, Spare>, slot: usize) {
    if spares.contains_key(&slot) && !sup.lock().start.contains(&slot) {
        give_up_spares(spares, |s| s == slot);
    }
}

/// Ends the spares not asked for of the slots `which` selects: a connected
/// one now, a starting one when it connects. One asked for is a start like
/// any other.
fn give_up_spares(spares: &mut HashMap<usize, Spare>, which: impl Fn(usize) -> bool) {
    let slots: Vec<usize> = spares.keys().copied().filter(|s| which(*s)).collect();
    for slot in slots {
        match spares.remove(&slot) {
            Some(Spare::Parked(c)) => discard(c),
            Some(Spare::Starting { w, claim }) => {
                {
                    let mut g = lock_claim(&claim);
                    if g.asked.is_none() {
                        g.asked = Some(false);
                    }
                }
                spares.insert(slot, Spare::Starting { w, claim });
            }
            None => {}
        }
    }
}

/// Ends a connected worker the pool never used, and reaps it (it was never
/// the scheduler's, so nothing is settled).
fn discard(c: Connected) {
    pidfd::kill(&c.pidfd);
    // Killed: its end is imminent.
    let _ = sys::wait(c.pid);
}

/// Takes a connected worker into the pool: watched from now on, and handed
/// to the scheduler (supervisor thread).
fn take_live(shared: &Arc<Shared>, live: &mut HashMap<WorkerId, Live>, c: Connected) {
    live.insert(
        c.w,
        Live {
            slot: c.slot,
            pid: c.pid,
            pidfd: c.pidfd.clone(),
            grace: None,
            closed: false,
            exited: None,
        },
    );
    register(shared, c);
}

/// Launches a worker process for `slot` and hands its connection to a
/// helper thread, which hands the connected worker to the pool itself (a
/// spare, with its `claim`: see [`Claim`]); returns its id. Either way the
/// supervisor hears of it: registered, connected, gone or failed.
fn launch(
    shared: &Arc<Shared>,
    slot: usize,
    starting: &mut usize,
    claim: Option<ClaimCell>,
) -> WorkerId {
    let w = shared.lock().sched.next_worker_id();
    let deadline = Instant::now() + shared.settings.start_timeout;
    let pending = match spawn::launch(shared.settings.spawn_mode) {
        Ok(p) => p,
        Err(e) => {
            *starting += 1;
            shared.supervisor.failed(slot, e.into());
            return w;
        }
    };
    *starting += 1;
    let s = shared.clone();
    let spawned = std::thread::Builder::new()
        .name("concur-procs-connect".into())
        .spawn(move || {
            // Whatever happens here, the supervisor hears of it: a slot
            // that never reports would keep a stopping pool waiting.
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                connect(&s, w, slot, pending, deadline)
            }));
            match r {
                Ok(Ok(c)) => hand_over(&s, c, claim.as_ref()),
                Ok(Err(e)) => s.supervisor.failed(slot, e),
                Err(_) => s.supervisor.failed(
                    slot,
                    SpawnError::Protocol("connecting the worker panicked").into(),
                ),
            }
        });
    if let Err(e) = spawned {
        // The pending child is dropped with the closure: its connect never
        // runs, so it finds no parent on the bootstrap socket and exits
        // (or dies with this process); report the slot failed.
        shared.supervisor.failed(slot, TaskError::io(e));
    }
    w
}

/// A connected worker, on its connect thread: handed to the pool here when
/// it is wanted (every start but a spare not asked for), so that its first
/// task does not wait for the supervisor to wake; the supervisor then only
/// watches it.
fn hand_over(shared: &Arc<Shared>, c: Connected, claim: Option<&ClaimCell>) {
    let asked = claim.map_or(Some(true), |cl| lock_claim(cl).asked);
    match asked {
        Some(true) => {
            let r = Registered {
                w: c.w,
                slot: c.slot,
                pid: c.pid,
                pidfd: c.pidfd.clone(),
                spare: claim.is_some(),
            };
            register(shared, c);
            shared.supervisor.registered(r);
        }
        Some(false) => {
            let (slot, w) = (c.slot, c.w);
            discard(c);
            shared.supervisor.gone(slot, w);
        }
        None => shared.supervisor.connected(c),
    }
}

/// Connects a launched worker and initialises it (helper thread). On
/// failure the child is killed and reaped here.
fn connect(
    shared: &Arc<Shared>,
    w: WorkerId,
    slot: usize,
    p: Pending,
    deadline: Instant,
) -> Result<Connected, TaskError> {
    let s = &shared.settings;
    // Made while the child starts (it is on the path of every start); a
    // failure is reported once the child can be ended.
    let progress = ProgressWord::new();
    let started = p.connect(deadline, s.start_timeout)?;
    let pid = started.pid;
    let pidfd = Arc::new(pidfd::open(pid).map_err(|e| {
        sys::kill(pid);
        let _ = sys::wait(pid);
        TaskError::io(e)
    })?);
    let give_up = |e: TaskError| {
        pidfd::kill(&pidfd);
        let _ = sys::wait(pid);
        e
    };
    let progress = Arc::new(progress.map_err(|e| give_up(TaskError::io(e)))?);
    let (initializer, body) = match &s.initializer {
        Some(i) => (
            Some(i.name().to_owned()),
            match i.encode() {
                Ok(bytes) => Body::inline(bytes),
                Err(e) => return Err(give_up(e)),
            },
        ),
        None => (None, Body::Empty),
    };
    let head = Down::Init {
        index: slot,
        incarnation: w,
        memory_limit: s.memory_limit,
        initializer,
        shm_threshold: s.shm_threshold,
        hold_results: s.hold_results,
    };
    let mut frame = Frame::new(&head, body).map_err(give_up)?;
    frame.shm = Some(progress.region().map_err(|e| give_up(TaskError::io(e)))?);
    if started.tx.send(vec![frame]).is_err() {
        // Its channel closed: it is most likely dying (killed, crashed);
        // how it ended decides how the failure counts (see
        // `Scheduler::on_start_failed`).
        let closed = SpawnError::Protocol("worker closed its channel");
        return Err(pidfd::exited_or_end(&pidfd, pid, closed).into());
    }
    // Without an initializer the worker is ready once it has its init: its
    // `Ready` reaches the router, which ignores it.
    if s.initializer.is_some() {
        let wait = deadline.saturating_duration_since(Instant::now());
        match started.rx.try_recv_timeout(wait) {
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
            Err(_) => {
                let bad = SpawnError::Protocol("bad ready");
                return Err(pidfd::exited_or_end(&pidfd, pid, bad).into());
            }
        }
    }
    Ok(Connected {
        w,
        slot,
        pid,
        pidfd,
        tx: started.tx,
        rx: started.rx,
        progress,
    })
}

/// Hands a connected worker to the pool (its connect thread, or the
/// supervisor thread for a spare it kept).
fn register(shared: &Arc<Shared>, c: Connected) {
    let weak = Arc::downgrade(shared);
    let w = c.w;
    let unsent: super::outbox::Unsent = Box::new(move |ids, e| {
        if let Some(s) = weak.upgrade() {
            s.unsent(w, ids, e);
        }
    });
    let out = match Outbox::start(c.tx, format!("concur-procs-send-{}", c.w), unsent) {
        Ok(o) => o,
        Err(e) => {
            pidfd::kill(&c.pidfd);
            // The pidfd reports its exit; it was never a worker of the
            // scheduler, so nothing is settled but the start failure.
            start_failed(shared, c.slot, &TaskError::io(e));
            return;
        }
    };
    {
        let mut senders = shared.senders.lock().unwrap_or_else(|e| e.into_inner());
        senders.retain(|o| !o.ended());
        senders.push(out.clone());
    }
    shared.router.add(c.w, c.rx);
    shared.event(Sender::Threads, |core, now| {
        core.io.insert(
            c.w,
            WorkerIo {
                pid: c.pid,
                pidfd: c.pidfd,
                out,
                progress: c.progress,
            },
        );
        core.sched.on_ready(c.w, c.slot, now)
    });
}
