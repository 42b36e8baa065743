//! Issue 8.4: finished results waiting unjoined hold no descriptor. Under
//! a low `RLIMIT_NOFILE` (set for this whole test binary, which holds this
//! one test), 1,500 results of 100 KB (each in shared memory) wait
//! unjoined, then all arrive.

concur_procs::enable_test_support!();

mod common;

use common::{Blob, Echo, DEADLINE};
use concur_procs::{Configure, Executor, ProcessPool, Task, TaskError, TaskHandle};

/// The soft descriptor limit this test runs under.
const LIMIT: u64 = 256;

fn lower_the_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid out-pointer, then a valid in-pointer.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = LIMIT.min(lim.rlim_max);
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
}

fn join<T: Task>(h: TaskHandle<T>) -> Result<T::Output, TaskError> {
    h.join_timeout(DEADLINE)
        .unwrap_or_else(|h| panic!("{h:?} did not finish within {DEADLINE:?}"))
}

#[test]
fn unjoined_large_results_hold_no_descriptor() {
    lower_the_limit();
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
