//! One scenario file, run on every backend side by side: the same task
//! types, the same calls, the same expected outcomes. Where the backends
//! must differ (memory sharing, crash isolation), the scenario says how,
//! from the backend's declared capabilities.

mod common;

use std::collections::HashSet;

use common::{bounded, join, DEADLINE};
use concur_core::prelude::*;
use concur_core::{ErrorKind, WorkerInfo};
use concur_procs::ProcessPool;
use concur_threads::ThreadPool;
use serde::{Deserialize, Serialize};

/// Tasks here panic on purpose: their workers keep it off stderr (each
/// panic still fails its task, message and location kept), so a passing
/// run stays quiet. Set before `main`, while the process has one thread.
#[ctor::ctor]
fn quiet_worker_panics() {
    std::env::set_var("CONCUR_PROCS_QUIET_PANICS", "1");
}

/// Word statistics of one text, with progress messages to the caller.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stats {
    text: String,
    explode: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Summary {
    words: usize,
    longest: String,
}

impl Task for Stats {
    type Output = Summary;
    type ToCaller = usize;
    type FromCaller = ();
    const NAME: &'static str = "cross_backend::Stats";
    fn run(self, cx: &mut TaskContext<'_, Self>) -> Summary {
        assert!(!self.explode, "cannot summarise {:?}", self.text);
        let words: Vec<&str> = self.text.split_whitespace().collect();
        for (i, _) in words.iter().enumerate() {
            cx.send(i + 1).expect("progress");
        }
        Summary {
            words: words.len(),
            longest: words
                .iter()
                .max_by_key(|w| w.len())
                .unwrap_or(&"")
                .to_string(),
        }
    }
}

/// Where am I? (pid and worker)
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Where;
impl Task for Where {
    type Output = WorkerInfo;
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = "cross_backend::Where";
    fn run(self, cx: &mut TaskContext<'_, Self>) -> WorkerInfo {
        cx.worker()
    }
}

concur_core::register!(Stats, Where);

fn texts() -> Vec<Stats> {
    [
        "the quick brown fox",
        "jumps over the lazy dog",
        "",
        "concurrency without folklore",
    ]
    .iter()
    .map(|t| Stats {
        text: (*t).to_owned(),
        explode: false,
    })
    .collect()
}

/// What the scenario observed; must be the same on every backend except
/// for the fields that describe the backend itself.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    single: Summary,
    progress: Vec<usize>,
    mapped: Vec<Summary>,
    unordered: HashSet<(usize, usize)>,
    panic_message: String,
    after_panic: usize,
    async_words: usize,
}

fn scenario<P: Executor>(pool: &P) -> Outcome {
    // One task, with progress messages.
    let h = pool
        .submit(Stats {
            text: "alpha beta gamma".into(),
            explode: false,
        })
        .unwrap();
    let mut progress = Vec::new();
    while let Some(p) = h.recv_timeout(DEADLINE) {
        progress.push(p);
    }
    let single = join(h).unwrap();

    // Ordered and unordered map over the same input.
    let (mapped, unordered) = bounded("the maps", || {
        let mapped: Vec<Summary> = pool.map(texts()).collect::<Result<_, _>>().unwrap();
        let unordered = pool
            .map_unordered(texts())
            .map(|(i, r)| (i, r.unwrap().words))
            .collect();
        (mapped, unordered)
    });

    // A panic fails that task alone.
    let bad = pool
        .submit(Stats {
            text: "boom".into(),
            explode: true,
        })
        .unwrap();
    let panic_message = match join(bad).unwrap_err().into_kind() {
        ErrorKind::Panicked { message, .. } => message,
        other => panic!("expected a panic, got {other:?}"),
    };
    let after_panic = join(pool.submit(texts().remove(1)).unwrap()).unwrap().words;

    // The same handle type is a future.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let async_words = rt.block_on(async {
        tokio::time::timeout(DEADLINE, async {
            let h = pool.submit_async(texts().remove(0)).await.unwrap();
            h.await.unwrap().words
        })
        .await
        .expect("the awaited task finishes within the deadline")
    });

    Outcome {
        single,
        progress,
        mapped,
        unordered,
        panic_message,
        after_panic,
        async_words,
    }
}

fn expected() -> Outcome {
    Outcome {
        single: Summary {
            words: 3,
            longest: "gamma".into(),
        },
        progress: vec![1, 2, 3],
        mapped: vec![
            Summary {
                words: 4,
                longest: "brown".into(),
            },
            Summary {
                words: 5,
                longest: "jumps".into(),
            },
            Summary {
                words: 0,
                longest: String::new(),
            },
            Summary {
                words: 3,
                longest: "concurrency".into(),
            },
        ],
        unordered: [(0, 4), (1, 5), (2, 0), (3, 3)].into_iter().collect(),
        panic_message: "cannot summarise \"boom\"".into(),
        after_panic: 5,
        async_words: 4,
    }
}

fn threads() -> ThreadPool {
    ThreadPool::builder().workers(2).build().unwrap()
}

fn procs() -> ProcessPool {
    ProcessPool::builder().workers(2).build().unwrap()
}

#[test]
fn same_scenario_same_outcome_on_threads() {
    assert_eq!(scenario(&threads()), expected());
}

#[test]
fn same_scenario_same_outcome_on_procs() {
    assert_eq!(scenario(&procs()), expected());
}

/// Side by side: threads run in the caller's process, processes never do.
#[test]
fn where_tasks_run_differs_as_declared() {
    let me = std::process::id();
    let t = threads();
    let p = procs();
    for (pool_pids, shares) in [
        (run_where(&t), t.capabilities().shared_memory),
        (run_where(&p), p.capabilities().shared_memory),
    ] {
        if shares {
            assert_eq!(pool_pids, HashSet::from([me]));
        } else {
            assert!(!pool_pids.contains(&me));
            assert!(!pool_pids.is_empty());
        }
    }
}

fn run_where<P: Executor>(pool: &P) -> HashSet<u32> {
    let hs: Vec<_> = (0..8).map(|_| pool.submit(Where).unwrap()).collect();
    hs.into_iter().map(|h| join(h).unwrap().pid).collect()
}
