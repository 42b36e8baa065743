//! [`ProcessPool`]: the executor users hold.

use std::sync::{mpsc, Arc, Mutex, Weak};

use concur_core::{
    registry, Admission, BatchHandle, Capabilities, Completion, Executor, Payload, Permit, Task,
    TaskError, TaskHandle,
};

use crate::builder::ProcessPoolBuilder;
use crate::router::Router;
use crate::shared::{PoolLink, Shared};
use crate::shm::Body;
use crate::state::{Job, Settings, State};
use crate::supervisor;
use crate::wire::RunKind;

/// A pool of worker processes running this same executable.
///
/// Build it with [`ProcessPool::builder`]; use it through
/// [`Executor`] and [`ExecutorExt`](concur_core::ExecutorExt). Dropping it
/// finishes queued work, then stops and reaps every worker.
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
        let settings = Settings {
            workers,
            timeout: config.task_timeout_value(),
            retries: config.retries_value(),
            max_tasks: config.max_tasks_per_worker_value(),
            memory_limit: b.memory_limit,
            max_crashes: b.max_crashes,
            crash_window: b.crash_window,
            start_timeout: b.start_timeout,
            shm_threshold: b.shm_threshold,
            depth: b
                .in_flight_per_worker
                .unwrap_or(crate::builder::DEFAULT_IN_FLIGHT_PER_WORKER),
            adaptive: b.in_flight_per_worker.is_none(),
            initializer: config.initializer_value().cloned(),
        };
        if crate::worker::is_worker() {
            return Err(crate::error::SpawnError::NestedWorker.into());
        }
        let (router, router_rx) = Router::new()?;
        let (sup_tx, sup_rx) = mpsc::channel();
        let shared = Arc::new_cyclic(|weak: &Weak<Shared>| Shared {
            settings,
            admission: Admission::new(config.queue_bound_value()),
            state: Mutex::new(State {
                slots: vec![None; workers],
                ..State::default()
            }),
            link: Arc::new(PoolLink(weak.clone())),
            router,
            supervisor: Mutex::new(Some(sup_tx)),
            threads: Mutex::new(Vec::new()),
            stopped: Mutex::new(false),
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
                Box::new(move || supervisor::run(s, sup_rx, ready_tx)),
            )?
        };
        shared
            .threads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(sup);
        let router = {
            let s = shared.clone();
            spawn_thread(
                "concur-procs-router",
                Box::new(move || crate::router::run(s, router_rx)),
            )?
        };
        shared
            .threads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(router);
        let pool = ProcessPool { shared };
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
    /// worker is being replaced).
    pub fn worker_pids(&self) -> Vec<Option<u32>> {
        let st = self.shared.lock();
        st.slots
            .iter()
            .map(|s| s.and_then(|inc| st.workers.get(&inc)).map(|w| w.pid))
            .collect()
    }

    fn job<T: Task>(&self, input: Body, kind: RunKind, len: usize, permit: Permit) -> Job {
        Job {
            completion: Completion::new(permit, Some(self.shared.link.clone())),
            name: T::NAME,
            kind,
            input,
            timeout: self
                .shared
                .settings
                .timeout
                .map(|t| t * u32::try_from(len).unwrap_or(u32::MAX)),
            tries: 0,
            down: Vec::new(),
            caller_gone: false,
            recalled: false,
            deadline: None,
        }
    }
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
        &self.shared.admission
    }

    fn start<T: Task>(&self, task: T, permit: Permit) -> Result<TaskHandle<T>, TaskError> {
        registry::ensure_registered::<T>()?;
        let input = Body::encode(&Payload::value(task), self.shared.settings.shm_threshold)?;
        let job = self.job::<T>(input, RunKind::Single, 1, permit);
        let handle = TaskHandle::new(&job.completion);
        self.shared.submit_job(job)?;
        Ok(handle)
    }

    fn start_batch<T: Task>(
        &self,
        tasks: Vec<T>,
        permit: Permit,
    ) -> Result<BatchHandle<T>, TaskError> {
        registry::ensure_registered::<T>()?;
        let len = tasks.len();
        let input = Body::encode(&Payload::value(tasks), self.shared.settings.shm_threshold)?;
        let job = self.job::<T>(input, RunKind::Batch, len, permit);
        let handle = BatchHandle::new(&job.completion, len);
        if len == 0 {
            job.completion.begin();
            job.completion.finish(
                Payload::value(Vec::<Result<T::Output, TaskError>>::new())
                    .to_bytes()
                    .map(Payload::bytes),
            );
            return Ok(handle);
        }
        self.shared.submit_job(job)?;
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
        let job = p.job::<Unknown>(
            Body::encode(&Payload::value(Unknown), 1024).unwrap(),
            RunKind::Single,
            1,
            Permit::none(),
        );
        let h = TaskHandle::<Unknown>::new(&job.completion);
        p.shared.submit_job(job).unwrap();
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
