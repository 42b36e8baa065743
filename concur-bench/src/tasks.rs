//! The tasks the benchmarks run, registered once for every bench binary.

use std::time::{Duration, Instant};

use concur_core::{Task, TaskContext};
use serde::{Deserialize, Serialize};

/// The no-op task: returns its number.
#[derive(Serialize, Deserialize)]
pub struct Noop(pub u64);

impl Task for Noop {
    type Output = u64;
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = "concur-bench::Noop";
    fn run(self, _cx: &mut TaskContext<'_, Self>) -> u64 {
        self.0
    }
}

/// A trivial map item: one round of [`mix`].
#[derive(Serialize, Deserialize)]
pub struct Mix(pub u64);

impl Task for Mix {
    type Output = u64;
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = "concur-bench::Mix";
    fn run(self, _cx: &mut TaskContext<'_, Self>) -> u64 {
        mix(self.0)
    }
}

/// A CPU-bound chunk: `rounds` of [`mix`].
#[derive(Serialize, Deserialize)]
pub struct Spin(pub u64);

impl Task for Spin {
    type Output = u64;
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = "concur-bench::Spin";
    fn run(self, _cx: &mut TaskContext<'_, Self>) -> u64 {
        spin(self.0)
    }
}

concur_core::register!(Noop, Mix, Spin);

/// A cheap mixing function (a multiply, a rotate, a xor).
pub fn mix(x: u64) -> u64 {
    x.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17) ^ x
}

/// `rounds` of [`mix`], not optimised away.
pub fn spin(rounds: u64) -> u64 {
    let mut x = rounds;
    for i in 0..rounds {
        x = std::hint::black_box(mix(x) ^ i);
    }
    x
}

/// Rounds of [`spin`] that take about `d` on this machine: doubles a probe
/// until it takes at least 5 ms (long enough to time), then scales.
pub fn spin_rounds_for(d: Duration) -> u64 {
    let mut rounds: u64 = 1 << 12;
    loop {
        let t = Instant::now();
        std::hint::black_box(spin(std::hint::black_box(rounds)));
        let took = t.elapsed();
        if took >= Duration::from_millis(5) || rounds >= 1 << 40 {
            let scale = d.as_secs_f64() / took.as_secs_f64().max(1e-9);
            return ((rounds as f64 * scale) as u64).max(1);
        }
        rounds *= 2;
    }
}
