use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Square(u64);

#[concur_macros::task]
impl concur_core::Task for Square {
    type Output = u64;
}

fn main() {}
