//! Stage 2: checks every rule a service trait must follow and builds the [`Service`] model.
//!
//! All problems are collected and returned as one combined `syn::Error`, each spanned at the
//! token the user has to change, so one build shows every mistake in the trait. The rules exist
//! because the trait is implemented on one side of a connection and called on the other:
//! everything in a signature must be an owned, concrete, serializable type, and the server must
//! be able to run calls concurrently on a shared instance.

use std::collections::HashMap;

use quote::ToTokens;
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{
    FnArg, GenericArgument, ItemTrait, Pat, PathArguments, ReturnType, Signature, TraitItem, TraitItemFn, Type,
    TypeParamBound,
};

use crate::model::{is_plain_name, method_id, signature, Arg, Method, ReturnKind, Service};
use crate::parse::ServiceArgs;

/// Names of generated items that a method of the same name would clash with.
///
/// The client's inherent methods and constant share one namespace with the methods generated
/// from the trait, and `into_service` is a provided method of the trait itself.
const RESERVED: [(&str, &str); 13] = [
    ("connect", "the generated `{client}::connect`"),
    ("connect_with", "the generated `{client}::connect_with`"),
    ("from_connection", "the generated `{client}::from_connection`"),
    ("from_connection_with", "the generated `{client}::from_connection_with`"),
    ("from_client", "the generated `{client}::from_client`"),
    ("with_timeout", "the generated `{client}::with_timeout`"),
    ("with_deadline", "the generated `{client}::with_deadline`"),
    ("with_options", "the generated `{client}::with_options`"),
    ("rpc_client", "the generated `{client}::rpc_client`"),
    ("schema", "the generated `{client}::schema`"),
    ("async_client", "the generated `{trait}BlockingClient::async_client`"),
    ("DESCRIPTOR", "the generated `{client}::DESCRIPTOR`"),
    ("into_service", "the provided method `{trait}::into_service`"),
];

/// Accumulates errors so that validation can go on after the first one.
#[derive(Default)]
struct Errors(Option<syn::Error>);

impl Errors {
    fn push(&mut self, err: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(err),
            None => self.0 = Some(err),
        }
    }

    fn at(&mut self, tokens: impl ToTokens, message: impl std::fmt::Display) {
        self.push(syn::Error::new_spanned(tokens, message));
    }

    fn finish(self) -> syn::Result<()> {
        self.0.map_or(Ok(()), Err)
    }
}

/// Checks `item` and the attribute arguments, and builds the model if nothing is wrong.
pub(crate) fn validate(args: ServiceArgs, item: &ItemTrait) -> syn::Result<Service> {
    let mut errors = Errors::default();
    for err in args.errors {
        errors.push(err);
    }

    if let Some(unsafety) = &item.unsafety {
        errors.at(unsafety, "#[service] traits cannot be `unsafe`: implementing a service has no safety contract");
    }
    if let Some(auto) = &item.auto_token {
        errors.at(auto, "#[service] cannot be applied to an auto trait");
    }
    if !item.generics.params.is_empty() {
        errors.at(
            &item.generics,
            "#[service] traits cannot be generic: the generated client and server are concrete types; \
             name concrete types in the methods instead",
        );
    }
    if let Some(where_clause) = &item.generics.where_clause {
        errors.at(where_clause, "#[service] traits cannot have a where clause");
    }

    let mut methods = Vec::new();
    let mut seen_names: HashMap<String, syn::Ident> = HashMap::new();
    let mut seen_ids: HashMap<u32, syn::Ident> = HashMap::new();
    for trait_item in &item.items {
        let func = match trait_item {
            TraitItem::Fn(func) => func,
            TraitItem::Type(ty) => {
                errors.at(
                    ty,
                    "#[service] traits cannot have associated types: the client cannot know which type \
                     the server picked; name the concrete type in the methods",
                );
                continue;
            }
            TraitItem::Const(constant) => {
                errors.at(
                    constant,
                    "#[service] traits cannot have associated constants: only methods travel between processes",
                );
                continue;
            }
            TraitItem::Macro(mac) => {
                errors.at(
                    mac,
                    "#[service] traits cannot contain macro invocations: #[service] sees the trait before \
                     macros expand; write the methods out",
                );
                continue;
            }
            other => {
                errors.at(other, "#[service] traits can only contain methods");
                continue;
            }
        };
        let Some(method) = validate_method(func, &item.ident, &mut errors) else { continue };

        if let Some(first) = seen_names.get(&method.name) {
            errors.at(
                &method.ident,
                format!("#[service] method `{}` is declared twice (first at `{}`)", method.name, first),
            );
            continue;
        }
        if let Some(other) = seen_ids.get(&method.id) {
            errors.at(
                &method.ident,
                format!(
                    "#[service] methods `{}` and `{}` have the same wire id {:#010x} (FNV-1a of the name); \
                     rename one of them",
                    other.unraw(),
                    method.name,
                    method.id
                ),
            );
            continue;
        }
        seen_names.insert(method.name.clone(), method.ident.clone());
        seen_ids.insert(method.id, method.ident.clone());
        methods.push(method);
    }

    let has_methods = item.items.iter().any(|i| matches!(i, TraitItem::Fn(_)));
    if !has_methods {
        errors.at(
            &item.ident,
            format!(
                "#[service] trait `{}` has no methods; declare at least one, e.g. `async fn ping(&self);`",
                item.ident
            ),
        );
    }

    errors.finish()?;

    Ok(Service {
        ident: item.ident.clone(),
        vis: item.vis.clone(),
        name: args.name.map_or_else(|| item.ident.unraw().to_string(), |lit| lit.value()),
        krate: args.krate.unwrap_or_else(|| syn::parse_quote!(::rpc)),
        attrs: item.attrs.clone(),
        supertraits: item.supertraits.iter().cloned().collect(),
        methods,
    })
}

/// Checks one method; returns its model if its signature could be understood, even if other
/// errors were found, so that later checks (duplicate names, colliding ids) still run.
fn validate_method(func: &TraitItemFn, trait_ident: &syn::Ident, errors: &mut Errors) -> Option<Method> {
    let sig = &func.sig;
    let name = sig.ident.unraw().to_string();
    let mut understood = true;

    if let Some(constness) = &sig.constness {
        errors.at(constness, "#[service] methods cannot be `const fn`");
    }
    if let Some(unsafety) = &sig.unsafety {
        errors
            .at(unsafety, "#[service] methods cannot be `unsafe fn`: a remote caller cannot uphold a safety contract");
    }
    if let Some(abi) = &sig.abi {
        errors.at(abi, "#[service] methods cannot declare an ABI: remove the `extern`");
    }
    if !sig.generics.params.is_empty() {
        errors.at(
            &sig.generics,
            format!(
                "#[service] methods cannot be generic: `{name}` must name concrete argument and return types \
                 so both ends agree on what travels"
            ),
        );
    }
    if let Some(where_clause) = &sig.generics.where_clause {
        errors.at(where_clause, "#[service] methods cannot have a where clause");
    }
    if let Some(variadic) = &sig.variadic {
        errors.at(variadic, "#[service] methods cannot be variadic");
    }
    if let Some(body) = &func.default {
        errors.at(
            body,
            "#[service] methods cannot have a default body: write the body in the `impl` of the trait \
             (the declaration ends with `;`)",
        );
    }
    for attr in &func.attrs {
        if attr.path().is_ident("cfg") || attr.path().is_ident("cfg_attr") {
            errors.at(
                attr,
                "#[service] methods cannot be conditionally compiled: both ends must agree on the methods; \
                 put the `#[cfg]` on the whole trait",
            );
        }
    }
    if let Some((reserved, owner)) = RESERVED.iter().find(|(reserved, _)| *reserved == name) {
        let owner =
            owner.replace("{client}", &format!("{trait_ident}Client")).replace("{trait}", &trait_ident.to_string());
        errors.at(
            &sig.ident,
            format!("#[service] method name `{reserved}` is reserved: it would clash with {owner}; rename the method"),
        );
    }

    check_receiver(sig, errors);

    let mut args = Vec::new();
    for input in sig.inputs.iter().skip(1) {
        let FnArg::Typed(pat_type) = input else { continue };
        for attr in &pat_type.attrs {
            errors.at(attr, "#[service] arguments cannot have attributes");
        }
        let stream_item = crate::model::stream_item(&pat_type.ty).cloned();
        match &stream_item {
            Some(item) => {
                check_type(item, Position::Argument, errors);
                if args.iter().any(|a: &Arg| a.stream_item.is_some()) {
                    errors.at(
                        &pat_type.ty,
                        "#[service] methods take at most one `Stream<T>` argument: a call carries one stream \
                         each way; send one stream of an enum or a tuple instead",
                    );
                }
            }
            None => check_type(&pat_type.ty, Position::Argument, errors),
        }
        match &*pat_type.pat {
            Pat::Ident(ident) if is_plain_name(&pat_type.pat) => {
                args.push(Arg { name: ident.ident.clone(), ty: (*pat_type.ty).clone(), stream_item });
            }
            Pat::Ident(ident) if ident.mutability.is_some() && ident.by_ref.is_none() && ident.subpat.is_none() => {
                errors.at(
                    &pat_type.pat,
                    "#[service] arguments must be plain names: remove the `mut` here and write it in the `impl`",
                );
                understood = false;
            }
            Pat::Wild(_) => {
                errors.at(
                    &pat_type.pat,
                    "#[service] arguments must be plain names: give this argument a name; \
                     the generated client method uses it",
                );
                understood = false;
            }
            other => {
                errors.at(
                    other,
                    "#[service] arguments must be plain names, not patterns: name the argument here and \
                     destructure it in the `impl`",
                );
                understood = false;
            }
        }
    }

    if let ReturnType::Type(_, ty) = &sig.output {
        match crate::model::stream_item(ty) {
            Some(item) => check_type(item, Position::Return, errors),
            None => check_type(ty, Position::Return, errors),
        }
    }

    if !understood {
        return None;
    }
    let signature = signature(args.iter().map(|a| &a.ty), &sig.output);
    Some(Method {
        ident: sig.ident.clone(),
        id: method_id(&name),
        name,
        docs: func.attrs.iter().filter(|a| a.path().is_ident("doc")).cloned().collect(),
        attrs: func.attrs.clone(),
        sig: sig.clone(),
        args,
        ret: ReturnKind::classify(&sig.output),
        is_async: sig.asyncness.is_some(),
        signature,
    })
}

/// The server runs calls concurrently on one shared instance, so methods take `&self`.
fn check_receiver(sig: &Signature, errors: &mut Errors) {
    let Some(FnArg::Receiver(receiver)) = sig.inputs.first() else {
        let span = match sig.inputs.first() {
            Some(first) => first.span(),
            None => sig.paren_token.span.join(),
        };
        errors.push(syn::Error::new(
            span,
            format!(
                "#[service] methods must take `&self` first: `{}` is called on the server's shared instance",
                sig.ident
            ),
        ));
        return;
    };
    let message = if receiver.colon_token.is_some() {
        Some("#[service] methods must take `&self`, not a typed `self`: write `&self`")
    } else if receiver.reference.is_none() {
        Some(
            "#[service] methods must take `&self`, not `self`: the server keeps one instance and calls it \
             concurrently",
        )
    } else if receiver.mutability.is_some() {
        Some(
            "#[service] methods must take `&self`, not `&mut self`: the server calls methods concurrently; \
             keep mutable state behind a lock (e.g. `Mutex`) or atomics",
        )
    } else if matches!(&receiver.reference, Some((_, Some(lifetime))) if lifetime.ident != "_") {
        Some("#[service] methods must take plain `&self`: remove the lifetime")
    } else {
        None
    };
    if let Some(message) = message {
        errors.at(receiver, message);
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Position {
    Argument,
    Return,
}

/// Rejects what cannot cross a process boundary or cannot be named on the client side:
/// borrows, `impl Trait`, `Self`.
fn check_type(ty: &Type, pos: Position, errors: &mut Errors) {
    match ty {
        Type::Reference(reference) => {
            let owned = owned_suggestion(&reference.elem);
            let message = match pos {
                Position::Argument => format!(
                    "#[service] arguments cannot be references: they are decoded into owned values on the \
                     server; take `{owned}` instead of `{}`",
                    crate::model::type_text(ty)
                ),
                Position::Return => format!(
                    "#[service] methods cannot return references: the value is sent to another process; \
                     return `{owned}` instead"
                ),
            };
            errors.at(reference, message);
        }
        Type::ImplTrait(impl_trait) => {
            let message = match pos {
                Position::Argument => {
                    "#[service] arguments cannot be `impl Trait`: the server must know the \
                                       concrete type to decode; name it"
                }
                Position::Return => {
                    "#[service] methods cannot return `impl Trait`: name the concrete type; \
                                     for an asynchronous method write `async fn`"
                }
            };
            errors.at(impl_trait, message);
        }
        Type::Path(path) => {
            if let Some(qself) = &path.qself {
                check_type(&qself.ty, pos, errors);
            }
            for segment in &path.path.segments {
                if crate::model::one_type_argument(segment, "Stream").is_some() {
                    errors.at(
                        segment,
                        match pos {
                            Position::Argument => {
                                "#[service] `Stream<T>` must be a whole argument, not part of one: the \
                                 stream's items travel apart from the arguments"
                            }
                            Position::Return => {
                                "#[service] `Stream<T>` must be the whole return type; to end a stream with \
                                 an application error, make its items `Result<T, E>`"
                            }
                        },
                    );
                }
                if segment.ident == "Self" {
                    errors.at(
                        &segment.ident,
                        "#[service] signatures cannot mention `Self`: the client is a different type; \
                         name the concrete type",
                    );
                }
                check_path_arguments(&segment.arguments, pos, errors);
            }
        }
        Type::Array(array) => check_type(&array.elem, pos, errors),
        Type::Slice(slice) => check_type(&slice.elem, pos, errors),
        Type::Paren(paren) => check_type(&paren.elem, pos, errors),
        Type::Group(group) => check_type(&group.elem, pos, errors),
        Type::Ptr(ptr) => check_type(&ptr.elem, pos, errors),
        Type::Tuple(tuple) => {
            for elem in &tuple.elems {
                check_type(elem, pos, errors);
            }
        }
        Type::TraitObject(object) => {
            for bound in &object.bounds {
                if let TypeParamBound::Trait(bound) = bound {
                    for segment in &bound.path.segments {
                        check_path_arguments(&segment.arguments, pos, errors);
                    }
                }
            }
        }
        _ => {}
    }
}

fn check_path_arguments(arguments: &PathArguments, pos: Position, errors: &mut Errors) {
    match arguments {
        PathArguments::None => {}
        PathArguments::AngleBracketed(generics) => {
            for arg in &generics.args {
                match arg {
                    GenericArgument::Type(ty) => check_type(ty, pos, errors),
                    GenericArgument::AssocType(assoc) => check_type(&assoc.ty, pos, errors),
                    GenericArgument::Lifetime(lifetime) if lifetime.ident != "static" => errors.at(
                        lifetime,
                        match pos {
                            Position::Argument => "#[service] arguments cannot borrow: use an owned type or `'static`",
                            Position::Return => {
                                "#[service] methods cannot return borrowed data: use an owned type or `'static`"
                            }
                        },
                    ),
                    _ => {}
                }
            }
        }
        PathArguments::Parenthesized(function) => {
            for input in &function.inputs {
                check_type(input, pos, errors);
            }
            if let ReturnType::Type(_, ty) = &function.output {
                check_type(ty, pos, errors);
            }
        }
    }
}

/// The owned type to suggest in place of a borrow of `elem`.
fn owned_suggestion(elem: &Type) -> String {
    match elem {
        Type::Path(path) if path.qself.is_none() && path.path.is_ident("str") => "String".to_owned(),
        Type::Path(path) if path.qself.is_none() && path.path.is_ident("Path") => "PathBuf".to_owned(),
        Type::Slice(slice) => format!("Vec<{}>", crate::model::type_text(&slice.elem)),
        other => crate::model::type_text(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proc_macro2::Span;
    use syn::parse_quote;

    fn errors_of(item: ItemTrait) -> Vec<String> {
        errors_with_args(ServiceArgs::default(), item)
    }

    fn errors_with_args(args: ServiceArgs, item: ItemTrait) -> Vec<String> {
        match validate(args, &item) {
            Ok(_) => Vec::new(),
            Err(err) => err.into_iter().map(|e| e.to_string()).collect(),
        }
    }

    fn assert_one_error(item: ItemTrait, needle: &str) {
        let errors = errors_of(item);
        assert_eq!(errors.len(), 1, "expected one error containing {needle:?}, got {errors:#?}");
        assert!(errors[0].contains(needle), "expected an error containing {needle:?}, got {errors:#?}");
    }

    #[test]
    fn accepts_the_calculator() {
        let item: ItemTrait = parse_quote! {
            pub trait Calculator {
                /// Adds two numbers.
                async fn add(&self, a: i64, b: i64) -> i64;
                async fn div(&self, a: i64, b: i64) -> Result<i64, MathError>;
                fn version(&self) -> String;
                async fn ping(&self);
                async fn echo(&self, s: Option<Vec<String>>, c: Cow<'static, str>) -> (String,);
            }
        };
        let service = validate(ServiceArgs::default(), &item).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(service.name, "Calculator");
        let names: Vec<_> = service.methods.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["add", "div", "version", "ping", "echo"]);
        let add = &service.methods[0];
        assert_eq!(add.id, method_id("add"));
        assert_eq!(add.signature, "(i64, i64) -> i64");
        assert_eq!(add.docs.len(), 1);
        assert!(add.is_async);
        assert!(!service.methods[2].is_async);
        assert_eq!(service.methods[1].signature, "(i64, i64) -> Result<i64, MathError>");
        assert!(matches!(service.methods[1].ret, ReturnKind::Fallible { .. }));
        assert_eq!(service.methods[3].ret, ReturnKind::Unit);
        assert_eq!(service.methods[3].signature, "() -> ()");
        assert_eq!(service.methods[4].signature, "(Option<Vec<String>>, Cow<'static, str>) -> (String,)");
    }

    #[test]
    fn raw_identifiers_travel_without_prefix() {
        let item: ItemTrait = parse_quote! { trait R { fn r#type(&self) -> u8; } };
        let service = validate(ServiceArgs::default(), &item).unwrap();
        assert_eq!(service.methods[0].name, "type");
        assert_eq!(service.methods[0].id, method_id("type"));
    }

    #[test]
    fn name_argument_overrides_the_service_name() {
        let item: ItemTrait = parse_quote! { trait Calculator { fn f(&self); } };
        let args = crate::parse::parse_args(quote::quote!(name = "calc.v1.Calculator", crate = "::my_rpc"));
        let service = validate(args, &item).unwrap();
        assert_eq!(service.name, "calc.v1.Calculator");
        assert_eq!(service.krate.to_token_stream().to_string(), quote::quote!(::my_rpc).to_string());
    }

    #[test]
    fn crate_argument_accepts_crate_relative_paths() {
        let item: ItemTrait = parse_quote! { trait Calculator { fn f(&self); } };
        let args = crate::parse::parse_args(quote::quote!(crate = "crate::rpc"));
        assert!(args.errors.is_empty());
        let service = validate(args, &item).unwrap();
        assert_eq!(service.krate.to_token_stream().to_string(), quote::quote!(crate::rpc).to_string());
    }

    #[test]
    fn unknown_and_duplicate_arguments() {
        let item: ItemTrait = parse_quote! { trait Calculator { fn f(&self); } };
        let args = crate::parse::parse_args(quote::quote!(
            nmae = "x",
            name = "a",
            name = "b",
            version(2),
            crate = "not a path"
        ));
        let errors = errors_with_args(args, item);
        assert_eq!(errors.len(), 4, "{errors:#?}");
        assert!(errors[0].contains("unknown #[service] argument `nmae`"));
        assert!(errors[1].contains("duplicate #[service] argument `name`"));
        assert!(errors[2].contains("unknown #[service] argument `version`"));
        assert!(errors[3].contains("`crate` must be a path"));
    }

    #[test]
    fn rejects_generic_methods() {
        assert_one_error(
            parse_quote! { trait T { fn f<X: Serialize>(&self, x: X); } },
            "#[service] methods cannot be generic",
        );
        assert_one_error(
            parse_quote! { trait T { fn f(&self, x: u8) where u8: Copy; } },
            "#[service] methods cannot have a where clause",
        );
    }

    #[test]
    fn rejects_receivers_other_than_shared_self() {
        assert_one_error(parse_quote! { trait T { fn f(&mut self); } }, "not `&mut self`");
        assert_one_error(parse_quote! { trait T { fn f(self); } }, "not `self`");
        assert_one_error(parse_quote! { trait T { fn f(self: Box<Self>); } }, "not a typed `self`");
        assert_one_error(parse_quote! { trait T { fn f(); } }, "must take `&self` first");
        assert_one_error(parse_quote! { trait T { fn f(x: u8); } }, "must take `&self` first");
    }

    #[test]
    fn accepts_anonymous_lifetime_on_self() {
        assert!(errors_of(parse_quote! { trait T { fn f(&'_ self); } }).is_empty());
    }

    #[test]
    fn rejects_references_anywhere_in_arguments() {
        assert_one_error(parse_quote! { trait T { fn f(&self, s: &str); } }, "take `String` instead of `&str`");
        assert_one_error(
            parse_quote! { trait T { fn f(&self, s: &'static [u8]); } },
            "take `Vec<u8>` instead of `&'static [u8]`",
        );
        assert_one_error(parse_quote! { trait T { fn f(&self, s: Option<&Thing>); } }, "take `Thing` instead");
        assert_one_error(parse_quote! { trait T { fn f(&self, s: Vec<(u8, &mut u8)>); } }, "cannot be references");
        assert_one_error(parse_quote! { trait T { fn f(&self, s: Cow<'a, str>); } }, "arguments cannot borrow");
        assert_one_error(parse_quote! { trait T { fn f(&self) -> &str; } }, "return `String` instead");
    }

    #[test]
    fn rejects_impl_trait() {
        assert_one_error(
            parse_quote! { trait T { fn f(&self, x: impl Serialize); } },
            "arguments cannot be `impl Trait`",
        );
        assert_one_error(
            parse_quote! { trait T { fn f(&self) -> impl Future<Output = u8>; } },
            "cannot return `impl Trait`",
        );
        assert_one_error(parse_quote! { trait T { fn f(&self, x: Vec<impl Sized>); } }, "`impl Trait`");
    }

    #[test]
    fn rejects_self_in_signatures() {
        assert_one_error(parse_quote! { trait T { fn f(&self) -> Self; } }, "cannot mention `Self`");
        assert_one_error(parse_quote! { trait T { fn f(&self, x: Vec<Self>); } }, "cannot mention `Self`");
    }

    #[test]
    fn rejects_patterns() {
        assert_one_error(parse_quote! { trait T { fn f(&self, (a, b): (u8, u8)); } }, "not patterns");
        assert_one_error(parse_quote! { trait T { fn f(&self, _: u8); } }, "give this argument a name");
        assert_one_error(parse_quote! { trait T { fn f(&self, mut a: u8); } }, "remove the `mut`");
        assert_one_error(parse_quote! { trait T { fn f(&self, ref a: u8); } }, "not patterns");
    }

    #[test]
    fn rejects_qualifiers() {
        assert_one_error(parse_quote! { trait T { unsafe fn f(&self); } }, "cannot be `unsafe fn`");
        assert_one_error(parse_quote! { trait T { extern "C" fn f(&self); } }, "cannot declare an ABI");
        assert_one_error(parse_quote! { trait T { const fn f(&self); } }, "cannot be `const fn`");
        assert_one_error(parse_quote! { trait T { fn f(&self, ...); } }, "cannot be variadic");
    }

    #[test]
    fn rejects_default_bodies() {
        assert_one_error(parse_quote! { trait T { fn f(&self) -> u8 { 1 } } }, "cannot have a default body");
        assert_one_error(parse_quote! { trait T { async fn f(&self) {} } }, "cannot have a default body");
    }

    #[test]
    fn rejects_trait_level_problems() {
        assert_one_error(parse_quote! { trait T<X> { fn f(&self); } }, "traits cannot be generic");
        assert_one_error(parse_quote! { trait T where u8: Copy { fn f(&self); } }, "traits cannot have a where clause");
        assert_one_error(parse_quote! { unsafe trait T { fn f(&self); } }, "traits cannot be `unsafe`");
        assert_one_error(parse_quote! { trait T { type X; fn f(&self); } }, "cannot have associated types");
        assert_one_error(parse_quote! { trait T { const X: u8; fn f(&self); } }, "cannot have associated constants");
        assert_one_error(parse_quote! { trait T { methods!(); fn f(&self); } }, "cannot contain macro invocations");
        assert_one_error(parse_quote! { trait T {} }, "has no methods");
    }

    #[test]
    fn rejects_reserved_names() {
        for name in [
            "connect",
            "connect_with",
            "from_connection",
            "from_connection_with",
            "from_client",
            "with_timeout",
            "with_deadline",
            "with_options",
            "rpc_client",
            "schema",
        ] {
            let ident = syn::Ident::new(name, Span::call_site());
            assert_one_error(
                parse_quote! { trait Calc { fn #ident(&self); } },
                &format!("`{name}` is reserved: it would clash with the generated `CalcClient::{name}`"),
            );
        }
        assert_one_error(
            parse_quote! { trait Calc { fn async_client(&self); } },
            "would clash with the generated `CalcBlockingClient::async_client`",
        );
        assert_one_error(
            parse_quote! { trait Calc { fn into_service(&self); } },
            "would clash with the provided method `Calc::into_service`",
        );
    }

    #[test]
    fn rejects_cfg_on_methods() {
        assert_one_error(parse_quote! { trait T { #[cfg(unix)] fn f(&self); fn g(&self); } }, "conditionally compiled");
    }

    #[test]
    fn rejects_colliding_ids() {
        assert_one_error(
            parse_quote! { trait T { fn set_71891(&self); fn add_60500(&self); } },
            "#[service] methods `set_71891` and `add_60500` have the same wire id 0xbf168ebe",
        );
    }

    #[test]
    fn rejects_duplicate_names() {
        assert_one_error(parse_quote! { trait T { fn f(&self); fn f(&self, x: u8); } }, "declared twice");
    }

    #[test]
    fn reports_every_error_at_once() {
        let errors = errors_of(parse_quote! {
            trait T<X> {
                type Assoc;
                fn a<Y>(&self, y: Y);
                fn b(&mut self, s: &str) -> impl Sized;
                fn connect(&self, (p, q): (u8, u8)) {}
            }
        });
        let expected = [
            "traits cannot be generic",
            "cannot have associated types",
            "methods cannot be generic",
            "not `&mut self`",
            "take `String` instead of `&str`",
            "cannot return `impl Trait`",
            "cannot have a default body",
            "`connect` is reserved",
            "not patterns",
        ];
        assert_eq!(errors.len(), expected.len(), "{errors:#?}");
        for needle in expected {
            assert!(errors.iter().any(|e| e.contains(needle)), "missing {needle:?} in {errors:#?}");
        }
    }
}
