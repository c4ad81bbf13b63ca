//! The `#[service]` attribute of the rpc framework.
//!
//! Users depend on the `rpc` facade, which re-exports [`macro@service`]; this crate is not meant
//! to be used on its own. The macro runs in stages, each in its own module:
//!
//! 1. `parse`: the attribute's arguments and the annotated trait, as syn sees them;
//! 2. `validate`: every rule a service trait must follow, checked at once so the user sees all
//!    mistakes in one build, producing a `model::Service`;
//! 3. `expand`: the rewritten trait, the server adapter and the client, from the model alone.

#![forbid(unsafe_code)]

mod expand;
mod model;
mod parse;
mod validate;

use proc_macro::TokenStream;

/// Turns a trait into an RPC service: a server adapter `FooServer<T>` for any `T: Foo` and a
/// client `FooClient` whose methods call the server.
///
/// ```ignore
/// #[rpc::service]
/// pub trait Calculator {
///     /// Adds two numbers.
///     async fn add(&self, a: i64, b: i64) -> i64;
///     async fn div(&self, a: i64, b: i64) -> Result<i64, MathError>;
///     fn version(&self) -> String;
/// }
/// ```
///
/// Arguments, all optional:
/// - `name = "calc.v1.Calculator"`: the service name both ends compare during the hello
///   exchange (default: the trait's name);
/// - `crate = "::my_rpc"`: where the `rpc` facade is, for crates that rename or re-export it.
///
/// Methods take `&self` and owned, serializable arguments; they are either `async fn` or plain
/// `fn`. A method declared `-> Result<T, E>` becomes a client method returning
/// `Result<T, CallError<E>>`; any other return type `R` becomes `Result<R, RpcError>`.
#[proc_macro_attribute]
pub fn service(args: TokenStream, input: TokenStream) -> TokenStream {
    expand_service(args.into(), input.into()).into()
}

fn expand_service(args: proc_macro2::TokenStream, input: proc_macro2::TokenStream) -> proc_macro2::TokenStream {
    let item = match parse::parse_trait(input.clone()) {
        Ok(item) => item,
        // Give the input back untouched so the only error the user sees is ours.
        Err(err) => {
            let mut tokens = err.to_compile_error();
            tokens.extend(input);
            return tokens;
        }
    };
    let args = parse::parse_args(args);
    match validate::validate(args, &item) {
        Ok(service) => expand::expand(&service),
        Err(err) => {
            // Still emit the trait (rewritten as far as it can be) so that impls of it and
            // calls on it do not add "cannot find trait" errors on top of the real ones.
            let mut tokens = err.to_compile_error();
            tokens.extend(expand::fallback_trait(&item));
            tokens
        }
    }
}
