//! The Redis server of the `redis` backend: the one `--redis URL` names,
//! or, without a URL, a `redis-server` this process starts on a free
//! loopback port (so `concur bench --backend redis` runs on a fresh
//! machine) and that ends with this process.

use std::error::Error as StdError;
use std::process::Child;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

static GIVEN: OnceLock<String> = OnceLock::new();
/// The server this process started, if any.
static SERVER: Mutex<Option<Child>> = Mutex::new(None);

/// Stops the server this process started (killed and reaped), if any.
pub fn stop() {
    let child = SERVER.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(mut c) = child {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// Uses the server at `url` (from `--redis` or `CONCUR_REDIS_URL`).
pub fn set_url(url: &str) {
    let _ = GIVEN.set(url.to_owned());
}

/// The server's URL, starting one the first time when none was given.
///
/// # Errors
/// When `redis-server` cannot be started or does not answer.
pub fn url() -> Result<String, Box<dyn StdError + Send + Sync>> {
    if let Some(u) = GIVEN.get() {
        return Ok(u.clone());
    }
    static STARTED: OnceLock<Result<String, String>> = OnceLock::new();
    STARTED.get_or_init(start).clone().map_err(|e| e.into())
}

/// Starts a server from a thread that lives as long as the process: the
/// server's parent-death signal (which follows the thread that started
/// it) then ends it when this process ends, however it ends.
fn start() -> Result<String, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("concur-redis-server".into())
        .spawn(move || {
            let started = spawn_server().map(|(url, child)| {
                *SERVER.lock().unwrap_or_else(|e| e.into_inner()) = Some(child);
                url
            });
            let ok = started.is_ok();
            let _ = tx.send(started);
            if ok {
                // Keeps this thread, and so the server, alive until the process exits.
                loop {
                    std::thread::park();
                }
            }
        })
        .map_err(|e| format!("cannot start a thread: {e}"))?;
    rx.recv_timeout(Duration::from_secs(30))
        .map_err(|_| "redis-server did not start within 30 s".to_owned())?
}

fn spawn_server() -> Result<(String, std::process::Child), String> {
    use std::os::unix::process::CommandExt;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("no free loopback port: {e}"))?
        .port();
    let dir = std::env::temp_dir().join(format!("concur-redis-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut cmd = std::process::Command::new("redis-server");
    cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(&dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null());
    // SAFETY: prctl takes integers only and is async-signal-safe.
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
    let mut child = cmd.spawn().map_err(|e| {
        format!(
            "cannot start redis-server ({e}); install it (apt-get install -y redis-server) \
             or give --redis URL"
        )
    })?;
    let url = format!("redis://127.0.0.1:{port}/0");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let up = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
        if up {
            return Ok((url, child));
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("redis-server exited at start: {status}"));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err("redis-server did not listen within 20 s".into());
        }
        // A bounded poll: the server has no other way to say it is up.
        std::thread::sleep(Duration::from_millis(10));
    }
}
