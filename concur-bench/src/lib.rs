//! Helpers for concur's peer benchmarks: run each contender several times,
//! interleaved, in the same process, and print medians side by side with
//! their ratio against the peer (the anchor) and the target.
//!
//! ```
//! use concur_bench::{median, Comparison};
//! use std::time::Duration;
//! let c = Comparison::new("no-op", "rayon", Duration::from_micros(10), Duration::from_micros(11), 1.2);
//! assert!((c.ratio() - 1.1).abs() < 1e-9);
//! assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
//! ```

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use ipc_channel::ipc::{IpcOneShotServer, IpcSender};
use serde::de::DeserializeOwned;
use serde::Serialize;

pub mod tasks;

/// Rounds per figure: `ROUNDS` from the environment, else `default`.
pub fn rounds(default: usize) -> usize {
    std::env::var("ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// The median of `samples` (sorts them).
pub fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    let n = samples.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        samples[n / 2]
    } else {
        (samples[n / 2 - 1] + samples[n / 2]) / 2.0
    }
}

/// Times `f` once.
pub fn time(f: impl FnOnce()) -> Duration {
    let t = Instant::now();
    f();
    t.elapsed()
}

/// True when the row `what` should run: `ONLY` is unset or a part of its
/// name (`ONLY=crashed` runs the rows whose name holds "crashed").
pub fn wanted(what: &str) -> bool {
    std::env::var("ONLY").map_or(true, |only| what.contains(&only))
}

/// The time on clock `id` (`libc::CLOCK_MONOTONIC`,
/// `libc::CLOCK_THREAD_CPUTIME_ID`, ...).
pub fn clock(id: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the call's duration.
    let rc = unsafe { libc::clock_gettime(id, &mut ts) };
    assert_eq!(rc, 0, "clock {id} is not available");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// This process's resource usage so far (`getrusage(RUSAGE_SELF)`).
pub fn self_usage() -> libc::rusage {
    // SAFETY: `getrusage` writes the struct it is given and nothing else.
    unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u
    }
}

/// Runs `peer` and `ours` alternately `rounds` times (after one warm-up
/// each) and returns their median durations.
pub fn interleaved(
    rounds: usize,
    mut peer: impl FnMut(),
    mut ours: impl FnMut(),
) -> (Duration, Duration) {
    peer();
    ours();
    let mut p = Vec::with_capacity(rounds);
    let mut o = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        p.push(time(&mut peer).as_secs_f64());
        o.push(time(&mut ours).as_secs_f64());
    }
    (
        Duration::from_secs_f64(median(&mut p)),
        Duration::from_secs_f64(median(&mut o)),
    )
}

/// One line of a benchmark report: concur against its anchor.
#[derive(Debug, Clone)]
pub struct Comparison {
    /// What was measured.
    pub what: String,
    /// The anchor's name.
    pub peer: String,
    /// The anchor's median.
    pub peer_time: Duration,
    /// concur's median.
    pub ours: Duration,
    /// The target for `ours / peer_time` (lower is better).
    pub target: f64,
}

impl Comparison {
    /// A comparison line.
    pub fn new(what: &str, peer: &str, peer_time: Duration, ours: Duration, target: f64) -> Self {
        Self {
            what: what.to_owned(),
            peer: peer.to_owned(),
            peer_time,
            ours,
            target,
        }
    }

    /// concur's time over the anchor's.
    pub fn ratio(&self) -> f64 {
        self.ours.as_secs_f64() / self.peer_time.as_secs_f64()
    }

    /// Prints the line: both figures, the ratio and whether the target holds.
    pub fn print(&self, per: u64, unit: &str) {
        let scale = |d: Duration| d.as_secs_f64() * 1e6 / per as f64;
        println!(
            "{:<34} {:>10.3} {unit:<6} {:>10.3} {unit:<6} {:>6.2}x  target <= {:.2}x  {}",
            format!("{} (vs {})", self.what, self.peer),
            scale(self.ours),
            scale(self.peer_time),
            self.ratio(),
            self.target,
            if self.ratio() <= self.target {
                "met"
            } else {
                "MISSED"
            }
        );
    }
}

/// Prints the table header used by [`Comparison::print`].
pub fn header() {
    println!(
        "{:<34} {:>17} {:>17} {:>7}",
        "benchmark", "concur", "anchor", "ratio"
    );
}

/// A helper process of a benchmark (its anchor's other side): this
/// executable started in a role. Killed and reaped when dropped.
#[derive(Debug)]
pub struct Helper(Child);

impl Helper {
    /// Starts this executable with the environment variable `role` set to
    /// the name of a one-shot ipc-channel server, and returns the process
    /// and the first message it sends there (with [`hello`]): typically
    /// the channels to reach it.
    pub fn start<H: Serialize + DeserializeOwned>(role: &str) -> (Helper, H) {
        let (server, name) = IpcOneShotServer::<H>::new().expect("one-shot server");
        let helper = Helper::spawn(
            Command::new(std::env::current_exe().expect("this executable")).env(role, name),
        );
        let (_, first) = server.accept().expect("the helper's hello");
        (helper, first)
    }

    /// Starts `command` as a helper (one that needs no [`hello`]).
    pub fn spawn(command: &mut Command) -> Helper {
        Helper(command.spawn().expect("helper process"))
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// In a process started by [`Helper::start`]: sends `first` to the server
/// named by the role's environment variable.
pub fn hello<H: Serialize + DeserializeOwned>(name: String, first: H) {
    let to: IpcSender<H> = IpcSender::connect(name).expect("connect to the parent");
    to.send(first).expect("hello");
}
