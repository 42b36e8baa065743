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
//! 4. a pool of 2 workers ready vs procspawn `Pool::new(2)` (target <= 0.5x);
//! 5. a CPU-bound job in 16 chunks: speedup of 2 workers over 1 (target >= 1.8x).

use concur_bench::tasks::{Noop, Spin};
use concur_bench::{header, interleaved, median, rounds, time, Comparison};
use concur_core::prelude::*;
use concur_procs::ProcessPool;
use ipc_channel::ipc::{self, IpcBytesReceiver, IpcBytesSender, IpcOneShotServer, IpcSender};
use std::time::Duration;

fn procspawn_noop(x: u64) -> u64 {
    x
}

const ECHO_ROLE: &str = "CONCUR_BENCH_ECHO_SERVER";

/// The raw peer's other process: echoes every message back.
fn echo_role(name: String) -> ! {
    let (c_tx, c_rx) = ipc::bytes_channel().expect("channel");
    let (reply_tx, reply_rx) = ipc::channel::<IpcBytesSender>().expect("channel");
    let hello: IpcSender<(IpcBytesSender, IpcSender<IpcBytesSender>)> =
        IpcSender::connect(name).expect("connect");
    hello.send((c_tx, reply_tx)).expect("hello");
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
    child: std::process::Child,
    to: IpcBytesSender,
    from: IpcBytesReceiver,
}

impl Echo {
    fn start() -> Echo {
        let (server, name) =
            IpcOneShotServer::<(IpcBytesSender, IpcSender<IpcBytesSender>)>::new().expect("server");
        let child = std::process::Command::new(std::env::current_exe().expect("exe"))
            .env(ECHO_ROLE, name)
            .spawn()
            .expect("echo process");
        let (_, (to, reply)) = server.accept().expect("accept");
        let (p_tx, from) = ipc::bytes_channel().expect("channel");
        reply.send(p_tx).expect("send");
        Echo { child, to, from }
    }

    fn ping(&self, msg: &[u8]) {
        self.to.send(msg).expect("ping");
        let back = self.from.recv().expect("pong");
        assert_eq!(back.len(), msg.len());
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
    // SAFETY: getrusage fills the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid pointer.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
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

    // 4. Pool of 2 workers ready (their shutdown is not timed: they are
    // kept until the figure is measured).
    {
        let keep_theirs = std::cell::RefCell::new(Vec::new());
        let keep_ours = std::cell::RefCell::new(Vec::new());
        let (theirs, ours) = interleaved(
            rounds,
            || {
                keep_theirs
                    .borrow_mut()
                    .push(procspawn::Pool::new(2).expect("procspawn pool"))
            },
            || {
                keep_ours
                    .borrow_mut()
                    .push(ProcessPool::builder().workers(2).build().expect("pool"))
            },
        );
        drop((keep_theirs, keep_ours));
        Comparison::new("pool of 2 ready", "procspawn", theirs, ours, 0.5).print(1, "us");
    }

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
