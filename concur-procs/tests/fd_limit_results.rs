//! Issue 8.4: finished results waiting unjoined hold no descriptor. Under
//! a low `RLIMIT_NOFILE` (set for this whole test binary, which holds this
//! one test), 1,500 results of 100 KB (each in shared memory) wait
//! unjoined, then all arrive.

mod common;

use common::{join, Blob, Echo};
use concur_procs::{Configure, Executor, ProcessPool};

/// The soft descriptor limit this test runs under.
const LIMIT: u64 = 256;

#[test]
fn unjoined_large_results_hold_no_descriptor() {
    common::lower_fd_limit(LIMIT);
    let n = 1_500;
    let p = ProcessPool::builder()
        .workers(2)
        .queue_bound(n)
        .build()
        .unwrap();
    let hs: Vec<_> = (0..n)
        .map(|_| {
            p.submit(Echo {
                input: Blob(vec![1]),
                out_len: 100_000,
                patterned: false,
            })
            .unwrap()
        })
        .collect();
    for h in hs {
        let (_, out) = join(h).expect("every result arrives");
        assert_eq!(out.0.len(), 100_000);
    }
}
