//! A `redis-server` of this process's own, on a free loopback port, for
//! tests, benchmarks and the CLI (`concur bench --backend redis` on a fresh
//! machine). Not for production: it binds 127.0.0.1 only, keeps its data
//! in a temporary directory that is removed on drop, and dies with the
//! thread that started it.
//!
//! ```no_run
//! use concur_redis::server::{LocalServer, ServerOptions};
//!
//! let server = LocalServer::start(ServerOptions::new())?;
//! let pool = concur_redis::RedisPool::builder(&server.url()).build()?;
//! # Ok::<(), concur_redis::TaskError>(())
//! ```

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use concur_core::{ErrorKind, TaskError};

/// How long a starting server has to answer before [`LocalServer::start`]
/// gives up.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// What to install when `redis-server` is missing.
const INSTALL_HINT: &str = "apt-get install -y redis-server";

/// How a [`LocalServer`] is started. The default: no persistence, no
/// password, plain TCP.
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    appendonly: bool,
    password: Option<String>,
    tls: Option<TlsFiles>,
}

#[derive(Debug, Clone)]
struct TlsFiles {
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
}

impl ServerOptions {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// `appendonly yes`: queued tasks and results survive
    /// [`LocalServer::restart`] (the data directory is kept across it).
    pub fn appendonly(mut self, on: bool) -> Self {
        self.appendonly = on;
        self
    }

    /// `requirepass`: clients must give it (it is in [`LocalServer::url`]).
    pub fn password(mut self, password: &str) -> Self {
        self.password = Some(password.to_owned());
        self
    }

    /// TLS only (no plain port), with this certificate, key and CA
    /// certificate (PEM files); clients are not asked for certificates.
    /// [`LocalServer::url`] is then a `rediss://` URL.
    pub fn tls(
        mut self,
        cert: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
        ca: impl Into<PathBuf>,
    ) -> Self {
        self.tls = Some(TlsFiles {
            cert: cert.into(),
            key: key.into(),
            ca: ca.into(),
        });
        self
    }
}

/// A `redis-server` started by this process on a free loopback port, with
/// its own temporary directory. Killed (SIGKILL), reaped and its directory
/// removed on drop; also killed by the kernel when the thread that started
/// it ends (parent-death signal), so a crashed test leaves none behind.
#[derive(Debug)]
pub struct LocalServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    options: ServerOptions,
}

impl LocalServer {
    /// Starts a server and waits (at most [`START_TIMEOUT`]) until it
    /// answers.
    ///
    /// # Errors
    /// [`ErrorKind::Io`] when `redis-server` is not installed (the message
    /// says how to install it), no port or directory is available, or the
    /// server exits or does not answer in time.
    pub fn start(options: ServerOptions) -> Result<Self, TaskError> {
        let port = free_port()?;
        let dir = std::env::temp_dir().join(unique("concur-redis-server"));
        std::fs::create_dir_all(&dir).map_err(|e| io_error(&format!("{}", dir.display()), e))?;
        let mut server = LocalServer {
            child: None,
            port,
            dir,
            options,
        };
        server.launch()?;
        Ok(server)
    }

    /// `redis://[:password@]127.0.0.1:PORT/0`, or `rediss://` with TLS.
    pub fn url(&self) -> String {
        let scheme = if self.options.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        match &self.options.password {
            Some(p) => format!("{scheme}://:{p}@127.0.0.1:{}/0", self.port),
            None => format!("{scheme}://127.0.0.1:{}/0", self.port),
        }
    }

    /// The server's loopback port (the same across [`restart`](Self::restart)).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The process id of the running server; `None` after [`kill`](Self::kill).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILLs the server and reaps it (the directory stays, for
    /// [`restart`](Self::restart)). Does nothing when it is not running.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kills the server and starts it again on the same port and directory
    /// (so with [`appendonly`](ServerOptions::appendonly) it reloads its
    /// data).
    ///
    /// # Errors
    /// As [`start`](Self::start).
    pub fn restart(&mut self) -> Result<(), TaskError> {
        self.kill();
        self.launch()
    }

    fn launch(&mut self) -> Result<(), TaskError> {
        let mut cmd = Command::new("redis-server");
        let port = self.port.to_string();
        match &self.options.tls {
            Some(tls) => {
                cmd.args(["--port", "0", "--tls-port", &port])
                    .arg("--tls-cert-file")
                    .arg(&tls.cert)
                    .arg("--tls-key-file")
                    .arg(&tls.key)
                    .arg("--tls-ca-cert-file")
                    .arg(&tls.ca)
                    .args(["--tls-auth-clients", "no"]);
            }
            None => {
                cmd.args(["--port", &port]);
            }
        }
        cmd.args(["--bind", "127.0.0.1", "--save", ""])
            .arg("--appendonly")
            .arg(if self.options.appendonly { "yes" } else { "no" })
            .arg("--dir")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        if let Some(p) = &self.options.password {
            cmd.arg("--requirepass").arg(p);
        }
        // SAFETY: prctl takes integers only and is async-signal-safe. The
        // server dies with the thread that started it if this process dies
        // without running Drop.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0,
                    0,
                    0,
                );
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                io_error(
                    &format!("redis-server is not on PATH; install it ({INSTALL_HINT})"),
                    e,
                )
            } else {
                io_error("cannot start redis-server", e)
            }
        })?;
        self.child = Some(child);
        let up = self.wait_until_up();
        if up.is_err() {
            self.kill();
        }
        up
    }

    fn wait_until_up(&mut self) -> Result<(), TaskError> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                return Err(io_error(
                    "redis-server exited at start",
                    std::io::Error::other(status.to_string()),
                ));
            }
            if self.answers() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(io_error(
                    "redis-server did not answer",
                    std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no answer within {START_TIMEOUT:?}"),
                    ),
                ));
            }
            // A bounded poll: the server has no other way to say it is up.
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A PING answered (plain), or the TLS port accepting connections (a
    /// TLS handshake needs the client's trust set-up, which is the
    /// caller's).
    fn answers(&self) -> bool {
        if self.options.tls.is_some() {
            return std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok();
        }
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
            .is_ok()
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The server all of this process shares (default options), started the
/// first time it is asked for, from a thread that lives as long as the
/// process: its parent-death signal (which follows the starting thread)
/// then fires only when the process ends, however it ends.
///
/// # Errors
/// As [`LocalServer::start`]; a failed start is remembered and returned
/// again.
pub fn shared_url() -> Result<String, TaskError> {
    static STARTED: OnceLock<Result<String, String>> = OnceLock::new();
    STARTED
        .get_or_init(start_shared)
        .clone()
        .map_err(|reason| io_error(&reason, std::io::Error::other("shared redis-server")))
}

/// Stops the server of [`shared_url`] (killed, reaped, directory removed)
/// if it was started. Later calls to `shared_url` still return its URL,
/// which then no longer answers: call this at the end of the process.
pub fn stop_shared() {
    let server = SHARED.lock().unwrap_or_else(|e| e.into_inner()).take();
    drop(server);
}

static SHARED: Mutex<Option<LocalServer>> = Mutex::new(None);

fn start_shared() -> Result<String, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("concur-redis-server".into())
        .spawn(move || {
            let started = LocalServer::start(ServerOptions::new()).map(|s| {
                let url = s.url();
                *SHARED.lock().unwrap_or_else(|e| e.into_inner()) = Some(s);
                url
            });
            let ok = started.is_ok();
            let _ = tx.send(started.map_err(|e| error_text(&e)));
            if ok {
                // Keeps this thread, and so the server, alive until the process exits.
                loop {
                    std::thread::park();
                }
            }
        })
        .map_err(|e| format!("cannot start a thread: {e}"))?;
    // Bounded by the start timeout inside, with slack for spawning.
    rx.recv_timeout(START_TIMEOUT + Duration::from_secs(10))
        .map_err(|_| "redis-server did not start in time".to_owned())?
}

/// The error and its source, as one line.
fn error_text(e: &TaskError) -> String {
    match std::error::Error::source(e) {
        Some(s) => format!("{e}: {s}"),
        None => e.to_string(),
    }
}

fn io_error(what: &str, e: std::io::Error) -> TaskError {
    TaskError::with_source(
        ErrorKind::Io,
        std::io::Error::new(e.kind(), format!("{what}: {e}")),
    )
}

/// A free loopback port that no server of this process had before: the
/// clients of a server that was stopped (to be restarted on its port, say)
/// must not find another server there.
fn free_port() -> Result<u16, TaskError> {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let mut last = 0;
    // Bounded: the kernel rarely hands out the same ephemeral port twice
    // in a row.
    for _ in 0..64 {
        last = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(|e| io_error("no free loopback port", e))?;
        if !given.contains(&last) {
            break;
        }
    }
    given.push(last);
    Ok(last)
}

fn unique(tag: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}
