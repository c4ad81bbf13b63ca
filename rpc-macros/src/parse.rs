//! Stage 1: the attribute's arguments and the annotated item, read into syn structures.
//!
//! Nothing here judges whether the trait is a valid service; that is [`crate::validate`]'s job,
//! so that all of a trait's mistakes are reported together instead of one per build.

use proc_macro2::TokenStream;
use syn::parse::Parser;
use syn::{ItemTrait, LitStr, Path};

/// The arguments of `#[service(...)]`, each as written.
#[derive(Default)]
pub(crate) struct ServiceArgs {
    /// `name = "..."`: the service name sent in the hello exchange.
    pub name: Option<LitStr>,
    /// `crate = "..."`: the path of the `rpc` facade.
    pub krate: Option<Path>,
    /// Problems found while reading the arguments, reported with the trait's own.
    pub errors: Vec<syn::Error>,
}

/// Reads `#[service(name = "...", crate = "...")]`.
///
/// Unknown or repeated arguments are recorded rather than returned, so that validation can add
/// them to the trait's errors; only a malformed argument list stops the reading.
pub(crate) fn parse_args(tokens: TokenStream) -> ServiceArgs {
    let mut args = ServiceArgs::default();
    let mut errors = Vec::new();
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("name") {
            let lit: LitStr = meta.value()?.parse()?;
            if args.name.is_some() {
                errors.push(meta.error("duplicate #[service] argument `name`"));
            } else if lit.value().trim().is_empty() {
                errors.push(syn::Error::new(lit.span(), "#[service] `name` cannot be empty"));
            } else {
                args.name = Some(lit);
            }
            Ok(())
        } else if meta.path.is_ident("crate") {
            let lit: LitStr = meta.value()?.parse()?;
            if args.krate.is_some() {
                errors.push(meta.error("duplicate #[service] argument `crate`"));
            } else {
                match lit.parse_with(Path::parse_mod_style) {
                    Ok(path) => args.krate = Some(path),
                    Err(_) => errors.push(syn::Error::new(
                        lit.span(),
                        "#[service] `crate` must be a path such as \"::rpc\" or \"crate::rpc\"",
                    )),
                }
            }
            Ok(())
        } else {
            let name = meta.path.segments.iter().map(|s| s.ident.to_string()).collect::<Vec<_>>().join("::");
            errors.push(meta.error(format_args!(
                "unknown #[service] argument `{name}`; expected `name = \"...\"` or `crate = \"...\"`"
            )));
            // Skip the value, if any, so the arguments after it are still read.
            if meta.input.peek(syn::Token![=]) {
                meta.value()?.parse::<syn::Expr>()?;
            } else if meta.input.peek(syn::token::Paren) {
                meta.input.parse::<proc_macro2::TokenTree>()?;
            }
            Ok(())
        }
    });
    if let Err(err) = parser.parse2(tokens) {
        errors.push(err);
    }
    args.errors = errors;
    args
}

/// Reads the annotated item, which must be a trait.
pub(crate) fn parse_trait(tokens: TokenStream) -> syn::Result<ItemTrait> {
    syn::parse2::<ItemTrait>(tokens.clone()).map_err(|err| {
        // A trait that fails to parse is reported as syn found it; anything else is the wrong
        // kind of item, which deserves a sentence of its own.
        if looks_like_trait(&tokens) {
            err
        } else {
            syn::Error::new(proc_macro2::Span::call_site(), "#[service] can only be applied to a trait")
        }
    })
}

fn looks_like_trait(tokens: &TokenStream) -> bool {
    tokens.clone().into_iter().any(|tt| matches!(tt, proc_macro2::TokenTree::Ident(ref i) if i == "trait"))
}
