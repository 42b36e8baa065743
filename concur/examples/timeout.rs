//! A task over its deadline is stopped: on worker processes its worker is
//! killed (and replaced), and its handle fails with `TimedOut`.
use std::time::Duration;

use concur::prelude::*;
use serde::{Deserialize, Serialize};

/// Works for `seconds`, then returns them.
#[derive(Serialize, Deserialize)]
struct Work {
    seconds: u64,
}

impl Task for Work {
    type Output = u64;
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = "examples::timeout::Work";
    fn run(self, _cx: &mut TaskContext<'_, Self>) -> u64 {
        std::thread::sleep(Duration::from_secs(self.seconds));
        self.seconds
    }
}
concur::register!(Work);

fn main() -> Result<(), TaskError> {
    concur::init();
    let pool = Pool::builder()
        .backend(Backend::Procs)
        .workers(2)
        .task_timeout(Duration::from_secs(1))
        .build()?;
    let quick = pool.submit(Work { seconds: 0 })?;
    let stuck = pool.submit(Work { seconds: 3600 })?;
    println!("quick task: returned {}", quick.join()?);
    let err = stuck
        .join()
        .expect_err("an hour's work stops at the timeout");
    assert!(err.is_timeout(), "{err}");
    println!("stuck task: stopped ({err})");
    // The killed worker was replaced: the pool takes work as before.
    println!(
        "after the timeout: returned {}",
        pool.submit(Work { seconds: 0 })?.join()?
    );
    Ok(())
}
