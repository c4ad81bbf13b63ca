//! The client engine: many concurrent calls multiplexed over one connection.
//!
//! Every call gets an id and a slot in the table of pending calls before its request is sent.
//! There is no reader task. One waiting call at a time is the *reader*: it polls the connection
//! from inside its own future, files answers for other calls into their slots (waking them), and
//! returns as soon as its own answer arrives — so a lone call gets its answer without a hop
//! through any other task or thread. When the reader leaves (answered, timed out, dropped), it
//! hands the role to another waiting call. A lone call writes its own request, too (see the
//! `outbound` module); calls made while others are pending queue theirs and leave the write to a
//! small task of the connection's, which writes each batch of them at once (the `flusher`
//! module).
//!
//! Dropping a call's future sends a cancel for it once its request went out (a future never
//! polled sent nothing, and leaves nothing behind); a dead connection fails every pending call
//! at once, and every later call, with the error that killed it.
//!
//! A streaming call is a call like the others: its slot stays in the table while its stream
//! lasts, queues the frames the server streams (filed there by whichever call reads), and its
//! [`Streaming`] reads for everyone while it waits. A stream argument is sent by a small task of
//! its own (the `streaming` module), since it must go on while the caller waits for the answer.
//!
//! One consequence of having no reader task: answers arrive only while some call future is being
//! polled. Await call futures (directly, in `join!`/`select!` loops, `FuturesUnordered`, or spawned
//! tasks) rather than polling one once and parking it for a long time: a parked reader delays the
//! answers of the other calls on the same connection until it is polled again or dropped.

mod balance;
mod flusher;
mod redial;
mod streaming;
mod tower_service;

pub use redial::{Dialer, ReconnectOptions};

use std::collections::{hash_map, HashMap, VecDeque};
use std::future::Future;
use std::hash::BuildHasherDefault;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::descriptor::{MethodDescriptor, ServiceDescriptor};
use crate::error::{CallError, RpcError};
use crate::outbound::SharedSender;
use crate::stream::flow::{RecvWindow, SendWindow};
use crate::stream::EncodedStream;
use crate::telemetry;
use crate::transport::{self, Connection, ConnectionInfo, FrameReceiver};
use crate::wire::{
    self, Frame, Hello, HelloReply, MethodSignature, RemoteError, RequestHeader, Route, MIN_STREAM_WINDOW,
    PROTOCOL_VERSION,
};
use tracing::Instrument;

pub use streaming::Streaming;
pub use tower_service::Request;

/// How many frames the reader handles in one poll before yielding to the runtime.
const READ_BUDGET: usize = 64;
/// How long a cancel that could not be written at once may keep trying.
const CANCEL_LINGER: Duration = Duration::from_secs(5);

/// The engine's options for one client connection, given to [`Client::handshake`]: how long
/// the hello may take, the credit granted to streams, and the call options the client's calls
/// start with.
///
/// Built like every options type of the framework: [`ClientOptions::new`] (the same as
/// [`Default`]) and chained setters, each naming its default; a setter panics, with a message
/// naming the option, on a value no connection could work with (its `# Panics` says which). The
/// `rpc` facade's `ClientOptions`, taken by a generated client's `connect_with`, holds these
/// together with the transport's options (the engine does not know transports).
///
/// ```
/// use std::time::Duration;
/// use rpc_core::ClientOptions;
///
/// let options = ClientOptions::new().handshake_timeout(Duration::from_secs(1)).call_timeout(Duration::from_secs(5));
/// # let _ = options;
/// ```
#[derive(Debug, Clone)]
pub struct ClientOptions {
    handshake_timeout: Duration,
    stream_window: u32,
    call_options: CallOptions,
    propagate_trace_context: bool,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            stream_window: wire::DEFAULT_STREAM_WINDOW,
            call_options: CallOptions::new(),
            propagate_trace_context: false,
        }
    }
}

impl ClientOptions {
    /// The default options.
    pub fn new() -> Self {
        Self::default()
    }

    /// How long to wait for the server's answer to the hello; then the handshake fails with
    /// [`RpcError::Disconnected`]. Default 10 s.
    #[must_use]
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// The credit, in bytes of encoded items, this client grants each stream the server sends
    /// it: how much of a stream may wait here for the caller to read it. Default 256 KiB
    /// ([`DEFAULT_STREAM_WINDOW`](wire::DEFAULT_STREAM_WINDOW)).
    ///
    /// # Panics
    /// If `bytes` is below the protocol's minimum, [`MIN_STREAM_WINDOW`] (4 KiB).
    #[must_use]
    pub fn stream_window(mut self, bytes: u32) -> Self {
        assert!(
            bytes >= MIN_STREAM_WINDOW,
            "ClientOptions::stream_window must be at least {MIN_STREAM_WINDOW} bytes, not {bytes}"
        );
        self.stream_window = bytes;
        self
    }

    /// The call options every call of this client starts with: the client's default deadline.
    /// A typed client starts from them ([`Client::default_call_options`]), and its
    /// `with_timeout`, `with_deadline` and `with_options` change them for the calls of the clone
    /// they return. Default [`CallOptions::new`]: no deadline.
    #[must_use]
    pub fn call_options(mut self, options: CallOptions) -> Self {
        self.call_options = options;
        self
    }

    /// Sets the timeout of the [`call_options`](Self::call_options): every call of this client
    /// fails with [`RpcError::DeadlineExceeded`] if not answered within `timeout`, unless a call
    /// is given another one. Default: none.
    #[must_use]
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.call_options = self.call_options.timeout(timeout);
        self
    }

    /// Sends each call's trace context with its request (24 bytes more per request), so the
    /// server's call span names this client's call span as its parent (see
    /// [`crate::telemetry`]). Needs a server of this version or newer: an older one closes the
    /// connection at the first call, as for any frame it does not know. Default `false`: requests
    /// carry nothing for tracing.
    #[must_use]
    pub fn propagate_trace_context(mut self, propagate: bool) -> Self {
        self.propagate_trace_context = propagate;
        self
    }
}

/// Per-call options: a deadline, given as a timeout from the start of the call or an instant.
///
/// The server is told how much time is left and stops the handler when it runs out. Built like
/// every options type of the framework: [`CallOptions::new`] (no deadline, the same as
/// [`Default`]) and chained setters.
///
/// ```
/// use std::time::Duration;
/// let options = rpc_core::CallOptions::new().timeout(Duration::from_millis(200));
/// # let _ = options;
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallOptions {
    timeout: Option<Duration>,
    deadline: Option<Instant>,
}

impl CallOptions {
    /// No deadline.
    pub fn new() -> Self {
        Self::default()
    }

    /// Each call fails with [`RpcError::DeadlineExceeded`] if not answered within `timeout`
    /// (replacing any timeout set before). `Duration::MAX` means no timeout.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Calls fail with [`RpcError::DeadlineExceeded`] if not answered by `deadline` (replacing
    /// any deadline set before). With a [`timeout`](Self::timeout) too, the earlier of the two
    /// applies.
    #[must_use]
    pub fn deadline(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// The old name of [`CallOptions::timeout`].
    #[deprecated(since = "0.1.0", note = "renamed to `CallOptions::timeout`, like the setters of the other options")]
    #[must_use]
    pub fn with_timeout(self, timeout: Duration) -> Self {
        self.timeout(timeout)
    }

    /// The old name of [`CallOptions::deadline`].
    #[deprecated(since = "0.1.0", note = "renamed to `CallOptions::deadline`, like the setters of the other options")]
    #[must_use]
    pub fn with_deadline(self, deadline: Instant) -> Self {
        self.deadline(deadline)
    }

    /// Whether a call made with these options has a timeout or a deadline.
    fn limits(&self) -> bool {
        self.timeout.is_some() || self.deadline.is_some()
    }

    /// The deadline of a call starting at `now`: the earlier of the two limits.
    pub fn deadline_from(&self, now: Instant) -> Option<Instant> {
        let from_timeout = self.timeout.and_then(|t| now.checked_add(t));
        match (self.deadline, from_timeout) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// A connection to one service on a server. Cheap to clone; all clones share the connection and
/// can call concurrently from any number of tasks. The connection closes when the last clone is
/// dropped.
///
/// Made on a tokio runtime, a connection has one small task there, which writes the requests of
/// calls made while others are pending, a batch at a time (a lone call writes its own); it ends
/// with the connection. Calls from another runtime or executor write their own requests.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
    /// Set by [`Client::reconnecting`] and [`Client::balanced`]; `None` keeps every call on
    /// `inner`, with no extra step.
    via: Option<Via>,
}

/// Where the calls of a client that is not bound to one connection go.
#[derive(Clone)]
enum Via {
    /// The current connection, replaced when it dies.
    Redial(Arc<redial::Redial>),
    /// One of several servers' connections, picked per call.
    Balanced(Arc<balance::Balanced>),
}

impl Via {
    /// The connection the call prepared on `inner` goes over, and for a balanced client the
    /// handle that counts it as load until it ends.
    async fn ready(&self, inner: Arc<Inner>) -> Result<(Arc<Inner>, Option<balance::Picked>), RpcError> {
        match self {
            Via::Redial(redial) => Ok((redial.ready(inner).await?, None)),
            Via::Balanced(balanced) => {
                let picked = balanced.pick().await?;
                Ok((Arc::clone(&picked.0), Some(picked)))
            }
        }
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("service", &self.inner.service.name)
            .field("info", &self.inner.info)
            .finish_non_exhaustive()
    }
}

struct Inner {
    service: &'static ServiceDescriptor,
    info: ConnectionInfo,
    next_id: AtomicU64,
    out: SharedSender,
    inbound: Mutex<Inbound>,
    /// Polled only by the reader, and not under the `inbound` lock: a transport may spend a
    /// while inside `poll_recv` (shm:// polls its ring before sleeping), and calls registering
    /// or collecting answers meanwhile must not wait for it.
    receiver: Mutex<Box<dyn FrameReceiver>>,
    /// The credit this client grants each stream the server sends.
    stream_window: u32,
    /// The credit the server grants each stream this client sends.
    peer_window: u32,
    /// What a typed client's calls start with.
    call_options: CallOptions,
    /// Whether requests carry a trace context.
    propagate_trace_context: bool,
    /// The task that flushes the requests of calls made under load, if one could be started.
    flusher: Option<Arc<flusher::Flusher>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(flusher) = &self.flusher {
            flusher.close();
        }
    }
}

/// The id of [`Inner::until_closed`]'s slot: no request is ever sent with it.
const WATCH_ID: u64 = u64::MAX;

/// Hashes the keys of [`Inbound::calls`]: call ids, which this client numbers itself, one after
/// another (a server never picks them), so they need no defence against chosen collisions. One
/// multiply by a 64-bit golden-ratio constant, where std's SipHash cost ~140 instructions a
/// lookup, five lookups a call: consecutive ids land in distinct buckets (the multiplier is
/// odd, so the low bits are a bijection of the id's), and the top bits hashbrown tags entries
/// with are well mixed.
#[derive(Default)]
struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` keys are hashed here; this keeps any other key correct, if slower.
        for &byte in bytes {
            self.write_u64(self.0.rotate_left(8) ^ u64::from(byte));
        }
    }

    #[inline]
    fn write_u64(&mut self, id: u64) {
        self.0 = id.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

#[derive(Default)]
struct Inbound {
    calls: HashMap<u64, Slot, BuildHasherDefault<IdHasher>>,
    /// The call whose future polls the receiver (its waker is the one the transport holds), or
    /// the waiting call woken to take that role over.
    reader: Option<u64>,
    /// Calls that found another call reading and wait to be woken: whom the reader hands its
    /// role to when it leaves, the latest first (its answer is likely the last to come, so it
    /// reads the longest before it hands on in turn). An id may linger after its call stopped
    /// waiting (or finished); it is skipped when its turn comes.
    parked: VecDeque<u64>,
    /// A stream that was reading and woke another call: it waits until that call (now
    /// [`reader`](Self::reader)) has taken what it was woken for and hands the role back.
    deferred: Option<u64>,
    /// Set once the connection is dead; every later call fails with this.
    closed: Option<RpcError>,
}

#[derive(Default)]
struct Slot {
    waker: Option<Waker>,
    /// This call's id is in [`Inbound::parked`].
    parked: bool,
    /// The answer of a unary call; for a streaming call, the error that ended it early.
    answer: Option<Result<Bytes, RpcError>>,
    /// The stream state of a streaming call.
    stream: Option<Box<SlotStream>>,
}

/// What a streaming call's slot holds beyond a unary call's.
struct SlotStream {
    /// For a call the server streams to: its frames (head, items, end) in order, and the credit
    /// accounting of the stream.
    frames: Option<(VecDeque<(Route, Bytes)>, RecvWindow)>,
    /// For a call that streams to the server: the credit the server grants.
    send: Option<Arc<SendWindow>>,
}

impl Slot {
    /// The next frame for this call's caller, if one is here: a streaming call's next frame,
    /// then (once they are all taken) the error that ended it; a unary call's answer.
    fn take_next(&mut self) -> Option<Result<(Route, Bytes), RpcError>> {
        if let Some((frames, _)) = self.stream.as_mut().and_then(|s| s.frames.as_mut()) {
            if let Some(frame) = frames.pop_front() {
                return Some(Ok(frame));
            }
        }
        Some(self.answer.take()?.map(|frame| (Route::Response, frame)))
    }

    fn has_next(&self) -> bool {
        self.answer.is_some()
            || self.stream.as_ref().and_then(|s| s.frames.as_ref()).is_some_and(|(frames, _)| !frames.is_empty())
    }

    /// Marks this call as waiting for the reader's role; true if it was not already (its id
    /// must then be queued, once per wait however often the call is polled meanwhile).
    fn park(&mut self) -> bool {
        !std::mem::replace(&mut self.parked, true)
    }

    /// Wakes the call's task, if it waits; true if it did.
    fn wake(&mut self) -> bool {
        match self.waker.take() {
            Some(waker) => {
                waker.wake();
                true
            }
            None => false,
        }
    }
}

impl Client {
    /// Performs the hello exchange for `service` on `conn` and returns a client for it.
    ///
    /// Fails with [`RpcError::UnknownService`] or [`RpcError::InterfaceMismatch`] (naming each
    /// method that differs) when the server cannot serve this client, and with
    /// [`RpcError::ProtocolVersion`] when it speaks another protocol version.
    pub async fn handshake(
        conn: Connection,
        service: &'static ServiceDescriptor,
        options: ClientOptions,
    ) -> Result<Client, RpcError> {
        let Connection { mut sender, mut receiver, info } = conn;
        let ClientOptions { handshake_timeout, stream_window, call_options, propagate_trace_context } = options;
        let hello = Hello {
            service: service.name.to_owned(),
            methods: service
                .methods
                .iter()
                .map(|m| MethodSignature { name: m.name.to_owned(), signature: m.signature.to_owned() })
                .collect(),
            stream_window,
        };
        let exchange = async {
            transport::send(&mut *sender, Bytes::from(wire::encode_hello(&hello))).await?;
            transport::recv(&mut *receiver).await.map_err(RpcError::from)
        };
        let reply = match tokio::time::timeout(handshake_timeout, exchange).await {
            Err(_) => {
                return Err(RpcError::disconnected(format!(
                    "no answer to the hello from {} within {:?}",
                    info.peer, handshake_timeout
                )))
            }
            Ok(Err(e)) => return Err(e),
            Ok(Ok(None)) => {
                return Err(RpcError::disconnected(format!("{} closed the connection during the hello", info.peer)))
            }
            Ok(Ok(Some(frame))) => frame,
        };
        let peer_window = match wire::decode(&reply) {
            Ok(Frame::HelloReply { version, reply: Some(reply) }) if version == PROTOCOL_VERSION => match reply {
                HelloReply::Accepted { stream_window } if stream_window >= MIN_STREAM_WINDOW => stream_window,
                HelloReply::Accepted { stream_window } => {
                    return Err(RpcError::Protocol(format!(
                    "the server's stream window of {stream_window} bytes is below the minimum of {MIN_STREAM_WINDOW}"
                )))
                }
                HelloReply::UnknownService { available } => {
                    return Err(RpcError::UnknownService { service: service.name.to_owned(), available })
                }
                HelloReply::InterfaceMismatch { differences } => {
                    return Err(RpcError::InterfaceMismatch { service: service.name.to_owned(), differences })
                }
                HelloReply::VersionMismatch => {
                    return Err(RpcError::ProtocolVersion { ours: PROTOCOL_VERSION, theirs: version })
                }
            },
            Ok(Frame::HelloReply { version, .. }) => {
                return Err(RpcError::ProtocolVersion { ours: PROTOCOL_VERSION, theirs: version })
            }
            // The server refused the connection and says why (e.g. `same_uid_only`).
            Ok(Frame::Goaway { code, reason }) => {
                return Err(RpcError::closed_by_peer(code, format!("{} closed the connection: {reason}", info.peer)))
            }
            Ok(other) => return Err(RpcError::Protocol(format!("expected a hello reply, got {}", frame_name(&other)))),
            Err(e) => return Err(RpcError::Protocol(format!("bad hello reply: {e}"))),
        };
        let inner = Arc::new(Inner {
            service,
            info,
            next_id: AtomicU64::new(1),
            out: SharedSender::new(sender),
            inbound: Mutex::new(Inbound::default()),
            receiver: Mutex::new(receiver),
            stream_window,
            peer_window,
            call_options,
            propagate_trace_context,
            flusher: flusher::Flusher::new(),
        });
        if let Some(flusher) = &inner.flusher {
            flusher.start(Arc::downgrade(&inner));
        }
        Ok(Client { inner, via: None })
    }

    /// The service this client is bound to.
    pub fn service(&self) -> &'static ServiceDescriptor {
        self.inner.service
    }

    /// The call options this client was made with
    /// ([`ClientOptions::call_options`]): a typed client makes its calls with them unless told
    /// otherwise. [`Client::call`] and its siblings use the options they are given, not these.
    pub fn default_call_options(&self) -> &CallOptions {
        &self.inner.call_options
    }

    /// Facts about the underlying connection.
    pub fn connection_info(&self) -> &ConnectionInfo {
        &self.inner.info
    }

    /// The error that closed the connection, if it is known to be closed (for a reconnecting
    /// client: the connection it uses now).
    pub fn closed(&self) -> Option<RpcError> {
        match &self.via {
            None | Some(Via::Balanced(_)) => self.inner.lock_inbound().closed.clone(),
            Some(Via::Redial(redial)) => redial.current().lock_inbound().closed.clone(),
        }
    }

    /// Calls `method` with the argument tuple `args` and decodes its return value.
    ///
    /// The arguments are encoded before this returns; the request leaves when the future is
    /// first polled, and a future dropped before that sends nothing. The future owns everything
    /// it needs (`'static`), so it can be stored or spawned.
    pub fn call<A, R>(
        &self,
        method: &'static MethodDescriptor,
        args: &A,
        options: &CallOptions,
    ) -> impl Future<Output = Result<R, RpcError>> + Send + 'static
    where
        A: Serialize + ?Sized + 'static,
        R: DeserializeOwned + 'static,
    {
        self.unary(method, args, None, options, decode_typed::<R>)
    }

    /// A call answered with one value, with a stream argument or without; `decode` makes the
    /// answer's payload (a slice of the answer's frame) into what the caller gets.
    fn unary<A, R, D>(
        &self,
        method: &'static MethodDescriptor,
        args: &A,
        outgoing: Option<EncodedStream>,
        options: &CallOptions,
        decode: D,
    ) -> Unary<R, D>
    where
        A: Serialize + ?Sized + 'static,
        R: 'static,
        D: DecodePayload<R>,
    {
        let Prepared { inner, request, deadline, span, started, via } = self.prepare(method, args, options);
        if via.is_none() && deadline.is_none() && span.is_disabled() {
            return match request.and_then(|(id, frame)| Exchange::new(inner, id, frame, method, outgoing, decode)) {
                Ok(exchange) => Unary::Direct(exchange),
                Err(e) => Unary::Failed(Some(e)),
            };
        }
        let call_span = span.clone();
        Unary::Layered(Box::pin(
            async move {
                let result = match request {
                    Ok((id, frame)) => match ready(inner, via, deadline).await {
                        // `_load` counts the call on a balanced client's connection until it is done.
                        Ok((inner, _load)) => match Exchange::new(inner, id, frame, method, outgoing, decode) {
                            Ok(exchange) => within(deadline, exchange).await,
                            Err(e) => Err(e),
                        },
                        Err(e) => Err(e),
                    },
                    Err(e) => Err(e),
                };
                telemetry::client_call_finished(&call_span, started, &result);
                result
            }
            .instrument(span),
        ))
    }

    /// What every call does before its future runs: fixes the deadline and encodes the request.
    fn prepare<A: Serialize + ?Sized>(
        &self,
        method: &'static MethodDescriptor,
        args: &A,
        options: &CallOptions,
    ) -> Prepared {
        let spans = telemetry::spans_wanted();
        // The clock is read only for a deadline or a span: that read is a few percent of a
        // call's time (perf, 1000 calls in flight over tcp).
        let started = (spans || options.limits()).then(Instant::now);
        let deadline = started.and_then(|now| options.deadline_from(now));
        let (inner, ids) = match &self.via {
            None => (Arc::clone(&self.inner), None),
            Some(Via::Redial(redial)) => (redial.current(), None),
            Some(Via::Balanced(balanced)) => (Arc::clone(&self.inner), Some(&balanced.next_id)),
        };
        let info = &inner.info;
        let span = if spans {
            tracing::debug_span!(
                "rpc.client.call",
                service = inner.service.name,
                method = method.name,
                call_id = tracing::field::Empty,
                transport = info.transport,
                peer = %info.peer,
                trace_id = tracing::field::Empty,
                span_id = tracing::field::Empty,
                outcome = tracing::field::Empty,
                duration_us = tracing::field::Empty,
            )
        } else {
            tracing::Span::none()
        };
        let trace = inner.propagate_trace_context.then(telemetry::new_trace_context);
        let request = encode_request(ids.unwrap_or(&inner.next_id), &inner, method, args, deadline, started, trace);
        if !span.is_disabled() {
            if let Ok((id, _)) = &request {
                span.record("call_id", id);
            }
            if let Some(trace) = trace {
                span.record("trace_id", telemetry::trace_id_hex(trace.trace_id));
                span.record("span_id", telemetry::span_id_hex(trace.span_id));
            }
        }
        Prepared { inner, request, deadline, span, started, via: self.via.clone() }
    }

    /// Calls `method` and returns its answer as encoded (postcard) bytes, for a caller that
    /// decodes by a [schema](crate::schema) rather than by Rust types (the `rpc` tool).
    /// `outgoing` is the stream argument of a method that takes one.
    pub fn call_encoded<A>(
        &self,
        method: &'static MethodDescriptor,
        args: &A,
        outgoing: Option<EncodedStream>,
        options: &CallOptions,
    ) -> impl Future<Output = Result<Bytes, RpcError>> + Send + 'static
    where
        A: Serialize + ?Sized + 'static,
    {
        self.unary(method, args, outgoing, options, |frame, payload, _| Ok(frame.slice_ref(payload)))
    }

    /// Calls a method declared `-> Result<T, E>`: the application's `Err(e)` comes back as
    /// [`CallError::App`], framework failures as [`CallError::Rpc`].
    pub fn call_fallible<A, T, E>(
        &self,
        method: &'static MethodDescriptor,
        args: &A,
        options: &CallOptions,
    ) -> impl Future<Output = Result<T, CallError<E>>> + Send + 'static
    where
        A: Serialize + ?Sized + 'static,
        T: DeserializeOwned + 'static,
        E: DeserializeOwned + 'static,
    {
        split_app(self.call::<A, Result<T, E>>(method, args, options))
    }
}

/// Encodes a request with the next id from `ids` (the connection's own, or a balanced client's
/// shared counter).
fn encode_request<A: Serialize + ?Sized>(
    ids: &AtomicU64,
    inner: &Inner,
    method: &'static MethodDescriptor,
    args: &A,
    deadline: Option<Instant>,
    now: Option<Instant>,
    trace: Option<wire::TraceContext>,
) -> Result<(u64, wire::Encoded), RpcError> {
    let id = ids.fetch_add(1, Ordering::Relaxed);
    // The server gets the time left, not our clock's reading: clocks of two hosts differ. (A
    // call with a deadline read the clock.)
    let timeout_us = deadline.zip(now).map(|(d, now)| (d.saturating_duration_since(now).as_micros() as u64).max(1));
    let frame = wire::request_frame(RequestHeader { id, method: method.id, timeout_us }, trace, args)
        .map_err(|wire::WideError(e)| RpcError::Encode(format!("arguments of `{}`: {e}", method.name)))?;
    let max = inner.info.max_frame_len;
    if frame.len() > max {
        return Err(RpcError::FrameTooLarge { size: frame.len() as u64, max: max as u64 });
    }
    Ok((id, frame))
}

/// The connection a prepared call goes out on: the one it was prepared on, or, for a
/// reconnecting client whose connection has died, a new one, or for a balanced client the one
/// it picks (waiting for either within the call's deadline); with a balanced client's handle
/// that counts the call as load until it is dropped.
fn ready(
    inner: Arc<Inner>,
    via: Option<Via>,
    deadline: Option<Instant>,
) -> impl Future<Output = Result<(Arc<Inner>, Option<balance::Picked>), RpcError>> {
    use futures_util::future::Either;
    // Not an `async fn`, so that the common connection, which needs neither a redial nor a pick,
    // skips a state machine.
    match via {
        None => Either::Left(std::future::ready(Ok((inner, None)))),
        Some(via) => Either::Right(async move { within(deadline, via.ready(inner)).await }),
    }
}

/// A call prepared by [`Client::prepare`].
struct Prepared {
    inner: Arc<Inner>,
    request: Result<(u64, wire::Encoded), RpcError>,
    deadline: Option<Instant>,
    /// The call's span (`rpc.client.call`), disabled unless a subscriber wants it.
    span: tracing::Span,
    /// When the call began, if it has a deadline or a span (see [`Client::prepare`]).
    started: Option<Instant>,
    /// Set for a reconnecting or balanced client: see [`ready`].
    via: Option<Via>,
}

/// The future of a unary call ([`Client::call`] and its siblings).
enum Unary<R, D> {
    /// A call with no deadline and no span, on the client's one connection: nearly every call.
    Direct(Exchange<R, D>),
    /// Any other call: the same exchange, within its deadline, its span, and a redial or a pick
    /// of a connection first. Boxed, so that the direct call's future stays as small as it is.
    Layered(std::pin::Pin<Box<dyn Future<Output = Result<R, RpcError>> + Send>>),
    /// The request could not be encoded, or the connection is closed.
    Failed(Option<RpcError>),
}

impl<R, D: DecodePayload<R>> Future for Unary<R, D> {
    type Output = Result<R, RpcError>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Unary::Direct(exchange) => std::pin::Pin::new(exchange).poll(cx),
            Unary::Layered(layered) => layered.as_mut().poll(cx),
            Unary::Failed(error) => {
                Poll::Ready(Err(error.take().expect("a call's future was polled after it completed")))
            }
        }
    }
}

/// The answer of a method declared `-> Result<T, E>`, with the application's `Err` apart. (Not an
/// `async fn`, whose state would hold `call` twice.)
fn split_app<T, E>(
    call: impl Future<Output = Result<Result<T, E>, RpcError>>,
) -> impl Future<Output = Result<T, CallError<E>>> {
    use futures_util::FutureExt;
    call.map(|answer| match answer {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(app)) => Err(CallError::App(app)),
        Err(rpc) => Err(CallError::Rpc(rpc)),
    })
}

/// `future`, failing with [`RpcError::DeadlineExceeded`] at `deadline`.
///
/// Not an `async fn`: its state would hold `future` twice (the argument, and inside the
/// timeout), and a call's future is moved a few times before it is pinned.
fn within<T, F: Future<Output = Result<T, RpcError>>>(
    deadline: Option<Instant>,
    future: F,
) -> impl Future<Output = Result<T, RpcError>> {
    use futures_util::future::{Either, FutureExt};
    match deadline {
        None => Either::Left(future),
        Some(deadline) => Either::Right(
            tokio::time::timeout_at(deadline.into(), future)
                .map(|timed| timed.unwrap_or(Err(RpcError::DeadlineExceeded))),
        ),
    }
}

/// Makes the payload of an answer (a slice of its frame) into what the caller gets.
trait DecodePayload<R>: FnOnce(&Bytes, &[u8], &MethodDescriptor) -> Result<R, RpcError> + Send + 'static {}

impl<R, F: FnOnce(&Bytes, &[u8], &MethodDescriptor) -> Result<R, RpcError> + Send + 'static> DecodePayload<R> for F {}

/// A return value decoded as `R`, inside the frame's [decoding
/// scope](crate::bytes::decoding_from) so a large [`Bytes`](crate::bytes::Bytes) in it shares
/// the frame.
fn decode_typed<R: DeserializeOwned>(frame: &Bytes, payload: &[u8], method: &MethodDescriptor) -> Result<R, RpcError> {
    crate::bytes::decoding_from(frame, || wire::decode_value(payload))
        .map_err(|e| RpcError::Decode(format!("return value of `{}`: {e}", method.name)))
}

fn decode_answer<R>(
    service: &ServiceDescriptor,
    method: &MethodDescriptor,
    frame: &Bytes,
    decode: impl DecodePayload<R>,
) -> Result<R, RpcError> {
    match wire::decode(frame) {
        Ok(Frame::ResponseOk { payload, .. }) => decode(frame, payload, method),
        Ok(Frame::ResponseErr { error, .. }) => Err(remote_error(service, method, error)),
        Ok(other) => Err(RpcError::Protocol(format!("expected a response, got {}", frame_name(&other)))),
        Err(e) => Err(RpcError::Protocol(e.to_string())),
    }
}

fn remote_error(service: &ServiceDescriptor, method: &MethodDescriptor, error: RemoteError) -> RpcError {
    match error {
        RemoteError::UnknownMethod { .. } => {
            RpcError::UnknownMethod { service: service.name.to_owned(), method: method.name.to_owned() }
        }
        RemoteError::Decode(what) => {
            RpcError::Decode(format!("the server could not decode the {what} of `{}`", method.name))
        }
        RemoteError::Encode(what) => {
            RpcError::Encode(format!("the server could not encode the {what} of `{}`", method.name))
        }
        RemoteError::DeadlineExceeded => RpcError::DeadlineExceeded,
        RemoteError::Cancelled => RpcError::Cancelled,
        RemoteError::Panic(message) => RpcError::RemotePanic { message },
        RemoteError::Overloaded => RpcError::Overloaded,
        RemoteError::ResponseTooLarge { size, max } => RpcError::FrameTooLarge { size, max },
        RemoteError::Rejected(message) => RpcError::Rejected { message },
    }
}

pub(crate) fn frame_name(frame: &Frame<'_>) -> &'static str {
    match frame {
        Frame::Hello { .. } => "a hello",
        Frame::HelloReply { .. } => "a hello reply",
        Frame::Request { .. } => "a request",
        Frame::ResponseOk { .. } | Frame::ResponseErr { .. } => "a response",
        Frame::Cancel { .. } => "a cancel",
        Frame::Goaway { .. } => "a goaway",
        Frame::StreamItems { .. } => "stream items",
        Frame::StreamEnd { .. } => "a stream end",
        Frame::Credit { .. } => "stream credit",
        Frame::StreamStop { .. } => "a stream stop",
    }
}

/// What a call reads with [`Inner::poll_frame`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reading {
    /// A unary call's answer: the call is over once it has it, and its slot goes with it, in
    /// the same lock.
    Answer,
    /// A unary call's answer, looked for early (while the request waits to be queued; an answer
    /// then is a protocol violation): the slot stays.
    Peek,
    /// The frames of a call the server streams to, which all go through its slot; the slot
    /// stays.
    Queued,
}

impl Inner {
    fn lock_inbound(&self) -> MutexGuard<'_, Inbound> {
        // Only our own code runs under this lock; the table stays consistent between
        // statements, so a poisoned lock is still usable.
        self.inbound.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The connection can no longer send: fail every pending call (not only this one), since
    /// their answers may never come. If the server said why it closed (a goaway not read yet),
    /// that reason is the error: "idle timeout" says more than the broken pipe a write ran into.
    fn fail(&self, err: RpcError) -> RpcError {
        // Lock order: receiver, then inbound (as the reader takes them). Never called while
        // this thread holds the receiver (the reader does not send).
        let mut receiver = self.receiver.lock().unwrap_or_else(|e| e.into_inner());
        let mut inbound = self.lock_inbound();
        let err = inbound.last_words(&mut **receiver, &self.info.peer).unwrap_or(err);
        inbound.close(err)
    }

    fn poll_answer(&self, cx: &mut Context<'_>, id: u64) -> Poll<Result<Bytes, RpcError>> {
        self.poll_frame(cx, id, Reading::Peek, 0).map_ok(|(_, frame)| frame)
    }

    /// The next frame for call `id`: waits for it, reading the connection for every call while
    /// no other call does. `reading` says what the call reads, and whether its slot goes with
    /// what it takes. `unflushed` is the sequence number of the call's request if it was left
    /// to the flushing task and may not have left yet (else 0): a call that reads then sends
    /// it first rather than wait for the answer to a request still queued (the transport may
    /// poll for a while before it sleeps, and on a single-threaded runtime the task could not
    /// run meanwhile).
    fn poll_frame(
        &self,
        cx: &mut Context<'_>,
        id: u64,
        reading: Reading,
        unflushed: u64,
    ) -> Poll<Result<(Route, Bytes), RpcError>> {
        let queued = reading == Reading::Queued;
        {
            let mut inbound = self.lock_inbound();
            let inbound = &mut *inbound;
            let hash_map::Entry::Occupied(mut entry) = inbound.calls.entry(id) else {
                panic!("a pending call's slot exists until it finishes")
            };
            if let Some(next) = entry.get_mut().take_next() {
                // An answer's slot goes in the lock that takes the answer (one lookup, no
                // second lock to remove it).
                if reading == Reading::Answer {
                    entry.remove();
                    inbound.release(id);
                }
                return Poll::Ready(next);
            }
            let slot = entry.into_mut();
            // Kept by the reader too: the transport's copy of its waker can be lost (a sender
            // that fails the connection drains it with a no-op waker), the slot's cannot.
            match &slot.waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => slot.waker = Some(cx.waker().clone()),
            }
            if inbound.reader.is_some_and(|reader| reader != id) {
                if slot.park() {
                    inbound.enqueue_parked(id);
                }
                return Poll::Pending;
            }
            inbound.reader = Some(id);
        }
        if unflushed != 0 && !self.out.has_flushed(unflushed) {
            // The task finds nothing left to flush when it comes.
            let batch = self.out.end_batch();
            if let Poll::Ready(Err(e)) = self.out.poll_flushed(cx, batch) {
                let err = self.fail(e);
                self.lock_inbound().taken(id, reading);
                return Poll::Ready(Err(err));
            }
        }
        // We are the reader. Lock order: receiver, then inbound (never the other way round).
        let mut receiver = self.receiver.lock().unwrap_or_else(|e| e.into_inner());
        for _ in 0..READ_BUDGET {
            let polled = receiver.poll_recv(cx);
            let mut inbound = self.lock_inbound();
            let inbound = &mut *inbound;
            let frame = match polled {
                Poll::Pending => {
                    // The connection may have been failed by a sender while we polled.
                    return match inbound.take_next(id, reading) {
                        Some(next) => Poll::Ready(next),
                        None => Poll::Pending,
                    };
                }
                Poll::Ready(Ok(Some(frame))) => frame,
                Poll::Ready(Ok(None)) => {
                    let err = RpcError::disconnected(format!("{} closed the connection", self.info.peer));
                    return Poll::Ready(Err(inbound.close_for(id, reading, err)));
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(inbound.close_for(id, reading, e.into()))),
            };
            // Frames are routed by their header alone; their caller decodes the body, once.
            let Some((for_call, route)) = wire::route(&frame) else {
                return Poll::Ready(Err(inbound.close_for(id, reading, self.unroutable(&frame))));
            };
            if for_call == id && route == Route::Response && !queued {
                inbound.taken(id, reading);
                return Poll::Ready(Ok((route, frame)));
            }
            // The reader's own frames wake no one: it is running, and takes them below.
            let answered_another = match inbound.file(for_call, route, frame) {
                Err(violation) => {
                    return Poll::Ready(Err(inbound.close_for(id, reading, RpcError::Protocol(violation))))
                }
                Ok(Some(slot)) if for_call != id => {
                    slot.wake();
                    route == Route::Response
                }
                Ok(_) => false,
            };
            // A stream reads on after each frame, and while frames keep coming (a ring that
            // never runs dry) its task never yields: a call answered meanwhile would wait as
            // long, on a single thread behind every item. So the stream lets that call run
            // first (woken now, or due to run already: its future is awaited, and dropping it
            // hands the role back too), and is woken when the call hands the role back. Not
            // for another stream's items: a stream may rightly go unread for a while.
            if answered_another && queued {
                inbound.defer(id, for_call);
                return Poll::Pending;
            }
            // Ours, or the connection failed meanwhile (by a sender on another thread). A call
            // failed alone (its stream argument could not be sent) is woken, and finds its
            // answer when it is polled again: not worth a lookup for every frame read.
            if for_call == id || inbound.closed.is_some() {
                if let Some(next) = inbound.take_next(id, reading) {
                    return Poll::Ready(next);
                }
            }
        }
        // More may be buffered; let other tasks run, then carry on as the reader.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Waits until the connection dies and returns why. While no call reads the connection,
    /// this does (a watcher's slot under an id no request uses), so a peer that went away is
    /// noticed at once rather than by the next call. For the reconnecting and balanced clients.
    pub(crate) async fn until_closed(self: &Arc<Self>) -> RpcError {
        let watch = match PendingCall::register(Arc::clone(self), WATCH_ID, false, false) {
            Ok(watch) => watch,
            Err(e) => return e,
        };
        loop {
            if let Err(e) = std::future::poll_fn(|cx| self.poll_frame(cx, WATCH_ID, Reading::Queued, 0)).await {
                drop(watch);
                return e;
            }
        }
    }

    /// The error for a frame from the server that belongs to no call.
    fn unroutable(&self, frame: &[u8]) -> RpcError {
        match wire::decode(frame) {
            Ok(Frame::Goaway { code, reason }) => {
                RpcError::closed_by_peer(code, format!("{} closed the connection: {reason}", self.info.peer))
            }
            Ok(other) => RpcError::Protocol(format!("the server sent {}", frame_name(&other))),
            Err(e) => RpcError::Protocol(format!("the server sent a bad frame: {e}")),
        }
    }

    /// Fails call `id` alone (its stream argument could not be sent) and tells the server.
    fn fail_call(self: &Arc<Self>, id: u64, err: RpcError) {
        let mut inbound = self.lock_inbound();
        if let Some(slot) = inbound.calls.get_mut(&id) {
            if slot.answer.is_none() {
                slot.answer = Some(Err(err));
                slot.wake();
            }
        }
        drop(inbound);
        send_cancel(self, id);
    }
}

impl Inbound {
    /// Reads, without waiting, what the server sent before the connection broke: answers go to
    /// their calls; a goaway's reason is returned as the error to close with. Only for a
    /// connection about to be closed: the poll replaces the reader's waker with a no-op one.
    fn last_words(&mut self, receiver: &mut dyn FrameReceiver, peer: &str) -> Option<RpcError> {
        if self.closed.is_some() {
            return None;
        }
        let mut cx = Context::from_waker(Waker::noop());
        for _ in 0..READ_BUDGET {
            let Poll::Ready(Ok(Some(frame))) = receiver.poll_recv(&mut cx) else { return None };
            match wire::route(&frame) {
                Some((id, route)) => {
                    // Only what was sent before the end; a violation now changes nothing.
                    if let Ok(Some(slot)) = self.file(id, route, frame) {
                        slot.wake();
                    }
                }
                None => {
                    return match wire::decode(&frame) {
                        Ok(Frame::Goaway { code, reason }) => {
                            Some(RpcError::closed_by_peer(code, format!("{peer} closed the connection: {reason}")))
                        }
                        _ => None,
                    }
                }
            }
        }
        None
    }

    /// Puts a frame from the server where its call finds it, and returns the slot it went to,
    /// for the caller to wake. A frame for a call that gave up (timed out, dropped) finds no
    /// slot and is dropped. `Err` is a protocol violation.
    fn file(&mut self, id: u64, route: Route, frame: Bytes) -> Result<Option<&mut Slot>, String> {
        let Some(slot) = self.calls.get_mut(&id) else { return Ok(None) };
        match (route, slot.stream.as_deref_mut()) {
            (Route::Credit(bytes), Some(SlotStream { send: Some(window), .. })) => {
                return window.grant(bytes).map(|()| None)
            }
            (Route::StreamStop, Some(SlotStream { send: Some(window), .. })) => {
                window.stop();
                return Ok(None);
            }
            (Route::Credit(_) | Route::StreamStop, _) => {
                return Err(format!("the server sent stream credit for call {id}, which sends it no stream"))
            }
            (route, Some(SlotStream { frames: Some((frames, window)), .. })) => {
                if route == Route::StreamItems {
                    window.receive(frame.len())?;
                }
                frames.push_back((route, frame));
            }
            (Route::Response, _) => {
                if slot.answer.is_some() {
                    return Ok(None);
                }
                slot.answer = Some(Ok(frame));
            }
            (_, _) => return Err(format!("the server sent stream items for call {id}, which receives no stream")),
        }
        Ok(Some(slot))
    }

    /// Call `id`'s next frame, if it is here. A unary call's answer takes its slot with it
    /// ([`Reading::Answer`]).
    fn take_next(&mut self, id: u64, reading: Reading) -> Option<Result<(Route, Bytes), RpcError>> {
        let next = self.calls.get_mut(&id)?.take_next()?;
        self.taken(id, reading);
        Some(next)
    }

    /// [`close`](Self::close), for call `id` reading as `reading`: an answer's reader gets the
    /// error as its answer, so its slot goes too.
    fn close_for(&mut self, id: u64, reading: Reading, err: RpcError) -> RpcError {
        let err = self.close(err);
        self.taken(id, reading);
        err
    }

    /// Call `id` took what it read: with [`Reading::Answer`], its slot goes.
    fn taken(&mut self, id: u64, reading: Reading) {
        if reading == Reading::Answer {
            self.remove(id);
        }
    }

    /// Marks the connection dead and fails every pending call with `err`.
    fn close(&mut self, err: RpcError) -> RpcError {
        if self.closed.is_none() {
            tracing::debug!(error = %err, code = ?err.close_code(), pending = self.calls.len(), "client connection closed");
        }
        let err = self.closed.get_or_insert(err).clone();
        self.reader = None;
        self.deferred = None;
        self.parked.clear();
        for slot in self.calls.values_mut() {
            slot.parked = false;
            if slot.answer.is_none() {
                slot.answer = Some(Err(err.clone()));
                if let Some(waker) = slot.waker.take() {
                    waker.wake();
                }
            }
        }
        err
    }

    /// Removes a finished or abandoned call; if it was the reader (or had been woken to become
    /// it), wakes another waiting call to take over reading.
    fn remove(&mut self, id: u64) -> Option<Slot> {
        let slot = self.calls.remove(&id);
        self.release(id);
        slot
    }

    /// Call `id` stops reading for now (it has what it waited for, and may not be polled again
    /// soon): another waiting call takes over.
    fn release(&mut self, id: u64) {
        // Only the reader hands the role on, straight to the call it wakes: one search of the
        // table per handoff. With no reader, no call waits parked (one polled then takes the
        // role itself), so there is no one to look for; searching on every finished call then
        // made each of 1000 calls in flight cost a scan of all the others.
        if self.reader != Some(id) {
            return;
        }
        self.reader = None;
        // A stream that let this call run first reads on.
        if let Some(deferred) = self.deferred.take() {
            if let Some(slot) = self.calls.get_mut(&deferred) {
                if deferred != id && slot.wake() {
                    self.reader = Some(deferred);
                    return;
                }
            }
        }
        // Else parked calls in turn, skipping those that finished or no longer wait (answered
        // meanwhile, or woken already): each park is looked at once, however many calls are in
        // flight. (A search of the table instead skipped every answered call not yet polled,
        // at 1000 in flight most of them, on each handoff.)
        while let Some(other) = self.parked.pop_back() {
            let Some(slot) = self.calls.get_mut(&other) else { continue };
            slot.parked = false;
            if other != id && !slot.has_next() && slot.waker.is_some() {
                slot.wake();
                self.reader = Some(other);
                return;
            }
        }
    }

    /// The reader `stream` woke call `woken` and waits for it to run: `woken` holds the role
    /// until it has what it was woken for, and hands it back to `stream` then
    /// ([`release`](Self::release)). `stream`'s waker is in its slot.
    fn defer(&mut self, stream: u64, woken: u64) {
        self.reader = Some(woken);
        // Only the reader defers, and the call it defers to gives the role back before it reads
        // itself; should one read and defer in turn, the stream that waited first goes on too.
        if let Some(earlier) = self.deferred.replace(stream) {
            if let Some(slot) = self.calls.get_mut(&earlier) {
                slot.wake();
            }
        }
    }

    /// Call `id` waits while another call reads (its [`Slot::park`] said so): it joins the
    /// calls the reader may hand its role to.
    fn enqueue_parked(&mut self, id: u64) {
        self.parked.push_back(id);
        // Ids of calls that finished while one reader kept reading pile up until a handoff;
        // past twice the calls in flight, drop them (the cost is paid once per that many parks).
        if self.parked.len() > 2 * self.calls.len() + 64 {
            let calls = &self.calls;
            self.parked.retain(|id| calls.get(id).is_some_and(|slot| slot.parked));
        }
    }
}

/// A call between registration and its answer. Dropping it early removes its slot and tells
/// the server to stop the handler.
struct PendingCall {
    inner: Arc<Inner>,
    id: u64,
    sent: bool,
    finished: bool,
    /// Other calls were pending when this one registered, and its request leaves only with a
    /// flush: the connection's flushing task does that once for the requests of all such calls
    /// (see `flusher.rs`).
    busy: bool,
    /// The credit for the stream this call sends, if it sends one.
    window: Option<Arc<SendWindow>>,
    /// The task sending that stream, once started.
    pump: Option<tokio::task::AbortHandle>,
}

impl PendingCall {
    /// Registers call `id`; `sends` if it streams to the server, `receives` if the server
    /// streams to it.
    fn register(inner: Arc<Inner>, id: u64, sends: bool, receives: bool) -> Result<Self, RpcError> {
        let mut inbound = inner.lock_inbound();
        if let Some(err) = &inbound.closed {
            return Err(err.clone());
        }
        let window = sends.then(|| Arc::new(SendWindow::new(inner.peer_window)));
        let stream = (sends || receives).then(|| {
            Box::new(SlotStream {
                frames: receives.then(|| (VecDeque::new(), RecvWindow::new(inner.stream_window))),
                send: window.clone(),
            })
        });
        // Registered before the request leaves, so the answer always finds its slot.
        inbound.calls.insert(id, Slot { stream, ..Slot::default() });
        // Read here, under the lock registration takes anyway, not with a second lock later.
        // A reconnecting or balanced client's watch of the connection is no call to share a
        // write with.
        let watched = id != WATCH_ID && inbound.calls.contains_key(&WATCH_ID);
        let others = inbound.calls.len() - 1 - usize::from(watched);
        let busy = others > 0 && !inner.out.sends_at_once() && inner.flusher.as_ref().is_some_and(|f| f.alive());
        drop(inbound);
        Ok(Self { inner, id, sent: false, finished: false, busy, window, pump: None })
    }

    /// Queues the request (taking it out of `frame`); from here on the server may answer it.
    /// Ready with the frame's sequence number, for [`poll_first_frame`](Self::poll_first_frame).
    fn poll_enqueue(&mut self, cx: &mut Context<'_>, frame: &mut Option<wire::Encoded>) -> Poll<Result<u64, RpcError>> {
        let (inner, id) = (&self.inner, self.id);
        let queued = match &inner.flusher {
            Some(flusher) if self.busy => inner.out.poll_enqueue_batched(cx, frame).map_ok(|(seq, opened)| {
                if opened && !flusher.want() {
                    // Nobody would flush this batch (the task's runtime is not this one): this
                    // call does, as a lone one would.
                    self.busy = false;
                    return inner.out.end_batch();
                }
                seq
            }),
            _ => inner.out.poll_enqueue(cx, frame),
        };
        let seq = match queued {
            Poll::Ready(queued) => queued.map_err(|e| inner.fail(e)),
            // While the transport is full, read too (the server may wait for us to read before
            // it reads again), and notice a connection the reader closed meanwhile.
            Poll::Pending => match inner.poll_answer(cx, id) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => Err(e),
                Poll::Ready(Ok(_)) => Err(inner
                    .lock_inbound()
                    .close(RpcError::Protocol(format!("the server answered call {id} before its request was sent")))),
            },
        };
        self.sent = seq.is_ok();
        Poll::Ready(seq)
    }

    /// [`poll_enqueue`](Self::poll_enqueue) as a future.
    async fn enqueue(&mut self, frame: wire::Encoded) -> Result<u64, RpcError> {
        let mut frame = Some(frame);
        std::future::poll_fn(|cx| self.poll_enqueue(cx, &mut frame)).await
    }

    /// Starts sending the call's stream argument, in a task of its own: it must go on while the
    /// caller waits for (or reads) the answer.
    fn start_pump(&mut self, outgoing: EncodedStream) {
        let window = Arc::clone(self.window.as_ref().expect("registered as a call that sends a stream"));
        self.pump = Some(streaming::spawn_pump(&self.inner, self.id, window, outgoing));
    }

    /// Like [`Exchange`] without its decoding, for a call the server streams to: its first
    /// frame, with the slot kept for the rest (the caller takes the call over, see
    /// [`PendingCall::into_parts`]).
    async fn head(&mut self, seq: u64) -> Result<(Route, Bytes), RpcError> {
        let mut wait = FirstFrame::new(seq, self.busy);
        let head = std::future::poll_fn(|cx| self.poll_first_frame(cx, &mut wait, Reading::Queued)).await;
        self.inner.lock_inbound().release(self.id);
        head
    }

    /// Flushes the request and waits for the first frame of the answer *at the same time*: a
    /// call whose frame is still queued must take part in reading, or a server that stops
    /// reading until its answers are read would deadlock with a client that stops reading until
    /// its requests are written. With [`Reading::Answer`], the call's slot is gone once this
    /// is ready.
    fn poll_first_frame(
        &mut self,
        cx: &mut Context<'_>,
        wait: &mut FirstFrame,
        reading: Reading,
    ) -> Poll<Result<(Route, Bytes), RpcError>> {
        if !wait.batched && !wait.flushed {
            match self.inner.out.poll_flushed(cx, wait.seq) {
                Poll::Ready(Err(e)) => {
                    let err = self.inner.fail(e);
                    self.inner.lock_inbound().taken(self.id, reading);
                    return Poll::Ready(Err(err));
                }
                Poll::Ready(Ok(())) => wait.flushed = true,
                Poll::Pending => {}
            }
        }
        // A request left to the flushing task may not have left yet.
        let unflushed = if wait.batched { wait.seq } else { 0 };
        self.inner.poll_frame(cx, self.id, reading, unflushed)
    }

    /// The unary call got its answer, which took its slot ([`Reading::Answer`]): its stream
    /// argument stops.
    fn finish(&mut self) {
        self.finished = true;
        self.stop_pump();
    }

    /// Hands the call (its slot, its stream's task) to whoever reads the rest of it.
    fn into_parts(mut self) -> Option<tokio::task::AbortHandle> {
        self.finished = true;
        self.pump.take()
    }

    fn stop_pump(&mut self) {
        if let Some(window) = &self.window {
            window.stop();
        }
        if let Some(pump) = self.pump.take() {
            pump.abort();
        }
    }
}

impl Drop for PendingCall {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        self.stop_pump();
        let answered = {
            let mut inbound = self.inner.lock_inbound();
            let answered = inbound.remove(self.id).is_some_and(|s| s.answer.is_some());
            answered || inbound.closed.is_some()
        };
        if self.sent && !answered {
            send_cancel(&self.inner, self.id);
        }
    }
}

/// Where a call is in waiting for its first frame ([`PendingCall::poll_first_frame`]).
struct FirstFrame {
    /// The sequence number of the call's request in the connection's queue.
    seq: u64,
    /// The request has left (the call saw to it itself).
    flushed: bool,
    /// The connection's flushing task sees to it instead (see [`Inner::poll_frame`]'s
    /// `unflushed`).
    batched: bool,
}

impl FirstFrame {
    /// Waiting for request `seq` to leave and be answered; `busy` as [`PendingCall`]'s (its
    /// request is then flushed by the connection's flushing task, with the others' of its batch).
    fn new(seq: u64, busy: bool) -> Self {
        Self { seq, flushed: false, batched: busy }
    }
}

/// A unary call, from its queueing to its decoded answer.
///
/// Written out rather than as an `async` block: it is the whole future of nearly every call
/// (no deadline, no span, one connection; see [`Unary`]), which is moved at least once before
/// it is pinned, and each layer of nested futures costs instructions at every poll.
struct Exchange<R, D> {
    call: PendingCall,
    method: &'static MethodDescriptor,
    step: Step,
    /// The call's stream argument, until it is handed to its task.
    outgoing: Option<EncodedStream>,
    /// Taken when the answer is decoded.
    decode: Option<D>,
    _answer: std::marker::PhantomData<fn() -> R>,
}

/// Where an [`Exchange`] is.
enum Step {
    /// Queueing the request (taken out once queued).
    Enqueue(Option<wire::Encoded>),
    /// Waiting for the answer.
    Answer(FirstFrame),
    /// The answer (or an error) was returned.
    Done,
}

// Nothing in an `Exchange` is pinned: its parts are polled through `&mut` (the decoder is only
// ever called, by value).
impl<R, D> Unpin for Exchange<R, D> {}

impl<R, D: DecodePayload<R>> Exchange<R, D> {
    /// Registers call `id` on `inner`, to send `frame` (and `outgoing`, its stream argument).
    fn new(
        inner: Arc<Inner>,
        id: u64,
        frame: wire::Encoded,
        method: &'static MethodDescriptor,
        outgoing: Option<EncodedStream>,
        decode: D,
    ) -> Result<Self, RpcError> {
        let call = PendingCall::register(inner, id, outgoing.is_some(), false)?;
        Ok(Self {
            call,
            method,
            step: Step::Enqueue(Some(frame)),
            outgoing,
            decode: Some(decode),
            _answer: std::marker::PhantomData,
        })
    }
}

impl<R, D: DecodePayload<R>> Future for Exchange<R, D> {
    type Output = Result<R, RpcError>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let Step::Enqueue(frame) = &mut this.step {
            let seq = match std::task::ready!(this.call.poll_enqueue(cx, frame)) {
                Ok(seq) => seq,
                Err(e) => {
                    this.step = Step::Done;
                    return Poll::Ready(Err(e));
                }
            };
            if let Some(outgoing) = this.outgoing.take() {
                this.call.start_pump(outgoing);
            }
            this.step = Step::Answer(FirstFrame::new(seq, this.call.busy));
        }
        let Step::Answer(wait) = &mut this.step else { panic!("a call's future was polled after it completed") };
        let answer = std::task::ready!(this.call.poll_first_frame(cx, wait, Reading::Answer));
        this.step = Step::Done;
        this.call.finish();
        let decode = this.decode.take().expect("decoded once, when the answer came");
        Poll::Ready(answer.and_then(|(_, frame)| decode_answer(this.call.inner.service, this.method, &frame, decode)))
    }
}

/// Tells the server that nobody waits for call `id` any more. Runs from `Drop`, so it cannot
/// wait: it queues the frame at once if the transport has room, and otherwise (or to finish the
/// flush) leaves the rest to a small task.
fn send_cancel(inner: &Arc<Inner>, id: u64) {
    let frame = Bytes::from(wire::encode_cancel(id));
    let queued = inner.out.try_enqueue_now(frame.clone());
    if let Some(seq) = queued {
        let mut cx = Context::from_waker(Waker::noop());
        if inner.out.poll_flushed(&mut cx, seq).is_ready() {
            return;
        }
    }
    let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
    let inner = Arc::clone(inner);
    runtime.spawn(async move {
        let flush = async {
            let sent = match queued {
                Some(seq) => std::future::poll_fn(|cx| inner.out.poll_flushed(cx, seq)).await,
                None => inner.out.send(frame).await,
            };
            // The connection cannot send any more: the calls still waiting must hear of it.
            if let Err(e) = sent {
                inner.fail(e);
            }
        };
        // A peer that stopped reading must not keep the connection (held by `inner`) alive
        // after every client handle is gone.
        let _ = tokio::time::timeout(CANCEL_LINGER, flush).await;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client of the fuzz harness's service, served by the real server engine in a task.
    async fn served_client() -> Client {
        let (conn, serve) = crate::fuzzing::served_connection();
        tokio::spawn(serve);
        Client::handshake(conn, &crate::fuzzing::SERVICE, ClientOptions::default()).await.unwrap()
    }

    fn add(client: &Client, a: i64, b: i64, options: &CallOptions) -> impl Future<Output = Result<i64, RpcError>> {
        client.call::<_, i64>(&crate::fuzzing::METHODS[0], &(a, b), options)
    }

    /// Makes `n` calls at once and checks every answer, within 30 s (`hung` says what it means
    /// if they do not come).
    async fn add_together(client: &Client, n: i64, hung: &str) {
        let calls: Vec<_> = (0..n).map(|i| add(client, i, 1, &CallOptions::new())).collect();
        let sums =
            tokio::time::timeout(Duration::from_secs(30), futures_util::future::join_all(calls)).await.expect(hung);
        for (i, sum) in sums.into_iter().enumerate() {
            assert_eq!(sum.unwrap(), i as i64 + 1);
        }
    }

    #[tokio::test]
    async fn a_call_is_registered_when_made_and_forgotten_when_dropped_unpolled() {
        let client = served_client().await;
        let pending = || client.inner.lock_inbound().calls.len();
        let call = add(&client, 1, 2, &CallOptions::new());
        assert_eq!(pending(), 1, "registered as it was made");
        drop(call);
        assert_eq!(pending(), 0, "its slot went with it");
        assert_eq!(add(&client, 2, 3, &CallOptions::new()).await.unwrap(), 5);
        let timed = CallOptions::new().timeout(Duration::from_secs(60));
        assert_eq!(add(&client, 3, 4, &timed).await.unwrap(), 7, "a call with a deadline takes the other path");
        assert_eq!(pending(), 0);
    }

    #[tokio::test]
    async fn the_future_of_a_call_without_deadline_or_span_is_small() {
        let client = served_client().await;
        let call = add(&client, 1, 2, &CallOptions::new());
        // Every call moves its future at least once before it is pinned; the async blocks it
        // replaced took 840 bytes for this call.
        let size = std::mem::size_of_val(&call);
        assert!(size <= 192, "{size} bytes");
        assert_eq!(call.await.unwrap(), 3);
    }

    #[tokio::test]
    async fn calls_made_together_are_all_answered() {
        let client = served_client().await;
        // Registered before any is polled: every call but the first finds others pending and
        // leaves its flush to the connection's flushing task, which does it for all of them.
        add_together(&client, 100, "every call answered (a batch that nobody flushes would hang here)").await;
        assert_eq!(client.inner.lock_inbound().calls.len(), 0);
        // The first call (alone, it flushes its own request) and a batch or two, not a flush
        // per call.
        let flushes = client.inner.out.flushes();
        assert!(flushes <= 5, "{flushes} flushes for 100 calls made together");
    }

    /// A call made under load leaves its flush to the connection's task, not to the call that
    /// opened its batch: that one's future may be polled once and then neither polled nor
    /// dropped for as long as its owner likes.
    #[tokio::test]
    async fn a_call_under_load_does_not_wait_for_the_call_that_opened_its_batch() {
        let client = served_client().await;
        // Pending for 20 ms (the server sleeps), and reading for the others meanwhile.
        let sleep = client.call::<_, u64>(&crate::fuzzing::METHODS[2], &(20u64,), &CallOptions::new());
        let first = tokio::spawn(sleep);
        while client.inner.lock_inbound().reader.is_none() {
            tokio::task::yield_now().await;
        }
        // Finds the first pending: queues its request, opens a batch, and is not polled again.
        let mut opener = Box::pin(add(&client, 2, 2, &CallOptions::new()));
        let flushes = client.inner.out.flushes();
        let polled = opener.as_mut().poll(&mut Context::from_waker(Waker::noop()));
        assert!(polled.is_pending());
        assert_eq!(client.inner.out.flushes(), flushes, "the opener left its request to the task");
        let third = add(&client, 3, 3, &CallOptions::new());
        let answer = tokio::time::timeout(Duration::from_secs(10), third).await;
        assert_eq!(answer.expect("answered while the opener sits unpolled").unwrap(), 6);
        assert_eq!(first.await.unwrap().unwrap(), 20);
        assert_eq!(opener.await.unwrap(), 4);
    }

    /// A call under load that finds nobody reading reads itself, and sends its request first
    /// (left to the flushing task, which has not run yet): it does not wait for the answer to a
    /// request still queued.
    #[tokio::test]
    async fn a_call_under_load_that_reads_sends_its_request_first() {
        let client = served_client().await;
        // Registered as it is made, so the next call finds it pending.
        let other = add(&client, 1, 1, &CallOptions::new());
        let mut reader = Box::pin(add(&client, 2, 2, &CallOptions::new()));
        let before = client.inner.out.flushes();
        assert!(reader.as_mut().poll(&mut Context::from_waker(Waker::noop())).is_pending());
        assert!(client.inner.lock_inbound().reader.is_some(), "it took the reader's role");
        assert_eq!(client.inner.out.flushes(), before + 1, "its request was sent before it read");
        assert_eq!(reader.await.unwrap(), 4);
        assert_eq!(other.await.unwrap(), 2);
    }

    /// A client made on one runtime and used on another, while the first is not running: the
    /// calls under load cannot count on the flushing task there, and send their requests
    /// themselves. (The reader here is a call whose request left long ago and that is never
    /// answered: its stream argument never ends. Nobody else would send them.)
    #[test]
    fn calls_under_load_on_another_runtime_than_the_connection_s_still_go_out() {
        let (conn, serve) = crate::fuzzing::served_connection();
        let used_on = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        used_on.spawn(serve);
        let made_on = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let client =
            made_on.block_on(Client::handshake(conn, &crate::fuzzing::SERVICE, ClientOptions::default())).unwrap();
        // `made_on` is not run again from here on (nor shut down): its tasks stand still.
        used_on.block_on(async {
            let (_open, items) = crate::stream::Stream::<u32>::channel(1);
            let outgoing = crate::stream::EncodedStream::new(items);
            let sum = client.call_sending::<_, u64>(&crate::fuzzing::METHODS[4], &(), outgoing, &CallOptions::new());
            let reading = tokio::spawn(sum);
            while client.inner.lock_inbound().reader.is_none() {
                tokio::task::yield_now().await;
            }
            add_together(&client, 20, "every call answered, though the flushing task never runs").await;
            reading.abort();
        });
        drop(client);
        drop(made_on);
    }

    /// The flushing task goes with its connection: dropping the client ends it (and the
    /// served connection's task), leaving the runtime with the tasks it had before.
    #[tokio::test]
    async fn the_flushing_task_ends_with_its_connection() {
        let tasks = || tokio::runtime::Handle::current().metrics().num_alive_tasks();
        let before = tasks();
        let client = served_client().await;
        assert_eq!(add(&client, 1, 2, &CallOptions::new()).await.unwrap(), 3);
        assert!(client.inner.flusher.as_ref().is_some_and(|flusher| flusher.alive()));
        assert_eq!(tasks(), before + 2, "the server's task and the flushing task");
        drop(client);
        for _ in 0..100 {
            if tasks() == before {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("{} tasks left running after the client was dropped", tasks() - before);
    }

    #[test]
    #[should_panic(expected = "ClientOptions::stream_window must be at least 4096 bytes, not 4095")]
    fn a_stream_window_under_the_minimum_is_refused() {
        let _ = ClientOptions::new().stream_window(MIN_STREAM_WINDOW - 1);
    }

    #[test]
    fn consecutive_call_ids_spread_over_the_table() {
        use std::hash::BuildHasher;
        let hasher = BuildHasherDefault::<IdHasher>::default();
        let hashes: Vec<u64> = (1u64 << 40..(1 << 40) + 4096).map(|id| hasher.hash_one(id)).collect();
        // hashbrown picks the bucket from the low bits and tags entries with the top 7.
        let buckets: std::collections::HashSet<u64> = hashes.iter().map(|h| h & 4095).collect();
        assert_eq!(buckets.len(), 4096, "consecutive ids share buckets");
        let tags: std::collections::HashSet<u64> = hashes.iter().map(|h| h >> 57).collect();
        assert_eq!(tags.len(), 128, "the tags of consecutive ids are not spread");
    }

    #[test]
    fn setters_set() {
        let options = ClientOptions::new().stream_window(MIN_STREAM_WINDOW).handshake_timeout(Duration::from_secs(1));
        assert_eq!((options.stream_window, options.handshake_timeout), (MIN_STREAM_WINDOW, Duration::from_secs(1)));
        let defaults = ClientOptions::default();
        assert_eq!(defaults.stream_window, wire::DEFAULT_STREAM_WINDOW);
        assert_eq!(defaults.call_options, CallOptions::new());
    }

    #[test]
    fn the_call_timeout_keeps_a_default_deadline() {
        let deadline = Instant::now() + Duration::from_secs(60);
        let timeout = Duration::from_secs(5);
        let options = ClientOptions::new().call_options(CallOptions::new().deadline(deadline)).call_timeout(timeout);
        assert_eq!(options.call_options, CallOptions::new().deadline(deadline).timeout(timeout));
        // And each call takes the earlier of the two.
        let now = Instant::now();
        assert_eq!(options.call_options.deadline_from(now), Some(now + timeout));
        assert_eq!(options.call_options.deadline_from(deadline), Some(deadline));
    }

    #[test]
    fn a_byte_payload_in_an_answer_shares_the_frame() {
        static METHOD: MethodDescriptor = MethodDescriptor { name: "m", id: 1, signature: "() -> Bytes" };
        static SERVICE: ServiceDescriptor = ServiceDescriptor { name: "S", methods: &[] };
        let payload = crate::bytes::Bytes::from(vec![9u8; 8192]);
        let frame = wire::ResponsePayload::encode(&payload).unwrap().into_frame(3).into_bytes();
        let answer: crate::bytes::Bytes = decode_answer(&SERVICE, &METHOD, &frame, decode_typed).unwrap();
        assert_eq!(answer, payload);
        assert!(frame.as_ptr_range().contains(&answer.as_ptr()), "the answer was copied out of its frame");
    }

    #[test]
    #[allow(deprecated)]
    fn the_old_call_option_names_still_work() {
        let deadline = Instant::now();
        let new = CallOptions::new().timeout(Duration::from_secs(1)).deadline(deadline);
        assert_eq!(CallOptions::new().with_timeout(Duration::from_secs(1)).with_deadline(deadline), new);
    }

    /// What `poll_frame` does for a call that finds another call reading.
    fn park(inbound: &mut Inbound, id: u64) {
        if inbound.calls.get_mut(&id).expect("a registered call").park() {
            inbound.enqueue_parked(id);
        }
    }

    #[test]
    fn a_stream_that_let_an_answered_call_run_first_reads_on_when_that_call_is_done() {
        let (count, waker) = crate::wake_count::WakeCount::new();
        let woken = || count.get();
        let mut inbound = Inbound { reader: Some(1), ..Inbound::default() };
        // 1: a stream reading; 2: a call it has just answered; 3: a call parked behind it.
        for id in 1..=3 {
            inbound.calls.insert(id, Slot { waker: Some(waker.clone()), ..Slot::default() });
        }
        park(&mut inbound, 3);
        inbound.defer(1, 2);
        assert_eq!(inbound.reader, Some(2));
        // The stream taking a frame meanwhile (polled by its task for another reason) hands on
        // nothing: it is not the reader now.
        inbound.release(1);
        assert_eq!((woken(), inbound.reader), (0, Some(2)));
        // The answered call has its answer and finishes: the stream reads on, not the parked call.
        inbound.remove(2);
        assert_eq!((woken(), inbound.reader, inbound.deferred), (1, Some(1), None));
        assert!(inbound.calls[&1].waker.is_none(), "the stream's waker was used");
        // A call dropped before it ran hands the role back as well.
        inbound.calls.get_mut(&1).unwrap().waker = Some(waker.clone());
        inbound.calls.insert(4, Slot { waker: Some(waker.clone()), ..Slot::default() });
        inbound.defer(1, 4);
        inbound.remove(4);
        assert_eq!((woken(), inbound.reader), (2, Some(1)));
        // The stream leaves while it reads: the parked call takes over.
        inbound.remove(1);
        assert_eq!((woken(), inbound.reader), (3, Some(3)));
        // A closed connection has no one waiting for the role.
        inbound.calls.insert(5, Slot { waker: Some(waker.clone()), ..Slot::default() });
        inbound.defer(3, 5);
        inbound.close(RpcError::disconnected("gone"));
        assert_eq!((inbound.reader, inbound.deferred), (None, None));
    }

    #[test]
    fn the_reader_role_is_handed_on_once_and_only_by_the_reader() {
        let (count, waker) = crate::wake_count::WakeCount::new();
        let mut inbound = Inbound { reader: Some(0), ..Inbound::default() };
        for id in 0..100 {
            inbound.calls.insert(id, Slot { waker: Some(waker.clone()), ..Slot::default() });
        }
        for id in 1..100 {
            park(&mut inbound, id);
            park(&mut inbound, id);
        }
        assert_eq!(inbound.parked.len(), 99, "once per wait, however often polled");
        let woken = || count.get();
        // A call that is not the reader finishes: nobody is woken.
        inbound.remove(7);
        assert_eq!((woken(), inbound.reader), (0, Some(0)));
        // The reader finishes: one waiting call is asked to take over.
        inbound.remove(0);
        let Some(next) = inbound.reader.filter(|&next| next != 0) else { panic!("{:?}", inbound.reader) };
        assert_eq!(woken(), 1);
        assert!(inbound.calls[&next].waker.is_none(), "the offered call's waker was used");
        // Other calls finishing meanwhile search and wake no one else.
        for id in (1..100).filter(|&id| id != next && id != 7).take(50) {
            inbound.remove(id);
        }
        assert_eq!((woken(), inbound.reader), (1, Some(next)));
        // The offered call leaves before it was polled: the role goes to another.
        inbound.remove(next);
        assert!(inbound.reader.is_some_and(|other| other != next), "{:?}", inbound.reader);
        assert_eq!(woken(), 2);
        // With no one left waiting, nobody reads, and finishing calls wake nobody.
        for slot in inbound.calls.values_mut() {
            slot.answer = Some(Ok(Bytes::new()));
        }
        let last = inbound.reader.expect("offered above");
        inbound.remove(last);
        assert_eq!((woken(), inbound.reader), (2, None));
        let any = *inbound.calls.keys().next().unwrap();
        inbound.remove(any);
        assert_eq!(woken(), 2);
        assert!(inbound.parked.is_empty());
    }

    #[test]
    fn parked_ids_of_finished_calls_do_not_pile_up_under_one_long_reader() {
        let mut inbound = Inbound { reader: Some(0), ..Inbound::default() };
        inbound.calls.insert(0, Slot::default());
        // Call 0 reads for ever; short calls park behind it and finish, 10 in flight at a time.
        for id in 1..100_000 {
            inbound.calls.insert(id, Slot { waker: Some(Waker::noop().clone()), ..Slot::default() });
            park(&mut inbound, id);
            if id > 10 {
                inbound.remove(id - 10);
            }
            // At most twice the (12) calls in the table when it was pushed, plus the slack.
            assert!(inbound.parked.len() <= 2 * 12 + 64, "{} ids", inbound.parked.len());
        }
        assert_eq!(inbound.reader, Some(0), "only the reader hands its role on");
        // When it leaves at last, the role goes to the call that parked last.
        inbound.remove(0);
        assert_eq!(inbound.reader, Some(100_000 - 1));
    }
}
