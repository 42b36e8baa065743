//! Shared helpers for concur cross-backend tests.
