use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Square(u64);

#[concur_macros::task]
impl concur_core::Task for Square {
    fn run(self) -> u64 {
        self.0 * self.0
    }
}

fn main() {}
