//! The synchronisation primitives of the result cell and the admission
//! queue, from std in a normal build and from [loom] under `--cfg loom`, so
//! the code is written once and loom can explore its interleavings (as
//! tokio does for its task state).
//!
//! Run the models with:
//!
//! ```text
//! RUSTFLAGS="--cfg loom" cargo test -p concur-core --release --lib loom
//! ```
//!
//! (`LOOM_MAX_PREEMPTIONS=3` bounds a longer exploration.) Under loom a
//! timed condition-variable wait only ends when notified, so the models use
//! no deadlines but "now" (a poll) and "never"; the spin before a blocking
//! wait is left out, since loom cannot model elapsed time.
//!
//! [loom]: https://docs.rs/loom

#[cfg(loom)]
pub(crate) use ::loom::thread::{current as thread_current, park, Thread};
#[cfg(not(loom))]
pub(crate) use std::thread::{current as thread_current, park, Thread};

#[cfg(loom)]
pub(crate) use ::loom::sync::{
    atomic::{fence, AtomicBool, AtomicUsize},
    Arc, Condvar, Mutex, MutexGuard,
};
#[cfg(not(loom))]
pub(crate) use std::sync::{
    atomic::{fence, AtomicBool, AtomicUsize},
    Arc, Condvar, Mutex, MutexGuard,
};
