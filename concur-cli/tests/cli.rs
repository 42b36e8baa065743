//! End-to-end tests of the `concur` binary, run as a user runs it.
//!
//! They live in the binary's own package because cargo gives
//! `CARGO_BIN_EXE_concur` only there; the package's features decide which
//! backends the binary has and which cases run: `cargo test -p concur-cli
//! --no-default-features --features threads` tests a threads-only binary.
//!
//! Every child process has a deadline and is killed when it passes it.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

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

/// Waits for `child` (stdout and stderr piped, or stdout already closed)
/// until `deadline`; kills it past that and fails the test.
fn finish(mut child: Child, deadline: Duration, what: &str) -> Output {
    let (tx, rx) = mpsc::channel();
    let mut readers = Vec::new();
    for (i, pipe) in [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .enumerate()
    {
        let tx = tx.clone();
        readers.push(std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            let _ = tx.send(i);
            buf
        }));
    }
    let end = Instant::now() + deadline;
    for _ in 0..2 {
        if rx
            .recv_timeout(end.saturating_duration_since(Instant::now()))
            .is_err()
        {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {deadline:?}; killed");
        }
    }
    let mut bufs = readers
        .into_iter()
        .map(|r| r.join().expect("reader thread"));
    let stdout = bufs.next().unwrap_or_default();
    let stderr = bufs.next().unwrap_or_default();
    // Both pipes are closed: the process has exited or is exiting now.
    let status = child.wait().expect("wait for concur");
    Output {
        status,
        stdout,
        stderr,
    }
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
fn demo_all_runs_both_backends_in_turn() {
    let d = demo(&["demo", "--workers", "2"], &[]);
    assert_eq!(d.workers.iter().filter(|w| w.0 == "threads").count(), 2);
    assert_eq!(d.workers.iter().filter(|w| w.0 == "procs").count(), 2);
    line_starting(&d, "threads: one shared memory");
    // The threads already added 2,000 to the caller's counter; the process
    // workers do not see it and do not change it.
    assert!(
        line_starting(&d, "procs: copied memory").contains("did not move (2,000 before and after)")
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
        let json =
            serde_json::from_str(&std::fs::read_to_string(&json_path).expect("json written"))
                .expect("the report is JSON");
        let svg = std::fs::read_to_string(&svg_path).expect("svg written");
        let _ = std::fs::remove_dir_all(&dir);
        QuickBench { json, svg }
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
            .contains("the whole process died, killed by signal 6"),
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
        assert!(header.contains("procs/threads"), "a ratio column: {header}");
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

#[test]
fn runtime_failure_exits_1_with_its_cause() {
    // /dev/full opens for writing (so validation passes) and every write fails.
    let run = concur_run(&["bench", "--quick", "--workload", "io", "--out", "/dev/full"]);
    assert_eq!(run.code, Some(1), "stderr:\n{}", run.stderr);
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
        &["demo", "--workers", "2"][..],
        &["bench", "--quick", "--workload", "io"][..],
    ] {
        let run = spawn(args, &[], true);
        assert_eq!(run.code, Some(0), "{args:?}: stderr:\n{}", run.stderr);
        assert!(!run.stderr.contains("panicked"), "{args:?}: {}", run.stderr);
        assert!(run.stderr.is_empty(), "{args:?} printed: {}", run.stderr);
    }
}
