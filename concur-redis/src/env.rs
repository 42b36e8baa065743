//! How a pool tells a local worker process what to do: environment
//! variables (readable by this user only, through `/proc`; the URL may
//! hold the broker's password).

use std::time::Duration;

use crate::worker::{LocalSpec, Worker, WorkerBuilder};

/// Marks a process started as a local worker.
pub(crate) const WORKER: &str = "CONCUR_REDIS_WORKER";
pub(crate) const URL: &str = "CONCUR_REDIS_URL";
pub(crate) const QUEUE: &str = "CONCUR_REDIS_QUEUE";
pub(crate) const POOL: &str = "CONCUR_REDIS_POOL";
pub(crate) const PARENT: &str = "CONCUR_REDIS_PARENT";
pub(crate) const CONSUMER: &str = "CONCUR_REDIS_CONSUMER";
pub(crate) const INDEX: &str = "CONCUR_REDIS_INDEX";
pub(crate) const INCARNATION: &str = "CONCUR_REDIS_INCARNATION";
pub(crate) const MAX_TASKS: &str = "CONCUR_REDIS_MAX_TASKS";
pub(crate) const VISIBILITY_MS: &str = "CONCUR_REDIS_VISIBILITY_MS";
pub(crate) const HEARTBEAT_MS: &str = "CONCUR_REDIS_HEARTBEAT_MS";
pub(crate) const RECONNECT_MS: &str = "CONCUR_REDIS_RECONNECT_MS";
pub(crate) const INIT_NAME: &str = "CONCUR_REDIS_INIT_NAME";
pub(crate) const INIT_BODY: &str = "CONCUR_REDIS_INIT_BODY";

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn number<T: std::str::FromStr>(name: &str) -> Option<T> {
    var(name)?.parse().ok()
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// True when this process was started as a local worker.
pub(crate) fn is_worker() -> bool {
    std::env::var_os(WORKER).is_some()
}

/// The worker this process was started as, from its environment.
pub(crate) fn worker_from_env() -> Option<WorkerBuilder> {
    if !is_worker() {
        return None;
    }
    let mut b = Worker::builder(&var(URL)?)
        .queue(&var(QUEUE)?)
        .name(&var(CONSUMER)?)
        .index(number(INDEX)?)
        .incarnation(number(INCARNATION)?);
    if let Some(ms) = number(VISIBILITY_MS) {
        b = b.visibility_timeout(Duration::from_millis(ms));
    }
    if let Some(ms) = number(HEARTBEAT_MS) {
        b = b.heartbeat(Duration::from_millis(ms));
    }
    if let Some(ms) = number(RECONNECT_MS) {
        b = b.reconnect_timeout(Duration::from_millis(ms));
    }
    if let Some(n) = number(MAX_TASKS) {
        b = b.max_tasks(n);
    }
    let initializer = match (var(INIT_NAME), var(INIT_BODY)) {
        (Some(name), Some(body)) => Some((name, unhex(&body)?)),
        _ => None,
    };
    b.local = Some(LocalSpec {
        pool: var(POOL)?,
        parent: number(PARENT)?,
        initializer,
    });
    Some(b)
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_round_trip() {
        let b = [0u8, 1, 0xab, 0xff];
        assert_eq!(super::unhex(&super::hex(&b)).unwrap(), b);
        assert_eq!(super::unhex("abc"), None);
        assert_eq!(super::unhex("zz"), None);
    }
}
