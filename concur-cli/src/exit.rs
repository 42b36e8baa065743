//! Exit codes and the one error type of the binary, in one place.

use std::error::Error as StdError;
use std::fmt;
use std::process::ExitCode;

/// Success.
pub const OK: u8 = 0;
/// A runtime failure: something went wrong while running (a pool could not
/// start, a task failed, a file could not be written).
pub const FAILURE: u8 = 1;
/// Bad usage: an unknown option or value, a backend not compiled in, an
/// unwritable output path. Nothing was run and nothing was written.
pub const USAGE: u8 = 2;

/// The exit codes as help text (a macro, so that each command's help can
/// `concat!` it after its examples).
macro_rules! exit_codes_help {
    () => {
        "Exit codes:
  0  success (also when standard output is closed early, as by `| head`)
  1  runtime failure: one line on standard error says what failed and why
  2  bad usage: one line on standard error names the problem or the valid choices"
    };
}
pub(crate) use exit_codes_help;

/// The exit codes, as shown at the end of `--help`.
pub const HELP: &str = exit_codes_help!();

/// Why the binary stops early.
#[derive(Debug)]
pub enum CliError {
    /// Bad usage, found before anything ran (exit code 2).
    Usage(String),
    /// A failure while running (exit code 1): what was being done, and why.
    Runtime {
        /// What was being done, as a lowercase clause.
        doing: String,
        /// The cause, with its own chain of sources.
        cause: Box<dyn StdError + Send + Sync>,
    },
    /// Standard output was closed by the reader (exit code 0, quietly).
    BrokenPipe,
}

/// Any error, boxed: what the measuring code returns before
/// [`CliError::runtime`] says what was being done.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// The result type of the binary's fallible steps.
pub type CliResult<T> = Result<T, CliError>;

impl CliError {
    /// A bad-usage error.
    pub fn usage(msg: impl Into<String>) -> Self {
        CliError::Usage(msg.into())
    }

    /// A runtime error while `doing` something, caused by `cause`.
    pub fn runtime(
        doing: impl Into<String>,
        cause: impl Into<Box<dyn StdError + Send + Sync>>,
    ) -> Self {
        CliError::Runtime {
            doing: doing.into(),
            cause: cause.into(),
        }
    }

    /// A runtime error from an I/O failure while `doing` something; a
    /// broken pipe becomes [`CliError::BrokenPipe`].
    pub fn io(doing: impl Into<String>, err: std::io::Error) -> Self {
        if err.kind() == std::io::ErrorKind::BrokenPipe {
            CliError::BrokenPipe
        } else {
            CliError::runtime(doing, err)
        }
    }

    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => USAGE,
            CliError::Runtime { .. } => FAILURE,
            CliError::BrokenPipe => OK,
        }
    }

    /// Prints the error as one line on standard error (nothing for a broken
    /// pipe) and returns the exit code.
    pub fn report(&self) -> ExitCode {
        if !matches!(self, CliError::BrokenPipe) {
            eprintln!("concur: error: {self}");
        }
        ExitCode::from(self.exit_code())
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Usage(msg) => f.write_str(msg),
            CliError::Runtime { doing, cause } => {
                write!(f, "{doing}: {cause}")?;
                let mut source = cause.source();
                while let Some(s) = source {
                    write!(f, ": {s}")?;
                    source = s.source();
                }
                Ok(())
            }
            CliError::BrokenPipe => f.write_str("standard output closed"),
        }
    }
}

/// Prints `msg` as one line on standard error, `concur: MSG` (a write
/// error is ignored: there is nowhere left to say it).
pub fn note(msg: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "concur: {msg}");
}

/// Prints a warning as one line on standard error; the run goes on.
pub fn warn(msg: &str) {
    note(&format!("warning: {msg}"));
}

/// A failure the binary detects itself (not reported by a library), described in words.
#[derive(Debug)]
pub struct Problem(pub String);

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl StdError for Problem {}

/// Turns a clap parse error into one line: clap's own first line plus the
/// valid values when clap knows them. Help and version requests are not
/// errors: clap prints them and they exit 0.
pub fn from_clap(err: &clap::Error) -> CliError {
    use clap::error::{ContextKind, ContextValue};
    let rendered = err.render().to_string();
    let first = rendered
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("invalid arguments")
        .trim()
        .trim_start_matches("error: ")
        .to_owned();
    let mut line = first;
    if let Some(ContextValue::Strings(valid)) = err.get(ContextKind::ValidValue) {
        if !valid.is_empty() && !line.contains("possible values") {
            line.push_str(&format!(" (valid: {})", valid.join(", ")));
        }
    }
    if let Some(ContextValue::Strings(s)) = err.get(ContextKind::SuggestedArg) {
        line.push_str(&format!(" (did you mean {}?)", s.join(" or ")));
    }
    line.push_str("; see `concur --help`");
    CliError::Usage(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_error_prints_its_cause_chain_on_one_line() {
        let inner = std::io::Error::other("disk full");
        let cause = concur_core::TaskError::io(inner);
        let e = CliError::runtime("writing report.json", cause);
        assert_eq!(e.to_string(), "writing report.json: i/o failure: disk full");
        assert_eq!(e.exit_code(), FAILURE);
    }

    #[test]
    fn broken_pipe_is_success() {
        let e = CliError::io("writing", std::io::ErrorKind::BrokenPipe.into());
        assert!(matches!(e, CliError::BrokenPipe));
        assert_eq!(e.exit_code(), OK);
    }
}
