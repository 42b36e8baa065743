//! Issue 8.4: running out of file descriptors never wedges the pool. Under
//! a low `RLIMIT_NOFILE` (set for this whole test binary, which holds this
//! one test: another test's pool would share the limit), a task that cannot
//! get a descriptor fails alone with a typed `Io` error.

mod common;

use common::{join, Blob, Echo, DEADLINE};
use concur_procs::{Configure, ErrorKind, Executor, ProcessPool, Task, TaskContext};
use serde::{Deserialize, Serialize};

/// Holds its worker until the caller says go.
#[derive(Serialize, Deserialize)]
struct Gate;

impl Task for Gate {
    type Output = ();
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = "fd_limit::Gate";
    fn run(self, cx: &mut TaskContext<'_, Self>) {
        let _ = cx.recv_timeout(DEADLINE);
    }
}
concur_procs::register!(Gate);

/// The soft descriptor limit these tests run under.
const LIMIT: u64 = 256;

#[test]
fn a_task_that_cannot_get_a_descriptor_fails_alone() {
    common::lower_fd_limit(LIMIT);
    let n = 600;
    let p = ProcessPool::builder()
        .workers(1)
        .queue_bound(n + 1)
        .build()
        .unwrap();
    // The worker is held, so the inputs wait in the parent, each in its
    // own shared-memory region: far more than the descriptor limit.
    let gate = p.submit(Gate).unwrap();
    let mut refused = 0;
    let mut hs = Vec::new();
    for _ in 0..n {
        match p.submit(Echo {
            input: Blob(vec![2; 100 << 10]),
            out_len: 1,
            patterned: false,
        }) {
            Ok(h) => hs.push(h),
            Err(e) => {
                assert!(matches!(e.kind(), ErrorKind::Io), "{e}");
                refused += 1;
            }
        }
    }
    assert!(
        refused > 0,
        "the limit was never reached: the test proves nothing"
    );
    gate.send(()).unwrap();
    join(gate).unwrap();
    let mut failed = 0;
    for h in hs {
        match join(h) {
            Ok((sum, _)) => assert_eq!(sum, 2 * (100 << 10)),
            Err(e) => {
                assert!(matches!(e.kind(), ErrorKind::Io), "{e}");
                failed += 1;
            }
        }
    }
    eprintln!("{refused} refused at submit, {failed} failed later, of {n}");
    join(p.submit(common::Who).unwrap()).expect("the pool goes on");
}
