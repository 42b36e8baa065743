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

/// The initializer: counts each start (one byte appended to `dir/starts`)
/// and refuses it while `dir/refuse` exists.
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
            .and_then(|mut f| f.write_all(b"."))
            .expect("count the start");
        if self.dir.join("refuse").exists() {
            panic!("start refused");
        }
    }
}

concur_procs::register!(Counted);

fn starts(dir: &std::path::Path) -> usize {
    std::fs::read(dir.join("starts")).map_or(0, |b| b.len())
}

#[test]
fn starts_that_keep_failing_back_off() {
    let dir = std::env::temp_dir().join(format!("concur-start-backoff-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // A restart limit that never runs out: only the backoff bounds the
    // starts.
    let pool = ProcessPool::builder()
        .workers(1)
        .retries(0)
        .restart_limit(u32::MAX, Duration::from_secs(1))
        .initializer(Counted { dir: dir.clone() })
        .build()
        .unwrap();
    let worker = join(pool.submit(Who).unwrap()).unwrap().pid;
    std::fs::write(dir.join("refuse"), b"").unwrap();
    // SAFETY: a plain signal to our child.
    assert_eq!(unsafe { libc::kill(worker as i32, libc::SIGKILL) }, 0);
    let before = starts(&dir);
    wait_until("the slot starts again, and fails", DEADLINE, || {
        starts(&dir) >= before + 3
    });
    // A window to count in, not a synchronisation: without a backoff the
    // pool makes hundreds of attempts in it (each a few milliseconds);
    // with one (4 ms doubling to 1 s) about ten.
    std::thread::sleep(Duration::from_secs(3));
    let made = starts(&dir) - before;
    assert!(
        made < 100,
        "{made} starts in 3 s: failed starts do not back off"
    );
    // Once starts succeed again, the slot's next start (at most the cap
    // away) gives the pool its worker back.
    std::fs::remove_file(dir.join("refuse")).unwrap();
    let next = join(pool.submit(Who).unwrap()).unwrap().pid;
    assert_ne!(next, worker);
    drop(pool);
    let _ = std::fs::remove_dir_all(&dir);
}
