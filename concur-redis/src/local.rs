//! Local workers: worker processes a pool starts on its own machine (this
//! executable re-run, or a command the builder names), keeps at the
//! configured count, and stops with the pool. They are ordinary workers of
//! the queue: remote workers may serve it beside them.
//!
//! A supervisor thread reaps them. A local worker that dies hands its
//! pending entry at once to its replacement (`XCLAIM ... JUSTID` to the
//! replacement's consumer name, which reads its own pending entries
//! first), so a crash costs no visibility timeout; the replacement's read
//! counts the delivery, and the retry limit applies as for any worker.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use concur_core::{ErrorKind, TaskError};
use redis::Value;

use crate::conn::{is_lost, Broker, Conn};
use crate::env;
use crate::keys::{Keys, GROUP};
use crate::wire;
use crate::worker::Stop;

/// Exit code of a local worker that ran its task limit (it is replaced).
const EXIT_RECYCLE: i32 = 86;
/// Exit code of a local worker that gave up on an unreachable broker.
const EXIT_UNREACHABLE: i32 = 87;
/// Deaths before readiness in a row after which the pool gives up.
const MAX_EARLY_DEATHS: u32 = 3;
/// The default restart intensity: more than this many crashes of local
/// workers ...
pub const DEFAULT_MAX_CRASHES: u32 = 16;
/// ... within this window make the pool fail (as the process backend's).
pub const DEFAULT_CRASH_WINDOW: Duration = Duration::from_secs(10);
/// How often the supervisor looks for ended workers.
const REAP_EVERY: Duration = Duration::from_millis(10);

/// The exit code of a local worker whose run ended with `outcome`: the
/// worker's side of what [`Local::replace`] reads back from its status.
pub(crate) fn exit_code(outcome: &Result<Stop, TaskError>) -> i32 {
    match outcome {
        Ok(Stop::TaskLimit) => EXIT_RECYCLE,
        Ok(_) => 0,
        Err(e) if is_lost(e) => EXIT_UNREACHABLE,
        Err(_) => 1,
    }
}

/// How to start one local worker.
#[derive(Debug, Clone)]
pub(crate) struct Spawn {
    pub(crate) program: PathBuf,
    pub(crate) args: Vec<OsString>,
    /// The settings every local worker of the pool shares (see [`env`]).
    pub(crate) envs: Vec<(&'static str, String)>,
    pub(crate) max_tasks: Option<u64>,
    pub(crate) max_crashes: u32,
    pub(crate) crash_window: Duration,
}

struct Slot {
    index: usize,
    incarnation: u64,
    consumer: String,
    child: Option<Child>,
    ready: bool,
}

#[derive(Default)]
struct Slots {
    list: Vec<Slot>,
    next_incarnation: u64,
    early_deaths: u32,
    failed: Option<String>,
    stopping: bool,
    target: usize,
    crashes: std::collections::VecDeque<Instant>,
}

/// The local workers of one pool.
pub(crate) struct Local {
    spawn: Spawn,
    pool: String,
    keys: Keys,
    slots: Mutex<Slots>,
    changed: Condvar,
    conn: Mutex<Conn>,
    never: AtomicBool,
}

impl Local {
    pub(crate) fn new(spawn: Spawn, pool: &str, keys: Keys, broker: Arc<Broker>) -> Self {
        Self {
            spawn,
            pool: pool.to_owned(),
            keys,
            slots: Mutex::new(Slots::default()),
            changed: Condvar::new(),
            conn: Mutex::new(Conn::new(broker)),
            never: AtomicBool::new(false),
        }
    }

    fn slots(&self) -> MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks the supervisor for `n` workers, slots `0..n`. The supervisor
    /// thread starts them: the parent-death signal of a child follows the
    /// thread that started it, and the caller's thread may end first.
    pub(crate) fn start(&self, n: usize) {
        self.slots().target = n;
        self.changed.notify_all();
    }

    fn launch(&self, s: &mut Slots, index: usize) -> Result<Slot, TaskError> {
        s.next_incarnation += 1;
        let incarnation = s.next_incarnation;
        let consumer = format!("local-{}-{incarnation}", self.pool);
        let mut cmd = Command::new(&self.spawn.program);
        cmd.args(&self.spawn.args)
            .envs(self.spawn.envs.iter().map(|(k, v)| (k, v)))
            .env(env::CONSUMER, &consumer)
            .env(env::INDEX, index.to_string())
            .env(env::INCARNATION, incarnation.to_string())
            .stdin(Stdio::null());
        if let Some(m) = self.spawn.max_tasks {
            cmd.env(env::MAX_TASKS, m.to_string());
        }
        let child = cmd
            .spawn()
            .map_err(|e| TaskError::with_source(ErrorKind::Spawn, e))?;
        Ok(Slot {
            index,
            incarnation,
            consumer,
            child: Some(child),
            ready: false,
        })
    }

    /// A worker said it is ready.
    pub(crate) fn ready(&self, incarnation: u64) {
        let mut s = self.slots();
        if let Some(slot) = s.list.iter_mut().find(|w| w.incarnation == incarnation) {
            slot.ready = true;
            s.early_deaths = 0;
        }
        self.changed.notify_all();
    }

    /// Waits until every worker is ready, at most `timeout`.
    pub(crate) fn wait_ready(&self, timeout: Duration) -> Result<(), TaskError> {
        let deadline = Instant::now() + timeout;
        let mut s = self.slots();
        loop {
            if let Some(why) = &s.failed {
                return Err(spawn_error(why));
            }
            if s.list.len() >= s.target && s.list.iter().all(|w| w.ready) {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(spawn_error(&format!(
                    "the local workers were not ready within {timeout:?}"
                )));
            }
            s = self
                .changed
                .wait_timeout(s, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Why the workers cannot be kept running, once they cannot.
    pub(crate) fn failed(&self) -> Option<String> {
        self.slots().failed.clone()
    }

    /// The supervisor: reaps ended workers and replaces them, until
    /// stopping. Calls `on_failed` once if it gives up (workers that
    /// cannot start, or crash more often than the restart intensity).
    pub(crate) fn supervise(&self, on_failed: &dyn Fn(&str)) {
        let mut s = self.slots();
        let mut told = false;
        while !s.stopping {
            if let (Some(why), false) = (&s.failed, told) {
                told = true;
                let why = why.clone();
                drop(s);
                on_failed(&why);
                s = self.slots();
                continue;
            }
            while s.failed.is_none() && s.list.len() < s.target {
                let index = s.list.len();
                match self.launch(&mut s, index) {
                    Ok(slot) => s.list.push(slot),
                    Err(e) => {
                        s.failed = Some(format!(
                            "a local worker could not be started: {}",
                            crate::conn::error_chain(&e)
                        ));
                        self.changed.notify_all();
                    }
                }
            }
            let mut ended = Vec::new();
            for (i, slot) in s.list.iter_mut().enumerate() {
                if let Some(child) = slot.child.as_mut() {
                    if let Ok(Some(status)) = child.try_wait() {
                        slot.child = None;
                        ended.push((i, status));
                    }
                }
            }
            // Hand-overs talk to the broker (retrying while it is away):
            // done without the slots lock, which every submit takes.
            let hand_overs: Vec<(String, String)> = ended
                .into_iter()
                .filter_map(|(i, status)| self.replace(&mut s, i, status))
                .collect();
            if !hand_overs.is_empty() {
                drop(s);
                for (old, new) in &hand_overs {
                    self.hand_over(old, new);
                }
                s = self.slots();
            }
            s = self
                .changed
                .wait_timeout(s, REAP_EVERY)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Replaces the worker of slot `i`, which ended with `status`; returns
    /// the consumers (old, new) whose pending entries the caller hands over
    /// (see [`Self::hand_over`]) once it has released the slots lock.
    fn replace(&self, s: &mut Slots, i: usize, status: ExitStatus) -> Option<(String, String)> {
        if s.failed.is_some() {
            return None;
        }
        let (index, was_ready, old) = {
            let slot = &s.list[i];
            (slot.index, slot.ready, slot.consumer.clone())
        };
        let crashed = !matches!(status.code(), Some(0 | EXIT_RECYCLE));
        if was_ready && crashed {
            let now = Instant::now();
            s.crashes.push_back(now);
            while s
                .crashes
                .front()
                .is_some_and(|t| now.duration_since(*t) > self.spawn.crash_window)
            {
                s.crashes.pop_front();
            }
            if s.crashes.len() > self.spawn.max_crashes as usize {
                s.failed = Some(format!(
                    "{} local workers crashed within {:?} (the last: {status})",
                    s.crashes.len(),
                    self.spawn.crash_window
                ));
                self.changed.notify_all();
                return None;
            }
        }
        if !was_ready {
            s.early_deaths += 1;
            if s.early_deaths >= MAX_EARLY_DEATHS {
                s.failed = Some(if status.code() == Some(EXIT_UNREACHABLE) {
                    "local workers could not reach the broker (each gave up after its \
                     reconnect timeout)"
                        .to_owned()
                } else {
                    format!(
                        "local workers exited before they were ready ({status}); does the \
                         program call concur_redis::init() first in main?"
                    )
                });
                self.changed.notify_all();
                return None;
            }
        }
        match self.launch(s, index) {
            Ok(slot) => {
                let new = slot.consumer.clone();
                s.list[i] = slot;
                (status.code() != Some(EXIT_RECYCLE)).then_some((old, new))
            }
            Err(e) => {
                s.failed = Some(format!(
                    "a local worker could not be started: {}",
                    crate::conn::error_chain(&e)
                ));
                self.changed.notify_all();
                None
            }
        }
    }

    /// Gives the dead consumer's pending entries to its replacement and
    /// removes it from the group.
    fn hand_over(&self, old: &str, new: &str) {
        let tasks = self.keys.tasks();
        let mut conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        let _ = conn.run(&self.never, |c| {
            let v: Value = redis::cmd("XPENDING")
                .arg(&tasks)
                .arg(GROUP)
                .arg("-")
                .arg("+")
                .arg(100)
                .arg(old)
                .query(c)?;
            let ids = wire::pending_ids(&v);
            if !ids.is_empty() {
                redis::cmd("XCLAIM")
                    .arg(&tasks)
                    .arg(GROUP)
                    .arg(new)
                    .arg(0)
                    .arg(&ids)
                    .arg("JUSTID")
                    .exec(c)?;
            }
            redis::cmd("XGROUP")
                .arg("DELCONSUMER")
                .arg(&tasks)
                .arg(GROUP)
                .arg(old)
                .exec(c)
        });
    }

    /// Stops every worker: they were asked to stop (control stream) by the
    /// caller; each gets `grace` to finish its task, then is killed. All
    /// are reaped.
    pub(crate) fn stop(&self, grace: Duration) {
        let mut s = self.slots();
        s.stopping = true;
        self.changed.notify_all();
        let deadline = Instant::now() + grace;
        for slot in &mut s.list {
            let Some(child) = slot.child.as_mut() else {
                continue;
            };
            loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() >= deadline => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    // A bounded poll: the child has no other way to tell.
                    Ok(None) => std::thread::sleep(REAP_EVERY),
                }
            }
            slot.child = None;
        }
    }

    /// The pool id these workers announce readiness to.
    pub(crate) fn pool(&self) -> &str {
        &self.pool
    }
}

fn spawn_error(why: &str) -> TaskError {
    TaskError::with_source(ErrorKind::Spawn, std::io::Error::other(why.to_owned()))
}
