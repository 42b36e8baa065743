//! concur worker-process backend (built in its own issue).
