//! The expansion: checks the impl, fills in what it leaves out, appends the
//! registration.

use proc_macro2::{Span, TokenStream};
use quote::{quote, ToTokens};
use syn::{parse_quote, FnArg, Ident, ImplItem, Item, ItemImpl, Signature};

use crate::args::Args;

/// Expands `#[task(attr)] item`. Errors come out as `compile_error!`s
/// beside whatever of the user's code can still stand, so the user sees
/// this macro's message rather than a cascade of the compiler's.
pub(crate) fn task(attr: TokenStream, item: TokenStream) -> TokenStream {
    let imp = match syn::parse2::<Item>(item.clone()) {
        Ok(Item::Impl(imp)) => imp,
        Ok(other) => {
            let err = syn::Error::new_spanned(
                other,
                "`#[task]` goes on an `impl Task for YourType { ... }` block",
            );
            return with_errors(item, err);
        }
        Err(err) => return with_errors(item, err),
    };
    if let Err(err) = check_trait(&imp) {
        // Another trait's impl is still valid code: keep it as written.
        return with_errors(imp.into_token_stream(), err);
    }
    let krate = match Args::parse(attr).and_then(|args| args.crate_path()) {
        Ok(krate) => krate,
        Err(err) => return err.to_compile_error(),
    };
    let (imp, errors) = complete(imp, &krate);
    match errors {
        // Nothing to register, and an incomplete impl would only add the
        // compiler's own "not all trait items implemented" to our message.
        Some(Incomplete::Items(err)) => err.to_compile_error(),
        // A full impl of a type that cannot be registered: keep the impl
        // so that only the registration is missing.
        Some(Incomplete::Generic(err)) => with_errors(imp.into_token_stream(), err),
        None => {
            let ty = &imp.self_ty;
            quote! {
                #imp
                #krate::register!(#ty);
            }
        }
    }
}

fn with_errors(tokens: TokenStream, err: syn::Error) -> TokenStream {
    let err = err.to_compile_error();
    quote!(#err #tokens)
}

/// Refuses anything but `impl Task for T` (any path ending in `Task`).
fn check_trait(imp: &ItemImpl) -> syn::Result<()> {
    match &imp.trait_ {
        Some((None, path, _)) if path.segments.last().is_some_and(|s| s.ident == "Task") => Ok(()),
        Some((_, path, _)) => Err(syn::Error::new_spanned(
            path,
            "`#[task]` implements `Task`, not another trait; remove the attribute \
             from this impl",
        )),
        None => Err(syn::Error::new_spanned(
            &imp.self_ty,
            "`#[task]` goes on `impl Task for YourType`, not on an inherent impl",
        )),
    }
}

/// Why an impl cannot be completed and registered.
enum Incomplete {
    /// `Output` or `run` is missing.
    Items(syn::Error),
    /// The impl has generic parameters.
    Generic(syn::Error),
}

/// Which of the items the attribute may fill in the impl already has.
#[derive(Default)]
struct Present {
    output: bool,
    run: bool,
    name: bool,
    to_caller: bool,
    from_caller: bool,
}

/// Fills in what `imp` leaves out, and says what it cannot fill.
fn complete(mut imp: ItemImpl, krate: &TokenStream) -> (ItemImpl, Option<Incomplete>) {
    let mut present = Present::default();
    for item in &mut imp.items {
        match item {
            ImplItem::Type(t) if t.ident == "Output" => present.output = true,
            ImplItem::Type(t) if t.ident == "ToCaller" => present.to_caller = true,
            ImplItem::Type(t) if t.ident == "FromCaller" => present.from_caller = true,
            ImplItem::Const(c) if c.ident == "NAME" => present.name = true,
            ImplItem::Fn(f) if f.sig.ident == "run" => {
                present.run = true;
                add_context(&mut f.sig, krate);
            }
            _ => {}
        }
    }

    let mut missing: Option<syn::Error> = None;
    let header = header(&imp);
    for (present, what) in [
        (
            present.output,
            "missing `type Output = ...;`: the type `run` returns",
        ),
        (
            present.run,
            "missing `fn run(self) -> Self::Output { ... }`",
        ),
    ] {
        if !present {
            push(&mut missing, syn::Error::new_spanned(&header, what));
        }
    }
    let generic = (!imp.generics.params.is_empty()).then(|| {
        syn::Error::new_spanned(
            &imp.generics,
            "`#[task]` cannot register a generic task type: registration needs a \
             concrete type; write this impl by hand and `register!` each \
             instantiation (`register!(MyTask<u64>);`)",
        )
    });
    if let Some(mut err) = missing {
        if let Some(generic) = generic {
            err.combine(generic);
        }
        return (imp, Some(Incomplete::Items(err)));
    }

    if !present.name {
        let name = type_name(&imp.self_ty);
        imp.items.push(parse_quote! {
            const NAME: &'static str =
                ::core::concat!(::core::module_path!(), "::", #name);
        });
    }
    if !present.to_caller {
        imp.items.push(parse_quote!(
            type ToCaller = ();
        ));
    }
    if !present.from_caller {
        imp.items.push(parse_quote!(
            type FromCaller = ();
        ));
    }
    (imp, generic.map(Incomplete::Generic))
}

fn push(all: &mut Option<syn::Error>, err: syn::Error) {
    match all {
        Some(all) => all.combine(err),
        None => *all = Some(err),
    }
}

/// `impl Task for T`, for errors about the impl as a whole.
fn header(imp: &ItemImpl) -> TokenStream {
    let impl_token = imp.impl_token;
    let ty = &imp.self_ty;
    match &imp.trait_ {
        Some((_, path, for_token)) => quote!(#impl_token #path #for_token #ty),
        None => quote!(#impl_token #ty),
    }
}

/// Gives `run(self)` the context parameter the trait requires, under a
/// name the body cannot see (a task that wants its context names it).
fn add_context(sig: &mut Signature, krate: &TokenStream) {
    let only_self = sig.inputs.len() == 1 && matches!(sig.inputs[0], FnArg::Receiver(_));
    if only_self {
        let cx = Ident::new("_cx", Span::mixed_site());
        sig.inputs
            .push(parse_quote!(#cx: &mut #krate::TaskContext<'_, Self>));
    }
}

/// The type as written, without the spaces the token printer puts in
/// (`Wrapper<u64>`, not `Wrapper < u64 >`).
fn type_name(ty: &syn::Type) -> String {
    ty.to_token_stream()
        .to_string()
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect()
}
