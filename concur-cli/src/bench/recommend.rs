//! Plain-language recommendations, derived from the measured medians.
//!
//! Nothing here knows which backend "should" win: every sentence is built
//! from the numbers of the run, so a run on another machine (or a backend
//! that improves) reads differently.

use super::format::human;
use super::report::{MetricReport, WorkloadReport};
use super::workload::{Better, Workload};
use crate::backend::BackendName;

/// Differences below this factor are reported as "about the same".
const SAME: f64 = 1.15;

/// How the best and the worst backend compare on one metric.
#[derive(Debug, Clone, Copy)]
pub struct Comparison {
    /// The backend with the best median.
    pub best: BackendName,
    /// Its median.
    pub best_value: f64,
    /// The backend with the worst median.
    pub worst: BackendName,
    /// Its median.
    pub worst_value: f64,
    /// How many times better the best is (≥ 1).
    pub factor: f64,
}

/// Compares the backends on `metric`; `None` with fewer than two positive medians.
pub fn compare(metric: &MetricReport) -> Option<Comparison> {
    let medians: Vec<(BackendName, f64)> = metric
        .medians()
        .into_iter()
        .filter(|(_, v)| *v > 0.0)
        .collect();
    if medians.len() < 2 {
        return None;
    }
    let by = |a: &&(BackendName, f64), b: &&(BackendName, f64)| a.1.total_cmp(&b.1);
    let lo = *medians.iter().min_by(by)?;
    let hi = *medians.iter().max_by(by)?;
    let (best, worst) = match metric.better {
        Better::Lower => (lo, hi),
        Better::Higher => (hi, lo),
    };
    let factor = match metric.better {
        Better::Lower => worst.1 / best.1,
        Better::Higher => best.1 / worst.1,
    };
    Some(Comparison {
        best: best.0,
        best_value: best.1,
        worst: worst.0,
        worst_value: worst.1,
        factor,
    })
}

fn factor(f: f64) -> String {
    if f >= 10.0 {
        format!("{f:.0}×")
    } else {
        format!("{f:.1}×")
    }
}

/// `"threads 1.3× faster (4.1 µs vs 5.3 µs)"` or `"about the same (…)"`.
fn verdict(metric: &MetricReport, better: &str) -> Option<String> {
    let c = compare(metric)?;
    let values = format!(
        "{} vs {}",
        human(c.best_value, metric.unit),
        human(c.worst_value, metric.unit)
    );
    Some(if c.factor < SAME {
        format!("about the same ({values})")
    } else {
        format!("{} {} {better} ({values})", c.best, factor(c.factor))
    })
}

/// One backend's figure, for runs with a single backend.
fn single(metric: &MetricReport) -> Option<String> {
    let (b, v) = *metric.medians().first()?;
    Some(format!("{b} {}", human(v, metric.unit)))
}

fn list(names: &[BackendName]) -> String {
    let names: Vec<&str> = names.iter().map(|b| b.as_str()).collect();
    match names.as_slice() {
        [] => String::new(),
        [one] => (*one).to_owned(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// The recommendation for `workload`, from `report`'s medians.
pub fn recommend(workload: Workload, report: &WorkloadReport) -> String {
    let m = |name: &str| {
        report
            .metric(name)
            .expect("metric declared by the workload")
    };
    let compared_or_single = |metric: &MetricReport, better: &str| {
        verdict(metric, better)
            .or_else(|| single(metric))
            .unwrap_or_else(|| "no figures".into())
    };
    let body = match workload {
        Workload::Startup => {
            let ready = m("ready_ms");
            let mut s = format!("ready: {}", compared_or_single(ready, "sooner"));
            if let Some(c) = compare(ready).filter(|c| c.factor >= 3.0) {
                s.push_str(&format!("; start {} pools once and reuse them", c.worst));
            }
            s
        }
        Workload::Dispatch => {
            let rt = m("round_trip_us");
            let mut s = format!("per task: {}", compared_or_single(rt, "faster"));
            if let Some(v) = verdict(m("burst_tasks_per_s"), "the throughput") {
                s.push_str(&format!("; in a burst through map: {v}"));
            }
            let redis = rt
                .medians()
                .into_iter()
                .find(|(b, _)| *b == BackendName::Redis);
            if let Some((_, per_task)) = redis {
                s.push_str(&format!(
                    "; redis pays a broker round trip per task ({}): go distributed when one \
                     machine's workers are not enough or tasks must run elsewhere, with tasks \
                     much longer than that",
                    human(per_task, rt.unit)
                ));
            }
            s
        }
        Workload::Cpu => cpu(report),
        Workload::Io => io(report),
        Workload::Payload => {
            let big = compared_or_single(m("round_trip_64mib_ms"), "faster");
            let small = compared_or_single(m("round_trip_1mib_ms"), "faster");
            let shared = compared_or_single(m("round_trip_64mib_shared_ms"), "faster");
            format!(
                "64 MiB round trip: {big}; 1 MiB: {small}; 64 MiB as SharedBytes (no copy \
                 across processes): {shared}"
            )
        }
        Workload::Messages => {
            format!(
                "streaming: {}",
                compared_or_single(m("messages_per_s"), "the throughput")
            )
        }
        Workload::Crash => crash(report),
    };
    format!("{}: {body}", workload.name())
}

fn cpu(report: &WorkloadReport) -> String {
    let speedup = report.metric("speedup").expect("declared");
    let medians = speedup.medians();
    let figures: Vec<String> = medians
        .iter()
        .map(|(b, v)| format!("{b} {}", human(*v, "×")))
        .collect();
    // A backend scales when N workers beat one worker clearly (1.4×: more
    // than noise, reachable with two workers).
    let scaling: Vec<BackendName> = medians
        .iter()
        .filter(|(_, v)| *v >= 1.4)
        .map(|(b, _)| *b)
        .collect();
    let mut s = match (scaling.len(), medians.len()) {
        (_, 0) => "no figures".to_owned(),
        (n, total) if n == total && total > 1 => "both scale".to_owned(),
        (1, 1) => format!("{} scales", list(&scaling)),
        (0, _) => "no speedup over one worker".to_owned(),
        _ => format!("only {} scales", list(&scaling)),
    };
    if !figures.is_empty() {
        s.push_str(&format!(
            " (speedup over one worker: {})",
            figures.join(", ")
        ));
    }
    if let Some(v) = verdict(report.metric("elapsed_ms").expect("declared"), "faster") {
        s.push_str(&format!("; elapsed: {v}"));
    }
    s
}

fn io(report: &WorkloadReport) -> String {
    let overlap = report.metric("overlap").expect("declared");
    let medians = overlap.medians();
    let overlapping: Vec<BackendName> = medians
        .iter()
        .filter(|(_, v)| *v >= 1.4)
        .map(|(b, _)| *b)
        .collect();
    let figures: Vec<String> = medians
        .iter()
        .map(|(b, v)| format!("{b} {}", human(*v, "×")))
        .collect();
    let mut s = match (overlapping.len(), medians.len()) {
        (_, 0) => "no figures".to_owned(),
        (n, total) if n == total && total > 1 => "both overlap blocking waits".to_owned(),
        (1, 1) => format!("{} overlaps blocking waits", list(&overlapping)),
        (0, _) => "blocking waits do not overlap".to_owned(),
        _ => format!("only {} overlaps blocking waits", list(&overlapping)),
    };
    if !figures.is_empty() {
        s.push_str(&format!(" (waits served at once: {})", figures.join(", ")));
    }
    if let Some(v) = verdict(report.metric("elapsed_ms").expect("declared"), "faster") {
        s.push_str(&format!("; elapsed: {v}"));
    }
    s
}

fn crash(report: &WorkloadReport) -> String {
    let survived = report.metric("survived").expect("declared").medians();
    let alive: Vec<BackendName> = survived
        .iter()
        .filter(|(_, v)| *v >= 0.5)
        .map(|p| p.0)
        .collect();
    let dead: Vec<BackendName> = survived
        .iter()
        .filter(|(_, v)| *v < 0.5)
        .map(|p| p.0)
        .collect();
    let mut s = match (alive.len(), dead.len()) {
        (0, 0) => return "no figures".to_owned(),
        (0, _) => format!("an abort kills the whole process on {}", list(&dead)),
        (_, 0) if alive.len() > 1 => format!("{} all survive an abort", list(&alive)),
        (_, 0) => format!("{} survives an abort", list(&alive)),
        _ => format!(
            "only {} survive{} an abort",
            list(&alive),
            if alive.len() == 1 { "s" } else { "" }
        ),
    };
    let recovery = report.metric("recovery_ms").expect("declared");
    let back: Vec<(BackendName, f64)> = alive
        .iter()
        .filter_map(|b| Some((*b, recovery.median_of(*b)?)))
        .collect();
    match back.as_slice() {
        [] => {}
        [(_, v)] => s.push_str(&format!(" (pool whole again after {})", human(*v, "ms"))),
        many => {
            let each: Vec<String> = many
                .iter()
                .map(|(b, v)| format!("{b} {}", human(*v, "ms")))
                .collect();
            s.push_str(&format!(" (pool whole again after {})", each.join(", ")));
        }
    }
    if !dead.is_empty() && !alive.is_empty() {
        s.push_str(&format!("; on {} the whole process died", list(&dead)));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::report::BackendResult;

    fn metric(better: Better, values: &[(BackendName, f64)]) -> MetricReport {
        MetricReport {
            name: "x",
            label: "x",
            unit: "ms",
            better,
            results: values
                .iter()
                .map(|&(backend, v)| BackendResult {
                    backend,
                    samples: vec![v],
                    median: Some(v),
                })
                .collect(),
        }
    }

    #[test]
    fn compare_follows_the_better_direction() {
        use BackendName::{Procs, Threads};
        let c = compare(&metric(Better::Lower, &[(Threads, 2.0), (Procs, 6.0)])).unwrap();
        assert_eq!((c.best, c.worst), (Threads, Procs));
        assert!((c.factor - 3.0).abs() < 1e-9);
        let c = compare(&metric(Better::Higher, &[(Threads, 2.0), (Procs, 6.0)])).unwrap();
        assert_eq!((c.best, c.worst), (Procs, Threads));
        assert!(compare(&metric(Better::Lower, &[(Threads, 2.0)])).is_none());
    }

    #[test]
    fn verdict_says_same_for_close_figures() {
        use BackendName::{Procs, Threads};
        let v = verdict(
            &metric(Better::Lower, &[(Threads, 10.0), (Procs, 10.5)]),
            "faster",
        )
        .unwrap();
        assert!(v.starts_with("about the same"), "{v}");
        let v = verdict(
            &metric(Better::Lower, &[(Threads, 10.0), (Procs, 30.0)]),
            "faster",
        )
        .unwrap();
        assert!(v.starts_with("threads 3.0× faster"), "{v}");
    }
}
