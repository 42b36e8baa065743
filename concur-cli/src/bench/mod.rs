//! `concur bench`: run real workloads on each chosen backend and report them
//! side by side.
//!
//! - [`workload`]: the workloads and the figures each reports;
//! - [`measure`]: how each is measured, generic over the backend;
//! - [`report`]: the report and its JSON schema;
//! - [`recommend`]: plain-language advice derived from the figures;
//! - [`render`] and [`plot`]: table, JSON, CSV and the SVG chart.

pub mod measure;
pub mod plot;
pub mod recommend;
pub mod render;
pub mod report;
pub mod workload;

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

pub use workload::Workload;

use crate::config::BenchConfig;
use crate::exit::{CliError, CliResult};
use crate::output;
use measure::Plan;
use report::{Machine, Report, Settings, WorkloadReport};

/// Runs the benchmark described by `config` and writes its report.
///
/// # Errors
/// [`CliError::Runtime`] when a workload fails on a backend or an output
/// cannot be written.
pub fn run(config: BenchConfig) -> CliResult<()> {
    let BenchConfig {
        backends,
        workloads,
        workers,
        quick,
        format,
        out,
        plot,
    } = config;
    let machine = Machine::here();
    let plan = Plan::new(workers, quick);
    let total = (backends.len() * workloads.len() * plan.samples) as u64;
    let progress = if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} samples  {msg}",
            )
            .expect("a valid template"),
        );
        bar
    } else {
        ProgressBar::hidden()
    };

    let mut reports = Vec::with_capacity(workloads.len());
    for &workload in &workloads {
        let mut runs = Vec::with_capacity(backends.len());
        for &backend in &backends {
            progress.set_message(format!("{} on {backend}", workload.name()));
            let tick = || progress.inc(1);
            let measured = measure::measure(workload, backend, &plan, &tick).map_err(|e| {
                progress.abandon();
                CliError::runtime(format!("{} workload on {backend}", workload.name()), e)
            })?;
            runs.push((backend, measured));
        }
        reports.push(WorkloadReport::new(workload, &runs));
    }
    progress.finish_and_clear();

    let report = Report {
        schema: report::SCHEMA,
        concur_version: env!("CARGO_PKG_VERSION"),
        machine,
        settings: Settings::new(&backends, &workloads, &plan, quick),
        workloads: reports,
    };
    if let Some(file) = plot {
        let svg = plot::svg(&report).map_err(|e| CliError::runtime("drawing the chart", e))?;
        file.write(svg.as_bytes())?;
    }
    let text = render::render(&report, format);
    match out {
        Some(file) => file.write(text.as_bytes()),
        None => output::stdout(&text),
    }
}
