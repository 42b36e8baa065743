//! [`RedisPoolBuilder`]: the settings of a [`RedisPool`], and its start.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use concur_core::{Configure, ErrorKind, PoolConfig, TaskError, NEVER};

use crate::conn::{ensure_group, Broker};
use crate::env;
use crate::keys::Keys;
use crate::local::{Local, Spawn, DEFAULT_CRASH_WINDOW, DEFAULT_MAX_CRASHES};
use crate::pool::{
    reader_loop, sender_loop, server_run_id, setup_error, Inner, RedisPool, Settings,
};
use crate::worker::QueueSettings;
use concur_core::Executor;

/// How long a pool waits for its local workers to be ready, by default.
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(30);

/// Settings of a [`RedisPool`]: the common ones through [`Configure`]
/// (`workers` is the number of *local* workers the pool starts), and the
/// broker's.
#[derive(Debug, Clone)]
pub struct RedisPoolBuilder {
    config: PoolConfig,
    url: String,
    settings: QueueSettings,
    local: bool,
    program: Option<PathBuf>,
    args: Vec<OsString>,
    start_timeout: Duration,
    max_crashes: u32,
    crash_window: Duration,
}

impl Configure for RedisPoolBuilder {
    fn config_mut(&mut self) -> &mut PoolConfig {
        &mut self.config
    }
}

impl RedisPoolBuilder {
    pub(crate) fn new(url: &str) -> Self {
        Self {
            config: PoolConfig::new(),
            url: url.to_owned(),
            settings: QueueSettings::default(),
            local: true,
            program: None,
            args: Vec::new(),
            start_timeout: DEFAULT_START_TIMEOUT,
            max_crashes: DEFAULT_MAX_CRASHES,
            crash_window: DEFAULT_CRASH_WINDOW,
        }
    }

    /// A builder for `url` with the common settings of `config`.
    pub fn from_config(url: &str, config: PoolConfig) -> Self {
        Self {
            config,
            ..Self::new(url)
        }
    }

    /// The queue to submit to (default `"default"`): workers started with
    /// the same queue name take its tasks.
    pub fn queue(mut self, queue: &str) -> Self {
        self.settings.queue = queue.to_owned();
        self
    }

    /// The visibility timeout of the local workers (default 30 s): how long
    /// the entry of a worker that stopped renewing its lease waits before
    /// another worker takes it over. Use the same value for every worker
    /// of the queue.
    pub fn visibility_timeout(mut self, d: Duration) -> Self {
        self.settings.visibility = d;
        self
    }

    /// How often local workers renew the lease of a running task (default
    /// a quarter of the visibility timeout).
    pub fn heartbeat(mut self, d: Duration) -> Self {
        self.settings.heartbeat = Some(d);
        self
    }

    /// How long the pool (and its local workers) keep reconnecting to a
    /// lost broker before failing what waits on it with
    /// [`ErrorKind::Io`] (default 30 s).
    pub fn reconnect_timeout(mut self, d: Duration) -> Self {
        self.settings.reconnect = d;
        self
    }

    /// Whether the pool starts `workers` local worker processes (default
    /// true). Without them, tasks wait in the queue for workers started
    /// elsewhere ([`crate::worker`]); `workers` then only sizes `map`.
    pub fn local_workers(mut self, on: bool) -> Self {
        self.local = on;
        self
    }

    /// The command that starts a local worker (default: this executable,
    /// no arguments; its `main` must call [`crate::init`] first). Test
    /// binaries name a test that calls `init`:
    /// `worker_command(std::env::current_exe()?, ["--exact", "worker", "--nocapture"])`.
    pub fn worker_command<I, S>(mut self, program: impl Into<PathBuf>, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.program = Some(program.into());
        self.args = args.into_iter().map(Into::into).collect();
        self
    }

    /// How long `build` waits for the local workers to be ready (default 30 s).
    pub fn start_timeout(mut self, d: Duration) -> Self {
        self.start_timeout = d.min(NEVER);
        self
    }

    /// The restart intensity of local workers: more than `max` crashes
    /// within `window` (default 16 in 10 s) make the pool fail: every
    /// waiting task fails with [`ErrorKind::PoolFailed`] and new
    /// submissions are refused.
    pub fn max_crashes(mut self, max: u32, window: Duration) -> Self {
        self.max_crashes = max;
        self.crash_window = window.min(NEVER);
        self
    }

    /// Connects to the broker, creates the queue's consumer group if it is
    /// new, starts the local workers and waits until they are ready.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] for an invalid setting or URL;
    /// [`ErrorKind::Io`] when the broker cannot be reached within the
    /// reconnect timeout or refuses us (wrong password);
    /// [`ErrorKind::Spawn`] when the local workers cannot be started or
    /// are not ready in time (a `main` that does not call
    /// [`crate::init`] first, say), or when called inside a worker.
    pub fn build(mut self) -> Result<RedisPool, TaskError> {
        self.config.validate()?;
        if env::is_worker() {
            return Err(TaskError::with_source(
                ErrorKind::Spawn,
                std::io::Error::other(
                    "this process was started as a concur-redis worker: call concur_redis::init() \
                     first in main",
                ),
            ));
        }
        self.settings.check()?;
        let broker = Arc::new(Broker::new(&self.url, self.settings.reconnect)?);
        let keys = Keys::new(&self.settings.queue);
        let never = AtomicBool::new(false);
        let mut con = broker.connect(&never)?;
        ensure_group(&mut con, &keys.tasks()).map_err(|e| setup_error(&e))?;
        let run_id = server_run_id(&mut con);
        drop(con);
        let id = crate::ids::pool_id();
        let workers = self.config.worker_count();
        let local = if self.local {
            Some(Local::new(
                self.spawn(&id)?,
                &id,
                keys.clone(),
                broker.clone(),
            ))
        } else {
            None
        };
        let settings = Settings {
            workers,
            timeout: self.config.task_timeout_value(),
            retries: self.config.retries_value(),
            reconnect: self.settings.reconnect,
        };
        let inner = Arc::new(Inner::new(
            id,
            keys,
            broker,
            settings,
            self.config.queue_bound_value(),
            local,
        ));
        let mut threads = Vec::new();
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn(f)
                .map_err(TaskError::io)
        };
        let i = inner.clone();
        threads.push(spawn(
            "concur-redis-reader",
            Box::new(move || reader_loop(&i, run_id)),
        )?);
        let i = inner.clone();
        threads.push(spawn(
            "concur-redis-sender",
            Box::new(move || sender_loop(&i)),
        )?);
        if inner.local.is_some() {
            let i = inner.clone();
            threads.push(spawn(
                "concur-redis-supervisor",
                Box::new(move || {
                    if let Some(l) = &i.local {
                        l.supervise(&|why| i.fail_pool(why));
                    }
                }),
            )?);
        }
        let pool = RedisPool {
            inner,
            threads: Mutex::new(threads),
        };
        if let Some(local) = &pool.inner.local {
            local.start(workers);
            let started = local.wait_ready(self.start_timeout);
            if let Err(e) = started {
                pool.shutdown_now();
                return Err(e);
            }
        }
        Ok(pool)
    }

    /// How the local workers are started.
    fn spawn(&self, pool: &str) -> Result<Spawn, TaskError> {
        let program = match &self.program {
            Some(p) => p.clone(),
            None => std::env::current_exe().map_err(TaskError::io)?,
        };
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX).to_string();
        let mut envs = vec![
            (env::WORKER, "1".to_owned()),
            (env::URL, self.url.clone()),
            (env::QUEUE, self.settings.queue.clone()),
            (env::POOL, pool.to_owned()),
            (env::PARENT, std::process::id().to_string()),
            (env::VISIBILITY_MS, ms(self.settings.visibility)),
            (env::RECONNECT_MS, ms(self.settings.reconnect)),
        ];
        if let Some(h) = self.settings.heartbeat {
            envs.push((env::HEARTBEAT_MS, ms(h)));
        }
        if let Some(init) = self.config.initializer_value() {
            envs.push((env::INIT_NAME, init.name().to_owned()));
            envs.push((env::INIT_BODY, env::hex(&init.encode()?)));
        }
        Ok(Spawn {
            program,
            args: self.args.clone(),
            envs,
            max_tasks: self.config.max_tasks_per_worker_value(),
            max_crashes: self.max_crashes,
            crash_window: self.crash_window,
        })
    }
}
