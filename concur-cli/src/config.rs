//! Validation: raw arguments ([`crate::cli`]) become checked configurations.
//!
//! Everything that can be refused is refused here, before any pool starts
//! or any file is written: each refusal is one [`CliError::Usage`] line.
//! An output that opens but fails a test write (`/dev/full`) is a
//! [`CliError::Runtime`] failure, found here too, before anything runs.

use clap::ValueEnum;
use concur_core::{Configure, ErrorKind, PoolConfig};

use crate::backend::Backend;
use crate::bench::Workload;
use crate::cli::{BackendChoice, BenchArgs, DemoArgs, Format, PoolArgs, WorkloadChoice};
use crate::exit::{CliError, CliResult};
use crate::output::OutFile;

/// A checked `concur demo`.
#[derive(Debug)]
pub struct DemoConfig {
    /// Backends to run, in order.
    pub backends: Vec<Backend>,
    /// Workers per pool.
    pub workers: usize,
}

/// A checked `concur bench`.
#[derive(Debug)]
pub struct BenchConfig {
    /// Backends to compare, in order.
    pub backends: Vec<Backend>,
    /// Workloads to run, in order.
    pub workloads: Vec<Workload>,
    /// Workers per pool.
    pub workers: usize,
    /// Fewer, shorter samples.
    pub quick: bool,
    /// Report format.
    pub format: Format,
    /// Where the report goes (`None`: standard output).
    pub out: Option<OutFile>,
    /// Where the chart goes, if anywhere.
    pub plot: Option<OutFile>,
}

impl DemoConfig {
    /// Checks `args`.
    ///
    /// # Errors
    /// [`CliError::Usage`] naming the first problem.
    pub fn new(args: DemoArgs) -> CliResult<Self> {
        #[cfg(feature = "redis")]
        if let Some(url) = &args.pool.redis {
            crate::redis::set_url(url);
        }
        Ok(Self {
            backends: backends(&[args.backend])?,
            workers: workers(&args.pool)?,
        })
    }
}

impl BenchConfig {
    /// Checks `args`; opens the output files (without changing them) and
    /// writes zero bytes to each to prove they are writable.
    ///
    /// # Errors
    /// [`CliError::Usage`] naming the first problem; [`CliError::Runtime`]
    /// when an output opens but refuses the test write.
    pub fn new(args: BenchArgs) -> CliResult<Self> {
        #[cfg(feature = "redis")]
        if let Some(url) = &args.pool.redis {
            crate::redis::set_url(url);
        }
        let backends = backends(&args.backend)?;
        let workers = workers(&args.pool)?;
        let workloads = workloads(&args.workload);
        if let (Some(out), Some(plot)) = (&args.out, &args.plot) {
            if out == plot {
                return Err(CliError::usage(format!(
                    "--out and --plot both name {}; give them different files",
                    out.display()
                )));
            }
        }
        if let Some(plot) = &args.plot {
            let is_svg = plot
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("svg"));
            if !is_svg {
                return Err(CliError::usage(format!(
                    "--plot {} must name an .svg file",
                    plot.display()
                )));
            }
        }
        let out = args
            .out
            .as_deref()
            .map(|p| OutFile::prepare(p, "--out"))
            .transpose()?;
        let plot = args
            .plot
            .as_deref()
            .map(|p| OutFile::prepare(p, "--plot"))
            .transpose()?;
        Ok(Self {
            backends,
            workloads,
            workers,
            quick: args.quick,
            format: args.format,
            out,
            plot,
        })
    }
}

/// The backends named by `choices`, deduplicated, in order.
fn backends(choices: &[BackendChoice]) -> CliResult<Vec<Backend>> {
    let mut picked: Vec<Backend> = Vec::new();
    for choice in choices {
        let add: Vec<Backend> = match choice.name() {
            None => Backend::ALL.to_vec(),
            Some(name) => vec![Backend::compiled(name).ok_or_else(|| {
                CliError::usage(format!(
                    "backend '{name}' is not compiled into this binary (compiled in: {}); \
                     rebuild with `--features {}`",
                    Backend::compiled_names(),
                    name.feature()
                ))
            })?],
        };
        for b in add {
            if !picked.contains(&b) {
                picked.push(b);
            }
        }
    }
    if picked.is_empty() {
        return Err(CliError::usage(
            "no backend is compiled into this binary; rebuild with `--features threads` or `--features procs`",
        ));
    }
    Ok(picked)
}

/// The most workers per pool `--workers` accepts: the library's own limit.
pub use concur_core::MAX_WORKERS;

/// The worker count: given, or the cores available; 1 to [`MAX_WORKERS`].
fn workers(args: &PoolArgs) -> CliResult<usize> {
    let n = args.workers.unwrap_or_else(concur_core::default_workers);
    let invalid = |why: &dyn std::fmt::Display| {
        CliError::usage(format!("invalid value '{n}' for '--workers <N>': {why}"))
    };
    if n > MAX_WORKERS {
        return Err(invalid(&format_args!(
            "at most {MAX_WORKERS} (this machine has {} cores)",
            concur_core::default_workers()
        )));
    }
    match PoolConfig::new().workers(n).validate() {
        Ok(()) => Ok(n),
        Err(e) => Err(match e.kind() {
            ErrorKind::Config { reason, .. } => invalid(reason),
            _ => invalid(&e),
        }),
    }
}

/// A one-line warning when `workers` is more than the cores available:
/// the run goes on, but the workers take turns on the cores.
pub fn oversubscribed(workers: usize) -> Option<String> {
    let cores = concur_core::default_workers();
    (workers > cores).then(|| {
        format!(
            "{workers} workers on {cores} core{}: workers beyond the cores take turns on them, \
             so CPU-bound work gets no faster",
            if cores == 1 { "" } else { "s" }
        )
    })
}

/// The workloads named by `choices`, deduplicated, in the canonical order.
fn workloads(choices: &[WorkloadChoice]) -> Vec<Workload> {
    if choices.contains(&WorkloadChoice::All) {
        return Workload::ALL.to_vec();
    }
    Workload::ALL
        .iter()
        .copied()
        // A choice selects the workload of the same name.
        .filter(|w| {
            choices.iter().any(|c| {
                c.to_possible_value()
                    .is_some_and(|v| v.get_name() == w.name())
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_states_the_workers_bound() {
        use clap::CommandFactory;
        for cmd in ["demo", "bench"] {
            let help = crate::cli::Cli::command()
                .find_subcommand_mut(cmd)
                .expect("a subcommand")
                .render_help()
                .to_string();
            assert!(help.contains(&format!("1 to {MAX_WORKERS}")), "{help}");
        }
    }

    #[test]
    fn every_workload_choice_selects_its_workload() {
        for c in WorkloadChoice::value_variants() {
            let picked = workloads(std::slice::from_ref(c));
            if *c == WorkloadChoice::All {
                assert_eq!(picked, Workload::ALL.to_vec());
            } else {
                assert_eq!(picked.len(), 1, "{c:?} selects no workload");
            }
        }
    }
}
