//! The Redis server of the `redis` backend: the one `--redis URL` names,
//! or, without a URL, a `redis-server` this process starts on a free
//! loopback port (so `concur bench --backend redis` runs on a fresh
//! machine) and that ends with this process
//! ([`concur_redis::server::shared_url`]).

use std::error::Error as StdError;
use std::sync::OnceLock;

static GIVEN: OnceLock<String> = OnceLock::new();

/// Stops the server this process started (killed and reaped), if any.
pub fn stop() {
    concur_redis::server::stop_shared();
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
    concur_redis::server::shared_url().map_err(|e| {
        let cause = e.source().map(|s| format!(": {s}")).unwrap_or_default();
        format!("{e}{cause} (or give --redis URL)").into()
    })
}
