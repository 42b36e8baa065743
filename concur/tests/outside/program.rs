//! A program outside the concur workspace, as a user writes it: built by
//! `concur/tests/outside_crate.rs` against `concur` with one backend feature
//! (`threads` or `procs`), unchanged between the two. Every line it prints
//! is checked there; to cover another kind of task, add a task and a line
//! to `run` here and the line to the test's expectations.

use concur::prelude::*;
use serde::{Deserialize, Serialize};

/// A struct task, written out in full.
#[derive(Serialize, Deserialize)]
struct Square(u64);

impl Task for Square {
    type Output = u64;
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = "outside::Square";
    fn run(self, _cx: &mut TaskContext<'_, Self>) -> u64 {
        self.0 * self.0
    }
}
concur::register!(Square);

/// Tells whether it runs in a worker process: a struct task written with
/// the macro (name, message types, context and registration filled in).
#[derive(Serialize, Deserialize)]
struct InWorker;

#[concur::task]
impl Task for InWorker {
    type Output = bool;
    fn run(self) -> bool {
        concur::is_worker()
    }
}

/// A function task: no struct, no impl, no name, no registration.
fn cube(x: u64) -> u64 {
    x * x * x
}

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
