//! Worker threads, in *generations*: a rayon pool cannot retire one
//! thread, so recycling workers (task limit per worker) swaps in a fresh
//! generation while the old one drains and exits. Each thread knows who it
//! is through a thread-local [`WorkerState`].

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;

use concur_core::{Completion, ErrorKind, PoolConfig, TaskError, WorkerInfo};

/// The task a worker thread runs now, so `shutdown_now` can cancel it.
pub(crate) type RunningSlot = Mutex<Option<Completion>>;

/// Every worker thread's [`RunningSlot`], old generations included.
pub(crate) type RunningSlots = Mutex<Vec<Weak<RunningSlot>>>;

/// One rayon pool of `workers` threads and the handles to join them.
pub(crate) struct Generation {
    pub(crate) id: u64,
    pub(crate) pool: rayon::ThreadPool,
    pub(crate) threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

/// What a worker thread knows about itself.
pub(crate) struct WorkerState {
    pub(crate) info: WorkerInfo,
    pub(crate) generation: u64,
    pub(crate) runs: u64,
    pub(crate) running: Arc<RunningSlot>,
}

thread_local! {
    static WORKER: RefCell<Option<WorkerState>> = const { RefCell::new(None) };
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
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
    pub(crate) workers: usize,
    pub(crate) config: PoolConfig,
    pub(crate) incarnations: AtomicU64,
    pub(crate) running: Arc<RunningSlots>,
}

impl Generation {
    /// Starts `shared.workers` threads; each records its state and runs the
    /// initializer before it takes work.
    pub(crate) fn start(id: u64, shared: &Arc<Shared>) -> Result<Self, TaskError> {
        let threads = Arc::new(Mutex::new(Vec::new()));
        let spawned = threads.clone();
        let on_start = shared.clone();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(shared.workers)
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
                let shared = &on_start;
                let info =
                    WorkerInfo::current(index, shared.incarnations.fetch_add(1, Ordering::Relaxed));
                let running = Arc::new(Mutex::new(None));
                {
                    let mut slots = lock(&shared.running);
                    slots.retain(|s| s.strong_count() > 0);
                    slots.push(Arc::downgrade(&running));
                }
                WORKER.with(|w| {
                    *w.borrow_mut() = Some(WorkerState {
                        info,
                        generation: id,
                        runs: 0,
                        running,
                    })
                });
                if let Some(init) = shared.config.initializer_value() {
                    if let Err(e) = init.run_here(info) {
                        eprintln!("concur-threads: worker {index} initializer failed: {e}");
                    }
                }
            })
            .build()
            .map_err(|e| TaskError::with_source(ErrorKind::Spawn, e))?;
        Ok(Self { id, pool, threads })
    }

    /// True once every thread of this generation has exited.
    pub(crate) fn finished(&self) -> bool {
        lock(&self.threads).iter().all(JoinHandle::is_finished)
    }
}
