//! The harnesses behind the fuzz targets in `fuzz/` (cargo-fuzz), written once so that a plain
//! `cargo test` runs the same code over the committed seed corpus and over generated inputs.
//! Not part of the API: compiled for this crate's tests and with the `fuzzing` feature only.
//!
//! Each harness takes arbitrary bytes, drives one decoder or the server's real input path with
//! them, and panics only when an invariant is broken (a panic in our code, a hang, a frame from
//! the server that does not decode, an answer that contradicts the input). The fuzz binaries
//! abort on any panic, even a caught one, so the service the harness serves never panics on
//! purpose.

pub mod corpus;

use std::future::Future;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::client::{Client, ClientOptions};
use crate::descriptor::{method_id, MethodDescriptor, ServiceDescriptor};
use crate::server::Server;
use crate::service::{decode_args, handler, stream_handler, unknown_method, Call, CallSetup, Service};
use crate::stream::Stream;
use crate::transport::{stream, Connection, ConnectionInfo};
use crate::wire::codec::MAX_RESERVE_STEP;
use crate::wire::{self, Frame, Hello, HelloReply, LengthDelimited, MethodSignature, RemoteError, PROTOCOL_VERSION};

/// The largest frame the harnesses' connections accept: big enough for anything a fuzzer
/// produces, small enough that a length prefix above it is refused.
pub const MAX_FRAME_LEN: usize = 1 << 20;

/// How long one input may take before the harness calls it a hang.
const BOUND: Duration = Duration::from_secs(20);

/// The methods of the service every harness serves.
pub static METHODS: [MethodDescriptor; 5] = [
    MethodDescriptor { name: "add", id: method_id("add"), signature: "(i64, i64) -> i64" },
    MethodDescriptor { name: "echo", id: method_id("echo"), signature: "(Vec<u8>) -> Vec<u8>" },
    MethodDescriptor { name: "sleep", id: method_id("sleep"), signature: "(u64) -> u64" },
    MethodDescriptor { name: "count", id: method_id("count"), signature: "(u32) -> Stream<u32>" },
    MethodDescriptor { name: "sum", id: method_id("sum"), signature: "(Stream<u32>) -> u64" },
];
/// The service every harness serves.
pub static SERVICE: ServiceDescriptor = ServiceDescriptor { name: "Fuzz", methods: &METHODS };

/// The harness's service: answers at once (`add`, `echo`) or after waiting (`sleep`, so calls
/// also move to tasks of their own and get cancelled). Never panics.
struct FuzzService;

impl Service for FuzzService {
    fn descriptor(&self) -> &'static ServiceDescriptor {
        &SERVICE
    }

    fn call(&self, method: u32, args: &[u8], setup: &mut CallSetup<'_>) -> Result<Call, RemoteError> {
        const ADD: u32 = method_id("add");
        const ECHO: u32 = method_id("echo");
        const SLEEP: u32 = method_id("sleep");
        const COUNT: u32 = method_id("count");
        const SUM: u32 = method_id("sum");
        Ok(match method {
            ADD => {
                let (a, b): (i64, i64) = decode_args(args)?;
                handler(async move { a.wrapping_add(b) })
            }
            ECHO => {
                let (data,): (Vec<u8>,) = decode_args(args)?;
                handler(async move { data })
            }
            SLEEP => {
                let (ms,): (u64,) = decode_args(args)?;
                handler(async move {
                    tokio::time::sleep(Duration::from_millis(ms.min(20))).await;
                    ms
                })
            }
            COUNT => {
                let (n,): (u32,) = decode_args(args)?;
                stream_handler(async move { Stream::from_iter(0..n.min(10_000)) })
            }
            SUM => {
                let (): () = decode_args(args)?;
                let mut items = setup.incoming::<u32>();
                handler(async move {
                    let mut sum = 0u64;
                    while let Some(item) = items.next().await {
                        sum += u64::from(item);
                    }
                    sum
                })
            }
            other => return Err(unknown_method(other)),
        })
    }
}

/// The hello a client of [`SERVICE`] sends.
pub fn valid_hello() -> Hello {
    Hello {
        service: SERVICE.name.to_owned(),
        methods: METHODS
            .iter()
            .map(|m| MethodSignature { name: m.name.to_owned(), signature: m.signature.to_owned() })
            .collect(),
        stream_window: wire::DEFAULT_STREAM_WINDOW,
    }
}

/// `frame` behind its length prefix, as a byte-stream transport sends it.
pub fn length_prefixed(frame: &[u8]) -> Vec<u8> {
    let mut out = (frame.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(frame);
    out
}

/// Target `frame_decoder`: [`wire::decode`] on the input as one frame, and the length-prefix
/// codec on the input as a byte stream arriving in pieces.
pub fn frame_decoder(data: &[u8]) {
    check_frame(data);
    let piece = data.first().map_or(1, |&b| usize::from(b % 64) + 1);
    let codec = LengthDelimited::new(256);
    let mut buf = BytesMut::new();
    let mut consumed = 0;
    for chunk in data.chunks(piece) {
        buf.extend_from_slice(chunk);
        loop {
            assert!(codec.reserve_hint(&buf) <= MAX_RESERVE_STEP.max(buf.len()));
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => {
                    assert!(frame.len() <= codec.max_frame_len());
                    // The frame is exactly the bytes after its prefix.
                    let start = consumed + wire::LENGTH_PREFIX_LEN;
                    assert_eq!(&frame[..], &data[start..start + frame.len()]);
                    consumed = start + frame.len();
                    check_frame(&frame);
                }
                Ok(None) => break,
                // Too large: the stream is unusable from here, as on a real connection.
                Err(too_large) => {
                    assert!(too_large.size > too_large.max);
                    return;
                }
            }
        }
    }
    assert_eq!(consumed + buf.len(), data.len(), "the codec lost or invented bytes");
}

/// Decodes one frame and checks what can be checked without a peer: the id the client's reader
/// routes by agrees with the full decode, and re-encoding a decoded frame gives it back.
fn check_frame(frame: &[u8]) {
    let Ok(decoded) = wire::decode(frame) else {
        return;
    };
    // The client's reader routes by header alone; it must agree with the full decode.
    let route = wire::route(frame);
    match &decoded {
        Frame::ResponseOk { id, .. } => assert_eq!(route, Some((*id, wire::Route::Response))),
        Frame::StreamItems { id, items } => {
            assert_eq!(route, Some((*id, wire::Route::StreamItems)));
            let walked: usize = wire::items(items).map(|item| item.len() + wire::ITEM_PREFIX_LEN).sum();
            assert_eq!(walked, items.len(), "the items do not tile the frame");
        }
        Frame::StreamEnd { id } => assert_eq!(route, Some((*id, wire::Route::StreamEnd))),
        Frame::StreamStop { id } => assert_eq!(route, Some((*id, wire::Route::StreamStop))),
        Frame::Credit { id, bytes } => assert_eq!(route, Some((*id, wire::Route::Credit(*bytes)))),
        Frame::ResponseErr { id, .. } => assert_eq!(route.map(|(id, _)| id), Some(*id)),
        _ => assert_eq!(route, None),
    }
    let again = match &decoded {
        Frame::Hello { version: PROTOCOL_VERSION, hello: Some(hello) } => wire::encode_hello(hello),
        Frame::HelloReply { version: PROTOCOL_VERSION, reply: Some(reply) } => wire::encode_hello_reply(reply),
        Frame::ResponseErr { id, error } => wire::encode_response_err(*id, error),
        Frame::Cancel { id } => {
            assert_eq!(wire::encode_cancel(*id), frame);
            return;
        }
        Frame::Goaway { code, reason } => wire::encode_goaway(*code, reason),
        Frame::StreamEnd { id } => wire::encode_stream_end(*id),
        Frame::StreamStop { id } => wire::encode_stream_stop(*id),
        Frame::Credit { id, bytes } => wire::encode_credit(*id, *bytes),
        _ => return,
    };
    assert_eq!(wire::decode(&again).as_ref(), Ok(&decoded), "re-encoding changed the frame");
}

/// Target `hello_exchange`: the input as the first frame a client sends to a real server
/// connection, and as the reply a client gets to its hello.
pub fn hello_exchange(data: &[u8]) {
    if data.len() > MAX_FRAME_LEN {
        return;
    }
    block_on(async {
        let output = serve_bytes(&length_prefixed(data), usize::MAX).await;
        check_hello_answer(data, &output);
        client_handshake_with_reply(data).await;
    });
}

/// What the server must answer to `hello`: exactly one frame, which follows from the input.
fn check_hello_answer(hello: &[u8], output: &[Bytes]) {
    assert_eq!(output.len(), 1, "one answer to a first frame, got {output:?}");
    let answer = wire::decode(&output[0]).expect("the server's answer decodes");
    let reply = match answer {
        Frame::HelloReply { version: PROTOCOL_VERSION, reply: Some(reply) } => Some(reply),
        Frame::Goaway { .. } => None,
        other => panic!("the server answered a first frame with {other:?}"),
    };
    match (wire::decode(hello), reply) {
        (Ok(Frame::Hello { version: PROTOCOL_VERSION, hello: Some(hello) }), Some(reply)) => {
            check_reply(&hello, &reply)
        }
        (Ok(Frame::Hello { version, .. }), Some(HelloReply::VersionMismatch)) if version != PROTOCOL_VERSION => {}
        // Not a hello at all: refused with a goaway.
        (Ok(Frame::Hello { .. }), None) => panic!("a hello was answered with a goaway"),
        (_, None) => {}
        (hello, reply) => panic!("{hello:?} was answered with {reply:?}"),
    }
}

/// Checks the server's reply to a valid hello against an independent reading of the hello.
fn check_reply(hello: &Hello, reply: &HelloReply) {
    // The server serves [`SERVICE`] and, as every server does by default, the reflection service.
    let served = [&SERVICE, &crate::reflection::DESCRIPTOR];
    let Some(service) = served.iter().find(|s| s.name == hello.service) else {
        let mut available: Vec<String> = served.iter().map(|s| s.name.to_owned()).collect();
        available.sort();
        assert_eq!(reply, &HelloReply::UnknownService { available });
        return;
    };
    let differing = hello
        .methods
        .iter()
        .filter(|m| service.method_by_name(&m.name).is_none_or(|ours| ours.signature != m.signature))
        .count();
    match reply {
        HelloReply::Accepted { .. } => assert_eq!(differing, 0, "accepted a hello with differing methods"),
        HelloReply::InterfaceMismatch { differences } => {
            assert!(differing > 0, "refused a hello whose methods all match");
            // One line per difference, at most 32 of them and a count of the rest.
            assert_eq!(differences.len(), differing.min(33));
        }
        other => panic!("a hello for the right service got {other:?}"),
    }
}

/// A client's hello exchange against a "server" that answers with `reply`.
async fn client_handshake_with_reply(reply: &[u8]) {
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let (mut server_read, mut server_write) = tokio::io::split(server_io);
    let peer = async move {
        let mut hello = [0u8; 256];
        let _ = server_read.read(&mut hello).await;
        let _ = server_write.write_all(&length_prefixed(reply)).await;
        let _ = server_write.shutdown().await;
        (server_read, server_write)
    };
    let client = Client::handshake(duplex_connection(client_io), &SERVICE, ClientOptions::default());
    let (result, _peer) = tokio::join!(client, peer);
    let accepted = matches!(
        wire::decode(reply),
        Ok(Frame::HelloReply { version: PROTOCOL_VERSION, reply: Some(HelloReply::Accepted { .. }) })
    );
    assert_eq!(result.is_ok(), accepted, "client handshake with reply {reply:?}: {result:?}");
}

/// Target `server_input`: arbitrary bytes on a real server connection. The first byte chooses:
/// bit 0, whether a valid hello comes first (so the input reaches the read loop); bit 1, whether
/// the bytes arrive in pieces of `(byte >> 2) + 1` bytes instead of at once.
pub fn server_input(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let mut input = Vec::new();
    if flags & 1 != 0 {
        input.extend(length_prefixed(&wire::encode_hello(&valid_hello())));
    }
    input.extend_from_slice(rest);
    let piece = if flags & 2 != 0 { usize::from(flags >> 2) + 1 } else { usize::MAX };
    block_on(async {
        let output = serve_bytes(&input, piece).await;
        check_server_output(&output, flags & 1 != 0);
    });
}

/// What any server output must look like: frames that decode, a hello reply or goaway first,
/// nothing after a goaway, and answers only on an accepted connection.
fn check_server_output(output: &[Bytes], hello_first: bool) {
    let mut accepted = false;
    for (i, frame) in output.iter().enumerate() {
        let frame = wire::decode(frame).unwrap_or_else(|e| panic!("the server sent a bad frame: {e}"));
        match frame {
            Frame::HelloReply { .. } if i == 0 => {
                accepted = matches!(
                    frame,
                    Frame::HelloReply { version: PROTOCOL_VERSION, reply: Some(HelloReply::Accepted { .. }) }
                );
                assert!(!hello_first || accepted, "a valid hello was not accepted: {frame:?}");
            }
            Frame::Goaway { .. } => assert_eq!(i, output.len() - 1, "frames after a goaway"),
            Frame::ResponseOk { .. }
            | Frame::ResponseErr { .. }
            | Frame::StreamItems { .. }
            | Frame::StreamEnd { .. }
            | Frame::StreamStop { .. }
            | Frame::Credit { .. }
                if accepted => {}
            other => panic!("the server sent {other:?} as frame {i}"),
        }
    }
}

/// Feeds `input` to a real server connection (in `piece`-sized writes, then EOF) and returns
/// every frame the server sent before it closed. Panics if the server does not finish.
async fn serve_bytes(input: &[u8], piece: usize) -> Vec<Bytes> {
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let server = Server::new().add_service(FuzzService);
    let (mut read, mut write) = tokio::io::split(client_io);
    let feed = async move {
        for chunk in input.chunks(piece.max(1)) {
            // The server may close first (a protocol violation): the rest is not needed.
            if write.write_all(chunk).await.is_err() {
                return;
            }
        }
        let _ = write.shutdown().await;
    };
    let collect = async move {
        let mut bytes = Vec::new();
        read.read_to_end(&mut bytes).await.expect("in-memory reads do not fail");
        bytes
    };
    let run = async { tokio::join!(server.serve_connection(duplex_connection(server_io)), feed, collect).2 };
    let bytes = tokio::time::timeout(BOUND, run).await.expect("the server connection did not finish");
    let codec = LengthDelimited::new(MAX_FRAME_LEN);
    let mut buf = BytesMut::from(&bytes[..]);
    let mut frames = Vec::new();
    while let Some(frame) = codec.decode(&mut buf).expect("the server's frames fit its maximum") {
        frames.push(frame);
    }
    assert!(buf.is_empty(), "the server closed in the middle of a frame");
    frames
}

/// A connection to a server of the harness's service over an in-memory pipe, and the future
/// that serves it: for tests of the client engine against the real server engine.
#[cfg(test)]
pub(crate) fn served_connection() -> (Connection, impl Future<Output = ()>) {
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let server = Server::new().add_service(FuzzService);
    (duplex_connection(client_io), async move { server.serve_connection(duplex_connection(server_io)).await })
}

fn duplex_connection(io: tokio::io::DuplexStream) -> Connection {
    let (read, write) = tokio::io::split(io);
    let (sender, receiver) = stream::framed(read, write, MAX_FRAME_LEN);
    Connection {
        sender: Box::new(sender),
        receiver: Box::new(receiver),
        info: ConnectionInfo::new("fuzz", "fuzz://peer", MAX_FRAME_LEN),
    }
}

/// Runs `future` on a runtime of its own, dropped afterwards with every task still on it, so
/// that nothing one input started outlives it (inputs stay independent and reproducible, and a
/// leak checker sees each input's memory freed).
fn block_on<F: Future>(future: F) -> F::Output {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("a tokio runtime");
    runtime.block_on(future)
}

#[cfg(test)]
mod tests;
