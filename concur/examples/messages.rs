//! A task streams progress messages to its caller while it runs; the caller
//! prints each one, then the result. Runs on the backend `CONCUR_BACKEND`
//! names (threads by default): `CONCUR_BACKEND=procs cargo run -p concur --example messages`.
use concur::prelude::*;
use serde::{Deserialize, Serialize};

/// Sums `0..n` in ten steps, telling the caller how far it got after each.
#[derive(Serialize, Deserialize)]
struct SumTo {
    n: u64,
}

impl Task for SumTo {
    type Output = u64;
    type ToCaller = u32; // percent done
    type FromCaller = ();
    const NAME: &'static str = "examples::messages::SumTo";

    fn run(self, cx: &mut TaskContext<'_, Self>) -> u64 {
        let step = self.n.div_ceil(10);
        let mut sum = 0;
        for (done, start) in (0..self.n).step_by(step as usize).enumerate() {
            sum += (start..(start + step).min(self.n)).sum::<u64>();
            // A caller that stopped listening is no reason to stop working.
            let _ = cx.send(10 * (done as u32 + 1));
        }
        sum
    }
}
concur::register!(SumTo);

fn main() -> Result<(), TaskError> {
    concur::init();
    let pool = Pool::new()?;
    println!("backend: {}", pool.backend());
    let handle = pool.submit(SumTo { n: 1_000_000 })?;
    // `recv` yields each message in order, then `None` once the task is done.
    while let Some(percent) = handle.recv() {
        println!("progress: {percent}%");
    }
    println!("result: {}", handle.join()?);
    Ok(())
}
