//! Cross-backend scenarios and end-to-end tests of the `concur` binary
//! (publish = false). The crate's own documentation is the project README,
//! so its example is compiled and run as a doctest.
#![doc = include_str!("../../README.md")]
