//! `#[task]`: a struct task with only what is its own to write.
//!
//! A hand-written [`Task`] impl names a unique `NAME`, both message types
//! (usually `()`), a context parameter the task may not use, and then
//! registers the type on a separate line so process workers can run it. The
//! attribute fills all of that in: write the output type and `run`, and
//! nothing else.
//!
//! Depend on `concur` and write `#[concur::task]` (the facade re-exports
//! it); this crate is for code that depends on a backend crate alone
//! (`#[concur_macros::task]`).
//!
//! ```
//! use concur_core::Task;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Square(u64);
//!
//! #[concur_macros::task]
//! impl Task for Square {
//!     type Output = u64;
//!     fn run(self) -> u64 {
//!         self.0 * self.0
//!     }
//! }
//!
//! // The name comes from the module path, and the type is registered.
//! assert!(Square::NAME.ends_with("::Square"));
//! assert!(concur_core::registry::ensure_registered::<Square>().is_ok());
//! ```
//!
//! # What it fills in
//! - `const NAME`: `concat!(module_path!(), "::", "Square")`, unless the impl
//!   has one (keep a hand-written name when the type may move between modules
//!   while older binaries must still find it).
//! - `type ToCaller = ();` and `type FromCaller = ();` when absent.
//! - The context parameter: `fn run(self) -> T` gets an unused
//!   `&mut TaskContext<'_, Self>`; a `run` that names its own (to send
//!   messages, or to read [`worker`]) is kept as written.
//! - `register!(Square);` after the impl.
//!
//! # What it refuses
//! With a compile error at the offending code: an impl with generic
//! parameters (registration needs a concrete type: write that impl by hand
//! and `register!` each instantiation), an impl of another trait or an
//! inherent impl, and an impl without `type Output` or without `fn run`.
//!
//! # Which crate the generated code names
//! The code names `Task`, `TaskContext` and `register!` through the crate
//! the user depends on, found in the user's `Cargo.toml` (renames included):
//! `concur` first, else `concur-core`, `concur-procs`, `concur-threads`, all
//! of which export those three at their root. `#[task(crate = some::path)]`
//! names it instead (for a re-export, or a build that is not driven by
//! cargo). Inside one of those crates' own examples, tests and doctests the
//! path is `::name`; a library that applies `#[task]` in its own source
//! needs `extern crate self as name;` at its root.
//!
//! [`Task`]: https://docs.rs/concur-core/latest/concur_core/trait.Task.html
//! [`worker`]: https://docs.rs/concur-core/latest/concur_core/struct.TaskContext.html

use proc_macro::TokenStream;

mod args;
mod expand;

/// Completes an `impl Task for T` block: fills `NAME`, the message types
/// and the context parameter that the impl leaves out, and registers `T`
/// for process workers. See the [crate docs](crate) for the details.
///
/// Arguments: none, or `crate = path` to name the crate that exports `Task`,
/// `TaskContext` and `register!` (by default found in `Cargo.toml`).
///
/// A task that talks to its caller writes its message types and its
/// context parameter itself; the rest is still filled in:
///
/// ```
/// use concur_core::{Task, TaskContext};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct Countdown(u32);
///
/// #[concur_macros::task(crate = concur_core)]
/// impl Task for Countdown {
///     type Output = ();
///     type ToCaller = u32; // one message per step
///     fn run(self, cx: &mut TaskContext<'_, Self>) {
///         for n in (0..self.0).rev() {
///             let _ = cx.send(n);
///         }
///     }
/// }
/// ```
#[proc_macro_attribute]
pub fn task(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand::task(attr.into(), item.into()).into()
}
