//! Rendering a [`Report`] as a table, JSON or CSV.

use std::fmt::Write as _;

use super::recommend::{human, number};
use super::report::Report;
use crate::cli::Format;

/// The report in `format`, ending with a newline.
pub fn render(report: &Report, format: Format) -> String {
    match format {
        Format::Table => table(report),
        Format::Json => {
            let mut s = serde_json::to_string_pretty(report).expect("a report always serializes");
            s.push('\n');
            s
        }
        Format::Csv => csv(report),
    }
}

/// Ratio column: `value / first backend's value`.
fn ratio(value: Option<f64>, base: Option<f64>) -> String {
    match (value, base) {
        (Some(v), Some(b)) if b > 0.0 && v > 0.0 => format!("{}×", number(v / b)),
        _ => "-".to_owned(),
    }
}

/// A table for people: every figure per backend, the ratio of each backend
/// to the first, then the recommendations and notes.
pub fn table(report: &Report) -> String {
    let s = &report.settings;
    let m = &report.machine;
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

    let backends = &s.backends;
    let mut header: Vec<String> = vec!["workload".into(), "figure".into()];
    header.extend(backends.iter().map(|b| b.to_string()));
    header.extend(
        backends
            .iter()
            .skip(1)
            .map(|b| format!("{b}/{}", backends[0])),
    );
    let mut rows: Vec<Vec<String>> = vec![header];
    for w in &report.workloads {
        for (i, metric) in w.metrics.iter().enumerate() {
            let mut row = vec![
                if i == 0 {
                    w.name.to_owned()
                } else {
                    String::new()
                },
                metric.label.to_owned(),
            ];
            let medians: Vec<Option<f64>> = backends.iter().map(|b| metric.median_of(*b)).collect();
            row.extend(
                medians
                    .iter()
                    .map(|v| v.map_or_else(|| "-".to_owned(), |v| human(v, metric.unit))),
            );
            row.extend(medians.iter().skip(1).map(|v| ratio(*v, medians[0])));
            rows.push(row);
        }
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for row in &rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            let pad = widths[c] - cell.chars().count();
            if c < 2 {
                line.push_str(cell);
                line.push_str(&" ".repeat(pad));
            } else {
                line.push_str(&" ".repeat(pad));
                line.push_str(cell);
            }
            line.push_str("  ");
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }

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

/// One row per workload, metric and backend:
/// `workload,metric,unit,better,backend,median,samples` (samples joined by `;`,
/// an empty median when the figure does not apply).
pub fn csv(report: &Report) -> String {
    let mut out = String::from("workload,metric,unit,better,backend,median,samples\n");
    for w in &report.workloads {
        for m in &w.metrics {
            for r in &m.results {
                let samples: Vec<String> = r.samples.iter().map(|v| v.to_string()).collect();
                let _ = writeln!(
                    out,
                    "{},{},{},{},{},{},{}",
                    w.name,
                    m.name,
                    m.unit,
                    match m.better {
                        super::workload::Better::Lower => "lower",
                        super::workload::Better::Higher => "higher",
                    },
                    r.backend,
                    r.median.map(|v| v.to_string()).unwrap_or_default(),
                    samples.join(";")
                );
            }
        }
    }
    out
}
