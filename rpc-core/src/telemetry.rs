//! What the engines tell an operator: the `tracing` spans and events of calls and connections,
//! the trace context a client may send along with a call, and the counters behind
//! [`Server::stats`](crate::server::Server::stats) (also reported through the `metrics` facade
//! with the `metrics` feature).
//!
//! # Spans
//!
//! | span | level | fields |
//! |---|---|---|
//! | `rpc.connection` (server) | debug | `transport`, `peer`, `service` (once the hello named it) |
//! | `rpc.server.call` (child of the connection) | debug | `service`, `method`, `call_id`, `transport`, `peer`, `trace_id`, `parent_span_id`, then `outcome`, `duration_us` |
//! | `rpc.client.call` | debug | `service`, `method`, `call_id`, `transport`, `peer`, `trace_id`, `span_id`, then `outcome`, `duration_us` |
//!
//! They are built only while some `tracing` subscriber listens at `debug` (see `spans_wanted`);
//! without one, a call carries [`Span::none`](tracing::Span::none).
//!
//! # Events (target `rpc_core::…`)
//!
//! A healthy server logs nothing at `info`: connections and calls that go well are `debug`, and
//! so are their spans (events at `info` and above name the `peer` themselves).
//! Each closed connection gets one event naming its `peer`, `code` ([`CloseCode`]) and `reason`:
//! `warn` for what a peer did wrong (protocol violation, a frame too large), `info` for timeouts
//! of a stalled peer and refusals, `debug` for ordinary closes. A handler panic is an `error`
//! with its `panic` message; running out of descriptors in accept is a `warn`, and accepting
//! again an `info`; shutdown steps are `info`.
//!
//! # Trace context
//!
//! With [`ClientOptions::propagate_trace_context`](crate::client::ClientOptions::propagate_trace_context),
//! each call carries a [`TraceContext`]: the trace id (the one of the server call being served, if
//! the call is made from inside a handler, else a new one) and the client call span's own id
//! (recorded as its `span_id`). The server's call span records them as `trace_id` and
//! `parent_span_id`, and [`CallContext::trace_context`](crate::context::CallContext::trace_context)
//! hands them to the handler, so a trace collector can link the two spans as parent and child.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use std::time::Instant;

use crate::error::RpcError;
use crate::wire::{CloseCode, RemoteError, TraceContext};

/// A random non-zero 64-bit id (std's per-process random hasher keys, and a counter, so two ids
/// never repeat within a process).
fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.finish().max(1)
}

/// The trace context of a new client call: the trace of the server call being served, if any,
/// else a new trace; a new span id.
pub(crate) fn new_trace_context() -> TraceContext {
    let trace_id = crate::context::CallContext::with_current(|ctx| ctx.trace_context().map(|t| t.trace_id))
        .flatten()
        .unwrap_or_else(|| (u128::from(random_u64()) << 64) | u128::from(random_u64()));
    TraceContext { trace_id, span_id: random_u64() }
}

/// Trace and span ids as W3C Trace Context writes them (lowercase hex, fixed width).
pub(crate) fn trace_id_hex(id: u128) -> String {
    format!("{id:032x}")
}

pub(crate) fn span_id_hex(id: u64) -> String {
    format!("{id:016x}")
}

/// The `outcome` field of a call span and the label of the finished-calls metric.
pub(crate) fn outcome<T>(result: &Result<T, RemoteError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(RemoteError::UnknownMethod { .. }) => "unknown_method",
        Err(RemoteError::Decode(_)) => "decode_error",
        Err(RemoteError::Encode(_)) => "encode_error",
        Err(RemoteError::DeadlineExceeded) => "deadline_exceeded",
        Err(RemoteError::Cancelled) => "cancelled",
        Err(RemoteError::Panic(_)) => "panic",
        Err(RemoteError::Overloaded) => "overloaded",
        Err(RemoteError::ResponseTooLarge { .. }) => "response_too_large",
        Err(RemoteError::Rejected(_)) => "rejected",
    }
}

/// The `outcome` field of a client call span.
pub(crate) fn client_outcome<T>(result: &Result<T, RpcError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(RpcError::Disconnected { .. }) => "disconnected",
        Err(RpcError::DeadlineExceeded) => "deadline_exceeded",
        Err(RpcError::Cancelled) => "cancelled",
        Err(RpcError::RemotePanic { .. }) => "panic",
        Err(RpcError::Overloaded) => "overloaded",
        Err(RpcError::Rejected { .. }) => "rejected",
        Err(RpcError::UnknownMethod { .. }) => "unknown_method",
        Err(RpcError::FrameTooLarge { .. }) => "frame_too_large",
        Err(RpcError::Decode(_)) => "decode_error",
        Err(RpcError::Encode(_)) => "encode_error",
        Err(_) => "error",
    }
}

/// Whether the engines build their spans: some subscriber listens at `debug`. Otherwise a span
/// is [`Span::none`](tracing::Span::none), not the disabled span `debug_span!` would build:
/// with `tracing`'s `log` feature on (tarpc turns it on, for one, in any build that has it) a
/// disabled span still writes its fields and every enter, exit and drop to `log` (with two
/// other changes, measured together with callgrind, this took an `add` over `mem://` from
/// 11,422 to 9,071 instructions). A program that
/// reads `log` without a `tracing` subscriber therefore sees the engines' events, not their
/// spans.
#[inline]
pub(crate) fn spans_wanted() -> bool {
    tracing::Level::DEBUG <= tracing::level_filters::STATIC_MAX_LEVEL
        && tracing::Level::DEBUG <= tracing::level_filters::LevelFilter::current()
}

/// Records how a client call ended on its span (a no-op when nobody listens).
/// `started` is when the call began (read whenever the span is enabled).
pub(crate) fn client_call_finished<T>(span: &tracing::Span, started: Option<Instant>, result: &Result<T, RpcError>) {
    if span.is_disabled() {
        return;
    }
    span.record("outcome", client_outcome(result));
    if let Some(started) = started {
        span.record("duration_us", started.elapsed().as_micros() as u64);
    }
    if let Err(e) = result {
        tracing::debug!(parent: span, error = %e, "call failed");
    }
}

/// Logs that a server connection closes, at the level its code deserves (see the module docs).
pub(crate) fn connection_closed(peer: &str, code: CloseCode, reason: &str) {
    match code {
        CloseCode::ProtocolViolation | CloseCode::FrameTooLarge => {
            tracing::warn!(peer, code = %code, reason, "closing connection: {code}")
        }
        CloseCode::HandshakeTimeout
        | CloseCode::FrameTimeout
        | CloseCode::SendTimeout
        | CloseCode::Refused
        | CloseCode::Overloaded => tracing::info!(peer, code = %code, reason, "closing connection: {code}"),
        _ => tracing::debug!(peer, code = %code, reason, "closing connection: {code}"),
    }
}

/// A server's counters, shared by its clones and every connection; a snapshot is
/// [`ServerStats`]. Relaxed atomics: each is exact, a snapshot is not one instant.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    connections_accepted: AtomicU64,
    connections_closed: AtomicU64,
    calls_started: AtomicU64,
    calls_ok: AtomicU64,
    calls_failed: AtomicU64,
    handler_panics: AtomicU64,
    protocol_violations: AtomicU64,
    bytes_received: AtomicU64,
    bytes_sent: AtomicU64,
}

impl Counters {
    pub(crate) fn connection_opened(&self, transport: &'static str) {
        self.connections_accepted.fetch_add(1, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        {
            metrics::counter!("rpc_server_connections_total", "transport" => transport).increment(1);
            metrics::gauge!("rpc_server_connections_open", "transport" => transport).increment(1.0);
        }
        let _ = transport;
    }

    pub(crate) fn connection_closed(&self, transport: &'static str, code: Option<CloseCode>) {
        self.connections_closed.fetch_add(1, Ordering::Relaxed);
        if code == Some(CloseCode::ProtocolViolation) {
            self.protocol_violations.fetch_add(1, Ordering::Relaxed);
        }
        #[cfg(feature = "metrics")]
        metrics::gauge!("rpc_server_connections_open", "transport" => transport).decrement(1.0);
        let _ = transport;
    }

    pub(crate) fn call_started(&self, service: &'static str, method: &'static str) {
        self.calls_started.fetch_add(1, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        {
            metrics::counter!("rpc_server_calls_started_total", "service" => service, "method" => method).increment(1);
            metrics::gauge!("rpc_server_calls_in_flight", "service" => service).increment(1.0);
        }
        let _ = (service, method);
    }

    /// `elapsed` is measured only with the `metrics` feature (for the latency histogram).
    pub(crate) fn call_finished(
        &self,
        service: &'static str,
        method: &'static str,
        outcome: &'static str,
        elapsed: Option<std::time::Duration>,
    ) {
        match outcome {
            "ok" => self.calls_ok.fetch_add(1, Ordering::Relaxed),
            "panic" => {
                self.handler_panics.fetch_add(1, Ordering::Relaxed);
                self.calls_failed.fetch_add(1, Ordering::Relaxed)
            }
            _ => self.calls_failed.fetch_add(1, Ordering::Relaxed),
        };
        #[cfg(feature = "metrics")]
        {
            metrics::counter!(
                "rpc_server_calls_finished_total",
                "service" => service, "method" => method, "outcome" => outcome
            )
            .increment(1);
            metrics::gauge!("rpc_server_calls_in_flight", "service" => service).decrement(1.0);
            if let Some(elapsed) = elapsed {
                metrics::histogram!("rpc_server_call_duration_seconds", "service" => service, "method" => method)
                    .record(elapsed.as_secs_f64());
            }
        }
        let _ = (service, method, elapsed);
    }

    pub(crate) fn received(&self, bytes: usize) {
        self.bytes_received.fetch_add(bytes as u64, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        metrics::counter!("rpc_server_bytes_received_total").increment(bytes as u64);
    }

    pub(crate) fn sent(&self, bytes: usize) {
        self.bytes_sent.fetch_add(bytes as u64, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        metrics::counter!("rpc_server_bytes_sent_total").increment(bytes as u64);
    }

    pub(crate) fn snapshot(&self) -> ServerStats {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let accepted = get(&self.connections_accepted);
        let started = get(&self.calls_started);
        let (ok, failed) = (get(&self.calls_ok), get(&self.calls_failed));
        ServerStats {
            connections_accepted: accepted,
            connections_open: accepted.saturating_sub(get(&self.connections_closed)),
            calls_started: started,
            calls_ok: ok,
            calls_failed: failed,
            calls_in_flight: started.saturating_sub(ok + failed),
            handler_panics: get(&self.handler_panics),
            protocol_violations: get(&self.protocol_violations),
            bytes_received: get(&self.bytes_received),
            bytes_sent: get(&self.bytes_sent),
        }
    }
}

/// What a server has done so far, from [`Server::stats`](crate::server::Server::stats): counters
/// since the server was made, over all its listeners and connections. No dependency needed; with
/// the `metrics` feature the same numbers (and latencies) also go to the `metrics` facade.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerStats {
    /// Connections accepted (including those refused or closed during the hello).
    pub connections_accepted: u64,
    /// Connections open now.
    pub connections_open: u64,
    /// Calls started (requests dispatched to a service).
    pub calls_started: u64,
    /// Calls whose handler returned a value.
    pub calls_ok: u64,
    /// Calls that ended with a framework error (deadline, panic, cancel, refusal, ...).
    pub calls_failed: u64,
    /// Calls running now.
    pub calls_in_flight: u64,
    /// Calls whose handler panicked (counted in `calls_failed` too).
    pub handler_panics: u64,
    /// Connections closed because the peer broke the protocol.
    pub protocol_violations: u64,
    /// Bytes of frames received on bound connections (after the hello).
    pub bytes_received: u64,
    /// Bytes of answers sent (responses and error responses; not stream items).
    pub bytes_sent: u64,
}
