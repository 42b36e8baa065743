use concur_core::{Message, Task};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Echo<T>(T);

#[concur_macros::task]
impl<T: Message> Task for Echo<T> {
    type Output = T;
    fn run(self) -> T {
        self.0
    }
}

fn main() {}
