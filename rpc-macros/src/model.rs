//! Stage 2's output: a service trait that passed validation, in the terms code generation needs.
//!
//! Everything wire-visible is decided here, once: a method's name, its id and its signature
//! string. Both ends of a connection compare these during the hello exchange, so they must not
//! depend on anything but the trait as written (not on the compiler's own token printing, which
//! has changed between releases).

use proc_macro2::{Delimiter, Ident, Spacing, TokenStream, TokenTree};
use quote::ToTokens;
use syn::{Attribute, GenericArgument, Path, PathArguments, ReturnType, Signature, Type, Visibility};

/// A valid service trait.
pub(crate) struct Service {
    /// The trait's identifier; the generated types are named after it.
    pub ident: Ident,
    /// The trait's visibility, given to everything generated.
    pub vis: Visibility,
    /// The service name sent in the hello exchange.
    pub name: String,
    /// The path of the `rpc` facade.
    pub krate: Path,
    /// The trait's attributes (docs, lints), kept on the rewritten trait.
    pub attrs: Vec<Attribute>,
    /// The supertraits the user wrote, kept alongside the ones the macro adds.
    pub supertraits: Vec<syn::TypeParamBound>,
    /// The methods, in declaration order.
    pub methods: Vec<Method>,
}

/// One method of a service.
pub(crate) struct Method {
    /// The identifier as written, possibly raw (`r#type`).
    pub ident: Ident,
    /// The name on the wire: the identifier without any `r#`.
    pub name: String,
    /// The method's doc comments, copied onto the client method.
    pub docs: Vec<Attribute>,
    /// All of the method's attributes, kept on the rewritten trait.
    pub attrs: Vec<Attribute>,
    /// The signature as written, from which the trait method is re-emitted.
    pub sig: Signature,
    /// The arguments after `&self`.
    pub args: Vec<Arg>,
    /// What the method returns, as the client sees it.
    pub ret: ReturnKind,
    /// Whether the method is an `async fn` (else a plain `fn` run inside the handler future).
    pub is_async: bool,
    /// The wire id: [`method_id`] of [`Method::name`].
    pub id: u32,
    /// The signature string: argument and return types, normalised by [`signature`].
    pub signature: String,
}

/// One argument of a method.
pub(crate) struct Arg {
    pub name: Ident,
    pub ty: Type,
    /// For the stream argument (`Stream<T>`), its item type `T`.
    pub stream_item: Option<Type>,
}

impl Method {
    /// The stream argument, if the method takes one.
    pub(crate) fn stream_arg(&self) -> Option<&Arg> {
        self.args.iter().find(|a| a.stream_item.is_some())
    }

    /// The arguments that travel in the request (all but the stream).
    pub(crate) fn plain_args(&self) -> impl Iterator<Item = &Arg> {
        self.args.iter().filter(|a| a.stream_item.is_none())
    }
}

/// What a method returns, which decides the client method's error type.
// Boxing would only save memory for the few methods of one trait, during one compilation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, PartialEq)]
pub(crate) enum ReturnKind {
    /// No return type, or `()`.
    Unit,
    /// Any other type, returned as a value.
    Plain(Type),
    /// A type written `Result<T, E>` (whatever its path): `Err` is the application's error and
    /// reaches the client as `CallError::App(E)`, apart from transport failures.
    Fallible { ok: Type, err: Type },
    /// A type written `Stream<T>` (whatever its path): the server streams items of type `T`.
    Stream { item: Type },
}

impl ReturnKind {
    /// Classifies a return type by its last path segment only: the macro cannot resolve names,
    /// and `Result<T, E>` with two type arguments is, in practice, always `core::result::Result`
    /// or an alias of it. A one-argument alias such as `io::Result<T>` hides its error type, so
    /// it is treated as a plain value.
    pub(crate) fn classify(output: &ReturnType) -> ReturnKind {
        let ty = match output {
            ReturnType::Default => return ReturnKind::Unit,
            ReturnType::Type(_, ty) => ty,
        };
        if let Some(item) = stream_item(ty) {
            return ReturnKind::Stream { item: item.clone() };
        }
        match peel(ty) {
            Type::Tuple(tuple) if tuple.elems.is_empty() => ReturnKind::Unit,
            Type::Path(path) if path.qself.is_none() => {
                let Some(last) = path.path.segments.last() else { return ReturnKind::Plain((**ty).clone()) };
                if last.ident != "Result" {
                    return ReturnKind::Plain((**ty).clone());
                }
                let PathArguments::AngleBracketed(generics) = &last.arguments else {
                    return ReturnKind::Plain((**ty).clone());
                };
                let types: Vec<&Type> = generics
                    .args
                    .iter()
                    .filter_map(|arg| match arg {
                        GenericArgument::Type(ty) => Some(ty),
                        _ => None,
                    })
                    .collect();
                match types.as_slice() {
                    [ok, err] if generics.args.len() == 2 => {
                        ReturnKind::Fallible { ok: (*ok).clone(), err: (*err).clone() }
                    }
                    _ => ReturnKind::Plain((**ty).clone()),
                }
            }
            _ => ReturnKind::Plain((**ty).clone()),
        }
    }
}

/// Whether an argument pattern is a bare name (`a`, not `mut a`, `_` or `(a, b)`): the name is
/// reused for the client method's argument and the server's decoded tuple.
pub(crate) fn is_plain_name(pat: &syn::Pat) -> bool {
    matches!(pat, syn::Pat::Ident(p) if p.by_ref.is_none() && p.mutability.is_none() && p.subpat.is_none())
}

/// The item type of a type written `Stream<T>` (whatever its path, so `rpc::Stream<T>` too):
/// the macro cannot resolve names, so in a service trait `Stream<T>` means the framework's.
pub(crate) fn stream_item(ty: &Type) -> Option<&Type> {
    let Type::Path(path) = peel(ty) else { return None };
    if path.qself.is_some() {
        return None;
    }
    let last = path.path.segments.last()?;
    one_type_argument(last, "Stream")
}

/// `T` of a path segment `name<T>`.
pub(crate) fn one_type_argument<'a>(segment: &'a syn::PathSegment, name: &str) -> Option<&'a Type> {
    if segment.ident != name {
        return None;
    }
    let PathArguments::AngleBracketed(generics) = &segment.arguments else { return None };
    match generics.args.iter().collect::<Vec<_>>().as_slice() {
        [GenericArgument::Type(item)] => Some(item),
        _ => None,
    }
}

/// Sees through parentheses and the invisible groups that `macro_rules!` wraps `$t:ty` in.
fn peel(ty: &Type) -> &Type {
    match ty {
        Type::Paren(inner) => peel(&inner.elem),
        Type::Group(inner) => peel(&inner.elem),
        _ => ty,
    }
}

/// The wire id of a method: 32-bit FNV-1a of its name's UTF-8 bytes.
///
/// Must equal `rpc_core::descriptor::method_id`; the macro computes it itself so it can reject
/// colliding names at compile time rather than leave the server to dispatch ambiguously.
pub(crate) const fn method_id(name: &str) -> u32 {
    let bytes = name.as_bytes();
    let mut hash: u32 = 0x811c_9dc5;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u32;
        hash = hash.wrapping_mul(0x0100_0193);
        i += 1;
    }
    hash
}

/// The signature string of a method: `(A, B) -> R`, with `()` for a missing return type.
///
/// Argument names are left out: renaming an argument does not change what travels.
///
/// A stream is written `Stream<T>` whatever path the trait names it by, so that `rpc::Stream<T>`
/// on one end and `Stream<T>` on the other agree: what travels is the same.
pub(crate) fn signature<'a>(args: impl IntoIterator<Item = &'a Type>, output: &ReturnType) -> String {
    let text = |ty: &Type| match stream_item(ty) {
        Some(item) => format!("Stream<{}>", type_text(item)),
        None => type_text(ty),
    };
    let args: Vec<String> = args.into_iter().map(text).collect();
    let ret = match output {
        ReturnType::Default => "()".to_owned(),
        ReturnType::Type(_, ty) => text(ty),
    };
    format!("({}) -> {}", args.join(", "), ret)
}

/// A type as written, printed with canonical spacing: `Result<Vec<u8>, ::my::Error>`.
pub(crate) fn type_text(ty: &Type) -> String {
    tokens_text(ty.to_token_stream())
}

/// One printable unit of a token stream, after gluing the punctuation that forms one operator.
#[derive(Debug, Clone, PartialEq)]
enum Atom {
    /// An identifier, a literal or a lifetime.
    Word(String),
    /// Punctuation, possibly several characters (`::`, `->`).
    Op(String),
    Open(char),
    Close(char),
}

/// Prints tokens with spacing that depends only on the tokens themselves.
///
/// The rules read like hand-written Rust: no space inside brackets or around `::`, `<`, `>`,
/// none before `,` and `;`, one space elsewhere.
pub(crate) fn tokens_text(tokens: TokenStream) -> String {
    let mut atoms = Vec::new();
    flatten(tokens, &mut atoms);
    let mut out = String::new();
    let mut prev: Option<&Atom> = None;
    for atom in &atoms {
        if let Some(prev) = prev {
            if space_between(prev, atom) {
                out.push(' ');
            }
        }
        match atom {
            Atom::Word(s) | Atom::Op(s) => out.push_str(s),
            Atom::Open(c) | Atom::Close(c) => out.push(*c),
        }
        prev = Some(atom);
    }
    out
}

fn flatten(tokens: TokenStream, atoms: &mut Vec<Atom>) {
    // A punct with `Joint` spacing that starts one of these operators is glued to the next one.
    const GLUED: [&str; 3] = ["::", "->", "=>"];
    let mut pending_joint: Option<char> = None;
    for tt in tokens {
        match tt {
            TokenTree::Group(group) => {
                pending_joint = None;
                let (open, close) = match group.delimiter() {
                    Delimiter::Parenthesis => ('(', ')'),
                    Delimiter::Bracket => ('[', ']'),
                    Delimiter::Brace => ('{', '}'),
                    Delimiter::None => {
                        flatten(group.stream(), atoms);
                        continue;
                    }
                };
                atoms.push(Atom::Open(open));
                flatten(group.stream(), atoms);
                atoms.push(Atom::Close(close));
            }
            TokenTree::Ident(ident) => {
                let text = ident.to_string();
                if pending_joint.take() == Some('\'') {
                    if let Some(Atom::Op(quote)) = atoms.last_mut() {
                        quote.push_str(&text);
                        let lifetime = std::mem::take(quote);
                        *atoms.last_mut().unwrap() = Atom::Word(lifetime);
                        continue;
                    }
                }
                atoms.push(Atom::Word(text));
            }
            TokenTree::Literal(lit) => {
                pending_joint = None;
                atoms.push(Atom::Word(lit.to_string()));
            }
            TokenTree::Punct(punct) => {
                let ch = punct.as_char();
                if let (Some(first), Some(Atom::Op(op))) = (pending_joint, atoms.last_mut()) {
                    let glued: String = [first, ch].iter().collect();
                    if op.len() == 1 && GLUED.contains(&glued.as_str()) {
                        *op = glued;
                        pending_joint = None;
                        continue;
                    }
                }
                atoms.push(Atom::Op(ch.to_string()));
                pending_joint = (punct.spacing() == Spacing::Joint).then_some(ch);
            }
        }
    }
}

fn space_between(prev: &Atom, next: &Atom) -> bool {
    let op = |atom: &Atom, s: &str| matches!(atom, Atom::Op(o) if o == s);
    if matches!(prev, Atom::Open(_)) || matches!(next, Atom::Close(_)) {
        return false;
    }
    if op(next, ",") || op(next, ";") || op(next, ">") {
        return false;
    }
    // Prefix operators bind to what follows: `&str`, `*const T`, `?Sized`, `!Send`.
    if ["::", "<", "&", "*", "?", "!"].iter().any(|s| op(prev, s)) {
        return false;
    }
    let word_like = matches!(prev, Atom::Word(_) | Atom::Close(_)) || op(prev, ">");
    if op(next, "::") || op(next, "<") {
        return !word_like;
    }
    if let Atom::Open(_) = next {
        // `Fn(u8)`, `fn(u8)`; but `-> (u8, u8)`, `&'a [u8]` and `dyn (Trait)` keep their space.
        const KEYWORDS: [&str; 6] = ["mut", "const", "dyn", "impl", "as", "for"];
        return !matches!(prev, Atom::Word(w) if !w.starts_with('\'') && !KEYWORDS.contains(&w.as_str()));
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use syn::parse_quote;

    #[test]
    fn method_id_is_32_bit_fnv1a() {
        // Reference values of 32-bit FNV-1a, as also asserted by rpc-core.
        assert_eq!(method_id(""), 0x811c_9dc5);
        assert_eq!(method_id("a"), 0xe40c_292c);
        assert_eq!(method_id("foobar"), 0xbf9c_f968);
        assert_eq!(method_id("add"), 0x3b39_1274);
        assert_ne!(method_id("add"), method_id("div"));
        // A known collision, used by the validation tests.
        assert_eq!(method_id("set_71891"), method_id("add_60500"));
    }

    #[test]
    fn method_id_is_const() {
        const ID: u32 = method_id("ping");
        assert_eq!(ID, method_id("ping"));
    }

    fn text(ty: Type) -> String {
        type_text(&ty)
    }

    #[test]
    fn type_text_is_canonical() {
        assert_eq!(text(parse_quote!(i64)), "i64");
        assert_eq!(text(parse_quote!(Result<i64, MathError>)), "Result<i64, MathError>");
        assert_eq!(text(parse_quote!(Result < i64 ,MathError >)), "Result<i64, MathError>");
        assert_eq!(text(parse_quote!(::std::string::String)), "::std::string::String");
        assert_eq!(text(parse_quote!(std::string::String)), "std::string::String");
        assert_eq!(text(parse_quote!(Option<Vec<u8>>)), "Option<Vec<u8>>");
        assert_eq!(text(parse_quote!(Vec<(i64, String)>)), "Vec<(i64, String)>");
        assert_eq!(text(parse_quote!((i64,))), "(i64,)");
        assert_eq!(text(parse_quote!(())), "()");
        assert_eq!(text(parse_quote!([u8; 4])), "[u8; 4]");
        assert_eq!(text(parse_quote!(Cow<'static, str>)), "Cow<'static, str>");
        assert_eq!(text(parse_quote!(&'static str)), "&'static str");
        assert_eq!(text(parse_quote!(&'static [u8])), "&'static [u8]");
        assert_eq!(text(parse_quote!(&mut [u8])), "&mut [u8]");
        assert_eq!(text(parse_quote!(*const [u8; 2])), "*const [u8; 2]");
        assert_eq!(text(parse_quote!(HashMap<String, Vec<Option<u8>>>)), "HashMap<String, Vec<Option<u8>>>");
        assert_eq!(text(parse_quote!(Box<dyn Fn(u8) -> u8 + Send>)), "Box<dyn Fn(u8) -> u8 + Send>");
        assert_eq!(text(parse_quote!(<T as Trait>::Assoc)), "<T as Trait>::Assoc");
        assert_eq!(text(parse_quote!(Vec::<u8>)), "Vec::<u8>");
        assert_eq!(text(parse_quote!(fn(u8, u16) -> ())), "fn(u8, u16) -> ()");
        assert_eq!(text(parse_quote!(r#type::Foo)), "r#type::Foo");
    }

    #[test]
    fn type_text_ignores_invisible_groups() {
        // What `macro_rules!` hands over for a `$t:ty`.
        let inner: TokenStream = quote::quote!(Vec<u8>);
        let grouped = TokenStream::from(TokenTree::Group(proc_macro2::Group::new(Delimiter::None, inner)));
        let ty: Type = parse_quote!(Option<#grouped>);
        assert_eq!(type_text(&ty), "Option<Vec<u8>>");
    }

    #[test]
    fn type_text_does_not_depend_on_joint_spacing_of_closing_angles() {
        // `>>` arrives as a joint pair from source and as two lone puncts from quote!: same text.
        let from_source: Type = syn::parse_str("Option<Vec<u8>>").unwrap();
        let from_quote: Type = parse_quote!(Option<Vec<u8>>);
        assert_eq!(type_text(&from_source), type_text(&from_quote));
        let ty: Type = syn::parse_str("Result<i64,::core::fmt::Error>").unwrap();
        assert_eq!(type_text(&ty), "Result<i64, ::core::fmt::Error>");
    }

    #[test]
    fn signature_strings() {
        let i64_: Type = parse_quote!(i64);
        let string: Type = parse_quote!(String);
        assert_eq!(signature([&i64_, &i64_], &parse_quote!(-> i64)), "(i64, i64) -> i64");
        assert_eq!(signature([], &parse_quote!(-> String)), "() -> String");
        assert_eq!(signature([&string], &ReturnType::Default), "(String) -> ()");
        assert_eq!(signature([&string], &parse_quote!(-> ())), "(String) -> ()");
        assert_eq!(
            signature([&i64_, &i64_], &parse_quote!(-> Result<i64, MathError>)),
            "(i64, i64) -> Result<i64, MathError>"
        );
    }

    fn classify(output: ReturnType) -> ReturnKind {
        ReturnKind::classify(&output)
    }

    #[test]
    fn return_kinds() {
        assert_eq!(classify(ReturnType::Default), ReturnKind::Unit);
        assert_eq!(classify(parse_quote!(-> ())), ReturnKind::Unit);
        assert_eq!(classify(parse_quote!(-> i64)), ReturnKind::Plain(parse_quote!(i64)));
        assert_eq!(
            classify(parse_quote!(-> Result<i64, MathError>)),
            ReturnKind::Fallible { ok: parse_quote!(i64), err: parse_quote!(MathError) }
        );
        assert_eq!(
            classify(parse_quote!(-> ::core::result::Result<(), String>)),
            ReturnKind::Fallible { ok: parse_quote!(()), err: parse_quote!(String) }
        );
        assert_eq!(
            classify(parse_quote!(-> (Result<Vec<u8>, E>))),
            ReturnKind::Fallible { ok: parse_quote!(Vec<u8>), err: parse_quote!(E) }
        );
        // One type argument hides the error type: a plain value.
        assert_eq!(classify(parse_quote!(-> io::Result<u8>)), ReturnKind::Plain(parse_quote!(io::Result<u8>)));
        assert_eq!(classify(parse_quote!(-> Result)), ReturnKind::Plain(parse_quote!(Result)));
        assert_eq!(classify(parse_quote!(-> Option<i64>)), ReturnKind::Plain(parse_quote!(Option<i64>)));
        assert_eq!(classify(parse_quote!(-> Vec<Result<u8, E>>)), ReturnKind::Plain(parse_quote!(Vec<Result<u8, E>>)));
        assert_eq!(classify(parse_quote!(-> Result<u8, E, F>)), ReturnKind::Plain(parse_quote!(Result<u8, E, F>)));
    }
}
