//! concur thread backend.
