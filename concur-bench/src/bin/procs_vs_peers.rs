//! concur-procs against its peers, in one process and one run:
//! `cargo run --release -p concur-bench --bin procs_vs_peers`
//! (`ROUNDS=n` sets the rounds per figure, default 5).
//!
//! 1. one task in flight, no-op round trip vs a raw ipc-channel 64-byte
//!    ping-pong between two processes (target: concur <= 1.3x raw);
//! 2. a burst of 10k no-op tasks, submit all then join all, 2 workers: vs
//!    procspawn's `Pool` (target: >= 6x its throughput) and vs a raw
//!    pipelined ipc-channel request/reply loop with 2 echo processes
//!    (target: <= 2x its time); `BURST_ONLY=1` runs only this;
//! 3. `map` over 1M tiny tasks: us per task, amortized (target <= 0.5 us);
//! 4. a pool of 2 workers ready vs procspawn `Pool::new(2)` (target <= 0.5x),
//!    workers forked by the fork server (the default after `init()`), and
//!    exec'd (`SpawnMode::Exec`) for comparison; then a crashed worker
//!    replaced (from its task's error, and from its death, to the next
//!    task's answer from the replacement) vs one exec of this binary that
//!    exits at once (target <= 0.5x), forked and exec'd; `START_ONLY=1`
//!    runs only these rows (with `ONLY=word`, only those whose name holds
//!    it);
//! 5. a CPU-bound job in 16 chunks: speedup of 2 workers over 1 (target >= 1.8x).

use concur_bench::tasks::{Noop, Spin};
use concur_bench::{header, hello, interleaved, median, rounds, time, wanted, Comparison, Helper};
use concur_core::prelude::*;
use concur_procs::{ProcessPool, SpawnMode};
use ipc_channel::ipc::{self, IpcBytesReceiver, IpcBytesSender, IpcSender};
use std::time::Duration;

fn procspawn_noop(x: u64) -> u64 {
    x
}

const ECHO_ROLE: &str = "CONCUR_BENCH_ECHO_SERVER";

/// What the echo process sends at start: where to send messages, and where
/// to send the channel for their echoes.
type EchoHello = (IpcBytesSender, IpcSender<IpcBytesSender>);

/// The raw peer's other process: echoes every message back.
fn echo_role(name: String) -> ! {
    let (c_tx, c_rx) = ipc::bytes_channel().expect("channel");
    let (reply_tx, reply_rx) = ipc::channel::<IpcBytesSender>().expect("channel");
    hello::<EchoHello>(name, (c_tx, reply_tx));
    let p_tx = reply_rx.recv().expect("parent sender");
    while let Ok(msg) = c_rx.recv() {
        if p_tx.send(&msg).is_err() {
            break;
        }
    }
    std::process::exit(0)
}

/// A raw ipc-channel ping-pong partner process.
struct Echo {
    _process: Helper,
    to: IpcBytesSender,
    from: IpcBytesReceiver,
}

impl Echo {
    fn start() -> Echo {
        let (process, (to, reply)) = Helper::start::<EchoHello>(ECHO_ROLE);
        let (p_tx, from) = ipc::bytes_channel().expect("channel");
        reply.send(p_tx).expect("send");
        Echo {
            _process: process,
            to,
            from,
        }
    }

    fn ping(&self, msg: &[u8]) {
        self.to.send(msg).expect("ping");
        let back = self.from.recv().expect("pong");
        assert_eq!(back.len(), msg.len());
    }
}

/// The raw pipelined anchor of the burst: `n` small requests sent back to
/// back, one message each, alternating over the echo processes in
/// `echoes`, while one reader thread per echo receives its replies (the
/// readers keep both directions moving, so nothing deadlocks however full
/// the sockets get).
fn raw_pipelined(echoes: &mut [Echo], n: u64) {
    let k = echoes.len() as u64;
    std::thread::scope(|s| {
        let mut tos = Vec::new();
        for (j, e) in echoes.iter_mut().enumerate() {
            let expect = (n + k - 1 - j as u64) / k;
            let from = &mut e.from;
            s.spawn(move || {
                for _ in 0..expect {
                    let back = from.recv().expect("reply");
                    assert_eq!(back.len(), 16);
                }
            });
            tos.push(&e.to);
        }
        for i in 0..n {
            let mut msg = [0u8; 16];
            msg[..8].copy_from_slice(&i.to_le_bytes());
            tos[(i % k) as usize].send(&msg).expect("request");
        }
    });
}

/// CPU time this process has used (every thread).
fn cpu_self() -> Duration {
    let u = concur_bench::self_usage();
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// CPU time the live threads of process `pid` have used (nanosecond
/// resolution: the first field of each thread's `schedstat`).
fn cpu_of(pid: u32) -> Duration {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Duration::ZERO;
    };
    let ns: u64 = tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    Duration::from_nanos(ns)
}

/// Row 2: a burst of 10k no-op tasks on 2 workers against procspawn's
/// pool and against the raw pipelined loop, all three interleaved in each
/// round.
fn burst(rounds: usize) {
    const N: u64 = 10_000;
    const PEER_WAVE: u64 = 2_000;
    let workers = 2;
    let pool = ProcessPool::builder()
        .workers(workers)
        .queue_bound(N as usize)
        .build()
        .expect("pool");
    let peer = procspawn::Pool::new(workers).expect("procspawn pool");
    let children = std::env::var("ANCHOR_CHILDREN")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(workers);
    let mut echoes: Vec<Echo> = (0..children).map(|_| Echo::start()).collect();
    let procspawn_burst = || {
        // procspawn holds 4 descriptors per queued task: 10k at once
        // exceed the descriptor limit here, so it gets waves of 2k.
        for wave in 0..N / PEER_WAVE {
            let hs: Vec<_> = (0..PEER_WAVE)
                .map(|i| peer.spawn(wave * PEER_WAVE + i, procspawn_noop))
                .collect();
            for h in hs {
                h.join().unwrap();
            }
        }
    };
    let concur_burst = || {
        let hs: Vec<_> = (0..N).map(|i| pool.submit(Noop(i)).unwrap()).collect();
        for (i, h) in hs.into_iter().enumerate() {
            assert_eq!(h.join().unwrap(), i as u64);
        }
    };
    let skip_procspawn = std::env::var_os("SKIP_PROCSPAWN").is_some();
    let (mut theirs, mut raw, mut ours) = (Vec::new(), Vec::new(), Vec::new());
    // CPU per task, which the load other programs put on the machine
    // changes less than the elapsed time: the parent's during concur's
    // bursts, and its workers' (which run nothing else).
    let workers_cpu = || -> Duration { pool.worker_pids().into_iter().flatten().map(cpu_of).sum() };
    let (mut parent_cpu, mut worker_cpu) = (Vec::new(), Vec::new());
    // The first round warms every side up and is not counted.
    for round in 0..=rounds {
        let t = if skip_procspawn {
            0.0
        } else {
            time(procspawn_burst).as_secs_f64()
        };
        let r = if echoes.is_empty() {
            0.0
        } else {
            time(|| raw_pipelined(&mut echoes, N)).as_secs_f64()
        };
        let (c0, w0) = (cpu_self(), workers_cpu());
        let o = time(concur_burst).as_secs_f64();
        if round > 0 {
            parent_cpu.push(cpu_self().saturating_sub(c0).as_secs_f64());
            worker_cpu.push(workers_cpu().saturating_sub(w0).as_secs_f64());
            theirs.push(t);
            raw.push(r);
            ours.push(o);
        }
    }
    let secs = Duration::from_secs_f64;
    let (theirs, raw, ours) = (
        secs(median(&mut theirs)),
        secs(median(&mut raw)),
        secs(median(&mut ours)),
    );
    Comparison::new("burst of 10k no-ops", "raw pipelined", raw, ours, 2.0).print(N, "us");
    if !skip_procspawn {
        Comparison::new("burst of 10k no-ops", "procspawn", theirs, ours, 1.0 / 6.0).print(N, "us");
    }
    println!(
        "{:<34} {:>10.3} us/task in the parent, {:.3} us/task in the workers",
        "  cpu",
        median(&mut parent_cpu) * 1e6 / N as f64,
        median(&mut worker_cpu) * 1e6 / N as f64
    );
    let speed = theirs.as_secs_f64() / ours.as_secs_f64();
    println!(
        "{:<34} {:>10.0} tasks/s vs {:.0} tasks/s: {:.1}x procspawn's throughput (target >= 6x)  {}",
        "  throughput",
        N as f64 / ours.as_secs_f64(),
        N as f64 / theirs.as_secs_f64(),
        speed,
        if speed >= 6.0 { "met" } else { "MISSED" }
    );
}

fn main() {
    if std::env::var_os(EXIT_ROLE).is_some() {
        return;
    }
    // Each peer's workers run the other's init first; both are a cheap
    // check of the environment outside their own workers.
    concur_procs::init();
    procspawn::init();
    if let Ok(name) = std::env::var(ECHO_ROLE) {
        echo_role(name);
    }
    let rounds = rounds(5);
    println!(
        "concur-procs vs peers ({} cores, {rounds} rounds, medians)",
        concur_core::default_workers()
    );
    header();
    if std::env::var_os("BURST_ONLY").is_some() {
        burst(rounds);
        return;
    }
    if std::env::var_os("START_ONLY").is_some() {
        start_up(rounds);
        return;
    }

    // 1. Round trip, one task in flight.
    {
        const N: u64 = 20_000;
        let echo = Echo::start();
        let pool = ProcessPool::builder().workers(1).build().expect("pool");
        let msg = [7u8; 64];
        let (raw, ours) = interleaved(
            rounds,
            || (0..N).for_each(|_| echo.ping(&msg)),
            || {
                for i in 0..N {
                    assert_eq!(pool.submit(Noop(i)).unwrap().join().unwrap(), i);
                }
            },
        );
        Comparison::new("round trip, 1 in flight", "raw ipc", raw, ours, 1.3).print(N, "us");
    }

    // 2. Burst of 10k no-op tasks.
    burst(rounds);

    // 3. map over 1M tiny tasks.
    {
        const N: u64 = 1_000_000;
        let pool = ProcessPool::builder().workers(2).build().expect("pool");
        let mut samples = Vec::new();
        for _ in 0..rounds {
            let d = time(|| {
                let sum: u64 = pool.map((0..N).map(Noop)).map(|r| r.unwrap()).sum();
                assert_eq!(sum, N * (N - 1) / 2);
            });
            samples.push(d.as_secs_f64());
        }
        let per = median(&mut samples) * 1e6 / N as f64;
        println!(
            "{:<34} {:>10.3} us/task  target <= 0.50 us  {}",
            "map over 1M tiny tasks",
            per,
            if per <= 0.5 { "met" } else { "MISSED" }
        );
    }

    // 4. Pool of 2 workers ready, then a crashed worker replaced.
    start_up(rounds);

    // 5. CPU-bound job in 16 chunks: 2 workers over 1.
    {
        let chunk = 40_000_000u64;
        let one = ProcessPool::builder().workers(1).build().expect("pool");
        let two = ProcessPool::builder().workers(2).build().expect("pool");
        let job = |p: &ProcessPool| {
            let hs: Vec<_> = (0..16).map(|_| p.submit(Spin(chunk)).unwrap()).collect();
            for h in hs {
                std::hint::black_box(h.join().unwrap());
            }
        };
        let (t1, t2) = interleaved(rounds.min(3), || job(&one), || job(&two));
        let speedup = t1.as_secs_f64() / t2.as_secs_f64();
        println!(
            "{:<34} {:>10.1} ms  vs {:.1} ms on 1 worker: speedup {:.2}x  target >= 1.80x  {}",
            "cpu job, 16 chunks, 2 workers",
            t2.as_secs_f64() * 1e3,
            t1.as_secs_f64() * 1e3,
            speedup,
            if speedup >= 1.8 { "met" } else { "MISSED" }
        );
    }
}

/// Makes this binary exit at once: the anchor of a worker's replacement is
/// one exec of it (loader, relocations, runtime start, exit).
const EXIT_ROLE: &str = "CONCUR_BENCH_EXIT_AT_ONCE";

/// Writes the time (`CLOCK_MONOTONIC`, the same clock in every process)
/// into the file named, then ends its worker by SIGKILL (no core dump, no
/// message): a crash whose moment the caller knows.
#[derive(serde::Serialize, serde::Deserialize)]
struct CrashNow(std::path::PathBuf);

impl Task for CrashNow {
    type Output = ();
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = "concur-bench::CrashNow";
    fn run(self, _cx: &mut TaskContext<'_, Self>) {
        std::fs::write(&self.0, monotonic_ns().to_le_bytes()).expect("time stamp");
        // SAFETY: raise takes a signal number; SIGKILL ends the process.
        unsafe { libc::raise(libc::SIGKILL) };
    }
}

/// Now on `CLOCK_MONOTONIC`, in nanoseconds.
fn monotonic_ns() -> u64 {
    concur_bench::clock(libc::CLOCK_MONOTONIC).as_nanos() as u64
}
concur_core::register!(CrashNow);

/// The median time to start a pool of 2 in `mode` and to start
/// `procspawn::Pool::new(2)`, interleaved (pools are kept until the figure
/// is measured: their shutdown is not timed).
fn pool_of_two(rounds: usize, mode: SpawnMode) -> (Duration, Duration) {
    let keep_theirs = std::cell::RefCell::new(Vec::new());
    let keep_ours = std::cell::RefCell::new(Vec::new());
    let r = interleaved(
        rounds,
        || {
            keep_theirs
                .borrow_mut()
                .push(procspawn::Pool::new(2).expect("procspawn pool"))
        },
        || {
            keep_ours.borrow_mut().push(
                ProcessPool::builder()
                    .workers(2)
                    .spawn_mode(mode)
                    .build()
                    .expect("pool"),
            )
        },
    );
    drop((keep_theirs, keep_ours));
    r
}

/// How long a crashed worker takes to be replaced in a pool of 1.
struct Replaced {
    /// One exec of this binary that exits at once (the anchor).
    exec: Duration,
    /// From the crash being reported (the task's error) to the answer of
    /// the next task, which only the replacement can give: as
    /// `concur bench`'s `crash` workload measures recovery.
    from_error: Duration,
    /// From the worker's death (stamped by its task) to that answer: also
    /// seeing the death and failing the task.
    from_death: Duration,
}

/// Medians of [`Replaced`] in a pool started in `mode`, measured
/// alternately after one warm-up each.
fn crash_replaced(rounds: usize, mode: SpawnMode) -> Replaced {
    let pool = ProcessPool::builder()
        .workers(1)
        .retries(0)
        .restart_limit(u32::MAX, Duration::from_secs(1))
        .spawn_mode(mode)
        .build()
        .expect("pool");
    let exe = std::env::current_exe().expect("exe");
    let exec = || {
        time(|| {
            let status = std::process::Command::new(&exe)
                .env(EXIT_ROLE, "1")
                .status()
                .expect("exec of this binary");
            assert!(status.success());
        })
        .as_secs_f64()
    };
    let stamp = std::env::temp_dir().join(format!("concur-bench-crash-{}", std::process::id()));
    let replaced = || {
        let e = pool
            .submit(CrashNow(stamp.clone()))
            .unwrap()
            .join()
            .unwrap_err();
        assert!(
            matches!(e.kind(), concur_core::ErrorKind::WorkerLost(_)),
            "{e:?}"
        );
        let reported = monotonic_ns();
        assert_eq!(pool.submit(Noop(1)).unwrap().join().unwrap(), 1);
        let answered = monotonic_ns();
        let died = std::fs::read(&stamp).expect("time stamp");
        let died = u64::from_le_bytes(died.try_into().expect("8 bytes"));
        (
            (answered - reported) as f64 * 1e-9,
            (answered - died) as f64 * 1e-9,
        )
    };
    exec();
    replaced();
    let (mut theirs, mut error, mut death) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        theirs.push(exec());
        let (e, d) = replaced();
        error.push(e);
        death.push(d);
    }
    let _ = std::fs::remove_file(&stamp);
    let med = |v: &mut Vec<f64>| Duration::from_secs_f64(median(v));
    Replaced {
        exec: med(&mut theirs),
        from_error: med(&mut error),
        from_death: med(&mut death),
    }
}

/// Row 4: a pool of 2 workers ready, then a crashed worker replaced: forked
/// by the fork server (what `init()` set up), and exec'd.
fn start_up(rounds: usize) {
    // A few milliseconds each: more rounds than the rest, for steadier
    // medians on a shared machine.
    let many = rounds * 4;
    // `ONLY=word` (see `wanted`): `ONLY=crashed` runs the forked crash
    // replacement alone, for runs of many binaries in turn.
    if wanted("pool of 2 ready") {
        let (theirs, ours) = pool_of_two(many, SpawnMode::Auto);
        Comparison::new("pool of 2 ready", "procspawn", theirs, ours, 0.5).print(1, "us");
    }
    if wanted("pool of 2 ready, exec") {
        let (theirs, ours) = pool_of_two(many, SpawnMode::Exec);
        Comparison::new("pool of 2 ready, exec", "procspawn", theirs, ours, 0.5).print(1, "us");
    }
    for (mode, what) in [
        (SpawnMode::Auto, "crashed worker replaced"),
        (SpawnMode::Exec, "crash replaced, exec"),
    ] {
        if !wanted(what) {
            continue;
        }
        let r = crash_replaced(many, mode);
        Comparison::new(what, "1 exec", r.exec, r.from_error, 0.5).print(1, "us");
        println!(
            "{:<34} {:>10.3} us     from the death, not only the error: {:.2}x",
            "  from the death",
            r.from_death.as_secs_f64() * 1e6,
            r.from_death.as_secs_f64() / r.exec.as_secs_f64()
        );
    }
}
