//! One slow task does not hold back the others: tasks submitted while a
//! worker is busy with a long task finish on the other workers, even though
//! the pool sends several tasks ahead to each worker.

use std::time::Duration;

use concur_core::conformance::{Add, Block, DEADLINE};
use concur_procs::{Configure, Executor, ProcessPool};

/// Fast tasks, then one that blocks until told, then fast tasks again: the
/// second batch must finish while the blocker still runs.
#[test]
fn fast_tasks_do_not_wait_behind_a_slow_one() {
    let pool = ProcessPool::builder().workers(2).build().unwrap();
    // Teach the pool that tasks are short (it then pipelines deeply).
    let warm: Vec<_> = (0..200).map(|i| pool.submit(Add(i, 1)).unwrap()).collect();
    for h in warm {
        h.join_timeout(DEADLINE)
            .expect("a warm-up task finishes")
            .unwrap();
    }
    let blocker = pool.submit(Block).unwrap();
    blocker
        .recv_timeout(DEADLINE)
        .expect("the slow task starts");
    let fast: Vec<_> = (0..200).map(|i| pool.submit(Add(i, 1)).unwrap()).collect();
    let mut stuck = 0;
    for h in fast {
        // Generous: a fast task takes microseconds; one queued behind the
        // blocker would wait for the whole deadline.
        if h.join_timeout(Duration::from_secs(20)).is_err() {
            stuck += 1;
        }
    }
    blocker.send(()).unwrap();
    blocker
        .join_timeout(DEADLINE)
        .expect("the slow task ends once told")
        .unwrap();
    assert_eq!(stuck, 0, "{stuck} fast tasks waited behind the slow one");
}
