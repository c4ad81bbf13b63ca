//! Connection lifecycle across the engines' timeouts and failures: defects an independent
//! review of the merged engines found, each kept as a regression test (D1-D5 in its notes).

mod common;
use common::pair_buffered;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rpc_core::descriptor::{method_id, MethodDescriptor, ServiceDescriptor};
use rpc_core::service::{decode_args, handler, unknown_method, Call, CallSetup, Service};
use rpc_core::transport::{stream, Connection, ConnectionInfo, FrameSender};
use rpc_core::wire::{self, RemoteError, RequestHeader};
use rpc_core::{CallOptions, Client, ClientOptions, Server, ServerOptions};

static METHODS: [MethodDescriptor; 2] = [
    MethodDescriptor { name: "slow", id: method_id("slow"), signature: "(u64, Vec<u8>) -> Vec<u8>" },
    MethodDescriptor { name: "add", id: method_id("add"), signature: "(i64, i64) -> i64" },
];
static SVC: ServiceDescriptor = ServiceDescriptor { name: "Slow", methods: &METHODS };

struct Slow;

impl Service for Slow {
    fn descriptor(&self) -> &'static ServiceDescriptor {
        &SVC
    }
    fn call(&self, method: u32, args: &[u8], _setup: &mut CallSetup<'_>) -> Result<Call, RemoteError> {
        const SLOW: u32 = method_id("slow");
        const ADD: u32 = method_id("add");
        Ok(match method {
            SLOW => {
                let (ms, v): (u64, Vec<u8>) = decode_args(args)?;
                handler(async move {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    v
                })
            }
            ADD => {
                let (a, b): (i64, i64) = decode_args(args)?;
                handler(async move { a + b })
            }
            other => return Err(unknown_method(other)),
        })
    }
}

/// A sender that records when it is dropped.
struct DropFlag(Box<dyn FrameSender>, Arc<AtomicBool>);
impl Drop for DropFlag {
    fn drop(&mut self) {
        self.1.store(true, Ordering::SeqCst);
    }
}
impl FrameSender for DropFlag {
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.0.poll_ready(cx)
    }
    fn start_send(&mut self, frame: bytes::Bytes) -> std::io::Result<()> {
        self.0.start_send(frame)
    }
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.0.poll_flush(cx)
    }
    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.0.poll_close(cx)
    }
    fn unsent_len(&self) -> usize {
        self.0.unsent_len()
    }
    fn bytes_written(&self) -> u64 {
        self.0.bytes_written()
    }
}

fn hello() -> Vec<u8> {
    let methods =
        METHODS.iter().map(|m| wire::MethodSignature { name: m.name.into(), signature: m.signature.into() }).collect();
    wire::encode_hello(&wire::Hello { service: "Slow".into(), methods, stream_window: wire::DEFAULT_STREAM_WINDOW })
}

/// D1: a call whose handler waited (moved to its own task) forgets its `running` entry before
/// it sends its answer. If the client then stops reading, the connection ends with `Stalled`,
/// `abort_all` finds nothing to abort, and the tasks stay parked in `poll_flushed` forever,
/// holding `Arc<Conn>` and so the transport's sending half (the socket stays open).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_connection_releases_its_sender_and_handler_tasks() {
    use rpc_core::transport::send;
    let (mut client_side, mut server_side) = pair_buffered(1 << 20, 4096);
    let dropped = Arc::new(AtomicBool::new(false));
    server_side.sender = Box::new(DropFlag(server_side.sender, Arc::clone(&dropped)));
    let options = ServerOptions::default().send_timeout(Duration::from_millis(300)).max_in_flight(8);
    let server = Server::new().with_options(options).add_service(Slow);
    let task = tokio::spawn(async move { server.serve_connection(server_side).await });
    send(&mut *client_side.sender, hello().into()).await.unwrap();
    rpc_core::transport::recv(&mut *client_side.receiver).await.unwrap().unwrap();
    for id in 1..=8u64 {
        let header = RequestHeader { id, method: method_id("slow"), timeout_us: None };
        let frame = wire::encode_request(header, &(20u64, vec![3u8; 10_000])).unwrap().to_vec();
        send(&mut *client_side.sender, frame.into()).await.unwrap();
    }
    // Never read: the server's connection task ends by the send timeout...
    tokio::time::timeout(Duration::from_secs(5), task).await.expect("connection task ended").unwrap();
    // ...but is the connection released?
    for _ in 0..200 {
        if dropped.load(Ordering::SeqCst) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the server's sending half is still alive 2 s after its connection ended: handler tasks leaked");
}

/// D2: the idle clock restarts at the check that last *saw* a running call, not when the call
/// ended. A call that ends just before a check is followed at once by an "idle timeout".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_does_not_fire_right_after_a_long_call() {
    let (client_side, server_side) = pair_buffered(1 << 20, 64 * 1024);
    let options = ServerOptions::default().idle_timeout(Some(Duration::from_secs(1)));
    let server = Server::new().with_options(options).add_service(Slow);
    tokio::spawn(async move { server.serve_connection(server_side).await });
    let client = Client::handshake(client_side, &SVC, ClientOptions::default()).await.unwrap();
    let none = CallOptions::default();
    let slow = &METHODS[0];
    let add = &METHODS[1];
    // Runs from ~0 to ~1.8 s: checks at 1 s (running: quiet restarts at 1 s) and 2 s.
    client.call::<_, Vec<u8>>(slow, &(1800u64, vec![1u8]), &none).await.unwrap();
    // Idle for 0.4 s only, well under the 1 s idle timeout.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let r = client.call::<_, i64>(add, &(1i64, 2i64), &none).await;
    assert_eq!(r.as_ref().ok(), Some(&3), "idle for 0.4 s of a 1 s idle timeout: {r:?}");
}

/// D3: a call blocked in `enqueue` (the transport is full because the server stopped reading)
/// has no waker in its slot and never looks at it, so when the reader closes the connection
/// (here: the server's goaway) it is neither woken nor failed; it waits for the transport.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_blocked_in_enqueue_fails_when_the_connection_is_closed() {
    use rpc_core::transport::{recv, send};
    let (client_side, mut server_side) = pair_buffered(1 << 20, 4096);
    // A fake server: accepts the hello, then reads nothing; says goaway a bit later and keeps
    // the connection open (a real server closes within its 5 s linger).
    let fake = tokio::spawn(async move {
        recv(&mut *server_side.receiver).await.unwrap().unwrap();
        send(
            &mut *server_side.sender,
            wire::encode_hello_reply(&wire::HelloReply::Accepted { stream_window: wire::DEFAULT_STREAM_WINDOW }).into(),
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        send(&mut *server_side.sender, wire::encode_goaway(wire::CloseCode::Normal, "going away").into())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(3600)).await;
        drop(server_side);
    });
    let client = Client::handshake(client_side, &SVC, ClientOptions::default()).await.unwrap();
    let none = CallOptions::default();
    let slow = &METHODS[0];
    // A: its 300 KB request is queued at once and it becomes the reader.
    let a = tokio::spawn(client.call::<_, Vec<u8>>(slow, &(0u64, vec![1u8; 300_000]), &none));
    tokio::time::sleep(Duration::from_millis(50)).await;
    // B: the sender is over its high-water mark, so B waits in enqueue.
    let b = tokio::spawn(client.call::<_, Vec<u8>>(slow, &(0u64, vec![2u8; 300_000]), &none));
    let a = tokio::time::timeout(Duration::from_secs(2), a).await.expect("A answered").unwrap();
    assert!(a.is_err(), "{a:?}");
    let b = tokio::time::timeout(Duration::from_secs(2), b).await;
    assert!(b.is_ok(), "B still waits 2 s after the connection was closed (client.closed() = {:?})", client.closed());
    fake.abort();
}

/// D5: "no timeout" spelled `Duration::MAX` panics the connection task (Instant overflow in
/// `Watch::plan`); the client sees its connection die after the hello.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_timeout_option_does_not_panic_the_connection() {
    let (client_side, server_side) = pair_buffered(1 << 20, 64 * 1024);
    let options = ServerOptions::default().idle_timeout(Some(Duration::MAX)).frame_timeout(Duration::MAX);
    let server = Server::new().with_options(options).add_service(Slow);
    let task = tokio::spawn(async move { server.serve_connection(server_side).await });
    let client = Client::handshake(client_side, &SVC, ClientOptions::default()).await.unwrap();
    let r = client.call::<_, i64>(&METHODS[1], &(1i64, 2i64), &CallOptions::default()).await;
    assert_eq!(
        r.as_ref().ok(),
        Some(&3),
        "{r:?}; server task: {:?}",
        tokio::time::timeout(Duration::from_secs(1), task).await
    );
}

/// The frame timeout applies while calls run: a client must not hold half a frame (and the
/// server's buffer for it) for as long as it keeps one slow call going.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_frame_times_out_while_a_call_runs() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut raw, server_io) = tokio::io::duplex(64 * 1024);
    let (r, w) = tokio::io::split(server_io);
    let (sender, receiver) = stream::framed(r, w, 1 << 20);
    let server_side = Connection {
        sender: Box::new(sender),
        receiver: Box::new(receiver),
        info: ConnectionInfo::new("duplex", "client", 1 << 20),
    };
    let options = ServerOptions::default().frame_timeout(Duration::from_millis(300));
    let server = Server::new().with_options(options).add_service(Slow);
    let task = tokio::spawn(async move { server.serve_connection(server_side).await });
    let framed = |frame: Vec<u8>| {
        let mut bytes = (frame.len() as u32).to_le_bytes().to_vec();
        bytes.extend_from_slice(&frame);
        bytes
    };
    raw.write_all(&framed(hello())).await.unwrap();
    // A call that runs for 10 s, then half of a frame.
    let header = RequestHeader { id: 1, method: method_id("slow"), timeout_us: None };
    raw.write_all(&framed(wire::encode_request(header, &(10_000u64, vec![0u8; 4])).unwrap().to_vec())).await.unwrap();
    raw.write_all(&[100, 0, 0, 0, 1, 2, 3]).await.unwrap();
    let started = std::time::Instant::now();
    let mut everything = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), raw.read_to_end(&mut everything)).await;
    assert!(read.is_ok(), "the connection was not closed while the slow call ran");
    let closed = started.elapsed();
    assert!(closed >= Duration::from_millis(300), "closed before the frame timeout: {closed:?}");
    let text = String::from_utf8_lossy(&everything);
    assert!(text.contains("frame timeout"), "the goaway names the frame timeout: {text:?}");
    tokio::time::timeout(Duration::from_secs(5), task).await.expect("the connection task ends").unwrap();
}
