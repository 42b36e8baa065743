//! Failed starts wait (issue 11, reliability): a slot whose worker starts
//! keep failing starts again after a backoff that doubles up to a cap, not
//! at once. Before, a pool whose restart limit never ran out spun through
//! starts as fast as it could make them (about 20k per second under
//! `ulimit -n 64`, where good and failed starts alternated).

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use common::{join, wait_until, Who, DEADLINE};
use concur_procs::{Configure, Executor, ProcessPool, Task, TaskContext};
use serde::{Deserialize, Serialize};

common::quiet_worker_panics!();

/// The system-wide monotonic clock in nanoseconds (the same in every process).
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out-pointer; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The initializer: records each start (its time, appended to
/// `dir/starts`) and refuses it while `dir/refuse` exists.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Counted {
    dir: PathBuf,
}

impl Task for Counted {
    type Output = ();
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = "procs-start-backoff::Counted";
    fn run(self, _cx: &mut TaskContext<'_, Self>) {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("starts"))
            .and_then(|mut f| f.write_all(&monotonic_ns().to_le_bytes()))
            .expect("count the start");
        if self.dir.join("refuse").exists() {
            panic!("start refused");
        }
    }
}

concur_procs::register!(Counted);

/// When each start began, in order.
fn starts(dir: &std::path::Path) -> Vec<u64> {
    std::fs::read(dir.join("starts")).map_or(Vec::new(), |b| {
        b.chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect()
    })
}

/// A pool of one worker whose restart limit never runs out (only the
/// backoff bounds its starts), with its worker killed while every start is
/// refused: returns the pool, its run directory, the killed worker's pid
/// and how many starts were recorded before the kill.
fn pool_whose_starts_fail(name: &str) -> (ProcessPool, PathBuf, u32, usize) {
    let dir = std::env::temp_dir().join(format!("concur-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let pool = ProcessPool::builder()
        .workers(1)
        .retries(0)
        .restart_limit(u32::MAX, Duration::from_secs(1))
        .initializer(Counted { dir: dir.clone() })
        .build()
        .unwrap();
    let worker = join(pool.submit(Who).unwrap()).unwrap().pid;
    std::fs::write(dir.join("refuse"), b"").unwrap();
    let before = starts(&dir).len();
    common::signal(worker, libc::SIGKILL);
    (pool, dir, worker, before)
}

#[test]
fn starts_that_keep_failing_back_off() {
    let (pool, dir, worker, before) = pool_whose_starts_fail("start-backoff");
    // The failed starts (8 take about a quarter of a second with the backoff).
    let failed = 8;
    wait_until(
        "the slot starts again, and fails, 8 times",
        DEADLINE,
        || starts(&dir).len() >= before + failed,
    );
    let at = starts(&dir);
    let gaps: Vec<Duration> = at[before..before + failed]
        .windows(2)
        .map(|w| Duration::from_nanos(w[1].saturating_sub(w[0])))
        .collect();
    // Lower bounds only (a loaded machine makes gaps longer, never shorter):
    // the 7th wait is 4 ms doubled up to the 100 ms cap; without a backoff,
    // a failed start follows the last one within a few milliseconds.
    assert!(
        gaps[failed - 2] >= Duration::from_millis(80),
        "failed starts do not back off: gaps {gaps:?}"
    );
    // Once starts succeed again, the slot's next start (at most the cap
    // away) gives the pool its worker back.
    std::fs::remove_file(dir.join("refuse")).unwrap();
    let next = join(pool.submit(Who).unwrap()).unwrap().pid;
    assert_ne!(next, worker);
    drop(pool);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A graceful shutdown waits for queued work; when no worker can be
/// started to run it (every start fails and the restart limit never runs
/// out), that work fails with `PoolFailed` and the shutdown ends. Before,
/// the shutdown (and the drop) waited for ever.
#[test]
fn shutdown_fails_work_no_worker_can_be_started_for() {
    let (pool, dir, _, before) = pool_whose_starts_fail("start-drain");
    wait_until("a start of the slot fails", DEADLINE, || {
        starts(&dir).len() > before
    });
    let stranded = pool.submit(Who).unwrap();
    let pool = std::sync::Arc::new(pool);
    let stopping = pool.clone();
    common::within("shutdown", DEADLINE, move || stopping.shutdown()).unwrap();
    let e = stranded
        .join_timeout(DEADLINE)
        .expect("the stranded task ends")
        .unwrap_err();
    assert!(
        matches!(e.kind(), concur_procs::ErrorKind::PoolFailed { .. }),
        "{e:?}"
    );
    drop(pool);
    let _ = std::fs::remove_dir_all(&dir);
}
