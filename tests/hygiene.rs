//! `#[service]` output must compile wherever a user puts it: without the prelude, next to items
//! named like the std types it uses, and with arguments named like its own locals.

#![no_implicit_prelude]
#![allow(dead_code, non_camel_case_types)]

// Each of these shadows a name that generated code would otherwise be tempted to use.
struct Result;
struct Option;
struct Ok;
struct Err;
struct Vec;
struct String;
struct Box;
struct Arc;
struct Send;
struct Sync;
struct Sized;
struct Clone;
struct Default;
struct Future;
struct Debug;
struct Duration;
struct Instant;
struct u8;
struct u32;
struct str;
// `::core`, `::std`, `::serde` and `::rpc` name the extern crates, never these.
mod core {}
mod std {}
mod serde {}
mod rpc {}

/// A user type called `S`, like the server's type parameter would be if it were not renamed.
#[derive(::serde::Serialize, ::serde::Deserialize)]
pub struct S(pub i64);

#[::rpc::service]
pub trait Hygienic {
    /// Named like the generated code's own variables and fields.
    async fn add(&self, client: i64, options: i64, method: i64, args: i64, inner: i64) -> i64;
    fn plain(&self, s: S) -> ::std::string::String;
    async fn fallible(&self, x: i64) -> ::core::result::Result<i64, ::std::string::String>;
    async fn unit(&self);
}

struct Impl;

impl Hygienic for Impl {
    async fn add(&self, client: i64, options: i64, method: i64, args: i64, inner: i64) -> i64 {
        client + options + method + args + inner
    }
    fn plain(&self, s: S) -> ::std::string::String {
        ::std::string::ToString::to_string(&s.0)
    }
    async fn fallible(&self, x: i64) -> ::core::result::Result<i64, ::std::string::String> {
        ::core::result::Result::Ok(x)
    }
    async fn unit(&self) {}
}

fn assert_send<T: ::core::marker::Send>(_: &T) {}

#[::core::prelude::v1::test]
fn descriptor_describes_the_trait() {
    let d = HygienicClient::DESCRIPTOR;
    ::std::assert_eq!(d.name, "Hygienic");
    let expected = [
        ("add", "(i64, i64, i64, i64, i64) -> i64"),
        ("plain", "(S) -> ::std::string::String"),
        ("fallible", "(i64) -> ::core::result::Result<i64, ::std::string::String>"),
        ("unit", "() -> ()"),
    ];
    ::std::assert_eq!(d.methods.len(), expected.len());
    for (method, (name, signature)) in ::core::iter::Iterator::zip(d.methods.iter(), expected) {
        ::std::assert_eq!(method.name, name);
        ::std::assert_eq!(method.id, ::rpc::__private::method_id(name));
        ::std::assert_eq!(method.signature, signature);
    }
}

#[::core::prelude::v1::test]
fn into_service_yields_a_service() {
    let service: ::std::boxed::Box<dyn ::rpc::Service> = ::std::boxed::Box::new(Impl.into_service());
    // One descriptor, at one address, whichever way it is reached.
    ::std::assert!(::core::ptr::eq(service.descriptor(), HygienicClient::DESCRIPTOR));
    // Dispatch fails before any user code for an unknown id or undecodable arguments.
    ::std::assert!(service
        .call(::rpc::__private::method_id("nope"), &[], &mut ::rpc::__private::CallSetup::unconnected())
        .is_err());
    ::std::assert!(service
        .call(::rpc::__private::method_id("add"), &[], &mut ::rpc::__private::CallSetup::unconnected())
        .is_err());
}

// Never called: checks that client calls are `Send` futures with the promised types.
fn client_calls(client: HygienicClient) {
    let add = client.add(1, 2, 3, 4, 5);
    assert_send(&add);
    let _: &dyn ::core::future::Future<Output = ::core::result::Result<i64, ::rpc::RpcError>> = &add;
    let fallible = client.fallible(1);
    assert_send(&fallible);
    let _: &dyn ::core::future::Future<Output = ::core::result::Result<i64, ::rpc::CallError<::std::string::String>>> =
        &fallible;
    let connect = HygienicClient::connect_with("mem://h", ::rpc::ClientOptions::new());
    assert_send(&connect);
    let _: &dyn ::core::future::Future<Output = ::core::result::Result<HygienicClient, ::rpc::RpcError>> = &connect;
    let timed = client.with_timeout(::std::time::Duration::from_millis(5));
    let unit = timed.unit();
    let _: &dyn ::core::future::Future<Output = ::core::result::Result<(), ::rpc::RpcError>> = &unit;
    let cloned = ::core::clone::Clone::clone(&client);
    let plain = cloned.plain(S(1));
    assert_send(&plain);
}
