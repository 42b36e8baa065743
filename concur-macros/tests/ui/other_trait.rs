#[derive(Debug)]
struct Square(u64);

#[concur_macros::task]
impl Clone for Square {
    fn clone(&self) -> Self {
        Square(self.0)
    }
}

fn main() {}
