//! Hostile clients against a real server process: frames that break the protocol, and raw bytes
//! that break the framing. Every case has one expected outcome (a typed answer, or a goaway
//! naming the violation and then the connection closed), and after every case a well-behaved
//! client is still served by the same server process.
//!
//! Frame-level cases run over every transport with a shared server (tcp, local, unix, fifo, shm,
//! mq, and mem in-process); byte-level cases need a raw byte stream to the server (tcp, local,
//! unix).

#![cfg(target_os = "linux")]

mod support;

use std::time::Duration;

use bytes::Bytes;
use rpc::transport::{recv, send};
use rpc::wire::{self, Frame, Hello, HelloReply, MethodSignature, RemoteError, RequestHeader, PROTOCOL_VERSION};
use rpc::CloseCode;
use rpc_tests::{CalculatorClient, StreamsClient};
use support::{fresh_addr, raw_stream, rss_kib, unique, RawStream, ServerProcess};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PATIENCE: Duration = Duration::from_secs(10);

/// The server under test: a process, or (for `mem://`) a task of this process.
enum Target {
    Process(ServerProcess),
    InProcess { addr: String, _task: tokio::task::JoinHandle<std::io::Result<()>> },
}

impl Target {
    async fn start(transport: &str) -> Target {
        if transport == "mem" {
            let listener = rpc::listen(&format!("mem://{}", unique("hostile"))).await.unwrap();
            let addr = listener.local_addr();
            return Target::InProcess { addr, _task: tokio::spawn(rpc_tests::test_server().serve(listener)) };
        }
        Target::Process(ServerProcess::start(&fresh_addr(transport), &[]).await)
    }

    fn addr(&self) -> &str {
        match self {
            Target::Process(server) => &server.addr,
            Target::InProcess { addr, .. } => addr,
        }
    }

    /// After each case: the server still runs, and serves a new, well-behaved client.
    async fn still_serves(&mut self, case: &str) {
        if let Target::Process(server) = self {
            assert!(server.is_running(), "the server process died after {case}");
        }
        let calc = tokio::time::timeout(PATIENCE, CalculatorClient::connect(self.addr()))
            .await
            .unwrap_or_else(|_| panic!("connect hangs after {case}"))
            .unwrap_or_else(|e| panic!("connect fails after {case}: {e}"));
        assert_eq!(calc.add(20, 22).await.unwrap(), 42, "after {case}");
    }
}

/// A connection at the frame level: we choose every frame.
struct FrameConn {
    conn: rpc::transport::Connection,
    case: &'static str,
}

impl FrameConn {
    async fn open(addr: &str, case: &'static str) -> FrameConn {
        FrameConn {
            conn: rpc::transports::connect(addr).await.unwrap_or_else(|e| panic!("{case}: connect: {e}")),
            case,
        }
    }

    /// Opens a connection and completes a valid hello for `Calculator`.
    async fn hello(addr: &str, case: &'static str) -> FrameConn {
        FrameConn::hello_for(addr, case, CalculatorClient::DESCRIPTOR).await
    }

    /// Opens a connection and completes a valid hello for `service`.
    async fn hello_for(addr: &str, case: &'static str, service: &rpc::ServiceDescriptor) -> FrameConn {
        let mut conn = FrameConn::open(addr, case).await;
        conn.send(wire::encode_hello(&hello_for(service))).await;
        let reply = conn.next().await;
        assert!(
            matches!(
                reply,
                Some(Frame::HelloReply { version: PROTOCOL_VERSION, reply: Some(HelloReply::Accepted { .. }) })
            ),
            "{reply:?}"
        );
        conn
    }

    async fn send(&mut self, frame: Vec<u8>) {
        send(&mut *self.conn.sender, Bytes::from(frame)).await.unwrap_or_else(|e| panic!("{}: send: {e}", self.case));
    }

    /// The next frame, decoded and owned; `None` when the server closed the connection.
    async fn next(&mut self) -> Option<Frame<'static>> {
        let read = tokio::time::timeout(PATIENCE, recv(&mut *self.conn.receiver))
            .await
            .unwrap_or_else(|_| panic!("{}: no answer and no close within {PATIENCE:?}", self.case));
        let frame = match read {
            Ok(Some(frame)) => frame,
            Ok(None) | Err(_) => return None,
        };
        // Leak to own the borrowed frame: a handful of small frames per test.
        let frame: &'static [u8] = Box::leak(frame.to_vec().into_boxed_slice());
        Some(wire::decode(frame).unwrap_or_else(|e| panic!("{}: the server sent a bad frame: {e}", self.case)))
    }

    /// The expected end of a violation: a goaway with the protocol-violation code (and a reason
    /// that says which, containing `reason`), then close.
    async fn expect_goaway(mut self, reason: &str) {
        match self.next().await {
            Some(Frame::Goaway { code, reason: got }) => {
                assert_eq!(code, CloseCode::ProtocolViolation, "{}: goaway {got:?}", self.case);
                assert!(got.contains(reason), "{}: goaway {got:?}", self.case)
            }
            other => panic!("{}: expected a goaway saying {reason:?}, got {other:?}", self.case),
        }
        assert_eq!(self.next().await, None, "{}: the connection must close after the goaway", self.case);
    }

    /// Sends `add(a, b)` as call `id` and expects its answer.
    async fn expect_add_works(&mut self, id: u64) {
        self.send(add_request(id, 1, 2)).await;
        match self.next().await {
            Some(Frame::ResponseOk { id: answered, payload }) => {
                assert_eq!((answered, wire::decode_value::<i64>(payload).unwrap()), (id, 3), "{}", self.case)
            }
            other => panic!("{}: add does not work any more: {other:?}", self.case),
        }
    }
}

fn calculator_hello() -> Hello {
    hello_for(CalculatorClient::DESCRIPTOR)
}

fn hello_for(desc: &rpc::ServiceDescriptor) -> Hello {
    Hello {
        service: desc.name.into(),
        methods: desc
            .methods
            .iter()
            .map(|m| MethodSignature { name: m.name.into(), signature: m.signature.into() })
            .collect(),
        stream_window: wire::DEFAULT_STREAM_WINDOW,
    }
}

fn method(name: &str) -> u32 {
    CalculatorClient::DESCRIPTOR.methods.iter().find(|m| m.name == name).unwrap().id
}

fn add_request(id: u64, a: i64, b: i64) -> Vec<u8> {
    wire::encode_request(RequestHeader { id, method: method("add"), timeout_us: None }, &(a, b)).unwrap().to_vec()
}

// ---------------------------------------------------------------------------------------------
// Frame-level cases.

async fn frame_cases(transport: &str) {
    let mut server = Target::start(transport).await;
    let addr = server.addr().to_owned();
    let addr = addr.as_str();

    // A hello of another protocol version: a typed refusal the client maps to
    // `RpcError::ProtocolVersion`, then close.
    // Version 1 is a peer built before streams.
    for version in [0u16, 1, PROTOCOL_VERSION + 1, u16::MAX] {
        let mut conn = FrameConn::open(addr, "wrong protocol version").await;
        let mut hello = wire::encode_hello(&calculator_hello());
        hello[1..3].copy_from_slice(&version.to_le_bytes());
        conn.send(hello).await;
        let reply = conn.next().await;
        assert_eq!(
            reply,
            Some(Frame::HelloReply { version: PROTOCOL_VERSION, reply: Some(HelloReply::VersionMismatch) })
        );
        assert_eq!(conn.next().await, None, "closed after the version mismatch");
        server.still_serves("a wrong protocol version").await;
    }

    // A hello of our version whose body is not a hello.
    let mut conn = FrameConn::open(addr, "malformed hello").await;
    let mut hello = wire::encode_hello(&calculator_hello());
    hello.truncate(5);
    conn.send(hello).await;
    conn.expect_goaway("expected a hello: malformed hello body").await;
    server.still_serves("a malformed hello").await;

    // Anything but a hello first.
    for (frame, name) in [
        (add_request(1, 1, 2), "a request"),
        (wire::encode_cancel(1), "a cancel"),
        (wire::ResponsePayload::encode(&1i64).unwrap().into_frame(1).to_vec(), "a response"),
    ] {
        let mut conn = FrameConn::open(addr, "no hello first").await;
        conn.send(frame).await;
        conn.expect_goaway(&format!("expected a hello, got {name}")).await;
    }
    let mut conn = FrameConn::open(addr, "empty first frame").await;
    conn.send(Vec::new()).await;
    conn.expect_goaway("expected a hello: empty frame").await;
    server.still_serves("frames before the hello").await;

    // A second hello.
    let mut conn = FrameConn::hello(addr, "second hello").await;
    conn.send(wire::encode_hello(&calculator_hello())).await;
    conn.expect_goaway("the client sent a second hello").await;
    server.still_serves("a second hello").await;

    // Frames only a server sends.
    for frame in [
        wire::ResponsePayload::encode(&1i64).unwrap().into_frame(1).to_vec(),
        wire::encode_response_err(1, &RemoteError::Cancelled),
        wire::encode_hello_reply(&HelloReply::Accepted { stream_window: wire::DEFAULT_STREAM_WINDOW }),
    ] {
        let mut conn = FrameConn::hello(addr, "a response sent to a server").await;
        conn.send(frame).await;
        conn.expect_goaway("which only a server sends").await;
    }
    server.still_serves("responses sent to the server").await;

    // Broken frames after the hello.
    for (frame, reason) in [
        (vec![0xff, 1, 2], "bad frame from a client: unknown frame kind 0xff"),
        (vec![0x03, 1, 2], "bad frame from a client: truncated request frame"),
        ([wire::encode_cancel(1), vec![0]].concat(), "bad frame from a client: trailing bytes after cancel frame"),
        (Vec::new(), "bad frame from a client: empty frame"),
    ] {
        let mut conn = FrameConn::hello(addr, "a broken frame").await;
        conn.send(frame).await;
        conn.expect_goaway(reason).await;
    }
    server.still_serves("broken frames").await;

    // Unknown method, undecodable arguments, arguments with bytes left over: typed answers,
    // and the connection stays usable.
    let mut conn = FrameConn::hello(addr, "typed answers").await;
    let unknown =
        wire::encode_request(RequestHeader { id: 7, method: 0xdead_beef, timeout_us: None }, &()).unwrap().to_vec();
    conn.send(unknown).await;
    assert_eq!(
        conn.next().await,
        Some(Frame::ResponseErr { id: 7, error: RemoteError::UnknownMethod { id: 0xdead_beef } })
    );
    conn.expect_add_works(8).await;
    let bad_args = wire::encode_request(RequestHeader { id: 9, method: method("add"), timeout_us: None }, &(1u8,))
        .unwrap()
        .to_vec();
    conn.send(bad_args).await;
    assert!(matches!(conn.next().await, Some(Frame::ResponseErr { id: 9, error: RemoteError::Decode(_) })));
    conn.send([add_request(10, 1, 2), vec![0]].concat()).await;
    assert!(matches!(conn.next().await, Some(Frame::ResponseErr { id: 10, error: RemoteError::Decode(_) })));
    // A cancel for a call that does not exist is harmless.
    conn.send(wire::encode_cancel(12345)).await;
    conn.expect_add_works(11).await;
    drop(conn);
    server.still_serves("typed answers").await;

    // A call id reused while its call runs: refused (it once orphaned the first call, which then
    // outlived the connection; found by fuzzing server_input).
    let mut conn = FrameConn::hello(addr, "reused call id").await;
    let sleep = |id| {
        wire::encode_request(RequestHeader { id, method: method("sleep"), timeout_us: None }, &(60_000u64,))
            .unwrap()
            .to_vec()
    };
    conn.send(sleep(5)).await;
    conn.send(sleep(5)).await;
    conn.expect_goaway("the client reused call id 5 while that call was running").await;
    server.still_serves("a reused call id").await;

    // A hello naming very many methods the server lacks: the answer lists a bounded number of
    // them (it used to list every one, a reply many times the hello's size).
    let mut conn = FrameConn::open(addr, "huge interface mismatch").await;
    let hello = Hello {
        service: "Calculator".into(),
        methods: (0..20_000).map(|i| MethodSignature { name: format!("m{i}"), signature: "()".into() }).collect(),
        stream_window: wire::DEFAULT_STREAM_WINDOW,
    };
    conn.send(wire::encode_hello(&hello)).await;
    match conn.next().await {
        Some(Frame::HelloReply { reply: Some(HelloReply::InterfaceMismatch { differences }), .. }) => {
            assert_eq!(differences.len(), 33, "32 listed and a count");
            assert_eq!(differences.last().unwrap(), "and 19968 more");
        }
        other => panic!("expected an interface mismatch, got {other:?}"),
    }
    assert_eq!(conn.next().await, None);

    // A hello above the hello limit is refused before it is decoded (decoding a list of empty
    // names would take ~24 times the frame's size in memory).
    let mut conn = FrameConn::open(addr, "oversized hello").await;
    let hello = Hello {
        service: "Calculator".into(),
        methods: (0..200_000).map(|_| MethodSignature { name: String::new(), signature: String::new() }).collect(),
        stream_window: wire::DEFAULT_STREAM_WINDOW,
    };
    let frame = wire::encode_hello(&hello);
    let reason = format!("expected a hello: hello frame of {} bytes exceeds the maximum of 262144 bytes", frame.len());
    conn.send(frame).await;
    conn.expect_goaway(&reason).await;
    server.still_serves("oversized hellos").await;

    // A goaway from the client: the server closes quietly.
    let mut conn = FrameConn::hello(addr, "client goaway").await;
    conn.send(wire::encode_goaway(CloseCode::Normal, "bye")).await;
    assert_eq!(conn.next().await, None);
    server.still_serves("a client's goaway").await;
}

// ---------------------------------------------------------------------------------------------
// Byte-level cases: what a framing layer must survive.

/// A raw byte stream that has completed a valid hello.
async fn raw_after_hello(addr: &str) -> RawStream {
    let mut raw = raw_stream(addr).await;
    let hello = wire::encode_hello(&calculator_hello());
    raw.write_all(&(hello.len() as u32).to_le_bytes()).await.unwrap();
    raw.write_all(&hello).await.unwrap();
    let mut prefix = [0u8; 4];
    raw.read_exact(&mut prefix).await.unwrap();
    let mut reply = vec![0u8; u32::from_le_bytes(prefix) as usize];
    raw.read_exact(&mut reply).await.unwrap();
    assert!(matches!(
        wire::decode(&reply).unwrap(),
        Frame::HelloReply { version: PROTOCOL_VERSION, reply: Some(HelloReply::Accepted { .. }) }
    ));
    raw
}

/// Reads until the server closes; returns the reasons of the goaways it sent first.
async fn read_until_closed(raw: &mut RawStream, case: &str) -> Vec<String> {
    let mut bytes = Vec::new();
    let read = tokio::time::timeout(PATIENCE, raw.read_to_end(&mut bytes)).await;
    // A reset (the server closed with our bytes unread) is a close too.
    assert!(read.is_ok(), "{case}: the server did not close the connection within {PATIENCE:?}");
    let mut buf = bytes::BytesMut::from(&bytes[..]);
    let mut reasons = Vec::new();
    while let Some(frame) = wire::LengthDelimited::default().decode(&mut buf).unwrap() {
        match wire::decode(&frame) {
            Ok(Frame::Goaway { reason, .. }) => reasons.push(reason),
            other => panic!("{case}: unexpected frame {other:?}"),
        }
    }
    reasons
}

async fn byte_cases(transport: &str) {
    let mut server = Target::start(transport).await;
    let addr = server.addr().to_owned();
    let addr = addr.as_str();
    let Target::Process(process) = &server else { unreachable!() };
    let pid = process.pid();
    let rss_before = rss_kib(pid);

    // Truncated frames: the prefix promises more than arrives before EOF.
    let mut raw = raw_stream(addr).await;
    raw.write_all(&[100, 0, 0, 0, 1, 2, 3]).await.unwrap();
    raw.shutdown().await.unwrap();
    let reasons = read_until_closed(&mut raw, "truncated frame before the hello").await;
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(
        reasons[0].starts_with("expected a hello: disconnected: connection closed in the middle of a frame"),
        "{reasons:?}"
    );

    let mut raw = raw_after_hello(addr).await;
    let request = add_request(1, 1, 2);
    raw.write_all(&(request.len() as u32).to_le_bytes()).await.unwrap();
    raw.write_all(&request[..request.len() / 2]).await.unwrap();
    raw.shutdown().await.unwrap();
    let reasons = read_until_closed(&mut raw, "truncated frame after the hello").await;
    assert_eq!(reasons, ["disconnected: connection closed in the middle of a frame"]);
    server.still_serves("truncated frames").await;

    // A truncated frame that never completes (no EOF): the server waits for it, and serves
    // everyone else meanwhile.
    let mut stalled = raw_after_hello(addr).await;
    stalled.write_all(&[0, 0, 1, 0, 9]).await.unwrap();
    server.still_serves("a stalled frame").await;
    drop(stalled);

    // Huge length prefixes, before and after the hello: refused by the prefix alone.
    for prefix in [u32::MAX, rpc::wire::DEFAULT_MAX_FRAME_LEN as u32 + 1] {
        let mut raw = raw_stream(addr).await;
        raw.write_all(&prefix.to_le_bytes()).await.unwrap();
        let reasons = read_until_closed(&mut raw, "huge prefix before the hello").await;
        assert_eq!(
            reasons,
            [format!("expected a hello: frame of {prefix} bytes exceeds the maximum of 33554432 bytes")]
        );
        let mut raw = raw_after_hello(addr).await;
        raw.write_all(&prefix.to_le_bytes()).await.unwrap();
        let reasons = read_until_closed(&mut raw, "huge prefix after the hello").await;
        assert_eq!(reasons, [format!("frame of {prefix} bytes exceeds the maximum of 33554432 bytes")]);
    }
    server.still_serves("huge length prefixes").await;

    // Random bytes, before and after a hello: the connection is closed (with a goaway when the
    // bytes happened to make a frame), whatever they are.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut random = |len: usize| {
        (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect::<Vec<u8>>()
    };
    for round in 0..16 {
        let bytes = random(1 + round * 97);
        let mut raw = if round % 2 == 0 { raw_stream(addr).await } else { raw_after_hello(addr).await };
        // The server may close (and reset) before taking everything.
        let _ = raw.write_all(&bytes).await;
        let _ = raw.shutdown().await;
        read_until_closed(&mut raw, "random bytes").await;
    }
    server.still_serves("random bytes").await;

    let rss_after = rss_kib(pid);
    assert!(rss_after < rss_before + 64 * 1024, "server RSS grew from {rss_before} KiB to {rss_after} KiB");
}

// ---------------------------------------------------------------------------------------------
// Stream frames: for unknown streams, without credit, after the end, credit beyond the window,
// and a client that grants no credit and holds its stream open.

fn streams_method(name: &str) -> u32 {
    StreamsClient::DESCRIPTOR.methods.iter().find(|m| m.name == name).unwrap().id
}

fn stream_request<A: serde::Serialize>(id: u64, name: &str, args: &A) -> Vec<u8> {
    wire::encode_request(RequestHeader { id, method: streams_method(name), timeout_us: None }, args).unwrap().to_vec()
}

fn items_frame<T: serde::Serialize>(id: u64, items: &[T]) -> Vec<u8> {
    let mut frame = wire::ItemsWriter::new(id);
    for item in items {
        frame.push(item).unwrap();
    }
    frame.finish().to_vec()
}

impl FrameConn {
    /// Reads until the goaway that must come (other frames may come first); checks it says
    /// `reason` with the protocol-violation code, and that the connection then closes.
    async fn expect_goaway_after_others(mut self, reason: &str) {
        loop {
            match self.next().await {
                Some(Frame::Goaway { code, reason: got }) => {
                    assert_eq!(code, CloseCode::ProtocolViolation, "{}: goaway {got:?}", self.case);
                    assert!(got.contains(reason), "{}: goaway {got:?}", self.case);
                    break;
                }
                Some(_) => continue,
                None => panic!("{}: closed without a goaway saying {reason:?}", self.case),
            }
        }
        assert_eq!(self.next().await, None, "{}: the connection must close after the goaway", self.case);
    }

    /// Calls `sum(u64::MAX)` as call `id` over a stream of `items`, then its end; expects the sum.
    async fn expect_sum_works(&mut self, id: u64, items: &[u64]) {
        self.send(stream_request(id, "sum", &(u64::MAX,))).await;
        self.send(items_frame(id, items)).await;
        self.send(wire::encode_stream_end(id)).await;
        loop {
            match self.next().await {
                Some(Frame::ResponseOk { id: answered, payload }) if answered == id => {
                    assert_eq!(wire::decode_value::<u64>(payload).unwrap(), items.iter().sum::<u64>(), "{}", self.case);
                    return;
                }
                // Credit for the stream we sent.
                Some(Frame::Credit { .. }) => continue,
                other => panic!("{}: sum does not work: {other:?}", self.case),
            }
        }
    }
}

async fn stream_cases(transport: &str) {
    let mut server = Target::start(transport).await;
    let addr = server.addr().to_owned();
    let addr = addr.as_str();
    let streams = StreamsClient::DESCRIPTOR;

    // Stream frames for calls that do not exist (or ended) are dropped; the connection serves on.
    let mut conn = FrameConn::hello_for(addr, "frames for unknown streams", streams).await;
    conn.send(items_frame(77, &[1u64, 2, 3])).await;
    conn.send(wire::encode_stream_end(77)).await;
    conn.send(wire::encode_credit(78, 1000)).await;
    conn.expect_sum_works(1, &[1, 2, 3]).await;
    drop(conn);
    server.still_serves("frames for unknown streams").await;

    // Items after the end of the client's stream, and a second end, while the call runs
    // (items for a call that ended are dropped like any for an unknown stream, so the handler
    // waits a minute before it reads).
    let hold = |id| stream_request(id, "slow_sum", &(60_000u64,));
    for (case, last, reason) in [
        ("items after the end", items_frame(1, &[vec![1u8]]), "after the end of its stream"),
        ("a stream ended twice", wire::encode_stream_end(1), "ended its stream twice"),
    ] {
        let mut conn = FrameConn::hello_for(addr, case, streams).await;
        conn.send(hold(1)).await;
        conn.send(items_frame(1, &[vec![1u8, 2]])).await;
        conn.send(wire::encode_stream_end(1)).await;
        conn.send(last).await;
        conn.expect_goaway_after_others(reason).await;
    }
    server.still_serves("items after the end").await;

    // Credit that would give the server more than the client's window.
    let mut conn = FrameConn::hello_for(addr, "credit overflow", streams).await;
    conn.send(stream_request(1, "count", &(u64::MAX, 0u32, 0u64))).await;
    conn.send(wire::encode_credit(1, u32::MAX)).await;
    conn.expect_goaway_after_others("more than its window").await;
    server.still_serves("credit overflow").await;

    // A stop is the server's to send.
    let mut conn = FrameConn::hello_for(addr, "a client's stream stop", streams).await;
    conn.send(wire::encode_stream_stop(1)).await;
    conn.expect_goaway("which only a server sends").await;

    // Items beyond the credit the server granted: the handler reads nothing for a minute, so
    // no credit comes back; the client sends on regardless.
    let mut conn = FrameConn::hello_for(addr, "items without credit", streams).await;
    conn.send(hold(1)).await;
    let chunk = vec![7u8; 60 * 1024];
    let frames = wire::DEFAULT_STREAM_WINDOW as usize / chunk.len() + 2;
    let sender = tokio::spawn(async move {
        for _ in 0..frames {
            conn.send(items_frame(1, std::slice::from_ref(&chunk))).await;
        }
        conn
    });
    let conn = tokio::time::timeout(PATIENCE, sender).await.expect("the server reads on").unwrap();
    conn.expect_goaway_after_others("beyond the").await;
    server.still_serves("items without credit").await;

    // A client that grants no credit and holds an endless stream open: the producer waits (it
    // makes about a window of items), and other connections are served meanwhile.
    let client = StreamsClient::connect(addr).await.unwrap();
    let mut before = client.produced().await.unwrap().0;
    // Producers of the cases above stop when their connections close; wait until they have.
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = client.produced().await.unwrap().0;
        if now == before {
            break;
        }
        before = now;
    }
    let mut held = FrameConn::hello_for(addr, "a stream nobody reads", streams).await;
    held.send(stream_request(1, "count", &(u64::MAX, 1024u32, 0u64))).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let produced = client.produced().await.unwrap().0 - before;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let later = client.produced().await.unwrap().0 - before;
    assert!(produced > 0, "the stream never started");
    assert!(produced <= 2 * wire::DEFAULT_STREAM_WINDOW as u64 / 1024 + 64, "produced {produced} unread items");
    assert_eq!(produced, later, "the producer went on without credit");
    server.still_serves("a stream nobody reads").await;
    drop(held);
}

macro_rules! per_transport {
    ($cases:ident: $($transport:ident),*) => {
        mod $cases {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $transport() {
                    super::$cases(stringify!($transport)).await;
                }
            )*
        }
    };
}

per_transport!(frame_cases: tcp, local, unix, fifo, shm, mq, mem);
per_transport!(byte_cases: tcp, local, unix);
per_transport!(stream_cases: tcp, local, unix, fifo, shm, mq, mem);
