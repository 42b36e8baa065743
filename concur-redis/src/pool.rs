//! [`RedisPool`]: the submitter's side. Tasks go out through a sender
//! thread (several submissions leave as one pipeline of `XADD`s); results
//! come back through a reader thread that follows the pool's own result
//! stream; every handle still waiting is kept in one table, and the first
//! result for a task id finishes it (later copies, from a task run twice,
//! are dropped).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use concur_core::codec;
use concur_core::{
    encode_batch_items, registry, Admission, BatchHandle, Capabilities, Completion, ErrorKind,
    Executor, Link, Payload, Permit, Task, TaskError, TaskHandle, TaskId,
};
use redis::{Connection, Value};

use crate::conn::{ensure_group, is_lost, to_task_error, Broker, BrokerError, Conn, Unreachable};
use crate::keys::Keys;
use crate::local::Local;
use crate::wire::{self, ResultEntry, ResultKind, FN_TASK_NAME, PROTOCOL};
use crate::worker::RESULT_TTL;

/// Longest blocking read of the result stream (the reader sees a stop
/// within it).
const READ_BLOCK: Duration = Duration::from_millis(250);
/// Most submissions sent in one pipeline.
const SEND_BATCH: usize = 512;
/// How long local workers get to finish their task when the pool stops
/// with `shutdown_now` (`shutdown` gives them the reconnect timeout).
const STOP_NOW_GRACE: Duration = Duration::from_secs(2);

/// The settings a pool runs with.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) workers: usize,
    pub(crate) timeout: Option<Duration>,
    pub(crate) retries: u32,
    pub(crate) reconnect: Duration,
}

/// A handle still waiting for its result.
struct Waiting {
    completion: Completion,
    /// The task's entry id, once the broker has taken it.
    entry: Option<String>,
}

/// A submission not yet sent.
struct Outgoing {
    id: u64,
    name: &'static str,
    batch: bool,
    body: Vec<u8>,
}

#[derive(Default)]
struct State {
    waiting: HashMap<u64, Waiting>,
    outbox: VecDeque<Outgoing>,
}

/// What the pool's threads share.
pub(crate) struct Inner {
    pub(crate) id: String,
    pub(crate) keys: Keys,
    broker: Arc<Broker>,
    settings: Settings,
    admission: Admission,
    state: Mutex<State>,
    /// Waiting handles changed (one finished), or the pool stops.
    changed: Condvar,
    /// The outbox has work, or the pool stops: the sender's wake-up (apart
    /// from `changed`, which every result notifies).
    outgoing: Condvar,
    /// Calls on the submitter's behalf that are not submissions: messages
    /// to tasks, cancels, stop requests.
    side: Mutex<Conn>,
    closed: AtomicBool,
    /// The reader and sender threads must end.
    quit: AtomicBool,
    /// The reader's client id, so that a stop ends its blocking read.
    reader_id: AtomicU64,
    /// The pool gave up on the broker (unreachable past the reconnect
    /// bound; every waiting handle failed) and has not reached it since:
    /// stopping skips the calls that would only wait for it again.
    gone: AtomicBool,
    pub(crate) local: Option<Local>,
}

impl Inner {
    pub(crate) fn new(
        id: String,
        keys: Keys,
        broker: Arc<Broker>,
        settings: Settings,
        queue_bound: usize,
        local: Option<Local>,
    ) -> Self {
        Self {
            id,
            keys,
            side: Mutex::new(Conn::new(broker.clone())),
            broker,
            settings,
            admission: Admission::new(queue_bound),
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            outgoing: Condvar::new(),
            closed: AtomicBool::new(false),
            quit: AtomicBool::new(false),
            reader_id: AtomicU64::new(0),
            gone: AtomicBool::new(false),
            local,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn side(&self) -> MutexGuard<'_, Conn> {
        self.side.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Finishes task `id` with `r` unless it is already done; the first
    /// result wins.
    fn finish(&self, id: u64, r: Result<Payload, TaskError>) {
        let w = self.state().waiting.remove(&id);
        if let Some(w) = w {
            w.completion.finish(r);
            self.changed.notify_all();
        }
    }

    /// Waits `d`, or less if the pool stops meanwhile (the reader's
    /// backoff between attempts to reach a lost broker).
    fn pause(&self, d: Duration) {
        let deadline = Instant::now() + d;
        let mut s = self.state();
        while !self.quit.load(Ordering::Acquire) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            s = self
                .changed
                .wait_timeout(s, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Notes that a call found the broker gone (`lost`), so that stopping
    /// does not wait for it again. The one place that sets `gone`; only
    /// the reader, on reaching the broker again, clears it.
    fn note_lost(&self, lost: bool) {
        if lost {
            self.gone.store(true, Ordering::Release);
        }
    }

    /// Fails every waiting handle with `e` (and drops what was not sent);
    /// gives the entries of those that were.
    fn fail_all(&self, e: &TaskError) -> Vec<String> {
        let all: Vec<Waiting> = {
            let mut s = self.state();
            s.outbox.clear();
            s.waiting.drain().map(|(_, w)| w).collect()
        };
        let entries = all.iter().filter_map(|w| w.entry.clone()).collect();
        for w in all {
            w.completion.finish(Err(e.clone()));
        }
        self.changed.notify_all();
        entries
    }

    /// Every waiting task fails with `e`, its entry is deleted and the
    /// workers are told: the local workers cannot be kept running, or the
    /// pool stops now (`patient` as for [`Self::cancel_entries`]).
    fn fail_and_cancel(&self, e: &TaskError, patient: bool) {
        let entries = self.fail_all(e);
        self.cancel_entries(&entries, None, patient);
    }

    /// The local workers cannot be kept running (see [`Self::fail_and_cancel`]).
    pub(crate) fn fail_pool(&self, why: &str) {
        self.fail_and_cancel(
            &TaskError::new(ErrorKind::PoolFailed {
                reason: why.to_owned(),
            }),
            true,
        );
    }

    fn enqueue(&self, completion: &Completion, name: &'static str, batch: bool, body: Vec<u8>) {
        let id = completion.id().0;
        let mut s = self.state();
        s.waiting.insert(
            id,
            Waiting {
                completion: completion.clone(),
                entry: None,
            },
        );
        s.outbox.push_back(Outgoing {
            id,
            name,
            batch,
            body,
        });
        drop(s);
        self.outgoing.notify_one();
    }

    fn check_open(&self) -> Result<(), TaskError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(ErrorKind::ShutDown.into());
        }
        if let Some(why) = self.local.as_ref().and_then(Local::failed) {
            return Err(ErrorKind::PoolFailed { reason: why }.into());
        }
        Ok(())
    }

    /// Sends `f`'s commands on the side connection (bounded reconnect).
    fn side_call(
        &self,
        f: impl FnMut(&mut Connection) -> Result<(), redis::RedisError>,
    ) -> Result<(), TaskError> {
        self.side().run(&self.quit, f)
    }

    /// Appends `field` = `value` to task `id`'s down stream, whose expiry
    /// each append renews (a task that never reads it leaves no key).
    fn send_down(&self, id: TaskId, field: &str, value: &[u8]) -> Result<(), TaskError> {
        let key = self.keys.down(&self.id, id.0);
        self.side_call(|c| {
            redis::pipe()
                .cmd("XADD")
                .arg(&key)
                .arg("*")
                .arg(field)
                .arg(value)
                .ignore()
                .cmd("PEXPIRE")
                .arg(&key)
                .arg(RESULT_TTL.as_millis() as u64)
                .ignore()
                .exec(c)
        })
    }

    /// Deletes the entries of tasks that will not be run and tells the
    /// workers (`id` `None`: every task of this pool). `patient`: keeps
    /// reconnecting to a lost broker within the reconnect bound; otherwise
    /// one attempt (a pool stopping now does not wait for a broker that is
    /// away: its local workers are stopped anyway). A broker found gone is
    /// noted, so stopping does not wait for it again.
    fn cancel_entries(&self, entries: &[String], id: Option<u64>, patient: bool) {
        let tasks = self.keys.tasks();
        let control = self.keys.control();
        let pool = self.id.clone();
        let which = id.map_or_else(|| "*".to_owned(), |i| i.to_string());
        let cancel = |c: &mut Connection| {
            let mut p = redis::pipe();
            if !entries.is_empty() {
                p.cmd("XDEL").arg(&tasks).arg(entries).ignore();
            }
            p.add_command(control_request(
                &control,
                "cancel",
                &[("pool", &pool), ("id", &which)],
            ))
            .ignore();
            p.exec(c)
        };
        if patient {
            let r = self.side_call(cancel);
            self.note_lost(r.is_err_and(|e| is_lost(&e)));
        } else {
            let once = AtomicBool::new(true);
            let r = self.side().try_once(&once, cancel);
            self.note_lost(r.is_err_and(|e| e.io));
        }
    }
}

impl Link for Inner {
    fn deliver(&self, id: TaskId, msg: Payload) -> Result<(), TaskError> {
        self.send_down(id, "m", &msg.to_bytes()?)
    }

    fn cancel_running(&self, id: TaskId) {
        let w = self.state().waiting.remove(&id.0);
        self.changed.notify_all();
        let entries: Vec<String> = w.and_then(|w| w.entry).into_iter().collect();
        self.cancel_entries(&entries, Some(id.0), true);
    }

    fn caller_gone(&self, id: TaskId) {
        let _ = self.send_down(id, "end", b"1");
    }
}

/// The sender thread: takes what is queued, sends it as one pipeline,
/// notes each entry id (a task cancelled meanwhile has its entry deleted).
pub(crate) fn sender_loop(inner: &Inner) {
    let mut conn = Conn::new(inner.broker.clone());
    let build = concur_core::build::build_id();
    let tasks = inner.keys.tasks();
    let retries = inner.settings.retries.to_string();
    let timeout = inner
        .settings
        .timeout
        .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX).to_string());
    loop {
        let batch: Vec<Outgoing> = {
            let mut s = inner.state();
            while s.outbox.is_empty() && !inner.quit.load(Ordering::Acquire) {
                s = inner.outgoing.wait(s).unwrap_or_else(|e| e.into_inner());
            }
            if s.outbox.is_empty() {
                return;
            }
            let n = s.outbox.len().min(SEND_BATCH);
            s.outbox.drain(..n).collect()
        };
        let sent = conn.run(&inner.quit, |c| {
            let mut p = redis::pipe();
            for o in &batch {
                let x = p.cmd("XADD").arg(&tasks).arg("*");
                x.arg("v").arg(PROTOCOL).arg("build").arg(build);
                x.arg("name").arg(o.name).arg("pool").arg(&inner.id);
                x.arg("id").arg(o.id);
                x.arg("kind").arg(if o.batch { "batch" } else { "one" });
                x.arg("retries").arg(&retries);
                if let Some(t) = &timeout {
                    x.arg("timeout").arg(t);
                }
                x.arg("body").arg(&o.body);
            }
            p.query::<Vec<Value>>(c)
        });
        match sent {
            Ok(ids) => {
                let mut orphans = Vec::new();
                {
                    let mut s = inner.state();
                    for (o, id) in batch.iter().zip(ids) {
                        let Some(id) = wire::text(&id) else { continue };
                        match s.waiting.get_mut(&o.id) {
                            Some(w) => w.entry = Some(id),
                            None => orphans.push(id),
                        }
                    }
                }
                if !orphans.is_empty() {
                    // Cancelled while on their way: never run them.
                    let _ =
                        inner.side_call(|c| redis::cmd("XDEL").arg(&tasks).arg(&orphans).exec(c));
                }
            }
            Err(e) => {
                // Past the reconnect bound the pool gives up on the broker
                // here as the reader does (whichever bound ends first):
                // stopping must not wait for it again.
                inner.note_lost(is_lost(&e));
                for o in &batch {
                    inner.finish(o.id, Err(e.clone()));
                }
            }
        }
    }
}

/// The reader thread: follows the result stream, deleting what it has
/// read; when the broker is gone past the reconnect bound it fails every
/// waiting handle; when the broker comes back as a new server (another run
/// id), it checks which waiting tasks the broker lost and fails them.
pub(crate) fn reader_loop(inner: &Inner, mut run_id: Option<String>) {
    let res = inner.keys.results(&inner.id);
    let mut con: Option<Connection> = None;
    let mut last = "0-0".to_owned();
    let mut read_ids: Vec<String> = Vec::new();
    let mut outage: Option<(Instant, bool)> = None;
    let mut refreshed = Instant::now();
    let mut pause = Duration::from_millis(20);
    while !inner.quit.load(Ordering::Acquire) {
        let c = match &mut con {
            Some(c) => c,
            None => match inner.broker.connect_once() {
                Ok(mut c) => {
                    pause = Duration::from_millis(20);
                    let id: u64 = redis::cmd("CLIENT").arg("ID").query(&mut c).unwrap_or(0);
                    inner.reader_id.store(id, Ordering::Release);
                    con.insert(c)
                }
                Err(e) => {
                    on_outage(inner, &mut outage, e);
                    // Backoff: nothing to read until the broker is back.
                    inner.pause(pause);
                    pause = (pause * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
        };
        if outage.take().is_some() {
            inner.gone.store(false, Ordering::Release);
            let now_id = server_run_id(c);
            if now_id.is_some() && run_id.is_some() && now_id != run_id {
                verify_waiting(inner, c, &res, &mut last);
            }
            run_id = now_id.or(run_id);
            let _ = ensure_group(c, &inner.keys.tasks());
        }
        let refresh = refreshed.elapsed() >= RESULT_TTL / 8;
        let reply = {
            let mut p = redis::pipe();
            if !read_ids.is_empty() {
                p.cmd("XDEL").arg(&res).arg(&read_ids).ignore();
            }
            if refresh {
                p.cmd("PEXPIRE")
                    .arg(&res)
                    .arg(RESULT_TTL.as_millis() as u64)
                    .ignore();
            }
            p.cmd("XREAD")
                .arg("COUNT")
                .arg(512)
                .arg("BLOCK")
                .arg(READ_BLOCK.as_millis() as u64)
                .arg("STREAMS")
                .arg(&res)
                .arg(&last);
            p.query::<Vec<Value>>(c)
        };
        match reply {
            Ok(mut v) => {
                read_ids.clear();
                if refresh {
                    refreshed = Instant::now();
                }
                let entries = v.pop().map(|v| wire::read_reply(&v)).unwrap_or_default();
                for e in entries {
                    last = e.id.clone();
                    read_ids.push(e.id.clone());
                    on_result(inner, e);
                }
            }
            Err(e) => {
                let e = BrokerError::new(&e);
                if e.io {
                    con = None;
                    outage.get_or_insert((Instant::now(), false));
                } else {
                    // A command refused (someone replaced the stream with
                    // another type, say): try again shortly.
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }
}

fn on_outage(inner: &Inner, outage: &mut Option<(Instant, bool)>, e: BrokerError) {
    let (since, failed) = outage.get_or_insert((Instant::now(), false));
    let waited = since.elapsed();
    if !*failed && waited >= inner.settings.reconnect {
        *failed = true;
        inner.note_lost(true);
        let err = TaskError::with_source(
            ErrorKind::Io,
            Unreachable {
                url: inner.broker.url().to_owned(),
                waited,
                last: e,
            },
        );
        inner.fail_all(&err);
    }
}

/// The `XADD` of request `op` to the control stream `control`, which is
/// trimmed to about the last 10,000 requests: workers only follow it live.
fn control_request(control: &str, op: &str, fields: &[(&str, &str)]) -> redis::Cmd {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(control)
        .arg("MAXLEN")
        .arg("~")
        .arg(10_000)
        .arg("*")
        .arg("op")
        .arg(op);
    for (k, v) in fields {
        cmd.arg(k).arg(v);
    }
    cmd
}

/// The broker's `run_id`, which changes when it restarts.
pub(crate) fn server_run_id(c: &mut Connection) -> Option<String> {
    let info: String = redis::cmd("INFO").arg("server").query(c).ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("run_id:"))
        .map(|s| s.trim().to_owned())
}

/// After the broker restarted: the waiting tasks whose entries are gone
/// and whose results are not in the result stream were lost with the
/// broker's memory (no `appendonly`): they fail with `Io`.
fn verify_waiting(inner: &Inner, c: &mut Connection, res: &str, last: &mut String) {
    let sent: Vec<(u64, String)> = inner
        .state()
        .waiting
        .iter()
        .filter_map(|(id, w)| Some((*id, w.entry.clone()?)))
        .collect();
    let tasks = inner.keys.tasks();
    let mut missing = Vec::new();
    for chunk in sent.chunks(512) {
        let mut p = redis::pipe();
        for (_, entry) in chunk {
            p.cmd("XRANGE").arg(&tasks).arg(entry).arg(entry);
        }
        let Ok(found) = p.query::<Vec<Value>>(c) else {
            return;
        };
        for ((id, _), v) in chunk.iter().zip(found) {
            if wire::entries(&v).is_empty() {
                missing.push(*id);
            }
        }
    }
    // Results written before the check finish their tasks first.
    loop {
        let Ok(v) = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(4096)
            .arg("STREAMS")
            .arg(res)
            .arg(&*last)
            .query::<Value>(c)
        else {
            return;
        };
        let entries = wire::read_reply(&v);
        if entries.is_empty() {
            break;
        }
        for e in entries {
            *last = e.id.clone();
            on_result(inner, e);
        }
    }
    for id in missing {
        inner.finish(
            id,
            Err(TaskError::with_source(
                ErrorKind::Io,
                BrokerError::other(
                    "the broker restarted and lost the task (run it with appendonly yes)",
                ),
            )),
        );
    }
}

fn on_result(inner: &Inner, e: wire::Entry) {
    // An entry nobody can route is dropped: it finishes no task.
    let Ok(r) = ResultEntry::parse(e) else { return };
    match r.kind {
        ResultKind::Ready => {
            if let Some(local) = &inner.local {
                local.ready(r.task);
            }
        }
        ResultKind::Msg => {
            let s = inner.state();
            if let Some(w) = s.waiting.get(&r.task) {
                w.completion.push_message(Payload::bytes(r.body));
            }
        }
        ResultKind::Ok => inner.finish(r.task, Ok(Payload::bytes(r.body))),
        ResultKind::Err => {
            let e = codec::decode::<TaskError>(&r.body, "error").unwrap_or_else(|e| e);
            inner.finish(r.task, Err(e));
        }
    }
}

/// A pool whose tasks run on workers anywhere, through a Redis queue.
///
/// Build it with [`RedisPool::builder`]. It implements the same
/// [`Executor`] contract as the other backends; see the crate docs for
/// what is guaranteed and what differs (at-least-once across worker
/// deaths; cooperative timeouts and cancels).
pub struct RedisPool {
    pub(crate) inner: Arc<Inner>,
    pub(crate) threads: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for RedisPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisPool")
            .field("queue", &self.inner.keys.queue())
            .field("pool", &self.inner.id)
            .finish()
    }
}

impl RedisPool {
    /// What this backend can do (see [`Executor::capabilities`]): values
    /// are encoded; timeouts and cancels are cooperative (a worker serves
    /// the whole queue and is not killed for one task); a crash fails
    /// only its task and the pool goes on.
    pub const CAPABILITIES: Capabilities = Capabilities {
        shared_memory: false,
        kills_on_timeout: false,
        kills_on_cancel: false,
        isolates_crashes: true,
        memory_limit: false,
        zero_copy_payloads: false,
        function_tasks: false,
    };

    /// A builder for a pool on the broker at `url`
    /// (`redis://[:password@]host[:port][/db]`, `rediss://` with the `tls`
    /// feature).
    pub fn builder(url: &str) -> crate::RedisPoolBuilder {
        crate::RedisPoolBuilder::new(url)
    }

    /// The Redis keys of this pool's queue (for operators and tests).
    pub fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    /// This pool's id: its result stream is `keys().results(id)`.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// What `start` and `start_batch` check before encoding anything: the
    /// pool is open, `T` can run on a worker, and `n` tasks are admitted.
    fn admit<T: Task>(&self, permit: &Permit, n: usize) -> Result<(), TaskError> {
        self.inner.check_open()?;
        if T::NAME == FN_TASK_NAME {
            return Err(crate::error::fn_task_refused());
        }
        self.admission().admits(permit, n)?;
        registry::ensure_registered::<T>()
    }

    /// Stops the local workers (after `grace`) and the pool's threads, and
    /// deletes the pool's result stream. Idempotent.
    ///
    /// A broker the pool has given up on is not waited for again: the
    /// calls to it are skipped (the result stream expires on its own), and
    /// so is the rest of them once one finds it gone; local workers, which
    /// cannot be asked to stop then, get at most [`STOP_NOW_GRACE`].
    fn stop(&self, grace: Duration) {
        let threads: Vec<JoinHandle<()>> =
            std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        if threads.is_empty() {
            return;
        }
        let inner = &self.inner;
        let gone = || inner.gone.load(Ordering::Acquire);
        if let Some(local) = &inner.local {
            let control = inner.keys.control();
            let target = format!("pool:{}", local.pool());
            let asked = !gone()
                && inner
                    .side_call(|c| {
                        control_request(&control, "stop", &[("target", &target)]).exec(c)
                    })
                    .inspect_err(|e| inner.note_lost(is_lost(e)))
                    .is_ok();
            local.stop(if asked {
                grace
            } else {
                grace.min(STOP_NOW_GRACE)
            });
        }
        {
            // Set under the lock the sender and the reader's pause check
            // it under, so that neither misses the wake-up below.
            let _s = inner.state();
            inner.quit.store(true, Ordering::Release);
        }
        inner.changed.notify_all();
        inner.outgoing.notify_all();
        let reader = inner.reader_id.load(Ordering::Acquire);
        let never = AtomicBool::new(false);
        if reader != 0 && !gone() {
            // Reconnects if need be (the side connection may be stale
            // after a broker restart), within one reconnect bound.
            let r = inner.side().run(&never, |c| {
                redis::cmd("CLIENT").arg("UNBLOCK").arg(reader).exec(c)
            });
            inner.note_lost(r.is_err_and(|e| is_lost(&e)));
        }
        for t in threads {
            let _ = t.join();
        }
        if !gone() {
            let res = inner.keys.results(&inner.id);
            let _ = inner
                .side()
                .try_once(&never, |c| redis::cmd("DEL").arg(&res).exec(c));
        }
    }
}

impl Executor for RedisPool {
    fn backend(&self) -> &'static str {
        "redis"
    }

    fn capabilities(&self) -> Capabilities {
        Self::CAPABILITIES
    }

    fn workers(&self) -> usize {
        self.inner.settings.workers
    }

    fn admission(&self) -> &Admission {
        &self.inner.admission
    }

    fn start<T: Task>(&self, task: T, permit: Permit) -> Result<TaskHandle<T>, TaskError> {
        self.admit::<T>(&permit, 1)?;
        let body = Payload::value(task).to_bytes()?;
        let completion = Completion::new(permit, Some(self.inner.clone() as Arc<dyn Link>));
        completion.begin();
        self.inner.enqueue(&completion, T::NAME, false, body);
        Ok(TaskHandle::new(&completion))
    }

    fn start_batch<T: Task>(
        &self,
        tasks: Vec<T>,
        permit: Permit,
    ) -> Result<BatchHandle<T>, TaskError> {
        self.admit::<T>(&permit, tasks.len())?;
        let len = tasks.len();
        // A task that cannot be encoded fails its own slot: the worker
        // passes the error through.
        let items: Vec<Result<Vec<u8>, TaskError>> = tasks
            .into_iter()
            .map(|t| Payload::value(t).to_bytes())
            .collect();
        let body = encode_batch_items(&items)?;
        let completion = Completion::new(permit, Some(self.inner.clone() as Arc<dyn Link>));
        if len == 0 {
            completion.finish(Ok(Payload::bytes(encode_batch_items(&[])?)));
        } else {
            completion.begin();
            self.inner.enqueue(&completion, T::NAME, true, body);
        }
        Ok(BatchHandle::new(&completion, len))
    }

    fn shutdown(&self) -> Result<(), TaskError> {
        self.inner.admission.close();
        self.inner.closed.store(true, Ordering::Release);
        {
            // Waits for the tasks themselves (documented on the trait):
            // bound it with a task timeout or interrupt it with shutdown_now.
            let mut s = self.inner.state();
            while !s.waiting.is_empty() {
                s = self
                    .inner
                    .changed
                    .wait(s)
                    .unwrap_or_else(|e| e.into_inner());
            }
        }
        self.stop(self.inner.settings.reconnect);
        Ok(())
    }

    fn shutdown_now(&self) {
        self.inner.admission.close();
        self.inner.closed.store(true, Ordering::Release);
        self.inner
            .fail_and_cancel(&ErrorKind::Cancelled.into(), false);
        self.stop(STOP_NOW_GRACE);
    }
}

impl Drop for RedisPool {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// A broker error during set-up, as our error.
pub(crate) fn setup_error(e: &redis::RedisError) -> TaskError {
    to_task_error(BrokerError::new(e))
}
