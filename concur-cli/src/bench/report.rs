//! The report of a `concur bench` run, and its JSON form.
//!
//! # JSON schema (`"schema": "concur-bench/1"`)
//!
//! ```text
//! {
//!   "schema": "concur-bench/1",
//!   "concur_version": "0.1.0",
//!   "machine": {
//!     "os": "linux", "arch": "x86_64",
//!     "cores": 2,                      // cores available to the process
//!     "cpu": "…" | null,               // CPU model, when known
//!     "kernel": "6.1.0" | null,        // OS release, when known
//!     "load_average": 0.4 | null       // 1-minute load when the run started
//!   },
//!   "settings": {
//!     "backends": ["threads", "procs"],
//!     "workloads": ["startup", …],
//!     "workers": 2, "quick": false,
//!     "samples": 5,                    // samples per figure
//!     "plan": { "round_trips": 200, "burst": 20000, "spin_rounds": …,
//!               "spin_ms": 40.0, "block_ms": 20, "payloads": [1048576, 67108864],
//!               "messages": 10000, "crash_others": 8, "crash_block_ms": 20, … }
//!   },
//!   "workloads": [
//!     {
//!       "name": "cpu",
//!       "description": "…",
//!       "headline": "elapsed_ms",      // the metric compared in the chart
//!       "metrics": [
//!         {
//!           "name": "elapsed_ms", "label": "elapsed, N workers",
//!           "unit": "ms", "better": "lower" | "higher",
//!           "results": [
//!             { "backend": "threads",
//!               "samples": [41.2, 40.9, …],   // every sample, in run order
//!               "median": 41.0 | null }       // null: does not apply here
//!           ]
//!         }
//!       ],
//!       "notes": [ { "backend": "threads", "note": "…" } ],
//!       "recommendation": "cpu: both scale …"
//!     }
//!   ]
//! }
//! ```
//!
//! Every backend of `settings.backends` appears in every metric's
//! `results`, in that order. Units are the metric's `unit`: `ms`, `µs`,
//! `tasks/s`, `msg/s`, `×` (a ratio), `%`, `0/1` (a yes/no figure).
//!
//! Samples, medians and the load average are rounded to
//! [`format::SIGNIFICANT`] (4) significant digits: run-to-run noise is far
//! larger, and a script gets `0.31`, not `0.30999899999999997`. Medians are
//! taken before rounding.

use serde::Serialize;

use super::format;
use super::measure::{Measured, Plan};
use super::workload::{Better, Workload};
use crate::backend::{Backend, BackendName};

/// The schema id written into every JSON report.
pub const SCHEMA: &str = "concur-bench/1";

/// A whole `concur bench` run.
#[derive(Debug, Serialize)]
pub struct Report {
    /// [`SCHEMA`].
    pub schema: &'static str,
    /// The version of concur that measured.
    pub concur_version: &'static str,
    /// Where it was measured.
    pub machine: Machine,
    /// How it was measured.
    pub settings: Settings,
    /// One entry per workload, in run order.
    pub workloads: Vec<WorkloadReport>,
}

/// The machine the figures come from.
#[derive(Debug, Serialize)]
pub struct Machine {
    /// Operating system (`std::env::consts::OS`).
    pub os: &'static str,
    /// CPU architecture.
    pub arch: &'static str,
    /// Cores available to this process.
    pub cores: usize,
    /// CPU model, when known.
    pub cpu: Option<String>,
    /// Operating-system release, when known.
    pub kernel: Option<String>,
    /// The one-minute load average when the run started, when known: above
    /// the core count, other programs competed for the CPU and the figures
    /// (speedups above all) are pessimistic.
    #[serde(serialize_with = "format::serialize_rounded_opt")]
    pub load_average: Option<f64>,
}

impl Machine {
    /// Describes this machine.
    pub fn here() -> Self {
        let cpu = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        });
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .ok()
            .map(|s| s.trim().to_owned());
        let load_average = std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok());
        Self {
            os: std::env::consts::OS,
            arch: std::env::consts::ARCH,
            cores: concur_core::default_workers(),
            cpu,
            kernel,
            load_average,
        }
    }
}

/// The settings of the run.
#[derive(Debug, Serialize)]
pub struct Settings {
    /// Backends compared, in order.
    pub backends: Vec<BackendName>,
    /// Workloads run, in order.
    pub workloads: Vec<&'static str>,
    /// Workers per pool.
    pub workers: usize,
    /// `--quick` was given.
    pub quick: bool,
    /// Samples per figure.
    pub samples: usize,
    /// The sizes every workload used.
    pub plan: Plan,
}

/// One workload's figures on every backend.
#[derive(Debug, Serialize)]
pub struct WorkloadReport {
    /// The workload's name.
    pub name: &'static str,
    /// What it does.
    pub description: &'static str,
    /// The metric compared in the chart and the recommendation.
    pub headline: &'static str,
    /// Every figure.
    pub metrics: Vec<MetricReport>,
    /// What happened, per backend, when the figures alone do not say it.
    pub notes: Vec<Note>,
    /// Plain-language advice derived from the figures.
    pub recommendation: String,
}

/// A note on one backend's run of a workload.
#[derive(Debug, Serialize)]
pub struct Note {
    /// The backend.
    pub backend: BackendName,
    /// The note.
    pub note: String,
}

/// One figure on every backend.
#[derive(Debug, Serialize)]
pub struct MetricReport {
    /// Key.
    pub name: &'static str,
    /// Table label.
    pub label: &'static str,
    /// Unit.
    pub unit: &'static str,
    /// Which direction is better.
    pub better: Better,
    /// One entry per backend, in the order of the settings.
    pub results: Vec<BackendResult>,
}

/// One figure on one backend.
#[derive(Debug, Serialize)]
pub struct BackendResult {
    /// The backend.
    pub backend: BackendName,
    /// Every sample, in run order (rounded in JSON).
    #[serde(serialize_with = "format::serialize_rounded_all")]
    pub samples: Vec<f64>,
    /// Their median; `None` when the figure does not apply to this backend
    /// (rounded in JSON).
    #[serde(serialize_with = "format::serialize_rounded_opt")]
    pub median: Option<f64>,
}

/// The median of `samples` (mean of the two middle ones for an even count).
pub fn median(samples: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

impl MetricReport {
    /// The median on `backend`, if measured.
    pub fn median_of(&self, backend: BackendName) -> Option<f64> {
        self.results
            .iter()
            .find(|r| r.backend == backend)
            .and_then(|r| r.median)
    }

    /// `(backend, median)` for every backend that has one.
    pub fn medians(&self) -> Vec<(BackendName, f64)> {
        self.results
            .iter()
            .filter_map(|r| Some((r.backend, r.median?)))
            .collect()
    }
}

impl WorkloadReport {
    /// Assembles one workload's report from each backend's measurements.
    pub fn new(workload: Workload, runs: &[(Backend, Measured)]) -> Self {
        let metrics = workload
            .metrics()
            .iter()
            .map(|spec| MetricReport {
                name: spec.name,
                label: spec.label,
                unit: spec.unit,
                better: spec.better,
                results: runs
                    .iter()
                    .map(|(b, m)| {
                        let samples = m
                            .samples
                            .iter()
                            .find(|(name, _)| *name == spec.name)
                            .map(|(_, s)| s.clone())
                            .unwrap_or_default();
                        BackendResult {
                            backend: b.name(),
                            median: median(&samples),
                            samples,
                        }
                    })
                    .collect(),
            })
            .collect();
        let notes = runs
            .iter()
            .filter_map(|(b, m)| {
                Some(Note {
                    backend: b.name(),
                    note: m.note.clone()?,
                })
            })
            .collect();
        let mut report = Self {
            name: workload.name(),
            description: workload.description(),
            headline: workload.metrics()[0].name,
            metrics,
            notes,
            recommendation: String::new(),
        };
        report.recommendation = super::recommend::recommend(workload, &report);
        report
    }

    /// The metric called `name`.
    pub fn metric(&self, name: &str) -> Option<&MetricReport> {
        self.metrics.iter().find(|m| m.name == name)
    }

    /// The headline metric.
    pub fn headline_metric(&self) -> &MetricReport {
        self.metric(self.headline)
            .expect("the headline is one of the metrics")
    }
}

impl Settings {
    /// The settings of a run of `workloads` on `backends` under `plan`.
    pub fn new(backends: &[Backend], workloads: &[Workload], plan: &Plan, quick: bool) -> Self {
        Self {
            backends: backends.iter().map(|b| b.name()).collect(),
            workloads: workloads.iter().map(|w| w.name()).collect(),
            workers: plan.workers,
            quick,
            samples: plan.samples,
            plan: plan.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_odd_even_and_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[f64::NAN, 5.0]), Some(5.0));
    }
}
