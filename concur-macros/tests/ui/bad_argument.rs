use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Square(u64);

#[concur_macros::task(krate = concur_core)]
impl concur_core::Task for Square {
    type Output = u64;
    fn run(self) -> u64 {
        self.0 * self.0
    }
}

fn main() {}
