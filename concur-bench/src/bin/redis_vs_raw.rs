//! concur-redis against a minimal hand-written Redis Streams loop doing
//! the same work (`XADD` a task, a worker `XREADGROUP`s it, `XADD`s the
//! result and `XACK`s), in one process and one run:
//! `cargo run --release -p concur-bench --bin redis_vs_raw`
//! (`ROUNDS=n` rounds per figure, default 5; `REDIS_URL` to use a running
//! server, else this starts its own `redis-server` on a free port).
//!
//! 1. one task in flight, no-op round trip, one worker (target: concur
//!    <= 1.5x the raw loop);
//! 2. a burst of 10k no-op tasks on two workers (target: concur's
//!    throughput >= 0.7x the raw loop's, i.e. time <= 1.43x).

use std::process::{Command, Stdio};
use std::time::Duration;

use concur_bench::tasks::Noop;
use concur_bench::{header, interleaved, rounds, Comparison, Helper};
use concur_core::prelude::*;
use concur_redis::server::{LocalServer, ServerOptions};
use concur_redis::RedisPool;
use redis::Value;

const RAW_ROLE: &str = "CONCUR_BENCH_RAW_WORKER";
const RAW_TASKS: &str = "raw:tasks";
const RAW_RESULTS: &str = "raw:results";
const RAW_GROUP: &str = "g";

/// An `XREAD`/`XREADGROUP` reply: per stream, its entries (id, fields).
type ReadReply = Option<Vec<(String, Vec<(String, Vec<(String, Vec<u8>)>)>)>>;

fn connect(url: &str) -> redis::Connection {
    redis::Client::open(url)
        .expect("url")
        .get_connection_with_timeout(Duration::from_secs(5))
        .expect("a connection to the bench server")
}

/// The raw loop's worker process: read one entry, write its result and
/// acknowledge it, forever.
fn raw_worker(url: &str) -> ! {
    let mut c = connect(url);
    let me = format!("raw-{}", std::process::id());
    loop {
        let v: Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(RAW_GROUP)
            .arg(&me)
            .arg("COUNT")
            .arg(1)
            .arg("BLOCK")
            .arg(1000)
            .arg("STREAMS")
            .arg(RAW_TASKS)
            .arg(">")
            .query(&mut c)
            .unwrap_or_else(|_| std::process::exit(0));
        let Ok(Some(reply)) = redis::from_redis_value::<
            Option<Vec<(String, Vec<(String, Vec<(String, Vec<u8>)>)>)>>,
        >(v) else {
            continue;
        };
        for (_, entries) in reply {
            for (id, fields) in entries {
                let body = &fields[0].1;
                let _: () = redis::pipe()
                    .cmd("XADD")
                    .arg(RAW_RESULTS)
                    .arg("*")
                    .arg("r")
                    .arg(body)
                    .ignore()
                    .cmd("XACK")
                    .arg(RAW_TASKS)
                    .arg(RAW_GROUP)
                    .arg(&id)
                    .ignore()
                    .query(&mut c)
                    .unwrap_or_else(|_| std::process::exit(0));
            }
        }
    }
}

/// The raw loop's submitter side.
struct Raw {
    c: redis::Connection,
    last: String,
    _workers: Vec<Helper>,
}

impl Raw {
    fn start(url: &str, workers: usize) -> Raw {
        let mut c = connect(url);
        let _: Result<(), _> = redis::cmd("DEL")
            .arg(RAW_TASKS)
            .arg(RAW_RESULTS)
            .query(&mut c);
        let _: () = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(RAW_TASKS)
            .arg(RAW_GROUP)
            .arg("$")
            .arg("MKSTREAM")
            .query(&mut c)
            .expect("group");
        let workers = (0..workers)
            .map(|_| {
                Helper::spawn(
                    Command::new(std::env::current_exe().expect("exe"))
                        .env(RAW_ROLE, url)
                        .stdin(Stdio::null()),
                )
            })
            .collect();
        Raw {
            c,
            last: "0-0".into(),
            _workers: workers,
        }
    }

    /// Submits `n` tasks in one pipeline and waits for their `n` results.
    fn run(&mut self, n: u64) {
        let mut p = redis::pipe();
        for i in 0..n {
            p.cmd("XADD")
                .arg(RAW_TASKS)
                .arg("*")
                .arg("t")
                .arg(i.to_le_bytes().as_slice())
                .ignore();
        }
        let _: () = p.query(&mut self.c).expect("submit");
        let mut got = 0;
        while got < n {
            let v: Value = redis::cmd("XREAD")
                .arg("COUNT")
                .arg(1024)
                .arg("BLOCK")
                .arg(5000)
                .arg("STREAMS")
                .arg(RAW_RESULTS)
                .arg(&self.last)
                .query(&mut self.c)
                .expect("results");
            let reply: ReadReply = redis::from_redis_value(v).expect("reply");
            for (_, entries) in reply.expect("results within 5 s") {
                for (id, _) in entries {
                    self.last = id;
                    got += 1;
                }
            }
        }
    }
}

fn main() {
    concur_redis::init();
    if let Ok(url) = std::env::var(RAW_ROLE) {
        raw_worker(&url);
    }
    let server = match std::env::var("REDIS_URL") {
        Ok(url) => Err(url),
        Err(_) => Ok(LocalServer::start(ServerOptions::new()).expect("a bench redis-server")),
    };
    let url = match &server {
        Ok(s) => s.url(),
        Err(u) => u.clone(),
    };
    let rounds = rounds(5);
    println!(
        "concur-redis vs a raw Redis Streams loop ({} cores, {rounds} rounds, medians)",
        concur_core::default_workers()
    );
    header();

    // 1. Round trip, one task in flight, one worker.
    {
        const N: u64 = 2_000;
        let mut raw = Raw::start(&url, 1);
        let pool = RedisPool::builder(&url)
            .queue("bench-rt")
            .workers(1)
            .build()
            .expect("pool");
        let raw = std::cell::RefCell::new(&mut raw);
        let (theirs, ours) = interleaved(
            rounds,
            || (0..N).for_each(|_| raw.borrow_mut().run(1)),
            || {
                for i in 0..N {
                    assert_eq!(pool.submit(Noop(i)).unwrap().join().unwrap(), i);
                }
            },
        );
        Comparison::new("round trip, 1 in flight", "raw loop", theirs, ours, 1.5).print(N, "us");
    }

    // 2. Burst of 10k no-op tasks, two workers.
    {
        const N: u64 = 10_000;
        let mut raw = Raw::start(&url, 2);
        let pool = RedisPool::builder(&url)
            .queue("bench-burst")
            .workers(2)
            .queue_bound(N as usize)
            .build()
            .expect("pool");
        let raw = std::cell::RefCell::new(&mut raw);
        let (theirs, ours) = interleaved(
            rounds.min(3),
            || raw.borrow_mut().run(N),
            || {
                let hs: Vec<_> = (0..N).map(|i| pool.submit(Noop(i)).unwrap()).collect();
                for h in hs {
                    h.join().unwrap();
                }
            },
        );
        Comparison::new("burst of 10k no-ops", "raw loop", theirs, ours, 1.0 / 0.7).print(N, "us");
        println!(
            "{:<34} {:>10.0} tasks/s vs {:.0} tasks/s: {:.2}x the raw loop's throughput (target >= 0.7x)",
            "  throughput",
            N as f64 / ours.as_secs_f64(),
            N as f64 / theirs.as_secs_f64(),
            theirs.as_secs_f64() / ours.as_secs_f64()
        );
    }
}
