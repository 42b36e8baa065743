//! Awaiting task handles in a tokio runtime: a handle is a `Future`, and
//! `submit_async` waits for room in the queue without blocking the runtime.
use concur::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Square(u64);

impl Task for Square {
    type Output = u64;
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = "examples::tokio::Square";
    fn run(self, _cx: &mut TaskContext<'_, Self>) -> u64 {
        self.0 * self.0
    }
}
concur::register!(Square);

async fn squares(pool: &Pool) -> Result<(), TaskError> {
    let mut handles = Vec::new();
    for n in 1..=5 {
        handles.push(pool.submit_async(Square(n)).await?);
    }
    for (n, handle) in (1..=5).zip(handles) {
        println!("{n} squared is {}", handle.await?);
    }
    Ok(())
}

fn main() -> Result<(), TaskError> {
    // Before the runtime starts: in a worker process this never returns.
    concur::init();
    let pool = Pool::new()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(TaskError::io)?;
    runtime.block_on(squares(&pool))
}
