//! `concur backends`: the backends compiled in, one per line, with what
//! each can do (each backend's declared capabilities; no worker is started).

use crate::backend::{self, Backend};
use crate::exit::CliResult;
use crate::output;

/// Prints one line per backend compiled in.
///
/// # Errors
/// When standard output cannot be written.
pub fn run() -> CliResult<()> {
    let mut text = String::new();
    for &b in Backend::ALL {
        let caps = b.capabilities();
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
