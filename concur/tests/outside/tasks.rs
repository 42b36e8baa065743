//! The tasks of the outside program (`program.rs`, as its `src/tasks.rs`),
//! one of each kind a user writes; `tests/redis.rs` runs them on redis.

use concur::prelude::*;
use serde::{Deserialize, Serialize};

/// A struct task, written out in full.
#[derive(Serialize, Deserialize)]
pub struct Square(pub u64);

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
pub struct InWorker;

#[concur::task]
impl Task for InWorker {
    type Output = bool;
    fn run(self) -> bool {
        concur::is_worker()
    }
}

/// A function task: no struct, no impl, no name, no registration.
pub fn cube(x: u64) -> u64 {
    x * x * x
}
