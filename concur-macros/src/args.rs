//! The attribute's arguments, and the path of the crate the generated code
//! names.

use proc_macro2::{Span, TokenStream};
use proc_macro_crate::{crate_name, Error, FoundCrate};
use quote::quote;
use syn::parse::Parser;
use syn::{Ident, Path};

/// The crates that export `Task`, `TaskContext` and `register!` at their
/// root, in the order they are looked for: the facade first, then core
/// (where the items live), then the backends, which re-export them.
const CANDIDATES: [&str; 4] = ["concur", "concur-core", "concur-procs", "concur-threads"];

/// The crate path used when the manifest cannot be read (a build not driven
/// by cargo): the facade, the crate users are told to depend on.
const FALLBACK: &str = "concur";

/// What `#[task(...)]` was given.
pub(crate) struct Args {
    /// `crate = path`, when given.
    krate: Option<Path>,
}

impl Args {
    /// Parses the attribute's arguments: nothing, or `crate = path`.
    pub(crate) fn parse(attr: TokenStream) -> syn::Result<Self> {
        let mut krate = None;
        let parser = syn::meta::parser(|meta| {
            if meta.path.is_ident("crate") {
                if krate.is_some() {
                    return Err(meta.error("`crate` is given twice"));
                }
                krate = Some(meta.value()?.parse::<Path>()?);
                Ok(())
            } else {
                Err(meta.error("unknown argument: `#[task]` takes only `crate = path`"))
            }
        });
        parser.parse2(attr)?;
        Ok(Self { krate })
    }

    /// The path through which the generated code names the task API.
    pub(crate) fn crate_path(&self) -> syn::Result<TokenStream> {
        match &self.krate {
            Some(path) => Ok(quote!(#path)),
            None => detect(crate_name).map_err(|e| syn::Error::new(Span::call_site(), e)),
        }
    }
}

/// Finds the first of [`CANDIDATES`] that the crate being compiled depends
/// on, through `lookup` (proc-macro-crate's reading of its `Cargo.toml`).
fn detect(lookup: impl Fn(&str) -> Result<FoundCrate, Error>) -> Result<TokenStream, String> {
    for candidate in CANDIDATES {
        match lookup(candidate) {
            Ok(FoundCrate::Name(name)) => return Ok(root(&name)),
            // The crate's own examples, integration tests and doctests are
            // separate crates that reach it by name, so `crate::` would not
            // do; its library reaches itself by name through
            // `extern crate self as ...;`.
            Ok(FoundCrate::Itself) => return Ok(root(&candidate.replace('-', "_"))),
            Err(Error::CrateNotFound { .. }) => {}
            // No manifest to read: the user's build is not cargo's, and the
            // facade is the best guess (`crate = ...` overrides it).
            Err(_) => return Ok(root(FALLBACK)),
        }
    }
    Err(format!(
        "cannot find `concur` among this crate's dependencies (nor {}); \
         add `concur` to [dependencies], or name the crate that exports the \
         task API with `#[task(crate = path)]`",
        CANDIDATES[1..]
            .iter()
            .map(|c| format!("`{c}`"))
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

/// `::name`, an absolute path that a local module cannot shadow.
fn root(name: &str) -> TokenStream {
    let ident = Ident::new(name, Span::call_site());
    quote!(::#ident)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    /// A manifest that lists `deps` as (package, name in the code).
    fn manifest<'a>(
        deps: &'a [(&'a str, FoundCrate)],
    ) -> impl Fn(&str) -> Result<FoundCrate, Error> + 'a {
        move |wanted| {
            deps.iter()
                .find(|(package, _)| *package == wanted)
                .map(|(_, found)| found.clone())
                .ok_or_else(|| Error::CrateNotFound {
                    crate_name: wanted.to_owned(),
                    path: PathBuf::from("Cargo.toml"),
                })
        }
    }

    fn name(s: &str) -> FoundCrate {
        FoundCrate::Name(s.to_owned())
    }

    fn detected(deps: &[(&str, FoundCrate)]) -> String {
        detect(manifest(deps)).unwrap().to_string()
    }

    #[test]
    fn the_facade_wins_over_the_crates_it_wraps() {
        let deps = [
            ("concur-procs", name("concur_procs")),
            ("concur", name("concur")),
            ("concur-core", name("concur_core")),
        ];
        assert_eq!(detected(&deps), ":: concur");
    }

    #[test]
    fn without_the_facade_core_then_procs_then_threads() {
        let all = [
            ("concur-threads", name("concur_threads")),
            ("concur-procs", name("concur_procs")),
            ("concur-core", name("concur_core")),
        ];
        assert_eq!(detected(&all), ":: concur_core");
        assert_eq!(detected(&all[..2]), ":: concur_procs");
        assert_eq!(detected(&all[..1]), ":: concur_threads");
    }

    #[test]
    fn a_renamed_dependency_is_named_as_renamed() {
        assert_eq!(detected(&[("concur-procs", name("procs"))]), ":: procs");
    }

    #[test]
    fn the_crate_itself_is_named_by_its_own_name() {
        assert_eq!(
            detected(&[("concur-core", FoundCrate::Itself)]),
            ":: concur_core"
        );
    }

    #[test]
    fn an_unreadable_manifest_falls_back_to_the_facade() {
        let found = detect(|_| Err(Error::CargoManifestDirNotSet)).unwrap();
        assert_eq!(found.to_string(), ":: concur");
    }

    #[test]
    fn no_known_crate_is_an_error_that_says_what_to_do() {
        let err = detect(manifest(&[])).unwrap_err();
        assert!(err.contains("`concur-threads`"), "{err}");
        assert!(err.contains("#[task(crate = path)]"), "{err}");
    }

    #[test]
    fn crate_argument_overrides_detection() {
        let args = Args::parse(quote!(crate = my::reexport)).unwrap();
        assert_eq!(args.crate_path().unwrap().to_string(), "my :: reexport");
    }
}
