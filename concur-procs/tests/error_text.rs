//! What the process backend's errors say: in words, naming the signal that
//! ended a worker and the `register!` this crate's users write.

concur_procs::enable_test_support!();

mod common;

use common::{join, Crash, How};
use concur_procs::{Configure, ErrorKind, Executor, ProcessPool, Task, TaskContext};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Forgotten;

impl Task for Forgotten {
    type Output = ();
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = "procs-error-text::Forgotten";
    fn run(self, _cx: &mut TaskContext<'_, Self>) {}
}

#[test]
fn not_registered_names_the_procs_register_macro() {
    let p = ProcessPool::builder().workers(1).build().unwrap();
    let err = p.submit(Forgotten).unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::NotRegistered { .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "task `procs-error-text::Forgotten` is not registered for process workers \
         (add `concur_procs::register!` for it)"
    );
}

#[test]
fn a_lost_worker_names_its_signal() {
    let p = ProcessPool::builder()
        .workers(1)
        .retries(0)
        .build()
        .unwrap();
    for (how, text) in [
        (How::Abort, "worker lost: killed by SIGABRT (signal 6)"),
        (How::Segfault, "worker lost: killed by SIGSEGV (signal 11)"),
        (How::Sigkill, "worker lost: killed by SIGKILL (signal 9)"),
    ] {
        let h = p.submit(Crash { how, wait: false }).unwrap();
        let err = join(h).unwrap_err();
        assert_eq!(err.to_string(), text, "{how:?}");
        assert_eq!(format!("{err:?}"), text, "{how:?}");
    }
}

#[test]
fn a_quarantined_task_prints_its_cause_in_words() {
    let p = ProcessPool::builder()
        .workers(1)
        .retries(1)
        .build()
        .unwrap();
    let h = p
        .submit(Crash {
            how: How::Sigkill,
            wait: false,
        })
        .unwrap();
    let err = join(h).unwrap_err();
    assert_eq!(
        format!("{err:?}"),
        "worker lost: killed by SIGKILL (signal 9)\n\
         \n\
         Caused by:\n    \
         the task was running in 2 worker deaths and is quarantined (never run again)"
    );
}
