struct Square(u64);

#[concur_macros::task]
impl Square {
    fn run(self) -> u64 {
        self.0 * self.0
    }
}

fn main() {}
