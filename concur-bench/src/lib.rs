//! Shared helpers for concur benchmarks.
