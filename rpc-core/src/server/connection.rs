//! One server connection: the hello exchange, then a read loop that starts a call per request.
//!
//! A call's future is polled once right here, in the connection's task: a handler that finishes
//! without waiting (most do) is answered with no hop to another task. Only a handler that waits
//! is moved to a task of its own, so slow calls run concurrently and in parallel.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use futures_util::FutureExt;
use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;

use super::permits::{Permit, Permits};
use super::watch::{Stall, Watch};
use super::woken::Woken;
use super::ServerOptions;
use crate::client::frame_name;
use crate::context::CallContext;
use crate::error::RpcError;
use crate::outbound::SharedSender;
use crate::service::{Call, CallSetup, Service};
use crate::stream::flow::SendWindow;
use crate::stream::inbox::Inbox;
use crate::stream::pump::{Pump, PumpError};
use crate::transport::{self, Connection, ConnectionInfo, FrameReceiver};
use crate::wire::{
    self, CloseCode, Encoded, Frame, Hello, HelloReply, RemoteError, RequestHeader, ResponsePayload, MIN_STREAM_WINDOW,
    PROTOCOL_VERSION, RESPONSE_HEADER_LEN,
};

use tracing::Instrument;

use super::Shared;
use crate::layer::Middleware;
use crate::telemetry::{self, Counters};
use crate::wire::TraceContext;

type Services = HashMap<&'static str, Arc<dyn Service>>;

/// How many frames in a row the read loop may take before it looks whether the server is
/// shutting down (it also does whenever it has to wait for input).
const SHUTDOWN_CHECK_EVERY: u32 = 64;

/// How many frames in a row the read loop takes before it pushes out the answers its inline
/// calls queued (it also does whenever it has to wait for input); each later push in the same
/// run of input waits for twice as many. A batch of requests read in one go is then answered in
/// chunks, and a client that polls for its answers (the transports' `spin`) works on the first
/// ones while the server computes the rest, instead of each side waiting for the other's whole
/// batch: 64 calls in flight over unix:// went from 355-442 to 922-1070 k calls/s in `rpc-bench`
/// (three sets of rounds; a push every 8, 16 or 32 frames did about as well). The doubling keeps
/// deep pipelines from paying a write per 16 answers (with a fixed 16, tls:// at 1000 calls in
/// flight lost about a fifth in one set of bench rounds, though not in another).
const FIRST_FLUSH: u32 = 16;

/// Why the read loop stopped.
enum End {
    /// The client closed the connection (or said goaway).
    PeerClosed,
    /// The server is shutting down.
    Shutdown,
    /// The client broke the protocol, stalled, or the transport failed; the reason goes to the
    /// client.
    Fault(CloseCode, String),
    /// The client stopped reading its answers: nothing more can reach it, so the connection is
    /// dropped at once (the reason goes out only if there happens to be room for it).
    Stalled(String),
}

impl From<Stall> for End {
    fn from(stall: Stall) -> End {
        match stall {
            Stall::Send { .. } => End::Stalled(stall.reason()),
            Stall::Frame { .. } | Stall::Idle { .. } => End::Fault(stall.code(), stall.reason()),
        }
    }
}

impl End {
    fn violation(reason: impl Into<String>) -> End {
        End::Fault(CloseCode::ProtocolViolation, reason.into())
    }
}

struct Conn {
    service: Arc<dyn Service>,
    out: Arc<SharedSender>,
    /// Facts about the connection, shared with every call's [`CallContext`].
    info: Arc<ConnectionInfo>,
    /// Calls that run in tasks of their own (so a cancel can stop them), and streaming calls
    /// (so their frames find them) from the moment they start.
    running: Mutex<HashMap<u64, Running>>,
    /// How many calls `running` held when its lock was last released (stored under the lock),
    /// so the read loop need not take the lock to learn that none runs.
    running_len: AtomicUsize,
    /// The credit this server grants each stream a client sends.
    stream_window: u32,
    /// The credit the client grants each stream this server sends.
    peer_window: u32,
    /// The task running the read loop: a call polled there is running inline.
    task: Option<tokio::task::Id>,
    /// Sequence number of the last answer queued by an inline call and not yet flushed (0: none).
    unflushed: AtomicU64,
    /// The layers calls run behind, if the server has any.
    middleware: Option<Middleware>,
    /// The server's counters.
    counters: Arc<Counters>,
    /// The connection's span, parent of its calls' spans.
    span: tracing::Span,
}

pub(super) async fn serve(shared: Arc<Shared>, options: ServerOptions, conn: Connection, shutdown: CancellationToken) {
    let span = if telemetry::spans_wanted() {
        tracing::debug_span!(
            "rpc.connection",
            transport = conn.info.transport,
            peer = %conn.info.peer,
            service = tracing::field::Empty,
        )
    } else {
        tracing::Span::none()
    };
    let transport = conn.info.transport;
    shared.counters.connection_opened(transport);
    let code = serve_connection(&shared, options, conn, shutdown, span.clone()).instrument(span).await;
    shared.counters.connection_closed(transport, code);
}

/// Serves one connection; returns the code it was closed with, if it was closed for a reason.
async fn serve_connection(
    shared: &Shared,
    options: ServerOptions,
    conn: Connection,
    shutdown: CancellationToken,
    span: tracing::Span,
) -> Option<CloseCode> {
    let Connection { sender, mut receiver, info } = conn;
    tracing::debug!(peer = %info.peer, "connection accepted");
    let out = Arc::new(SharedSender::new(sender));
    let (service, peer_window) =
        match handshake(&shared.services, &options, &info, &out, &mut *receiver, &shutdown).await {
            Ok(bound) => bound,
            Err(code) => {
                // Bounded like every other farewell: the peer may not be reading.
                let _ = tokio::time::timeout(LINGER, out.close()).await;
                return code;
            }
        };
    span.record("service", service.descriptor().name);
    let conn = Arc::new(Conn {
        service,
        out,
        info: Arc::new(info),
        running: Mutex::new(HashMap::new()),
        running_len: AtomicUsize::new(0),
        stream_window: options.stream_window,
        peer_window,
        task: tokio::task::try_id(),
        unflushed: AtomicU64::new(0),
        middleware: shared.middleware.clone(),
        counters: Arc::clone(&shared.counters),
        span,
    });
    // Handler tasks hold the connection; if this task is dropped (the server task aborted),
    // they must not keep it open.
    let _abort_on_drop = AbortOnDrop(Arc::clone(&conn));
    // At least 1 and at most `MAX_IN_FLIGHT` (the setter makes sure).
    let max_in_flight = options.max_in_flight;
    let permits = Permits::new(max_in_flight);
    let watch = Watch::new(&options, Instant::now());
    let end = read_loop(&conn, &mut *receiver, &permits, &shutdown, watch).await;
    let peer = conn.info.peer.as_str();
    let goaway = match end {
        // Nobody will read the answers: stop the handlers now, say nothing.
        End::PeerClosed => {
            tracing::debug!(peer, "connection closed by the peer");
            conn.abort_all(false);
            None
        }
        End::Shutdown => {
            let running = permits.taken();
            if running > 0 {
                tracing::info!(peer, running, "shutdown: waiting for the connection's calls to finish");
            }
            let all = std::future::poll_fn(|cx| permits.poll_all_free(cx));
            if tokio::time::timeout(options.shutdown_grace, all).await.is_err() {
                let running = permits.taken();
                tracing::info!(peer, running, "shutdown: grace period over, cancelling the calls still running");
                conn.abort_all(true);
            }
            let reason = "server shutting down";
            telemetry::connection_closed(peer, CloseCode::ShuttingDown, reason);
            Some((CloseCode::ShuttingDown, reason.to_owned()))
        }
        End::Fault(code, reason) => {
            telemetry::connection_closed(peer, code, &reason);
            conn.abort_all(false);
            Some((code, reason))
        }
        End::Stalled(reason) => {
            telemetry::connection_closed(peer, CloseCode::SendTimeout, &reason);
            conn.abort_all(false);
            conn.out.try_enqueue_now(Bytes::from(wire::encode_goaway(CloseCode::SendTimeout, &reason)));
            conn.out.shut();
            return Some(CloseCode::SendTimeout);
        }
    };
    let code = goaway.as_ref().map(|(code, _)| *code);
    // A client that stopped reading must not keep this task (and its buffers) forever.
    let farewell = async {
        if let Some((code, reason)) = goaway {
            let _ = conn.out.send_last(Bytes::from(wire::encode_goaway(code, &reason))).await;
        }
        let _ = conn.out.close().await;
    };
    let _ = tokio::time::timeout(LINGER, farewell).await;
    // Handler tasks that finished their call but still wait to send its answer hold the
    // connection; they give up now.
    conn.out.shut();
    code
}

/// How long a closing connection may take to deliver its last frames.
const LINGER: Duration = Duration::from_secs(5);

/// Reads the client's hello and answers it; returns the service the connection is bound to, or
/// the code it was closed with (`None`: it just ended).
async fn handshake(
    services: &Services,
    options: &ServerOptions,
    info: &ConnectionInfo,
    out: &SharedSender,
    receiver: &mut dyn FrameReceiver,
    shutdown: &CancellationToken,
) -> Result<(Arc<dyn Service>, u32), Option<CloseCode>> {
    let close = |code: CloseCode, reason: String| async move {
        telemetry::connection_closed(&info.peer, code, &reason);
        goaway(out, code, &reason).await;
        Err::<(Arc<dyn Service>, u32), _>(Some(code))
    };
    let frame = tokio::select! {
        () = shutdown.cancelled() => {
            tracing::debug!(peer = %info.peer, "closed during the hello: server shutting down");
            return Err(None);
        }
        read = tokio::time::timeout(options.handshake_timeout, transport::recv(receiver)) => match read {
            Ok(Ok(Some(frame))) => frame,
            Err(_) => {
                return close(CloseCode::HandshakeTimeout, "no hello within the handshake timeout".to_owned()).await;
            }
            Ok(Ok(None)) => {
                tracing::debug!(peer = %info.peer, "connection closed by the peer before its hello");
                return Err(None);
            }
            // Too large, or cut off mid-frame: say so if the client still listens.
            Ok(Err(e)) => {
                let e = RpcError::from(e);
                let code = match e {
                    RpcError::FrameTooLarge { .. } => CloseCode::FrameTooLarge,
                    _ => CloseCode::ProtocolViolation,
                };
                return close(code, format!("expected a hello: {e}")).await;
            }
        },
    };
    // Refused only now, after reading the client's hello: a client whose hello is still being
    // written when we close would see a broken pipe instead of our reason.
    if let Err(reason) = admit(options, info) {
        return close(CloseCode::Refused, reason).await;
    }
    let window = options.stream_window;
    let (reply, service) = match wire::decode(&frame) {
        Ok(Frame::Hello { hello: Some(hello), version: PROTOCOL_VERSION }) => {
            if hello.stream_window < MIN_STREAM_WINDOW {
                let reason = format!(
                    "the hello's stream window of {} bytes is below the minimum of {MIN_STREAM_WINDOW}",
                    hello.stream_window
                );
                return close(CloseCode::ProtocolViolation, reason).await;
            }
            let (reply, service) = answer_hello(services, &hello, window);
            if service.is_none() {
                tracing::info!(peer = %info.peer, service = %shown(&hello.service), reply = ?reply, "hello refused");
            }
            (reply, service.map(|s| (s, hello.stream_window)))
        }
        Ok(Frame::Hello { version, .. }) => {
            tracing::info!(peer = %info.peer, version, ours = PROTOCOL_VERSION, "hello refused: protocol version mismatch");
            (HelloReply::VersionMismatch, None)
        }
        Ok(other) => {
            let reason = format!("expected a hello, got {}", frame_name(&other));
            return close(CloseCode::ProtocolViolation, reason).await;
        }
        Err(e) => return close(CloseCode::ProtocolViolation, format!("expected a hello: {e}")).await,
    };
    // Bounded like every send of the handshake: a client that does not read cannot keep us.
    let sent = tokio::time::timeout(LINGER, out.send(Bytes::from(wire::encode_hello_reply(&reply)))).await;
    if !matches!(sent, Ok(Ok(_))) {
        tracing::debug!(peer = %info.peer, "the hello reply could not be sent");
        return Err(None);
    }
    service.ok_or(None)
}

/// Tells the client why its connection closes, if it reads within [`LINGER`].
async fn goaway(out: &SharedSender, code: CloseCode, reason: &str) {
    let _ = tokio::time::timeout(LINGER, out.send_last(Bytes::from(wire::encode_goaway(code, reason)))).await;
}

/// Applies [`ServerOptions::same_uid_only`]: `Err` with the reason the client is told.
fn admit(options: &ServerOptions, info: &ConnectionInfo) -> Result<(), String> {
    if !options.same_uid_only {
        return Ok(());
    }
    let ours = super::effective_uid();
    match info.peer_credentials {
        Some(peer) if Some(peer.uid) == ours => Ok(()),
        Some(peer) => Err(format!(
            "refused: this server accepts only its own user (uid {}), and the client runs as uid {}",
            ours.map_or_else(|| "unknown".to_owned(), |uid| uid.to_string()),
            peer.uid
        )),
        None => Err(format!(
            "refused: this server accepts only its own user, and a {} connection cannot tell who the client is",
            info.transport
        )),
    }
}

/// Differences listed in an interface-mismatch reply; the rest are counted.
const MAX_DIFFERENCES: usize = 32;
/// Characters of a client's method name or signature quoted back to it.
const MAX_SHOWN: usize = 200;

/// `text`, cut to [`MAX_SHOWN`] characters.
fn shown(text: &str) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(MAX_SHOWN) {
        None => text.into(),
        Some((end, _)) => format!("{}...", &text[..end]).into(),
    }
}

fn answer_hello(services: &Services, hello: &Hello, stream_window: u32) -> (HelloReply, Option<Arc<dyn Service>>) {
    let Some(service) = services.get(hello.service.as_str()) else {
        let mut available: Vec<String> = services.keys().map(|s| (*s).to_owned()).collect();
        available.sort();
        return (HelloReply::UnknownService { available }, None);
    };
    let ours = service.descriptor();
    // A server may have methods the client does not know (it is newer); every method the
    // client knows must exist here with the same signature. The list a client gets is bounded
    // (and so is each name in it): a hello naming many long methods must not become a reply
    // many times its size.
    let mut differences = Vec::new();
    let mut unlisted = 0usize;
    for theirs in &hello.methods {
        let differs = match ours.method_by_name(&theirs.name) {
            None => Some(None),
            Some(m) if m.signature != theirs.signature => Some(Some(m.signature)),
            Some(_) => None,
        };
        match differs {
            None => {}
            Some(_) if differences.len() == MAX_DIFFERENCES => unlisted += 1,
            Some(None) => differences.push(format!("method `{}` does not exist on the server", shown(&theirs.name))),
            Some(Some(signature)) => differences.push(format!(
                "method `{}` is `{}` on the client but `{}` on the server",
                shown(&theirs.name),
                shown(&theirs.signature),
                signature
            )),
        }
    }
    if unlisted > 0 {
        differences.push(format!("and {unlisted} more"));
    }
    if differences.is_empty() {
        (HelloReply::Accepted { stream_window }, Some(Arc::clone(service)))
    } else {
        (HelloReply::InterfaceMismatch { differences }, None)
    }
}

async fn read_loop(
    conn: &Arc<Conn>,
    receiver: &mut dyn FrameReceiver,
    permits: &Arc<Permits>,
    shutdown: &CancellationToken,
    mut watch: Watch,
) -> End {
    // One timer for the connection's life, re-armed only when it fires: a busy connection pays
    // a counter increment per frame, no timer registration.
    let mut timer = Woken::new(tokio::time::sleep_until(watch.next_check()));
    // Likewise one wait for shutdown, registered once: a new one per frame (a waiter linked
    // into the token's list and unlinked again) cost ~190 instructions a call (callgrind).
    // Both are polled again only once they fire (see `Woken`).
    let mut shut_down = Woken::new(shutdown.cancelled());
    // Frames read since the shutdown token was last looked at.
    let mut unchecked = 0u32;
    // Frames read since the input last ran dry, and the count at which answers are pushed out
    // next (see `FIRST_FLUSH`).
    let (mut run, mut flush_at) = (0u32, FIRST_FLUSH);
    loop {
        // Take the permit before reading, so a client at its limit is simply not read from;
        // except while streams run, whose items and credit come in on this connection (a
        // request read then is refused, see below).
        let permit = match permits.try_take() {
            Some(permit) => Some(permit),
            None if conn.streams_running() => None,
            None => tokio::select! {
                biased;
                () = &mut shut_down => return End::Shutdown,
                permit = permits.take() => Some(permit),
                () = std::future::poll_fn(|cx| conn.poll_flush_deferred(cx)) => unreachable!("never ready"),
                // Every call is running or waiting to be answered: only the send timeout applies.
                () = &mut timer => {
                    let running = permits.taken();
                    conn.out.nudge();
                    let progress = conn.out.progress();
                    if let Some(stall) = watch.check(Instant::now(), running, 0, progress) {
                        return stall.into();
                    }
                    timer.get_mut().reset(watch.next_check());
                    continue;
                }
            },
        };
        let recv = std::future::poll_fn(|cx| {
            let read = receiver.poll_recv(cx);
            if read.is_pending() {
                (run, flush_at) = (0, FIRST_FLUSH);
                // No more input right now: push out the answers queued since the last wait.
                let _ = conn.poll_flush_deferred(cx);
            }
            read
        });
        // Input first: while frames keep coming, the wait for shutdown is not polled (~180
        // instructions a frame). It is whenever `recv` is pending, and the token is looked at
        // every `SHUTDOWN_CHECK_EVERY` frames, so a flood (frames a receiver had buffered need
        // no read, so no budget) does not hold shutdown off.
        let frame = tokio::select! {
            biased;
            read = recv => match read {
                Ok(Some(frame)) => frame,
                Ok(None) => return End::PeerClosed,
                Err(e) => {
                    let e = RpcError::from(e);
                    let code = match e {
                        RpcError::FrameTooLarge { .. } => CloseCode::FrameTooLarge,
                        RpcError::Io(_) => CloseCode::TransportError,
                        _ => CloseCode::ProtocolViolation,
                    };
                    return End::Fault(code, e.to_string());
                }
            },
            () = &mut shut_down => return End::Shutdown,
            // Polled after `recv` found nothing whole to read, so what the receiver holds now is
            // the beginning of a frame. (`- 1`: the permit taken for the next request.)
            () = &mut timer => {
                let running = permits.taken() - usize::from(permit.is_some());
                conn.out.nudge();
                let (partial_len, progress) = (receiver.partial_frame_len(), conn.out.progress());
                if let Some(stall) = watch.check(Instant::now(), running, partial_len, progress) {
                    return stall.into();
                }
                timer.get_mut().reset(watch.next_check());
                continue;
            }
        };
        watch.frame_received();
        conn.counters.received(frame.len());
        unchecked += 1;
        run = run.saturating_add(1);
        if run == flush_at {
            flush_at = flush_at.saturating_mul(2);
            std::future::poll_fn(|cx| {
                let _ = conn.poll_flush_deferred(cx);
                Poll::Ready(())
            })
            .await;
        }
        if unchecked == SHUTDOWN_CHECK_EVERY {
            unchecked = 0;
            if shutdown.is_cancelled() {
                return End::Shutdown;
            }
        }
        match wire::decode(&frame) {
            // Ids are unique among a client's calls in flight. A reused id would take the running
            // call's entry, and that call could then be neither cancelled nor stopped when the
            // connection ends: it would run on, holding the connection, after the client left.
            // (A call leaves `running` before its answer goes out, so a client that reuses an id
            // once it has the answer never trips this.)
            Ok(Frame::Request { header, .. }) if conn.is_running(header.id) => {
                return End::violation(format!("the client reused call id {} while that call was running", header.id))
            }
            Ok(Frame::Request { header, args, trace }) => {
                match permit.or_else(|| permits.try_take()) {
                    Some(permit) => conn.start_call(header, trace, &frame, args, permit).await,
                    // At the limit while streams run: reading on is what keeps those streams
                    // going, so a new call is refused instead of waiting for a permit.
                    None => {
                        tracing::debug!(call_id = header.id, "call refused: at the in-flight limit while streams run");
                        let refusal = wire::encode_response_err(header.id, &RemoteError::Overloaded);
                        let mut refusal = Some(refusal.into());
                        if let Ok(seq) = std::future::poll_fn(|cx| conn.out.poll_enqueue(cx, &mut refusal)).await {
                            conn.unflushed.fetch_max(seq, Ordering::Relaxed);
                        }
                    }
                }
            }
            Ok(Frame::Cancel { id }) => {
                if let Some(handle) = conn.lock_running().remove(&id).and_then(|r| r.task) {
                    handle.abort();
                }
            }
            Ok(Frame::StreamItems { id, .. }) => {
                // A call that has finished may still get the items the client sent before it
                // heard: they are dropped.
                if let Some(inbox) = conn.inbox(id) {
                    if let Err(violation) = inbox.push(frame.clone()) {
                        return End::violation(violation);
                    }
                }
            }
            Ok(Frame::StreamEnd { id }) => {
                if let Some(inbox) = conn.inbox(id) {
                    if let Err(violation) = inbox.end() {
                        return End::violation(violation);
                    }
                }
            }
            Ok(Frame::Credit { id, bytes }) => {
                let window = conn.lock_running().get(&id).and_then(|r| r.window.clone());
                if let Some(window) = window {
                    if let Err(violation) = window.grant(bytes) {
                        return End::violation(violation);
                    }
                }
            }
            Ok(Frame::Goaway { .. }) => return End::PeerClosed,
            Ok(Frame::Hello { .. }) => return End::violation("the client sent a second hello"),
            Ok(other) => {
                return End::violation(format!("the client sent {}, which only a server sends", frame_name(&other)))
            }
            Err(e) => return End::violation(format!("bad frame from a client: {e}")),
        }
    }
}

/// The lock on [`Conn::running`], which records how many calls it holds when released.
struct RunningGuard<'a> {
    calls: MutexGuard<'a, HashMap<u64, Running>>,
    len: &'a AtomicUsize,
}

impl std::ops::Deref for RunningGuard<'_> {
    type Target = HashMap<u64, Running>;

    fn deref(&self) -> &Self::Target {
        &self.calls
    }
}

impl std::ops::DerefMut for RunningGuard<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.calls
    }
}

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        // Before `calls` unlocks (fields drop after this): stores are ordered by the lock.
        self.len.store(self.calls.len(), Ordering::Relaxed);
    }
}

/// A call the connection keeps track of while it runs.
#[derive(Default)]
struct Running {
    /// The call's own task, once it has one (a call that finishes inline never does).
    task: Option<AbortHandle>,
    /// The client's stream, for a method that takes one.
    inbox: Option<Arc<Inbox>>,
    /// Credit for the stream this server sends, for a method that returns one.
    window: Option<Arc<SendWindow>>,
}

impl Conn {
    /// Flushes answers that inline calls queued without flushing. Never ready: it only makes
    /// progress (and registers for write readiness) while the read loop waits for something else.
    fn poll_flush_deferred(&self, cx: &mut std::task::Context<'_>) -> Poll<()> {
        let seq = self.unflushed.load(Ordering::Relaxed);
        if seq != 0 && self.out.poll_flushed(cx, seq).is_ready() {
            // Only this task raises `unflushed`, so nothing newer is lost by the reset.
            self.unflushed.store(0, Ordering::Relaxed);
        }
        Poll::Pending
    }

    fn lock_running(&self) -> RunningGuard<'_> {
        RunningGuard { calls: self.running.lock().unwrap_or_else(|e| e.into_inner()), len: &self.running_len }
    }

    /// Whether call `id` is running; for the read loop only. Without a lock when no call runs
    /// (calls answered inline, nearly all, never run): only the read loop adds calls, so a count
    /// of 0 it reads is not stale, it can only have been lowered since by calls that finished.
    fn is_running(&self, id: u64) -> bool {
        self.running_len.load(Ordering::Relaxed) != 0 && self.lock_running().contains_key(&id)
    }

    /// Whether a streaming call runs: then the read loop reads on at the in-flight limit, since
    /// the streams' credit and items come in on this connection. Asked only at that limit.
    fn streams_running(&self) -> bool {
        self.lock_running().values().any(|r| r.inbox.is_some() || r.window.is_some())
    }

    /// The client's stream of call `id`, if that call is running and takes one.
    fn inbox(&self, id: u64) -> Option<Arc<Inbox>> {
        self.lock_running().get(&id).and_then(|r| r.inbox.clone())
    }

    /// Removes the entry for `id` if it belongs to the current call: the one whose task is the
    /// current task, or one without a task while polled inline. (A reused id may already name
    /// another call's entry.)
    fn forget(&self, id: u64) {
        let mut running = self.lock_running();
        let ours = running.get(&id).is_some_and(|r| match &r.task {
            Some(task) => Some(task.id()) == tokio::task::try_id(),
            None => tokio::task::try_id() == self.task,
        });
        if ours {
            running.remove(&id);
        }
    }

    /// Starts one call (its `args` are part of `frame`): polls it once here and moves it to its
    /// own task only if it must wait.
    async fn start_call(
        self: &Arc<Self>,
        header: RequestHeader,
        trace: Option<TraceContext>,
        frame: &Bytes,
        args: &[u8],
        permit: Permit,
    ) {
        let id = header.id;
        let descriptor = self.service.descriptor();
        let span = if telemetry::spans_wanted() {
            tracing::debug_span!(
                parent: &self.span,
                "rpc.server.call",
                service = descriptor.name,
                method = tracing::field::Empty,
                call_id = id,
                transport = self.info.transport,
                peer = %self.info.peer,
                trace_id = tracing::field::Empty,
                parent_span_id = tracing::field::Empty,
                outcome = tracing::field::Empty,
                duration_us = tracing::field::Empty,
            )
        } else {
            tracing::Span::none()
        };
        // Named and timed only when someone looks: the span, or the metrics (labels, histogram).
        let observed = cfg!(feature = "metrics") || !span.is_disabled();
        let method_name = if observed { method_name(descriptor, header.method) } else { "" };
        if !span.is_disabled() {
            span.record("method", method_name);
            if let Some(trace) = trace {
                span.record("trace_id", telemetry::trace_id_hex(trace.trace_id));
                span.record("parent_span_id", telemetry::span_id_hex(trace.span_id));
            }
        }
        let started = observed.then(std::time::Instant::now);
        self.counters.call_started(descriptor.name, method_name);
        let mut setup = CallSetup::new(id, self.stream_window, &self.out);
        // Decoding runs user `Deserialize` impls, which may panic. Byte payloads among the
        // arguments share `frame` (see `crate::bytes`).
        let dispatch = std::panic::catch_unwind(AssertUnwindSafe(|| {
            crate::bytes::decoding_from(frame, || self.service.call(header.method, args, &mut setup))
        }))
        .unwrap_or_else(|panic| Err(RemoteError::Panic(panic_message(&*panic))));
        let inbox = setup.take_inbox();
        let deadline =
            header.timeout_us.and_then(|us| std::time::Instant::now().checked_add(Duration::from_micros(us)));
        let context = CallContext::new(Arc::clone(&self.info), id, header.method, deadline, trace);
        // With layers, the call runs behind them; without, exactly as the dispatcher started it.
        let dispatch = match (&self.middleware, dispatch) {
            (Some(middleware), Ok(call)) => Ok(middleware.wrap(context.clone(), descriptor, call)),
            (_, dispatch) => dispatch,
        };
        // Most unary handlers answer without waiting. Their future is polled once right here, in
        // the call's context and span, and the answer queued: no future around it is built,
        // boxed and moved (this took an `add` over unix:// at 64 in flight from 8,140 to 7,559
        // instructions a call; callgrind). One that waits goes on in a task of its own, below.
        let (dispatch, waits) = match dispatch {
            Ok(Call::Unary(mut handler)) if inbox.is_none() => {
                let polled = std::future::poll_fn(|cx| {
                    let _entered = span.enter();
                    Poll::Ready(std::panic::catch_unwind(AssertUnwindSafe(|| {
                        context.sync_scope(|| handler.as_mut().poll(cx))
                    })))
                })
                .await;
                let result = match polled {
                    Ok(Poll::Pending) => None,
                    Ok(Poll::Ready(result)) => Some(result),
                    Err(panic) => Some(Err(RemoteError::Panic(panic_message(&*panic)))),
                };
                match result {
                    Some(result) => {
                        return self.answer_at_once(&span, &header, method_name, started, result, permit).await
                    }
                    None => (Ok(Call::Unary(handler)), true),
                }
            }
            dispatch => (dispatch, false),
        };
        let conn = Arc::clone(self);
        let call_span = span.clone();
        let window = matches!(dispatch, Ok(Call::Streaming(_))).then(|| Arc::new(SendWindow::new(self.peer_window)));
        // Streaming calls are known to the read loop before anything else is read, so that their
        // frames find them.
        if inbox.is_some() || window.is_some() {
            self.lock_running().insert(id, Running { task: None, inbox: inbox.clone(), window: window.clone() });
        }
        let mut call = Box::pin(
            async move {
                let outcome = match dispatch {
                    // The context is current whenever the handler is polled: here inline, and in the
                    // task the call may move to.
                    Ok(Call::Unary(handler)) => {
                        let result = guarded(context.scope(handler), deadline).await;
                        match inbox.as_ref().and_then(|inbox| inbox.failure()) {
                            Some(failure) => Err(RemoteError::Decode(failure)),
                            None => result.map(Some),
                        }
                    }
                    Ok(Call::Streaming(handler)) => {
                        let window = window.expect("made for every streaming call");
                        // Boxed: its state (the pump, its frame) would otherwise make every call's
                        // future, unary ones too, that much larger to allocate and move.
                        let stream = Box::pin(conn.send_stream(id, handler, window));
                        guarded(context.scope(stream), deadline).await.map(|()| None)
                    }
                    Err(e) => Err(e),
                };
                conn.finished(&call_span, method_name, header.method, started, &outcome);
                // Forget the call before answering: once the answer is out, the client may reuse
                // the id. Again after: if the send had to wait, this future was moved to a task and
                // registered only then.
                conn.forget(id);
                // A streamed answer has gone out already, ending with its stream end frame.
                if let Some(frame) = outcome.transpose().map(|result| conn.response_frame(id, result)) {
                    // A failed send means the connection is dead; the read loop sees that too.
                    let mut frame = Some(frame);
                    if let Ok(seq) = std::future::poll_fn(|cx| conn.out.poll_enqueue(cx, &mut frame)).await {
                        if tokio::task::try_id() == conn.task {
                            // Polled inline by the read loop, which flushes before it waits for
                            // input: answers to a burst of requests leave in one write.
                            conn.unflushed.fetch_max(seq, Ordering::Relaxed);
                        } else {
                            let _ = std::future::poll_fn(|cx| conn.out.poll_flushed(cx, seq)).await;
                        }
                    }
                }
                conn.forget(id);
                drop(permit);
            }
            .instrument(span),
        );
        // A handler polled above has just said it waits: straight to its task.
        if !waits && std::future::poll_fn(|cx| Poll::Ready(call.as_mut().poll(cx))).await.is_ready() {
            return;
        }
        self.run_in_task(id, call);
    }

    /// Spawns what call `id` still has to do and registers the task as running, so that it can
    /// be stopped and the id is not reused meanwhile.
    fn run_in_task(&self, id: u64, work: impl Future<Output = ()> + Send + 'static) {
        // Insert under the lock the task's own `forget` takes: `spawn` never polls inline, so
        // the task cannot remove its entry before it exists.
        let mut running = self.lock_running();
        let handle = tokio::spawn(work).abort_handle();
        running.entry(id).or_default().task = Some(handle);
    }

    /// Records and answers a unary call whose handler finished when first polled, from the read
    /// loop: the answer is queued now and leaves with the read loop's next flush; only if the
    /// transport has no room does it wait, in a task of its own, as the answer of a call that
    /// waited would.
    async fn answer_at_once(
        self: &Arc<Self>,
        span: &tracing::Span,
        header: &RequestHeader,
        method_name: &'static str,
        started: Option<std::time::Instant>,
        result: Result<ResponsePayload, RemoteError>,
        permit: Permit,
    ) {
        let id = header.id;
        self.finished(span, method_name, header.method, started, &result);
        let mut frame = Some(self.response_frame(id, result));
        match std::future::poll_fn(|cx| Poll::Ready(self.out.poll_enqueue(cx, &mut frame))).await {
            Poll::Ready(Ok(seq)) => {
                self.unflushed.fetch_max(seq, Ordering::Relaxed);
            }
            // The connection is dead; the read loop sees that too.
            Poll::Ready(Err(_)) => {}
            Poll::Pending => {
                let conn = Arc::clone(self);
                let send = async move {
                    if let Ok(seq) = std::future::poll_fn(|cx| conn.out.poll_enqueue(cx, &mut frame)).await {
                        let _ = std::future::poll_fn(|cx| conn.out.poll_flushed(cx, seq)).await;
                    }
                    conn.forget(id);
                    drop(permit);
                };
                self.run_in_task(id, send);
            }
        }
    }

    /// The answer of a method that returns a stream: the handler's head (an empty response),
    /// then the stream's items and its end. `Err` ends the stream with that failure instead.
    async fn send_stream(
        &self,
        id: u64,
        handler: crate::service::StreamHandlerFuture,
        window: Arc<SendWindow>,
    ) -> Result<(), RemoteError> {
        let source = handler.await?;
        let head = ResponsePayload::encode(&()).expect("() always encodes").into_frame(id);
        let mut head = Some(head);
        std::future::poll_fn(|cx| self.out.poll_enqueue(cx, &mut head)).await.map_err(|_| RemoteError::Cancelled)?;
        let mut pump = Pump::new(id, source, self.info.max_frame_len);
        match std::future::poll_fn(|cx| pump.poll(cx, &self.out, &window)).await {
            Ok(_) => Ok(()),
            Err(PumpError::Encode(e)) => Err(RemoteError::Encode(format!("stream item: {e}"))),
            Err(PumpError::TooLarge { size, max }) => {
                Err(RemoteError::ResponseTooLarge { size: size as u64, max: max as u64 })
            }
            // The connection is gone; nobody hears the answer.
            Err(PumpError::Send(_)) => Err(RemoteError::Cancelled),
        }
    }

    /// Records how a call ended: its span's outcome and duration, the counters, and an event for
    /// a panic (an operator must hear of it) or a missed deadline.
    fn finished<T>(
        &self,
        span: &tracing::Span,
        method: &'static str,
        method_id: u32,
        started: Option<std::time::Instant>,
        outcome: &Result<T, RemoteError>,
    ) {
        let name = telemetry::outcome(outcome);
        let method = match (method, &self.service) {
            ("", service) if outcome.is_err() => method_name(service.descriptor(), method_id),
            _ => method,
        };
        let elapsed = started.map(|t| t.elapsed());
        if !span.is_disabled() {
            span.record("outcome", name);
            if let Some(elapsed) = elapsed {
                span.record("duration_us", elapsed.as_micros() as u64);
            }
        }
        match outcome {
            Err(RemoteError::Panic(message)) => {
                tracing::error!(peer = %self.info.peer, method, panic = %message, "handler panicked")
            }
            Err(RemoteError::DeadlineExceeded) => tracing::debug!(method, "call exceeded its deadline"),
            Err(RemoteError::Rejected(why)) => tracing::debug!(method, reason = %why, "call rejected by a layer"),
            _ => {}
        }
        self.counters.call_finished(self.service.descriptor().name, method, name, elapsed);
    }

    fn response_frame(&self, id: u64, result: Result<ResponsePayload, RemoteError>) -> Encoded {
        self.counters.sent(match &result {
            Ok(payload) => payload.frame_len(),
            Err(_) => RESPONSE_HEADER_LEN,
        });
        match result {
            Ok(payload) if payload.frame_len() <= self.info.max_frame_len => payload.into_frame(id),
            Ok(payload) => wire::encode_response_err(
                id,
                &RemoteError::ResponseTooLarge {
                    size: payload.frame_len() as u64,
                    max: self.info.max_frame_len as u64,
                },
            )
            .into(),
            Err(e) => wire::encode_response_err(id, &e).into(),
        }
    }

    /// Stops every call still running; with `notify`, queues a `Cancelled` answer for each
    /// (without waiting: the goaway that follows flushes them, within the linger time).
    fn abort_all(&self, notify: bool) {
        let running: Vec<(u64, AbortHandle)> = self
            .lock_running()
            .drain()
            .filter_map(|(id, r)| {
                if let Some(inbox) = &r.inbox {
                    inbox.close();
                }
                Some((id, r.task?))
            })
            .collect();
        for (id, handle) in running {
            handle.abort();
            if notify {
                self.out.try_enqueue_now(Bytes::from(wire::encode_response_err(id, &RemoteError::Cancelled)));
            }
        }
    }
}

struct AbortOnDrop(Arc<Conn>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for (_, running) in self.0.lock_running().drain() {
            if let Some(inbox) = &running.inbox {
                inbox.close();
            }
            if let Some(handle) = running.task {
                handle.abort();
            }
        }
        self.0.out.shut();
    }
}

/// The name of method `id`, for logs and metrics.
fn method_name(descriptor: &'static crate::descriptor::ServiceDescriptor, id: u32) -> &'static str {
    descriptor.method(id).map_or("<unknown>", |m| m.name)
}

/// Runs a call's future until its deadline, turning a panic into [`RemoteError::Panic`].
async fn guarded<T>(
    handler: impl Future<Output = Result<T, RemoteError>>,
    deadline: Option<std::time::Instant>,
) -> Result<T, RemoteError> {
    let guarded = AssertUnwindSafe(handler).catch_unwind();
    let outcome = match deadline {
        None => guarded.await,
        Some(deadline) => match tokio::time::timeout_at(deadline.into(), guarded).await {
            Ok(outcome) => outcome,
            Err(_) => return Err(RemoteError::DeadlineExceeded),
        },
    };
    outcome.unwrap_or_else(|panic| Err(RemoteError::Panic(panic_message(&*panic))))
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_owned()
    }
}
