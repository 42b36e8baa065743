//! `concur bench`: run real workloads on each chosen backend and report them
//! side by side.
//!
//! - [`workload`]: the workloads and the figures each reports;
//! - [`measure`]: how each is measured, generic over the backend;
//! - [`report`]: the report and its JSON schema;
//! - [`recommend`]: plain-language advice derived from the figures;
//! - [`render`] and [`plot`]: table, JSON, CSV and the SVG chart;
//! - [`format`](mod@format): how figures are written, for people and for scripts.

pub mod format;
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
use crate::exit::{self, BoxError, CliError, CliResult};
use crate::output::{self, Sink};
use measure::Plan;
use render::Renderer;
use report::{Machine, Report, Settings, WorkloadReport};

/// Standard output was closed while the run went on: the run stops.
#[derive(Debug)]
struct StdoutClosed;

impl std::fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("standard output closed")
    }
}

impl std::error::Error for StdoutClosed {}

/// Runs the benchmark described by `config` and writes its report: on
/// standard output each workload's rows as soon as it is measured, into
/// `--out` whole at the end. A reader that closes standard output ends the
/// run after the sample under way ([`CliError::BrokenPipe`], exit 0).
///
/// # Errors
/// [`CliError::Runtime`] when a workload fails on a backend or an output
/// cannot be written; [`CliError::BrokenPipe`] when standard output closes.
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
    let settings = Settings::new(&backends, &workloads, &plan, quick);
    let renderer = Renderer::new(format, &settings, &workloads);
    let mut sink = Sink::new(out);
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
    // The bar is hidden while text goes to the terminal below it.
    let emit = |sink: &mut Sink, text: &str| {
        progress.suspend(|| sink.write(text)).inspect_err(|_| {
            progress.finish_and_clear();
        })
    };

    emit(&mut sink, &renderer.opening(&machine, &settings))?;
    let watch_stdout = sink.is_stdout();
    let mut reports = Vec::with_capacity(workloads.len());
    for &workload in &workloads {
        let mut runs = Vec::with_capacity(backends.len());
        for &backend in &backends {
            progress.set_message(format!("{} on {backend}", workload.name()));
            let tick = || {
                progress.inc(1);
                if watch_stdout && output::stdout_closed() {
                    return Err(Box::new(StdoutClosed) as BoxError);
                }
                Ok(())
            };
            let measured = measure::measure(workload, backend, &plan, &tick).map_err(|e| {
                if e.is::<StdoutClosed>() {
                    progress.finish_and_clear();
                    return CliError::BrokenPipe;
                }
                progress.abandon();
                CliError::runtime(format!("{} workload on {backend}", workload.name()), e)
            })?;
            runs.push((backend, measured));
        }
        let report = WorkloadReport::new(workload, &runs);
        emit(&mut sink, &renderer.workload(&report))?;
        reports.push(report);
    }
    progress.finish_and_clear();

    let report = Report {
        schema: report::SCHEMA,
        concur_version: env!("CARGO_PKG_VERSION"),
        machine,
        settings,
        workloads: reports,
    };
    emit(&mut sink, &renderer.closing(&report))?;
    let mut wrote = Vec::new();
    if let Some(file) = plot {
        let svg = plot::svg(&report).map_err(|e| CliError::runtime("drawing the chart", e))?;
        let path = file.path().to_owned();
        file.write(svg.as_bytes())?;
        wrote.push(format!("the chart to {}", path.display()));
    }
    if let Some(path) = sink.finish()? {
        wrote.insert(0, format!("the report to {}", path.display()));
    }
    if !wrote.is_empty() {
        exit::note(&format!("wrote {}", wrote.join(" and ")));
    }
    Ok(())
}
