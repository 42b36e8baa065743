//! End-to-end tests of the `concur` binary, run as a user runs it.
//!
//! They live in the binary's own package because cargo gives
//! `CARGO_BIN_EXE_concur` only there; the package's features decide which
//! backends the binary has and which cases run: `cargo test -p concur-cli
//! --no-default-features --features threads` tests a threads-only binary.
//!
//! Every child process has a deadline and is killed when it passes it.

mod common;

use common::finish;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;

/// How long one run of the binary may take.
const RUN_DEADLINE: Duration = Duration::from_secs(90);

const WORKLOADS: [&str; 7] = [
    "startup", "dispatch", "cpu", "io", "payload", "messages", "crash",
];

/// The backends this test build covers, in the binary's order.
fn backends() -> Vec<&'static str> {
    let mut v = Vec::new();
    if cfg!(feature = "threads") {
        v.push("threads");
    }
    if cfg!(feature = "procs") {
        v.push("procs");
    }
    v
}

/// The `concur` binary cargo built for these tests, with this package's features.
fn concur() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_concur"))
}

/// A finished run of `concur`.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn spawn(args: &[&str], env: &[(&str, &str)], close_stdout: bool) -> Run {
    let mut cmd = Command::new(concur());
    cmd.args(args)
        .env_remove("CONCUR_BACKEND")
        .env_remove("CONCUR_WORKERS")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("concur starts");
    if close_stdout {
        // The reader is gone before concur writes anything: every write to
        // stdout fails with a broken pipe.
        drop(child.stdout.take());
    }
    let out = finish(child, RUN_DEADLINE, &format!("concur {}", args.join(" ")));
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn concur_run(args: &[&str]) -> Run {
    spawn(args, &[], false)
}

fn assert_ok(run: &Run) {
    assert_eq!(
        run.code,
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        run.stdout,
        run.stderr
    );
}

/// A fresh scratch directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("concur-cli-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

// ---------------------------------------------------------------- demo

/// The demo's output, parsed.
struct Demo {
    me: u32,
    /// (backend, index, pid, thread) per worker line.
    workers: Vec<(String, usize, u32, u64)>,
    lines: Vec<String>,
}

fn demo(args: &[&str], env: &[(&str, &str)]) -> Demo {
    let run = spawn(args, env, false);
    assert_ok(&run);
    let lines: Vec<String> = run.stdout.lines().map(str::to_owned).collect();
    let me = lines
        .iter()
        .find_map(|l| l.strip_prefix("concur is process "))
        .expect("demo prints its own pid")
        .parse()
        .expect("pid is a number");
    let workers = lines
        .iter()
        .filter_map(|l| {
            // "<backend>: worker <i> started: process id <pid>, thread id <tid>"
            let (backend, rest) = l.split_once(": worker ")?;
            let (index, rest) = rest.split_once(" started: process id ")?;
            let (pid, tid) = rest.split_once(", thread id ")?;
            Some((
                backend.to_owned(),
                index.parse().ok()?,
                pid.parse().ok()?,
                tid.parse().ok()?,
            ))
        })
        .collect();
    Demo { me, workers, lines }
}

fn line_starting<'a>(d: &'a Demo, prefix: &str) -> &'a str {
    d.lines
        .iter()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| {
            panic!(
                "no line starting with {prefix:?} in:\n{}",
                d.lines.join("\n")
            )
        })
}

#[cfg(feature = "threads")]
#[test]
fn demo_threads_runs_every_worker_in_this_process() {
    let d = demo(&["demo", "--backend", "threads", "--workers", "3"], &[]);
    assert_eq!(d.workers.len(), 3, "{}", d.lines.join("\n"));
    let mut indices: Vec<usize> = d.workers.iter().map(|w| w.1).collect();
    indices.sort_unstable();
    assert_eq!(indices, [0, 1, 2]);
    assert!(
        d.workers.iter().all(|w| w.0 == "threads" && w.2 == d.me),
        "one pid, concur's own"
    );
    let threads: std::collections::BTreeSet<u64> = d.workers.iter().map(|w| w.3).collect();
    assert_eq!(threads.len(), 3, "each worker is its own thread");
    assert!(line_starting(&d, "threads: all 3 workers joined")
        .contains("1 distinct process id: this process"));
    let counter = line_starting(&d, "threads: one shared memory");
    assert!(counter.contains("from 0 to 3,000"), "{counter}");
}

#[cfg(feature = "procs")]
#[test]
fn demo_procs_runs_each_worker_in_its_own_process() {
    let d = demo(&["demo", "--backend", "procs", "--workers", "3"], &[]);
    assert_eq!(d.workers.len(), 3, "{}", d.lines.join("\n"));
    let pids: std::collections::BTreeSet<u32> = d.workers.iter().map(|w| w.2).collect();
    assert_eq!(pids.len(), 3, "three distinct worker processes");
    assert!(
        !pids.contains(&d.me),
        "no worker runs in concur's own process"
    );
    assert!(line_starting(&d, "procs: all 3 workers joined")
        .contains("3 distinct process ids: none of them this process"));
    let counter = line_starting(&d, "procs: copied memory");
    assert!(
        counter.contains("its own 1,000") && counter.contains("did not move (0 before and after)"),
        "{counter}"
    );
}

#[cfg(feature = "threads")]
#[test]
fn env_vars_choose_backend_and_workers() {
    let d = demo(
        &["demo"],
        &[("CONCUR_BACKEND", "threads"), ("CONCUR_WORKERS", "2")],
    );
    assert_eq!(d.workers.len(), 2, "{}", d.lines.join("\n"));
    assert!(d.workers.iter().all(|w| w.0 == "threads"));
}

#[cfg(all(feature = "threads", feature = "procs"))]
#[test]
fn demo_all_runs_both_backends_in_turn_each_from_a_fresh_counter() {
    let d = demo(&["demo", "--workers", "2"], &[]);
    assert_eq!(d.workers.iter().filter(|w| w.0 == "threads").count(), 2);
    assert_eq!(d.workers.iter().filter(|w| w.0 == "procs").count(), 2);
    let threads = line_starting(&d, "threads: one shared memory");
    assert!(threads.contains("from 0 to 2,000"), "{threads}");
    // The threads left 2,000 in the caller's counter; the process
    // experiment starts from its own fresh counter, not from that.
    let procs = line_starting(&d, "procs: copied memory");
    assert!(
        procs.contains("its own 1,000") && procs.contains("did not move (0 before and after)"),
        "{procs}"
    );
}

// ---------------------------------------------------------------- backends, help, version

#[test]
fn backends_lists_each_compiled_backend_with_its_capabilities() {
    let run = concur_run(&["backends"]);
    assert_ok(&run);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), backends().len(), "{}", run.stdout);
    for (line, b) in lines.iter().zip(backends()) {
        assert!(line.starts_with(b), "{line}");
        let (can, cannot) = line.split_once("cannot:").expect("can and cannot");
        match b {
            "threads" => {
                assert!(
                    can.contains("shared memory") && cannot.contains("survive crashes"),
                    "{line}"
                );
            }
            _ => assert!(
                can.contains("kill on timeout") && can.contains("survive crashes"),
                "{line}"
            ),
        }
    }
}

#[test]
fn version_lists_the_backends_compiled_in() {
    let run = concur_run(&["--version"]);
    assert_ok(&run);
    assert!(
        run.stdout
            .contains(&format!("(backends: {})", backends().join(", "))),
        "{}",
        run.stdout
    );
}

#[test]
fn help_of_every_command_has_examples_and_exit_codes() {
    let top = concur_run(&["--help"]);
    assert_ok(&top);
    for needle in ["Exit codes:", "  2  bad usage", "bench", "demo", "backends"] {
        assert!(
            top.stdout.contains(needle),
            "--help lacks {needle:?}:\n{}",
            top.stdout
        );
    }
    assert!(
        !top.stdout.contains("__internal"),
        "the internal command is hidden"
    );
    for cmd in ["backends", "demo", "bench"] {
        let run = concur_run(&[cmd, "--help"]);
        assert_ok(&run);
        assert!(
            run.stdout.contains("Example"),
            "{cmd} --help has no example:\n{}",
            run.stdout
        );
        assert!(
            run.stdout.contains("Exit codes:"),
            "{cmd} --help has no exit codes"
        );
    }
    let bench = concur_run(&["bench", "--help"]).stdout;
    for needle in [
        "CONCUR_BACKEND",
        "CONCUR_WORKERS",
        "--quick",
        "--plot",
        "Output:",
        "Workloads:",
    ] {
        assert!(bench.contains(needle), "bench --help lacks {needle:?}");
    }
}

// ---------------------------------------------------------------- bench

/// One quick run of every workload on every backend, shared by the tests
/// that read its JSON and its chart.
struct QuickBench {
    json: Value,
    svg: String,
    /// What the run printed on standard error.
    stderr: String,
    /// Where the report and the chart were written.
    json_path: PathBuf,
    svg_path: PathBuf,
}

fn quick_bench() -> &'static QuickBench {
    static RUN: OnceLock<QuickBench> = OnceLock::new();
    RUN.get_or_init(|| {
        let dir = scratch("quick-bench");
        let json_path = dir.join("bench.json");
        let svg_path = dir.join("bench.svg");
        let run = concur_run(&[
            "bench",
            "--quick",
            "--format",
            "json",
            "--out",
            json_path.to_str().expect("utf-8 path"),
            "--plot",
            svg_path.to_str().expect("utf-8 path"),
        ]);
        assert_ok(&run);
        assert!(run.stdout.is_empty(), "--out takes the report off stdout");
        assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
        assert!(
            !run.stderr.contains("warning"),
            "default workers never warn: {}",
            run.stderr
        );
        let json =
            serde_json::from_str(&std::fs::read_to_string(&json_path).expect("json written"))
                .expect("the report is JSON");
        let svg = std::fs::read_to_string(&svg_path).expect("svg written");
        let _ = std::fs::remove_dir_all(&dir);
        QuickBench {
            json,
            svg,
            stderr: run.stderr,
            json_path,
            svg_path,
        }
    })
}

#[test]
fn bench_json_has_every_workload_on_every_backend() {
    let j = &quick_bench().json;
    assert_eq!(j["schema"], "concur-bench/1");
    assert!(j["machine"]["cores"].as_u64().unwrap() >= 1);
    assert!(j["machine"]["os"].as_str().is_some());
    let samples = j["settings"]["samples"].as_u64().unwrap() as usize;
    assert!(samples >= 3, "several samples per figure");
    let names: Vec<&str> = j["settings"]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_str().unwrap())
        .collect();
    assert_eq!(names, backends());
    let workloads = j["workloads"].as_array().unwrap();
    let got: Vec<&str> = workloads
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert_eq!(got, WORKLOADS);
    for w in workloads {
        let name = w["name"].as_str().unwrap();
        assert!(w["recommendation"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{name}: ")));
        for m in w["metrics"].as_array().unwrap() {
            let metric = m["name"].as_str().unwrap();
            assert!(m["unit"].as_str().is_some_and(|u| !u.is_empty()));
            let results = m["results"].as_array().unwrap();
            let order: Vec<&str> = results
                .iter()
                .map(|r| r["backend"].as_str().unwrap())
                .collect();
            assert_eq!(order, backends(), "{name}.{metric}");
            for r in results {
                let backend = r["backend"].as_str().unwrap();
                let values: Vec<f64> = r["samples"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_f64().unwrap())
                    .collect();
                let median = r["median"].as_f64();
                // Figures that do not apply, or are zero by the experiment's nature.
                let exempt =
                    name == "crash" && (backend == "threads" || metric == "others_finished_pct");
                if exempt {
                    continue;
                }
                assert_eq!(values.len(), samples, "{name}.{metric} on {backend}");
                assert!(
                    values.iter().all(|v| *v > 0.0),
                    "{name}.{metric} on {backend}: {values:?}"
                );
                let median =
                    median.unwrap_or_else(|| panic!("{name}.{metric} on {backend} has a median"));
                let (lo, hi) = values
                    .iter()
                    .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
                assert!((lo..=hi).contains(&median), "median within the samples");
            }
        }
    }
}

/// The report's entry for workload `name`.
fn workload<'a>(j: &'a Value, name: &str) -> &'a Value {
    j["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == name)
        .unwrap_or_else(|| panic!("no workload {name} in the report"))
}

/// The crash experiment's medians on `backend`.
fn crash_figure(j: &Value, backend: &str, metric: &str) -> Option<f64> {
    let crash = workload(j, "crash");
    let m = crash["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == metric)
        .unwrap();
    let r = m["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["backend"] == backend)
        .unwrap();
    r["median"].as_f64()
}

#[cfg(feature = "threads")]
#[test]
fn bench_crash_on_threads_kills_the_whole_process() {
    let j = &quick_bench().json;
    assert_eq!(crash_figure(j, "threads", "survived"), Some(0.0));
    assert_eq!(crash_figure(j, "threads", "recovery_ms"), None);
    let note = workload(j, "crash")["notes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["backend"] == "threads")
        .unwrap();
    assert!(
        note["note"]
            .as_str()
            .unwrap()
            .contains("the whole process died, killed by SIGABRT (signal 6)"),
        "{note}"
    );
}

#[cfg(feature = "procs")]
#[test]
fn bench_crash_on_procs_fails_alone_and_the_others_finish() {
    let j = &quick_bench().json;
    assert_eq!(crash_figure(j, "procs", "survived"), Some(1.0));
    assert_eq!(crash_figure(j, "procs", "others_finished_pct"), Some(100.0));
    assert!(crash_figure(j, "procs", "recovery_ms").is_some_and(|v| v > 0.0));
}

#[test]
fn bench_svg_is_xml_with_one_bar_group_per_workload() {
    let svg = &quick_bench().svg;
    let doc = roxmltree::Document::parse(svg).expect("the chart is well-formed XML");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let groups: Vec<roxmltree::Node<'_, '_>> = doc
        .descendants()
        .filter(|n| n.has_tag_name("g") && n.attribute("class") == Some("workload"))
        .collect();
    let ids: Vec<&str> = groups.iter().map(|g| g.attribute("id").unwrap()).collect();
    let expected: Vec<String> = WORKLOADS.iter().map(|w| format!("workload-{w}")).collect();
    assert_eq!(ids, expected);
    for g in &groups {
        let bars = g.descendants().filter(|n| n.has_tag_name("rect")).count();
        assert_eq!(
            bars,
            backends().len(),
            "one bar per backend in {:?}",
            g.attribute("id")
        );
        let title = g
            .descendants()
            .find(|n| n.has_tag_name("title"))
            .and_then(|t| t.text())
            .unwrap_or("");
        assert!(
            backends().iter().all(|b| title.contains(b)),
            "title names every backend: {title}"
        );
    }
}

#[test]
fn bench_table_compares_backends_and_recommends() {
    let run = concur_run(&["bench", "--quick", "--workload", "dispatch,io"]);
    assert_ok(&run);
    let lines: Vec<&str> = run.stdout.lines().collect();
    let header = lines
        .iter()
        .find(|l| l.starts_with("workload"))
        .expect("a header row");
    for b in backends() {
        assert!(header.contains(b), "{header}");
    }
    if backends().len() == 2 {
        assert!(
            header.ends_with("procs vs threads (>1 = procs better)"),
            "a ratio column saying its direction: {header}"
        );
    }
    let recs = lines
        .iter()
        .position(|l| *l == "Recommendations:")
        .expect("recommendations");
    assert!(lines[recs + 1].starts_with("  dispatch: "));
    assert!(lines[recs + 2].starts_with("  io: "));
    assert!(
        !lines.iter().any(|l| l.starts_with("cpu")),
        "only the chosen workloads run"
    );
}

#[test]
fn bench_csv_has_one_row_per_metric_and_backend() {
    let run = concur_run(&["bench", "--quick", "--workload", "io", "--format", "csv"]);
    assert_ok(&run);
    let rows: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(
        rows[0],
        "workload,metric,unit,better,backend,median,samples"
    );
    // io has two metrics: elapsed_ms and overlap.
    assert_eq!(rows.len(), 1 + 2 * backends().len(), "{}", run.stdout);
    for row in &rows[1..] {
        let cells: Vec<&str> = row.split(',').collect();
        assert_eq!(cells.len(), 7, "{row}");
        assert_eq!(cells[0], "io");
        assert!(cells[5].parse::<f64>().unwrap() > 0.0, "{row}");
    }
}

// ---------------------------------------------------------------- bad input and failures

/// Runs `args` expecting bad usage: exit 2, one line on stderr containing
/// every one of `needles`, nothing on stdout.
fn assert_usage_error(args: &[&str], env: &[(&str, &str)], needles: &[&str]) {
    let run = spawn(args, env, false);
    assert_eq!(run.code, Some(2), "{args:?}: stderr:\n{}", run.stderr);
    assert!(
        run.stdout.is_empty(),
        "{args:?} wrote to stdout: {}",
        run.stdout
    );
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "{args:?}: one line on stderr, got:\n{}",
        run.stderr
    );
    for n in needles {
        assert!(lines[0].contains(n), "{args:?}: {:?} lacks {n:?}", lines[0]);
    }
}

#[test]
fn unknown_backend_is_refused_naming_the_choices() {
    assert_usage_error(
        &["bench", "--backend", "fibers"],
        &[],
        &["fibers", "threads, procs, redis, all"],
    );
    assert_usage_error(
        &["demo"],
        &[("CONCUR_BACKEND", "fibers")],
        &["fibers", "threads, procs, redis, all"],
    );
}

#[cfg(not(feature = "procs"))]
#[test]
fn procs_not_compiled_in_is_refused() {
    assert_usage_error(
        &["bench", "--backend", "procs"],
        &[],
        &["'procs' is not compiled", "compiled in: threads"],
    );
    assert_usage_error(
        &["demo", "--backend", "procs"],
        &[],
        &["'procs' is not compiled"],
    );
}

#[cfg(not(feature = "threads"))]
#[test]
fn threads_not_compiled_in_is_refused() {
    assert_usage_error(
        &["bench", "--backend", "threads"],
        &[],
        &["'threads' is not compiled", "compiled in: procs"],
    );
    assert_usage_error(
        &["demo", "--backend", "threads"],
        &[],
        &["'threads' is not compiled"],
    );
}

#[test]
fn unknown_workload_is_refused_naming_the_choices() {
    assert_usage_error(
        &["bench", "--workload", "cpu,nap"],
        &[],
        &[
            "nap",
            "startup, dispatch, cpu, io, payload, messages, crash, all",
        ],
    );
}

#[test]
fn zero_workers_is_refused() {
    assert_usage_error(
        &["bench", "--workers", "0"],
        &[],
        &["'0'", "--workers", "at least 1"],
    );
    assert_usage_error(&["demo", "-w", "0"], &[], &["at least 1"]);
    assert_usage_error(&["demo"], &[("CONCUR_WORKERS", "0")], &["at least 1"]);
    assert_usage_error(&["demo", "-w", "many"], &[], &["many"]);
}

#[test]
fn unwritable_outputs_are_refused_and_nothing_is_written() {
    let dir = scratch("unwritable");
    let file = dir.join("a-file");
    std::fs::write(&file, "").unwrap();
    let missing_dir = dir.join("missing").join("out.json");
    let under_file = file.join("out.json");
    for path in [&missing_dir, &under_file] {
        assert_usage_error(
            &["bench", "--out", path.to_str().unwrap()],
            &[],
            &["cannot write --out"],
        );
    }
    assert_usage_error(
        &["bench", "--out", dir.to_str().unwrap()],
        &[],
        &["is a directory"],
    );
    assert_usage_error(
        &[
            "bench",
            "--plot",
            missing_dir.with_extension("svg").to_str().unwrap(),
        ],
        &[],
        &["cannot write --plot"],
    );
    let png = dir.join("chart.png");
    assert_usage_error(&["bench", "--plot", png.to_str().unwrap()], &[], &[".svg"]);
    // A good --out with another bad argument: refused before anything is written.
    let good = dir.join("report.json");
    assert_usage_error(
        &["bench", "--workers", "0", "--out", good.to_str().unwrap()],
        &[],
        &["at least 1"],
    );
    let svg = dir.join("chart.svg");
    assert_usage_error(
        &[
            "bench",
            "--out",
            good.to_str().unwrap(),
            "--plot",
            svg.to_str().unwrap(),
            "--backend",
            "fibers",
        ],
        &[],
        &["fibers"],
    );
    let left: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["a-file"], "nothing was written");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn no_command_is_bad_usage() {
    assert_usage_error(
        &[],
        &[],
        &["a command is required: backends, demo or bench"],
    );
    assert_usage_error(&["bench", "--fast"], &[], &["--fast"]);
}

/// `/dev/full` opens for writing and fails every write: found before the
/// run, which is the full default one (minutes): a run that measured first
/// would pass the run deadline and fail this test.
#[test]
fn out_that_refuses_writes_fails_at_once_with_its_cause() {
    let run = concur_run(&["bench", "--out", "/dev/full"]);
    assert_eq!(run.code, Some(1), "stderr:\n{}", run.stderr);
    assert!(run.stdout.is_empty(), "{}", run.stdout);
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{}", run.stderr);
    assert!(
        lines[0].starts_with("concur: error: writing /dev/full: "),
        "{}",
        lines[0]
    );
    assert!(
        lines[0].contains("No space left on device"),
        "the cause is named: {}",
        lines[0]
    );
}

#[test]
fn closed_stdout_is_not_an_error() {
    for args in [
        &["backends"][..],
        &["--help"][..],
        &["demo", "--workers", "1"][..],
        &["bench", "--quick", "--workload", "io"][..],
    ] {
        let run = spawn(args, &[], true);
        assert_eq!(run.code, Some(0), "{args:?}: stderr:\n{}", run.stderr);
        assert!(!run.stderr.contains("panicked"), "{args:?}: {}", run.stderr);
        assert!(run.stderr.is_empty(), "{args:?} printed: {}", run.stderr);
    }
}

// ---------------------------------------------------------------- workers bound and warning

/// The cores the binary sees (it inherits this process's CPU affinity).
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[test]
fn too_many_workers_are_refused_naming_the_bound() {
    assert_usage_error(
        &["bench", "--workers", "100000"],
        &[],
        &["'100000'", "--workers", "at most 1024"],
    );
    assert_usage_error(&["demo", "-w", "1025"], &[], &["'1025'", "at most 1024"]);
    assert_usage_error(
        &["demo"],
        &[("CONCUR_WORKERS", "100000")],
        &["at most 1024"],
    );
    for cmd in ["demo", "bench"] {
        let help = concur_run(&[cmd, "--help"]);
        assert_ok(&help);
        assert!(
            help.stdout.contains("1 to 1024"),
            "{cmd} --help states the bound:\n{}",
            help.stdout
        );
    }
}

/// The one warning line `concur` prints for `n` workers.
fn assert_one_oversubscription_warning(run: &Run, n: usize) {
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line on stderr:\n{}", run.stderr);
    assert!(
        lines[0].starts_with(&format!("concur: warning: {n} workers on {} core", cores())),
        "{}",
        lines[0]
    );
}

#[test]
fn demo_with_more_workers_than_cores_warns_and_runs() {
    let backend = backends()[0];
    let n = cores() + 1;
    let run = concur_run(&["demo", "--backend", backend, "--workers", &n.to_string()]);
    assert_ok(&run);
    assert_one_oversubscription_warning(&run, n);
    assert!(
        run.stdout
            .contains(&format!("{backend}: all {n} workers joined")),
        "{}",
        run.stdout
    );
    // Up to the cores: no warning.
    let run = concur_run(&[
        "demo",
        "--backend",
        backend,
        "--workers",
        &cores().to_string(),
    ]);
    assert_ok(&run);
    assert!(run.stderr.is_empty(), "{}", run.stderr);
}

#[test]
fn bench_with_more_workers_than_cores_warns_and_runs() {
    let backend = backends()[0];
    let n = cores() + 1;
    let run = concur_run(&[
        "bench",
        "--quick",
        "--workload",
        "startup",
        "--backend",
        backend,
        "--workers",
        &n.to_string(),
    ]);
    assert_ok(&run);
    assert_one_oversubscription_warning(&run, n);
    assert!(
        run.stdout
            .starts_with(&format!("concur bench: {n} workers per pool")),
        "{}",
        run.stdout
    );
}

// ---------------------------------------------------------------- streaming and a closed stdout

/// Live processes that are worker processes of the `concur` whose process
/// id is `pid` (the process backend gives each worker its parent's pid in
/// its environment).
fn live_workers_of(pid: u32) -> Vec<u32> {
    let needle = format!("CONCUR_PROCS_PARENT={pid}");
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(other) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        // Gone, or not ours to read: not a worker of this run.
        let Ok(env) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if env.split(|b| *b == 0).any(|v| v == needle.as_bytes()) {
            found.push(other);
        }
    }
    found
}

/// Starts `concur args`, reads its standard output line by line until
/// `enough` says so, then closes it (as `head` does) and waits for the end.
/// Returns the run and the lines read.
fn read_then_close(
    args: &[&str],
    enough: impl Fn(&[String]) -> bool + Send + 'static,
) -> (Run, Vec<String>, u32) {
    let mut child = Command::new(concur())
        .args(args)
        .env_remove("CONCUR_BACKEND")
        .env_remove("CONCUR_WORKERS")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("concur starts");
    let pid = child.id();
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        let mut reader = std::io::BufReader::new(stdout);
        let mut lines = Vec::new();
        let mut line = String::new();
        while !enough(&lines) {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => lines.push(line.trim_end_matches('\n').to_owned()),
            }
        }
        // Dropping the reader closes the pipe.
        drop(reader);
        let _ = tx.send(lines);
    });
    let lines = match rx.recv_timeout(RUN_DEADLINE) {
        Ok(lines) => lines,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "concur {} printed too little within {RUN_DEADLINE:?}; killed",
                args.join(" ")
            );
        }
    };
    let out = finish(child, RUN_DEADLINE, &format!("concur {}", args.join(" ")));
    let run = Run {
        code: out.status.code(),
        stdout: String::new(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    (run, lines, pid)
}

/// The run ended quietly before its end (the chart, written last, is not
/// there) and left no worker behind.
fn assert_stopped_quietly(run: &Run, pid: u32, chart: &Path) {
    assert_eq!(run.code, Some(0), "stderr:\n{}", run.stderr);
    assert!(
        run.stderr.is_empty(),
        "quiet, no panic message:\n{}",
        run.stderr
    );
    assert!(
        !chart.exists(),
        "the run stopped before its end: no chart was written"
    );
    assert_eq!(
        live_workers_of(pid),
        Vec::<u32>::new(),
        "no worker left behind"
    );
}

#[test]
fn bench_table_streams_each_workload_and_a_closed_stdout_ends_the_run() {
    let dir = scratch("stream-table");
    let chart = dir.join("chart.svg");
    // Every workload, quick: the first one's rows arrive long before the end.
    let (run, lines, pid) = read_then_close(
        &["bench", "--quick", "--plot", chart.to_str().unwrap()],
        |lines| {
            // The header and the two rows of `startup`, the first workload.
            lines
                .iter()
                .position(|l| l.starts_with("workload"))
                .is_some_and(|h| lines.len() >= h + 3)
        },
    );
    assert_stopped_quietly(&run, pid, &chart);
    let h = lines
        .iter()
        .position(|l| l.starts_with("workload"))
        .unwrap();
    let header: Vec<char> = lines[h].chars().collect();
    let rows: Vec<Vec<char>> = lines[h + 1..h + 3]
        .iter()
        .map(|l| l.chars().collect())
        .collect();
    assert!(
        lines[h + 1].starts_with("startup   ready"),
        "{}",
        lines[h + 1]
    );
    // Figures are right-aligned under their backend's name.
    for b in backends() {
        let end = lines[h].find(&format!(" {b}")).unwrap() + 1 + b.len();
        assert_eq!(header[end - b.len()..end].iter().collect::<String>(), b);
        for row in &rows {
            let text: String = row.iter().collect();
            assert!(
                row.len() >= end && row[end - 1] != ' ' && row.get(end).is_none_or(|c| *c == ' '),
                "{b} in {text:?}"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bench_csv_streams_each_workload_and_a_closed_stdout_ends_the_run() {
    let dir = scratch("stream-csv");
    let chart = dir.join("chart.svg");
    let per_workload = 2 * backends().len();
    let (run, lines, pid) = read_then_close(
        &[
            "bench",
            "--quick",
            "--format",
            "csv",
            "--plot",
            chart.to_str().unwrap(),
        ],
        move |lines| lines.iter().filter(|l| l.starts_with("startup,")).count() == per_workload,
    );
    assert_stopped_quietly(&run, pid, &chart);
    assert_eq!(
        lines[0],
        "workload,metric,unit,better,backend,median,samples"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------- figures: direction and rounding

/// `"131.8k tasks/s"` as 131800 and its unit; `None` for `-`.
#[cfg(all(feature = "threads", feature = "procs"))]
fn parse_figure(cell: &str) -> Option<(f64, &str)> {
    let (n, unit) = cell.split_once(' ').unwrap_or((cell, ""));
    let (digits, scale) = match n.chars().last()? {
        'k' => (&n[..n.len() - 1], 1e3),
        'M' => (&n[..n.len() - 1], 1e6),
        'G' => (&n[..n.len() - 1], 1e9),
        'T' => (&n[..n.len() - 1], 1e12),
        _ => (n, 1.0),
    };
    Some((digits.parse::<f64>().ok()? * scale, unit))
}

#[cfg(all(feature = "threads", feature = "procs"))]
#[test]
fn bench_table_versus_column_is_above_one_when_procs_did_better() {
    let run = concur_run(&[
        "bench",
        "--quick",
        "--workload",
        "dispatch,messages",
        "--backend",
        "threads,procs",
    ]);
    assert_ok(&run);
    let lines: Vec<&str> = run.stdout.lines().collect();
    let h = lines
        .iter()
        .position(|l| l.starts_with("workload"))
        .unwrap();
    assert!(
        lines[h].ends_with("procs vs threads (>1 = procs better)"),
        "{}",
        lines[h]
    );
    // Two workloads, two figures each: times (µs, ms) and rates (/s).
    let mut checked = 0;
    for row in &lines[h + 1..h + 5] {
        let cells: Vec<&str> = row
            .split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect();
        let [.., threads, procs, versus] = cells[..] else {
            panic!("{row}");
        };
        let (Some((t, unit)), Some((p, _))) = (parse_figure(threads), parse_figure(procs)) else {
            continue;
        };
        let text = versus.trim_end_matches('×');
        let (versus, _) = parse_figure(text).expect(row);
        let expected = if unit.ends_with("/s") { p / t } else { t / p };
        assert!(
            ["µs", "ms", "tasks/s", "msg/s"].contains(&unit),
            "a time or a rate: {row}"
        );
        // Within the rounding of the ratio as written (half its last
        // digit) and of the two figures it comes from (3 digits each).
        let last_digit = match text.split_once('.') {
            Some((_, decimals)) if decimals.chars().all(|c| c.is_ascii_digit()) => {
                10f64.powi(-(decimals.len() as i32))
            }
            _ => versus * 0.1,
        };
        assert!(
            (versus - expected).abs() <= last_digit / 2.0 + expected * 0.012,
            "{row}: expected about {expected}"
        );
        checked += 1;
    }
    assert_eq!(checked, 4, "{}", run.stdout);
}

/// Significant digits in a number as written in JSON or CSV.
fn significant_digits(text: &str) -> usize {
    let digits: String = text.chars().filter(char::is_ascii_digit).collect();
    digits.trim_start_matches('0').trim_end_matches('0').len()
}

#[test]
fn bench_csv_figures_are_rounded() {
    let run = concur_run(&[
        "bench",
        "--quick",
        "--workload",
        "io,messages",
        "--format",
        "csv",
    ]);
    assert_ok(&run);
    let mut figures = 0;
    for row in run.stdout.lines().skip(1) {
        let cells: Vec<&str> = row.split(',').collect();
        for v in std::iter::once(cells[5]).chain(cells[6].split(';')) {
            assert!(v.parse::<f64>().is_ok(), "{row}");
            assert!(significant_digits(v) <= 4, "{v} in {row}");
            figures += 1;
        }
    }
    assert!(figures > 0, "{}", run.stdout);
}

#[test]
fn bench_json_figures_are_rounded() {
    let j = &quick_bench().json;
    for w in j["workloads"].as_array().unwrap() {
        for m in w["metrics"].as_array().unwrap() {
            for r in m["results"].as_array().unwrap() {
                let figures = r["samples"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .chain(Some(&r["median"]).filter(|v| !v.is_null()));
                for v in figures {
                    // Written as the shortest text that reads back as the
                    // same double, as `{}` prints it.
                    let text = v.as_f64().unwrap().to_string();
                    assert!(
                        significant_digits(&text) <= 4,
                        "{}.{}: {text}",
                        w["name"],
                        m["name"]
                    );
                }
            }
        }
    }
}

// ---------------------------------------------------------------- --out

#[test]
fn bench_out_says_where_it_wrote() {
    let q = quick_bench();
    assert_eq!(
        q.stderr,
        format!(
            "concur: wrote the report to {} and the chart to {}\n",
            q.json_path.display(),
            q.svg_path.display()
        )
    );
}
