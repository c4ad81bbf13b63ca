//! tarpc over our transports (the facade's feature `tarpc`: `rpc::tarpc`, also reachable as
//! `rpc::transports::tarpc`): any [`Connection`] becomes a tarpc transport, any
//! [`Listener`] a stream of them, so a `#[tarpc::service]` runs unchanged over every mechanism an
//! address can name (`local://`, `unix://`, `fifo://`, `spawn:`, `tcp://`, `mem://`, ...).
//!
//! tarpc's transport is a `Stream` of incoming messages plus a `Sink` of outgoing ones (its
//! `Transport` trait is implemented for every such pair); `tarpc::server::BaseChannel` and
//! `tarpc::client::new` take one. [`Transport`] is that pair over one of our connections: each
//! message is encoded with postcard into one frame, so the framing, the frame size limit and the
//! liveness rules of the mechanism apply as they do to our own engine.
//!
//! ```no_run
//! use futures_util::{future, StreamExt};
//! use tarpc::server::{BaseChannel, Channel};
//!
//! #[tarpc::service]
//! trait Calculator {
//!     async fn add(a: i64, b: i64) -> i64;
//! }
//!
//! #[derive(Clone)]
//! struct Calc;
//! impl Calculator for Calc {
//!     async fn add(self, _: tarpc::context::Context, a: i64, b: i64) -> i64 {
//!         a + b
//!     }
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // Server: was `tarpc::serde_transport::tcp::listen(addr, Bincode::default).await?`.
//! let incoming = rpc_tarpc::listen("local://calc").await?;
//! tokio::spawn(incoming.filter_map(|accepted| future::ready(accepted.ok())).for_each(|transport| {
//!     let channel = BaseChannel::with_defaults(transport);
//!     tokio::spawn(channel.execute(Calc.serve()).for_each(|call| {
//!         tokio::spawn(call);
//!         future::ready(())
//!     }));
//!     future::ready(())
//! }));
//!
//! // Client: was `tarpc::serde_transport::tcp::connect(addr, Bincode::default).await?`.
//! let transport = rpc_tarpc::connect("local://calc").await?;
//! let calc = CalculatorClient::new(tarpc::client::Config::default(), transport).spawn();
//! assert_eq!(calc.add(tarpc::context::current(), 1, 2).await?, 3);
//! # Ok(()) }
//! ```
//!
//! Nothing here names a tarpc type: the message types are inferred from the tarpc call that
//! takes the transport (`ClientMessage<Req>` out and `Response<Resp>` in for a client, the
//! reverse for a server), so this module works with any tarpc release whose messages derive
//! serde (its `serde1` feature) and whose transports are `futures` 0.3 streams and sinks.
//!
//! Errors: bytes that do not decode as the expected message (or leave bytes over) are an
//! [`io::ErrorKind::InvalidData`] error from the stream, never a panic; a message above the
//! connection's `max_frame_len` is refused by the sink with an error wrapping
//! [`FrameTooLarge`](rpc_core::wire::FrameTooLarge). tarpc treats every transport error as the
//! end of the channel, so unlike our own engine (which fails only the call whose frame was too
//! large) an oversized tarpc message closes the connection and fails every call pending on it.

#![forbid(unsafe_code)]
use std::io;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{Sink, Stream};
use rpc_core::error::RpcError;
use rpc_core::transport::{Connection, ConnectionInfo, FrameReceiver, FrameSender, Listener};
use serde::de::DeserializeOwned;
use serde::Serialize;

use rpc_transports::TransportOptions;

/// How long [`Incoming`] waits after a transient accept error (out of file descriptors, a client
/// gone mid-accept) before accepting again, so a consumer that skips errors does not spin.
const TRANSIENT_ACCEPT_PAUSE: Duration = rpc_core::transport::transient::RETRY_PAUSE;

/// A tarpc transport over one of our connections: a `Stream` of `In` messages and a `Sink` of
/// `Out` messages, each message one postcard-encoded frame.
///
/// After the first error, or the peer's clean close, the stream yields `None`.
pub struct Transport<In, Out> {
    sender: Box<dyn FrameSender>,
    receiver: Box<dyn FrameReceiver>,
    info: ConnectionInfo,
    /// The stream has ended (clean close or error); it stays ended.
    ended: bool,
    /// The sender's last `poll_ready` was pending: the next flush waits for it (see
    /// `poll_flush`).
    blocked: bool,
    /// `fn(Out) -> In`: the transport owns no `In` or `Out`, so it is `Send` and `Unpin` whatever
    /// they are.
    messages: PhantomData<fn(Out) -> In>,
}

impl<In, Out> Transport<In, Out> {
    /// Wraps an established connection.
    pub fn new(conn: Connection) -> Self {
        Self {
            sender: conn.sender,
            receiver: conn.receiver,
            info: conn.info,
            ended: false,
            blocked: false,
            messages: PhantomData,
        }
    }

    /// Facts about the connection: mechanism, peer, maximum frame length.
    pub fn info(&self) -> &ConnectionInfo {
        &self.info
    }

    fn decode(&self, frame: &[u8]) -> io::Result<In>
    where
        In: DeserializeOwned,
    {
        let invalid = |what: String| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("decoding a tarpc message from {}: {what}", self.info.peer),
            )
        };
        match postcard::take_from_bytes(frame) {
            Ok((message, [])) => Ok(message),
            Ok((_, rest)) => Err(invalid(format!("{} bytes left over after the message", rest.len()))),
            Err(e) => Err(invalid(e.to_string())),
        }
    }
}

impl<In, Out> std::fmt::Debug for Transport<In, Out> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport").field("info", &self.info).field("ended", &self.ended).finish_non_exhaustive()
    }
}

impl<In: DeserializeOwned, Out> Stream for Transport<In, Out> {
    type Item = io::Result<In>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        let next = match ready!(this.receiver.poll_recv(cx)) {
            Ok(Some(frame)) => this.decode(&frame).map(Some),
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        };
        // A message that does not decode means the peer speaks something else: nothing after it
        // can be trusted either, and tarpc ends the channel on any error anyway.
        this.ended = !matches!(next, Ok(Some(_)));
        Poll::Ready(next.transpose())
    }
}

impl<In, Out: Serialize> Sink<Out> for Transport<In, Out> {
    type Error = io::Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let ready = this.sender.poll_ready(cx);
        this.blocked = ready.is_pending();
        ready
    }

    fn start_send(self: Pin<&mut Self>, message: Out) -> io::Result<()> {
        let this = self.get_mut();
        let frame = postcard::to_stdvec(&message).map_err(|e| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("encoding a tarpc message for {}: {e}", this.info.peer))
        })?;
        // The mechanism refuses a frame above `max_frame_len` itself, with an error wrapping
        // `FrameTooLarge` (left unwrapped so `RpcError::from` still recognises it).
        this.sender.start_send(Bytes::from(frame))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.sender.poll_flush(cx))?;
        // tarpc waits for room with `while poll_ready().is_pending() { ready!(poll_flush())? }`,
        // which assumes a sink that is not ready has something to flush (true of a byte stream).
        // A message mechanism can be not ready with nothing left to flush (its peer has not
        // read yet): its flush returns at once and tarpc would spin on the thread forever. So a
        // flush after a pending `poll_ready` completes only once the sender has room again.
        if this.blocked {
            ready!(this.sender.poll_ready(cx))?;
            this.blocked = false;
        }
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().sender.poll_close(cx)
    }
}

/// The connections a listener accepts, as tarpc transports: a `Stream` of
/// `io::Result<Transport>`, to feed to `tarpc::server::BaseChannel` one by one.
///
/// An accept error is yielded as an item. After a transient one (out of file descriptors, a
/// client that vanished mid-accept) the stream goes on accepting, after a short pause; after any
/// other it ends. Dropping the stream closes the listener (a `unix://` listener removes its
/// socket file).
pub struct Incoming<In, Out> {
    local_addr: String,
    accepted: BoxStream<'static, io::Result<Transport<In, Out>>>,
}

impl<In, Out> Incoming<In, Out> {
    /// The address clients connect to, with any port the OS chose filled in
    /// (see [`Listener::local_addr`]).
    pub fn local_addr(&self) -> &str {
        &self.local_addr
    }
}

impl<In, Out> std::fmt::Debug for Incoming<In, Out> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Incoming").field("local_addr", &self.local_addr).finish_non_exhaustive()
    }
}

impl<In, Out> Stream for Incoming<In, Out> {
    type Item = io::Result<Transport<In, Out>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.accepted.as_mut().poll_next(cx)
    }
}

/// Turns a listener into a stream of tarpc transports (see [`Incoming`]). Dropping the stream
/// while it waits for a connection is fine: [`Listener::accept`] is cancel-safe.
pub fn incoming<In: 'static, Out: 'static>(listener: impl Listener) -> Incoming<In, Out> {
    enum State<L> {
        Accepting(L),
        /// A transient error was just yielded: pause before the next accept.
        Pausing(L),
        Ended,
    }
    let local_addr = listener.local_addr();
    let accepted = futures_util::stream::unfold(State::Accepting(listener), |state| async move {
        let mut listener = match state {
            State::Accepting(listener) => listener,
            State::Pausing(listener) => {
                tokio::time::sleep(TRANSIENT_ACCEPT_PAUSE).await;
                listener
            }
            State::Ended => return None,
        };
        match listener.accept().await {
            Ok(conn) => Some((Ok(Transport::new(conn)), State::Accepting(listener))),
            Err(e) if rpc_core::server::is_transient(&e) => Some((Err(e), State::Pausing(listener))),
            Err(e) => Some((Err(e), State::Ended)),
        }
    });
    Incoming { local_addr, accepted: Box::pin(accepted) }
}

/// Connects to `addr` (any address [`connect`](rpc_transports::connect) takes) and returns the connection
/// as a tarpc transport, for `tarpc::client::new` or a generated `…Client::new`.
pub async fn connect<In, Out>(addr: &str) -> Result<Transport<In, Out>, RpcError> {
    connect_with(addr, &TransportOptions::default()).await
}

/// [`connect`] with the given options.
pub async fn connect_with<In, Out>(addr: &str, options: &TransportOptions) -> Result<Transport<In, Out>, RpcError> {
    Ok(Transport::new(rpc_transports::connect_with(addr, options).await?))
}

/// Listens on `addr` (any address [`listen`](rpc_transports::listen) takes) and returns the accepted
/// connections as tarpc transports.
pub async fn listen<In: 'static, Out: 'static>(addr: &str) -> Result<Incoming<In, Out>, RpcError> {
    listen_with(addr, &TransportOptions::default()).await
}

/// [`listen`] with the given options.
pub async fn listen_with<In: 'static, Out: 'static>(
    addr: &str,
    options: &TransportOptions,
) -> Result<Incoming<In, Out>, RpcError> {
    Ok(incoming(rpc_transports::listen_with(addr, options).await?))
}

/// This process's stdin and stdout as a tarpc transport: the child's side of a `spawn:` address
/// whose parent connected with [`connect`]. The rules of [`spawn::stdio`](rpc_transports::spawn::stdio)
/// apply (nothing else may write to stdout).
#[cfg(unix)]
pub fn stdio<In, Out>() -> Result<Transport<In, Out>, RpcError> {
    Ok(Transport::new(rpc_transports::spawn::stdio()?))
}

#[cfg(test)]
mod tests {
    use futures_util::{SinkExt, StreamExt};
    use serde::{Deserialize, Serialize};

    use super::*;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    enum Message {
        Hello { id: u64, text: String },
        Bye,
    }

    fn unique(prefix: &str) -> String {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        format!("mem://{prefix}-{}-{}", std::process::id(), N.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
    }

    /// A client transport over `mem://`, and the listener it connected to.
    async fn pair(options: &TransportOptions) -> (Transport<Message, Message>, Incoming<Message, Message>) {
        let incoming = listen_with(&unique("tarpc-unit"), options).await.unwrap();
        let client = connect_with(incoming.local_addr(), options).await.unwrap();
        (client, incoming)
    }

    #[tokio::test]
    async fn messages_round_trip_in_order() {
        let (mut client, mut incoming) = pair(&TransportOptions::default()).await;
        let mut server = incoming.next().await.unwrap().unwrap();
        let sent =
            [Message::Hello { id: 1, text: "one".into() }, Message::Bye, Message::Hello { id: 2, text: "".into() }];
        for m in &sent {
            client.feed(m.clone()).await.unwrap();
        }
        client.flush().await.unwrap();
        for m in &sent {
            assert_eq!(&server.next().await.unwrap().unwrap(), m);
        }
        server.send(Message::Bye).await.unwrap();
        assert_eq!(client.next().await.unwrap().unwrap(), Message::Bye);
        // A clean close ends the peer's stream, for good.
        client.close().await.unwrap();
        assert!(server.next().await.is_none());
        assert!(server.next().await.is_none());
        assert_eq!(server.info().transport, "mem");
    }

    #[tokio::test]
    async fn bytes_that_do_not_decode_are_invalid_data_and_end_the_stream() {
        for junk in [&b""[..], b"\x07", b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", b"\x01\x00trailing"] {
            let mut incoming = listen::<Message, Message>(&unique("tarpc-junk")).await.unwrap();
            let mut raw = rpc_transports::connect(incoming.local_addr()).await.unwrap();
            let mut server = incoming.next().await.unwrap().unwrap();
            rpc_core::transport::send(&mut *raw.sender, Bytes::from_static(junk)).await.unwrap();
            let err = server.next().await.unwrap().unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{junk:?}: {err}");
            assert!(err.to_string().starts_with("decoding a tarpc message from "), "{err}");
            assert!(server.next().await.is_none(), "the stream ends after a bad message");
        }
    }

    #[tokio::test]
    async fn left_over_bytes_are_named() {
        let mut incoming = listen::<Message, Message>(&unique("tarpc-rest")).await.unwrap();
        let mut raw = rpc_transports::connect(incoming.local_addr()).await.unwrap();
        let mut server = incoming.next().await.unwrap().unwrap();
        let mut frame = postcard::to_stdvec(&Message::Bye).unwrap();
        frame.extend_from_slice(b"xyz");
        rpc_core::transport::send(&mut *raw.sender, Bytes::from(frame)).await.unwrap();
        let err = server.next().await.unwrap().unwrap_err();
        assert!(err.to_string().ends_with("3 bytes left over after the message"), "{err}");
    }

    #[tokio::test]
    async fn an_oversized_message_is_refused_with_frame_too_large() {
        let (mut client, _incoming) = pair(&TransportOptions::new().max_frame_len(64)).await;
        let big = Message::Hello { id: 0, text: "x".repeat(100) };
        let err = client.send(big).await.unwrap_err();
        assert!(
            matches!(RpcError::from(err), RpcError::FrameTooLarge { max: 64, .. }),
            "the transport's FrameTooLarge reaches the caller"
        );
    }

    /// `mem://` is not ready while a megabyte waits for its reader, with nothing to flush; tarpc's
    /// wait for room (`while poll_ready is pending { poll_flush }`) must then be pending, not a
    /// spin on the thread.
    #[tokio::test]
    async fn a_flush_after_a_pending_ready_waits_for_room() {
        use std::future::poll_fn;
        let (mut client, mut incoming) = pair(&TransportOptions::default()).await;
        let mut server = incoming.next().await.unwrap().unwrap();
        let big = Message::Hello { id: 1, text: "x".repeat(2 << 20) };
        client.send(big.clone()).await.unwrap();
        let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
        assert!(Pin::new(&mut client).poll_ready(&mut cx).is_pending(), "2 MiB unread: no room");
        assert!(Pin::new(&mut client).poll_flush(&mut cx).is_pending(), "the flush waits for room");
        let waited = tokio::spawn(async move {
            poll_fn(|cx| Pin::new(&mut client).poll_flush(cx)).await.unwrap();
            poll_fn(|cx| Pin::new(&mut client).poll_ready(cx)).await.unwrap();
        });
        assert_eq!(server.next().await.unwrap().unwrap(), big);
        tokio::time::timeout(Duration::from_secs(10), waited).await.expect("woken once the peer read").unwrap();
    }

    #[tokio::test]
    async fn incoming_ends_when_the_listener_fails_for_good() {
        struct Broken;
        impl Listener for Broken {
            fn accept(&mut self) -> rpc_core::transport::BoxFuture<'_, io::Result<Connection>> {
                Box::pin(async { Err(io::Error::new(io::ErrorKind::PermissionDenied, "no")) })
            }
            fn local_addr(&self) -> String {
                "mem://broken".into()
            }
        }
        let mut incoming = incoming::<Message, Message>(Broken);
        assert_eq!(incoming.local_addr(), "mem://broken");
        assert_eq!(incoming.next().await.unwrap().unwrap_err().kind(), io::ErrorKind::PermissionDenied);
        assert!(incoming.next().await.is_none());
    }

    #[tokio::test]
    async fn incoming_goes_on_after_a_transient_error() {
        struct Flaky(u32);
        impl Listener for Flaky {
            fn accept(&mut self) -> rpc_core::transport::BoxFuture<'_, io::Result<Connection>> {
                self.0 += 1;
                let n = self.0;
                Box::pin(async move {
                    Err(io::Error::new(
                        if n == 1 { io::ErrorKind::ConnectionAborted } else { io::ErrorKind::Other },
                        "flaky",
                    ))
                })
            }
            fn local_addr(&self) -> String {
                "mem://flaky".into()
            }
        }
        let mut incoming = incoming::<Message, Message>(Flaky(0));
        assert_eq!(incoming.next().await.unwrap().unwrap_err().kind(), io::ErrorKind::ConnectionAborted);
        assert_eq!(incoming.next().await.unwrap().unwrap_err().kind(), io::ErrorKind::Other);
        assert!(incoming.next().await.is_none());
    }
}
