//! [`ThreadPool`]: the executor, its builder and its shutdown.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use concur_core::{
    Admission, BatchHandle, Capabilities, Completion, Configure, ErrorKind, Executor, MapAllError,
    Permit, PoolConfig, Task, TaskError, TaskHandle,
};

use crate::dispatch::Job;
use crate::generation::{lock, next_pool_id, on_worker_of, Generation, Shared, WorkerThread};

/// A pool of worker threads running [`Task`]s with shared memory.
///
/// Dropping the pool is [`Executor::shutdown`]: queued work finishes and
/// every worker thread is joined.
///
/// [`Executor::shutdown_now`] cancels queued and running work and stops
/// every worker. A thread cannot be killed, so a worker still inside a
/// running task (a cancelled task that has not yet noticed, or a
/// [`spawn_fn`](Self::spawn_fn) closure, which is never told) exits as
/// soon as that task returns, without waiting for the pool's drop. Workers
/// are rayon threads, and rayon ends a pool's threads together: the idle
/// workers of a generation in which such a task still runs exit with it.
/// The other workers have exited and been joined when `shutdown_now`
/// returns; the rest are joined by a later `shutdown` or the drop, which
/// wait for them.
///
/// **That wait has no bound, and this is its documented reason:** a thread
/// cannot be stopped from outside, so `shutdown()` and dropping the pool
/// (even after `shutdown_now`) wait for every running task to return. A
/// task that never returns (an endless loop that does not check
/// [`TaskContext::is_cancelled`](concur_core::TaskContext::is_cancelled))
/// blocks them for ever. Long tasks should check `is_cancelled`; tasks that
/// may hang for good belong on the process backend, whose timeout and
/// cancel really stop them.
///
/// `shutdown()` or the drop called from one of the pool's own tasks (a
/// task holding the last clone of an `Arc<ThreadPool>`) cannot wait for
/// that task: it closes the pool and returns at once, and a thread of the
/// pool's own waits for the queued and running work and joins the workers.
///
/// A task that submits into its own pool with `submit` waits for room like
/// any caller: when every worker does that while the queue is full, none
/// of them can make room, and they wait for ever. Tasks that feed their own
/// pool should take room with
/// [`try_acquire`](concur_core::Admission::try_acquire) on
/// [`admission()`](Executor::admission) and start with [`Executor::start`]
/// (no wait when the queue is full), or use a queue bound that fits what
/// they add.
///
/// With [`max_tasks_per_worker`](concur_core::Configure::max_tasks_per_worker),
/// a worker that reaches the limit starts a fresh generation of workers;
/// the old generation's threads exit once their tasks return. When no
/// thread can be created, the old workers keep running tasks and the
/// replacement is tried again after another `limit` tasks.
///
/// A per-task timeout bounds each task of a batch: an item over it fails
/// alone with `TimedOut` (its thread runs on until the task returns), and
/// the items after it run on the next free worker.
///
/// A [`submit`](Executor::submit) that finds the queue full, with nobody
/// else waiting for room, waits until a quarter of the queue bound (at
/// most 1024 tasks) is free rather than until one task ends: a burst of
/// submissions is then woken once per share instead of once per finished
/// task. Each task still holds its own room, so the bound holds, and
/// submitters already waiting keep their turn (see
/// [`Admission::acquire_one_in_burst`]).
///
/// From a queue of at least four jobs per worker, a worker takes up to
/// eight tasks or closures at a time (one lock instead of eight; a batch
/// is always taken alone). They start in submission order, but the ones a
/// worker took wait for the task it runs: behind a long task, up to seven
/// queued tasks may wait while other workers run the rest of the queue.
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
    /// Older generations are dropped when replaced: their threads finish
    /// the work they hold, exit and are reaped (`Shared::threads`).
    current: Mutex<Option<Arc<Generation>>>,
    next_generation: AtomicU64,
    /// Set by `shutdown_now`: queued jobs are cancelled, not run.
    pub(crate) stopping: AtomicBool,
    /// Set once the workers are stopped for good (read on every submit, so
    /// it is a flag rather than a look at `current` under its lock). Set
    /// under the queue's lock (see `Inner::push`).
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
        function_tasks: true,
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
            pool: next_pool_id(),
            workers: config.worker_count(),
            config,
            incarnations: AtomicU64::new(0),
            running: Arc::default(),
            threads: Mutex::new(Vec::new()),
            #[cfg(test)]
            failing_spawns: AtomicU64::new(0),
        });
        let first = Generation::start(0, &shared)?;
        Ok(Self {
            inner: Arc::new(Inner {
                shared,
                admission,
                current: Mutex::new(Some(Arc::new(first))),
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
        self.inner.push_or_cancel(job);
    }
}

impl Inner {
    /// Waits until the queued and running work is over, then stops the
    /// workers for good and joins every worker thread (`shutdown`, once
    /// the queue is closed).
    fn finish(&self) {
        self.admission.wait_idle(None);
        self.stop();
        self.shared.join_threads(|_| true);
    }

    /// The generation taking work now, if the pool runs.
    pub(crate) fn current_generation(&self) -> Option<Arc<Generation>> {
        lock(&self.current).clone()
    }

    /// True once the pool has stopped its workers for good.
    pub(crate) fn has_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    /// Takes no more jobs, cancels the queued ones (closures queued after
    /// `shutdown_now`, or every job when called by it) and ends the current
    /// generation, so its threads exit once they have no work.
    fn stop(&self) {
        let queued: Vec<Job> = {
            let mut q = lock(&self.queue);
            self.stopped.store(true, Ordering::SeqCst);
            q.drain(..).collect()
        };
        queued.into_iter().for_each(Job::cancel);
        let current = lock(&self.current).take();
        drop(current);
    }

    /// Replaces generation `old` by a fresh one (once, however many of its
    /// workers ask). True when `old` is no longer the current generation:
    /// a worker of it may retire. False when the pool is stopping or no
    /// fresh generation could be started: the old one keeps working.
    pub(crate) fn rotate(&self, old: u64) -> bool {
        let mut guard = lock(&self.current);
        let Some(cur) = guard.as_mut() else {
            return false;
        };
        if cur.id != old {
            return true;
        }
        if self.stopping.load(Ordering::SeqCst) {
            return false;
        }
        let id = self.next_generation.fetch_add(1, Ordering::Relaxed);
        match Generation::start(id, &self.shared) {
            Ok(fresh) => {
                let old = std::mem::replace(cur, Arc::new(fresh));
                drop(guard);
                // Ends the old rayon pool: its threads exit once drained.
                drop(old);
                self.shared.reap();
                true
            }
            Err(e) => {
                eprintln!("concur-threads: cannot start fresh workers, keeping the old ones: {e}");
                self.shared.reap();
                false
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

    fn submit<T: Task>(&self, task: T) -> Result<TaskHandle<T>, TaskError> {
        self.start(task, self.inner.admission.acquire_one_in_burst()?)
    }

    fn start<T: Task>(&self, task: T, permit: Permit) -> Result<TaskHandle<T>, TaskError> {
        self.inner.admission.admits(&permit, 1)?;
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
        self.inner.admission.admits(&permit, tasks.len())?;
        if self.inner.admission.is_closed() {
            return Err(ErrorKind::ShutDown.into());
        }
        let c = Completion::new(permit, None);
        let handle = BatchHandle::new(&c, tasks.len());
        let timed = self.inner.shared.config.task_timeout_value().is_some();
        self.queue(Job::batch(c, tasks, timed));
        Ok(handle)
    }

    /// Writes each output straight into the returned vector from the
    /// worker that ran its task (a pool with a task timeout uses `map`).
    fn map_all<T, I>(&self, tasks: I) -> Result<Vec<T::Output>, MapAllError<T::Output>>
    where
        T: Task,
        I: IntoIterator<Item = T>,
    {
        crate::all::map_all(self, tasks.into_iter().collect())
    }

    fn shutdown(&self) -> Result<(), TaskError> {
        self.inner.admission.close();
        if on_worker_of(&self.inner.shared) {
            // Called from one of this pool's own tasks (the pool dropped
            // inside a task it runs): waiting here would wait for the caller
            // itself. A thread of its own waits for the work and joins the
            // workers once the last task, this one included, has returned.
            let inner = self.inner.clone();
            let closer = std::thread::Builder::new()
                .name("concur-threads-closer".into())
                .spawn(move || inner.finish());
            if let Err(e) = closer {
                return Err(TaskError::with_source(ErrorKind::Spawn, e));
            }
            return Ok(());
        }
        self.inner.finish();
        Ok(())
    }

    fn shutdown_now(&self) {
        let inner = &self.inner;
        inner.admission.close();
        inner.stopping.store(true, Ordering::SeqCst);
        inner.stop();
        let slots: Vec<_> = lock(&inner.shared.running)
            .iter()
            .filter_map(std::sync::Weak::upgrade)
            .collect();
        for slot in slots {
            if let Some(c) = lock(&slot).take() {
                c.finish(Err(ErrorKind::Cancelled.into()));
            }
        }
        // Join the workers that have nothing left to run; the others (inside
        // a task, or kept by a running `scope`) exit when it returns and are
        // joined by `shutdown` or the drop.
        inner.shared.join_threads(WorkerThread::is_exiting);
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

#[cfg(test)]
mod tests {
    use super::*;
    use concur_core::conformance::{wait_until, Block, WhoAmI, DEADLINE};
    use concur_core::ExecutorExt;

    /// Which `Hold` tasks have started, and whether they may end.
    static HOLD: (Mutex<(Vec<u64>, bool)>, std::sync::Condvar) =
        (Mutex::new((Vec::new(), false)), std::sync::Condvar::new());

    /// Says it started, then waits until released (bounded by the deadline).
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Hold(u64);

    impl Task for Hold {
        type Output = u64;
        type ToCaller = ();
        type FromCaller = ();
        const NAME: &'static str = "threads::pool::tests::Hold";
        fn run(self, _cx: &mut concur_core::TaskContext<'_, Self>) -> u64 {
            let (lock, cond) = &HOLD;
            let mut g = lock.lock().unwrap();
            g.0.push(self.0);
            cond.notify_all();
            let (g, _) = cond.wait_timeout_while(g, DEADLINE, |g| !g.1).unwrap();
            assert!(g.1, "never released");
            self.0
        }
    }

    /// Batches queued in a burst are taken one at a time: the second one
    /// starts on the other worker while the first still runs, instead of
    /// waiting behind it on the worker that took the first.
    #[test]
    fn queued_batches_are_taken_one_at_a_time() {
        let pool = ThreadPool::builder().workers(2).build().unwrap();
        let blockers: Vec<_> = (0..2).map(|_| pool.submit(Block).unwrap()).collect();
        for b in &blockers {
            b.recv_timeout(DEADLINE)
                .expect("each worker runs a blocker");
        }
        // Eight one-task batches queued behind the blockers.
        let batches: Vec<_> = (0..8)
            .map(|i| pool.submit_batch(vec![Hold(i)]).unwrap())
            .collect();
        for b in blockers {
            b.send(()).unwrap();
            b.join_timeout(DEADLINE).expect("a blocker ends").unwrap();
        }
        let (lock, cond) = &HOLD;
        {
            let g = lock.lock().unwrap();
            let (mut g, _) = cond
                .wait_timeout_while(g, DEADLINE, |g| g.0.len() < 2)
                .unwrap();
            g.0.sort_unstable();
            assert_eq!(
                g.0,
                [0, 1],
                "the first two batches did not run side by side"
            );
            g.1 = true;
            cond.notify_all();
        }
        for (i, b) in (0..).zip(batches) {
            let r = b.join_timeout(DEADLINE).expect("every batch ends");
            assert_eq!(r.into_iter().next().unwrap().unwrap(), i);
        }
    }

    /// A worker holding jobs it took from a long queue drops them on
    /// `shutdown_now` like the queued ones: no closure taken before the
    /// stop runs after it, and every task taken is cancelled.
    #[test]
    fn shutdown_now_drops_jobs_a_worker_took() {
        use std::sync::atomic::AtomicUsize;
        static RAN: AtomicUsize = AtomicUsize::new(0);
        let pool = ThreadPool::builder().workers(1).build().unwrap();
        let first = pool.submit(Block).unwrap();
        first.recv_timeout(DEADLINE).expect("the first task starts");
        // Queued behind it: a second blocker, then closures and tasks.
        let second = pool.submit(Block).unwrap();
        let closures: Vec<_> = (0..20)
            .map(|_| {
                pool.spawn_fn(|| {
                    RAN.fetch_add(1, Ordering::SeqCst);
                })
                .unwrap()
            })
            .collect();
        let tasks: Vec<_> = (0..20).map(|_| pool.submit(WhoAmI).unwrap()).collect();
        first.send(()).unwrap();
        first
            .join_timeout(DEADLINE)
            .expect("the first task ends")
            .unwrap();
        // The worker took the second blocker with several jobs behind it.
        second
            .recv_timeout(DEADLINE)
            .expect("the second task starts");
        pool.shutdown_now();
        let ended = second.join_timeout(DEADLINE).expect("cancelled at once");
        assert!(ended.unwrap_err().is_cancelled());
        for t in tasks {
            let r = t.join_timeout(DEADLINE).expect("cancelled at once");
            assert!(r.unwrap_err().is_cancelled());
        }
        for c in closures {
            let r = c.join_timeout(DEADLINE).expect("dropped at once");
            assert_eq!(r.unwrap_err().kind(), &ErrorKind::ShutDown);
        }
        drop(pool);
        assert_eq!(RAN.load(Ordering::SeqCst), 0);
    }

    /// A worker that reaches its task limit while it holds jobs it took
    /// from a long queue gives them back: each runs once, on a fresh
    /// worker, with its own result.
    #[test]
    fn retiring_worker_gives_back_the_jobs_it_took() {
        use concur_core::conformance::Add;
        let pool = ThreadPool::builder()
            .workers(1)
            .max_tasks_per_worker(2)
            .build()
            .unwrap();
        let first = pool.submit(Block).unwrap();
        first.recv_timeout(DEADLINE).expect("the first task starts");
        let adds: Vec<_> = (0..40).map(|i| pool.submit(Add(i, 1)).unwrap()).collect();
        first.send(()).unwrap();
        first
            .join_timeout(DEADLINE)
            .expect("the first task ends")
            .unwrap();
        for (i, h) in (0..).zip(adds) {
            let r = h.join_timeout(DEADLINE).expect("every task ends");
            assert_eq!(r.unwrap(), i + 1);
        }
    }

    /// A submitter blocked on a full queue is woken once a share of the
    /// bound is free (a quarter: 2 of 8 here), not by each finished task,
    /// and every task still holds its own room.
    #[test]
    fn blocked_submitter_waits_for_a_share_of_the_bound() {
        let pool: &'static ThreadPool = Box::leak(Box::new(
            ThreadPool::builder()
                .workers(1)
                .queue_bound(8)
                .build()
                .unwrap(),
        ));
        let mut held: std::collections::VecDeque<_> =
            (0..8).map(|_| pool.submit(Block).unwrap()).collect();
        let (tx, rx) = std::sync::mpsc::channel();
        let submitter = std::thread::spawn(move || {
            let _ = tx.send(pool.submit(Block));
        });
        let admission = pool.admission();
        wait_until("the submitter waits for room", DEADLINE, || {
            admission.waiting() == 1
        });
        let release = |h: TaskHandle<Block>| {
            h.send(()).unwrap();
            h.join_timeout(DEADLINE)
                .expect("a released task ends within the deadline")
                .unwrap();
        };
        // One worker runs the tasks in order: the first one held is running.
        release(held.pop_front().unwrap());
        assert_eq!(
            admission.waiting(),
            1,
            "the submitter was woken for the room of one task"
        );
        release(held.pop_front().unwrap());
        let ninth = rx
            .recv_timeout(DEADLINE)
            .expect("the submitter got room once two tasks ended")
            .unwrap();
        submitter
            .join()
            .expect("the submitter thread, which has sent");
        assert_eq!(admission.in_use(), 7);
        held.push_back(ninth);
        held.into_iter().for_each(release);
        assert_eq!(admission.in_use(), 0);
    }

    fn who(pool: &ThreadPool) -> concur_core::WorkerInfo {
        let h = pool.submit(WhoAmI).unwrap();
        h.join_timeout(DEADLINE)
            .expect("the task finishes within the deadline")
            .unwrap()
            .worker
    }

    /// When no fresh generation can be started, the workers that reached
    /// their limit keep running tasks on the old one and try again after
    /// another `limit` tasks, not in a loop; once threads can be created
    /// again, the next rotation replaces them.
    #[test]
    fn failed_rotation_keeps_old_workers_and_retries_later() {
        let pool = ThreadPool::builder()
            .workers(1)
            .max_tasks_per_worker(2)
            .build()
            .unwrap();
        let failing = &pool.inner.shared.failing_spawns;
        failing.store(u64::MAX, Ordering::SeqCst);
        let first = who(&pool);
        for _ in 0..19 {
            assert_eq!(
                who(&pool).incarnation,
                first.incarnation,
                "a worker was replaced although no thread could start"
            );
        }
        let attempts = u64::MAX - failing.load(Ordering::SeqCst);
        assert!(
            (1..=10).contains(&attempts),
            "20 tasks with a limit of 2 made {attempts} spawn attempts"
        );
        failing.store(0, Ordering::SeqCst);
        let later: Vec<_> = (0..4).map(|_| who(&pool)).collect();
        assert_ne!(
            later[3].incarnation, first.incarnation,
            "the worker was not replaced once threads could start again"
        );
    }
}
