//! Rendering a report as a table, JSON or CSV, piece by piece as the run
//! goes.
//!
//! A [`Renderer`] writes an opening before anything is measured, each
//! workload's rows as soon as that workload is measured, and a closing at
//! the end, so `concur bench | head` shows figures as they come. The table's
//! column widths are fixed up front, from the row labels of the workloads
//! that will run and the bounded width of every figure
//! ([`format::human_width`]), so rows printed at different times line up.
//! JSON is one document and comes whole in the closing.

use std::fmt::Write as _;

use super::format::{self, human, number, NUMBER_WIDTH};
use super::report::{Machine, MetricReport, Report, Settings, WorkloadReport};
use super::workload::{Better, Workload};
use crate::backend::BackendName;
use crate::cli::Format;

/// Space between table columns.
const GAP: &str = "  ";

/// Renders one run's report in one format, piece by piece.
#[derive(Debug)]
pub struct Renderer {
    format: Format,
    backends: Vec<BackendName>,
    /// Table column widths, in characters.
    widths: Vec<usize>,
    /// Workers per pool: what an `N` in a row label stands for.
    workers: usize,
}

/// A metric's label as a table row shows it: its `N` is the run's worker
/// count, so `--workers 8` reads "speedup, 8 over 1 worker".
fn row_label(label: &str, workers: usize) -> String {
    label
        .split(' ')
        .map(|word| match word.strip_prefix('N') {
            Some(rest) if rest.is_empty() || rest == "," => format!("{workers}{rest}"),
            _ => word.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl Renderer {
    /// A renderer for a run of `workloads` under `settings`.
    pub fn new(format: Format, settings: &Settings, workloads: &[Workload]) -> Self {
        let backends = settings.backends.clone();
        let specs = || workloads.iter().flat_map(|w| w.metrics());
        let mut widths = vec![
            workloads
                .iter()
                .map(|w| w.name().chars().count())
                .chain(["workload".len()])
                .max()
                .unwrap_or(0),
            specs()
                .map(|m| row_label(m.label, settings.workers).chars().count())
                .chain(["figure".len()])
                .max()
                .unwrap_or(0),
        ];
        let figure = specs()
            .map(|m| format::human_width(m.unit))
            .max()
            .unwrap_or(0);
        widths.extend(backends.iter().map(|b| b.as_str().len().max(figure)));
        widths.extend(
            versus_headers(&backends)
                .iter()
                // A ratio is a number and `×`.
                .map(|h| h.chars().count().max(NUMBER_WIDTH + 1)),
        );
        Self {
            format,
            backends,
            widths,
            workers: settings.workers,
        }
    }

    /// What comes before any figure: the table's title and header, the
    /// CSV header; nothing for JSON.
    pub fn opening(&self, machine: &Machine, settings: &Settings) -> String {
        match self.format {
            Format::Table => {
                let mut out = title(machine, settings);
                let mut header: Vec<String> = vec!["workload".into(), "figure".into()];
                header.extend(self.backends.iter().map(|b| b.to_string()));
                header.extend(versus_headers(&self.backends));
                out.push_str(&self.line(&header));
                out
            }
            Format::Csv => "workload,metric,unit,better,backend,median,samples\n".to_owned(),
            Format::Json => String::new(),
        }
    }

    /// One workload's rows: table rows or CSV rows; nothing for JSON.
    pub fn workload(&self, w: &WorkloadReport) -> String {
        match self.format {
            Format::Table => self.table_rows(w),
            Format::Csv => csv_rows(w),
            Format::Json => String::new(),
        }
    }

    /// What comes after the last workload: the table's recommendations and
    /// notes; the whole JSON document; nothing for CSV.
    pub fn closing(&self, report: &Report) -> String {
        match self.format {
            Format::Table => table_closing(report),
            Format::Csv => String::new(),
            Format::Json => {
                let mut s =
                    serde_json::to_string_pretty(report).expect("a report always serializes");
                s.push('\n');
                s
            }
        }
    }

    fn table_rows(&self, w: &WorkloadReport) -> String {
        let mut out = String::new();
        for (i, metric) in w.metrics.iter().enumerate() {
            let mut row = vec![
                if i == 0 {
                    w.name.to_owned()
                } else {
                    String::new()
                },
                row_label(metric.label, self.workers),
            ];
            let medians: Vec<Option<f64>> =
                self.backends.iter().map(|b| metric.median_of(*b)).collect();
            row.extend(
                medians
                    .iter()
                    .map(|v| v.map_or_else(|| "-".to_owned(), |v| human(v, metric.unit))),
            );
            row.extend(medians.iter().skip(1).map(|v| {
                versus(metric, *v, medians[0])
                    .map_or_else(|| "-".to_owned(), |r| format!("{}×", number(r)))
            }));
            out.push_str(&self.line(&row));
        }
        out
    }

    /// One table line: labels left-aligned, figures right-aligned.
    fn line(&self, cells: &[String]) -> String {
        let mut line = String::new();
        for (c, cell) in cells.iter().enumerate() {
            let pad = self.widths[c].saturating_sub(cell.chars().count());
            if c < 2 {
                line.push_str(cell);
                line.push_str(&" ".repeat(pad));
            } else {
                line.push_str(&" ".repeat(pad));
                line.push_str(cell);
            }
            line.push_str(GAP);
        }
        let mut line = line.trim_end().to_owned();
        line.push('\n');
        line
    }
}

/// The whole report in `format`, ending with a newline: what the pieces of
/// a [`Renderer`] add up to.
#[cfg(test)]
pub fn render(report: &Report, format: Format) -> String {
    let workloads: Vec<Workload> = report
        .settings
        .workloads
        .iter()
        .filter_map(|name| Workload::ALL.iter().copied().find(|w| w.name() == *name))
        .collect();
    let r = Renderer::new(format, &report.settings, &workloads);
    let mut out = r.opening(&report.machine, &report.settings);
    for w in &report.workloads {
        out.push_str(&r.workload(w));
    }
    out.push_str(&r.closing(report));
    out
}

/// The comparison columns' headers: every backend after the first against
/// the first, saying which way is better.
fn versus_headers(backends: &[BackendName]) -> Vec<String> {
    let Some(base) = backends.first() else {
        return Vec::new();
    };
    backends
        .iter()
        .skip(1)
        .map(|b| format!("{b} vs {base} (>1 = {b} better)"))
        .collect()
}

/// How many times better `value` is than `base` on `metric`: above 1 the
/// backend did better than the first one, whether the figure is a time
/// (lower is better: `base / value`) or a rate (higher is better:
/// `value / base`). `None` when either is missing or not positive.
pub fn versus(metric: &MetricReport, value: Option<f64>, base: Option<f64>) -> Option<f64> {
    match (value, base) {
        (Some(v), Some(b)) if v > 0.0 && b > 0.0 => Some(match metric.better {
            Better::Lower => b / v,
            Better::Higher => v / b,
        }),
        _ => None,
    }
}

/// The table's first lines: settings, machine, and a note when it was busy.
fn title(machine: &Machine, settings: &Settings) -> String {
    let (s, m) = (settings, machine);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "concur bench: {} worker{} per pool, median of {} samples{}; {} {}, {} core{}{}",
        s.workers,
        if s.workers == 1 { "" } else { "s" },
        s.samples,
        if s.quick { " (quick)" } else { "" },
        m.os,
        m.arch,
        m.cores,
        if m.cores == 1 { "" } else { "s" },
        m.cpu
            .as_deref()
            .map(|c| format!(", {c}"))
            .unwrap_or_default()
    );
    if let Some(load) = m.load_average.filter(|l| *l >= m.cores as f64 * 0.5) {
        let _ = writeln!(
            out,
            "note: the machine was busy (load average {load:.1} on {} cores): figures, speedups above all, may be pessimistic",
            m.cores
        );
    }
    let _ = writeln!(out);
    out
}

fn table_closing(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "\nRecommendations:");
    for w in &report.workloads {
        let _ = writeln!(out, "  {}", w.recommendation);
    }
    let notes: Vec<String> = report
        .workloads
        .iter()
        .flat_map(|w| {
            w.notes
                .iter()
                .map(move |n| format!("  {} on {}: {}", w.name, n.backend, n.note))
        })
        .collect();
    if !notes.is_empty() {
        let _ = writeln!(out, "\nNotes:");
        for n in notes {
            let _ = writeln!(out, "{n}");
        }
    }
    out
}

/// One workload's CSV rows, one per metric and backend:
/// `workload,metric,unit,better,backend,median,samples` (samples joined by
/// `;`, an empty median when the figure does not apply). Figures are
/// rounded by [`format::round`].
fn csv_rows(w: &WorkloadReport) -> String {
    let mut out = String::new();
    for m in &w.metrics {
        for r in &m.results {
            let samples: Vec<String> = r
                .samples
                .iter()
                .map(|v| format::round(*v).to_string())
                .collect();
            let _ = writeln!(
                out,
                "{},{},{},{},{},{},{}",
                w.name,
                m.name,
                m.unit,
                match m.better {
                    Better::Lower => "lower",
                    Better::Higher => "higher",
                },
                r.backend,
                r.median
                    .map(|v| format::round(v).to_string())
                    .unwrap_or_default(),
                samples.join(";")
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::measure::Plan;
    use crate::bench::report::BackendResult;

    fn metric(
        name: &'static str,
        unit: &'static str,
        better: Better,
        t: f64,
        p: f64,
    ) -> MetricReport {
        let result = |backend, v: f64| BackendResult {
            backend,
            samples: vec![v],
            median: Some(v),
        };
        MetricReport {
            name,
            label: name,
            unit,
            better,
            results: vec![
                result(BackendName::Threads, t),
                result(BackendName::Procs, p),
            ],
        }
    }

    #[test]
    fn versus_is_above_one_when_the_other_backend_is_better() {
        // procs takes a third of the time: 3× better.
        let time = metric("t", "ms", Better::Lower, 6.0, 2.0);
        assert_eq!(versus(&time, Some(2.0), Some(6.0)), Some(3.0));
        // procs does a third of the throughput: a third as good.
        let rate = metric("r", "msg/s", Better::Higher, 6.0, 2.0);
        let r = versus(&rate, Some(2.0), Some(6.0)).unwrap();
        assert!((r - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(versus(&rate, None, Some(6.0)), None);
        assert_eq!(versus(&rate, Some(0.0), Some(6.0)), None);
    }

    fn report(workloads: Vec<WorkloadReport>) -> Report {
        let names: Vec<Workload> = vec![Workload::Dispatch, Workload::Messages];
        let plan = Plan::new(2, true);
        Report {
            schema: crate::bench::report::SCHEMA,
            concur_version: "0",
            machine: Machine {
                os: "linux",
                arch: "x86_64",
                cores: 2,
                cpu: None,
                kernel: None,
                load_average: None,
            },
            settings: Settings {
                backends: vec![BackendName::Threads, BackendName::Procs],
                workloads: names.iter().map(|w| w.name()).collect(),
                workers: 2,
                quick: true,
                samples: 1,
                plan,
            },
            workloads,
        }
    }

    fn workload(name: &'static str, metrics: Vec<MetricReport>) -> WorkloadReport {
        WorkloadReport {
            name,
            description: "",
            headline: metrics[0].name,
            metrics,
            notes: vec![],
            recommendation: format!("{name}: fine"),
        }
    }

    #[test]
    fn table_rows_line_up_under_a_header_written_first() {
        // Extreme figures, to show the widths fixed before measuring hold.
        let r = report(vec![
            workload(
                "dispatch",
                vec![
                    metric("round trip", "µs", Better::Lower, 0.001_234, 987_654_321.0),
                    metric("burst", "tasks/s", Better::Higher, 999_999_999_999.9, 1.0),
                ],
            ),
            workload(
                "messages",
                vec![metric(
                    "throughput",
                    "msg/s",
                    Better::Higher,
                    2.36e6,
                    2.048e5,
                )],
            ),
        ]);
        let text = render(&r, Format::Table);
        let lines: Vec<Vec<char>> = text.lines().map(|l| l.chars().collect()).collect();
        let header = lines
            .iter()
            .position(|l| l.starts_with(&['w', 'o', 'r', 'k']))
            .unwrap();
        let head: String = lines[header].iter().collect();
        assert!(
            head.ends_with("procs vs threads (>1 = procs better)"),
            "{head}"
        );
        // Each right-aligned column ends where its header ends.
        for name in ["threads", "procs"] {
            let end = head.find(&format!("{name} ")).unwrap() + name.len();
            for row in &lines[header + 1..header + 4] {
                let row_text: String = row.iter().collect();
                assert!(row[end - 1] != ' ', "{name} in {row_text:?}");
                assert_eq!(row.get(end), Some(&' '), "{name} in {row_text:?}");
            }
        }
        for row in &lines[header + 1..header + 4] {
            assert_eq!(row.len(), lines[header].len(), "{}", text);
        }
        assert!(
            text.lines()
                .any(|l| l.contains("throughput") && l.ends_with(" 0.087×")),
            "messages: procs has 0.087 of the throughput of threads:\n{text}"
        );
    }

    /// `--workers N` shows N in the rows that depend on it.
    #[test]
    fn row_labels_name_the_worker_count() {
        assert_eq!(row_label("elapsed, N workers", 8), "elapsed, 8 workers");
        assert_eq!(
            row_label("speedup, N over 1 worker", 16),
            "speedup, 16 over 1 worker"
        );
        assert_eq!(row_label("elapsed, 1 worker", 8), "elapsed, 1 worker");
        assert_eq!(row_label("Nothing", 8), "Nothing");
        let mut r = report(vec![workload(
            "cpu",
            vec![metric(
                "speedup, N over 1 worker",
                "×",
                Better::Higher,
                3.9,
                3.8,
            )],
        )]);
        r.settings.workers = 4;
        r.settings.workloads = vec![Workload::Cpu.name()];
        let text = render(&r, Format::Table);
        assert!(
            text.lines().any(|l| l.contains("speedup, 4 over 1 worker")),
            "{text}"
        );
    }

    #[test]
    fn pieces_add_up_to_the_whole_and_csv_is_rounded() {
        let r = report(vec![workload(
            "dispatch",
            vec![metric(
                "m",
                "ms",
                Better::Lower,
                0.309_998_999_999_999_97,
                2.0,
            )],
        )]);
        let csv = render(&r, Format::Csv);
        assert_eq!(
            csv,
            "workload,metric,unit,better,backend,median,samples\n\
             dispatch,m,ms,lower,threads,0.31,0.31\n\
             dispatch,m,ms,lower,procs,2,2\n"
        );
        let json = render(&r, Format::Json);
        assert!(json.contains("0.31") && !json.contains("0.3099"), "{json}");
    }
}
