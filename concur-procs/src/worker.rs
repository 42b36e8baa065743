//! Worker mode: what a worker process runs instead of the program's `main`.
//!
//! Four threads. The reader thread reads the parent's channel without ever
//! blocking on anything else: it queues tasks, hands caller messages to the
//! running task and notices cancellation and the parent's end. The main
//! thread runs tasks one after another and sends their results. So a worker
//! always reads while it computes or sends, and the parent always reads
//! (its router thread), which is what keeps large messages in both
//! directions from deadlocking. The flusher thread sends results and
//! messages the main thread held back once their time is up (`Results`).
//! The heartbeat thread moves the progress word's heartbeat while the
//! worker holds work ([`heartbeat`]): it runs no task code, so it beats
//! through the longest task and stops only when the whole process does.
//!
//! How a process gets here is in `entry` (a constructor, before `main`);
//! how its panics are reported, in `panic`.

mod entry;
mod panic;

pub(crate) use entry::{keep_linked, Bootstrap};

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use concur_core::registry;
use concur_core::{ErrorKind, Payload, Port, TaskError, TaskId, WorkerInfo};
use ipc_channel::ipc;

use crate::progress::ProgressWord;
use crate::shm::Body;
use crate::spawn::{ENV_SERVER, WORKER_ARG};
use crate::sys;
use crate::wire::{Down, Frame, Parts, Rx, Tx, Up};

/// Set once this process has entered worker mode.
static ENTERED: AtomicBool = AtomicBool::new(false);

/// True in a worker process: started as one (its first argument is
/// [`WORKER_ARG`] and the bootstrap server is in its environment), or
/// already in worker mode (which removes that variable).
pub(crate) fn is_worker() -> bool {
    ENTERED.load(Ordering::Relaxed)
        || (std::env::args_os().nth(1).is_some_and(|a| a == WORKER_ARG)
            && std::env::var_os(ENV_SERVER).is_some())
}

struct Run {
    id: TaskId,
    name: Arc<str>,
    input: Input,
}

/// A task's input: a body of its own, or its part of a group's body
/// (shared, so a group of small tasks costs no copy per task).
enum Input {
    Own(Body),
    Part(Arc<Body>, std::ops::Range<usize>),
}

impl Input {
    fn as_slice(&self) -> &[u8] {
        match self {
            Input::Own(b) => b.as_slice(),
            Input::Part(b, r) => &b.as_slice()[r.clone()],
        }
    }
}

#[derive(Default)]
struct Inbox {
    queue: VecDeque<Run>,
    cancelled: HashSet<TaskId>,
    running: Option<TaskId>,
    messages: HashMap<TaskId, VecDeque<Payload>>,
    /// Tasks whose caller dropped its handle: `recv` ends once drained.
    gone: HashSet<TaskId>,
}

struct Shared {
    inbox: Mutex<Inbox>,
    cond: Condvar,
    progress: ProgressWord,
    memory_limited: bool,
    heart: Heart,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inbox> {
        self.inbox.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// True while the worker holds a task: queued, running, or ended and
    /// its output still being encoded (the parent counts it in flight until
    /// its result comes, so the heart must beat until then).
    fn holds_work(&self) -> bool {
        let g = self.lock();
        g.running.is_some() || !g.queue.is_empty() || self.progress.is_running()
    }
}

/// How often a worker that holds work beats. The parent's
/// `unresponsive_timeout` is at least five beats (see the builder).
pub(crate) const BEAT_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

/// Beats in a row without work after which the heartbeat sleeps until
/// work comes: an idle worker costs no wake-ups, and one that works in
/// bursts does not pay a wake-up per burst.
const BEAT_PARK_AFTER: u32 = 5;

/// The heartbeat thread's wait (see [`heartbeat`]).
#[derive(Default)]
struct Heart {
    lock: Mutex<()>,
    cond: Condvar,
    /// Set while it sleeps until woken: the reader thread then wakes it
    /// when a task arrives.
    parked: AtomicBool,
}

impl Heart {
    fn lock(&self) -> MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reader thread, after filing a task: wakes the heartbeat if it sleeps.
    fn work_arrived(&self) {
        // SeqCst pairs with the store in `heartbeat`: either it sees the
        // task filed before it parks, or this sees it parked.
        if self.parked.load(Ordering::SeqCst) {
            let _g = self.lock();
            self.cond.notify_one();
        }
    }
}

/// The heartbeat thread: beats every [`BEAT_EVERY`] while the worker holds
/// work, and for [`BEAT_PARK_AFTER`] beats after; then waits without a
/// bound until the reader files a task (nothing to report while the worker
/// holds none; the process ends with `_exit`, which does not wait for
/// this thread).
fn heartbeat(shared: &Shared) {
    let heart = &shared.heart;
    let mut idle = 0u32;
    let mut g = heart.lock();
    loop {
        shared.progress.beat();
        idle = if shared.holds_work() { 0 } else { idle + 1 };
        if idle < BEAT_PARK_AFTER {
            g = heart
                .cond
                .wait_timeout(g, BEAT_EVERY)
                .unwrap_or_else(|e| e.into_inner())
                .0;
            continue;
        }
        heart.parked.store(true, Ordering::SeqCst);
        if !shared.holds_work() {
            g = heart.cond.wait(g).unwrap_or_else(|e| e.into_inner());
        }
        heart.parked.store(false, Ordering::SeqCst);
        idle = 0;
    }
}

/// Starts a worker thread named `name` that allocates once, then says so
/// on `started`, then runs `body`: a thread's allocator arena must exist
/// before the memory limit applies, so the worker waits for `started`
/// before it sets one (the thread owns that sender: a thread that died
/// first ends the wait).
fn spawn_armed(
    name: &str,
    stack: Option<usize>,
    started: std::sync::mpsc::Sender<()>,
    body: impl FnOnce() + Send + 'static,
) -> Result<(), String> {
    let mut builder = std::thread::Builder::new().name(name.into());
    if let Some(size) = stack {
        builder = builder.stack_size(size);
    }
    builder
        .spawn(move || {
            drop(std::hint::black_box(vec![0u8; 64]));
            let _ = started.send(());
            body();
        })
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Exit code of a worker whose own code panicked outside any task (as a
/// Rust program whose `main` panics).
const EXIT_PANICKED: i32 = 101;

/// Runs the worker of an exec'd process and ends the process; never returns.
pub(crate) fn main() -> ! {
    enter(Bootstrap::from_exec)
}

/// Runs the worker of a process the fork server forked (its bootstrap came
/// in the request) and ends the process; never returns.
pub(crate) fn main_forked(boot: Bootstrap) -> ! {
    enter(move || Ok(boot))
}

/// Worker mode, however the process was started: `boot` says how to reach
/// the parent.
fn enter(boot: impl FnOnce() -> Result<Bootstrap, String>) -> ! {
    ENTERED.store(true, Ordering::Relaxed);
    crate::shm::install_allocator();
    entry::prepare();
    panic::install();
    // A panic must not unwind out of here: this may be a constructor,
    // called by C code.
    let code = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(boot))) {
        Ok(Ok(())) => 0,
        Ok(Err(e)) => {
            eprintln!("concur worker (pid {}): {e}", std::process::id());
            sys::EXIT_ORPHANED
        }
        // The panic hook reported it.
        Err(_) => EXIT_PANICKED,
    };
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // `_exit`: no exit handlers and no destructors of a program whose
    // `main` never ran.
    sys::exit_now(code)
}

/// Ends a copy of this worker that a task made with `fork()` and let return
/// from the task: that copy shares the worker's channel and memory but is no
/// worker (the pool never started it), so it must not read, send or run
/// another task. It leaves at once, without running destructors that would
/// touch the worker's shared state.
fn leave_if_forked_copy(worker_pid: u32) {
    if sys::current_pid() != worker_pid {
        // SAFETY: _exit ends the process without unwinding or running
        // atexit handlers; it touches no memory of ours.
        unsafe { libc::_exit(0) }
    }
}

fn run(boot: impl FnOnce() -> Result<Bootstrap, String>) -> Result<(), String> {
    let worker_pid = std::process::id();
    let (up, token) = boot()?.connect()?;
    let (down_tx, down): (Tx, Rx) = ipc::channel().map_err(|e| e.to_string())?;
    let mut hello = Frame::new(
        &Up::Hello {
            token,
            pid: std::process::id(),
        },
        // Read by the parent before it decodes the header.
        Body::Inline(crate::spawn::identity()),
    )
    .map_err(|e| e.to_string())?;
    hello.chan = Some(down_tx);
    up.send(vec![hello]).map_err(|e| e.to_string())?;
    // Started while the parent answers with init: a thread start is off
    // the path of a replacement worker's first task.
    let results = Results::start(up.clone())?;

    let first = down
        .recv()
        .ok()
        .and_then(|p| p.into_iter().next())
        .ok_or("parent closed the channel before init")?;
    let mut first = first;
    let progress = first
        .shm
        .take()
        .map(ProgressWord::received)
        .ok_or("init without a progress word")?;
    let (head, init_body) = first.open::<Down>().map_err(|e| e.to_string())?;
    let Down::Init {
        index,
        incarnation,
        memory_limit,
        initializer,
        shm_threshold,
        hold_results,
    } = head
    else {
        return Err("first message is not init".into());
    };
    let info = WorkerInfo::current(index, incarnation);
    panic::set_index(index);

    let shared = Arc::new(Shared {
        inbox: Mutex::new(Inbox::default()),
        cond: Condvar::new(),
        progress,
        memory_limited: memory_limit.is_some(),
        heart: Heart::default(),
    });
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    spawn_armed(
        "concur-procs-heartbeat",
        Some(64 * 1024),
        started_tx.clone(),
        {
            let shared = shared.clone();
            move || heartbeat(&shared)
        },
    )?;
    spawn_armed("concur-procs-reader", None, started_tx, {
        let shared = shared.clone();
        let up = up.clone();
        move || read(&down, &up, &shared)
    })?;
    if memory_limit.is_some() {
        // Their arenas must exist before the limit applies; without a
        // limit the worker does not wait for the threads to be scheduled.
        let _ = started_rx.recv();
        let _ = started_rx.recv();
    }

    if let Some(limit) = memory_limit {
        // An allocation failure is recognised by the errno it leaves; a
        // backtrace printed on the way to the abort would overwrite it.
        for var in ["RUST_BACKTRACE", "RUST_LIB_BACKTRACE"] {
            std::env::remove_var(var);
        }
        sys::limit_memory(limit).map_err(|e| format!("cannot set the memory limit: {e}"))?;
    }

    let ready = match initializer {
        None => Ok(()),
        Some(name) => {
            let name: Arc<str> = name.into();
            panic::set_task(Some(panic::Running::Task(name.clone())));
            let ready = registry::lookup(&name)
                .and_then(|entry| entry.run(init_body.as_slice(), &concur_core::NullPort, info))
                .map(drop);
            leave_if_forked_copy(worker_pid);
            panic::set_task(None);
            ready
        }
    };
    let failed = ready.is_err();
    let msg = match ready {
        Ok(()) => Up::Ready,
        Err(e) => Up::InitFailed(e),
    };
    send(&up, &msg, Body::Empty);
    if failed {
        return Ok(());
    }

    let mut last: Option<(Arc<str>, &'static registry::TaskEntry)> = None;
    loop {
        let job = {
            let mut g = shared.lock();
            loop {
                if let Some(job) = g.queue.pop_front() {
                    if g.cancelled.remove(&job.id) {
                        drop(g);
                        let err = Err(TaskError::new(ErrorKind::Cancelled));
                        results.push(job.id, err, Body::Empty);
                        g = shared.lock();
                        continue;
                    }
                    if job.id == SHUTDOWN {
                        break None;
                    }
                    g.running = Some(job.id);
                    break Some(job);
                }
                // Nothing ready: what is held back goes out before waiting.
                if !results.is_empty() {
                    drop(g);
                    results.flush();
                    g = shared.lock();
                    continue;
                }
                g = shared.cond.wait(g).unwrap_or_else(|e| e.into_inner());
            }
        };
        let Some(mut job) = job else {
            results.flush();
            return Ok(());
        };
        // Before decoding: decoding runs the task type's own code.
        shared.progress.begin(job.id.0);
        // A function task is reported by its function, as its errors are.
        let running = (&*job.name == concur_core::FN_TASK_NAME)
            .then(|| concur_core::function_task_name(job.input.as_slice()))
            .flatten()
            .map_or_else(
                || panic::Running::Task(job.name.clone()),
                panic::Running::Function,
            );
        panic::set_task(Some(running));
        let port = WorkerPort {
            id: job.id,
            results: &results,
            shared: shared.clone(),
            threshold: shm_threshold,
        };
        // Tasks of a group share their name: look it up once per name.
        let entry = match &last {
            Some((name, entry)) if Arc::ptr_eq(name, &job.name) => Ok(*entry),
            _ => registry::lookup(&job.name),
        };
        if let Ok(e) = entry {
            last = Some((job.name.clone(), e));
        }
        // The regions of the input's `SharedBytes`, for its decoding.
        let views = match &mut job.input {
            Input::Own(body) => body.take_views(),
            Input::Part(..) => Vec::new(),
        };
        let output = entry.and_then(|entry| {
            concur_core::shared::provide_regions(views, || {
                entry.run(job.input.as_slice(), &port, info)
            })
        });
        leave_if_forked_copy(worker_pid);
        drop(port);
        drop(job.input);
        {
            let mut g = shared.lock();
            g.running = None;
            g.messages.remove(&job.id);
            g.gone.remove(&job.id);
        }
        // A panic in the output's `Serialize` is the task's panic (the
        // payload's encoders catch it).
        let encoded = output.and_then(|value| Body::encode(&value, shm_threshold));
        let (result, body) = match encoded {
            Ok(body) => (Ok(()), body),
            Err(e) => (Err(e), Body::Empty),
        };
        panic::set_task(None);
        if hold_results {
            results.push(job.id, result, body);
            shared.progress.end();
            if results.due() {
                results.flush();
            }
        } else {
            shared.progress.end();
            results.send(job.id, result, body);
        }
    }
}

/// Results and messages held back to leave together, so a burst of small
/// tasks, or a task streaming small messages, costs one send per packet
/// rather than one per item.
///
/// - A finished task's result waits while more tasks are ready to run (up
///   to a packet's size, a few descriptors and [`HOLD_AT_MOST`]), and
///   consecutive small results share one frame (`Up::DoneGroup`). The
///   parent learns which task runs from the progress word, not from these
///   messages, so holding them back never blurs blame or timeouts.
/// - A task's message goes at once (with what is held ahead of it) when
///   it is the task's first, or the task's previous one is older than
///   [`MESSAGE_HOLD`]: a lone message (progress, "started", a pid) costs
///   no delay, and a task that sends one and then crashes still delivers
///   it. A message that follows another within [`MESSAGE_HOLD`] is part of
///   a stream: small ones wait (up to a packet's size and
///   [`MESSAGE_HOLD`]) and consecutive ones share one frame
///   (`Up::MessageGroup`). Held messages also go before the task waits in
///   `recv` (it may wait for the answer to what it sent), and its result
///   always comes after them, in the same order as everything held. Large
///   (shared-memory) messages go at once, after what is held.
///
/// Held items are bounded in time by the flusher thread ([`flusher`]): a
/// task that sends a message and then computes for a minute does not keep
/// its caller waiting, nor does a finished task's result wait for the next
/// task to end. If the worker dies, what it held dies with it, as any
/// output in flight would: the running task fails with `WorkerLost` (or is
/// run again under `retries`), and the messages of a stream it sent in the
/// last [`MESSAGE_HOLD`] before it died may never reach the caller (its
/// first message, and any sent after a pause, always do).
struct Results {
    up: Tx,
    /// Sends happen under this lock, so packets leave in the order their
    /// items were held, whichever thread flushes.
    held: Mutex<Held>,
    /// Wakes the flusher when something is held and nothing was.
    timer: Condvar,
    /// True while something is held: read without the lock by the main
    /// loop, under the inbox lock (only the task thread holds items, so
    /// it never reads false while its own items wait).
    holding: AtomicBool,
}

#[derive(Default)]
struct Held {
    frames: Vec<Frame>,
    bytes: usize,
    fds: usize,
    /// When the flusher sends what is held.
    deadline: Option<Instant>,
    /// When the oldest held result was held (the main loop sends it after
    /// [`HOLD_AT_MOST`]).
    since: Option<Instant>,
    /// Consecutive small results not yet made a frame.
    ids: Vec<TaskId>,
    results: Vec<Result<(), TaskError>>,
    outputs: Parts,
    /// Consecutive small messages of one task not yet made a frame.
    messages: Option<MessageRun>,
    /// The task that sent the last message, and when (kept across sends).
    last_message: Option<(TaskId, Instant)>,
    /// The flusher's plans (kept across sends).
    timer: Timer,
}

/// When the flusher wakes next. While items keep coming it ticks (every
/// [`MESSAGE_HOLD`] while messages are held, else every [`HOLD_AT_MOST`])
/// instead of sleeping until woken, so that holding an item seldom costs
/// a wake-up system call and a switch to the flusher (a task exchanging
/// messages with its caller, or a worker going idle between pipelined
/// tasks, would otherwise pay one each time); after [`PARK_AFTER`] ticks
/// with nothing held, it sleeps until woken.
#[derive(Default, Clone, Copy)]
struct Timer {
    /// `None` while it sleeps until woken.
    wake_at: Option<Instant>,
    /// Something was held since the last tick.
    active: bool,
    /// A message was held since the last tick.
    messages: bool,
    /// Ticks in a row with nothing held.
    idle_ticks: u32,
}

/// Idle ticks after which the flusher sleeps until woken.
const PARK_AFTER: u32 = 8;

/// The small messages of one task, sent one after another.
struct MessageRun {
    id: TaskId,
    parts: Parts,
}

impl Held {
    /// Makes the consecutive small results, or messages, one frame (at
    /// most one kind is open: opening one closes the other, which keeps
    /// their order).
    fn close_group(&mut self) {
        if let Some(run) = self.messages.take() {
            let head = Up::MessageGroup {
                id: run.id,
                ends: run.parts.ends,
            };
            self.frames
                .push(frame(&head, Body::inline(run.parts.bytes)));
        }
        if self.ids.is_empty() {
            return;
        }
        let outputs = std::mem::take(&mut self.outputs);
        let head = Up::DoneGroup {
            ids: std::mem::take(&mut self.ids),
            results: std::mem::take(&mut self.results),
            ends: outputs.ends,
        };
        let body = Body::inline(outputs.bytes);
        self.frames.push(frame(&head, body));
    }

    /// Holds a whole frame.
    fn push_frame(&mut self, f: Frame) {
        self.close_group();
        self.bytes += f.head.0.len() + f.body.0.len();
        self.fds += f.descriptors();
        self.frames.push(f);
    }

    /// True when a packet is full.
    fn full(&self) -> bool {
        self.bytes >= PACKET_BYTES || self.fds >= crate::wire::PACKET_FDS
    }

    /// Holds until `now + bound` at most; true when the flusher would
    /// wake too late for that (it needs waking).
    fn bound(&mut self, now: Instant, bound: std::time::Duration) -> bool {
        let at = now + bound;
        if self.deadline.is_some_and(|d| d <= at) {
            return false;
        }
        self.deadline = Some(at);
        self.timer.wake_at.is_none_or(|w| w > at)
    }
}

fn frame(head: &Up, body: Body) -> Frame {
    match Frame::new(head, body) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("concur-procs worker: {e}");
            sys::exit_now(sys::EXIT_ORPHANED)
        }
    }
}

/// How long the main loop holds finished tasks' results back while it
/// runs more tasks (checked between tasks; see [`RESULT_BACKSTOP`]).
const HOLD_AT_MOST: std::time::Duration = std::time::Duration::from_millis(1);

/// When the flusher sends held results: the main loop sends them after
/// [`HOLD_AT_MOST`] between tasks, so in a burst the flusher never has to
/// (and never takes the lock from the loop); it sends those held behind a
/// task that runs long.
const RESULT_BACKSTOP: std::time::Duration = std::time::Duration::from_millis(2);

/// The longest a task's message is held back: long enough for a task
/// streaming small messages to fill frames of a few hundred, short against
/// anything a caller would notice.
const MESSAGE_HOLD: std::time::Duration = std::time::Duration::from_micros(200);

/// Results and messages smaller than this join their neighbours in one frame.
const SMALL_RESULT: usize = 4096;

/// The bytes of a body small enough to join its neighbours in one frame
/// (a result or a message under [`SMALL_RESULT`]); `None` for others.
fn small_bytes(body: &Body) -> Option<&[u8]> {
    match body {
        Body::Empty => Some(&[]),
        Body::Inline(v) if v.len() < SMALL_RESULT => Some(v),
        _ => None,
    }
}

/// Held bytes that make a packet full.
const PACKET_BYTES: usize = 64 * 1024;

/// Bytes a held item costs beyond its payload (ids, ends, a result).
const ITEM_OVERHEAD: usize = 16;

impl Results {
    /// The results of this worker, and their flusher thread (started
    /// here, before any memory limit applies, as the reader thread is).
    fn start(up: Tx) -> Result<Arc<Self>, String> {
        let results = Arc::new(Results {
            up,
            held: Mutex::new(Held::default()),
            timer: Condvar::new(),
            holding: AtomicBool::new(false),
        });
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        spawn_armed("concur-procs-flusher", None, started_tx, {
            let results = results.clone();
            move || flusher(&results)
        })?;
        let _ = started_rx.recv();
        Ok(results)
    }

    fn lock(&self) -> MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_empty(&self) -> bool {
        !self.holding.load(Ordering::Acquire)
    }

    /// Holds a task's result.
    fn push(&self, id: TaskId, result: Result<(), TaskError>, body: Body) {
        let mut h = self.lock();
        let now = Instant::now();
        h.since.get_or_insert(now);
        h.timer.active = true;
        if h.bound(now, RESULT_BACKSTOP) {
            self.timer.notify_one();
        }
        self.add(&mut h, id, result, body);
    }

    /// Sends a task's result now, with what is held ahead of it. The
    /// flusher is not woken for it: a pool without retries holds no
    /// result across a task start, and waking the flusher for a result
    /// sent at once cost a thread wake-up per task.
    fn send(&self, id: TaskId, result: Result<(), TaskError>, body: Body) {
        let mut h = self.lock();
        self.add(&mut h, id, result, body);
        self.send_held(h);
    }

    /// Adds a result to what is held.
    fn add(&self, h: &mut Held, id: TaskId, result: Result<(), TaskError>, body: Body) {
        self.holding.store(true, Ordering::Release);
        let Some(bytes) = small_bytes(&body) else {
            h.push_frame(frame(&Up::Done { id, result }, body));
            return;
        };
        // Messages held before this result stay ahead of it.
        if h.messages.is_some() {
            h.close_group();
        }
        h.bytes += bytes.len() + ITEM_OVERHEAD;
        h.outputs.push(bytes);
        h.ids.push(id);
        h.results.push(result);
    }

    /// Holds (or, when large or a packet is full, sends) a message from
    /// task `id` to its caller.
    fn push_message(&self, id: TaskId, body: Body) {
        let mut h = self.lock();
        self.holding.store(true, Ordering::Release);
        let small = small_bytes(&body);
        let now = Instant::now();
        let streaming = h.last_message.replace((id, now)).is_some_and(|(last, at)| {
            last == id && now.saturating_duration_since(at) < MESSAGE_HOLD
        });
        let Some(bytes) = small.filter(|_| streaming) else {
            // Alone, or large (shared memory, already written): nothing
            // to gain by waiting.
            h.push_frame(frame(&Up::Message { id }, body));
            self.send_held(h);
            return;
        };
        if !h.ids.is_empty() || h.messages.as_ref().is_some_and(|m| m.id != id) {
            h.close_group();
        }
        h.bytes += bytes.len() + ITEM_OVERHEAD;
        h.messages
            .get_or_insert_with(|| MessageRun {
                id,
                parts: Parts::default(),
            })
            .parts
            .push(bytes);
        if h.full() {
            self.send_held(h);
        } else {
            h.timer.active = true;
            h.timer.messages = true;
            if h.bound(now, MESSAGE_HOLD) {
                self.timer.notify_one();
            }
        }
    }

    /// True when what is held back must go now.
    fn due(&self) -> bool {
        let h = self.lock();
        let now = Instant::now();
        h.full()
            || h.deadline.is_some_and(|d| now >= d)
            || h.since
                .is_some_and(|t| now.saturating_duration_since(t) >= HOLD_AT_MOST)
    }

    fn flush(&self) {
        let h = self.lock();
        self.send_held(h);
    }

    /// Sends everything held, still under the lock (see [`Results::held`]).
    fn send_held(&self, mut h: MutexGuard<'_, Held>) {
        h.close_group();
        let frames = std::mem::take(&mut h.frames);
        *h = Held {
            last_message: h.last_message,
            timer: h.timer,
            ..Held::default()
        };
        self.holding.store(false, Ordering::Release);
        if !frames.is_empty() && self.up.send(frames).is_err() {
            // The parent is gone, or our channel to it broke: nobody can
            // get the result.
            sys::exit_channel_lost();
        }
    }
}

/// The flusher thread: sends what is held once its deadline passes (see
/// [`Timer`]). Waits without a bound only while nothing is held and nothing
/// was since its last tick (nothing to deliver; the process ends with
/// `_exit`, which does not wait for this thread).
fn flusher(results: &Results) {
    let mut h = results.lock();
    loop {
        let now = Instant::now();
        if h.deadline.is_some_and(|d| d <= now) {
            results.send_held(h);
            h = results.lock();
            continue;
        }
        let wake_at = h.deadline.or_else(|| {
            let t = &mut h.timer;
            t.idle_ticks = if t.active { 0 } else { t.idle_ticks + 1 };
            let period = if t.messages {
                MESSAGE_HOLD
            } else {
                HOLD_AT_MOST
            };
            t.active = false;
            t.messages = false;
            (t.idle_ticks < PARK_AFTER).then_some(now + period)
        });
        h.timer.wake_at = wake_at;
        h = match wake_at {
            None => results.timer.wait(h).unwrap_or_else(|e| e.into_inner()),
            Some(at) => {
                results
                    .timer
                    .wait_timeout(h, at - now)
                    .unwrap_or_else(|e| e.into_inner())
                    .0
            }
        };
    }
}

/// A shutdown marker: `running` set with an empty queue tells the main loop to end.
const SHUTDOWN: TaskId = TaskId(0);

fn send(up: &Tx, head: &Up, body: Body) {
    if up.send(vec![frame(head, body)]).is_err() {
        // The parent is gone, or our channel to it broke: nobody can get
        // the result.
        sys::exit_channel_lost();
    }
}

/// The reader thread. Never waits on the task thread; its only send is the
/// answer to a recall (the parent's router always reads, so it cannot block
/// for long).
fn read(down: &Rx, up: &Tx, shared: &Shared) {
    loop {
        // Receiving maps large inputs' shared memory and allocates their
        // buffers; under a memory limit that can fail (an error, or a panic
        // in older ipc-channel code): the worker cannot take the task, so
        // it ends with an exit code that makes the parent blame the next
        // task it had not received. Any other exit there would have that
        // task sent again, for ever.
        let unreadable = if shared.memory_limited {
            sys::EXIT_MEMORY_LIMIT
        } else {
            sys::EXIT_UNREADABLE_INPUT
        };
        let packet = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| down.recv())) {
            Ok(Ok(p)) => p,
            // The parent ended or dropped us: stop now, busy or idle.
            Ok(Err(ipc_channel::IpcError::Disconnected)) => sys::exit_now(sys::EXIT_ORPHANED),
            Ok(Err(_)) | Err(_) => sys::exit_now(unreadable),
        };
        let mut given_back = Vec::new();
        let mut work = false;
        let mut g = shared.lock();
        for frame in packet {
            let Ok((head, body)) = frame.open::<Down>() else {
                sys::exit_now(unreadable)
            };
            if matches!(head, Down::Run { .. } | Down::RunGroup { .. }) {
                shared.progress.count_received();
                work = true;
            }
            take(&mut g, head, body, &mut given_back);
        }
        shared.cond.notify_all();
        drop(g);
        if work {
            shared.heart.work_arrived();
        }
        if !given_back.is_empty() {
            send(up, &Up::Recalled { ids: given_back }, Body::Empty);
        }
    }
}

/// Files one frame from the parent; tasks given back go to `given_back`.
fn take(g: &mut Inbox, head: Down, body: Body, given_back: &mut Vec<TaskId>) {
    match head {
        Down::Recall { ids } => {
            g.queue.retain(|r| {
                let back = ids.contains(&r.id);
                if back {
                    given_back.push(r.id);
                }
                !back
            });
            for id in given_back.iter() {
                g.messages.remove(id);
                g.gone.remove(id);
                g.cancelled.remove(id);
            }
        }
        Down::Run { id, name } => g.queue.push_back(Run {
            id,
            name: name.into(),
            input: Input::Own(body),
        }),
        Down::RunGroup { name, ids, ends } => {
            let name: Arc<str> = name.into();
            // The parent built the group; a group that does not add up
            // is a broken parent: nothing sensible to run.
            let Some(parts) =
                crate::wire::ranges(body.as_slice().len(), &ends).filter(|p| p.len() == ids.len())
            else {
                sys::exit_now(sys::EXIT_ORPHANED)
            };
            let body = Arc::new(body);
            for (id, part) in ids.into_iter().zip(parts) {
                g.queue.push_back(Run {
                    id,
                    name: name.clone(),
                    input: Input::Part(body.clone(), part),
                });
            }
        }
        Down::Deliver { id } => g
            .messages
            .entry(id)
            .or_default()
            .push_back(body.into_payload()),
        Down::Cancel { id } => {
            if g.running == Some(id) {
                sys::exit_now(sys::EXIT_CANCELLED);
            }
            if g.queue.iter().any(|r| r.id == id) {
                g.cancelled.insert(id);
            }
        }
        Down::CallerGone { id } => {
            g.gone.insert(id);
        }
        Down::Shutdown => {
            // Queue a marker: the main loop ends when it reaches it.
            g.queue.push_back(Run {
                id: SHUTDOWN,
                name: "".into(),
                input: Input::Own(Body::Empty),
            });
        }
        Down::Init { .. } => {}
    }
}

/// A running task's link to its caller, through the parent.
struct WorkerPort<'a> {
    id: TaskId,
    results: &'a Results,
    shared: Arc<Shared>,
    threshold: usize,
}

impl Port for WorkerPort<'_> {
    fn send(&self, msg: Payload) -> Result<(), TaskError> {
        let body = Body::encode(&msg, self.threshold)?;
        // In order after the results held back; sent within
        // `MESSAGE_HOLD`, or sooner (see `Results`).
        self.results.push_message(self.id, body);
        Ok(())
    }

    fn recv(&self, deadline: Option<Instant>) -> Option<Payload> {
        let mut g = self.shared.lock();
        let mut flushed = false;
        loop {
            if let Some(m) = g.messages.get_mut(&self.id).and_then(VecDeque::pop_front) {
                return Some(m);
            }
            if g.gone.contains(&self.id) {
                return None;
            }
            if !flushed && deadline.is_none_or(|d| Instant::now() < d) {
                // About to wait: the caller may be waiting for what this
                // task sent before it answers. Not under the inbox lock
                // (the reader thread takes it to file the answer).
                flushed = true;
                drop(g);
                self.results.flush();
                g = self.shared.lock();
                continue;
            }
            g = match deadline {
                None => self.shared.cond.wait(g).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return None;
                    }
                    self.shared
                        .cond
                        .wait_timeout(g, d - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
    }

    fn is_cancelled(&self) -> bool {
        // A cancelled running task is stopped by ending its worker.
        false
    }
}
