//! The client as a `tower::Service`, so that `tower`'s middleware (`ServiceExt::oneshot`,
//! `timeout`, `retry`, `balance`, ...) applies to calls. The typed client the `#[service]` macro
//! generates stays the main API; this sits under it (a typed client's `rpc_client()` is the
//! [`Client`] this is implemented for).
//!
//! ```no_run
//! # async fn run(client: rpc_core::Client) -> Result<(), rpc_core::RpcError> {
//! use tower::ServiceExt;
//! use rpc_core::client::Request;
//!
//! let add = client.service().method_by_name("add").expect("the service has `add`");
//! let sum: i64 = client.clone().oneshot(Request::new(add, (1i64, 2i64))).await?;
//! # let _ = sum; Ok(()) }
//! ```

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{CallOptions, Client};
use crate::descriptor::MethodDescriptor;
use crate::error::RpcError;

/// One call of a method, as a `tower` request: the method, its argument tuple `A`, and the type
/// `R` of its return value (for a method declared `-> Result<T, E>`, `R` is `Result<T, E>`).
pub struct Request<A, R> {
    method: &'static MethodDescriptor,
    args: A,
    options: Option<CallOptions>,
    _answer: PhantomData<fn() -> R>,
}

impl<A, R> Request<A, R> {
    /// A call of `method` with the argument tuple `args`, with the client's default call options.
    pub fn new(method: &'static MethodDescriptor, args: A) -> Self {
        Request { method, args, options: None, _answer: PhantomData }
    }

    /// The call with these options instead of the client's defaults.
    #[must_use]
    pub fn with_options(mut self, options: CallOptions) -> Self {
        self.options = Some(options);
        self
    }

    /// The method called.
    pub fn method(&self) -> &'static MethodDescriptor {
        self.method
    }

    /// The arguments.
    pub fn args(&self) -> &A {
        &self.args
    }
}

// By hand: `R` is only a marker and need not be `Clone` (a retry policy clones requests).
impl<A: Clone, R> Clone for Request<A, R> {
    fn clone(&self) -> Self {
        Request { method: self.method, args: self.args.clone(), options: self.options.clone(), _answer: PhantomData }
    }
}

impl<A: std::fmt::Debug, R> std::fmt::Debug for Request<A, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request").field("method", &self.method.name).field("args", &self.args).finish_non_exhaustive()
    }
}

/// Ready while the connection is open (a dead connection says so in `poll_ready`, so a
/// balancer can pass over it); each call is independent of the others, as with the typed client.
impl<A, R> tower::Service<Request<A, R>> for Client
where
    A: Serialize + 'static,
    R: DeserializeOwned + 'static,
{
    type Response = R;
    type Error = RpcError;
    type Future = Pin<Box<dyn Future<Output = Result<R, RpcError>> + Send + 'static>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), RpcError>> {
        match self.closed() {
            Some(error) => Poll::Ready(Err(error)),
            None => Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, request: Request<A, R>) -> Self::Future {
        let options = request.options.as_ref().unwrap_or(&self.inner.call_options);
        Box::pin(Client::call(self, request.method, &request.args, options))
    }
}
