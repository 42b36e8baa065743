//! Five processes started and joined, each printing a line with its pid.
use concur::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Worker(usize);
impl Task for Worker {
    type Output = ();
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = "examples::processes::Worker";
    fn run(self, _cx: &mut TaskContext<'_, Self>) {
        println!("worker {} in process {}", self.0, std::process::id());
    }
}
concur::register!(Worker);

fn main() -> Result<(), TaskError> {
    concur::init();
    let pool = Pool::builder().backend(Backend::Procs).workers(5).build()?;
    let workers: Vec<_> = (0..5)
        .map(|i| pool.submit(Worker(i)))
        .collect::<Result<_, _>>()?;
    for w in workers {
        w.join()?;
    }
    Ok(())
}
