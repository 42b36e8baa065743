//! Names that must not collide between processes and machines: pool ids,
//! consumer names, worker incarnations. Not secrets (nothing is
//! authorised by them); only unique.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A 64-bit number unlikely to repeat anywhere: std's per-process random
/// hash keys mixed with the time, the pid and a counter.
pub(crate) fn unique_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    h.write_u128(now);
    h.finish()
}

/// A fresh pool id: 128 bits in hex.
pub(crate) fn pool_id() -> String {
    format!("{:016x}{:016x}", unique_u64(), unique_u64())
}

/// This machine's name (for consumer names an operator can read).
pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into())
}
