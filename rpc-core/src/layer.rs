//! Server middleware: a server's calls run behind `tower` layers ([`Server::layer`]), so timeouts,
//! concurrency limits, rate limits, load shedding and authentication come from the `tower`
//! ecosystem instead of being written again.
//!
//! The innermost service, [`Handlers`], runs the handler the service's dispatcher started; each
//! call reaches the layers as a [`CallRequest`] (who called, which method) once its arguments are
//! decoded, and their answer is an opaque [`Answer`] that only [`Handlers`] makes. A layer's
//! error reaches the caller typed: [`RemoteError`] as itself, `tower`'s timeout as
//! [`RpcError::DeadlineExceeded`](crate::RpcError::DeadlineExceeded), its load shedding as
//! [`RpcError::Overloaded`](crate::RpcError::Overloaded), anything else as
//! [`RpcError::Rejected`](crate::RpcError::Rejected) with the error's text.
//!
//! A server without a layer dispatches exactly as before: the engine checks one `Option`.
//!
//! [`Server::layer`]: crate::server::Server::layer

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::context::CallContext;
use crate::descriptor::{MethodDescriptor, ServiceDescriptor};
use crate::service::Call;
use crate::stream::EncodedStream;
use crate::wire::{RemoteError, ResponsePayload};

/// The error type layers may fail with (what `tower`'s own layers use).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// One call on its way to its handler through the server's layers.
pub struct CallRequest {
    context: CallContext,
    service: &'static ServiceDescriptor,
    call: Call,
}

impl std::fmt::Debug for CallRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallRequest")
            .field("service", &self.service.name)
            .field("method", &self.method().map(|m| m.name))
            .field("context", &self.context)
            .finish_non_exhaustive()
    }
}

impl CallRequest {
    /// Who called, over which connection, until when (the same context the handler sees as
    /// [`CallContext::current`]): an auth layer reads the peer's credentials here.
    pub fn context(&self) -> &CallContext {
        &self.context
    }

    /// The service called.
    pub fn service(&self) -> &'static ServiceDescriptor {
        self.service
    }

    /// The method called.
    pub fn method(&self) -> Option<&'static MethodDescriptor> {
        self.service.method(self.context.method_id())
    }
}

/// What a handler answered, as it goes back out through the layers. Only [`Handlers`] makes one.
pub struct Answer(AnswerKind);

enum AnswerKind {
    Value(ResponsePayload),
    Stream(EncodedStream),
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            AnswerKind::Value(_) => "Answer::Value",
            AnswerKind::Stream(_) => "Answer::Stream",
        })
    }
}

/// The innermost service: runs the call's handler. Always ready; cheap to clone.
#[derive(Debug, Clone, Copy, Default)]
pub struct Handlers;

impl tower::Service<CallRequest> for Handlers {
    type Response = Answer;
    type Error = RemoteError;
    type Future = BoxFuture<Result<Answer, RemoteError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), RemoteError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: CallRequest) -> Self::Future {
        match request.call {
            Call::Unary(handler) => Box::pin(async move { handler.await.map(|v| Answer(AnswerKind::Value(v))) }),
            Call::Streaming(handler) => Box::pin(async move { handler.await.map(|s| Answer(AnswerKind::Stream(s))) }),
        }
    }
}

/// A server's layers, type-erased: one call in, its answer out.
#[derive(Clone)]
pub(crate) struct Middleware(Arc<dyn Fn(CallRequest) -> BoxFuture<Result<Answer, RemoteError>> + Send + Sync>);

impl std::fmt::Debug for Middleware {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Middleware")
    }
}

impl Middleware {
    /// `layer` around [`Handlers`]. The layered service is cloned for each call (as tonic and
    /// axum do): state a layer shares between calls (a concurrency limit's semaphore) is shared
    /// by its clones.
    pub(crate) fn new<L>(layer: L) -> Self
    where
        L: tower::Layer<Handlers>,
        L::Service: tower::Service<CallRequest, Response = Answer> + Clone + Send + Sync + 'static,
        <L::Service as tower::Service<CallRequest>>::Error: Into<BoxError>,
        <L::Service as tower::Service<CallRequest>>::Future: Send + 'static,
    {
        let service = layer.layer(Handlers);
        Middleware(Arc::new(move |request| {
            let mut service = service.clone();
            Box::pin(async move {
                std::future::poll_fn(|cx| tower::Service::poll_ready(&mut service, cx)).await.map_err(to_remote)?;
                tower::Service::call(&mut service, request).await.map_err(to_remote)
            })
        }))
    }

    /// `call`, started by the service's dispatcher, run through the layers instead of directly.
    pub(crate) fn wrap(&self, context: CallContext, service: &'static ServiceDescriptor, call: Call) -> Call {
        let streams = matches!(call, Call::Streaming(_));
        let answer = (self.0)(CallRequest { context, service, call });
        if streams {
            Call::Streaming(Box::pin(async move {
                match answer.await?.0 {
                    AnswerKind::Stream(stream) => Ok(stream),
                    AnswerKind::Value(_) => unreachable!("only Handlers makes answers, of the call's own kind"),
                }
            }))
        } else {
            Call::Unary(Box::pin(async move {
                match answer.await?.0 {
                    AnswerKind::Value(value) => Ok(value),
                    AnswerKind::Stream(_) => unreachable!("only Handlers makes answers, of the call's own kind"),
                }
            }))
        }
    }
}

/// A layer's error as the caller gets it.
fn to_remote(error: impl Into<BoxError>) -> RemoteError {
    let error = error.into();
    let error = match error.downcast::<RemoteError>() {
        Ok(remote) => return *remote,
        Err(other) => other,
    };
    if error.is::<tower::timeout::error::Elapsed>() {
        RemoteError::DeadlineExceeded
    } else if error.is::<tower::load_shed::error::Overloaded>() {
        RemoteError::Overloaded
    } else {
        RemoteError::Rejected(error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_errors_map_to_typed_ones() {
        assert_eq!(to_remote(RemoteError::Cancelled), RemoteError::Cancelled);
        assert_eq!(to_remote(tower::timeout::error::Elapsed::new()), RemoteError::DeadlineExceeded);
        assert_eq!(to_remote(tower::load_shed::error::Overloaded::new()), RemoteError::Overloaded);
        assert_eq!(to_remote(BoxError::from("no entry")), RemoteError::Rejected("no entry".into()));
    }
}
