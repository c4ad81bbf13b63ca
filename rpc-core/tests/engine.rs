//! The client and server engines over an in-memory byte stream, with a hand-written service
//! (no macro, no transport crate): calls, concurrency, errors, deadlines, cancellation, panics,
//! and a dead connection.

mod common;
use common::pair_buffered;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rpc_core::descriptor::{method_id, MethodDescriptor, ServiceDescriptor};
use rpc_core::service::{decode_args, handler, unknown_method, Call, CallSetup, Service};
use rpc_core::transport::Connection;
use rpc_core::wire::RemoteError;
use rpc_core::{CallError, CallOptions, Client, ClientOptions, RpcError, Server};

static METHODS: [MethodDescriptor; 5] = [
    MethodDescriptor { name: "add", id: method_id("add"), signature: "(i64, i64) -> i64" },
    MethodDescriptor { name: "div", id: method_id("div"), signature: "(i64, i64) -> Result<i64, String>" },
    MethodDescriptor { name: "sleep", id: method_id("sleep"), signature: "(u64) -> ()" },
    MethodDescriptor { name: "boom", id: method_id("boom"), signature: "() -> ()" },
    MethodDescriptor { name: "echo", id: method_id("echo"), signature: "(Vec<u8>) -> Vec<u8>" },
];
static CALC: ServiceDescriptor = ServiceDescriptor { name: "Calc", methods: &METHODS };

#[derive(Default)]
struct Calc {
    dropped_sleeps: Arc<AtomicUsize>,
}

struct DropCounter(Arc<AtomicUsize>);
impl Drop for DropCounter {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl Service for Calc {
    fn descriptor(&self) -> &'static ServiceDescriptor {
        &CALC
    }

    fn call(&self, method: u32, args: &[u8], _setup: &mut CallSetup<'_>) -> Result<Call, RemoteError> {
        const ADD: u32 = method_id("add");
        const DIV: u32 = method_id("div");
        const SLEEP: u32 = method_id("sleep");
        const BOOM: u32 = method_id("boom");
        const ECHO: u32 = method_id("echo");
        Ok(match method {
            ADD => {
                let (a, b): (i64, i64) = decode_args(args)?;
                handler(async move { a + b })
            }
            DIV => {
                let (a, b): (i64, i64) = decode_args(args)?;
                handler(async move {
                    if b == 0 {
                        Err("division by zero".to_owned())
                    } else {
                        Ok(a / b)
                    }
                })
            }
            SLEEP => {
                let (ms,): (u64,) = decode_args(args)?;
                let guard = DropCounter(Arc::clone(&self.dropped_sleeps));
                handler(async move {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    std::mem::forget(guard);
                })
            }
            BOOM => handler(async move {
                if true {
                    panic!("handler exploded");
                }
            }),
            ECHO => {
                let (v,): (Vec<u8>,) = decode_args(args)?;
                handler(async move { v })
            }
            other => return Err(unknown_method(other)),
        })
    }
}

fn pair(max: usize) -> (Connection, Connection) {
    pair_buffered(max, 64 * 1024)
}

async fn start(calc: Calc) -> (Client, tokio::task::JoinHandle<()>) {
    let (client_side, server_side) = pair(1 << 20);
    let server = Server::new().add_service(calc);
    let task = tokio::spawn(async move { server.serve_connection(server_side).await });
    let client = Client::handshake(client_side, &CALC, ClientOptions::default()).await.unwrap();
    (client, task)
}

fn m(name: &str) -> &'static MethodDescriptor {
    CALC.method_by_name(name).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_return_values_and_app_errors() {
    let (client, _server) = start(Calc::default()).await;
    let none = CallOptions::default();
    assert_eq!(client.call::<_, i64>(m("add"), &(1i64, 2i64), &none).await.unwrap(), 3);
    assert_eq!(client.call_fallible::<_, i64, String>(m("div"), &(7i64, 2i64), &none).await.unwrap(), 3);
    let err = client.call_fallible::<_, i64, String>(m("div"), &(1i64, 0i64), &none).await.unwrap_err();
    assert_eq!(err, CallError::App("division by zero".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_calls_each_get_their_own_answer() {
    let (client, _server) = start(Calc::default()).await;
    let mut tasks = Vec::new();
    for t in 0..8i64 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let calls = (0..250i64).map(|i| {
                let client = client.clone();
                async move { (i, client.call::<_, i64>(m("add"), &(t * 1000, i), &CallOptions::default()).await) }
            });
            for (i, r) in futures_join_all(calls).await {
                assert_eq!(r.unwrap(), t * 1000 + i);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// Runs each future in a task of its own and collects the outputs in order.
async fn futures_join_all<F>(futs: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_is_enforced_and_the_handler_is_dropped() {
    let calc = Calc::default();
    let dropped = Arc::clone(&calc.dropped_sleeps);
    let (client, _server) = start(calc).await;
    let opts = CallOptions::new().timeout(Duration::from_millis(50));
    let err = client.call::<_, ()>(m("sleep"), &(5_000u64,), &opts).await.unwrap_err();
    assert_eq!(err, RpcError::DeadlineExceeded);
    wait_for(|| dropped.load(Ordering::SeqCst) == 1).await;
    // The connection is still fine.
    assert_eq!(client.call::<_, i64>(m("add"), &(2i64, 2i64), &CallOptions::default()).await.unwrap(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_keeps_its_default_call_options() {
    let (client_side, server_side) = pair(1 << 20);
    let _server =
        tokio::spawn(async move { Server::new().add_service(Calc::default()).serve_connection(server_side).await });
    let options = ClientOptions::new().call_timeout(Duration::from_millis(50));
    let client = Client::handshake(client_side, &CALC, options).await.unwrap();
    assert_eq!(client.default_call_options(), &CallOptions::new().timeout(Duration::from_millis(50)));
    // The untyped calls use the options they are given.
    assert_eq!(client.call::<_, ()>(m("sleep"), &(200u64,), &CallOptions::new()).await, Ok(()));
    let err = client.call::<_, ()>(m("sleep"), &(5_000u64,), client.default_call_options()).await.unwrap_err();
    assert_eq!(err, RpcError::DeadlineExceeded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_call_cancels_the_handler() {
    let calc = Calc::default();
    let dropped = Arc::clone(&calc.dropped_sleeps);
    let (client, _server) = start(calc).await;
    let call = client.call::<_, ()>(m("sleep"), &(60_000u64,), &CallOptions::default());
    assert!(tokio::time::timeout(Duration::from_millis(50), call).await.is_err());
    wait_for(|| dropped.load(Ordering::SeqCst) == 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_is_reported_and_the_server_keeps_serving() {
    let (client, _server) = start(Calc::default()).await;
    let err = client.call::<_, ()>(m("boom"), &(), &CallOptions::default()).await.unwrap_err();
    assert_eq!(err, RpcError::RemotePanic { message: "handler exploded".into() });
    assert_eq!(client.call::<_, i64>(m("add"), &(1i64, 1i64), &CallOptions::default()).await.unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_method_and_bad_arguments_are_typed_errors() {
    static BOGUS: MethodDescriptor = MethodDescriptor { name: "nope", id: 12345, signature: "() -> ()" };
    let (client, _server) = start(Calc::default()).await;
    let err = client.call::<_, ()>(&BOGUS, &(), &CallOptions::default()).await.unwrap_err();
    assert!(matches!(err, RpcError::UnknownMethod { ref method, .. } if method == "nope"), "{err}");
    let err = client.call::<_, i64>(m("add"), &("not", "numbers"), &CallOptions::default()).await.unwrap_err();
    assert!(matches!(err, RpcError::Decode(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_arguments_fail_on_the_sending_side() {
    let (client, _server) = start(Calc::default()).await;
    let err = client.call::<_, Vec<u8>>(m("echo"), &(vec![0u8; 2 << 20],), &CallOptions::default()).await.unwrap_err();
    assert!(matches!(err, RpcError::FrameTooLarge { max, .. } if max == 1 << 20), "{err}");
    let ok = client.call::<_, Vec<u8>>(m("echo"), &(vec![9u8; 500_000],), &CallOptions::default()).await.unwrap();
    assert_eq!(ok, vec![9u8; 500_000]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_connection_fails_every_pending_call() {
    let (client, server) = start(Calc::default()).await;
    let pending: Vec<_> = (0..10)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.call::<_, ()>(m("sleep"), &(60_000u64,), &CallOptions::default()).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    server.abort();
    for p in pending {
        let err = tokio::time::timeout(Duration::from_secs(5), p).await.expect("no hang").unwrap().unwrap_err();
        assert!(err.is_disconnect(), "{err}");
    }
    let err = client.call::<_, i64>(m("add"), &(1i64, 1i64), &CallOptions::default()).await.unwrap_err();
    assert!(err.is_disconnect(), "{err}");
}

#[tokio::test]
async fn interface_mismatch_names_the_difference() {
    static OTHER_METHODS: [MethodDescriptor; 2] = [
        MethodDescriptor { name: "add", id: method_id("add"), signature: "(i32, i32) -> i32" },
        MethodDescriptor { name: "mul", id: method_id("mul"), signature: "(i64, i64) -> i64" },
    ];
    static OTHER: ServiceDescriptor = ServiceDescriptor { name: "Calc", methods: &OTHER_METHODS };
    static MISSING: ServiceDescriptor = ServiceDescriptor { name: "Nope", methods: &OTHER_METHODS };
    for (desc, expect) in [(&OTHER, "mismatch"), (&MISSING, "unknown")] {
        let (client_side, server_side) = pair(1 << 20);
        let server = Server::new().add_service(Calc::default());
        tokio::spawn(async move { server.serve_connection(server_side).await });
        let err = Client::handshake(client_side, desc, ClientOptions::default()).await.unwrap_err();
        match (expect, &err) {
            ("mismatch", RpcError::InterfaceMismatch { differences, .. }) => {
                assert_eq!(differences.len(), 2, "{err}");
                assert!(err.to_string().contains("`add` is `(i32, i32) -> i32` on the client"), "{err}");
                assert!(err.to_string().contains("`mul` does not exist"), "{err}");
            }
            // The reflection service is there too, as on every server by default.
            ("unknown", RpcError::UnknownService { available, .. }) => {
                assert_eq!(available, &["Calc", rpc_core::reflection::REFLECTION_SERVICE])
            }
            _ => panic!("unexpected {err}"),
        }
    }
}

/// Regression: calls whose requests were still queued used not to read answers, so a server
/// blocked writing answers (and therefore not reading) and a client blocked writing requests
/// (and therefore not reading) waited for each other forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_concurrent_calls_through_small_buffers_do_not_deadlock() {
    for (calls, size, max_in_flight, buffer) in [(64, 64_000, 2, 8 * 1024), (500, 64_000, 1024, 64 * 1024)] {
        let (client_side, server_side) = pair_buffered(1 << 20, buffer);
        let options = rpc_core::ServerOptions::default().max_in_flight(max_in_flight);
        let server = Server::new().with_options(options).add_service(Calc::default());
        tokio::spawn(async move { server.serve_connection(server_side).await });
        let client = Client::handshake(client_side, &CALC, ClientOptions::default()).await.unwrap();
        let tasks: Vec<_> = (0..calls)
            .map(|i| {
                let fut = client.call::<_, Vec<u8>>(m("echo"), &(vec![i as u8; size],), &CallOptions::default());
                tokio::spawn(fut)
            })
            .collect();
        let all = async {
            for (i, t) in tasks.into_iter().enumerate() {
                assert_eq!(t.await.unwrap().unwrap(), vec![i as u8; size]);
            }
        };
        tokio::time::timeout(Duration::from_secs(30), all).await.unwrap_or_else(|_| {
            panic!("{calls} calls of {size} bytes, max_in_flight {max_in_flight}, buffer {buffer}: hung")
        });
    }
}

/// Says hello as a `Calc` client over a bare connection and reads the reply: what a raw peer does
/// before the frames a test wants to send.
async fn raw_hello(conn: &mut Connection) {
    use rpc_core::wire;
    let methods =
        METHODS.iter().map(|m| wire::MethodSignature { name: m.name.into(), signature: m.signature.into() }).collect();
    let hello = wire::encode_hello(&wire::Hello {
        service: "Calc".into(),
        methods,
        stream_window: wire::DEFAULT_STREAM_WINDOW,
    });
    rpc_core::transport::send(&mut *conn.sender, hello.into()).await.unwrap();
    rpc_core::transport::recv(&mut *conn.receiver).await.unwrap().unwrap();
}

/// Regression: a client that sends requests, closes its sending half and never reads used to
/// keep its server connection task alive forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_reads_does_not_pin_the_connection_task() {
    use rpc_core::transport::{close, send};
    use rpc_core::wire::{self, RequestHeader};
    let (mut client_side, server_side) = pair_buffered(1 << 20, 4096);
    let server = Server::new().add_service(Calc::default());
    let task = tokio::spawn(async move { server.serve_connection(server_side).await });
    raw_hello(&mut client_side).await;
    for id in 1..=20u64 {
        let header = RequestHeader { id, method: method_id("echo"), timeout_us: None };
        let frame = wire::encode_request(header, &(vec![3u8; 10_000],)).unwrap().to_vec();
        send(&mut *client_side.sender, frame.into()).await.unwrap();
    }
    close(&mut *client_side.sender).await.unwrap();
    // Keep the receiving half alive but unread.
    tokio::time::timeout(Duration::from_secs(15), task).await.expect("connection task ended").unwrap();
    drop(client_side);
}

/// A sender that does not report its progress (`unsent_len`, `bytes_written` keep their
/// defaults), as a message transport might not.
struct Uncounted(Box<dyn rpc_core::transport::FrameSender>);

impl rpc_core::transport::FrameSender for Uncounted {
    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        self.0.poll_ready(cx)
    }
    fn start_send(&mut self, frame: bytes::Bytes) -> std::io::Result<()> {
        self.0.start_send(frame)
    }
    fn poll_flush(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        self.0.poll_flush(cx)
    }
    fn poll_close(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        self.0.poll_close(cx)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_reads_is_closed_after_the_send_timeout_even_without_byte_counts() {
    use rpc_core::transport::send;
    use rpc_core::wire::{self, RequestHeader};
    let (mut client_side, mut server_side) = pair_buffered(1 << 20, 4096);
    server_side.sender = Box::new(Uncounted(server_side.sender));
    let options = rpc_core::ServerOptions::default().send_timeout(Duration::from_millis(300));
    let server = Server::new().with_options(options).add_service(Calc::default());
    let task = tokio::spawn(async move { server.serve_connection(server_side).await });
    raw_hello(&mut client_side).await;
    // Requests until the server stops taking them; the receiving half stays open, unread.
    for id in 1.. {
        let header = RequestHeader { id, method: method_id("echo"), timeout_us: None };
        let frame = wire::encode_request(header, &(vec![3u8; 1000],)).unwrap().to_vec();
        match tokio::time::timeout(Duration::from_millis(200), send(&mut *client_side.sender, frame.into())).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) | Err(_) => break,
        }
        assert!(id < 100_000, "the server never stopped reading");
    }
    tokio::time::timeout(Duration::from_secs(5), task).await.expect("the send timeout closed the connection").unwrap();
    drop(client_side);
}

async fn wait_for(mut cond: impl FnMut() -> bool) {
    for _ in 0..500 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not reached within 5 s");
}

/// A sender that records, at each flush that carried frames, how many it carried.
struct FlushLog {
    inner: Box<dyn rpc_core::transport::FrameSender>,
    since: usize,
    carried: Arc<std::sync::Mutex<Vec<usize>>>,
}

impl rpc_core::transport::FrameSender for FlushLog {
    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        self.inner.poll_ready(cx)
    }
    fn start_send(&mut self, frame: bytes::Bytes) -> std::io::Result<()> {
        self.since += 1;
        self.inner.start_send(frame)
    }
    fn poll_flush(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        let flushed = self.inner.poll_flush(cx);
        if flushed.is_ready() && self.since > 0 {
            self.carried.lock().unwrap().push(std::mem::take(&mut self.since));
        }
        flushed
    }
    fn poll_close(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        self.inner.poll_close(cx)
    }
}

/// Requests that arrive together are answered in chunks, not all at once when the input runs
/// dry: a client polling for its answers starts on the first ones while the server works on
/// the rest (64 calls in flight over unix:// in `rpc-bench`: about 2.3x the calls per second).
/// The first chunk is small, later ones grow, so a deep pipeline does not pay a write per few
/// answers.
#[tokio::test]
async fn answers_to_requests_read_in_one_go_leave_in_chunks() {
    use rpc_core::transport::{recv, send};
    use rpc_core::wire::{self, RequestHeader};
    let (mut client_side, mut server_side) = pair_buffered(1 << 20, 1 << 20);
    let carried = Arc::new(std::sync::Mutex::new(Vec::new()));
    server_side.sender = Box::new(FlushLog { inner: server_side.sender, since: 0, carried: Arc::clone(&carried) });
    let server = Server::new().add_service(Calc::default());
    let task = tokio::spawn(async move { server.serve_connection(server_side).await });
    raw_hello(&mut client_side).await;
    // On this one-thread runtime the server runs only when this task waits: all the requests
    // are in its input before it reads the first.
    let calls = 100u64;
    for id in 1..=calls {
        let header = RequestHeader { id, method: method_id("add"), timeout_us: None };
        let frame = wire::encode_request(header, &(id as i64, 1i64)).unwrap().to_vec();
        send(&mut *client_side.sender, frame.into()).await.unwrap();
    }
    for _ in 0..calls {
        let frame = recv(&mut *client_side.receiver).await.unwrap().expect("an answer");
        assert!(matches!(wire::decode(&frame).unwrap(), wire::Frame::ResponseOk { .. }), "an answer");
    }
    let carried = carried.lock().unwrap().clone();
    let answers = &carried[1..]; // after the hello's reply
    assert_eq!(answers.iter().sum::<usize>(), calls as usize, "{carried:?}");
    assert!(answers[0] <= 16, "the first answers waited for more than 16 requests: {carried:?}");
    assert!(answers.len() >= 3, "the answers left in fewer than three writes: {carried:?}");
    assert!(answers.len() <= 5, "the chunks do not grow (a write per 16 would take 7): {carried:?}");
    eprintln!("flushes (frames each): {carried:?}");
    drop(client_side);
    let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
}
