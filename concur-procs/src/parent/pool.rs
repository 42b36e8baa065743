//! [`ProcessPool`]: the executor users hold.

use std::sync::{mpsc, Arc, Weak};

use concur_core::{
    registry, Admission, BatchHandle, Capabilities, Completion, Executor, Payload, Permit, Task,
    TaskError, TaskHandle, TaskId,
};

use super::builder::ProcessPoolBuilder;
use super::router::Router;
use super::scheduler::{Batch, Rules, Scheduler, Sink, Unit};
use super::shell::{PoolLink, Settings, Shared};
use super::supervisor::{self, Supervisor};
use crate::shm::Body;

/// A pool of worker processes running this same executable.
///
/// Build it with [`ProcessPool::builder`]; use it through
/// [`Executor`] and [`ExecutorExt`](concur_core::ExecutorExt). Dropping it
/// finishes queued work, then stops and reaps every worker. A worker being
/// started at that moment (a replacement running a slow initializer, say)
/// is waited for, at most the [`start_timeout`](crate::ProcessPoolBuilder::start_timeout),
/// then stopped too; queued work that no worker can be started for fails
/// with `PoolFailed` rather than holding the drop.
///
/// A pool belongs to the process that built it. In a child forked from
/// that process (`fork(2)` without exec), the pool's copy refuses work at
/// once (`ShutDown`, whose source says the pool belongs to another
/// process) and dropping it does nothing: the child must build its own.
pub struct ProcessPool {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ProcessPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessPool")
            .field("workers", &self.shared.settings.workers)
            .finish()
    }
}

impl ProcessPool {
    /// What process pools can do, known without building one: each worker
    /// has its own memory (values are encoded, large ones through shared
    /// memory), a timed-out or cancelled task's worker is killed, a crash
    /// or a memory limit fails one task and the pool goes on.
    pub const CAPABILITIES: Capabilities = Capabilities {
        shared_memory: false,
        kills_on_timeout: true,
        kills_on_cancel: true,
        isolates_crashes: true,
        memory_limit: true,
        zero_copy_payloads: true,
        function_tasks: true,
    };

    /// A builder with every default.
    pub fn builder() -> ProcessPoolBuilder {
        ProcessPoolBuilder::new()
    }

    /// A pool with every default (as many workers as cores).
    ///
    /// # Errors
    /// As [`ProcessPoolBuilder::build`].
    pub fn new() -> Result<Self, TaskError> {
        ProcessPoolBuilder::new().build()
    }

    pub(crate) fn start(b: ProcessPoolBuilder) -> Result<Self, TaskError> {
        let config = &b.config;
        let workers = config.worker_count();
        let rules = Rules {
            workers,
            timeout: config.task_timeout_value(),
            unresponsive: b.unresponsive_timeout,
            retries: config.retries_value(),
            max_tasks: config.max_tasks_per_worker_value(),
            max_crashes: b.max_crashes,
            crash_window: b.crash_window,
            depth: b
                .in_flight_per_worker
                .unwrap_or(super::builder::DEFAULT_IN_FLIGHT_PER_WORKER),
            adaptive: b.in_flight_per_worker.is_none(),
        };
        let settings = Settings {
            workers,
            memory_limit: b.memory_limit,
            start_timeout: b.start_timeout,
            shm_threshold: b.shm_threshold,
            hold_results: rules.retries > 0,
            initializer: config.initializer_value().cloned(),
            spawn_mode: b.spawn_mode,
        };
        if crate::worker::is_worker() {
            return Err(crate::error::SpawnError::InsideWorker.into());
        }
        let (router, router_rx) = Router::new()?;
        let supervisor = Supervisor::new().map_err(TaskError::io)?;
        let shared = Arc::new_cyclic(|weak: &Weak<Shared>| {
            Shared::new(
                settings,
                Admission::new(config.queue_bound_value()),
                Scheduler::new(rules),
                router,
                supervisor,
                Arc::new(PoolLink(weak.clone())),
            )
        });
        let spawn_thread = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn(f)
                .map_err(TaskError::io)
        };
        let (ready_tx, ready_rx) = mpsc::channel();
        let sup = {
            let s = shared.clone();
            spawn_thread(
                "concur-procs-supervisor",
                Box::new(move || supervisor::run(s, ready_tx)),
            )?
        };
        shared
            .threads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(sup);
        let router = {
            let s = shared.clone();
            match spawn_thread(
                "concur-procs-router",
                Box::new(move || super::router::run(s, router_rx)),
            ) {
                Ok(r) => r,
                Err(e) => {
                    shared.stop(true);
                    return Err(e);
                }
            }
        };
        shared
            .threads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(router);
        let pool = ProcessPool { shared };
        // The supervisor answers once every first worker started or failed
        // (each start is bounded by the start timeout).
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(pool),
            Ok(Err(e)) => {
                pool.shared.stop(true);
                Err(e)
            }
            Err(_) => {
                pool.shared.stop(true);
                Err(crate::error::SpawnError::Protocol("supervisor ended").into())
            }
        }
    }

    /// Process ids of the current workers, by slot (`None` while a slot's
    /// worker is being replaced). Empty in a process forked from the one
    /// that built the pool: it has none of the workers, and the pool's lock
    /// may have been held by a thread that was not copied.
    pub fn worker_pids(&self) -> Vec<Option<u32>> {
        if self.shared.foreign().is_some() {
            return Vec::new();
        }
        let core = self.shared.lock();
        core.sched
            .slots
            .iter()
            .map(|s| s.and_then(|w| core.io.get(&w)).map(|io| io.pid))
            .collect()
    }

    fn threshold(&self) -> usize {
        self.shared.settings.shm_threshold
    }
}

/// Encodes a task's input (a panic in its `Serialize` is the task's
/// `Panicked` error: `Payload`'s encoders catch it).
fn encode_input<T: Task>(task: T, threshold: usize) -> Result<Body, TaskError> {
    Body::encode(&Payload::value(task), threshold)
}

impl Executor for ProcessPool {
    fn backend(&self) -> &'static str {
        "procs"
    }

    fn capabilities(&self) -> Capabilities {
        Self::CAPABILITIES
    }

    fn workers(&self) -> usize {
        self.shared.settings.workers
    }

    fn admission(&self) -> &Admission {
        if self.shared.admission.in_use() > 0 && self.shared.foreign().is_some() {
            // A forked child's copy of the queue holds places for work it
            // will never see finish: a wait for room would never end, so
            // it is refused at once (`ShutDown`). With nothing held, the
            // caller gets as far as `start`, whose error says why.
            self.shared.admission.close();
        }
        &self.shared.admission
    }

    fn start<T: Task>(&self, task: T, permit: Permit) -> Result<TaskHandle<T>, TaskError> {
        if let Some(e) = self.shared.foreign() {
            return Err(e);
        }
        self.shared.admission.admits(&permit, 1)?;
        registry::ensure_registered::<T>()?;
        let input = encode_input(task, self.threshold())?;
        let completion = Completion::new(permit, Some(self.shared.link.clone()));
        let handle = TaskHandle::new(&completion);
        let unit = Unit::new(completion.id(), Sink::Single(completion), T::NAME, input);
        self.shared.submit(vec![unit])?;
        Ok(handle)
    }

    fn start_batch<T: Task>(
        &self,
        tasks: Vec<T>,
        permit: Permit,
    ) -> Result<BatchHandle<T>, TaskError> {
        if let Some(e) = self.shared.foreign() {
            return Err(e);
        }
        self.shared.admission.admits(&permit, tasks.len())?;
        registry::ensure_registered::<T>()?;
        let len = tasks.len();
        let completion = Completion::new(permit, Some(self.shared.link.clone()));
        let handle = BatchHandle::new(&completion, len);
        let batch = Batch::new(completion, len);
        if len == 0 {
            batch.completion.begin();
            batch
                .completion
                .finish(concur_core::encode_batch_items(&[]).map(Payload::bytes));
            return Ok(handle);
        }
        // Each task of the batch travels, runs, fails, times out and is
        // retried on its own: one bad task fails only its own slot.
        let mut units = Vec::with_capacity(len);
        for (i, task) in tasks.into_iter().enumerate() {
            let sink = Sink::Item(batch.clone(), i);
            match encode_input(task, self.threshold()) {
                Ok(input) => units.push(Unit::new(TaskId::next(), sink, T::NAME, input)),
                Err(e) => {
                    // Not sent: its slot fails now, the others go on.
                    sink.finish(Err(e));
                }
            }
        }
        if !units.is_empty() {
            self.shared.submit(units)?;
        }
        Ok(handle)
    }

    fn shutdown(&self) -> Result<(), TaskError> {
        self.shared.stop(false);
        Ok(())
    }

    fn shutdown_now(&self) {
        self.shared.stop(true);
    }
}

impl Drop for ProcessPool {
    fn drop(&mut self) {
        if self.shared.foreign().is_some() {
            // A forked child's copy: nothing of it may run here (its
            // outboxes' and channels' drops would wait on threads that do
            // not exist in this process), so it is leaked, never dropped.
            std::mem::forget(self.shared.clone());
            return;
        }
        self.shared.stop(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use concur_core::{Configure, ErrorKind, TaskContext};
    use std::time::Duration;

    #[derive(serde::Serialize, serde::Deserialize)]
    struct Unknown;

    impl Task for Unknown {
        type Output = ();
        type ToCaller = ();
        type FromCaller = ();
        const NAME: &'static str = "pool::tests::Unknown";
        fn run(self, _cx: &mut TaskContext<'_, Self>) {}
    }

    #[test]
    fn worker_answers_not_registered_for_a_name_it_lacks() {
        let p = ProcessPool::builder().workers(1).build().unwrap();
        // Past the parent's check: as if the worker's registry differed.
        let permit = p.admission().acquire(1).unwrap();
        let completion = Completion::new(permit, Some(p.shared.link.clone()));
        let h = TaskHandle::<Unknown>::new(&completion);
        let input = encode_input(Unknown, 1024).unwrap();
        p.shared
            .submit(vec![Unit::new(
                completion.id(),
                Sink::Single(completion),
                Unknown::NAME,
                input,
            )])
            .unwrap();
        let err = h
            .join_timeout(Duration::from_secs(60))
            .unwrap()
            .unwrap_err();
        assert_eq!(
            err.kind(),
            &ErrorKind::NotRegistered {
                task: Unknown::NAME.into()
            }
        );
        // The worker survives it.
        assert!(p.worker_pids()[0].is_some());
    }
}
