//! Cross-backend scenarios (`tests/cross_backend.rs`): the same task types
//! and calls on every backend, side by side (publish = false). The
//! end-to-end tests of the `concur` binary live in `concur-cli/tests`, where
//! cargo provides `CARGO_BIN_EXE_concur`.
//!
//! The README's example runs as a doctest of the `concur` crate, whose
//! API it shows.
