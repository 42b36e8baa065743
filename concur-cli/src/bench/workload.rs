//! The workloads and the figures each one reports.

use serde::Serialize;

/// One workload of `concur bench`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Workload {
    /// A new pool until every worker has answered.
    Startup,
    /// No-op tasks: one round trip at a time, and a burst through `map`.
    Dispatch,
    /// CPU-bound tasks on N workers and on one.
    Cpu,
    /// Tasks that block their worker without using the CPU.
    Io,
    /// 1 MiB and 64 MiB to a task and back.
    Payload,
    /// One task streaming 10,000 messages to its caller.
    Messages,
    /// A task that aborts its process.
    Crash,
}

/// Whether a smaller or a larger figure is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Better {
    /// Smaller is better (times).
    Lower,
    /// Larger is better (throughput, speedup, survival).
    Higher,
}

/// A figure a workload reports.
#[derive(Debug, Clone, Copy)]
pub struct MetricSpec {
    /// Key in JSON and CSV.
    pub name: &'static str,
    /// Label in the table.
    pub label: &'static str,
    /// Unit of the figure.
    pub unit: &'static str,
    /// Which direction is better.
    pub better: Better,
}

const fn metric(
    name: &'static str,
    label: &'static str,
    unit: &'static str,
    better: Better,
) -> MetricSpec {
    MetricSpec {
        name,
        label,
        unit,
        better,
    }
}

use Better::{Higher, Lower};

const STARTUP: &[MetricSpec] = &[
    metric("ready_ms", "ready", "ms", Lower),
    metric("shutdown_ms", "shutdown", "ms", Lower),
];
const DISPATCH: &[MetricSpec] = &[
    metric("round_trip_us", "round trip", "µs", Lower),
    metric("burst_tasks_per_s", "burst", "tasks/s", Higher),
];
const CPU: &[MetricSpec] = &[
    metric("elapsed_ms", "elapsed, N workers", "ms", Lower),
    metric("one_worker_ms", "elapsed, 1 worker", "ms", Lower),
    metric("speedup", "speedup, N over 1 worker", "×", Higher),
];
const IO: &[MetricSpec] = &[
    metric("elapsed_ms", "elapsed", "ms", Lower),
    metric("overlap", "overlap", "×", Higher),
];
const PAYLOAD: &[MetricSpec] = &[
    metric("round_trip_64mib_ms", "64 MiB round trip", "ms", Lower),
    metric("round_trip_1mib_ms", "1 MiB round trip", "ms", Lower),
    metric(
        "round_trip_64mib_shared_ms",
        "64 MiB round trip, SharedBytes",
        "ms",
        Lower,
    ),
];
const MESSAGES: &[MetricSpec] = &[
    metric("messages_per_s", "throughput", "msg/s", Higher),
    metric("elapsed_ms", "10k messages", "ms", Lower),
];
const CRASH: &[MetricSpec] = &[
    metric("survived", "caller survived", "0/1", Higher),
    metric("others_finished_pct", "other tasks finished", "%", Higher),
    metric("recovery_ms", "pool whole again", "ms", Lower),
];

impl Workload {
    /// Every workload, in the order they run and are reported.
    pub const ALL: &'static [Workload] = &[
        Workload::Startup,
        Workload::Dispatch,
        Workload::Cpu,
        Workload::Io,
        Workload::Payload,
        Workload::Messages,
        Workload::Crash,
    ];

    /// The name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Startup => "startup",
            Workload::Dispatch => "dispatch",
            Workload::Cpu => "cpu",
            Workload::Io => "io",
            Workload::Payload => "payload",
            Workload::Messages => "messages",
            Workload::Crash => "crash",
        }
    }

    /// What the workload does, in one sentence.
    pub fn description(self) -> &'static str {
        match self {
            Workload::Startup => {
                "build a pool and wait until every worker has answered; then shut it down"
            }
            Workload::Dispatch => {
                "no-op tasks: submit and join one at a time, then a burst through map"
            }
            Workload::Cpu => "CPU-bound tasks (4 per worker) on N workers and on one worker",
            Workload::Io => "tasks that block their worker without using the CPU (4 per worker)",
            Workload::Payload => "send 1 MiB and 64 MiB to a task and get them back",
            Workload::Messages => "one task streams 10,000 messages to its caller",
            Workload::Crash => "a task aborts its process while other tasks run",
        }
    }

    /// The figures reported, the headline first (the one compared in the
    /// chart and the recommendation).
    pub fn metrics(self) -> &'static [MetricSpec] {
        match self {
            Workload::Startup => STARTUP,
            Workload::Dispatch => DISPATCH,
            Workload::Cpu => CPU,
            Workload::Io => IO,
            Workload::Payload => PAYLOAD,
            Workload::Messages => MESSAGES,
            Workload::Crash => CRASH,
        }
    }
}
