//! `concur`: compare thread workers and process workers on this machine.
//!
//! The binary runs the same tasks on the backends it was built with
//! (features `threads` and `procs`, both on by default; either alone also
//! works) and shows what each one costs and what each one survives. It is
//! thin: it parses, runs workloads through the [`concur_core::Executor`]
//! contract and renders reports; the backends do the work.
//!
//! # Commands
//! - `concur backends`: the backends compiled in, one per line, with what
//!   each can do (kill on timeout, memory limit, zero-copy payloads, ...).
//! - `concur demo [--backend threads|procs|all] [--workers N]`: N workers
//!   check in (index, process id, thread id), are joined, and the number of
//!   distinct process ids is shown; then each worker adds 1,000 to one
//!   static counter: threads share it, processes each have their own copy.
//! - `concur bench [--backend LIST] [--workload LIST] [--workers N]
//!   [--quick] [--format table|json|csv] [--out FILE] [--plot FILE.svg]`:
//!   the workloads `startup`, `dispatch`, `cpu`, `io`, `payload`,
//!   `messages` and `crash` on each backend, several samples each, medians
//!   side by side with ratios and a recommendation per workload. A table or
//!   CSV on standard output gets each workload's rows as soon as it is
//!   measured, and a closed standard output ends the run after the sample
//!   under way; `--out` gets the report whole at the end. A progress bar
//!   goes to standard error when it is a terminal. The default run takes
//!   under 2 minutes on 2 cores, `--quick` under 20 seconds.
//!
//! - `concur worker --redis URL [--queue NAME]` (feature `redis`): a worker
//!   for the CLI's tasks on this machine, serving a Redis queue; with the
//!   `redis` backend, `demo` and `bench` take `--redis URL` or start a
//!   `redis-server` of their own.
//!
//! `--workers` takes 1 to [`config::MAX_WORKERS`] (1024); more workers than
//! cores prints a one-line warning on standard error and runs.
//!
//! `CONCUR_BACKEND` and `CONCUR_WORKERS` are read when `--backend` and
//! `--workers` are not given. Results go to standard output, diagnostics
//! and progress to standard error.
//!
//! # Exit codes
//! - `0`: success, also when standard output is closed early (`| head`).
//! - `1`: runtime failure; one line on standard error with the cause chain.
//! - `2`: bad usage (unknown value, backend not compiled in, 0 workers or
//!   more than 1024, `--out` or `--plot` that cannot be opened); one line
//!   on standard error; nothing was run and nothing written.
//!
//! An `--out` or `--plot` that opens but refuses a write (`/dev/full`)
//! fails with `1` before anything is measured.
//!
//! # JSON report
//! `concur bench --format json` writes one document with schema id
//! `concur-bench/1`: `machine` (os, arch, cores, cpu, kernel, load_average), `settings`
//! (backends, workloads, workers, quick, samples) and `workloads`, each with
//! its `metrics` (name, label, unit, better: lower|higher, and per backend
//! every sample and the median), `notes` and its `recommendation`. The full
//! schema is documented in the `bench::report` module.
//!
//! # Process workers
//! With the `procs` feature, worker processes are this binary re-run:
//! `concur_procs::init()` is the first line of `main`. The crash experiment
//! of backends that share the caller's process runs in a child process of
//! this binary (`concur __internal crash-child`, hidden).

#![cfg_attr(
    not(any(feature = "threads", feature = "procs")),
    allow(dead_code, unused_imports)
)]

mod backend;
mod bench;
mod cli;
mod config;
mod crash;
mod demo;
mod exit;
mod list;
mod output;
#[cfg(feature = "redis")]
mod redis;
mod tasks;

use std::process::ExitCode;

use clap::error::ErrorKind as ClapErrorKind;
use clap::Parser;

use cli::{Cli, Command};
use config::{BenchConfig, DemoConfig};
use exit::CliResult;

fn main() -> ExitCode {
    #[cfg(feature = "procs")]
    concur_procs::init();
    #[cfg(feature = "redis")]
    concur_redis::init();
    let outcome = run();
    #[cfg(feature = "redis")]
    redis::stop();
    match outcome {
        Ok(()) => ExitCode::from(exit::OK),
        Err(e) => e.report(),
    }
}

/// Parse, validate into a config, act.
fn run() -> CliResult<()> {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return clap_outcome(&e),
    };
    match cli.command {
        Command::Backends(_) => list::run(),
        Command::Demo(args) => {
            let config = DemoConfig::new(args)?;
            warn_oversubscribed(config.workers);
            demo::run(config)
        }
        Command::Bench(args) => {
            let config = BenchConfig::new(args)?;
            warn_oversubscribed(config.workers);
            bench::run(config)
        }
        Command::Internal(args) => crash::internal(args.job),
        Command::Worker(args) => worker(&args),
    }
}

/// Warns (and goes on) when a pool gets more workers than there are cores.
fn warn_oversubscribed(workers: usize) {
    if let Some(w) = config::oversubscribed(workers) {
        exit::warn(&w);
    }
}

/// `concur worker`: serves a Redis queue until stopped.
#[cfg(feature = "redis")]
fn worker(args: &cli::WorkerArgs) -> CliResult<()> {
    concur_redis::Worker::builder(&args.redis)
        .queue(&args.queue)
        .run()
        .map(|_| ())
        .map_err(|e| exit::CliError::runtime("the worker stopped", e))
}

/// `concur worker` needs the `redis` backend.
#[cfg(not(feature = "redis"))]
fn worker(_args: &cli::WorkerArgs) -> CliResult<()> {
    Err(exit::CliError::usage(
        "`concur worker` needs the redis backend, which is not compiled into this binary; \
         rebuild with `--features redis`",
    ))
}

/// Help and version are printed as clap renders them; everything else is a
/// one-line usage error.
fn clap_outcome(e: &clap::Error) -> CliResult<()> {
    match e.kind() {
        ClapErrorKind::DisplayHelp | ClapErrorKind::DisplayVersion => e
            .print()
            .map_err(|err| exit::CliError::io("writing help", err)),
        ClapErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => Err(exit::CliError::usage(
            "a command is required: backends, demo or bench; see `concur --help`",
        )),
        _ => Err(exit::from_clap(e)),
    }
}
