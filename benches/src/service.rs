//! The benchmarked service, defined once per framework with the same two methods, and the
//! [`Probe`] trait that lets one set of measurement loops drive either client.
//!
//! `add` is the latency and pipelining probe; `echo` is the bulk probe. Its argument is a
//! [`ByteBuf`] on both sides so that postcard (ours) and bincode (tarpc) each encode it as one
//! length-prefixed slice: a plain `Vec<u8>` goes through serde element by element and would
//! measure the encoder's per-byte loop instead of the transport (4–8× slower for tarpc).

use std::error::Error;
use std::future::Future;

use serde_bytes::ByteBuf;
use tarpc::context;

/// Errors of a measurement run; not `Send`, since clients run on one thread in a `LocalSet`.
pub type BoxError = Box<dyn Error>;

/// Our framework's side of the service.
#[rpc::service]
pub trait Bench {
    /// Adds two numbers.
    async fn add(&self, a: i64, b: i64) -> i64;
    /// Returns its argument.
    async fn echo(&self, data: ByteBuf) -> ByteBuf;
}

/// Our server's implementation.
pub struct BenchImpl;

impl Bench for BenchImpl {
    async fn add(&self, a: i64, b: i64) -> i64 {
        a.wrapping_add(b)
    }

    async fn echo(&self, data: ByteBuf) -> ByteBuf {
        data
    }
}

/// The same service for tarpc.
#[tarpc::service]
pub trait TarpcBench {
    /// Adds two numbers.
    async fn add(a: i64, b: i64) -> i64;
    /// Returns its argument.
    async fn echo(data: ByteBuf) -> ByteBuf;
}

/// tarpc's server implementation.
#[derive(Clone)]
pub struct TarpcImpl;

impl TarpcBench for TarpcImpl {
    async fn add(self, _: context::Context, a: i64, b: i64) -> i64 {
        a.wrapping_add(b)
    }

    async fn echo(self, _: context::Context, data: ByteBuf) -> ByteBuf {
        data
    }
}

/// What the measurement loops need from a client: cheap to clone (a handle on one
/// connection), and the two calls. Errors are boxed only on the failure path.
pub trait Probe: Clone + 'static {
    /// `a + b` computed by the server.
    fn add(&self, a: i64, b: i64) -> impl Future<Output = Result<i64, BoxError>>;
    /// `data` sent to the server and back.
    fn echo(&self, data: ByteBuf) -> impl Future<Output = Result<ByteBuf, BoxError>>;
}

/// Our generated client.
#[derive(Clone)]
pub struct Ours(pub BenchClient);

impl Probe for Ours {
    async fn add(&self, a: i64, b: i64) -> Result<i64, BoxError> {
        Ok(self.0.add(a, b).await?)
    }

    async fn echo(&self, data: ByteBuf) -> Result<ByteBuf, BoxError> {
        Ok(self.0.echo(data).await?)
    }
}

/// tarpc's generated client. Every call gets tarpc's default context (10 s deadline, fresh
/// trace ids), as a tarpc user's call would.
#[derive(Clone)]
pub struct Tarpc(pub TarpcBenchClient);

impl Probe for Tarpc {
    async fn add(&self, a: i64, b: i64) -> Result<i64, BoxError> {
        Ok(self.0.add(context::current(), a, b).await?)
    }

    async fn echo(&self, data: ByteBuf) -> Result<ByteBuf, BoxError> {
        Ok(self.0.echo(context::current(), data).await?)
    }
}
