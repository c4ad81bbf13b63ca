//! The server side's view of a service: a type-erased dispatcher from method ids to handler
//! futures. `#[service]` implements [`Service`] for the generated `FooServer<T>` adapter; the
//! server engine only ever sees `Arc<dyn Service>`.

use std::future::Future;
use std::pin::Pin;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::descriptor::ServiceDescriptor;
use crate::wire::{self, RemoteError, ResponsePayload};

/// The future of one running handler: resolves to the encoded return value, or a failure to
/// report to the caller.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<ResponsePayload, RemoteError>> + Send + 'static>>;

/// A service the server engine can dispatch calls to.
pub trait Service: Send + Sync + 'static {
    /// The service's name and methods, compared with the client's during the hello exchange.
    fn descriptor(&self) -> &'static ServiceDescriptor;

    /// Starts the method `method` with postcard-encoded `args`.
    ///
    /// Errors (unknown method, undecodable arguments) are returned before any user code runs.
    fn call(&self, method: u32, args: &[u8]) -> Result<HandlerFuture, RemoteError>;
}

/// Decodes a method's argument tuple; used by generated dispatchers.
pub fn decode_args<T: DeserializeOwned>(args: &[u8]) -> Result<T, RemoteError> {
    wire::decode_value(args).map_err(|e| RemoteError::Decode(format!("arguments: {e}")))
}

/// Boxes a handler's future and encodes its output; used by generated dispatchers.
pub fn handler<F>(future: F) -> HandlerFuture
where
    F: Future + Send + 'static,
    F::Output: Serialize,
{
    Box::pin(async move {
        let value = future.await;
        ResponsePayload::encode(&value).map_err(|e| RemoteError::Encode(format!("return value: {e}")))
    })
}

/// The error for a method id the service does not have; used by generated dispatchers.
pub fn unknown_method(id: u32) -> RemoteError {
    RemoteError::UnknownMethod { id }
}
