//! What the framework tells an operator, captured in the test: `tracing` events and spans (a
//! subscriber layer that records them), the `metrics` facade (metrics-util's debugging recorder)
//! and `Server::stats`. Real sockets: the server listens on TCP loopback, and the hostile client
//! writes its bytes to a real TCP connection.
//!
//! Every test runs on a current-thread runtime, so the subscriber (or recorder) installed for the
//! test's thread sees the server's tasks and the client's alike, and tests in parallel do not see
//! each other's events.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use metrics_util::MetricKind;
use rpc::wire::{self, Hello, MethodSignature};
use rpc_tests::CalculatorClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

const PATIENCE: Duration = Duration::from_secs(10);

/// One event as captured: its level, message and fields.
#[derive(Debug, Clone)]
struct CapturedEvent {
    level: Level,
    fields: HashMap<String, String>,
}

/// One span as captured: its name, fields (as last recorded) and parent.
#[derive(Debug, Clone)]
struct CapturedSpan {
    name: &'static str,
    fields: HashMap<String, String>,
    parent: Option<u64>,
}

#[derive(Clone, Default)]
struct Capture {
    events: Arc<Mutex<Vec<CapturedEvent>>>,
    spans: Arc<Mutex<HashMap<u64, CapturedSpan>>>,
}

struct Fields<'a>(&'a mut HashMap<String, String>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = HashMap::new();
        attrs.record(&mut Fields(&mut fields));
        let parent = ctx.span(id).and_then(|span| span.parent()).map(|parent| parent.id().into_u64());
        let span = CapturedSpan { name: attrs.metadata().name(), fields, parent };
        self.spans.lock().unwrap().insert(id.into_u64(), span);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _ctx: Context<'_, S>) {
        if let Some(span) = self.spans.lock().unwrap().get_mut(&id.into_u64()) {
            values.record(&mut Fields(&mut span.fields));
        }
    }

    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = HashMap::new();
        event.record(&mut Fields(&mut fields));
        self.events.lock().unwrap().push(CapturedEvent { level: *event.metadata().level(), fields });
    }
}

impl Capture {
    /// Installs the capture for this thread until the guard drops.
    fn install() -> (Capture, tracing::subscriber::DefaultGuard) {
        let capture = Capture::default();
        let guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(capture.clone()));
        (capture, guard)
    }

    fn events(&self) -> Vec<CapturedEvent> {
        self.events.lock().unwrap().clone()
    }

    fn spans(&self, name: &str) -> Vec<CapturedSpan> {
        self.spans.lock().unwrap().values().filter(|s| s.name == name).cloned().collect()
    }

    /// Waits (a bounded while) for an event that `matches`: the server logs on its own task.
    async fn wait_for(&self, what: &str, matches: impl Fn(&CapturedEvent) -> bool) -> CapturedEvent {
        let found = tokio::time::timeout(PATIENCE, async {
            loop {
                if let Some(event) = self.events().into_iter().find(&matches) {
                    return event;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        found.unwrap_or_else(|_| panic!("no {what} event; captured: {:#?}", self.events()))
    }
}

/// A test server on TCP loopback; returns its address (the server clone keeps the stats).
async fn start_server(server: rpc::Server) -> String {
    let listener = rpc::listen("tcp://127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr();
    tokio::spawn(server.serve(listener));
    addr
}

fn prefixed(frame: &[u8]) -> Vec<u8> {
    let mut out = (frame.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(frame);
    out
}

#[tokio::test]
async fn a_protocol_violation_is_logged_with_the_peer_and_the_reason() {
    let (capture, _guard) = Capture::install();
    let addr = start_server(rpc_tests::test_server()).await;
    let mut socket = tokio::net::TcpStream::connect(addr.strip_prefix("tcp://").unwrap()).await.unwrap();
    let peer = format!("tcp://{}", socket.local_addr().unwrap());
    let desc = CalculatorClient::DESCRIPTOR;
    let hello = Hello {
        service: desc.name.into(),
        methods: desc
            .methods
            .iter()
            .map(|m| MethodSignature { name: m.name.into(), signature: m.signature.into() })
            .collect(),
        stream_window: wire::DEFAULT_STREAM_WINDOW,
    };
    socket.write_all(&prefixed(&wire::encode_hello(&hello))).await.unwrap();
    // Then a frame of a kind that does not exist.
    socket.write_all(&prefixed(&[0xee, 1, 2, 3])).await.unwrap();
    // The server answers the hello, says goaway and closes: read to the end.
    let mut answer = Vec::new();
    tokio::time::timeout(PATIENCE, socket.read_to_end(&mut answer)).await.unwrap().unwrap();

    let event = capture
        .wait_for("protocol violation", |e| e.fields.get("code").map(String::as_str) == Some("protocol violation"))
        .await;
    assert_eq!(event.level, Level::WARN, "{event:?}");
    assert_eq!(event.fields.get("peer"), Some(&peer), "{event:?}");
    let reason = event.fields.get("reason").expect("a reason");
    assert!(reason.contains("unknown frame kind 0xee"), "{reason}");
    // The connection's span names the peer and the service the hello bound it to.
    let conn = capture.spans("rpc.connection").into_iter().find(|s| s.fields.get("peer") == Some(&peer)).unwrap();
    assert_eq!(conn.fields.get("service").map(String::as_str), Some("Calculator"));
}

#[tokio::test]
async fn a_handler_panic_is_logged_with_its_message() {
    let (capture, _guard) = Capture::install();
    let addr = start_server(rpc_tests::test_server()).await;
    let calc = CalculatorClient::connect(&addr).await.unwrap();
    let err = calc.boom().await.unwrap_err();
    assert!(matches!(err, rpc::RpcError::RemotePanic { .. }), "{err:?}");
    let event = capture.wait_for("panic", |e| e.fields.contains_key("panic")).await;
    assert_eq!(event.level, Level::ERROR);
    assert_eq!(event.fields.get("panic").map(String::as_str), Some("boom on purpose"));
    assert_eq!(event.fields.get("method").map(String::as_str), Some("boom"));
    // Both call spans say how the call ended.
    let server = capture.spans("rpc.server.call");
    assert_eq!(server.len(), 1, "{server:?}");
    assert_eq!(server[0].fields.get("outcome").map(String::as_str), Some("panic"));
    assert!(server[0].fields.contains_key("duration_us"));
    let client = capture.spans("rpc.client.call");
    assert_eq!(client[0].fields.get("outcome").map(String::as_str), Some("panic"));
}

#[tokio::test]
async fn with_propagation_the_client_span_is_the_parent_of_the_server_span() {
    let (capture, _guard) = Capture::install();
    let addr = start_server(rpc_tests::test_server()).await;
    let options = rpc::ClientOptions::new().propagate_trace_context(true);
    let calc = CalculatorClient::connect_with(&addr, options).await.unwrap();
    assert_eq!(calc.add(1, 2).await.unwrap(), 3);
    assert_eq!(calc.add(3, 4).await.unwrap(), 7);

    let clients = capture.spans("rpc.client.call");
    let servers = capture.spans("rpc.server.call");
    assert_eq!((clients.len(), servers.len()), (2, 2));
    for client in &clients {
        let span_id = client.fields.get("span_id").expect("the client span has an id");
        let trace_id = client.fields.get("trace_id").expect("the client span has a trace id");
        assert_eq!((span_id.len(), trace_id.len()), (16, 32), "W3C widths: {client:?}");
        let server = servers
            .iter()
            .find(|s| s.fields.get("parent_span_id") == Some(span_id))
            .unwrap_or_else(|| panic!("no server span has {span_id} as its parent: {servers:?}"));
        assert_eq!(server.fields.get("trace_id"), Some(trace_id));
        assert_eq!(server.fields.get("call_id"), client.fields.get("call_id"));
        assert_eq!(server.fields.get("method").map(String::as_str), Some("add"));
        // In the server, the call's span sits under its connection's span.
        let parent = server.parent.expect("a parent span");
        assert_eq!(capture.spans.lock().unwrap()[&parent].name, "rpc.connection");
    }
    // Two calls, two traces (neither was made inside a traced call).
    assert_ne!(clients[0].fields.get("trace_id"), clients[1].fields.get("trace_id"));

    // Without propagation nothing is sent, so the server span has no parent id.
    let plain = CalculatorClient::connect(&addr).await.unwrap();
    assert_eq!(plain.add(5, 6).await.unwrap(), 11);
    let servers = capture.spans("rpc.server.call");
    assert_eq!(servers.iter().filter(|s| !s.fields.contains_key("parent_span_id")).count(), 1, "{servers:?}");
}

#[tokio::test]
async fn a_healthy_server_says_nothing_at_info_and_explains_each_close_at_debug() {
    let (capture, _guard) = Capture::install();
    let addr = start_server(rpc_tests::test_server()).await;
    let calc = CalculatorClient::connect(&addr).await.unwrap();
    for i in 0..10 {
        assert_eq!(calc.add(i, 1).await.unwrap(), i + 1);
    }
    drop(calc);
    capture.wait_for("close", |e| e.fields.get("message").is_some_and(|m| m.contains("closed by the peer"))).await;
    let loud: Vec<_> = capture.events().into_iter().filter(|e| e.level <= Level::INFO).collect();
    assert!(loud.is_empty(), "a healthy connection logged at info or above: {loud:#?}");
}

/// The value of the metric `name` whose labels include all of `labels`.
type Snapshot = [(metrics_util::CompositeKey, Option<metrics::Unit>, Option<metrics::SharedString>, DebugValue)];

fn metric<'a>(snapshot: &'a Snapshot, kind: MetricKind, name: &str, labels: &[(&str, &str)]) -> Option<&'a DebugValue> {
    snapshot.iter().find_map(|(key, _, _, value)| {
        let matches = key.kind() == kind
            && key.key().name() == name
            && labels.iter().all(|(k, v)| key.key().labels().any(|l| l.key() == *k && l.value() == *v));
        matches.then_some(value)
    })
}

#[test]
fn metrics_and_stats_match_the_calls_made() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let server = rpc_tests::test_server();
    let stats = server.clone();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    metrics::with_local_recorder(&recorder, || {
        runtime.block_on(async {
            let addr = start_server(server).await;
            let calc = CalculatorClient::connect(&addr).await.unwrap();
            for i in 0..3 {
                assert_eq!(calc.add(i, i).await.unwrap(), 2 * i);
            }
            assert!(calc.boom().await.is_err());
            assert_eq!(calc.echo(vec![7; 1000]).await.unwrap().len(), 1000);
            let during = stats.stats();
            assert_eq!(during.connections_open, 1);
            drop(calc);
            tokio::time::timeout(PATIENCE, async {
                while stats.stats().connections_open > 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
            .await
            .expect("the connection closes on the server too");
        })
    });

    let s = stats.stats();
    assert_eq!((s.connections_accepted, s.connections_open), (1, 0));
    assert_eq!((s.calls_started, s.calls_ok, s.calls_failed, s.calls_in_flight, s.handler_panics), (5, 4, 1, 0, 1));
    assert_eq!(s.protocol_violations, 0);
    assert!(s.bytes_received > 1000 && s.bytes_sent > 1000, "{s:?}");

    let snapshot = snapshotter.snapshot().into_vec();
    let calc = ("service", "Calculator");
    let counter = |name, labels: &[(&str, &str)]| metric(&snapshot, MetricKind::Counter, name, labels);
    assert_eq!(counter("rpc_server_calls_started_total", &[calc, ("method", "add")]), Some(&DebugValue::Counter(3)));
    assert_eq!(
        counter("rpc_server_calls_finished_total", &[calc, ("method", "add"), ("outcome", "ok")]),
        Some(&DebugValue::Counter(3))
    );
    assert_eq!(
        counter("rpc_server_calls_finished_total", &[calc, ("method", "boom"), ("outcome", "panic")]),
        Some(&DebugValue::Counter(1))
    );
    assert_eq!(counter("rpc_server_connections_total", &[("transport", "tcp")]), Some(&DebugValue::Counter(1)));
    assert_eq!(counter("rpc_server_bytes_received_total", &[]), Some(&DebugValue::Counter(s.bytes_received)));
    assert_eq!(counter("rpc_server_bytes_sent_total", &[]), Some(&DebugValue::Counter(s.bytes_sent)));
    let gauge = |name, labels: &[(&str, &str)]| metric(&snapshot, MetricKind::Gauge, name, labels);
    assert_eq!(gauge("rpc_server_calls_in_flight", &[calc]), Some(&DebugValue::Gauge(0.0.into())));
    assert_eq!(gauge("rpc_server_connections_open", &[("transport", "tcp")]), Some(&DebugValue::Gauge(0.0.into())));
    match metric(&snapshot, MetricKind::Histogram, "rpc_server_call_duration_seconds", &[calc, ("method", "add")]) {
        Some(DebugValue::Histogram(samples)) => assert_eq!(samples.len(), 3),
        other => panic!("no latency histogram for add: {other:?}"),
    }
}

#[tokio::test]
async fn shutdown_progress_is_logged_at_info() {
    let (capture, _guard) = Capture::install();
    let listener = rpc::listen("tcp://127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = rpc_tests::test_server_with(rpc_tests::test_options().shutdown_grace(Duration::from_millis(100)));
    let serving = tokio::spawn(server.serve_until(listener, async {
        let _ = stopped.await;
    }));
    let calc = CalculatorClient::connect(&addr).await.unwrap();
    // A call that outlives the grace period: it is cancelled, and the log says so.
    let slow = tokio::spawn({
        let calc = calc.clone();
        async move { calc.sleep(10_000).await }
    });
    capture.wait_for("call start", |_| !capture.spans("rpc.server.call").is_empty()).await;
    stop.send(()).unwrap();
    serving.await.unwrap().unwrap();
    assert!(matches!(slow.await.unwrap(), Err(rpc::RpcError::Cancelled)));
    let messages: Vec<String> = capture
        .events()
        .into_iter()
        .filter(|e| e.level == Level::INFO)
        .filter_map(|e| e.fields.get("message").cloned())
        .collect();
    for step in [
        "shutting down: stopped accepting",
        "shutdown: waiting for the connection's calls to finish",
        "shutdown: grace period over, cancelling the calls still running",
        "shutdown complete",
    ] {
        assert!(messages.iter().any(|m| m == step), "no {step:?} in {messages:#?}");
    }
}

/// A real server process at its descriptor limit: running out, and accepting again once
/// descriptors free up, are each logged once (read from the process's stderr).
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn descriptor_exhaustion_and_recovery_are_logged() {
    use std::process::Stdio;
    use tokio::io::{AsyncBufReadExt, BufReader};

    rpc::raise_fd_limit().expect("raise RLIMIT_NOFILE");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_rpc-test-server"))
        .args(["--nofile", "48", "tcp://127.0.0.1:0"])
        .env("RUST_LOG", "rpc_core=info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start rpc-test-server");
    let mut line = String::new();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    tokio::time::timeout(PATIENCE, stdout.read_line(&mut line)).await.unwrap().unwrap();
    let addr = line.trim().strip_prefix("listening ").unwrap_or_else(|| panic!("bad ready line {line:?}")).to_owned();

    let impatient = rpc::ClientOptions::new().handshake_timeout(Duration::from_millis(500));
    let mut clients = Vec::new();
    loop {
        match CalculatorClient::connect_with(&addr, impatient.clone()).await {
            Ok(client) => clients.push(client),
            Err(rpc::RpcError::Disconnected { .. }) => break,
            Err(other) => panic!("{other:?}"),
        }
        assert!(clients.len() <= 48, "the server took more connections than it has descriptors");
    }
    clients.truncate(clients.len() - 5);
    let calc = CalculatorClient::connect(&addr).await.expect("served once descriptors free up");
    assert_eq!(calc.add(1, 2).await.unwrap(), 3);

    child.start_kill().unwrap();
    let mut stderr = String::new();
    tokio::time::timeout(PATIENCE, child.stderr.take().unwrap().read_to_string(&mut stderr)).await.unwrap().unwrap();
    let exhausted = stderr.lines().filter(|l| l.contains("cannot accept: out of descriptors or memory")).count();
    assert_eq!(exhausted, 1, "one warning when accepting runs out, not one per retry:\n{stderr}");
    assert!(stderr.lines().any(|l| l.contains(" WARN ") && l.contains("Too many open files")), "{stderr}");
    assert!(stderr.lines().any(|l| l.contains(" INFO ") && l.contains("accepting connections again")), "{stderr}");
}

#[tokio::test]
async fn encoded_and_reflection_calls_are_traced_like_typed_ones() {
    let (capture, _guard) = Capture::install();
    let addr = start_server(rpc_tests::test_server()).await;
    // A raw call, as the `rpc` tool makes them: encoded answer, no Rust return type.
    let calc = CalculatorClient::connect(&addr).await.unwrap();
    let client = calc.rpc_client();
    let add = client.service().method_by_name("add").unwrap();
    let answer = client.call_encoded(add, &(1i64, 2i64), None, &rpc::CallOptions::new()).await.unwrap();
    assert_eq!(postcard::from_bytes::<i64>(&answer).unwrap(), 3);
    // A call of the built-in reflection service.
    let reflection = rpc::connect_service(&addr, &rpc::reflection::DESCRIPTOR).await.unwrap();
    rpc::reflection::describe(&reflection, &rpc::CallOptions::new()).await.unwrap();

    for span_name in ["rpc.client.call", "rpc.server.call"] {
        let spans = capture.spans(span_name);
        for (service, method) in [("Calculator", "add"), (rpc::reflection::REFLECTION_SERVICE, "describe")] {
            let span = spans
                .iter()
                .find(|s| s.fields.get("method").map(String::as_str) == Some(method))
                .unwrap_or_else(|| panic!("no {span_name} span of `{method}`: {spans:?}"));
            assert_eq!(span.fields.get("service").map(String::as_str), Some(service), "{span:?}");
            assert_eq!(span.fields.get("outcome").map(String::as_str), Some("ok"), "{span:?}");
            assert!(span.fields.contains_key("duration_us"), "{span:?}");
        }
    }
}
