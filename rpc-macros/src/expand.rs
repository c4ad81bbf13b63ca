//! Stage 3: code generation from a validated [`Service`].
//!
//! For `trait Foo` this emits the rewritten trait, `FooServer<S>` (the `Service` the server
//! engine dispatches to) and `FooClient` (typed methods over `Client`).
//!
//! The expansion lands in the user's module, where anything may be shadowed or missing (up to
//! `#![no_implicit_prelude]`), so every path is absolute: `::core`, `::std`, or the facade's
//! `__private` module. Local variables that sit next to user-named arguments get
//! `Span::mixed_site()`, so an argument called `method`, `args` or `inner` cannot collide.

use proc_macro2::{Literal, Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{ItemTrait, ReturnType, Signature, TraitItem, TypeParamBound};

use crate::model::{is_plain_name, Method, ReturnKind, Service};

pub(crate) fn expand(service: &Service) -> TokenStream {
    let names = Names::new(service);
    let trait_def = trait_def(service, &names);
    let server = server(service, &names);
    let client = client(service, &names);
    let blocking = blocking_client(service, &names);
    quote! {
        #trait_def
        #server
        #client
        #blocking
    }
}

/// The trait alone, rewritten as far as possible, for when validation failed: impls of the
/// trait then still find it, and the user sees the macro's errors rather than a cascade.
pub(crate) fn fallback_trait(item: &ItemTrait) -> TokenStream {
    let mut item = item.clone();
    for trait_item in &mut item.items {
        if let TraitItem::Fn(func) = trait_item {
            if func.default.is_none() {
                func.sig = send_future_sig(&func.sig);
                // Already reported by validation; rustc would report them a second time.
                func.sig.constness = None;
                for input in &mut func.sig.inputs {
                    if let syn::FnArg::Typed(arg) = input {
                        if !is_plain_name(&arg.pat) {
                            *arg.pat = syn::parse_quote!(_);
                        }
                    }
                }
            }
        }
    }
    let bounds = thread_safe_bounds(item.ident.span());
    item.supertraits = item.supertraits.iter().filter(|b| !is_added_bound(b)).cloned().collect();
    item.supertraits.extend(bounds);
    item.colon_token.get_or_insert_with(Default::default);
    quote!(#item)
}

/// Names of the generated items and of the paths they use.
struct Names {
    server: syn::Ident,
    client: syn::Ident,
    blocking: syn::Ident,
    /// `<crate>::__private`.
    private: TokenStream,
}

impl Names {
    fn new(service: &Service) -> Self {
        let krate = &service.krate;
        Names {
            server: format_ident!("{}Server", service.ident),
            client: format_ident!("{}Client", service.ident),
            blocking: format_ident!("{}BlockingClient", service.ident),
            private: quote!(#krate::__private),
        }
    }
}

/// `Send + Sync + 'static`: the server shares one instance between concurrent calls on
/// several runtime threads, for as long as it runs.
///
/// Spanned at the trait's name, where "required by this bound" then points when an
/// implementation is not thread-safe.
fn thread_safe_bounds(span: Span) -> Vec<TypeParamBound> {
    vec![
        syn::parse_quote_spanned!(span=> ::core::marker::Send),
        syn::parse_quote_spanned!(span=> ::core::marker::Sync),
        TypeParamBound::Lifetime(syn::Lifetime::new("'static", span)),
    ]
}

/// Whether a supertrait the user wrote is one the macro adds anyway (and would repeat).
fn is_added_bound(bound: &TypeParamBound) -> bool {
    match bound {
        TypeParamBound::Lifetime(lifetime) => lifetime.ident == "static",
        TypeParamBound::Trait(bound) => {
            bound
                .path
                .segments
                .last()
                .is_some_and(|s| s.arguments.is_empty() && (s.ident == "Send" || s.ident == "Sync"))
                && bound.lifetimes.is_none()
                && matches!(bound.modifier, syn::TraitBoundModifier::None)
        }
        _ => false,
    }
}

/// `async fn f(&self) -> R` as `fn f(&self) -> impl Future<Output = R> + Send`: handler futures
/// are spawned on a multi-threaded runtime, and a bare `async fn` in a trait promises no `Send`.
/// Implementations still write `async fn`.
fn send_future_sig(sig: &Signature) -> Signature {
    let Some(async_token) = sig.asyncness else { return sig.clone() };
    let mut sig = sig.clone();
    sig.asyncness = None;
    let output = match &sig.output {
        ReturnType::Default => quote!(()),
        ReturnType::Type(_, ty) => quote!(#ty),
    };
    // Spanned at `async` so that "future cannot be sent between threads safely" in an impl
    // points at the declaration that demands it.
    let span = async_token.span();
    let ty: syn::Type = syn::parse2(quote_spanned! {span=>
        impl ::core::future::Future<Output = #output> + ::core::marker::Send
    })
    .expect("a future type parses");
    sig.output = ReturnType::Type(syn::Token![->](span), Box::new(ty));
    sig
}

fn trait_def(service: &Service, names: &Names) -> TokenStream {
    let Service { ident, vis, attrs, supertraits, .. } = service;
    let server = &names.server;
    let supertraits = supertraits.iter().filter(|b| !is_added_bound(b));
    let bounds = thread_safe_bounds(ident.span());
    let methods = service.methods.iter().map(|method| {
        let attrs = &method.attrs;
        let sig = send_future_sig(&method.sig);
        quote! {
            #(#attrs)*
            #sig;
        }
    });
    let into_service_doc = format!(" Wraps this implementation in a [`{server}`], ready to be added to a server.");
    quote! {
        #(#attrs)*
        #vis trait #ident: #(#supertraits +)* #(#bounds)+* {
            #(#methods)*

            #[doc = #into_service_doc]
            fn into_service(self) -> #server<Self>
            where
                Self: ::core::marker::Sized,
            {
                #server::new(self)
            }
        }
    }
}

fn server(service: &Service, names: &Names) -> TokenStream {
    let Service { ident, vis, .. } = service;
    let Names { server, client, private, .. } = names;
    // Type parameter of the `Service` impl, whose body names the user's argument types: a
    // plain `S` would capture a user type called `S`.
    let service_param = format_ident!("__S");
    let method = syn::Ident::new("method", Span::mixed_site());
    let args = syn::Ident::new("args", Span::mixed_site());
    let inner = syn::Ident::new("inner", Span::mixed_site());
    let setup = syn::Ident::new("setup", Span::mixed_site());

    let arms = service.methods.iter().map(|m| {
        let id = id_literal(m.id);
        let fn_ident = &m.ident;
        let all_names = m.args.iter().map(|a| &a.name);
        let arg_names: Vec<_> = m.plain_args().map(|a| &a.name).collect();
        let arg_types = m.plain_args().map(|a| &a.ty);
        let call = quote!(<#service_param as #ident>::#fn_ident(&*#inner, #(#all_names),*));
        let body = if m.is_async { quote!(#call.await) } else { call };
        // "`T: Deserialize` is not satisfied" and the like then point at the method (or its
        // return type) in the trait rather than at the `#[service]` attribute.
        let decode = {
            let private = respan(private, m.ident.span());
            quote_spanned!(m.ident.span()=> #private::decode_args(#args))
        };
        let handler = {
            let private = respan(private, return_span(m));
            let make = match m.ret {
                ReturnKind::Stream { .. } => quote!(stream_handler),
                _ => quote!(handler),
            };
            quote_spanned!(return_span(m)=> #private::#make(async move { #body }))
        };
        let incoming = m.stream_arg().map(|arg| {
            let (name, item) = (&arg.name, arg.stream_item.as_ref().expect("a stream argument"));
            quote_spanned!(arg.ty.span()=> let #name = #setup.incoming::<#item>();)
        });
        quote! {
            #id => {
                let (#(#arg_names,)*): (#(#arg_types,)*) = #decode?;
                #incoming
                let #inner = ::core::clone::Clone::clone(&self.inner);
                ::core::result::Result::Ok(#handler)
            }
        }
    });

    let doc = format!(
        " Serves an implementation of [`{ident}`]: the `Service` to add to a server.\n\
         \n Made by [`{ident}::into_service`], [`{server}::new`] or [`{server}::from_arc`]; clones share the \
         implementation."
    );
    quote! {
        #[doc = #doc]
        #vis struct #server<S> {
            inner: ::std::sync::Arc<S>,
        }

        impl<S> #server<S> {
            /// Wraps `service`, which then runs every call made to this server.
            #vis fn new(service: S) -> Self {
                #server { inner: ::std::sync::Arc::new(service) }
            }

            /// Wraps an implementation that is also used elsewhere in this process.
            #vis fn from_arc(service: ::std::sync::Arc<S>) -> Self {
                #server { inner: service }
            }
        }

        impl<S> ::core::clone::Clone for #server<S> {
            fn clone(&self) -> Self {
                #server { inner: ::core::clone::Clone::clone(&self.inner) }
            }
        }

        impl<S> ::core::fmt::Debug for #server<S> {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.debug_struct(::core::stringify!(#server))
                    .field("service", &#client::DESCRIPTOR.name)
                    .finish_non_exhaustive()
            }
        }

        impl<#service_param: #ident> #private::Service for #server<#service_param> {
            fn descriptor(&self) -> &'static #private::ServiceDescriptor {
                #client::DESCRIPTOR
            }

            fn schema(&self) -> ::core::option::Option<&'static #private::ServiceSchema> {
                ::core::option::Option::Some(#client::schema())
            }

            fn call(
                &self,
                #method: ::core::primitive::u32,
                #args: &[::core::primitive::u8],
                #setup: &mut #private::CallSetup<'_>,
            ) -> ::core::result::Result<#private::Call, #private::RemoteError> {
                let _ = &#setup;
                match #method {
                    #(#arms)*
                    _ => ::core::result::Result::Err(#private::unknown_method(#method)),
                }
            }
        }
    }
}

fn client(service: &Service, names: &Names) -> TokenStream {
    let Service { ident, vis, name, .. } = service;
    let Names { client, private, .. } = names;

    let descriptors = service.methods.iter().map(|m| {
        let name = &m.name;
        let id = id_literal(m.id);
        let signature = &m.signature;
        quote! {
            #private::MethodDescriptor { name: #name, id: #id, signature: #signature }
        }
    });

    let methods = service.methods.iter().enumerate().map(|(index, m)| client_method(index, m, service, names));
    let schema = schema_fn(service, names);

    let doc = format!(
        " Client of the [`{ident}`] service: each method sends one call to the server and awaits its answer.\n\
         \n Made by [`{client}::connect`] or [`{client}::connect_with`] (or from an existing connection or \
         client). Cloning is cheap: clones share the connection, and [`{client}::with_timeout`] and its \
         siblings return such a clone with other call options."
    );
    quote! {
        #[doc = #doc]
        #vis struct #client {
            client: #private::Client,
            options: #private::CallOptions,
        }

        impl ::core::clone::Clone for #client {
            fn clone(&self) -> Self {
                #client {
                    client: ::core::clone::Clone::clone(&self.client),
                    options: ::core::clone::Clone::clone(&self.options),
                }
            }
        }

        impl ::core::fmt::Debug for #client {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.debug_struct(::core::stringify!(#client))
                    .field("service", &#client::DESCRIPTOR.name)
                    .finish_non_exhaustive()
            }
        }

        impl #client {
            /// The service's name and methods, which client and server compare when connecting.
            #vis const DESCRIPTOR: &'static #private::ServiceDescriptor = {
                // A `static`, not a promoted constant, so that every use sees one address.
                static DESCRIPTOR: #private::ServiceDescriptor = #private::ServiceDescriptor {
                    name: #name,
                    methods: &[#(#descriptors),*],
                };
                &DESCRIPTOR
            };

            /// Connects to the server at `addr` (e.g. `"tcp://127.0.0.1:4000"`) and checks that it
            /// serves this service with the same methods. The same as
            /// [`connect_with`](Self::connect_with) with default options.
            #vis async fn connect(
                addr: &::core::primitive::str,
            ) -> ::core::result::Result<Self, #private::RpcError> {
                #client::connect_with(addr, ::core::default::Default::default()).await
            }

            /// Like [`connect`](Self::connect), with options: the handshake timeout, the stream
            /// window, the default deadline of every call, and the transport's options (see
            /// `rpc::ClientOptions`).
            #vis async fn connect_with(
                addr: &::core::primitive::str,
                options: #private::ClientOptions,
            ) -> ::core::result::Result<Self, #private::RpcError> {
                ::core::result::Result::map(
                    #private::connect_service_with(addr, #client::DESCRIPTOR, options).await,
                    #client::from_client,
                )
            }

            /// Performs the hello exchange for this service over an established connection. The
            /// same as [`from_connection_with`](Self::from_connection_with) with default options.
            #vis async fn from_connection(
                conn: #private::Connection,
            ) -> ::core::result::Result<Self, #private::RpcError> {
                #client::from_connection_with(conn, ::core::default::Default::default()).await
            }

            /// Like [`from_connection`](Self::from_connection), with options: the handshake
            /// timeout, the stream window and the default deadline of every call (see
            /// `rpc::ClientOptions`; its transport options and reconnecting do not apply to a
            /// connection made already).
            #vis async fn from_connection_with(
                conn: #private::Connection,
                options: #private::ClientOptions,
            ) -> ::core::result::Result<Self, #private::RpcError> {
                ::core::result::Result::map(
                    #private::handshake_service_with(conn, #client::DESCRIPTOR, options).await,
                    #client::from_client,
                )
            }

            /// Wraps a client whose hello exchange was made with [`Self::DESCRIPTOR`]. Its calls
            /// start with the client's default call options.
            #vis fn from_client(client: #private::Client) -> Self {
                let options = ::core::clone::Clone::clone(#private::Client::default_call_options(&client));
                #client { client, options }
            }

            /// A clone whose calls fail with a timeout error when they take longer than `timeout`
            /// (instead of any timeout this client's calls had, such as the default one given
            /// to [`connect_with`](Self::connect_with)).
            #vis fn with_timeout(&self, timeout: ::std::time::Duration) -> Self {
                self.with_options(::core::clone::Clone::clone(&self.options).timeout(timeout))
            }

            /// A clone whose calls fail with a timeout error when not answered by `deadline`.
            #vis fn with_deadline(&self, deadline: ::std::time::Instant) -> Self {
                self.with_options(::core::clone::Clone::clone(&self.options).deadline(deadline))
            }

            /// A clone that makes its calls with `options`, instead of the ones this client makes
            /// them with.
            #vis fn with_options(&self, options: #private::CallOptions) -> Self {
                #client { client: ::core::clone::Clone::clone(&self.client), options }
            }

            /// The untyped client underneath, e.g. to inspect the connection.
            #vis fn rpc_client(&self) -> &#private::Client {
                &self.client
            }

            #schema

            #(#methods)*
        }
    }
}

/// `FooBlockingClient`: `FooClient`'s methods, each blocking until its answer.
fn blocking_client(service: &Service, names: &Names) -> TokenStream {
    let Service { ident, vis, .. } = service;
    let Names { client, blocking, private, .. } = names;
    let methods = service.methods.iter().map(|m| {
        let fn_ident = &m.ident;
        let all_names: Vec<_> = m.args.iter().map(|a| &a.name).collect();
        let arg_types = m.args.iter().map(|a| &a.ty);
        let docs = if m.docs.is_empty() {
            let doc = format!(" Calls [`{}::{}`] on the server and waits for its answer.", ident, m.ident);
            quote!(#[doc = #doc])
        } else {
            let docs = &m.docs;
            quote!(#(#docs)*)
        };
        let call = quote!(#client::#fn_ident(&self.client, #(#all_names),*));
        let (output, body) = match &m.ret {
            ReturnKind::Stream { item } => (
                quote!(::core::result::Result<#private::BlockingStreaming<#item>, #private::RpcError>),
                quote!(::core::result::Result::map(#private::block_on(#call), #private::BlockingStreaming::new)),
            ),
            ReturnKind::Unit => {
                (quote!(::core::result::Result<(), #private::RpcError>), quote!(#private::block_on(#call)))
            }
            ReturnKind::Plain(ty) => {
                (quote!(::core::result::Result<#ty, #private::RpcError>), quote!(#private::block_on(#call)))
            }
            ReturnKind::Fallible { ok, err } => {
                (quote!(::core::result::Result<#ok, #private::CallError<#err>>), quote!(#private::block_on(#call)))
            }
        };
        quote! {
            #docs
            #[allow(clippy::too_many_arguments)]
            #vis fn #fn_ident(&self, #(#all_names: #arg_types),*) -> #output {
                #body
            }
        }
    });
    let doc = format!(
        " Blocking client of the [`{ident}`] service, for code that is not async: each method sends one \
         call and waits for its answer (see `rpc::blocking`).\n\
         \n Usable from any number of threads at once; clones share the connection. Not for async \
         code, where its calls panic: use [`{client}`] there."
    );
    quote! {
        #[doc = #doc]
        #[derive(::core::clone::Clone, ::core::fmt::Debug)]
        #vis struct #blocking {
            client: #client,
        }

        impl #blocking {
            /// Connects to the server at `addr` (e.g. `"tcp://127.0.0.1:4000"`), waiting until
            /// connected, and checks that it serves this service with the same methods.
            #vis fn connect(addr: &::core::primitive::str) -> ::core::result::Result<Self, #private::RpcError> {
                #blocking::connect_with(addr, ::core::default::Default::default())
            }

            /// Like [`connect`](Self::connect), with options (see `rpc::ClientOptions`).
            #vis fn connect_with(
                addr: &::core::primitive::str,
                options: #private::ClientOptions,
            ) -> ::core::result::Result<Self, #private::RpcError> {
                ::core::result::Result::map(
                    #private::block_on(#client::connect_with(addr, options)),
                    |client| #blocking { client },
                )
            }

            /// A clone whose calls fail with a timeout error when they take longer than `timeout`.
            #vis fn with_timeout(&self, timeout: ::std::time::Duration) -> Self {
                #blocking { client: self.client.with_timeout(timeout) }
            }

            /// A clone whose calls fail with a timeout error when not answered by `deadline`.
            #vis fn with_deadline(&self, deadline: ::std::time::Instant) -> Self {
                #blocking { client: self.client.with_deadline(deadline) }
            }

            /// A clone that makes its calls with `options`.
            #vis fn with_options(&self, options: #private::CallOptions) -> Self {
                #blocking { client: self.client.with_options(options) }
            }

            /// The async client underneath (sharing this one's connection).
            #vis fn async_client(&self) -> &#client {
                &self.client
            }

            #(#methods)*
        }
    }
}

/// `schema()`: the service's schema (`rpc::schema`), traced from its types the first time.
fn schema_fn(service: &Service, names: &Names) -> TokenStream {
    let Names { client, private, .. } = names;
    let vis = &service.vis;
    let name = &service.name;
    let service_docs = doc_text(&service.attrs);
    let builder = syn::Ident::new("builder", Span::mixed_site());
    let methods = service.methods.iter().enumerate().map(|(index, m)| {
        let index = Literal::usize_unsuffixed(index);
        let docs = doc_text(&m.docs);
        let args = m.plain_args().map(|a| {
            let (arg_name, ty) = (unraw(&a.name), &a.ty);
            quote!(#private::Field::new(#arg_name, #builder.ty::<#ty>()))
        });
        let stream_arg = match m.stream_arg() {
            Some(a) => {
                let (arg_name, item) = (unraw(&a.name), a.stream_item.as_ref().expect("a stream argument"));
                quote!(::core::option::Option::Some(#private::Field::new(#arg_name, #builder.ty::<#item>())))
            }
            None => quote!(::core::option::Option::None),
        };
        let (kind, returns, error) = match &m.ret {
            ReturnKind::Stream { item } => (quote!(ServerStream), quote!(#builder.ty::<#item>()), None),
            ReturnKind::Unit => (quote!(Unary), quote!(#builder.ty::<()>()), None),
            ReturnKind::Plain(ty) => (quote!(Unary), quote!(#builder.ty::<#ty>()), None),
            ReturnKind::Fallible { ok, err } => (quote!(Unary), quote!(#builder.ty::<#ok>()), Some(err)),
        };
        let kind = match (&m.ret, m.stream_arg()) {
            (ReturnKind::Stream { .. }, _) => kind,
            (_, Some(_)) => quote!(ClientStream),
            _ => kind,
        };
        let error = match error {
            Some(err) => quote!(::core::option::Option::Some(#builder.ty::<#err>())),
            None => quote!(::core::option::Option::None),
        };
        quote! {{
            let args = ::std::vec![#(#args),*];
            let stream_arg = #stream_arg;
            let returns = #returns;
            let error = #error;
            #builder.method(
                &#client::DESCRIPTOR.methods[#index],
                #docs,
                #private::MethodKind::#kind,
                args,
                stream_arg,
                returns,
                error,
            );
        }}
    });
    quote! {
        /// The structure of this service's methods and of the types they use, as the server's
        /// reflection service reports it (see `rpc::schema`). Traced from the types' serde
        /// implementations the first time it is asked for.
        #vis fn schema() -> &'static #private::ServiceSchema {
            static SCHEMA: ::std::sync::OnceLock<#private::ServiceSchema> = ::std::sync::OnceLock::new();
            SCHEMA.get_or_init(|| {
                #private::SchemaBuilder::build(#name, #service_docs, |#builder: &mut #private::SchemaBuilder| {
                    #(#methods)*
                })
            })
        }
    }
}

/// The text of `#[doc = "..."]` attributes, one line each.
fn doc_text(attrs: &[syn::Attribute]) -> String {
    let lines: Vec<String> = attrs
        .iter()
        .filter(|a| a.path().is_ident("doc"))
        .filter_map(|a| match &a.meta {
            syn::Meta::NameValue(syn::MetaNameValue {
                value: syn::Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(s), .. }),
                ..
            }) => Some(s.value()),
            _ => None,
        })
        .collect();
    lines.join("\n")
}

/// An identifier without any `r#`.
fn unraw(ident: &syn::Ident) -> String {
    let text = ident.to_string();
    text.strip_prefix("r#").map(str::to_owned).unwrap_or(text)
}

/// Hexadecimal, as in the collision error message, so ids in an expansion can be matched up.
fn id_literal(id: u32) -> syn::LitInt {
    syn::LitInt::new(&format!("{id:#010x}_u32"), Span::call_site())
}

fn client_method(index: usize, m: &Method, service: &Service, names: &Names) -> TokenStream {
    let Names { client, private, .. } = names;
    let vis = &service.vis;
    let fn_ident = &m.ident;
    let all_names: Vec<_> = m.args.iter().map(|a| &a.name).collect();
    let arg_names: Vec<_> = m.plain_args().map(|a| &a.name).collect();
    let arg_types = m.args.iter().map(|a| &a.ty);
    let index = Literal::usize_unsuffixed(index);
    let docs = if m.docs.is_empty() {
        let doc = format!(" Calls [`{}::{}`] on the server.", service.ident, m.ident);
        quote!(#[doc = #doc])
    } else {
        let docs = &m.docs;
        quote!(#(#docs)*)
    };
    let descriptor = quote!(&#client::DESCRIPTOR.methods[#index]);
    let args_tuple = quote!(&(#(#arg_names,)*));
    let outgoing = m.stream_arg().map(|arg| {
        let name = &arg.name;
        quote_spanned!(arg.ty.span()=> #private::EncodedStream::new(#name))
    });
    let (output, call, outgoing) = match (&m.ret, outgoing) {
        (ReturnKind::Stream { item }, outgoing) => {
            let outgoing = match outgoing {
                Some(outgoing) => quote!(::core::option::Option::Some(#outgoing),),
                None => quote!(::core::option::Option::None,),
            };
            (
                quote!(::core::result::Result<#private::Streaming<#item>, #private::RpcError>),
                quote!(call_streaming::<_, #item>),
                outgoing,
            )
        }
        (ReturnKind::Unit, None) => {
            (quote!(::core::result::Result<(), #private::RpcError>), quote!(call::<_, ()>), quote!())
        }
        (ReturnKind::Plain(ty), None) => {
            (quote!(::core::result::Result<#ty, #private::RpcError>), quote!(call::<_, #ty>), quote!())
        }
        (ReturnKind::Fallible { ok, err }, None) => (
            quote!(::core::result::Result<#ok, #private::CallError<#err>>),
            quote!(call_fallible::<_, #ok, #err>),
            quote!(),
        ),
        (ReturnKind::Unit, Some(outgoing)) => {
            (quote!(::core::result::Result<(), #private::RpcError>), quote!(call_sending::<_, ()>), quote!(#outgoing,))
        }
        (ReturnKind::Plain(ty), Some(outgoing)) => (
            quote!(::core::result::Result<#ty, #private::RpcError>),
            quote!(call_sending::<_, #ty>),
            quote!(#outgoing,),
        ),
        (ReturnKind::Fallible { ok, err }, Some(outgoing)) => (
            quote!(::core::result::Result<#ok, #private::CallError<#err>>),
            quote!(call_sending_fallible::<_, #ok, #err>),
            quote!(#outgoing,),
        ),
    };
    // Spanned at the method so that a type that is not serializable is reported there.
    let call = respan(&call, m.ident.span());
    let body = quote_spanned! {m.ident.span()=>
        self.client.#call(#descriptor, #args_tuple, #outgoing &self.options)
    };
    quote! {
        #docs
        // The argument list is the trait method's, where the user sees (and can allow) the lint.
        #[allow(clippy::too_many_arguments)]
        // Not `async fn`: the future owns a handle on the connection instead of borrowing
        // `self`, so it can be stored, spawned, or made from a temporary `with_timeout` copy.
        #vis fn #fn_ident(&self, #(#all_names: #arg_types),*)
            -> impl ::core::future::Future<Output = #output> + ::core::marker::Send + use<> {
            #body
        }
    }
}

/// `tokens` with every span set to `span`, for generated expressions whose errors should be
/// reported at a token of the user's. Only for tokens that resolve the same from anywhere
/// (absolute paths, keywords, punctuation).
fn respan(tokens: &TokenStream, span: Span) -> TokenStream {
    tokens
        .clone()
        .into_iter()
        .map(|mut tt| {
            if let proc_macro2::TokenTree::Group(group) = &tt {
                let mut respanned = proc_macro2::Group::new(group.delimiter(), respan(&group.stream(), span));
                respanned.set_span(span);
                tt = respanned.into();
            } else {
                tt.set_span(span);
            }
            tt
        })
        .collect()
}

/// Where to report problems with what a method returns: its return type, or its name.
fn return_span(m: &Method) -> Span {
    match &m.sig.output {
        ReturnType::Type(_, ty) => ty.span(),
        ReturnType::Default => m.ident.span(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use syn::parse_quote;

    fn expand_trait(args: TokenStream, item: ItemTrait) -> syn::File {
        let args = crate::parse::parse_args(args);
        let service = crate::validate::validate(args, &item).unwrap_or_else(|e| panic!("{e}"));
        let tokens = expand(&service);
        syn::parse2(tokens.clone()).unwrap_or_else(|e| panic!("expansion does not parse: {e}\n{tokens}"))
    }

    fn calculator() -> ItemTrait {
        parse_quote! {
            pub trait Calculator {
                /// Adds two numbers.
                async fn add(&self, a: i64, b: i64) -> i64;
                async fn div(&self, a: i64, b: i64) -> Result<i64, MathError>;
                fn version(&self) -> String;
                async fn ping(&self);
            }
        }
    }

    fn item_names(file: &syn::File) -> Vec<String> {
        file.items
            .iter()
            .map(|item| match item {
                syn::Item::Trait(t) => format!("trait {}", t.ident),
                syn::Item::Struct(s) => format!("struct {}", s.ident),
                syn::Item::Impl(i) => {
                    let ty = &i.self_ty;
                    match &i.trait_ {
                        Some((_, path, _)) => format!("impl {} for {}", quote!(#path), quote!(#ty)),
                        None => format!("impl {}", quote!(#ty)),
                    }
                }
                other => format!("{}", quote!(#other)),
            })
            .map(|s| s.replace(' ', ""))
            .collect()
    }

    #[test]
    fn expansion_is_rust_and_has_the_promised_items() {
        let file = expand_trait(quote!(), calculator());
        assert_eq!(
            item_names(&file),
            [
                "traitCalculator",
                "structCalculatorServer",
                "implCalculatorServer<S>",
                "impl::core::clone::CloneforCalculatorServer<S>",
                "impl::core::fmt::DebugforCalculatorServer<S>",
                "impl::rpc::__private::ServiceforCalculatorServer<__S>",
                "structCalculatorClient",
                "impl::core::clone::CloneforCalculatorClient",
                "impl::core::fmt::DebugforCalculatorClient",
                "implCalculatorClient",
                "structCalculatorBlockingClient",
                "implCalculatorBlockingClient",
            ]
        );
        let syn::Item::Trait(rewritten) = &file.items[0] else { unreachable!() };
        let text = quote!(#rewritten).to_string();
        assert!(text.contains("fn add (& self , a : i64 , b : i64) -> impl :: core :: future :: Future < Output = i64 > + :: core :: marker :: Send ;"), "{text}");
        assert!(text.contains("fn version (& self) -> String ;"), "{text}");
        assert!(text.contains("fn into_service (self) -> CalculatorServer < Self >"), "{text}");
    }

    #[test]
    fn crate_argument_replaces_every_facade_path() {
        let file = expand_trait(quote!(crate = "::my_rpc"), calculator());
        let text = quote!(#file).to_string();
        assert!(text.contains(":: my_rpc :: __private :: Client"));
        assert!(!text.contains(":: rpc ::"));
    }

    #[test]
    fn client_methods_pick_the_call_by_return_kind() {
        let file = expand_trait(quote!(), calculator());
        let text = quote!(#file).to_string();
        assert!(
            text.contains(
                "call :: < _ , i64 > (& CalculatorClient :: DESCRIPTOR . methods [0] , & (a , b ,) , & self . options)"
            ),
            "{text}"
        );
        assert!(text.contains("call_fallible :: < _ , i64 , MathError >"), "{text}");
        assert!(
            text.contains(
                "Output = :: core :: result :: Result < i64 , :: rpc :: __private :: CallError < MathError > >"
            ),
            "{text}"
        );
        assert!(text.contains("call :: < _ , () > (& CalculatorClient :: DESCRIPTOR . methods [3] , & () ,"), "{text}");
        // The futures own what they need, so they can be spawned or built from a temporary.
        assert!(text.contains(":: core :: marker :: Send + use < >"), "{text}");
    }

    #[test]
    fn fallback_trait_is_rewritten_without_generated_items() {
        let item: ItemTrait = parse_quote! {
            trait Broken: Send {
                async fn a(&self, s: &str);
                async fn b(&self) {}
                const fn c(&self, (x, y): (u8, u8), mut z: u8);
            }
        };
        let text = fallback_trait(&item).to_string();
        assert!(
            text.starts_with("trait Broken : :: core :: marker :: Send + :: core :: marker :: Sync + 'static"),
            "{text}"
        );
        assert!(
            text.contains("fn a (& self , s : & str) -> impl :: core :: future :: Future < Output = () >"),
            "{text}"
        );
        // A default body is an error already reported; the method is left as written.
        assert!(text.contains("async fn b (& self) { }"), "{text}");
        // Mistakes rustc would report a second time are removed.
        assert!(text.contains("fn c (& self , _ : (u8 , u8) , _ : u8) ;"), "{text}");
        assert!(!text.contains("into_service"), "{text}");
    }
}
