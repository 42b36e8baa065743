//! Connections to the broker: opening them with a bound, reconnecting with
//! backoff (bounded), and turning the client's errors into ours.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use concur_core::{ErrorKind, TaskError};
use redis::{Client, Connection, RedisError};

/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Every reply must come within this (blocking reads ask for far less):
/// a broker that accepts a command and never answers is a lost broker.
pub(crate) const REPLY_TIMEOUT: Duration = Duration::from_secs(15);
/// The longest pause between two reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// How often a backoff between connection attempts checks that it
/// should stop.
const STOP_CHECK: Duration = Duration::from_millis(10);

/// What went wrong with the broker, as text (the client's error types stay
/// out of our API).
#[derive(Debug, Clone)]
pub(crate) struct BrokerError {
    text: String,
    /// The connection is gone (I/O), as opposed to a command the server refused.
    pub(crate) io: bool,
}

impl BrokerError {
    pub(crate) fn new(e: &RedisError) -> Self {
        Self {
            text: describe(e),
            // A server still loading its data after a restart answers
            // LOADING: as good as not there yet.
            io: e.is_io_error()
                || e.is_connection_dropped()
                || e.is_connection_refusal()
                || e.is_timeout()
                || has_code(e, &["LOADING", "BUSY", "TRYAGAIN", "MASTERDOWN"]),
        }
    }

    pub(crate) fn other(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            io: false,
        }
    }
}

/// The most of a broker error's text kept in a message: a pipeline that
/// fails as a whole (a server out of memory refuses every write) lists
/// every command's error, and that text would be carried by every task
/// the pipeline held.
const MAX_TEXT: usize = 400;

/// A broker error's text, cut to [`MAX_TEXT`] bytes, saying how many
/// commands failed when it is a pipeline's.
fn describe(e: &RedisError) -> String {
    let mut text = e.to_string();
    let failed = e.clone().into_server_errors().map_or(0, |all| all.len());
    if text.len() > MAX_TEXT {
        let mut cut = MAX_TEXT;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        let more = text.len() - cut;
        text.truncate(cut);
        text.push_str(&format!("... ({more} more bytes)"));
    }
    if failed > 1 {
        text = format!("{failed} commands failed: {text}");
    }
    text
}

/// Whether the server answered with one of the error `codes` (`NOGROUP`,
/// `BUSYGROUP`, `LOADING`, ...), also inside a pipeline or a transaction.
///
/// Every check of a server error code goes through here: in redis 1.x a
/// pipeline's or an aborted transaction's error has `code()` `None` for
/// any code the client does not know by name (`NOGROUP` among them), and
/// otherwise gives only the first failed command's code.
pub(crate) fn has_code(e: &RedisError, codes: &[&str]) -> bool {
    e.code().is_some_and(|c| codes.contains(&c))
        || e.clone()
            .into_server_errors()
            .is_some_and(|all| all.iter().any(|(_, s)| codes.contains(&s.code())))
}

impl fmt::Display for BrokerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::error::Error for BrokerError {}

/// The broker could not be reached for the whole reconnection bound.
#[derive(Debug)]
pub(crate) struct Unreachable {
    pub(crate) url: String,
    pub(crate) waited: Duration,
    pub(crate) last: BrokerError,
}

impl fmt::Display for Unreachable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the broker at {} could not be reached for {:?}: {}",
            self.url, self.waited, self.last
        )
    }
}

impl std::error::Error for Unreachable {}

/// True for an error that means the broker is gone (as opposed to a
/// command it refused).
pub(crate) fn is_lost(e: &TaskError) -> bool {
    use std::error::Error;
    e.source().is_some_and(|s| s.is::<Unreachable>())
}

/// A broker error as the one error type: `Io` for a lost connection or a
/// refused command, with the text as its source.
pub(crate) fn to_task_error(e: BrokerError) -> TaskError {
    TaskError::with_source(ErrorKind::Io, e)
}

/// A URL with its password hidden, for messages.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// The broker: where it is and how long to keep trying when it is gone.
#[derive(Debug)]
pub(crate) struct Broker {
    client: Client,
    url: String,
    reconnect: Duration,
}

impl Broker {
    /// # Errors
    /// A config error when the URL cannot be parsed.
    pub(crate) fn new(url: &str, reconnect: Duration) -> Result<Self, TaskError> {
        #[cfg(feature = "tls")]
        {
            // rustls needs a process-wide crypto provider; a program that
            // installed its own keeps it.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let client = Client::open(url).map_err(|e| {
            TaskError::with_source(
                ErrorKind::Config {
                    field: "url".into(),
                    reason: "a redis:// or rediss:// URL".into(),
                },
                BrokerError::new(&e),
            )
        })?;
        Ok(Self {
            client,
            url: redact(url),
            reconnect,
        })
    }

    /// The URL, password hidden.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// The bound on one connection attempt: never longer than the whole
    /// reconnection bound (the floor keeps a zero bound from meaning "no
    /// timeout" to the client).
    fn attempt_timeout(&self) -> Duration {
        CONNECT_TIMEOUT.min(self.reconnect.max(Duration::from_millis(100)))
    }

    /// One attempt to connect.
    pub(crate) fn connect_once(&self) -> Result<Connection, BrokerError> {
        let con = self
            .client
            .get_connection_with_timeout(self.attempt_timeout())
            .map_err(|e| BrokerError::new(&e))?;
        con.set_read_timeout(Some(REPLY_TIMEOUT))
            .and_then(|()| con.set_write_timeout(Some(REPLY_TIMEOUT)))
            .map_err(|e| BrokerError::new(&e))?;
        Ok(con)
    }

    /// Connects, retrying with backoff for at most the reconnection bound
    /// (or until `stop` is set).
    ///
    /// # Errors
    /// [`Unreachable`] as an `Io` error after the bound; a refusal that
    /// retrying cannot fix (a wrong password) at once.
    pub(crate) fn connect(&self, stop: &AtomicBool) -> Result<Connection, TaskError> {
        let start = Instant::now();
        let mut pause = Duration::from_millis(20);
        loop {
            match self.connect_once() {
                Ok(c) => return Ok(c),
                Err(e) if !e.io => return Err(to_task_error(e)),
                Err(e) => {
                    let waited = start.elapsed();
                    if waited >= self.reconnect || stop.load(Ordering::Acquire) {
                        return Err(TaskError::with_source(
                            ErrorKind::Io,
                            Unreachable {
                                url: self.url.clone(),
                                waited,
                                last: e,
                            },
                        ));
                    }
                    // Backoff between attempts: the broker is down, and
                    // nothing else can be done until it is back. Slept in
                    // slices, so that `stop` ends it within one (a pool
                    // being dropped joins the thread that waits here).
                    let until = Instant::now() + pause.min(self.reconnect - waited);
                    while !stop.load(Ordering::Acquire) {
                        let left = until.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            break;
                        }
                        std::thread::sleep(left.min(STOP_CHECK));
                    }
                    pause = (pause * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

/// A connection that reconnects: each call runs on a live connection,
/// and an I/O failure is retried on a new one within the bound.
pub(crate) struct Conn {
    broker: std::sync::Arc<Broker>,
    con: Option<Connection>,
    /// Where to publish the server's id of this connection (for `CLIENT
    /// UNBLOCK` from another thread), if anyone needs it.
    id: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
}

impl Conn {
    pub(crate) fn new(broker: std::sync::Arc<Broker>) -> Self {
        Self {
            broker,
            con: None,
            id: None,
        }
    }

    /// Publishes this connection's client id in `id` (0 while there is no
    /// connection), so another thread can end a blocking read early.
    pub(crate) fn tracked(mut self, id: std::sync::Arc<std::sync::atomic::AtomicU64>) -> Self {
        self.id = Some(id);
        self
    }

    fn open(&mut self, stop: &AtomicBool) -> Result<&mut Connection, TaskError> {
        if self.con.is_none() {
            let mut c = self.broker.connect(stop)?;
            if let Some(id) = &self.id {
                let n: u64 = redis::cmd("CLIENT").arg("ID").query(&mut c).unwrap_or(0);
                id.store(n, Ordering::Release);
            }
            self.con = Some(c);
        }
        Ok(self.con.as_mut().expect("just opened"))
    }

    /// Runs `f` on the connection. A lost connection is reopened (with
    /// backoff, bounded) and `f` run again: commands sent here must be
    /// safe to repeat (every write here is either idempotent or
    /// deduplicated by task id).
    ///
    /// # Errors
    /// `Io` when the broker stays unreachable past the bound or refuses
    /// the command.
    pub(crate) fn run<T>(
        &mut self,
        stop: &AtomicBool,
        mut f: impl FnMut(&mut Connection) -> Result<T, RedisError>,
    ) -> Result<T, TaskError> {
        let start = Instant::now();
        loop {
            let con = self.open(stop)?;
            match f(con) {
                Ok(v) => return Ok(v),
                Err(e) => {
                    let e = BrokerError::new(&e);
                    if !e.io {
                        return Err(to_task_error(e));
                    }
                    self.con = None;
                    if start.elapsed() >= self.broker.reconnect || stop.load(Ordering::Acquire) {
                        return Err(TaskError::with_source(
                            ErrorKind::Io,
                            Unreachable {
                                url: self.broker.url.clone(),
                                waited: start.elapsed(),
                                last: e,
                            },
                        ));
                    }
                }
            }
        }
    }

    /// Runs `f` once; a lost connection is dropped (reopened by the next call).
    pub(crate) fn try_once<T>(
        &mut self,
        stop: &AtomicBool,
        f: impl FnOnce(&mut Connection) -> Result<T, RedisError>,
    ) -> Result<T, BrokerError> {
        let con = self.open(stop).map_err(|e| BrokerError {
            text: error_chain(&e),
            io: is_lost(&e),
        })?;
        f(con).map_err(|e| {
            let e = BrokerError::new(&e);
            if e.io {
                self.con = None;
            }
            e
        })
    }
}

/// Ends the blocking read of the connection whose client id is in `id`
/// (it returns as if it timed out), using `conn`.
pub(crate) fn unblock(conn: &mut Conn, id: &std::sync::atomic::AtomicU64) {
    let n = id.load(Ordering::Acquire);
    if n != 0 {
        let never = AtomicBool::new(false);
        let _ = conn.try_once(&never, |c| {
            redis::cmd("CLIENT").arg("UNBLOCK").arg(n).exec(c)
        });
    }
}

/// An error and its causes as one line.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut next = e.source();
    while let Some(c) = next {
        s.push_str(": ");
        s.push_str(&c.to_string());
        next = c.source();
    }
    s
}

/// Creates the consumer group (and the stream) unless it exists. Starts at
/// the stream's beginning, so tasks submitted before any worker came are
/// delivered.
pub(crate) fn ensure_group(con: &mut Connection, tasks: &str) -> Result<(), RedisError> {
    match redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(tasks)
        .arg(crate::keys::GROUP)
        .arg("0")
        .arg("MKSTREAM")
        .exec(con)
    {
        Err(e) if has_code(&e, &["BUSYGROUP"]) => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::Value;

    /// Replies with canned RESP values, one per command, in order.
    struct Canned(Vec<&'static [u8]>);

    impl redis::ConnectionLike for Canned {
        fn req_packed_command(&mut self, _cmd: &[u8]) -> redis::RedisResult<Value> {
            redis::parse_redis_value(self.0.remove(0))
        }
        fn req_packed_commands(
            &mut self,
            _cmd: &[u8],
            _offset: usize,
            count: usize,
        ) -> redis::RedisResult<Vec<Value>> {
            (0..count)
                .map(|_| redis::parse_redis_value(self.0.remove(0)))
                .collect()
        }
        fn get_db(&self) -> i64 {
            0
        }
        fn check_connection(&mut self) -> bool {
            true
        }
        fn is_open(&self) -> bool {
            true
        }
    }

    fn pipeline_error(replies: Vec<&'static [u8]>) -> RedisError {
        let mut p = redis::pipe();
        for _ in &replies {
            p.cmd("PING");
        }
        p.query::<Vec<Value>>(&mut Canned(replies)).unwrap_err()
    }

    #[test]
    fn a_pipeline_that_fails_whole_is_described_short() {
        let oom: &[u8] = b"-OOM command not allowed when used memory > 'maxmemory'.\r\n";
        let e = pipeline_error(vec![oom; 200]);
        let text = BrokerError::new(&e).to_string();
        assert!(text.starts_with("200 commands failed: "), "{text}");
        assert!(text.contains("OOM"), "{text}");
        assert!(text.len() < MAX_TEXT + 100, "{} bytes: {text}", text.len());
    }

    #[test]
    fn codes_are_seen_through_pipeline_errors() {
        let e = pipeline_error(vec![b"+OK\r\n", b"-NOGROUP No such key\r\n"]);
        // Why the helper exists: the client hides the code of a pipeline.
        assert_eq!(e.code(), None);
        assert!(has_code(&e, &["NOGROUP"]));
        assert!(!has_code(&e, &["BUSYGROUP"]));
        let single = redis::cmd("XGROUP")
            .exec(&mut Canned(vec![b"-BUSYGROUP exists\r\n"]))
            .unwrap_err();
        assert!(has_code(&single, &["BUSYGROUP"]));
    }

    #[test]
    fn a_busy_server_inside_a_pipeline_is_a_lost_connection() {
        let e = pipeline_error(vec![b"+OK\r\n", b"-BUSY running a script\r\n"]);
        assert!(BrokerError::new(&e).io);
        let e = pipeline_error(vec![b"-WRONGTYPE not a stream\r\n"]);
        assert!(!BrokerError::new(&e).io);
    }

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(redact("redis://:s3cret@h:1/0"), "redis://:***@h:1/0");
        assert_eq!(redact("rediss://u:p@h"), "rediss://u:***@h");
        assert_eq!(redact("redis://h:1"), "redis://h:1");
    }
}
