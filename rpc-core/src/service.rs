//! The server side's view of a service: a type-erased dispatcher from method ids to handler
//! futures. `#[service]` implements [`Service`] for the generated `FooServer<T>` adapter; the
//! server engine only ever sees `Arc<dyn Service>`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::descriptor::ServiceDescriptor;
use crate::outbound::SharedSender;
use crate::schema::ServiceSchema;
use crate::stream::inbox::{Inbox, Incoming};
use crate::stream::{EncodedStream, Stream};
use crate::wire::{self, RemoteError, ResponsePayload, WideError};

/// The future of one running unary handler: resolves to the encoded return value, or a failure
/// to report to the caller.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<ResponsePayload, RemoteError>> + Send + 'static>>;

/// The future of one running handler of a method that returns a stream: resolves to the stream
/// (whose items the engine then sends), or a failure to report to the caller.
pub type StreamHandlerFuture = Pin<Box<dyn Future<Output = Result<EncodedStream, RemoteError>> + Send + 'static>>;

/// A started call, as the engine runs it.
pub enum Call {
    /// The handler answers with one value.
    Unary(HandlerFuture),
    /// The handler answers with a stream.
    Streaming(StreamHandlerFuture),
}

impl std::fmt::Debug for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Call::Unary(_) => "Call::Unary",
            Call::Streaming(_) => "Call::Streaming",
        })
    }
}

/// What a dispatcher may ask of the engine while it starts a call: the stream of items the
/// client sends, for a method that takes one.
pub struct CallSetup<'a> {
    id: u64,
    window: u32,
    /// `None` for a setup outside any connection (see [`CallSetup::unconnected`]). Borrowed:
    /// a unary call, which takes no stream, then costs nothing here.
    out: Option<&'a Arc<SharedSender>>,
    inbox: Option<Arc<Inbox>>,
}

impl std::fmt::Debug for CallSetup<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallSetup").field("id", &self.id).finish_non_exhaustive()
    }
}

impl<'a> CallSetup<'a> {
    pub(crate) fn new(id: u64, window: u32, out: &'a Arc<SharedSender>) -> Self {
        CallSetup { id, window, out: Some(out), inbox: None }
    }

    /// A setup for calling a dispatcher outside any connection (to test it): a stream argument
    /// is empty.
    pub fn unconnected() -> CallSetup<'static> {
        CallSetup { id: 0, window: crate::wire::DEFAULT_STREAM_WINDOW, out: None, inbox: None }
    }

    /// The client's stream of this call, decoded as `T`. At most one per call: a second call
    /// returns a stream that ends at once.
    pub fn incoming<T>(&mut self) -> Stream<T>
    where
        T: DeserializeOwned + Send + 'static,
    {
        let Some(out) = self.out.as_ref().filter(|_| self.inbox.is_none()) else { return Stream::empty() };
        let inbox = Arc::new(Inbox::new(self.window));
        self.inbox = Some(Arc::clone(&inbox));
        Stream::new(Incoming::<T>::new(inbox, Arc::clone(out), self.id))
    }

    pub(crate) fn take_inbox(&mut self) -> Option<Arc<Inbox>> {
        self.inbox.take()
    }
}

/// A service the server engine can dispatch calls to.
pub trait Service: Send + Sync + 'static {
    /// The service's name and methods, compared with the client's during the hello exchange.
    fn descriptor(&self) -> &'static ServiceDescriptor;

    /// Starts the method `method` with postcard-encoded `args`; a method that takes a stream
    /// gets it from `setup`.
    ///
    /// Errors (unknown method, undecodable arguments) are returned before any user code runs.
    fn call(&self, method: u32, args: &[u8], setup: &mut CallSetup<'_>) -> Result<Call, RemoteError>;

    /// The structure of the service's methods and types, which the reflection service reports
    /// (see [`crate::schema`]). `#[service]` provides it; a hand-written service may have none.
    fn schema(&self) -> Option<&'static ServiceSchema> {
        None
    }
}

/// Decodes a method's argument tuple; used by generated dispatchers.
pub fn decode_args<T: DeserializeOwned>(args: &[u8]) -> Result<T, RemoteError> {
    wire::decode_value(args).map_err(|e| RemoteError::Decode(format!("arguments: {e}")))
}

/// Boxes a handler's future and encodes its output; used by generated dispatchers.
pub fn handler<F>(future: F) -> Call
where
    F: Future + Send + 'static,
    F::Output: Serialize,
{
    Call::Unary(Box::pin(async move {
        let value = future.await;
        ResponsePayload::encode_wide(&value).map_err(|WideError(e)| RemoteError::Encode(format!("return value: {e}")))
    }))
}

/// Boxes the future of a handler that returns a stream; used by generated dispatchers.
pub fn stream_handler<F, T>(future: F) -> Call
where
    F: Future<Output = Stream<T>> + Send + 'static,
    T: Serialize + Send + 'static,
{
    Call::Streaming(Box::pin(async move { Ok(EncodedStream::new(future.await)) }))
}

/// The error for a method id the service does not have; used by generated dispatchers.
pub fn unknown_method(id: u32) -> RemoteError {
    RemoteError::UnknownMethod { id }
}
