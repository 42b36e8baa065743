//! Runs every example of the `concur` crate as a user would and checks
//! what it prints.
//!
//! The binaries are the ones `cargo test -p concur` builds next to this
//! test (`target/<profile>/examples`); cargo sets no variable for them, so
//! they are found from this binary's own path. `cargo test --test examples`
//! alone does not build them: a missing or outdated one fails with a
//! message saying how to build it.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Bounds each run: an example that hangs fails instead of blocking the run.
const LIMIT: Duration = Duration::from_secs(120);

/// The example's binary, checked to exist and to be newer than its source.
fn example(name: &str) -> PathBuf {
    let bin = common::profile_dir().join("examples").join(name);
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(format!("{name}.rs"));
    let build = "build the examples with `cargo test -p concur` (without `--test`) \
                 or `cargo build -p concur --examples`";
    let built = std::fs::metadata(&bin)
        .and_then(|m| m.modified())
        .unwrap_or_else(|e| panic!("example binary {} is missing ({e}): {build}", bin.display()));
    let written = std::fs::metadata(&source)
        .and_then(|m| m.modified())
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", source.display()));
    assert!(
        built >= written,
        "example binary {} is older than {}: {build}",
        bin.display(),
        source.display()
    );
    bin
}

/// Runs example `name` with `CONCUR_BACKEND` set to `backend` (or unset),
/// expects success, and returns its pid and its stdout lines.
fn run(name: &str, backend: Option<&str>) -> (u32, Vec<String>) {
    let mut command = Command::new(example(name));
    match backend {
        Some(b) => command.env(concur::ENV_BACKEND, b),
        None => command.env_remove(concur::ENV_BACKEND),
    };
    let what = format!("example `{name}`");
    let (pid, output) = common::run(&what, command, LIMIT);
    common::assert_success(&what, &output);
    let stdout = String::from_utf8(output.stdout).expect("utf-8 output");
    (pid, stdout.lines().map(str::to_owned).collect())
}

/// Parses "worker <i> in process <pid>" lines into (i, pid), failing on
/// anything else.
fn worker_lines(name: &str, lines: &[String]) -> Vec<(usize, u32)> {
    lines
        .iter()
        .map(|line| {
            let parsed = line
                .strip_prefix("worker ")
                .and_then(|rest| rest.split_once(" in process "))
                .and_then(|(i, pid)| Some((i.parse().ok()?, pid.parse().ok()?)));
            parsed.unwrap_or_else(|| panic!("example `{name}` printed {line:?}"))
        })
        .collect()
}

/// One line from each of the five workers, each once.
fn assert_five_workers(name: &str, workers: &[(usize, u32)]) {
    let indices: BTreeSet<usize> = workers.iter().map(|w| w.0).collect();
    assert_eq!(workers.len(), 5, "example `{name}`: {workers:?}");
    assert_eq!(indices, (0..5).collect(), "example `{name}`: {workers:?}");
}

#[test]
fn threads_prints_one_line_per_worker_all_in_one_process() {
    let (pid, lines) = run("threads", None);
    let workers = worker_lines("threads", &lines);
    assert_five_workers("threads", &workers);
    assert!(
        workers.iter().all(|w| w.1 == pid),
        "threads run in the example's own process {pid}: {workers:?}"
    );
}

#[test]
fn processes_prints_one_line_per_worker_from_worker_processes() {
    let (pid, lines) = run("processes", None);
    let workers = worker_lines("processes", &lines);
    assert_five_workers("processes", &workers);
    assert!(
        workers.iter().all(|w| w.1 != pid),
        "tasks run in worker processes, not in the example's own process {pid}: {workers:?}"
    );
}

fn assert_messages(backend: &str, lines: &[String]) {
    let mut expected = vec![format!("backend: {backend}")];
    expected.extend((1..=10).map(|i| format!("progress: {}%", i * 10)));
    expected.push("result: 499999500000".to_owned());
    assert_eq!(lines, expected);
}

#[test]
fn messages_streams_progress_then_the_result_on_threads() {
    let (_, lines) = run("messages", None);
    assert_messages("threads", &lines);
}

#[test]
fn messages_streams_progress_then_the_result_on_procs() {
    let (_, lines) = run("messages", Some("procs"));
    assert_messages("procs", &lines);
}

#[test]
fn tokio_awaits_every_handle() {
    for backend in ["threads", "procs"] {
        let (_, lines) = run("tokio", Some(backend));
        let expected: Vec<String> = (1..=5u64)
            .map(|n| format!("{n} squared is {}", n * n))
            .collect();
        assert_eq!(lines, expected, "on {backend}");
    }
}

#[test]
fn crash_fails_only_the_aborting_task() {
    let (_, lines) = run("crash", None);
    assert_eq!(lines.len(), 6, "{lines:?}");
    for n in [0, 1, 3, 4] {
        assert_eq!(lines[n], format!("job {n}: finished with {n}"));
    }
    assert!(
        lines[2].starts_with("job 2: its worker died (") && lines[2].contains("signal"),
        "{lines:?}"
    );
    assert_eq!(lines[5], "the pool still has 2 workers");
}

#[test]
fn timeout_stops_the_stuck_task_and_the_pool_goes_on() {
    let (_, lines) = run("timeout", None);
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(lines[0], "quick task: returned 0");
    assert!(
        lines[1].starts_with("stuck task: stopped (task timed out after"),
        "{lines:?}"
    );
    assert_eq!(lines[2], "after the timeout: returned 0");
}
