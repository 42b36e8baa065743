//! A task that forks and lets the child return from the task: the child is
//! a copy of the worker, not a worker. It must end there, not run the
//! worker's loop (which made it read the worker's channel and run other
//! tasks again, many times over).

mod common;

use std::time::{Duration, Instant};

use common::bounded;
use concur_procs::{Configure, ExecutorExt, ProcessPool};

const TASKS: u32 = 20;

/// Forks; the child writes a marker named by its pid into `dir` and
/// returns from the task. The worker waits (bounded) for the child to end,
/// kills it if it did not, and says whether it ended by itself.
fn fork_and_return((dir, _i): (String, u32)) -> bool {
    // SAFETY: fork in a worker process; the child only writes a file and
    // returns from the task.
    let child = unsafe { libc::fork() };
    if child == 0 {
        let _ = std::fs::write(format!("{dir}/{}", std::process::id()), b"");
        return true;
    }
    assert!(child > 0, "fork failed");
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let mut status = 0;
        // SAFETY: waits for our own child without blocking.
        let r = unsafe { libc::waitpid(child, &mut status, libc::WNOHANG) };
        if r == child {
            return true;
        }
        if Instant::now() >= until {
            // SAFETY: kills and reaps our own child.
            unsafe {
                libc::kill(child, libc::SIGKILL);
                libc::waitpid(child, &mut status, 0);
            }
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn a_forked_child_that_returns_from_its_task_ends_there() {
    let dir = std::env::temp_dir().join(format!("concur-fork-in-task-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pool = ProcessPool::builder()
        .workers(2)
        .retries(0)
        .build()
        .unwrap();
    let path = dir.to_string_lossy().into_owned();
    let ended: Vec<bool> = bounded("the map", || {
        pool.map_fn(fork_and_return, (0..TASKS).map(|i| (path.clone(), i)))
            .collect::<Result<_, _>>()
            .unwrap()
    });
    drop(pool);
    let markers = std::fs::read_dir(&dir).unwrap().count();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        ended.iter().all(|&e| e),
        "every forked child ended by itself: {ended:?}"
    );
    assert_eq!(
        markers, TASKS as usize,
        "each task's body ran once in its child, no more"
    );
}
