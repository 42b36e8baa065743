//! Worker threads, in *generations*: a rayon pool cannot retire one
//! thread, so recycling workers (task limit per worker) swaps in a fresh
//! generation while the old one drains and exits. Each thread knows who it
//! is through a thread-local [`WorkerState`]; the pool keeps every thread's
//! [`WorkerThread`] until it has joined it.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;

use concur_core::{Completion, ErrorKind, PoolConfig, TaskError, WorkerInfo};

/// The task a worker thread runs now, so `shutdown_now` can cancel it.
pub(crate) type RunningSlot = Mutex<Option<Completion>>;

/// Every worker thread's [`RunningSlot`], old generations included.
pub(crate) type RunningSlots = Mutex<Vec<Weak<RunningSlot>>>;

/// One rayon pool of `workers` threads. Dropping the last `Arc` of it ends
/// the rayon pool: its threads exit once no job of the pool runs.
///
/// That is per pool, not per thread: rayon keeps a pool's idle threads
/// until every job spawned on it has returned, so while one worker is
/// inside a task its idle siblings stay too, and all exit together.
pub(crate) struct Generation {
    pub(crate) id: u64,
    pub(crate) pool: rayon::ThreadPool,
    life: Arc<Life>,
}

impl Drop for Generation {
    fn drop(&mut self) {
        self.life.ended.store(true, Ordering::SeqCst);
    }
}

/// What a generation's threads need to know to tell whether they can exit.
#[derive(Default)]
pub(crate) struct Life {
    /// Set once the generation is dropped (its rayon pool ended).
    ended: AtomicBool,
    /// Jobs of ours its threads are running (see `Inner::drain`).
    pub(crate) busy: AtomicUsize,
}

/// A worker thread of any generation, kept until it is joined.
pub(crate) struct WorkerThread {
    handle: JoinHandle<()>,
    life: Arc<Life>,
}

impl WorkerThread {
    /// True when the thread has nothing left to wait for: its generation
    /// has ended and none of its threads runs a job, so it exits at once
    /// and joining it cannot block on work.
    pub(crate) fn is_exiting(&self) -> bool {
        self.life.ended.load(Ordering::SeqCst) && self.life.busy.load(Ordering::SeqCst) == 0
    }

    /// True once the thread has exited (joining it returns at once).
    pub(crate) fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }

    /// Waits for the thread to exit.
    pub(crate) fn join(self) {
        // A worker thread does not panic: tasks run under `catch_unwind`
        // and rayon aborts on a panic of its own.
        let _ = self.handle.join();
    }
}

/// What a worker thread knows about itself.
pub(crate) struct WorkerState {
    pub(crate) info: WorkerInfo,
    pub(crate) generation: u64,
    pub(crate) runs: u64,
    /// Set once the worker reached its task limit and its generation was
    /// replaced: it takes no more jobs.
    pub(crate) retired: bool,
    pub(crate) running: Arc<RunningSlot>,
    pub(crate) life: Arc<Life>,
    /// The pool this thread works for ([`Shared::pool`]).
    pool: u64,
}

thread_local! {
    static WORKER: RefCell<Option<WorkerState>> = const { RefCell::new(None) };
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A fresh [`Shared::pool`] number.
pub(crate) fn next_pool_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// True when the calling thread is one of this pool's workers (it runs one
/// of the pool's tasks or closures): such a caller must not wait for the
/// pool's work to end, which includes its own.
pub(crate) fn on_worker_of(shared: &Shared) -> bool {
    WORKER.with(|w| {
        w.try_borrow()
            .is_ok_and(|w| w.as_ref().is_some_and(|state| state.pool == shared.pool))
    })
}

/// Runs `f` with this worker thread's state.
///
/// # Panics
/// Outside a concur worker thread (a bug in this crate).
pub(crate) fn with_worker<R>(f: impl FnOnce(&mut WorkerState) -> R) -> R {
    WORKER.with(|w| f(w.borrow_mut().as_mut().expect("not a concur worker thread")))
}

/// What every generation of one pool shares.
pub(crate) struct Shared {
    /// This pool, among every pool of the process (see [`on_worker_of`]).
    pub(crate) pool: u64,
    pub(crate) workers: usize,
    pub(crate) config: PoolConfig,
    pub(crate) incarnations: AtomicU64,
    pub(crate) running: Arc<RunningSlots>,
    /// Every worker thread not yet joined, of every generation.
    pub(crate) threads: Mutex<Vec<WorkerThread>>,
    /// Test hook: how many coming thread spawns fail.
    #[cfg(test)]
    pub(crate) failing_spawns: AtomicU64,
}

impl Shared {
    /// Joins the threads that have already exited, so a pool that recycles
    /// workers for ever keeps a bounded list.
    pub(crate) fn reap(&self) {
        self.join_threads(WorkerThread::is_finished);
    }

    /// Joins, and forgets, the worker threads `pick` selects (joined after
    /// the list's lock is released: a join may wait for a task).
    pub(crate) fn join_threads(&self, pick: impl FnMut(&WorkerThread) -> bool) {
        let picked: Vec<WorkerThread> = {
            let mut threads = lock(&self.threads);
            let (picked, kept) = threads.drain(..).partition(pick);
            *threads = kept;
            picked
        };
        picked.into_iter().for_each(WorkerThread::join);
    }

    /// Test hook: fails this spawn if failures were asked for.
    fn spawn_fails(&self) -> bool {
        #[cfg(test)]
        {
            let failing = &self.failing_spawns;
            failing
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        }
        #[cfg(not(test))]
        false
    }
}

impl Generation {
    /// Starts `shared.workers` threads; each records its state and runs the
    /// initializer before it takes work. The threads go into
    /// `shared.threads` (also when a later spawn fails: rayon then ends the
    /// ones already started, and they are reaped like any other).
    pub(crate) fn start(id: u64, shared: &Arc<Shared>) -> Result<Self, TaskError> {
        let life = Arc::new(Life::default());
        let thread_life = life.clone();
        let on_spawn = shared.clone();
        let on_start = shared.clone();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(shared.workers)
            .thread_name(move |i| format!("concur-worker-{i}"))
            .spawn_handler(move |thread| {
                let shared = &on_spawn;
                if shared.spawn_fails() {
                    return Err(std::io::Error::other("thread spawn failed (test hook)"));
                }
                let mut b = std::thread::Builder::new();
                if let Some(name) = thread.name() {
                    b = b.name(name.to_owned());
                }
                if let Some(size) = thread.stack_size() {
                    b = b.stack_size(size);
                }
                let state = (shared.clone(), thread_life.clone());
                let handle = b.spawn(move || {
                    let (shared, life) = state;
                    enter_worker(&shared, id, thread.index(), life);
                    drop(shared);
                    thread.run();
                })?;
                lock(&shared.threads).push(WorkerThread {
                    handle,
                    life: thread_life.clone(),
                });
                Ok(())
            })
            .start_handler(move |index| {
                if let Some(init) = on_start.config.initializer_value() {
                    let info = with_worker(|w| w.info);
                    if let Err(e) = init.run_here(info) {
                        eprintln!("concur-threads: worker {index} initializer failed: {e}");
                    }
                }
            })
            .build()
            .map_err(|e| TaskError::with_source(ErrorKind::Spawn, e))?;
        Ok(Self { id, pool, life })
    }
}

/// Records, on a fresh worker thread, who it is.
fn enter_worker(shared: &Shared, generation: u64, index: usize, life: Arc<Life>) {
    let info = WorkerInfo::current(index, shared.incarnations.fetch_add(1, Ordering::Relaxed));
    let running = Arc::new(Mutex::new(None));
    {
        let mut slots = lock(&shared.running);
        slots.retain(|s| s.strong_count() > 0);
        slots.push(Arc::downgrade(&running));
    }
    WORKER.with(|w| {
        *w.borrow_mut() = Some(WorkerState {
            info,
            generation,
            runs: 0,
            retired: false,
            running,
            life,
            pool: shared.pool,
        })
    });
}
