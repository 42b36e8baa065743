//! Test support: a real `redis-server` per test (or one per test binary),
//! and worker processes that are this test binary re-run, each stopped and
//! reaped by a guard even when the test panics.

#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use concur_redis::server::{LocalServer, ServerOptions};
use concur_redis::{Configure, PoolConfig, RedisPool, RedisPoolBuilder, Worker};

/// The test every test binary defines that runs a worker when asked to.
pub const WORKER_TEST: &str = "worker_entry";
/// Set (to the URL) in a worker started by [`spawn_worker`].
const ENV_URL: &str = "CONCUR_TEST_REDIS_URL";
const ENV_QUEUE: &str = "CONCUR_TEST_REDIS_QUEUE";
const ENV_OTHER_BUILD: &str = "CONCUR_TEST_OTHER_BUILD";
const ENV_VISIBILITY_MS: &str = "CONCUR_TEST_VISIBILITY_MS";

// Not every test binary that includes this module calls it.
#[allow(unused_imports)]
pub use concur_core::conformance::{bounded, join, DEADLINE};

/// Defines the test [`WORKER_TEST`] that every test binary here needs: it
/// runs a worker when this binary was started as one ([`worker_entry`]),
/// and does nothing otherwise.
#[allow(unused_macros)] // each test target uses part of this module
macro_rules! worker_entry_test {
    () => {
        /// Runs a worker when this binary was started as one; nothing otherwise.
        #[test]
        fn worker_entry() {
            crate::support::worker_entry();
        }
    };
}
#[allow(unused_imports)]
pub(crate) use worker_entry_test;

/// A `redis-server` of our own on a free loopback port, with its own
/// directory ([`concur_redis::server::LocalServer`]). Killed and reaped on
/// drop.
pub struct Server(LocalServer);

fn unique(tag: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A queue name no other test uses.
pub fn fresh_queue() -> String {
    unique("q")
}

impl Server {
    /// Starts a server (`appendonly` on or off; `requirepass` when given).
    pub fn start(appendonly: bool, password: Option<&str>) -> Self {
        let mut options = ServerOptions::new().appendonly(appendonly);
        if let Some(p) = password {
            options = options.password(p);
        }
        Server(LocalServer::start(options).unwrap_or_else(|e| panic!("{e}: {e:?}")))
    }

    /// `redis://[:password@]127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        self.0.url()
    }

    /// A connection for looking inside.
    pub fn con(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .unwrap()
            .get_connection_with_timeout(Duration::from_secs(5))
            .expect("a connection to the test server")
    }

    /// SIGKILLs the server and reaps it.
    pub fn kill(&mut self) {
        self.0.kill();
    }

    /// Starts it again on the same port and directory (its AOF, if any).
    pub fn restart(&mut self) {
        self.0.restart().unwrap_or_else(|e| panic!("{e}: {e:?}"));
    }
}

/// One server for the whole test binary ([`concur_redis::server::shared_url`]).
pub fn shared_server_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| concur_redis::server::shared_url().unwrap_or_else(|e| panic!("{e}: {e:?}")))
}

/// The command that starts a worker: this test binary, running only
/// [`WORKER_TEST`].
pub fn worker_args() -> [&'static str; 4] {
    ["--exact", WORKER_TEST, "--nocapture", "--quiet"]
}

/// A pool builder on `url` with local workers that are this test binary.
pub fn builder(url: &str, config: PoolConfig) -> RedisPoolBuilder {
    RedisPoolBuilder::from_config(url, config)
        .queue(&fresh_queue())
        .worker_command(std::env::current_exe().unwrap(), worker_args())
}

/// Builds pools for the tests: fresh queue, short visibility timeout.
pub fn pool(url: &str, config: PoolConfig) -> RedisPool {
    builder(url, config).build().expect("a pool")
}

/// Test tasks panic on purpose: each panic still fails its task with its
/// message and location, so a worker process keeps it off stderr and a
/// passing run stays quiet. Only ever in a worker: the test process itself
/// keeps its hook, so a failing test still says why.
fn quiet_panics() {
    std::panic::set_hook(Box::new(|_| {}));
}

/// What the worker test does: a local worker of a pool, or an independent
/// worker started by [`spawn_worker`]; nothing in a normal test run.
pub fn worker_entry() {
    let Ok(url) = std::env::var(ENV_URL) else {
        if concur_redis::is_worker() {
            quiet_panics();
        }
        concur_redis::init();
        return;
    };
    quiet_panics();
    let queue = std::env::var(ENV_QUEUE).expect("a queue");
    let mut w = Worker::builder(&url).queue(&queue);
    if let Some(ms) = std::env::var(ENV_VISIBILITY_MS)
        .ok()
        .and_then(|v| v.parse().ok())
    {
        w = w.visibility_timeout(Duration::from_millis(ms));
    }
    if std::env::var_os(ENV_OTHER_BUILD).is_some() {
        w = w.pretend_build(b"another build");
    }
    let code = match w.run() {
        Ok(_) => 0,
        Err(e) => {
            eprintln!("test worker: {e}: {:?}", std::error::Error::source(&e));
            1
        }
    };
    std::process::exit(code);
}

/// Independent worker processes (as on other machines), killed and reaped
/// on drop.
#[derive(Default)]
pub struct Workers(pub Vec<Child>);

/// Options of an independent worker.
#[derive(Clone, Copy, Default)]
pub struct WorkerOpts {
    pub other_build: bool,
    pub visibility_ms: Option<u64>,
}

impl Workers {
    /// Starts one worker for `queue` at `url`.
    pub fn spawn(&mut self, url: &str, queue: &str, opts: WorkerOpts) -> u32 {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args(worker_args())
            .env(ENV_URL, url)
            .env(ENV_QUEUE, queue)
            .stdin(Stdio::null());
        if opts.other_build {
            cmd.env(ENV_OTHER_BUILD, "1");
        }
        if let Some(ms) = opts.visibility_ms {
            cmd.env(ENV_VISIBILITY_MS, ms.to_string());
        }
        let child = cmd.spawn().expect("a worker process");
        let pid = child.id();
        self.0.push(child);
        pid
    }

    /// SIGKILLs worker `pid` and reaps it.
    pub fn kill(&mut self, pid: u32) {
        if let Some(i) = self.0.iter().position(|c| c.id() == pid) {
            let mut c = self.0.remove(i);
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A pool with no local workers, for queues served by [`Workers`].
pub fn remote_pool(url: &str, queue: &str, config: PoolConfig) -> RedisPool {
    RedisPoolBuilder::from_config(url, config)
        .queue(queue)
        .local_workers(false)
        .build()
        .expect("a pool")
}

/// `workers(n)` etc. read better at call sites through `Configure`.
pub fn config() -> PoolConfig {
    PoolConfig::new()
}

pub fn workers(n: usize) -> PoolConfig {
    PoolConfig::new().workers(n)
}
