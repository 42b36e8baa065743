//! Five processes started and joined, each printing a line with its pid.
use concur::prelude::*;
fn worker(i: u32) {
    println!("worker {i} in process {}", std::process::id());
}

fn main() -> Result<(), TaskError> {
    concur::init();
    let pool = Pool::builder().backend(Backend::Procs).workers(5).build()?;
    let handles: Vec<_> = (0..5)
        .map(|i| pool.submit_fn(worker, i))
        .collect::<Result<_, _>>()?;
    handles.into_iter().try_for_each(|h| h.join())
}
