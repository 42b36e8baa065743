//! The measurements: each workload, generic over the backend's pool type.
//!
//! Every figure is taken `samples` times; the report keeps every sample and
//! its median. Pools are built outside the timed region unless building them
//! is what is measured (`startup`).

use std::time::{Duration, Instant};

use concur_core::{ErrorKind, Executor, ExecutorExt};
use serde::Serialize;

use super::workload::Workload;
use crate::backend::{Backend, PoolKind, Visit};
use crate::crash;
use crate::exit::{BoxError, Problem};
use crate::tasks::{self, Abort, Block, Bytes, Echo, EchoShared, Noop, Spin, Stream};

/// The sizes of every workload, fixed before the first measurement (and
/// written into the JSON report as `settings.plan`).
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// Workers per pool.
    pub workers: usize,
    /// Samples per figure.
    pub samples: usize,
    /// Sequential round trips per `dispatch` sample.
    pub round_trips: usize,
    /// Tasks in a `dispatch` burst.
    pub burst: usize,
    /// Rounds of [`Spin`] per `cpu` task (calibrated on this machine).
    pub spin_rounds: u64,
    /// How long one `cpu` task is meant to take (what calibration aimed at), in ms.
    #[serde(serialize_with = "super::format::serialize_rounded")]
    pub spin_ms: f64,
    /// How long each `io` task blocks, in ms.
    pub block_ms: u64,
    /// `payload` sizes in bytes: small, large.
    pub payloads: [usize; 2],
    /// Messages a `messages` task streams.
    pub messages: u64,
    /// Well-behaved tasks running beside the aborting one in `crash`.
    pub crash_others: usize,
    /// How long each of those blocks, in ms.
    pub crash_block_ms: u64,
    /// The longest any single wait may take before the run fails.
    #[serde(skip)]
    pub deadline: Duration,
}

/// One MiB.
pub const MIB: usize = 1 << 20;

impl Plan {
    /// The plan for `workers` workers; `quick` for fewer, shorter samples.
    /// Calibrates the CPU task on this machine (takes a few milliseconds).
    pub fn new(workers: usize, quick: bool) -> Self {
        let spin_target = Duration::from_millis(if quick { 10 } else { 40 });
        let (spin_rounds, spin_ms) = calibrate_spin(spin_target);
        Self {
            workers,
            samples: if quick { 3 } else { 7 },
            round_trips: if quick { 50 } else { 500 },
            burst: if quick { 2_000 } else { 50_000 },
            spin_rounds,
            spin_ms,
            block_ms: if quick { 10 } else { 20 },
            payloads: [MIB, 64 * MIB],
            messages: 10_000,
            crash_others: 4 * workers,
            crash_block_ms: if quick { 5 } else { 20 },
            deadline: Duration::from_secs(60),
        }
    }

    /// Tasks per `cpu` and `io` sample: enough to give each worker four.
    pub fn tasks(&self) -> usize {
        4 * self.workers
    }
}

/// Finds how many [`Spin`] rounds take about `target` here.
fn calibrate_spin(target: Duration) -> (u64, f64) {
    let mut rounds: u64 = 1 << 12;
    loop {
        let t = Instant::now();
        std::hint::black_box(Spin::compute(rounds));
        let took = t.elapsed();
        if took >= Duration::from_millis(5) || rounds >= 1 << 40 {
            let scale = target.as_secs_f64() / took.as_secs_f64().max(1e-9);
            let rounds = ((rounds as f64 * scale) as u64).max(1);
            return (rounds, target.as_secs_f64() * 1e3);
        }
        rounds *= 2;
    }
}

/// The samples of one workload on one backend, per metric name (the report
/// orders them as [`Workload::metrics`] declares), and a note on what happened.
#[derive(Debug, Default)]
pub struct Measured {
    /// Samples per metric (a metric that does not apply has none).
    pub samples: Vec<(&'static str, Vec<f64>)>,
    /// What happened, when the figures alone do not say it.
    pub note: Option<String>,
}

impl Measured {
    fn push(&mut self, metric: &'static str, value: f64) {
        match self.samples.iter_mut().find(|(m, _)| *m == metric) {
            Some((_, v)) => v.push(value),
            None => self.samples.push((metric, vec![value])),
        }
    }
}

/// What [`measure`] calls after each sample: it counts progress, and an
/// error from it stops the measurement (with that error) before the next
/// sample, every pool shut down and every worker reaped on the way out.
pub type Tick<'a> = dyn Fn() -> Result<(), BoxError> + 'a;

/// Runs `workload` on `backend` according to `plan`, calling `tick` after
/// each sample.
///
/// # Errors
/// Whatever stopped the measurement: a pool that did not start, a task that
/// failed, a wait that passed the plan's deadline, or `tick`'s error.
pub fn measure(
    workload: Workload,
    backend: Backend,
    plan: &Plan,
    tick: &Tick<'_>,
) -> Result<Measured, BoxError> {
    struct Run<'a> {
        workload: Workload,
        plan: &'a Plan,
        tick: &'a Tick<'a>,
    }
    impl Visit for Run<'_> {
        type Output = Result<Measured, BoxError>;
        fn visit<K: PoolKind>(self, backend: Backend) -> Self::Output {
            let Run {
                workload,
                plan,
                tick,
            } = self;
            match workload {
                Workload::Startup => startup::<K>(plan, tick),
                Workload::Dispatch => dispatch::<K>(plan, tick),
                Workload::Cpu => cpu::<K>(plan, tick),
                Workload::Io => io::<K>(plan, tick),
                Workload::Payload => payload::<K>(plan, tick),
                Workload::Messages => messages::<K>(plan, tick),
                Workload::Crash => crash::<K>(backend, plan, tick),
            }
        }
    }
    backend.visit(Run {
        workload,
        plan,
        tick,
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Builds a pool and waits until every worker has answered, so that no
/// measurement includes worker start-up.
fn ready_pool<K: PoolKind>(workers: usize, plan: &Plan) -> Result<K::Pool, BoxError> {
    let pool = K::build(workers)?;
    tasks::rendezvous(&pool, workers, 0, plan.deadline, |_| {})?;
    Ok(pool)
}

fn startup<K: PoolKind>(plan: &Plan, tick: &Tick<'_>) -> Result<Measured, BoxError> {
    let mut m = Measured::default();
    for _ in 0..plan.samples {
        let t = Instant::now();
        let pool = K::build(plan.workers)?;
        tasks::rendezvous(&pool, plan.workers, 0, plan.deadline, |_| {})?;
        m.push("ready_ms", ms(t.elapsed()));
        let t = Instant::now();
        pool.shutdown()?;
        drop(pool);
        m.push("shutdown_ms", ms(t.elapsed()));
        tick()?;
    }
    Ok(m)
}

fn dispatch<K: PoolKind>(plan: &Plan, tick: &Tick<'_>) -> Result<Measured, BoxError> {
    let pool = ready_pool::<K>(plan.workers, plan)?;
    for _ in 0..10 {
        pool.submit(Noop)?.join()?;
    }
    let mut m = Measured::default();
    for _ in 0..plan.samples {
        let t = Instant::now();
        for _ in 0..plan.round_trips {
            pool.submit(Noop)?.join()?;
        }
        m.push(
            "round_trip_us",
            t.elapsed().as_secs_f64() * 1e6 / plan.round_trips as f64,
        );

        let t = Instant::now();
        let done = pool
            .map((0..plan.burst).map(|_| Noop))
            .collect::<Result<Vec<()>, _>>()?
            .len();
        m.push("burst_tasks_per_s", done as f64 / t.elapsed().as_secs_f64());
        tick()?;
    }
    Ok(m)
}

/// Runs `n` CPU tasks on `pool`; the elapsed time.
fn spin_all<E: Executor>(pool: &E, n: usize, rounds: u64) -> Result<Duration, BoxError> {
    let t = Instant::now();
    let out = pool
        .map((0..n).map(|_| Spin { rounds }))
        .collect::<Result<Vec<u64>, _>>()?;
    let took = t.elapsed();
    // Same input, same output: anything else means a task did not really run.
    let expected = Spin::compute(rounds);
    if out.iter().any(|&x| x != expected) {
        return Err(Box::new(Problem(
            "a CPU task returned a wrong result".into(),
        )));
    }
    Ok(took)
}

fn cpu<K: PoolKind>(plan: &Plan, tick: &Tick<'_>) -> Result<Measured, BoxError> {
    let one = ready_pool::<K>(1, plan)?;
    let many = ready_pool::<K>(plan.workers, plan)?;
    let mut m = Measured::default();
    for _ in 0..plan.samples {
        let t1 = spin_all(&one, plan.tasks(), plan.spin_rounds)?;
        let tn = spin_all(&many, plan.tasks(), plan.spin_rounds)?;
        m.push("elapsed_ms", ms(tn));
        m.push("one_worker_ms", ms(t1));
        m.push("speedup", t1.as_secs_f64() / tn.as_secs_f64());
        tick()?;
    }
    Ok(m)
}

fn io<K: PoolKind>(plan: &Plan, tick: &Tick<'_>) -> Result<Measured, BoxError> {
    let pool = ready_pool::<K>(plan.workers, plan)?;
    let n = plan.tasks();
    let mut m = Measured::default();
    for _ in 0..plan.samples {
        let t = Instant::now();
        pool.map((0..n).map(|_| Block { ms: plan.block_ms }))
            .collect::<Result<Vec<()>, _>>()?;
        let took = t.elapsed();
        m.push("elapsed_ms", ms(took));
        m.push("overlap", (n as f64 * plan.block_ms as f64) / ms(took));
        tick()?;
    }
    Ok(m)
}

fn payload<K: PoolKind>(plan: &Plan, tick: &Tick<'_>) -> Result<Measured, BoxError> {
    let pool = ready_pool::<K>(plan.workers, plan)?;
    let metrics = ["round_trip_1mib_ms", "round_trip_64mib_ms"];
    let inputs: Vec<Vec<u8>> = plan
        .payloads
        .iter()
        .map(|&size| (0..size).map(|i| (i % 251) as u8).collect())
        .collect();
    let mut m = Measured::default();
    for _ in 0..plan.samples {
        for (input, metric) in inputs.iter().zip(metrics) {
            let size = input.len();
            let data = Bytes::from(input.clone());
            let t = Instant::now();
            let back = pool.submit(Echo { data })?.join()?;
            let took = t.elapsed();
            if back.len() != size
                || back.first() != Some(&1)
                || back.last() != Some(&(((size - 1) % 251) as u8))
            {
                return Err(Box::new(Problem(format!(
                    "the {size}-byte payload came back changed"
                ))));
            }
            m.push(metric, ms(took));
        }
        // The large payload again, as a SharedBytes: across processes its
        // region travels and is read in place, never encoded or copied.
        let input = &inputs[1];
        let size = input.len();
        let data = concur_core::SharedBytes::copy_from(input);
        let t = Instant::now();
        let (first, last, back) = pool.submit(EchoShared { data })?.join()?;
        let took = t.elapsed();
        let expected_last = ((size - 1) % 251) as u8;
        if back.len() != size || first != 0 || last != expected_last || back[size - 1] != last {
            return Err(Box::new(Problem(format!(
                "the {size}-byte SharedBytes came back changed"
            ))));
        }
        m.push("round_trip_64mib_shared_ms", ms(took));
        tick()?;
    }
    Ok(m)
}

fn messages<K: PoolKind>(plan: &Plan, tick: &Tick<'_>) -> Result<Measured, BoxError> {
    let pool = ready_pool::<K>(plan.workers, plan)?;
    let mut m = Measured::default();
    for _ in 0..plan.samples {
        let end = Instant::now() + plan.deadline;
        let t = Instant::now();
        let h = pool.submit(Stream {
            count: plan.messages,
        })?;
        let mut next = 0;
        while let Some(i) = h.recv_timeout(end.saturating_duration_since(Instant::now())) {
            if i != next {
                return Err(Box::new(Problem(format!("message {next} arrived as {i}"))));
            }
            next += 1;
        }
        if !h.is_finished() {
            return Err(Box::new(Problem(format!(
                "the message stream stalled after {next} messages"
            ))));
        }
        let sent = h.join()?;
        let took = t.elapsed();
        if next != sent || sent != plan.messages {
            return Err(Box::new(Problem(format!(
                "{next} of {} messages arrived",
                plan.messages
            ))));
        }
        m.push("messages_per_s", sent as f64 / took.as_secs_f64());
        m.push("elapsed_ms", ms(took));
        tick()?;
    }
    Ok(m)
}

fn crash<K: PoolKind>(
    backend: Backend,
    plan: &Plan,
    tick: &Tick<'_>,
) -> Result<Measured, BoxError> {
    let pool = ready_pool::<K>(plan.workers, plan)?;
    let caps = pool.capabilities();
    // An abort in a backend that shares this process's memory would end
    // this process: run that experiment in a child process instead.
    if caps.shared_memory || !caps.isolates_crashes {
        drop(pool);
        return crash_in_child(backend, plan, tick);
    }
    let mut m = Measured::default();
    let mut lost = None;
    let mut first = Some(pool);
    for _ in 0..plan.samples {
        // A fresh pool per sample: samples stay independent, and no pool
        // nears its restart limit (crashes per time window).
        let pool = match first.take() {
            Some(pool) => pool,
            None => ready_pool::<K>(plan.workers, plan)?,
        };
        // Time from the crash being reported to every worker answering again.
        let err = match pool.submit(Abort)?.join() {
            Ok(()) => return Err(Box::new(Problem("the aborting task returned".into()))),
            Err(e) => e,
        };
        let t = Instant::now();
        tasks::until_whole(&pool, plan.workers, plan.deadline)?;
        m.push("recovery_ms", ms(t.elapsed()));
        lost.get_or_insert(err);

        // Proof: tasks running beside the crash all finish.
        let abort = pool.submit(Abort)?;
        let others = (0..plan.crash_others)
            .map(|_| {
                pool.submit(Block {
                    ms: plan.crash_block_ms,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let finished = others
            .into_iter()
            .map(|h| h.join())
            .filter(Result::is_ok)
            .count();
        let _ = abort.join();
        m.push(
            "others_finished_pct",
            100.0 * finished as f64 / plan.crash_others as f64,
        );
        // Still whole after that?
        let whole = tasks::until_whole(&pool, plan.workers, plan.deadline).is_ok();
        m.push("survived", if whole { 1.0 } else { 0.0 });
        tick()?;
    }
    let cause = lost.map_or_else(String::new, |e| match e.kind() {
        ErrorKind::WorkerLost(exit) => format!(" (worker {exit})"),
        _ => format!(" ({e})"),
    });
    m.note = Some(format!(
        "the aborting task failed alone{cause}; this process and its pool went on"
    ));
    Ok(m)
}

fn crash_in_child(backend: Backend, plan: &Plan, tick: &Tick<'_>) -> Result<Measured, BoxError> {
    let mut m = Measured::default();
    let mut last = None;
    for _ in 0..plan.samples {
        let outcome = crash::run_child(
            backend,
            plan.workers,
            plan.crash_others,
            plan.crash_block_ms,
            plan.deadline,
        )?;
        m.push("survived", if outcome.survived { 1.0 } else { 0.0 });
        m.push(
            "others_finished_pct",
            100.0 * outcome.others_finished as f64 / plan.crash_others as f64,
        );
        last = Some(outcome);
        tick()?;
    }
    if let Some(o) = last {
        m.note = Some(if o.survived {
            format!(
                "the process survived the abort; {} of {} other tasks finished",
                o.others_finished, plan.crash_others
            )
        } else {
            format!(
                "the whole process died, {}; {} of {} other tasks finished",
                o.exit, o.others_finished, plan.crash_others
            )
        });
    }
    Ok(m)
}
