//! Issue 8.3: more than 64 descriptors in flight at once (ipc-channel's
//! limit per message) neither panic nor hang: a retried task's caller
//! messages in shared memory are sent again, and a deep pipeline of large
//! inputs goes out.

mod common;

use std::path::PathBuf;

use common::{join, Blob, Echo, DEADLINE};
use concur_procs::{Configure, Executor, ProcessPool, Task, TaskContext};
use serde::{Deserialize, Serialize};

/// Each caller message: 100 KB, above the 64 KiB shared-memory threshold.
const MSG: usize = 100_000;
const MESSAGES: usize = 100;

/// Reads `n` caller messages; the first run (no marker file yet) creates
/// the marker and aborts its worker after reading them all, so the retry
/// must get every message again. Returns each message's (length, first
/// byte), checking the message is uniform.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Gather {
    marker: PathBuf,
    n: usize,
}

impl Task for Gather {
    type Output = Vec<(usize, u8)>;
    type ToCaller = ();
    type FromCaller = Blob;
    const NAME: &'static str = "procs-faults-fds::Gather";
    fn run(self, cx: &mut TaskContext<'_, Self>) -> Vec<(usize, u8)> {
        let first_run = !self.marker.exists();
        let mut seen = Vec::with_capacity(self.n);
        for _ in 0..self.n {
            let m = cx.recv_timeout(DEADLINE).expect("a caller message");
            let b = m.0.first().copied().unwrap_or(0);
            assert!(m.0.iter().all(|&x| x == b), "message bytes differ");
            seen.push((m.0.len(), b));
        }
        if first_run {
            std::fs::write(&self.marker, b"ran").unwrap();
            std::process::abort();
        }
        seen
    }
}

concur_procs::register!(Gather);

/// A fresh directory for this test's marker, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "concur-faults-{name}-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn retried_task_gets_its_100_shared_memory_messages_again() {
    let dir = TempDir::new("gather");
    let p = ProcessPool::builder()
        .workers(1)
        .retries(1)
        .build()
        .unwrap();
    let h = p
        .submit(Gather {
            marker: dir.0.join("marker"),
            n: MESSAGES,
        })
        .unwrap();
    for i in 0..MESSAGES {
        h.send(Blob(vec![u8::try_from(i).unwrap(); MSG])).unwrap();
    }
    let got = join(h).expect("the retry gets every message");
    assert!(dir.0.join("marker").exists(), "the first run happened");
    let want: Vec<(usize, u8)> = (0..MESSAGES)
        .map(|i| (MSG, u8::try_from(i).unwrap()))
        .collect();
    assert_eq!(got, want);
}

#[test]
fn six_hundred_large_inputs_in_flight() {
    let p = ProcessPool::builder()
        .workers(2)
        .in_flight_per_worker(1000)
        .build()
        .unwrap();
    let len = 100 << 10;
    let hs: Vec<_> = (0..600u64)
        .map(|i| {
            let b = u8::try_from(i % 251).unwrap();
            p.submit(Echo {
                input: Blob(vec![b; len]),
                out_len: 0,
                patterned: false,
            })
            .unwrap()
        })
        .collect();
    for (i, h) in (0u64..).zip(hs) {
        let (sum, _) = join(h).unwrap_or_else(|e| panic!("task {i}: {e:?}"));
        assert_eq!(sum, (i % 251) * len as u64, "task {i}");
    }
}
