//! [`ThreadPool`]: the executor. Workers are rayon threads grouped in
//! *generations*: a rayon pool cannot retire one thread, so recycling
//! workers (task limit per worker) swaps in a fresh generation while the
//! old one drains and exits.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;

use concur_core::registry::run_batch;
use concur_core::{
    panic, timer, Admission, BatchHandle, Capabilities, Completion, Configure, ErrorKind, Executor,
    Payload, Permit, PoolConfig, Task, TaskContext, TaskError, TaskHandle, TaskId, WorkerInfo,
};

/// A pool of worker threads running [`Task`]s with shared memory.
///
/// Dropping the pool is [`Executor::shutdown`]: queued work finishes and
/// every worker thread is joined.
pub struct ThreadPool {
    inner: Arc<Inner>,
}

/// Builds a [`ThreadPool`]; the settings are those of
/// [`Configure`](concur_core::Configure).
#[derive(Debug, Default, Clone)]
pub struct ThreadPoolBuilder {
    config: PoolConfig,
}

impl Configure for ThreadPoolBuilder {
    fn config_mut(&mut self) -> &mut PoolConfig {
        &mut self.config
    }
}

impl ThreadPoolBuilder {
    /// Default settings.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds the pool and starts its workers.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] naming an invalid setting; [`ErrorKind::Spawn`]
    /// when the threads cannot be started.
    pub fn build(self) -> Result<ThreadPool, TaskError> {
        ThreadPool::with_config(self.config)
    }
}

pub(crate) struct Inner {
    config: PoolConfig,
    workers: usize,
    admission: Admission,
    /// The generation taking new work; `None` once the pool has stopped.
    current: Mutex<Option<Arc<Generation>>>,
    retired: Mutex<Vec<Arc<Generation>>>,
    next_generation: AtomicU64,
    incarnations: Arc<AtomicU64>,
    stopping: AtomicBool,
    /// Tasks submitted and not done, so `shutdown_now` can cancel them all.
    outstanding: Outstanding,
    /// Jobs waiting for a worker, in submission order.
    queue: Mutex<VecDeque<Job>>,
    /// Drain loops running or about to run on rayon threads (at most `workers`).
    drainers: AtomicUsize,
}

/// A unit of work for a drain loop: runs one task, batch or closure.
type Job = Box<dyn FnOnce(&Arc<Inner>) + Send>;

pub(crate) struct Generation {
    id: u64,
    pool: rayon::ThreadPool,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

struct WorkerState {
    info: WorkerInfo,
    generation: u64,
    runs: u64,
}

thread_local! {
    static WORKER: RefCell<Option<WorkerState>> = const { RefCell::new(None) };
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ThreadPool {
    /// What thread pools can do, known without building one: tasks share
    /// the caller's memory and values are moved (zero-copy); a running
    /// thread cannot be killed, so timeouts and cancels only fail the
    /// handle, and a crash takes the whole process.
    pub const CAPABILITIES: Capabilities = Capabilities {
        shared_memory: true,
        kills_on_timeout: false,
        kills_on_cancel: false,
        isolates_crashes: false,
        memory_limit: false,
        zero_copy_payloads: true,
    };

    /// A pool of `workers` threads with default settings.
    ///
    /// # Errors
    /// As [`ThreadPoolBuilder::build`].
    pub fn new(workers: usize) -> Result<Self, TaskError> {
        Self::builder().workers(workers).build()
    }

    /// A builder with default settings.
    pub fn builder() -> ThreadPoolBuilder {
        ThreadPoolBuilder::new()
    }

    /// A pool with `config`.
    ///
    /// # Errors
    /// As [`ThreadPoolBuilder::build`].
    pub fn with_config(config: PoolConfig) -> Result<Self, TaskError> {
        config.validate()?;
        let workers = config.worker_count();
        let incarnations = Arc::new(AtomicU64::new(0));
        let first = Generation::start(0, workers, &config, &incarnations)?;
        Ok(Self {
            inner: Arc::new(Inner {
                admission: Admission::new(config.queue_bound_value()),
                workers,
                current: Mutex::new(Some(Arc::new(first))),
                retired: Mutex::new(Vec::new()),
                next_generation: AtomicU64::new(1),
                incarnations,
                stopping: AtomicBool::new(false),
                outstanding: Outstanding::default(),
                queue: Mutex::new(VecDeque::new()),
                drainers: AtomicUsize::new(0),
                config,
            }),
        })
    }

    pub(crate) fn inner(&self) -> &Arc<Inner> {
        &self.inner
    }
}

impl Generation {
    fn start(
        id: u64,
        workers: usize,
        config: &PoolConfig,
        incarnations: &Arc<AtomicU64>,
    ) -> Result<Self, TaskError> {
        let threads = Arc::new(Mutex::new(Vec::new()));
        let spawned = threads.clone();
        let incarnations = incarnations.clone();
        let init = config.initializer_value().cloned();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(workers)
            .thread_name(move |i| format!("concur-worker-{i}"))
            .spawn_handler(move |thread| {
                let mut b = std::thread::Builder::new();
                if let Some(name) = thread.name() {
                    b = b.name(name.to_owned());
                }
                if let Some(size) = thread.stack_size() {
                    b = b.stack_size(size);
                }
                lock(&spawned).push(b.spawn(|| thread.run())?);
                Ok(())
            })
            .start_handler(move |index| {
                let info = WorkerInfo::current(index, incarnations.fetch_add(1, Ordering::Relaxed));
                WORKER.with(|w| {
                    *w.borrow_mut() = Some(WorkerState {
                        info,
                        generation: id,
                        runs: 0,
                    })
                });
                if let Some(init) = &init {
                    if let Err(e) = init.run_here(info) {
                        eprintln!("concur-threads: worker {index} initializer failed: {e}");
                    }
                }
            })
            .build()
            .map_err(|e| TaskError::with_source(ErrorKind::Spawn, e))?;
        Ok(Self { id, pool, threads })
    }
}

impl Inner {
    /// Queues `job` for the workers. False when the pool has stopped.
    ///
    /// Jobs go through our own queue rather than one rayon spawn each: a
    /// few drain loops (one per busy worker) run them back to back, so a
    /// burst of submissions wakes at most `workers` threads instead of
    /// paying rayon's injection and wake-up for every task.
    fn spawn(self: &Arc<Self>, job: impl FnOnce(&Arc<Inner>) + Send + 'static) -> bool {
        if self.stopping.load(Ordering::SeqCst) && lock(&self.current).is_none() {
            return false;
        }
        lock(&self.queue).push_back(Box::new(job));
        self.ensure_drainer();
        true
    }

    /// Starts a drain loop if fewer than `workers` run.
    fn ensure_drainer(self: &Arc<Self>) {
        let mut n = self.drainers.load(Ordering::SeqCst);
        while n < self.workers {
            match self
                .drainers
                .compare_exchange_weak(n, n + 1, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => {
                    let Some(generation) = lock(&self.current).clone() else {
                        self.drainers.fetch_sub(1, Ordering::SeqCst);
                        return;
                    };
                    let inner = self.clone();
                    generation.pool.spawn(move || inner.drain());
                    return;
                }
                Err(now) => n = now,
            }
        }
    }

    /// Runs queued jobs on this worker until the queue is empty or the
    /// worker has reached its task limit.
    fn drain(self: &Arc<Self>) {
        loop {
            if self.must_retire() {
                self.drainers.fetch_sub(1, Ordering::SeqCst);
                if !lock(&self.queue).is_empty() {
                    self.ensure_drainer();
                }
                return;
            }
            let job = lock(&self.queue).pop_front();
            match job {
                Some(job) => job(self),
                None => {
                    self.drainers.fetch_sub(1, Ordering::SeqCst);
                    // A job pushed after our pop but before the decrement saw
                    // a full set of drainers: make sure someone runs it.
                    if lock(&self.queue).is_empty() {
                        return;
                    }
                    let n = self.drainers.fetch_add(1, Ordering::SeqCst);
                    if n >= self.workers {
                        self.drainers.fetch_sub(1, Ordering::SeqCst);
                        return;
                    }
                }
            }
        }
    }

    /// True when this worker has run its task limit (its generation is
    /// being replaced) and must take no more jobs.
    fn must_retire(&self) -> bool {
        let Some(limit) = self.config.max_tasks_per_worker_value() else {
            return false;
        };
        let (generation, runs) = WORKER.with(|w| {
            let w = w.borrow();
            let w = w.as_ref().expect("drain loop outside a concur worker");
            (w.generation, w.runs)
        });
        if runs >= limit && !self.stopping.load(Ordering::SeqCst) {
            self.rotate(generation);
            return true;
        }
        false
    }

    /// Replaces generation `old` by a fresh one (once, however many of its
    /// workers ask).
    fn rotate(&self, old: u64) {
        let mut guard = lock(&self.current);
        let Some(cur) = guard.as_mut() else { return };
        if cur.id != old || self.stopping.load(Ordering::SeqCst) {
            return;
        }
        let id = self.next_generation.fetch_add(1, Ordering::Relaxed);
        match Generation::start(id, self.workers, &self.config, &self.incarnations) {
            Ok(fresh) => {
                let old = std::mem::replace(cur, Arc::new(fresh));
                drop(guard);
                let mut retired = lock(&self.retired);
                // Old generations exit once drained; forget those already gone.
                retired.retain(|g| !lock(&g.threads).iter().all(JoinHandle::is_finished));
                retired.push(old);
            }
            Err(e) => {
                eprintln!("concur-threads: cannot start fresh workers, keeping the old ones: {e}")
            }
        }
    }

    /// This worker's identity.
    fn worker_info(&self) -> WorkerInfo {
        WORKER.with(|w| {
            w.borrow()
                .as_ref()
                .expect("concur task outside a concur worker")
                .info
        })
    }

    /// Counts `count` tasks run by this worker; retires its generation at the limit.
    fn count_runs(&self, count: u64) {
        let (generation, runs) = WORKER.with(|w| {
            let mut w = w.borrow_mut();
            let w = w.as_mut().expect("worker state");
            w.runs += count;
            (w.generation, w.runs)
        });
        if self
            .config
            .max_tasks_per_worker_value()
            .is_some_and(|l| runs >= l)
        {
            self.rotate(generation);
        }
    }

    /// Hands `job` (which will finish `c`) to the current generation.
    fn forward(self: &Arc<Self>, c: &Completion, job: impl FnOnce(&Arc<Inner>) + Send + 'static) {
        if !self.spawn(job) {
            self.finish(c, Err(ErrorKind::ShutDown.into()));
        }
    }

    fn track(&self, c: &Completion) {
        self.outstanding.insert(c);
    }

    fn finish(&self, c: &Completion, result: Result<Payload, TaskError>) {
        self.outstanding.remove(c.id());
        c.finish(result);
    }

    /// Arms the per-task timeout for a task of `count` tasks starting now.
    fn arm_timeout(&self, c: &Completion, count: u32) {
        if let Some(t) = self.config.task_timeout_value() {
            let c = c.clone();
            timer::at(Instant::now() + t * count, move || {
                c.finish(Err(ErrorKind::TimedOut { after: t }.into()));
            });
        }
    }

    fn begin(&self, c: &Completion) -> bool {
        if self.stopping.load(Ordering::SeqCst) {
            self.finish(c, Err(ErrorKind::Cancelled.into()));
            return false;
        }
        if !c.begin() {
            self.outstanding.remove(c.id());
            return false;
        }
        true
    }
}

fn run_task<T: Task>(inner: &Arc<Inner>, task: T, c: Completion) {
    let info = inner.worker_info();
    if inner.begin(&c) {
        inner.arm_timeout(&c, 1);
        let result = panic::catch(|| task.run(&mut TaskContext::new(c.port(), info)));
        inner.finish(&c, result.map(Payload::value));
    }
    inner.count_runs(1);
}

fn run_batch_job<T: Task>(inner: &Arc<Inner>, tasks: Vec<T>, c: Completion) {
    let info = inner.worker_info();
    let n = tasks.len();
    if inner.begin(&c) {
        inner.arm_timeout(&c, u32::try_from(n).unwrap_or(u32::MAX));
        let results = run_batch(tasks, info);
        inner.finish(&c, Ok(Payload::value(results)));
    }
    inner.count_runs(n.max(1) as u64);
}

impl Executor for ThreadPool {
    fn backend(&self) -> &'static str {
        "threads"
    }

    fn capabilities(&self) -> Capabilities {
        Self::CAPABILITIES
    }

    fn workers(&self) -> usize {
        self.inner.workers
    }

    fn admission(&self) -> &Admission {
        &self.inner.admission
    }

    fn start<T: Task>(&self, task: T, permit: Permit) -> Result<TaskHandle<T>, TaskError> {
        if self.inner.admission.is_closed() {
            return Err(ErrorKind::ShutDown.into());
        }
        let c = Completion::new(permit, None);
        let handle = TaskHandle::new(&c);
        self.inner.track(&c);
        let fail = c.clone();
        self.inner
            .forward(&fail, move |inner| run_task(inner, task, c));
        Ok(handle)
    }

    fn start_batch<T: Task>(
        &self,
        tasks: Vec<T>,
        permit: Permit,
    ) -> Result<BatchHandle<T>, TaskError> {
        if self.inner.admission.is_closed() {
            return Err(ErrorKind::ShutDown.into());
        }
        let c = Completion::new(permit, None);
        let handle = BatchHandle::new(&c, tasks.len());
        self.inner.track(&c);
        let fail = c.clone();
        self.inner
            .forward(&fail, move |inner| run_batch_job(inner, tasks, c));
        Ok(handle)
    }

    fn shutdown(&self) -> Result<(), TaskError> {
        self.inner.admission.close();
        self.inner.admission.wait_idle(None);
        self.stop_and_join();
        Ok(())
    }

    fn shutdown_now(&self) {
        let inner = &self.inner;
        inner.admission.close();
        inner.stopping.store(true, Ordering::SeqCst);
        for c in inner.outstanding.drain() {
            c.finish(Err(ErrorKind::Cancelled.into()));
        }
    }
}

impl ThreadPool {
    /// Retires every generation and joins every worker thread. Running
    /// tasks are waited for (a thread cannot be stopped).
    fn stop_and_join(&self) {
        let inner = &self.inner;
        inner.stopping.store(true, Ordering::SeqCst);
        let mut gens: Vec<Arc<Generation>> = lock(&inner.retired).drain(..).collect();
        gens.extend(lock(&inner.current).take());
        // Dropping the generations lets rayon end each pool once it is
        // drained; the join handles outlive the rayon pool objects.
        let threads: Vec<_> = gens.iter().map(|g| g.threads.clone()).collect();
        drop(gens);
        for t in threads {
            let handles: Vec<_> = lock(&t).drain(..).collect();
            for h in handles {
                let _ = h.join();
            }
        }
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

impl std::fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadPool")
            .field("workers", &self.inner.workers)
            .field("in_use", &self.inner.admission.in_use())
            .finish()
    }
}

impl Inner {
    /// Runs a plain closure on the current generation (no task accounting).
    pub(crate) fn spawn_plain(self: &Arc<Self>, f: impl FnOnce() + Send + 'static) -> bool {
        self.spawn(move |_| f())
    }

    /// The generation taking work now, if the pool runs.
    pub(crate) fn current_rayon(&self) -> Option<Arc<Generation>> {
        lock(&self.current).clone()
    }
}

impl Generation {
    pub(crate) fn pool_ref(&self) -> &rayon::ThreadPool {
        &self.pool
    }
}

/// Ids are unique counters: hashing them again would be wasted work.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

const SHARDS: usize = 16;

/// Tasks not yet done, sharded by id so that submitters and workers seldom
/// contend on one lock.
#[derive(Default)]
struct Outstanding {
    shards: [Mutex<HashMap<TaskId, Completion, BuildHasherDefault<IdHasher>>>; SHARDS],
}

impl Outstanding {
    fn shard(
        &self,
        id: TaskId,
    ) -> &Mutex<HashMap<TaskId, Completion, BuildHasherDefault<IdHasher>>> {
        &self.shards[(id.0 as usize) % SHARDS]
    }

    fn insert(&self, c: &Completion) {
        lock(self.shard(c.id())).insert(c.id(), c.clone());
    }

    fn remove(&self, id: TaskId) {
        lock(self.shard(id)).remove(&id);
    }

    fn drain(&self) -> Vec<Completion> {
        self.shards
            .iter()
            .flat_map(|s| lock(s).drain().map(|(_, c)| c).collect::<Vec<_>>())
            .collect()
    }
}
