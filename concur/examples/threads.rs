//! Five threads started and joined, each printing a line (threads share one process).
use concur::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Worker(usize);
impl Task for Worker {
    type Output = ();
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = "examples::threads::Worker";
    fn run(self, _cx: &mut TaskContext<'_, Self>) {
        println!("worker {} in process {}", self.0, std::process::id());
    }
}

fn main() -> Result<(), TaskError> {
    let pool = Pool::builder()
        .backend(Backend::Threads)
        .workers(5)
        .build()?;
    let workers: Vec<_> = (0..5)
        .map(|i| pool.submit(Worker(i)))
        .collect::<Result<_, _>>()?;
    for w in workers {
        w.join()?;
    }
    Ok(())
}
