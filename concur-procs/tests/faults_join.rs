//! Dropping a pool ends its threads: when `drop(pool)` returns, no thread
//! of the pool is left holding a worker's socket. Alone in its binary: it
//! counts this process's threads and descriptors.

mod common;

use common::{Blob, Echo, DEADLINE};
use concur_procs::{Configure, Executor, ProcessPool};

/// Names of this process's threads.
fn threads() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("comm")).ok())
        .map(|s| s.trim().to_owned())
        .collect()
}

/// Each round builds a pool, runs tasks with shared-memory payloads and
/// drops it; right after `drop` returns, the thread list must be what it
/// was before. The outbox's sender threads (`concur-procs-send-*`) are
/// detached, so they were seen alive, holding a socket, after `drop`.
#[test]
fn drop_returns_after_every_pool_thread_ended() {
    let before = threads();
    for round in 0..50 {
        let p = ProcessPool::builder().workers(2).build().unwrap();
        let hs: Vec<_> = (0..20)
            .map(|_| {
                p.submit(Echo {
                    input: Blob(vec![1; 100 << 10]),
                    out_len: 100 << 10,
                    patterned: false,
                })
                .unwrap()
            })
            .collect();
        for h in hs {
            h.join_timeout(DEADLINE)
                .unwrap_or_else(|_| panic!("task hung"))
                .unwrap();
        }
        drop(p);
        let after = threads();
        assert_eq!(
            after, before,
            "round {round}: threads left after drop(pool)"
        );
    }
}
