//! [`ThreadPool`]: the executor, its builder and its shutdown.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use concur_core::{
    Admission, BatchHandle, Capabilities, Completion, Configure, ErrorKind, Executor, Permit,
    PoolConfig, Task, TaskError, TaskHandle,
};

use crate::dispatch::Job;
use crate::generation::{lock, Generation, Shared};

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
    pub(crate) shared: Arc<Shared>,
    admission: Admission,
    /// The generation taking new work; `None` once the pool has stopped.
    current: Mutex<Option<Arc<Generation>>>,
    /// Older generations, draining; joined at shutdown.
    retired: Mutex<Vec<Arc<Generation>>>,
    next_generation: AtomicU64,
    /// Set by `shutdown_now`: queued jobs are cancelled, not run.
    pub(crate) stopping: AtomicBool,
    /// Set once the workers are stopped for good (read on every submit, so
    /// it is a flag rather than a look at `current` under its lock).
    stopped: AtomicBool,
    /// Jobs waiting for a worker, in submission order.
    pub(crate) queue: Mutex<VecDeque<Job>>,
    /// Drain loops running or about to run on rayon threads (at most `workers`).
    pub(crate) drainers: AtomicUsize,
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
        let admission = Admission::new(config.queue_bound_value());
        let shared = Arc::new(Shared {
            workers: config.worker_count(),
            config,
            incarnations: AtomicU64::new(0),
            running: Arc::default(),
        });
        let first = Generation::start(0, &shared)?;
        Ok(Self {
            inner: Arc::new(Inner {
                shared,
                admission,
                current: Mutex::new(Some(Arc::new(first))),
                retired: Mutex::new(Vec::new()),
                next_generation: AtomicU64::new(1),
                stopping: AtomicBool::new(false),
                stopped: AtomicBool::new(false),
                queue: Mutex::new(VecDeque::new()),
                drainers: AtomicUsize::new(0),
            }),
        })
    }

    pub(crate) fn inner(&self) -> &Arc<Inner> {
        &self.inner
    }

    /// Queues a task job. It cannot find the pool stopped: the job's permit
    /// holds back `shutdown`, which stops the pool only once every permit
    /// is returned.
    fn queue(&self, job: Job) {
        if let Err(job) = self.inner.push(job) {
            job.cancel();
        }
    }

    /// Retires every generation and joins every worker thread. Running
    /// tasks are waited for (a thread cannot be stopped).
    fn stop_and_join(&self) {
        let inner = &self.inner;
        inner.stopped.store(true, Ordering::SeqCst);
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
        // Jobs nobody will run now (closures queued after `shutdown_now`).
        let left: Vec<Job> = lock(&inner.queue).drain(..).collect();
        left.into_iter().for_each(Job::cancel);
    }
}

impl Inner {
    /// The generation taking work now, if the pool runs.
    pub(crate) fn current_generation(&self) -> Option<Arc<Generation>> {
        lock(&self.current).clone()
    }

    /// True once the pool has stopped its workers for good.
    pub(crate) fn has_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    /// Replaces generation `old` by a fresh one (once, however many of its
    /// workers ask).
    pub(crate) fn rotate(&self, old: u64) {
        let mut guard = lock(&self.current);
        let Some(cur) = guard.as_mut() else { return };
        if cur.id != old || self.stopping.load(Ordering::SeqCst) {
            return;
        }
        let id = self.next_generation.fetch_add(1, Ordering::Relaxed);
        match Generation::start(id, &self.shared) {
            Ok(fresh) => {
                let old = std::mem::replace(cur, Arc::new(fresh));
                drop(guard);
                let mut retired = lock(&self.retired);
                // Old generations exit once drained; forget those already gone.
                retired.retain(|g| !g.finished());
                retired.push(old);
            }
            Err(e) => {
                eprintln!("concur-threads: cannot start fresh workers, keeping the old ones: {e}")
            }
        }
    }
}

impl Executor for ThreadPool {
    fn backend(&self) -> &'static str {
        "threads"
    }

    fn capabilities(&self) -> Capabilities {
        Self::CAPABILITIES
    }

    fn workers(&self) -> usize {
        self.inner.shared.workers
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
        self.queue(Job::task(c, task));
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
        self.queue(Job::batch(c, tasks));
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
        let queued: Vec<Job> = lock(&inner.queue).drain(..).collect();
        queued.into_iter().for_each(Job::cancel);
        let slots: Vec<_> = lock(&inner.shared.running)
            .iter()
            .filter_map(std::sync::Weak::upgrade)
            .collect();
        for slot in slots {
            if let Some(c) = lock(&slot).take() {
                c.finish(Err(ErrorKind::Cancelled.into()));
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
            .field("workers", &self.inner.shared.workers)
            .field("in_use", &self.inner.admission.in_use())
            .finish()
    }
}
