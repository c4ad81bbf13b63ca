//! Streaming calls on the client: a [`Streaming`] reads what the server streams, and a task
//! sends a stream argument.
//!
//! A [`Streaming`] is a call that stays in the table of pending calls until its stream ends or
//! it is dropped. Its frames are filed in its slot by whichever call reads the connection, and
//! it reads for everyone while it waits, like any call (see the module docs of
//! [`crate::client`]). Dropping it cancels the call.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures_util::stream::Stream as FuturesStream;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{
    ready, remote_error, send_cancel, split_app, within, CallOptions, Client, Inner, PendingCall, Prepared, Reading,
    Via,
};
use crate::descriptor::MethodDescriptor;
use crate::error::{CallError, RpcError};
use crate::stream::flow::RecvWindow;
use crate::stream::flow::SendWindow;
use crate::stream::inbox::CreditReturn;
use crate::stream::pump::{Pump, PumpError};
use crate::stream::{Cursor, EncodedStream};
use crate::wire::{self, Frame, Route};
use tracing::Instrument;

impl Client {
    /// Calls a method that returns a stream; `outgoing` is its stream argument, if it takes
    /// one. Ready once the server's handler returned its stream; the items follow on the
    /// [`Streaming`].
    pub fn call_streaming<A, T>(
        &self,
        method: &'static MethodDescriptor,
        args: &A,
        outgoing: Option<EncodedStream>,
        options: &CallOptions,
    ) -> impl Future<Output = Result<Streaming<T>, RpcError>> + Send + 'static
    where
        A: Serialize + ?Sized + 'static,
        T: DeserializeOwned + 'static,
    {
        let Prepared { inner, request, deadline, span, started, via } = self.prepare(method, args, options);
        let call_span = span.clone();
        async move {
            let opened = open_streaming(inner, via, method, request, outgoing, deadline).await;
            // The span covers the opening of the call, until the server's handler returned
            // its stream.
            crate::telemetry::client_call_finished(&call_span, started, &opened);
            opened
        }
        .instrument(span)
    }

    /// Calls a method that takes a stream argument (`outgoing`) and answers with one value.
    pub fn call_sending<A, R>(
        &self,
        method: &'static MethodDescriptor,
        args: &A,
        outgoing: EncodedStream,
        options: &CallOptions,
    ) -> impl Future<Output = Result<R, RpcError>> + Send + 'static
    where
        A: Serialize + ?Sized + 'static,
        R: DeserializeOwned + 'static,
    {
        self.unary(method, args, Some(outgoing), options, super::decode_typed::<R>)
    }

    /// [`Client::call_sending`] for a method declared `-> Result<T, E>`.
    pub fn call_sending_fallible<A, T, E>(
        &self,
        method: &'static MethodDescriptor,
        args: &A,
        outgoing: EncodedStream,
        options: &CallOptions,
    ) -> impl Future<Output = Result<T, CallError<E>>> + Send + 'static
    where
        A: Serialize + ?Sized + 'static,
        T: DeserializeOwned + 'static,
        E: DeserializeOwned + 'static,
    {
        split_app(self.call_sending::<A, Result<T, E>>(method, args, outgoing, options))
    }
}

/// The part of [`Client::call_streaming`] its span measures: the request, up to the stream's head.
async fn open_streaming<T: DeserializeOwned + 'static>(
    inner: Arc<Inner>,
    via: Option<Via>,
    method: &'static MethodDescriptor,
    request: Result<(u64, wire::Encoded), RpcError>,
    outgoing: Option<EncodedStream>,
    deadline: Option<Instant>,
) -> Result<Streaming<T>, RpcError> {
    let (id, frame) = request?;
    // A balanced client's load handle ends with the opening; the stream stays where it went.
    let (inner, _load) = ready(inner, via, deadline).await?;
    let opened = within(deadline, async {
        let mut call = PendingCall::register(Arc::clone(&inner), id, outgoing.is_some(), true)?;
        let seq = call.enqueue(frame).await?;
        if let Some(outgoing) = outgoing {
            call.start_pump(outgoing);
        }
        let head = call.head(seq).await?;
        Ok((call.into_parts(), head))
    })
    .await;
    let (pump, (route, head)) = opened?;
    let mut streaming = Streaming {
        inner,
        id,
        method,
        current: None,
        done: false,
        removed: false,
        deadline: deadline.map(|d| Box::pin(tokio::time::sleep_until(d.into()))),
        credit: CreditReturn::default(),
        pump,
        _item: PhantomData,
    };
    let head = match (route, wire::decode(&head)) {
        (Route::Response, Ok(Frame::ResponseOk { payload, .. })) => wire::decode_value::<()>(payload)
            .map_err(|_| RpcError::Protocol(format!("the head of the stream of `{}` has a payload", method.name))),
        (Route::Response, Ok(Frame::ResponseErr { error, .. })) => {
            Err(remote_error(streaming.inner.service, method, error))
        }
        _ => Err(RpcError::Protocol(format!("the stream of `{}` began without its head", method.name))),
    };
    match head {
        Ok(()) => Ok(streaming),
        Err(e) => {
            // The call is over; nothing to cancel.
            streaming.done = true;
            Err(e)
        }
    }
}

/// Sends a call's stream argument until it ends, the server stops it, or the call ends (the
/// caller aborts the task).
pub(super) fn spawn_pump(
    inner: &Arc<Inner>,
    id: u64,
    window: Arc<SendWindow>,
    source: EncodedStream,
) -> tokio::task::AbortHandle {
    let inner = Arc::clone(inner);
    tokio::spawn(async move {
        let mut pump = Pump::new(id, source, inner.info.max_frame_len);
        match std::future::poll_fn(|cx| pump.poll(cx, &inner.out, &window)).await {
            Ok(_) => {}
            Err(PumpError::Send(e)) => {
                inner.fail(e);
            }
            Err(PumpError::Encode(e)) => inner.fail_call(id, RpcError::Encode(format!("an item of the stream: {e}"))),
            Err(PumpError::TooLarge { size, max }) => {
                inner.fail_call(id, RpcError::FrameTooLarge { size: size as u64, max: max as u64 })
            }
        }
    })
    .abort_handle()
}

/// The items a server streams in answer to a call: a [`futures_util::Stream`] of
/// `Result<T, RpcError>`.
///
/// It ends (`None`) after the server's last item, or after one `Err`: the connection failed,
/// the call's deadline passed, the handler panicked or the server shut down. Items the server
/// sent ahead wait here, up to [`ClientOptions::stream_window`](super::ClientOptions) bytes;
/// then the server waits for this stream to be read. Dropping it cancels the call: the server
/// stops the handler's stream.
///
/// Like every call future it reads the connection for all calls while it waits: keep polling it
/// (or drop it) rather than leaving it half-read for long while other calls wait.
pub struct Streaming<T> {
    inner: Arc<Inner>,
    id: u64,
    method: &'static MethodDescriptor,
    current: Option<Cursor>,
    /// The stream ended (or failed): nothing more to read, nothing to cancel.
    done: bool,
    /// The slot was removed.
    removed: bool,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    credit: CreditReturn,
    /// The task sending this call's stream argument, if it has one.
    pump: Option<tokio::task::AbortHandle>,
    _item: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for Streaming<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streaming").field("method", &self.method.name).field("done", &self.done).finish_non_exhaustive()
    }
}

impl<T: DeserializeOwned> Streaming<T> {
    /// The next item, `None` at the end.
    pub async fn next(&mut self) -> Option<Result<T, RpcError>> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }
}

impl<T> Streaming<T> {
    /// Ends the stream here: the slot is removed and the stream's task stopped.
    fn finish(&mut self) {
        self.done = true;
        self.current = None;
        if let Some(pump) = self.pump.take() {
            pump.abort();
        }
        if !std::mem::replace(&mut self.removed, true) {
            self.inner.lock_inbound().remove(self.id);
        }
    }

    /// Grants the server what was read, if enough to be worth a frame.
    fn grant(&mut self, cx: &mut Context<'_>) {
        let (inner, id) = (&self.inner, self.id);
        let with_window = |f: &mut dyn FnMut(&mut RecvWindow) -> Option<u32>| {
            let mut inbound = inner.lock_inbound();
            let (_, window) = inbound.calls.get_mut(&id).and_then(|slot| slot.stream.as_mut()?.frames.as_mut())?;
            f(window)
        };
        self.credit.poll_grant(
            cx,
            &inner.out,
            id,
            || with_window(&mut |window| window.take_grant()),
            |grant| {
                with_window(&mut |window| {
                    window.ungrant(grant);
                    None
                });
            },
        );
    }

    fn consumed(&mut self, len: usize) {
        let mut inbound = self.inner.lock_inbound();
        if let Some((_, window)) =
            inbound.calls.get_mut(&self.id).and_then(|slot| slot.stream.as_mut()?.frames.as_mut())
        {
            window.consumed(len);
        }
    }
}

impl<T: DeserializeOwned> FuturesStream for Streaming<T> {
    type Item = Result<T, RpcError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let name = self.method.name;
        self.poll_item(cx, |cursor| {
            cursor
                .next_item::<T>()
                .map(|item| item.map_err(|e| RpcError::Decode(format!("an item of the stream of `{name}`: {e}"))))
        })
    }
}

impl<T> Streaming<T> {
    /// The next item as encoded (postcard) bytes, `None` at the end: for a caller that decodes
    /// by a [schema](crate::schema) rather than by Rust types.
    pub async fn next_encoded(&mut self) -> Option<Result<bytes::Bytes, RpcError>> {
        std::future::poll_fn(|cx| self.poll_item(cx, |cursor| cursor.next_encoded().map(Ok))).await
    }

    /// The next item, as `take` gets it from the current frame.
    fn poll_item<R>(
        &mut self,
        cx: &mut Context<'_>,
        mut take: impl FnMut(&mut Cursor) -> Option<Result<R, RpcError>>,
    ) -> Poll<Option<Result<R, RpcError>>> {
        let this = self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            if let Some(cursor) = &mut this.current {
                if let Some(item) = take(cursor) {
                    if item.is_err() {
                        this.finish();
                    }
                    return Poll::Ready(Some(item));
                }
                let len = cursor.frame_len();
                this.current = None;
                this.consumed(len);
                this.grant(cx);
            }
            let next = match this.inner.poll_frame(cx, this.id, Reading::Queued, 0) {
                Poll::Ready(next) => next,
                Poll::Pending => {
                    if let Some(deadline) = &mut this.deadline {
                        if deadline.as_mut().poll(cx).is_ready() {
                            // The server stops at the same deadline; the cancel makes sure.
                            send_cancel(&this.inner, this.id);
                            this.finish();
                            return Poll::Ready(Some(Err(RpcError::DeadlineExceeded)));
                        }
                    }
                    this.grant(cx);
                    return Poll::Pending;
                }
            };
            // The frame is in hand: another call may read meanwhile, in case this stream is
            // not polled again soon.
            this.inner.lock_inbound().release(this.id);
            let (route, frame) = match next {
                Ok(next) => next,
                Err(e) => {
                    this.finish();
                    return Poll::Ready(Some(Err(e)));
                }
            };
            match route {
                Route::StreamItems => this.current = Some(Cursor::new(frame)),
                Route::StreamEnd => {
                    this.finish();
                    return Poll::Ready(None);
                }
                _ => {
                    let err = match wire::decode(&frame) {
                        Ok(Frame::ResponseErr { error, .. }) => remote_error(this.inner.service, this.method, error),
                        _ => RpcError::Protocol(format!("the stream of `{}` got a second head", this.method.name)),
                    };
                    this.finish();
                    return Poll::Ready(Some(Err(err)));
                }
            }
        }
    }
}

impl<T> Drop for Streaming<T> {
    fn drop(&mut self) {
        let cancel = !self.done;
        let closed = self.inner.lock_inbound().closed.is_some();
        self.finish();
        if cancel && !closed {
            send_cancel(&self.inner, self.id);
        }
    }
}
