//! Helpers shared by the thread-backend tests.

// Not every test binary that includes this module calls it.
#[allow(unused_imports)]
pub use concur_core::conformance::bounded;
