//! Helpers shared by the cross-backend scenarios: every wait on a pool has
//! a deadline that only bounds a hang.

#![allow(dead_code)] // each test target uses part of it

// Not every test binary that includes this module calls it.
#[allow(unused_imports)]
pub use concur_core::conformance::{bounded, join, DEADLINE};
