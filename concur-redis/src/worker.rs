//! The worker: takes tasks from a queue's consumer group, runs them by
//! their registered name, and writes each result to its submitter's result
//! stream, in one `MULTI` with the `XACK` and `XDEL` of the task entry.
//!
//! Three threads, each with its own connection: the main thread reads
//! and runs tasks one at a time (its connection also carries the running
//! task's messages); the *heartbeat* thread extends the lease of the
//! running entry (`XCLAIM ... JUSTID`, which does not count as a delivery)
//! and writes `TimedOut` the moment a task passes its timeout; the
//! *control* thread follows the queue's control stream for cancel and stop
//! requests.
//!
//! A worker takes entries in this order: its own pending entries first (at
//! start and after every reconnection: an entry delivered while the reply
//! was lost, or handed over from a dead predecessor), then, every half
//! visibility timeout, one entry idle past the visibility timeout
//! (`XAUTOCLAIM`: a dead worker's task), then new entries (`XREADGROUP >`).
//! A claimed entry's delivery count is checked against the retry limit the
//! submitter set; past it the entry goes to the dead-letter stream and its
//! handle fails with the quarantine error.

use std::cell::RefCell;
use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use concur_core::codec::{self, Bytes};
use concur_core::{
    encode_batch_items, registry, ErrorKind, Payload, Port, TaskError, WorkerExit, WorkerInfo,
    NEVER,
};
use redis::{Connection, RedisError, Value};

use crate::conn::{ensure_group, error_chain, has_code, is_lost, unblock, Broker, Conn};
use crate::error::{Quarantined, WrongBuild};
use crate::keys::{Keys, GROUP};
use crate::wire::{self, Entry, Garbage, ResultKind, Route, TaskEntry, FN_TASK_NAME, PROTOCOL};

/// The default visibility timeout: how long an entry taken by a worker
/// that stopped renewing its lease stays with it before another worker
/// takes it over.
pub const DEFAULT_VISIBILITY_TIMEOUT: Duration = Duration::from_secs(30);
/// The default bound on reconnecting to a lost broker.
pub const DEFAULT_RECONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// The default queue name.
pub const DEFAULT_QUEUE: &str = "default";
/// How long a pool's result stream outlives its last write (a pool that
/// died leaves nothing behind for longer).
pub(crate) const RESULT_TTL: Duration = Duration::from_secs(3600);
/// Longest blocking read: stop requests and signals are seen within it.
const BLOCK: Duration = Duration::from_millis(500);
/// Most cancels remembered (for tasks whose cancel came before they did).
const RECENT_CANCELS: usize = 10_000;

/// Runs a worker for the queue [`DEFAULT_QUEUE`] at `url` until it is asked
/// to stop (see [`WorkerBuilder::run`]).
///
/// ```no_run
/// fn main() -> Result<(), concur_redis::TaskError> {
///     concur_redis::init(); // lets a RedisPool on this machine start local workers
///     concur_redis::worker("redis://broker.example:6379/0")?;
///     Ok(())
/// }
/// ```
///
/// # Errors
/// As [`WorkerBuilder::run`].
pub fn worker(url: &str) -> Result<Stop, TaskError> {
    Worker::builder(url).run()
}

/// The worker side of the distributed backend: build one with
/// [`Worker::builder`].
#[derive(Debug)]
pub struct Worker;

impl Worker {
    /// A worker for the broker at `url` (`redis://[:password@]host[:port][/db]`,
    /// or `rediss://` with the `tls` feature).
    pub fn builder(url: &str) -> WorkerBuilder {
        WorkerBuilder {
            url: url.to_owned(),
            settings: QueueSettings::default(),
            name: None,
            max_tasks: None,
            index: 0,
            incarnation: None,
            local: None,
            identity: None,
        }
    }
}

/// Why a worker returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Stop {
    /// A stop request came through the control stream (a pool stopping
    /// its local workers, or an operator).
    Requested,
    /// The process got SIGTERM or SIGINT.
    Signal,
    /// The worker ran its task limit ([`WorkerBuilder::max_tasks`]).
    TaskLimit,
}

/// What a pool tells the local workers it starts.
#[derive(Debug, Clone)]
pub(crate) struct LocalSpec {
    pub(crate) pool: String,
    pub(crate) parent: u32,
    pub(crate) initializer: Option<(String, Vec<u8>)>,
}

/// Settings of a worker; [`run`](Self::run) runs it.
#[derive(Debug, Clone)]
pub struct WorkerBuilder {
    url: String,
    settings: QueueSettings,
    name: Option<String>,
    max_tasks: Option<u64>,
    index: usize,
    incarnation: Option<u64>,
    pub(crate) local: Option<LocalSpec>,
    identity: Option<Vec<u8>>,
}

impl WorkerBuilder {
    /// The queue to serve (default [`DEFAULT_QUEUE`]); pools submit to a
    /// queue by the same name.
    pub fn queue(mut self, queue: &str) -> Self {
        self.settings.queue = queue.to_owned();
        self
    }

    /// The consumer name in the group (default `host-pid-random`). Must be
    /// unique among live workers of the queue.
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_owned());
        self
    }

    /// How long an entry whose worker stopped renewing its lease waits
    /// before this worker takes it over (default 30 s). Use the same value
    /// for every worker of a queue.
    pub fn visibility_timeout(mut self, d: Duration) -> Self {
        self.settings.visibility = d;
        self
    }

    /// How often the lease of the running task is renewed (default a
    /// quarter of the visibility timeout).
    pub fn heartbeat(mut self, d: Duration) -> Self {
        self.settings.heartbeat = Some(d);
        self
    }

    /// How long to keep reconnecting to a lost broker before giving up
    /// (default 30 s).
    pub fn reconnect_timeout(mut self, d: Duration) -> Self {
        self.settings.reconnect = d;
        self
    }

    /// Return after running `n` tasks ([`Stop::TaskLimit`]).
    pub fn max_tasks(mut self, n: u64) -> Self {
        self.max_tasks = Some(n);
        self
    }

    /// The index tasks see in [`WorkerInfo::index`] (default 0).
    pub fn index(mut self, index: usize) -> Self {
        self.index = index;
        self
    }

    pub(crate) fn incarnation(mut self, n: u64) -> Self {
        self.incarnation = Some(n);
        self
    }

    /// Test support: makes this worker believe it is another build, so a
    /// test can watch tasks being refused.
    #[doc(hidden)]
    pub fn pretend_build(mut self, identity: &[u8]) -> Self {
        self.identity = Some(identity.to_vec());
        self
    }

    /// Runs the worker on this thread until a stop request, SIGTERM or
    /// SIGINT (the running task is finished first), or its task limit.
    /// Any number of workers, on any machines, may serve one queue.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] for a bad URL or setting;
    /// [`ErrorKind::Io`] when the broker cannot be reached (or stays
    /// unreachable longer than the reconnect timeout) or refuses the
    /// worker (wrong password); an initializer's error for a local worker.
    pub fn run(mut self) -> Result<Stop, TaskError> {
        let heartbeat = self.settings.check()?;
        install_signal_handlers();
        let broker = Arc::new(Broker::new(&self.url, self.settings.reconnect)?);
        let incarnation = self.incarnation.unwrap_or_else(crate::ids::unique_u64);
        let consumer = self.name.clone().unwrap_or_else(|| {
            format!(
                "{}-{}-{:08x}",
                crate::ids::hostname(),
                std::process::id(),
                incarnation as u32
            )
        });
        let shared = Arc::new(Shared {
            keys: Keys::new(&self.settings.queue),
            consumer,
            broker: broker.clone(),
            visibility: self.settings.visibility,
            heartbeat,
            identity: self
                .identity
                .clone()
                .unwrap_or_else(|| concur_core::build::build_id().to_vec()),
            local_pool: self.local.as_ref().map(|l| l.pool.clone()),
            stop: AtomicBool::new(false),
            quit: AtomicBool::new(false),
            current: Mutex::new(None),
            changed: Condvar::new(),
            recent: Mutex::new(Recent::default()),
            main_id: Arc::new(AtomicU64::new(0)),
            control_id: Arc::new(AtomicU64::new(0)),
        });
        let info = WorkerInfo::current(self.index, incarnation);
        let mut main = Main {
            sh: shared.clone(),
            conn: Conn::new(broker).tracked(shared.main_id.clone()),
            info,
            pel: true,
            claim_cursor: "0-0".into(),
            last_claim: Instant::now(),
            deferred: None,
        };
        main.conn
            .run(&shared.quit, |c| ensure_group(c, &shared.keys.tasks()))?;
        // Follow the control stream from here on, before taking any work.
        let control_from = main
            .conn
            .run(&shared.quit, |c| last_id(c, &shared.keys.control()))?;
        if let Some(local) = &self.local {
            if let Some((name, body)) = &local.initializer {
                registry::lookup(name)?.run(body, &concur_core::NullPort, info)?;
            }
            let res = shared.keys.results(&local.pool);
            main.conn.run(&shared.quit, |c| {
                redis::cmd("XADD")
                    .arg(&res)
                    .arg("*")
                    .arg("id")
                    .arg(incarnation)
                    .arg("k")
                    .arg(ResultKind::Ready.tag())
                    .exec(c)
            })?;
        }
        let control = {
            let sh = shared.clone();
            std::thread::Builder::new()
                .name("concur-redis-control".into())
                .spawn(move || control_loop(&sh, control_from))
                .map_err(TaskError::io)?
        };
        let beat = {
            let sh = shared.clone();
            std::thread::Builder::new()
                .name("concur-redis-heartbeat".into())
                .spawn(move || heartbeat_loop(&sh))
                .map_err(TaskError::io)?
        };
        let outcome = main.serve(self.max_tasks);
        shared.quit.store(true, Ordering::Release);
        shared.changed.notify_all();
        unblock(&mut main.conn, &shared.control_id);
        let _ = control.join();
        let _ = beat.join();
        if outcome.is_ok() {
            main.leave();
        }
        outcome
    }
}

/// Cancels seen on the control stream: tasks, and whole pools.
#[derive(Default)]
struct Recent {
    tasks: HashSet<Route>,
    order: VecDeque<Route>,
    pools: HashSet<String>,
    pool_order: VecDeque<String>,
}

impl Recent {
    fn add_task(&mut self, r: Route) {
        if self.tasks.insert(r.clone()) {
            self.order.push_back(r);
            if self.order.len() > RECENT_CANCELS {
                if let Some(old) = self.order.pop_front() {
                    self.tasks.remove(&old);
                }
            }
        }
    }

    fn add_pool(&mut self, p: String) {
        if self.pools.insert(p.clone()) {
            self.pool_order.push_back(p);
            if self.pool_order.len() > RECENT_CANCELS {
                if let Some(old) = self.pool_order.pop_front() {
                    self.pools.remove(&old);
                }
            }
        }
    }

    fn cancelled(&self, r: &Route) -> bool {
        self.pools.contains(&r.pool) || self.tasks.contains(r)
    }
}

/// The task a worker runs now.
struct Current {
    entry: String,
    route: Route,
    batch: bool,
    cancel: Arc<AtomicBool>,
    timeout: Option<Duration>,
    deadline: Option<Instant>,
    /// Its result has been written (by the heartbeat on timeout, or by the
    /// main thread): whoever sets this writes, the other does not.
    finished: bool,
    renewed: Instant,
}

struct Shared {
    keys: Keys,
    consumer: String,
    broker: Arc<Broker>,
    visibility: Duration,
    heartbeat: Duration,
    identity: Vec<u8>,
    local_pool: Option<String>,
    /// A stop was requested: return once the running task is done.
    stop: AtomicBool,
    /// The helper threads must end.
    quit: AtomicBool,
    current: Mutex<Option<Current>>,
    changed: Condvar,
    recent: Mutex<Recent>,
    /// Client ids of the main and control connections, so that a stop
    /// ends their blocking reads at once.
    main_id: Arc<AtomicU64>,
    control_id: Arc<AtomicU64>,
}

impl Shared {
    fn current(&self) -> MutexGuard<'_, Option<Current>> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn recent(&self) -> MutexGuard<'_, Recent> {
        self.recent.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn stopping(&self) -> Option<Stop> {
        if SIGNALLED.load(Ordering::Acquire) {
            Some(Stop::Signal)
        } else if self.stop.load(Ordering::Acquire) {
            Some(Stop::Requested)
        } else {
            None
        }
    }
}

/// The main thread's state.
struct Main {
    sh: Arc<Shared>,
    conn: Conn,
    info: WorkerInfo,
    /// Read this worker's own pending entries before new ones.
    pel: bool,
    claim_cursor: String,
    last_claim: Instant,
    /// The last task's result, sent with the next read (one round trip
    /// per task instead of two).
    deferred: Option<Deferred>,
}

/// How an entry reached this worker.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Via {
    /// New (`>`): its first delivery.
    New,
    /// Its own pending list or a claim: delivered before.
    Again,
}

impl Main {
    fn serve(&mut self, max_tasks: Option<u64>) -> Result<Stop, TaskError> {
        let mut ran = 0u64;
        loop {
            if let Some(why) = self.sh.stopping() {
                self.flush()?;
                return Ok(why);
            }
            if max_tasks.is_some_and(|m| ran >= m) {
                self.flush()?;
                return Ok(Stop::TaskLimit);
            }
            if let Some((entry, via)) = self.next()? {
                if self.handle(entry, via)? {
                    ran += 1;
                }
            }
        }
    }

    /// The next entry to work on, if one came within the blocking bound.
    fn next(&mut self) -> Result<Option<(Entry, Via)>, TaskError> {
        let tasks = self.sh.keys.tasks();
        let me = self.sh.consumer.clone();
        if self.pel || self.last_claim.elapsed() >= self.sh.visibility / 2 {
            self.flush()?;
        }
        if self.pel {
            let reply = self.read_group(&tasks, &me, "0", None)?;
            match wire::read_reply(&reply).into_iter().next() {
                Some(e) => return Ok(Some((e, Via::Again))),
                None => self.pel = false,
            }
        }
        if self.last_claim.elapsed() >= self.sh.visibility / 2 {
            self.last_claim = Instant::now();
            let idle = ms(self.sh.visibility);
            let cursor = self.claim_cursor.clone();
            let reply = self.conn.run(&self.sh.quit, |c| {
                redis::cmd("XAUTOCLAIM")
                    .arg(&tasks)
                    .arg(GROUP)
                    .arg(&me)
                    .arg(idle)
                    .arg(&cursor)
                    .arg("COUNT")
                    .arg(1)
                    .query::<Value>(c)
            });
            match reply {
                Ok(v) => {
                    let (cursor, claimed) = wire::autoclaim_reply(&v);
                    self.claim_cursor = cursor;
                    if let Some(e) = claimed.into_iter().next() {
                        return Ok(Some((e, Via::Again)));
                    }
                }
                // The group vanished (a broker restarted without its data):
                // the read below recreates it.
                Err(_) => self.claim_cursor = "0-0".into(),
            }
        }
        let reply = self.read_group(&tasks, &me, ">", Some(BLOCK))?;
        Ok(wire::read_reply(&reply)
            .into_iter()
            .next()
            .map(|e| (e, Via::New)))
    }

    /// `XREADGROUP` one entry from `from`, recreating the group if the
    /// broker lost it; a reconnection makes the next read start with this
    /// worker's own pending entries.
    fn read_group(
        &mut self,
        tasks: &str,
        me: &str,
        from: &str,
        block: Option<Duration>,
    ) -> Result<Value, TaskError> {
        let mut reconnected = false;
        let deferred = self.deferred.take();
        let sh = self.sh.clone();
        let read = |c: &mut Connection| -> Result<Value, RedisError> {
            let mut cmd = redis::cmd("XREADGROUP");
            cmd.arg("GROUP").arg(GROUP).arg(me).arg("COUNT").arg(1);
            if let Some(b) = block {
                cmd.arg("BLOCK").arg(ms(b));
            }
            cmd.arg("STREAMS").arg(tasks).arg(from);
            let mut p = redis::pipe();
            if let Some(d) = &deferred {
                p.cmd("MULTI").ignore();
                result_commands(&mut p, &sh, d);
                p.cmd("EXEC").ignore();
            }
            p.add_command(cmd.clone());
            let reply = p
                .query::<Vec<Value>>(c)
                .map(|mut v| v.pop().unwrap_or(Value::Nil));
            match reply {
                // The broker restarted without its data. The result before
                // the read was written all the same (a pipeline runs every
                // command): only the read is repeated.
                Err(e) if has_code(&e, &["NOGROUP"]) => {
                    ensure_group(c, tasks)?;
                    cmd.query::<Value>(c)
                }
                other => other,
            }
        };
        let mut attempt = 0;
        let v = self.conn.run(&self.sh.quit, |c| {
            attempt += 1;
            if attempt > 1 {
                reconnected = true;
            }
            read(c)
        });
        let v = match (v, deferred) {
            (Ok(v), _) => v,
            (Err(e), None) => return Err(e),
            // The result was refused (too large, say): the read may have
            // taken an entry, which the next read of this worker's own
            // pending entries finds; the result goes alone, with its
            // fallback.
            (Err(_), Some(d)) => {
                self.pel = true;
                self.write_deferred(d)?;
                return Ok(Value::Nil);
            }
        };
        if reconnected && from == ">" {
            self.pel = true;
        }
        Ok(v)
    }

    /// Works on one entry. True when a task was run.
    fn handle(&mut self, entry: Entry, via: Via) -> Result<bool, TaskError> {
        let task = match TaskEntry::parse(&entry) {
            Ok(t) => t,
            Err(Garbage::Deleted) => {
                // Cancelled (deleted) after it was delivered: only let go of it.
                self.ack(&entry.id)?;
                return Ok(false);
            }
            Err(g) => {
                match wire::route(&entry) {
                    Ok(route) => {
                        let e = TaskError::codec("task entry", g);
                        self.finish(&entry.id, &route, false, Err(e))?;
                    }
                    Err(_) => self.dead_letter(&entry, &g.to_string())?,
                }
                return Ok(false);
            }
        };
        if let Some(refusal) = self.refusal(&task) {
            eprintln!(
                "concur-redis worker {}: refused task {} ({}): {}",
                self.sh.consumer,
                task.route.task,
                task.name,
                error_chain(&refusal)
            );
            self.finish(&entry.id, &task.route, !task.batch, Err(refusal))?;
            return Ok(false);
        }
        if via == Via::Again {
            let deliveries = self.deliveries(&entry.id)?;
            if deliveries > u64::from(task.retries) + 1 {
                self.quarantine(&entry, &task, deliveries)?;
                return Ok(false);
            }
        }
        if self.sh.recent().cancelled(&task.route) {
            self.ack(&entry.id)?;
            return Ok(false);
        }
        let runner = match registry::lookup(&task.name) {
            Ok(r) => r,
            Err(e) => {
                self.finish(&entry.id, &task.route, !task.batch, Err(e))?;
                return Ok(false);
            }
        };
        let cancel = Arc::new(AtomicBool::new(false));
        let now = Instant::now();
        *self.sh.current() = Some(Current {
            entry: entry.id.clone(),
            route: task.route.clone(),
            batch: task.batch,
            cancel: cancel.clone(),
            timeout: task.timeout,
            deadline: task.timeout.and_then(|t| now.checked_add(t)),
            finished: false,
            renewed: now,
        });
        if task.timeout.is_some() {
            // The heartbeat sleeps at most a heartbeat; only a deadline
            // may need it sooner.
            self.sh.changed.notify_all();
        }
        let outcome = if task.batch {
            run_batch(runner, &task, &cancel, self.info)
        } else {
            let port = TaskPort {
                conn: RefCell::new(&mut self.conn),
                sh: &self.sh,
                route: &task.route,
                cancel: &cancel,
                deadline: task.timeout.and_then(|t| now.checked_add(t)),
                down: RefCell::new(Down {
                    key: self.sh.keys.down(&task.route.pool, task.route.task),
                    last: "0-0".into(),
                    queue: VecDeque::new(),
                    ended: false,
                }),
            };
            let r = runner
                .run(&task.body, &port, self.info)
                .and_then(|p| p.to_bytes());
            match task.timeout {
                Some(t) if now.elapsed() >= t => Err(ErrorKind::TimedOut { after: t }.into()),
                _ => r,
            }
        };
        let mine = {
            let mut cur = self.sh.current();
            let mine = cur.as_ref().is_some_and(|c| !c.finished);
            *cur = None;
            mine
        };
        if mine {
            let (kind, body) = encode_outcome(outcome)?;
            self.deferred = Some(Deferred {
                entry: entry.id.clone(),
                route: task.route.clone(),
                single: !task.batch,
                kind,
                body,
            });
        }
        Ok(true)
    }

    /// Writes the deferred result, if any, now.
    fn flush(&mut self) -> Result<(), TaskError> {
        match self.deferred.take() {
            Some(d) => self.write_deferred(d),
            None => Ok(()),
        }
    }

    fn write_deferred(&mut self, d: Deferred) -> Result<(), TaskError> {
        let sent = self.conn.run(&self.sh.quit, |c| {
            let mut p = redis::pipe();
            p.atomic();
            result_commands(&mut p, &self.sh, &d);
            p.exec(c)
        });
        match sent {
            Err(e) if !is_lost(&e) => write_result(
                &mut self.conn,
                &self.sh,
                &d.entry,
                &d.route,
                d.single,
                Err(e),
            ),
            other => other,
        }
    }

    /// Why this worker must not run `task`, if it must not.
    fn refusal(&self, task: &TaskEntry) -> Option<TaskError> {
        if task.version != u64::from(PROTOCOL) {
            return Some(TaskError::config(
                "protocol",
                &format!(
                    "the task was submitted with protocol {} and this worker speaks {PROTOCOL}",
                    task.version
                ),
            ));
        }
        if task.name == FN_TASK_NAME {
            return Some(crate::error::fn_task_refused());
        }
        if task.build != self.sh.identity {
            return Some(TaskError::with_source(
                ErrorKind::Config {
                    field: "worker build".into(),
                    reason: "every worker of a queue must run the submitter's build".into(),
                },
                WrongBuild {
                    worker: self.sh.consumer.clone(),
                },
            ));
        }
        None
    }

    fn deliveries(&mut self, id: &str) -> Result<u64, TaskError> {
        let tasks = self.sh.keys.tasks();
        let v = self.conn.run(&self.sh.quit, |c| {
            match redis::cmd("XPENDING")
                .arg(&tasks)
                .arg(GROUP)
                .arg(id)
                .arg(id)
                .arg(1)
                .query::<Value>(c)
            {
                // The broker restarted without its data since the entry
                // was read: no count survives; the next read recreates
                // the group.
                Err(e) if has_code(&e, &["NOGROUP"]) => Ok(Value::Nil),
                other => other,
            }
        })?;
        Ok(wire::delivery_count(&v).unwrap_or(1))
    }

    fn ack(&mut self, id: &str) -> Result<(), TaskError> {
        let tasks = self.sh.keys.tasks();
        self.conn.run(&self.sh.quit, |c| {
            redis::pipe()
                .atomic()
                .cmd("XACK")
                .arg(&tasks)
                .arg(GROUP)
                .arg(id)
                .ignore()
                .cmd("XDEL")
                .arg(&tasks)
                .arg(id)
                .ignore()
                .exec(c)
        })
    }

    /// Writes a task's outcome to its pool, acknowledges and deletes its
    /// entry, in one transaction. An outcome the broker refuses (too
    /// large, say) is replaced by that error.
    fn finish(
        &mut self,
        entry: &str,
        route: &Route,
        single: bool,
        outcome: Result<Vec<u8>, TaskError>,
    ) -> Result<(), TaskError> {
        match write_result(&mut self.conn, &self.sh, entry, route, single, outcome) {
            Err(e) if !is_lost(&e) => {
                write_result(&mut self.conn, &self.sh, entry, route, single, Err(e))
            }
            other => other,
        }
    }

    /// Moves an unreadable entry to the dead-letter stream.
    fn dead_letter(&mut self, entry: &Entry, reason: &str) -> Result<(), TaskError> {
        let tasks = self.sh.keys.tasks();
        let dead = self.sh.keys.dead();
        let fields = entry.fields.clone().unwrap_or_default();
        self.conn.run(&self.sh.quit, |c| {
            let mut p = redis::pipe();
            p.atomic();
            let x = p.cmd("XADD").arg(&dead).arg("*");
            x.arg("reason").arg(reason).arg("entry").arg(&entry.id);
            for (k, v) in fields.iter().take(64) {
                x.arg([b"f:".as_slice(), k].concat()).arg(v);
            }
            x.ignore();
            p.cmd("XACK").arg(&tasks).arg(GROUP).arg(&entry.id).ignore();
            p.cmd("XDEL").arg(&tasks).arg(&entry.id).ignore();
            p.exec(c)
        })
    }

    /// Past its retry limit: to the dead-letter stream, and its handle fails.
    fn quarantine(
        &mut self,
        entry: &Entry,
        task: &TaskEntry,
        deliveries: u64,
    ) -> Result<(), TaskError> {
        let deaths = deliveries - 1;
        let reason = format!(
            "delivered {deliveries} times without a result (retry limit {})",
            task.retries
        );
        self.dead_letter(entry, &reason)?;
        let e = TaskError::with_source(
            ErrorKind::WorkerLost(WorkerExit::Unknown),
            Quarantined { deaths },
        );
        write_result(
            &mut self.conn,
            &self.sh,
            "",
            &task.route,
            !task.batch,
            Err(e),
        )
    }

    /// On a clean stop: leaves the group if nothing is pending here.
    fn leave(&mut self) {
        let tasks = self.sh.keys.tasks();
        let me = self.sh.consumer.clone();
        let never = AtomicBool::new(false);
        let _ = self.conn.try_once(&never, |c| {
            let v: Value = redis::cmd("XPENDING")
                .arg(&tasks)
                .arg(GROUP)
                .arg("-")
                .arg("+")
                .arg(1)
                .arg(&me)
                .query(c)?;
            if wire::pending_ids(&v).is_empty() {
                redis::cmd("XGROUP")
                    .arg("DELCONSUMER")
                    .arg(&tasks)
                    .arg(GROUP)
                    .arg(&me)
                    .exec(c)?;
            }
            Ok(())
        });
    }
}

/// The queue and lease settings that workers and pools (for the local
/// workers they start) both take.
#[derive(Debug, Clone)]
pub(crate) struct QueueSettings {
    pub(crate) queue: String,
    pub(crate) visibility: Duration,
    /// `None`: a quarter of the visibility timeout.
    pub(crate) heartbeat: Option<Duration>,
    pub(crate) reconnect: Duration,
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self {
            queue: DEFAULT_QUEUE.to_owned(),
            visibility: DEFAULT_VISIBILITY_TIMEOUT,
            heartbeat: None,
            reconnect: DEFAULT_RECONNECT_TIMEOUT,
        }
    }
}

impl QueueSettings {
    /// Caps the durations at [`NEVER`] (as long, and still a time the
    /// clock can add), checks the queue name and the lease settings, and
    /// gives the heartbeat to use (default a quarter of the visibility
    /// timeout). Workers and pools call it before they use the settings.
    pub(crate) fn check(&mut self) -> Result<Duration, TaskError> {
        self.visibility = self.visibility.min(NEVER);
        self.heartbeat = self.heartbeat.map(|h| h.min(NEVER));
        self.reconnect = self.reconnect.min(NEVER);
        // Every key of a queue shares the hash tag `{queue}` (see `Keys`): a
        // brace in the name would end the tag early.
        if self.queue.is_empty() || self.queue.contains(['{', '}']) {
            return Err(TaskError::config(
                "queue",
                "a non-empty name without braces",
            ));
        }
        let visibility = self.visibility;
        if visibility < Duration::from_millis(100) {
            return Err(TaskError::config(
                "visibility_timeout",
                "must be at least 100 ms",
            ));
        }
        let heartbeat = self.heartbeat.unwrap_or(visibility / 4);
        if heartbeat.is_zero() || heartbeat >= visibility {
            return Err(TaskError::config(
                "heartbeat",
                "must be longer than zero and shorter than the visibility timeout",
            ));
        }
        Ok(heartbeat)
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// The last id of stream `key` ("0-0" when empty).
fn last_id(c: &mut Connection, key: &str) -> Result<String, RedisError> {
    let v: Value = redis::cmd("XREVRANGE")
        .arg(key)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query(c)?;
    Ok(wire::entries(&v)
        .into_iter()
        .next()
        .map_or_else(|| "0-0".into(), |e| e.id))
}

/// An outcome as a result entry's kind and body.
fn encode_outcome(outcome: Result<Vec<u8>, TaskError>) -> Result<(ResultKind, Vec<u8>), TaskError> {
    Ok(match outcome {
        Ok(b) => (ResultKind::Ok, b),
        Err(e) => (
            ResultKind::Err,
            codec::encode(&e, "error")
                .or_else(|_| codec::encode(&TaskError::new(e.into_kind()), "error"))?,
        ),
    })
}

/// A result not yet written: it leaves with the next read.
struct Deferred {
    entry: String,
    route: Route,
    single: bool,
    kind: ResultKind,
    body: Vec<u8>,
}

/// Adds the commands of one result to `p` (inside a `MULTI`): the
/// outcome to the pool's result stream (kept alive for [`RESULT_TTL`]),
/// `XACK` and `XDEL` of the entry (`entry` empty: none), and the task's
/// message stream deleted.
fn result_commands(p: &mut redis::Pipeline, sh: &Shared, d: &Deferred) {
    let res = sh.keys.results(&d.route.pool);
    p.cmd("XADD")
        .arg(&res)
        .arg("*")
        .arg("id")
        .arg(d.route.task)
        .arg("k")
        .arg(d.kind.tag())
        .arg("b")
        .arg(&d.body)
        .ignore();
    p.cmd("PEXPIRE").arg(&res).arg(ms(RESULT_TTL)).ignore();
    if !d.entry.is_empty() {
        let tasks = sh.keys.tasks();
        p.cmd("XACK").arg(&tasks).arg(GROUP).arg(&d.entry).ignore();
        p.cmd("XDEL").arg(&tasks).arg(&d.entry).ignore();
    }
    if d.single {
        p.cmd("DEL")
            .arg(sh.keys.down(&d.route.pool, d.route.task))
            .ignore();
    }
}

/// Writes one result in one transaction.
fn write_result(
    conn: &mut Conn,
    sh: &Shared,
    entry: &str,
    route: &Route,
    single: bool,
    outcome: Result<Vec<u8>, TaskError>,
) -> Result<(), TaskError> {
    let (kind, body) = encode_outcome(outcome)?;
    let d = Deferred {
        entry: entry.to_owned(),
        route: route.clone(),
        single,
        kind,
        body,
    };
    conn.run(&sh.quit, |c| {
        let mut p = redis::pipe();
        p.atomic();
        result_commands(&mut p, sh, &d);
        p.exec(c)
    })
}

/// Runs a batch item by item, each with its own deadline; a failure fails
/// only its item.
fn run_batch(
    runner: &registry::TaskEntry,
    task: &TaskEntry,
    cancel: &Arc<AtomicBool>,
    info: WorkerInfo,
) -> Result<Vec<u8>, TaskError> {
    let items: Vec<Result<Bytes, TaskError>> = codec::decode(&task.body, "task batch")?;
    let results: Vec<Result<Vec<u8>, TaskError>> = items
        .into_iter()
        .map(|item| {
            let bytes = item?;
            if cancel.load(Ordering::Acquire) {
                return Err(ErrorKind::Cancelled.into());
            }
            let start = Instant::now();
            let port = ItemPort {
                cancel,
                deadline: task.timeout.and_then(|t| start.checked_add(t)),
            };
            let r = runner.run(&bytes.0, &port, info).and_then(|p| p.to_bytes());
            match task.timeout {
                Some(t) if start.elapsed() >= t => Err(ErrorKind::TimedOut { after: t }.into()),
                _ => r,
            }
        })
        .collect();
    encode_batch_items(&results)
}

/// A batch item's port: no messages; cancelled with its batch or past its deadline.
struct ItemPort<'a> {
    cancel: &'a AtomicBool,
    deadline: Option<Instant>,
}

impl Port for ItemPort<'_> {
    fn send(&self, _msg: Payload) -> Result<(), TaskError> {
        Ok(())
    }
    fn recv(&self, _deadline: Option<Instant>) -> Option<Payload> {
        None
    }
    fn is_cancelled(&self) -> bool {
        self.cancel.load(Ordering::Acquire) || self.deadline.is_some_and(|d| Instant::now() >= d)
    }
}

/// Messages from the caller, read from the task's own stream.
struct Down {
    key: String,
    last: String,
    queue: VecDeque<Vec<u8>>,
    ended: bool,
}

/// A single task's port: messages up go to the pool's result stream (in
/// order, behind nothing: one connection), messages down come from the
/// task's own stream.
struct TaskPort<'a> {
    conn: RefCell<&'a mut Conn>,
    sh: &'a Shared,
    route: &'a Route,
    cancel: &'a AtomicBool,
    deadline: Option<Instant>,
    down: RefCell<Down>,
}

impl Port for TaskPort<'_> {
    fn send(&self, msg: Payload) -> Result<(), TaskError> {
        let body = msg.to_bytes()?;
        let res = self.sh.keys.results(&self.route.pool);
        self.conn.borrow_mut().run(&self.sh.quit, |c| {
            redis::cmd("XADD")
                .arg(&res)
                .arg("*")
                .arg("id")
                .arg(self.route.task)
                .arg("k")
                .arg(ResultKind::Msg.tag())
                .arg("b")
                .arg(&body)
                .exec(c)
        })
    }

    fn recv(&self, deadline: Option<Instant>) -> Option<Payload> {
        let mut down = self.down.borrow_mut();
        loop {
            if let Some(m) = down.queue.pop_front() {
                return Some(Payload::bytes(m));
            }
            if down.ended || self.is_cancelled() {
                return None;
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            let block = left.map_or(BLOCK, |l| l.min(BLOCK));
            let (key, last) = (down.key.clone(), down.last.clone());
            let reply = self.conn.borrow_mut().try_once(&self.sh.quit, |c| {
                let mut cmd = redis::cmd("XREAD");
                cmd.arg("COUNT").arg(64);
                if !block.is_zero() {
                    cmd.arg("BLOCK").arg(ms(block));
                }
                cmd.arg("STREAMS").arg(&key).arg(&last).query::<Value>(c)
            });
            match reply {
                Ok(v) => {
                    for e in wire::read_reply(&v) {
                        down.last = e.id.clone();
                        if e.get("end").is_some() {
                            down.ended = true;
                        } else if let Some(m) = e.get("m") {
                            down.queue.push_back(m.to_vec());
                        }
                    }
                }
                // The broker is gone for now: the caller sees no message
                // this time; a lost broker ends the worker soon enough.
                Err(_) => std::thread::sleep(Duration::from_millis(50).min(block)),
            }
            if down.queue.is_empty() && deadline.is_some_and(|d| Instant::now() >= d) {
                return None;
            }
        }
    }

    fn is_cancelled(&self) -> bool {
        self.cancel.load(Ordering::Acquire) || self.deadline.is_some_and(|d| Instant::now() >= d)
    }
}

/// Follows the control stream: cancels and stop requests.
fn control_loop(sh: &Shared, mut last: String) {
    let mut conn = Conn::new(sh.broker.clone()).tracked(sh.control_id.clone());
    let key = sh.keys.control();
    while !sh.quit.load(Ordering::Acquire) {
        let reply = conn.try_once(&sh.quit, |c| {
            redis::cmd("XREAD")
                .arg("COUNT")
                .arg(256)
                .arg("BLOCK")
                .arg(ms(BLOCK))
                .arg("STREAMS")
                .arg(&key)
                .arg(&last)
                .query::<Value>(c)
        });
        let v = match reply {
            Ok(v) => v,
            Err(_) => {
                // The broker is away; the main thread decides when that is fatal.
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        for e in wire::read_reply(&v) {
            last = e.id.clone();
            if on_control(sh, &e) {
                // Asked to stop: the main thread's read returns now.
                unblock(&mut conn, &sh.main_id);
            }
        }
    }
}

/// Acts on one control entry; true when it asked this worker to stop.
fn on_control(sh: &Shared, e: &Entry) -> bool {
    let text = |f: &str| e.get(f).and_then(|v| std::str::from_utf8(v).ok());
    match text("op") {
        Some("cancel") => {
            let Some(pool) = text("pool") else {
                return false;
            };
            let which = text("id");
            {
                let mut recent = sh.recent();
                match which {
                    Some("*") => recent.add_pool(pool.to_owned()),
                    Some(id) => match id.parse() {
                        Ok(task) => recent.add_task(Route {
                            pool: pool.to_owned(),
                            task,
                        }),
                        Err(_) => return false,
                    },
                    None => return false,
                }
            }
            let cur = sh.current();
            if let Some(c) = cur.as_ref() {
                if sh.recent().cancelled(&c.route) {
                    c.cancel.store(true, Ordering::Release);
                }
            }
            false
        }
        Some("stop") => {
            let target = text("target").unwrap_or("");
            let mine = target == sh.consumer
                || target == "*"
                || sh
                    .local_pool
                    .as_deref()
                    .is_some_and(|p| target.strip_prefix("pool:") == Some(p));
            if mine {
                sh.stop.store(true, Ordering::Release);
            }
            mine
        }
        _ => false,
    }
}

/// Renews the running entry's lease, and fails a single task the moment
/// it passes its timeout (the task is told through `is_cancelled`).
fn heartbeat_loop(sh: &Shared) {
    let mut conn = Conn::new(sh.broker.clone());
    let tasks = sh.keys.tasks();
    let mut cur = sh.current();
    while !sh.quit.load(Ordering::Acquire) {
        let now = Instant::now();
        let mut wake = now + sh.heartbeat;
        let mut timed_out = None;
        let mut renew = None;
        if let Some(c) = cur.as_mut().filter(|c| !c.finished) {
            if !c.batch {
                if let (Some(d), Some(t)) = (c.deadline, c.timeout) {
                    if now >= d {
                        c.finished = true;
                        c.cancel.store(true, Ordering::Release);
                        timed_out = Some((c.entry.clone(), c.route.clone(), t));
                    } else {
                        wake = wake.min(d);
                    }
                }
            }
            if timed_out.is_none() {
                let due = c.renewed + sh.heartbeat;
                if now >= due {
                    c.renewed = now;
                    renew = Some(c.entry.clone());
                } else {
                    wake = wake.min(due);
                }
            }
        }
        if timed_out.is_some() || renew.is_some() {
            drop(cur);
            if let Some((entry, route, after)) = timed_out {
                let e = ErrorKind::TimedOut { after }.into();
                let _ = write_result(&mut conn, sh, &entry, &route, true, Err(e));
            }
            if let Some(entry) = renew {
                // JUSTID: renewing is not a delivery (the count stays).
                let _ = conn.try_once(&sh.quit, |c| {
                    redis::cmd("XCLAIM")
                        .arg(&tasks)
                        .arg(GROUP)
                        .arg(&sh.consumer)
                        .arg(0)
                        .arg(&entry)
                        .arg("JUSTID")
                        .exec(c)
                });
            }
            cur = sh.current();
            continue;
        }
        let left = wake.saturating_duration_since(Instant::now());
        cur = sh
            .changed
            .wait_timeout(cur, left)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
}

static SIGNALLED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_sig: libc::c_int) {
    SIGNALLED.store(true, Ordering::Release);
}

/// SIGTERM and SIGINT ask the worker to stop after its running task.
fn install_signal_handlers() {
    // SAFETY: the handler only stores to an atomic, which is
    // async-signal-safe; the sigaction struct is fully initialised.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_signal as *const () as libc::sighandler_t;
        libc::sigemptyset(&mut action.sa_mask);
        for sig in [libc::SIGTERM, libc::SIGINT] {
            libc::sigaction(sig, &action, std::ptr::null_mut());
        }
    }
}
