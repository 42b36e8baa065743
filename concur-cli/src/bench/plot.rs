//! The SVG bar chart of `concur bench --plot`.
//!
//! One group of bars per workload, one bar per backend, each workload
//! normalized to its best backend on the headline figure (best = 1, taller
//! is better), so workloads measured in milliseconds and in messages per
//! second share one axis.
//!
//! Everything is drawn with plotters. Each workload's bars are drawn in a
//! render of their own over the same layout and then placed in
//! `<g class="workload" id="workload-NAME" data-workload="NAME">`, with a
//! `<title>` holding the real figures (shown on hover in a browser), so the
//! chart can be inspected and tested per workload.

use plotters::coord::Shift;
use plotters::prelude::*;

use super::format::{human, number};
use super::report::{Report, WorkloadReport};
use super::workload::Better;
use crate::backend::BackendName;
use crate::exit::BoxError;

const WIDTH: u32 = 960;
const HEIGHT: u32 = 540;
const TITLE_HEIGHT: u32 = 50;

/// Bar colours, one per backend in report order.
const COLORS: [RGBColor; 4] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xd6, 0x27, 0x28),
];

/// Each backend's headline figure relative to the best backend (1 = best,
/// larger is better); `None` where the figure does not apply.
pub fn relative(w: &WorkloadReport, backends: &[BackendName]) -> Vec<Option<f64>> {
    let m = w.headline_metric();
    let medians: Vec<Option<f64>> = backends.iter().map(|b| m.median_of(*b)).collect();
    let known = medians.iter().flatten().copied();
    let best = match m.better {
        Better::Lower => known.filter(|v| *v > 0.0).fold(f64::INFINITY, f64::min),
        Better::Higher => known.fold(0.0, f64::max),
    };
    medians
        .into_iter()
        .map(|v| {
            let v = v?;
            Some(match m.better {
                Better::Lower if v > 0.0 && best.is_finite() => best / v,
                Better::Lower => 0.0,
                Better::Higher if best > 0.0 => v / best,
                Better::Higher => 0.0,
            })
        })
        .collect()
}

/// The chart's drawing area below the title, the same in every render.
fn plot_area<'a>(root: &DrawingArea<SVGBackend<'a>, Shift>) -> DrawingArea<SVGBackend<'a>, Shift> {
    let (_, rest) = root.split_vertically(TITLE_HEIGHT);
    rest
}

type Chart<'a, 'b> = ChartContext<
    'a,
    SVGBackend<'b>,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

/// The chart's coordinate system over `area`, the same in every render.
fn chart<'a, 'b>(
    area: &'a DrawingArea<SVGBackend<'b>, Shift>,
    workloads: usize,
) -> Result<Chart<'a, 'b>, BoxError> {
    Ok(ChartBuilder::on(area)
        .margin(10)
        .x_label_area_size(50)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..workloads.max(1) as f64, 0.0..1.3)?)
}

fn err(e: impl std::fmt::Display) -> BoxError {
    Box::new(crate::exit::Problem(format!("drawing the chart: {e}")))
}

/// The SVG document for `report`.
///
/// # Errors
/// When plotters fails to draw (it should not with an in-memory target).
pub fn svg(report: &Report) -> Result<String, BoxError> {
    let backends = &report.settings.backends;
    let n = report.workloads.len();
    let mut frame = String::new();
    {
        let root = SVGBackend::with_string(&mut frame, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let (title, _) = root.split_vertically(TITLE_HEIGHT);
        title
            .titled(
                &format!(
                    "concur bench: {} workers, {} {} ({} cores); bars relative to the best backend, taller is better",
                    report.settings.workers, report.machine.os, report.machine.arch, report.machine.cores
                ),
                ("sans-serif", 16),
            )
            .map_err(err)?;
        let area = plot_area(&root);
        let mut chart = chart(&area, n)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .disable_x_axis()
            .x_labels(0)
            .light_line_style(WHITE)
            .y_labels(7)
            .y_desc("relative to best (1 = best)")
            .y_label_formatter(&|v| format!("{v:.1}"))
            .draw()
            .map_err(err)?;
        for (i, b) in backends.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            chart
                .draw_series(std::iter::empty::<Rectangle<(f64, f64)>>())
                .map_err(err)?
                .label(b.as_str())
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled())
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
        for (i, w) in report.workloads.iter().enumerate() {
            let (x, y) = chart.backend_coord(&(i as f64 + 0.5, 0.0));
            let centered =
                |text: &str, size: i32| (x - size * text.chars().count() as i32 * 7 / 24, size);
            let (x0, _) = centered(w.name, 14);
            root.draw(&Text::new(
                w.name.to_owned(),
                (x0, y + 10),
                ("sans-serif", 14),
            ))
            .map_err(err)?;
            let m = w.headline_metric();
            let sub = format!("{} ({})", m.label, m.unit);
            let (x1, _) = centered(&sub, 11);
            root.draw(&Text::new(
                sub,
                (x1, y + 28),
                ("sans-serif", 11)
                    .into_font()
                    .color(&RGBColor(0x55, 0x55, 0x55)),
            ))
            .map_err(err)?;
        }
        root.present().map_err(err)?;
    }

    let mut groups = String::new();
    for (i, w) in report.workloads.iter().enumerate() {
        let rel = relative(w, backends);
        let mut bars = String::new();
        {
            let root = SVGBackend::with_string(&mut bars, (WIDTH, HEIGHT)).into_drawing_area();
            let area = plot_area(&root);
            let mut chart = chart(&area, n)?;
            let k = backends.len().max(1) as f64;
            let width = 0.8 / k;
            for (j, r) in rel.iter().enumerate() {
                let Some(r) = *r else { continue };
                let x0 = i as f64 + 0.1 + j as f64 * width;
                let color = COLORS[j % COLORS.len()];
                chart
                    .draw_series(std::iter::once(Rectangle::new(
                        [(x0 + 0.01, 0.0), (x0 + width - 0.01, r)],
                        color.filled(),
                    )))
                    .map_err(err)?;
                chart
                    .draw_series(std::iter::once(Text::new(
                        if r > 0.0 && r < 0.01 {
                            "<0.01".to_owned()
                        } else {
                            number(r)
                        },
                        (x0 + width / 2.0 - 0.04, r + 0.05),
                        ("sans-serif", 12),
                    )))
                    .map_err(err)?;
            }
            root.present().map_err(err)?;
        }
        let m = w.headline_metric();
        let figures: Vec<String> = backends
            .iter()
            .zip(&rel)
            .map(|(b, r)| match (m.median_of(*b), r) {
                (Some(v), Some(r)) => format!("{b} {} (relative {})", human(v, m.unit), number(*r)),
                _ => format!("{b} n/a"),
            })
            .collect();
        groups.push_str(&format!(
            "<g class=\"workload\" id=\"workload-{name}\" data-workload=\"{name}\">\n<title>{}</title>\n{}</g>\n",
            escape(&format!("{}: {}: {}", w.name, m.label, figures.join(", "))),
            inner(&bars),
            name = escape(w.name),
        ));
    }
    let close = frame
        .rfind("</svg>")
        .ok_or_else(|| err("plotters wrote no closing tag"))?;
    frame.insert_str(close, &groups);
    Ok(frame)
}

/// The elements inside a plotters SVG document (without the `<svg>` tags).
fn inner(doc: &str) -> &str {
    let start = doc
        .find("<svg")
        .and_then(|s| doc[s..].find('>').map(|e| s + e + 1))
        .unwrap_or(0);
    let end = doc.rfind("</svg>").unwrap_or(doc.len());
    &doc[start..end.max(start)]
}

/// Escapes text for XML content and attributes.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::bench::report::{BackendResult, MetricReport};

    fn workload(better: Better, threads: Option<f64>, procs: Option<f64>) -> WorkloadReport {
        let result = |backend, v: Option<f64>| BackendResult {
            backend,
            samples: v.into_iter().collect(),
            median: v,
        };
        WorkloadReport {
            name: "w",
            description: "",
            headline: "m",
            metrics: vec![MetricReport {
                name: "m",
                label: "m",
                unit: "ms",
                better,
                results: vec![
                    result(BackendName::Threads, threads),
                    result(BackendName::Procs, procs),
                ],
            }],
            notes: vec![],
            recommendation: String::new(),
        }
    }

    #[test]
    fn relative_puts_the_best_backend_at_one() {
        let both = [BackendName::Threads, BackendName::Procs];
        let w = workload(Better::Lower, Some(2.0), Some(8.0));
        assert_eq!(relative(&w, &both), [Some(1.0), Some(0.25)]);
        let w = workload(Better::Higher, Some(2.0), Some(8.0));
        assert_eq!(relative(&w, &both), [Some(0.25), Some(1.0)]);
        let w = workload(Better::Higher, Some(0.0), Some(1.0));
        assert_eq!(relative(&w, &both), [Some(0.0), Some(1.0)]);
        let w = workload(Better::Lower, None, Some(3.0));
        assert_eq!(relative(&w, &both), [None, Some(1.0)]);
    }

    #[test]
    fn inner_strips_the_svg_element() {
        let doc = "<svg width=\"1\" xmlns=\"x\">\n<rect/>\n</svg>\n";
        assert_eq!(inner(doc), "\n<rect/>\n");
    }

    #[test]
    fn escape_handles_markup() {
        assert_eq!(escape("a<b & \"c\">"), "a&lt;b &amp; &quot;c&quot;&gt;");
    }
}
