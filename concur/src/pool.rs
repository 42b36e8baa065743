//! [`Pool`]: one executor type over every compiled-in backend, and its
//! [`PoolBuilder`].

use std::fmt;
#[cfg(any(feature = "procs", feature = "redis"))]
use std::sync::Arc;

use concur_core::{
    Admission, BatchHandle, Capabilities, Configure, Executor, MapAllError, Permit, PoolConfig,
    Task, TaskError, TaskHandle,
};

use crate::backend::Backend;

/// A pool of workers on whichever backend this build contains and the
/// program chose: the executor to use when code should not care.
///
/// `Pool` implements [`Executor`] by handing every call to the backend's
/// own pool, so all of [`ExecutorExt`](concur_core::ExecutorExt) (`map`,
/// `submit_async`, ...) works on it, and code written against `Pool` runs on
/// threads or on processes with no change but a cargo feature or the
/// `CONCUR_BACKEND` variable. Which backend it runs is decided when it is
/// built (see [`PoolBuilder::build`]) and told by [`Pool::backend`].
///
/// **Why not `&dyn Executor`.** [`Executor`] has generic methods (`submit`
/// takes any `T: Task`), so it cannot be a trait object (error E0038).
/// `Pool` fills that role: one concrete type over every backend, chosen at
/// run time. Code generic over executors takes `&impl Executor` (or
/// `E: Executor`) and accepts a `Pool` as well as a backend's own pool.
///
/// Dropping a `Pool` shuts it down as its backend does: queued and running
/// work finishes, then every worker is stopped and joined.
///
/// ```
/// use concur::prelude::*;
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Serialize, Deserialize)]
/// # struct Double(u64);
/// # impl Task for Double {
/// #     type Output = u64;
/// #     type ToCaller = ();
/// #     type FromCaller = ();
/// #     const NAME: &'static str = "doc::pool::Double";
/// #     fn run(self, _cx: &mut TaskContext<'_, Self>) -> u64 { self.0 * 2 }
/// # }
/// # concur::register!(Double);
///
/// let pool = Pool::builder().workers(2).backend(Backend::Threads).build()?;
/// assert_eq!(pool.backend(), Backend::Threads);
/// let doubled: Vec<u64> = pool.map((1..=3).map(Double)).collect::<Result<_, _>>()?;
/// assert_eq!(doubled, [2, 4, 6]);
/// # Ok::<(), TaskError>(())
/// ```
pub struct Pool {
    inner: Inner,
}

/// The backend's own pool: one arm per compiled-in backend.
enum Inner {
    #[cfg(feature = "threads")]
    Threads(concur_threads::ThreadPool),
    #[cfg(feature = "procs")]
    Procs(concur_procs::ProcessPool),
    #[cfg(feature = "redis")]
    Redis(concur_redis::RedisPool),
    /// Keeps the type (and every `match` on it) well formed in a build with
    /// no backend, which `lib.rs` already rejects with a clear message.
    #[cfg(not(any(feature = "threads", feature = "procs", feature = "redis")))]
    #[allow(dead_code)]
    None(std::convert::Infallible),
}

/// Runs `$body` with `$pool` bound to the backend's own pool.
macro_rules! with_pool {
    ($self:expr, $pool:ident => $body:expr) => {
        match &$self.inner {
            #[cfg(feature = "threads")]
            Inner::Threads($pool) => $body,
            #[cfg(feature = "procs")]
            Inner::Procs($pool) => $body,
            #[cfg(feature = "redis")]
            Inner::Redis($pool) => $body,
            #[cfg(not(any(feature = "threads", feature = "procs", feature = "redis")))]
            Inner::None(never) => match *never {},
        }
    };
}

impl Pool {
    /// A pool with default settings on the chosen backend (see
    /// [`PoolBuilder::build`]).
    ///
    /// # Errors
    /// As [`PoolBuilder::build`].
    pub fn new() -> Result<Self, TaskError> {
        Self::builder().build()
    }

    /// A builder with default settings.
    pub fn builder() -> PoolBuilder {
        PoolBuilder::new()
    }

    /// The backend that runs this pool's tasks.
    ///
    /// This inherent method hides [`Executor::backend`] in method calls;
    /// both name the same backend (`Executor::backend(&pool)` gives
    /// `"threads"` or `"procs"`).
    pub fn backend(&self) -> Backend {
        match &self.inner {
            #[cfg(feature = "threads")]
            Inner::Threads(_) => Backend::Threads,
            #[cfg(feature = "procs")]
            Inner::Procs(_) => Backend::Procs,
            #[cfg(feature = "redis")]
            Inner::Redis(_) => Backend::Redis,
            #[cfg(not(any(feature = "threads", feature = "procs", feature = "redis")))]
            Inner::None(never) => match *never {},
        }
    }

    /// The thread pool underneath, when this pool runs on threads: for what
    /// only threads offer (closures, scoped borrowing).
    #[cfg(feature = "threads")]
    pub fn as_threads(&self) -> Option<&concur_threads::ThreadPool> {
        match &self.inner {
            Inner::Threads(pool) => Some(pool),
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }

    /// The process pool underneath, when this pool runs on worker
    /// processes: for what only processes offer (worker pids, ...).
    #[cfg(feature = "procs")]
    pub fn as_procs(&self) -> Option<&concur_procs::ProcessPool> {
        match &self.inner {
            Inner::Procs(pool) => Some(pool),
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }

    /// The Redis pool underneath, when this pool runs on the redis backend:
    /// for what only it offers (its queue's keys, ...).
    #[cfg(feature = "redis")]
    pub fn as_redis(&self) -> Option<&concur_redis::RedisPool> {
        match &self.inner {
            Inner::Redis(pool) => Some(pool),
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }
}

#[cfg(feature = "threads")]
impl From<concur_threads::ThreadPool> for Pool {
    fn from(pool: concur_threads::ThreadPool) -> Self {
        Self {
            inner: Inner::Threads(pool),
        }
    }
}

#[cfg(feature = "procs")]
impl From<concur_procs::ProcessPool> for Pool {
    fn from(pool: concur_procs::ProcessPool) -> Self {
        Self {
            inner: Inner::Procs(pool),
        }
    }
}

#[cfg(feature = "redis")]
impl From<concur_redis::RedisPool> for Pool {
    fn from(pool: concur_redis::RedisPool) -> Self {
        Self {
            inner: Inner::Redis(pool),
        }
    }
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        with_pool!(self, pool => f.debug_tuple("Pool").field(pool).finish())
    }
}

impl Executor for Pool {
    fn backend(&self) -> &'static str {
        with_pool!(self, pool => pool.backend())
    }

    fn capabilities(&self) -> Capabilities {
        with_pool!(self, pool => pool.capabilities())
    }

    fn workers(&self) -> usize {
        with_pool!(self, pool => pool.workers())
    }

    fn admission(&self) -> &Admission {
        with_pool!(self, pool => pool.admission())
    }

    fn start<T: Task>(&self, task: T, permit: Permit) -> Result<TaskHandle<T>, TaskError> {
        with_pool!(self, pool => pool.start(task, permit))
    }

    fn start_batch<T: Task>(
        &self,
        tasks: Vec<T>,
        permit: Permit,
    ) -> Result<BatchHandle<T>, TaskError> {
        with_pool!(self, pool => pool.start_batch(tasks, permit))
    }

    fn shutdown(&self) -> Result<(), TaskError> {
        with_pool!(self, pool => pool.shutdown())
    }

    fn shutdown_now(&self) {
        with_pool!(self, pool => pool.shutdown_now())
    }

    fn submit<T: Task>(&self, task: T) -> Result<TaskHandle<T>, TaskError> {
        with_pool!(self, pool => pool.submit(task))
    }

    fn map_all<T, I>(&self, tasks: I) -> Result<Vec<T::Output>, MapAllError<T::Output>>
    where
        T: Task,
        I: IntoIterator<Item = T>,
    {
        with_pool!(self, pool => pool.map_all(tasks))
    }
}

/// A change to the process backend's builder, applied only on that backend.
#[cfg(feature = "procs")]
type ProcsSetting =
    Arc<dyn Fn(concur_procs::ProcessPoolBuilder) -> concur_procs::ProcessPoolBuilder + Send + Sync>;

/// A change to the redis backend's builder, applied only on that backend.
#[cfg(feature = "redis")]
type RedisSetting =
    Arc<dyn Fn(concur_redis::RedisPoolBuilder) -> concur_redis::RedisPoolBuilder + Send + Sync>;

/// The environment variable that gives the redis backend its broker when
/// the builder has no [`redis_url`](PoolBuilder::redis_url).
#[cfg(feature = "redis")]
pub const ENV_REDIS_URL: &str = "CONCUR_REDIS_URL";

/// Builds a [`Pool`].
///
/// The settings every backend understands are the [`Configure`] setters
/// (`workers`, `queue_bound`, `task_timeout`, `retries`, `initializer`,
/// `max_tasks_per_worker`), the same calls as on each backend's builder.
/// [`backend`](Self::backend) picks the backend in code. Settings only one
/// backend has are given as a change to that backend's builder, applied
/// only when that backend is chosen, so the same code still builds a pool
/// on every backend:
///
/// ```
/// use concur::prelude::*;
///
/// let builder = Pool::builder().workers(2);
/// # #[cfg(feature = "procs")]
/// let builder = builder.procs(|b| b.memory_limit(512 << 20)); // ignored on threads
/// let pool = builder.backend(Backend::Threads).build()?;
/// assert_eq!(pool.workers(), 2);
/// # Ok::<(), TaskError>(())
/// ```
#[derive(Clone, Default)]
pub struct PoolBuilder {
    config: PoolConfig,
    backend: Option<Backend>,
    #[cfg(feature = "procs")]
    procs: Vec<ProcsSetting>,
    #[cfg(feature = "redis")]
    redis_url: Option<String>,
    #[cfg(feature = "redis")]
    redis: Vec<RedisSetting>,
}

impl Configure for PoolBuilder {
    fn config_mut(&mut self) -> &mut PoolConfig {
        &mut self.config
    }
}

impl PoolBuilder {
    /// Default settings; the backend is chosen when the pool is built.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts from common settings built elsewhere.
    pub fn from_config(config: PoolConfig) -> Self {
        Self {
            config,
            ..Self::default()
        }
    }

    /// Runs the pool on `backend`. This wins over `CONCUR_BACKEND`, which
    /// is then not read at all.
    pub fn backend(mut self, backend: Backend) -> Self {
        self.backend = Some(backend);
        self
    }

    /// A change to the process backend's builder (for its own settings:
    /// memory limit, restart limit, start timeout, ...), applied after the
    /// common settings when the pool runs on processes and ignored on every
    /// other backend. Several calls apply in order.
    ///
    /// ```
    /// use concur::prelude::*;
    ///
    /// let builder = Pool::builder()
    ///     .workers(4)
    ///     .procs(|b| b.memory_limit(512 << 20).start_timeout(std::time::Duration::from_secs(30)));
    /// # drop(builder);
    /// ```
    #[cfg(feature = "procs")]
    pub fn procs(
        mut self,
        change: impl Fn(concur_procs::ProcessPoolBuilder) -> concur_procs::ProcessPoolBuilder
            + Send
            + Sync
            + 'static,
    ) -> Self {
        self.procs.push(Arc::new(change));
        self
    }

    /// The broker of the redis backend (`redis://[:password@]host:port/db`,
    /// or `rediss://` with `concur-redis`'s `tls` feature). This wins over
    /// [`CONCUR_REDIS_URL`](ENV_REDIS_URL); ignored on every other backend.
    #[cfg(feature = "redis")]
    pub fn redis_url(mut self, url: &str) -> Self {
        self.redis_url = Some(url.to_owned());
        self
    }

    /// A change to the redis backend's builder (queue name, visibility
    /// timeout, local workers, worker command, ...), applied after the
    /// common settings when the pool runs on redis and ignored on every
    /// other backend. Several calls apply in order.
    #[cfg(feature = "redis")]
    pub fn redis(
        mut self,
        change: impl Fn(concur_redis::RedisPoolBuilder) -> concur_redis::RedisPoolBuilder
            + Send
            + Sync
            + 'static,
    ) -> Self {
        self.redis.push(Arc::new(change));
        self
    }

    /// The backend [`build`](Self::build) would choose now: the one given
    /// to [`backend`](Self::backend), else the one named by `CONCUR_BACKEND`,
    /// else the default ([`Backend::default_compiled`]: threads when
    /// compiled in, else procs).
    ///
    /// # Errors
    /// As [`Backend::select`]: the choice is not compiled in, or
    /// `CONCUR_BACKEND` holds something else than a backend name.
    pub fn chosen_backend(&self) -> Result<Backend, TaskError> {
        Backend::select(self.backend)
    }

    /// Chooses the backend (see [`chosen_backend`](Self::chosen_backend))
    /// and builds that backend's pool from these settings.
    ///
    /// # Errors
    /// [`ErrorKind::Config`](concur_core::ErrorKind::Config) when the chosen
    /// backend is not compiled in (the message names the cargo feature to
    /// enable), `CONCUR_BACKEND` holds a bad value (the message lists the
    /// valid ones), or a setting is invalid; otherwise what the backend's
    /// builder reports (for example
    /// [`ErrorKind::Spawn`](concur_core::ErrorKind::Spawn) when worker
    /// processes cannot start).
    pub fn build(self) -> Result<Pool, TaskError> {
        // An unregistered task's error names the facade's way to register,
        // not a backend crate's that the user never depends on.
        concur_core::__private::set_register_advice(
            concur_core::__private::AdviceLayer::Facade,
            "add `#[concur::task]` to its `impl Task` or `concur::register!` for it",
        );
        let backend = self.chosen_backend()?;
        let inner = match backend {
            #[cfg(feature = "threads")]
            Backend::Threads => {
                Inner::Threads(concur_threads::ThreadPool::with_config(self.config)?)
            }
            #[cfg(feature = "procs")]
            Backend::Procs => {
                let builder = concur_procs::ProcessPoolBuilder::from_config(self.config);
                let builder = self.procs.iter().fold(builder, |b, change| change(b));
                Inner::Procs(builder.build()?)
            }
            #[cfg(feature = "redis")]
            Backend::Redis => {
                let url = redis_url(self.redis_url.as_deref())?;
                let builder = concur_redis::RedisPoolBuilder::from_config(&url, self.config);
                let builder = self.redis.iter().fold(builder, |b, change| change(b));
                Inner::Redis(builder.build()?)
            }
            #[allow(unreachable_patterns)]
            other => unreachable!("`Backend::select` returned `{other}`, which is not compiled in"),
        };
        Ok(Pool { inner })
    }
}

impl fmt::Debug for PoolBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("PoolBuilder");
        s.field("config", &self.config)
            .field("backend", &self.backend);
        #[cfg(feature = "procs")]
        s.field("procs_settings", &self.procs.len());
        #[cfg(feature = "redis")]
        s.field("redis_url", &self.redis_url.as_ref().map(|_| "<set>"))
            .field("redis_settings", &self.redis.len());
        s.finish()
    }
}

/// The builder's URL, else `CONCUR_REDIS_URL` (empty means unset), else a
/// config error naming both.
#[cfg(feature = "redis")]
fn redis_url(given: Option<&str>) -> Result<String, TaskError> {
    if let Some(url) = given {
        return Ok(url.to_owned());
    }
    match std::env::var(ENV_REDIS_URL) {
        Ok(url) if !url.trim().is_empty() => Ok(url.trim().to_owned()),
        Err(std::env::VarError::NotUnicode(_)) => Err(TaskError::config(
            ENV_REDIS_URL,
            "the value is not valid unicode",
        )),
        _ => Err(TaskError::config(
            "redis_url",
            &format!(
                "the redis backend needs its broker's URL: give it with \
                 `PoolBuilder::redis_url(url)` or the `{ENV_REDIS_URL}` environment variable"
            ),
        )),
    }
}
