//! A program outside the concur workspace, as a user writes it: built by
//! `concur/tests/outside_crate.rs` against `concur` with one backend feature
//! (`threads` or `procs`), unchanged between the two. Every line it prints
//! is checked there; to cover another kind of task, add a task to
//! `tasks.rs`, a line to `run` here and the line to the test's expectations.

mod tasks;

use concur::prelude::*;
use tasks::{cube, InWorker, Square};

fn run() -> Result<(), TaskError> {
    let pool = Pool::new()?;
    println!("backend: {}", pool.backend());
    println!("struct task: {}", pool.submit(Square(7))?.join()?);
    let squares: Vec<u64> = pool.map((1..=3).map(Square)).collect::<Result<_, _>>()?;
    println!("map: {squares:?}");
    println!("macro task in a worker process: {}", pool.submit(InWorker)?.join()?);
    println!("function task: {}", pool.submit_fn(cube, 3)?.join()?);
    let sums: Vec<u64> = pool
        .map_fn(|(a, b): (u64, u64)| a + b, [(1, 2), (3, 4)])
        .collect::<Result<_, _>>()?;
    println!("map_fn with a closure: {sums:?}");
    println!("is_worker in main: {}", concur::is_worker());
    // A backend this build lacks is refused with a typed error.
    for &missing in Backend::ALL.iter().filter(|b| !b.is_compiled()) {
        match Pool::builder().backend(missing).build() {
            Err(e) => println!("{missing}: {e}"),
            Ok(_) => println!("{missing}: built, though not compiled in"),
        }
    }
    Ok(())
}

fn main() {
    concur::init();
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
