//! [`Backend`]: which kind of worker runs a [`Pool`](crate::Pool)'s tasks,
//! and how the choice is made (builder, then `CONCUR_BACKEND`, then the
//! default).

use std::fmt;
use std::str::FromStr;

use concur_core::TaskError;

/// The environment variable that picks the backend of a [`Pool`](crate::Pool)
/// whose builder did not name one: `threads`, `procs` or `redis` (ASCII case and
/// surrounding spaces ignored; empty means unset).
pub const ENV_BACKEND: &str = "CONCUR_BACKEND";

/// A backend concur can run tasks on.
///
/// Every backend concur has is listed here whether or not this build
/// contains it, so that asking for a missing one gets a precise error
/// instead of a compile failure; [`Backend::compiled`] lists the ones this
/// build can run. Written as `threads`, `procs` and `redis` (its [`Display`] and
/// [`FromStr`] forms, which are also its cargo feature names).
///
/// [`Display`]: fmt::Display
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Backend {
    /// Threads of this process (`concur-threads`, feature `threads`): the
    /// cheapest dispatch, values moved and never serialized; a timeout fails
    /// the handle but cannot stop the thread, and a crash takes the process.
    Threads,
    /// Worker processes that run this same executable (`concur-procs`,
    /// feature `procs`, Linux): isolated memory, a crash fails only its task,
    /// a timeout or cancel kills the worker; values are encoded.
    Procs,
    /// Worker processes on any machine, fed through a Redis broker
    /// (`concur-redis`, feature `redis`, Linux): the broker's URL comes from
    /// `PoolBuilder::redis_url`(crate::PoolBuilder::redis_url) or
    /// `CONCUR_REDIS_URL`; local workers run this same executable; tasks are
    /// at-least-once, timeouts and cancel are cooperative; function tasks
    /// are refused.
    Redis,
}

/// The backends this build contains, in order of preference.
const COMPILED: &[Backend] = &[
    #[cfg(feature = "threads")]
    Backend::Threads,
    #[cfg(feature = "procs")]
    Backend::Procs,
    #[cfg(feature = "redis")]
    Backend::Redis,
];

impl Backend {
    /// Every backend concur has, compiled in or not.
    pub const ALL: &'static [Backend] = &[Backend::Threads, Backend::Procs, Backend::Redis];

    /// The backends compiled into this build (by the `concur` crate's cargo
    /// features), the default first.
    pub fn compiled() -> &'static [Backend] {
        COMPILED
    }

    /// True when this build contains the backend.
    pub fn is_compiled(self) -> bool {
        COMPILED.contains(&self)
    }

    /// The backend a pool gets when neither its builder nor
    /// [`CONCUR_BACKEND`](ENV_BACKEND) names one: threads when compiled in,
    /// else procs, else redis.
    pub fn default_compiled() -> Backend {
        COMPILED.first().copied().unwrap_or(Backend::Threads)
    }

    /// The name: `"threads"`, `"procs"` or `"redis"` (the same as
    /// [`Executor::backend`](concur_core::Executor::backend) reports).
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Threads => "threads",
            Backend::Procs => "procs",
            Backend::Redis => "redis",
        }
    }

    /// The cargo feature of the `concur` crate that compiles this backend in.
    pub fn feature(self) -> &'static str {
        self.as_str()
    }

    /// The backend named by [`CONCUR_BACKEND`](ENV_BACKEND), if it is set
    /// and not empty.
    ///
    /// # Errors
    /// [`ErrorKind::Config`](concur_core::ErrorKind::Config) for
    /// `CONCUR_BACKEND` when its value is not a backend or names one this
    /// build does not contain; the message lists the valid choices and the
    /// cargo feature to enable.
    pub fn from_env() -> Result<Option<Backend>, TaskError> {
        let Some(value) = std::env::var_os(ENV_BACKEND) else {
            return Ok(None);
        };
        let Some(text) = value.to_str() else {
            return Err(TaskError::config(
                ENV_BACKEND,
                &format!("the value is not valid unicode; {}", choices()),
            ));
        };
        if text.trim().is_empty() {
            return Ok(None);
        }
        let backend = parse(text).map_err(|reason| TaskError::config(ENV_BACKEND, &reason))?;
        backend.ensure_compiled(ENV_BACKEND).map(Some)
    }

    /// Picks the backend of a pool: `requested` (the builder's choice) if
    /// given, else [`CONCUR_BACKEND`](ENV_BACKEND) if set, else
    /// [`default_compiled`](Self::default_compiled). The environment is not
    /// read when `requested` is given.
    ///
    /// # Errors
    /// [`ErrorKind::Config`](concur_core::ErrorKind::Config) when the choice
    /// is a backend this build does not contain (field `backend`, or
    /// `CONCUR_BACKEND` when it came from there), or `CONCUR_BACKEND` holds
    /// something else than a backend name.
    pub fn select(requested: Option<Backend>) -> Result<Backend, TaskError> {
        match requested {
            Some(backend) => backend.ensure_compiled("backend"),
            None => Ok(Self::from_env()?.unwrap_or_else(Self::default_compiled)),
        }
    }

    /// `self` if compiled in, else a config error for `field`.
    fn ensure_compiled(self, field: &str) -> Result<Backend, TaskError> {
        if self.is_compiled() {
            return Ok(self);
        }
        let compiled = if COMPILED.is_empty() {
            "none".to_owned()
        } else {
            COMPILED
                .iter()
                .map(|b| b.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        Err(TaskError::config(
            field,
            &format!(
                "backend `{self}` is not compiled in (this build has: {compiled}); \
                 enable the cargo feature `{}` of the `concur` crate",
                self.feature()
            ),
        ))
    }
}

/// Parses a backend name, or says what the valid names are.
fn parse(text: &str) -> Result<Backend, String> {
    let text = text.trim();
    Backend::ALL
        .iter()
        .copied()
        .find(|b| b.as_str().eq_ignore_ascii_case(text))
        .ok_or_else(|| format!("`{text}` is not a backend; {}", choices()))
}

/// "valid choices: threads, procs (cargo feature `procs` of `concur`)": every
/// backend, with the feature to enable for those not compiled in.
fn choices() -> String {
    let list = Backend::ALL
        .iter()
        .map(|b| {
            if b.is_compiled() {
                b.as_str().to_owned()
            } else {
                format!(
                    "{b} (not compiled in: enable the cargo feature `{}` of the `concur` crate)",
                    b.feature()
                )
            }
        })
        .collect::<Vec<_>>()
        .join(", ");
    format!("valid choices: {list}")
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for Backend {
    type Err = TaskError;

    /// Parses `threads`, `procs` or `redis` (ASCII case and surrounding spaces
    /// ignored), compiled in or not: whether this build can run it is
    /// [`is_compiled`](Backend::is_compiled)'s question.
    ///
    /// # Errors
    /// [`ErrorKind::Config`](concur_core::ErrorKind::Config) for field
    /// `backend`, listing the valid choices.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse(s).map_err(|reason| TaskError::config("backend", &reason))
    }
}
