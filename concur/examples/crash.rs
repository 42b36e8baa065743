//! A task aborts its worker process: only that task fails, with a typed
//! error; the others finish and the pool replaces the worker.
use concur::prelude::*;
use serde::{Deserialize, Serialize};

/// Returns its number, or aborts the process it runs in.
#[derive(Serialize, Deserialize)]
struct Job {
    n: u32,
    abort: bool,
}

impl Task for Job {
    type Output = u32;
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = "examples::crash::Job";
    fn run(self, _cx: &mut TaskContext<'_, Self>) -> u32 {
        if self.abort {
            std::process::abort();
        }
        self.n
    }
}
concur::register!(Job);

fn main() -> Result<(), TaskError> {
    concur::init();
    // Only worker processes survive an abort; `retries(0)`: do not run it again.
    let pool = Pool::builder()
        .backend(Backend::Procs)
        .workers(2)
        .retries(0)
        .build()?;
    let jobs = (0..5).map(|n| Job { n, abort: n == 2 });
    for (n, result) in pool.map(jobs).enumerate() {
        match result {
            Ok(value) => println!("job {n}: finished with {value}"),
            Err(e) => match e.kind() {
                ErrorKind::WorkerLost(exit) => println!("job {n}: its worker died ({exit})"),
                _ => return Err(e),
            },
        }
    }
    println!("the pool still has {} workers", pool.workers());
    Ok(())
}
