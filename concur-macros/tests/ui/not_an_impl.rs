#[concur_macros::task]
struct Square(u64);

fn main() {}
