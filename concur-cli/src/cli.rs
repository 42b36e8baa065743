//! The raw command line: what clap parses, before any validation.
//!
//! One `Args` struct per subcommand. Values that need checking against what
//! this binary contains (backends compiled in, writable paths, worker
//! counts) are checked later, in [`crate::config`], so that every problem
//! gets one clear line and exit code 2 before anything runs.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::backend::BackendName;
use crate::exit::{self, exit_codes_help};

/// The `--version` text: the version and the backends compiled in.
fn long_version() -> &'static str {
    static TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TEXT.get_or_init(|| {
        let names: Vec<&str> = crate::backend::Backend::ALL
            .iter()
            .map(|b| b.name().as_str())
            .collect();
        format!(
            "{} (backends: {})",
            env!("CARGO_PKG_VERSION"),
            if names.is_empty() {
                "none".to_owned()
            } else {
                names.join(", ")
            }
        )
    })
}

/// Compare thread and process workers on this machine.
///
/// concur runs the same tasks on a pool of threads (one shared memory) and
/// on a pool of worker processes (each with its own memory), and measures
/// what each costs and what each survives.
#[derive(Debug, Parser)]
#[command(
    name = "concur",
    version = long_version(),
    long_version = long_version(),
    propagate_version = true,
    after_long_help = exit::HELP,
    after_help = exit::HELP,
    arg_required_else_help = true
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the backends compiled into this binary and what each can do.
    #[command(after_help = BACKENDS_HELP)]
    Backends(BackendsArgs),
    /// Start workers, show who runs where, and show how memory is shared.
    #[command(after_help = DEMO_HELP)]
    Demo(DemoArgs),
    /// Measure real workloads on each backend and compare them side by side.
    #[command(after_help = BENCH_HELP)]
    Bench(BenchArgs),
    /// Run a worker for the CLI's tasks on this machine, serving a Redis
    /// queue (feature `redis`); stops on SIGTERM or SIGINT.
    #[command(after_help = WORKER_HELP)]
    Worker(WorkerArgs),
    /// Internal: the binary re-runs itself with this (not for users).
    #[command(hide = true, name = "__internal")]
    Internal(InternalArgs),
}

const BACKENDS_HELP: &str = concat!(
    "Example:
  concur backends
  concur --version                    the version and the backends compiled in

",
    exit_codes_help!()
);

const DEMO_HELP: &str = concat!(
    "Examples:
  concur demo                         every backend compiled in, one worker per core
  concur demo --backend procs -w 4    four worker processes
  CONCUR_BACKEND=threads concur demo

",
    exit_codes_help!()
);

const BENCH_HELP: &str = concat!(
    "Examples:
  concur bench                                   every workload on every backend (under 2 minutes)
  concur bench --quick                           fewer, shorter samples (under 20 seconds)
  concur bench --workload cpu,io --backend threads
  concur bench --format json --out results.json  machine-readable report in a file
  concur bench --plot bench.svg                  also draw a bar chart

On standard output, a table or CSV prints each workload's rows as soon as it
is measured; closing the output (`| head`) ends the run. A column `B vs A
(>1 = B better)` compares each backend B with the first one A: above 1, B
took less time or did more per second than A.

The JSON report (schema concur-bench/1) holds the machine (os, arch, cores),
the settings, and per workload every metric with its unit, every sample and
the median per backend, and the recommendation. JSON and CSV figures are
rounded to 4 significant digits.

",
    exit_codes_help!()
);

const WORKER_HELP: &str = concat!(
    "Examples:
  concur worker --redis redis://broker:6379/0                  serve the queue `default`
  concur worker --redis redis://:PASSWORD@broker:6379/0 --queue jobs

",
    exit_codes_help!()
);

/// Arguments of `concur worker`.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// The Redis server: `redis://[:PASSWORD@]HOST[:PORT][/DB]`.
    #[arg(long, value_name = "URL", env = "CONCUR_REDIS_URL")]
    pub redis: String,
    /// The queue to serve.
    #[arg(long, value_name = "NAME", default_value = "default")]
    pub queue: String,
}

/// Arguments of `concur backends`.
#[derive(Debug, Args)]
pub struct BackendsArgs {}

/// Arguments shared by the commands that run pools.
#[derive(Debug, Args)]
#[command(next_help_heading = "Pool")]
pub struct PoolArgs {
    /// Workers per pool, 1 to 1024 [default: the cores available to this
    /// process]. More than the cores runs, with a warning on standard error.
    #[arg(short, long, value_name = "N", env = "CONCUR_WORKERS")]
    pub workers: Option<usize>,
    /// The Redis server of the `redis` backend [default: one this command starts].
    #[arg(long, value_name = "URL", env = "CONCUR_REDIS_URL")]
    pub redis: Option<String>,
}

/// Arguments of `concur demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Backend to run: one compiled in, or `all`.
    #[arg(
        short,
        long,
        value_name = "BACKEND",
        env = "CONCUR_BACKEND",
        default_value = "all",
        help_heading = "Pool"
    )]
    pub backend: BackendChoice,
    #[command(flatten)]
    pub pool: PoolArgs,
}

/// Arguments of `concur bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Backends to compare, comma-separated (or `all`).
    #[arg(
        short,
        long,
        value_name = "LIST",
        env = "CONCUR_BACKEND",
        value_delimiter = ',',
        default_value = "all",
        help_heading = "Pool"
    )]
    pub backend: Vec<BackendChoice>,
    #[command(flatten)]
    pub pool: PoolArgs,

    /// Workloads to run, comma-separated (or `all`).
    #[arg(
        short = 'l',
        long,
        value_name = "LIST",
        value_delimiter = ',',
        default_value = "all",
        help_heading = "Workloads"
    )]
    pub workload: Vec<WorkloadChoice>,
    /// Fewer and shorter samples: under 20 seconds instead of under 2 minutes.
    #[arg(short, long, help_heading = "Workloads")]
    pub quick: bool,

    /// Report format.
    #[arg(short, long, value_enum, default_value_t = Format::Table, help_heading = "Output")]
    pub format: Format,
    /// Write the report to FILE instead of standard output (whole, when the
    /// run ends; checked before anything runs, and named on standard error
    /// once written).
    #[arg(short, long, value_name = "FILE", help_heading = "Output")]
    pub out: Option<PathBuf>,
    /// Also draw an SVG bar chart of the results to FILE.svg.
    #[arg(short, long, value_name = "FILE.svg", help_heading = "Output")]
    pub plot: Option<PathBuf>,
}

/// A backend as written on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendChoice {
    /// A pool of threads in this process.
    Threads,
    /// A pool of worker processes.
    Procs,
    /// Workers anywhere, through a Redis server.
    Redis,
    /// Every backend compiled into this binary.
    All,
}

impl BackendChoice {
    /// The named backend, `None` for `all`.
    pub fn name(self) -> Option<BackendName> {
        match self {
            BackendChoice::Threads => Some(BackendName::Threads),
            BackendChoice::Procs => Some(BackendName::Procs),
            BackendChoice::Redis => Some(BackendName::Redis),
            BackendChoice::All => None,
        }
    }
}

/// A workload as written on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WorkloadChoice {
    /// Time until a new pool has every worker ready.
    Startup,
    /// No-op task round trip and burst throughput.
    Dispatch,
    /// CPU-bound tasks: time and speedup over one worker.
    Cpu,
    /// Tasks that block (sleep): do they overlap?
    Io,
    /// 1 MiB and 64 MiB sent to a task and back.
    Payload,
    /// A task streaming 10,000 messages to its caller.
    Messages,
    /// A task that aborts: does the pool survive, how soon is it whole again?
    Crash,
    /// Every workload.
    All,
}

/// How the report is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// A table for people, with a recommendation per workload.
    Table,
    /// One JSON document (schema concur-bench/1, see below).
    Json,
    /// One row per workload, metric and backend.
    Csv,
}

/// Arguments of the hidden `__internal` subcommand.
#[derive(Debug, Args)]
pub struct InternalArgs {
    /// What the re-run binary should do.
    #[command(subcommand)]
    pub job: InternalJob,
}

/// Jobs the binary runs when it re-runs itself.
#[derive(Debug, Subcommand)]
pub enum InternalJob {
    /// Run the crash experiment in this (child) process, which is expected
    /// to die: used for backends whose tasks share the caller's process.
    CrashChild {
        /// The backend to run it on.
        #[arg(long)]
        backend: BackendChoice,
        /// Workers in the pool.
        #[arg(long)]
        workers: usize,
        /// Well-behaved tasks submitted alongside the one that aborts.
        #[arg(long)]
        others: usize,
        /// How long each well-behaved task blocks, in milliseconds.
        #[arg(long)]
        sleep_ms: u64,
    },
}
