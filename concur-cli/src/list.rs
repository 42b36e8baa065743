//! `concur backends`: the backends compiled in, one per line, with what
//! each can do (from [`concur_core::Executor::capabilities`]).

use crate::backend::{self, Backend};
use crate::exit::{CliError, CliResult};
use crate::output;

/// Prints one line per backend compiled in.
///
/// # Errors
/// [`CliError::Runtime`] when a backend cannot start a pool to be asked.
pub fn run() -> CliResult<()> {
    let mut text = String::new();
    for &b in Backend::ALL {
        let caps = b
            .capabilities()
            .map_err(|e| CliError::runtime(format!("asking {b} what it can do"), e))?;
        let (yes, no): (Vec<_>, Vec<_>) =
            backend::describe(&caps).into_iter().partition(|(_, v)| *v);
        let names = |v: Vec<(&str, bool)>| {
            if v.is_empty() {
                "-".to_owned()
            } else {
                v.into_iter().map(|(n, _)| n).collect::<Vec<_>>().join(", ")
            }
        };
        text.push_str(&format!(
            "{:<8} can: {}; cannot: {}\n",
            b.name(),
            names(yes),
            names(no)
        ));
    }
    output::stdout(&text)
}
