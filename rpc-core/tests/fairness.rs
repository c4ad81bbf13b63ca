//! A call answered while a stream is read on the same connection runs at once, even when the
//! stream's frames never run out: as over a shared-memory ring that the server keeps full,
//! where a read never waits (so it never yields to the scheduler either).
//!
//! The server here is a script behind a hand-written transport whose receiver always has a
//! frame ready while the stream has credit, and which takes the client's credit at once, so
//! nothing in the transport ever makes the reading task yield.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use rpc_core::descriptor::{method_id, MethodDescriptor, ServiceDescriptor};
use rpc_core::transport::{Connection, ConnectionInfo, FrameReceiver, FrameSender};
use rpc_core::wire::{self, Frame, HelloReply, ItemsWriter, ResponsePayload};
use rpc_core::{CallOptions, Client, ClientOptions};

static METHODS: [MethodDescriptor; 2] = [
    MethodDescriptor { name: "numbers", id: method_id("numbers"), signature: "() -> Stream<Vec<u8>>" },
    MethodDescriptor { name: "add", id: method_id("add"), signature: "(i64, i64) -> i64" },
];
static SVC: ServiceDescriptor = ServiceDescriptor { name: "Fair", methods: &METHODS };

/// Stream items the script sends at most: the stream then waits for ever.
const LIMIT: u64 = 2_000;
const ITEM: usize = 1000;

#[derive(Default)]
struct Script {
    /// Frames to hand the client before any more stream items.
    next: VecDeque<Bytes>,
    /// The stream's call id, once the client asked for it.
    stream: Option<u64>,
    /// Credit the client granted the stream, and item bytes sent against it.
    granted: u64,
    spent: u64,
    items_sent: u64,
    /// The client's reader, waiting for a frame.
    waker: Option<Waker>,
}

struct Sender(Arc<Mutex<Script>>);
struct Receiver(Arc<Mutex<Script>>);

impl FrameSender for Sender {
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn start_send(&mut self, frame: Bytes) -> io::Result<()> {
        let mut script = self.0.lock().unwrap();
        match wire::decode(&frame).expect("the client sends well-formed frames") {
            Frame::Hello { hello, .. } => {
                script.granted = u64::from(hello.expect("our version").stream_window);
                let reply = HelloReply::Accepted { stream_window: wire::DEFAULT_STREAM_WINDOW };
                script.next.push_back(wire::encode_hello_reply(&reply).into());
            }
            Frame::Request { header, .. } if header.method == METHODS[0].id => {
                script.stream = Some(header.id);
                script.next.push_back(ResponsePayload::encode(&()).unwrap().into_frame(header.id).into_bytes());
            }
            Frame::Request { header, args, .. } => {
                let (a, b): (i64, i64) = wire::decode_value(args).unwrap();
                script.next.push_back(ResponsePayload::encode(&(a + b)).unwrap().into_frame(header.id).into_bytes());
            }
            Frame::Credit { bytes, .. } => script.granted += u64::from(bytes),
            _ => {}
        }
        if let Some(waker) = script.waker.take() {
            waker.wake();
        }
        Ok(())
    }

    fn poll_flush(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl FrameReceiver for Receiver {
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Bytes>>> {
        let mut script = self.0.lock().unwrap();
        if let Some(frame) = script.next.pop_front() {
            return Poll::Ready(Ok(Some(frame)));
        }
        match script.stream {
            Some(id) if script.items_sent < LIMIT && script.spent < script.granted => {
                let mut items = ItemsWriter::new(id);
                items.push(&vec![7u8; ITEM]).unwrap();
                let frame = items.finish().into_bytes();
                script.spent += frame.len() as u64;
                script.items_sent += 1;
                Poll::Ready(Ok(Some(frame)))
            }
            _ => {
                script.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

#[tokio::test]
async fn a_call_is_answered_while_a_stream_that_never_runs_dry_is_read() {
    let script = Arc::new(Mutex::new(Script::default()));
    let conn = Connection {
        sender: Box::new(Sender(Arc::clone(&script))),
        receiver: Box::new(Receiver(Arc::clone(&script))),
        info: ConnectionInfo::new("script", "server", 1 << 20),
    };
    let client = Client::handshake(conn, &SVC, ClientOptions::default()).await.unwrap();
    let none = CallOptions::default();
    let mut numbers =
        client.call_streaming::<_, Vec<u8>>(&METHODS[0], &(), None, &none).await.expect("the stream opens");
    let received = Arc::new(AtomicU64::new(0));
    let drain = tokio::spawn({
        let received = Arc::clone(&received);
        async move {
            while let Some(item) = numbers.next().await {
                assert_eq!(item.expect("an item").len(), ITEM);
                received.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    // This (current-thread) runtime runs the drain until it waits: with frames always ready,
    // that is only once the script stops at LIMIT, unless the engine lets the answered call in.
    let sum = client.call::<_, i64>(&METHODS[1], &(1i64, 2i64), &none).await.expect("the add is answered");
    assert_eq!(sum, 3);
    let at = received.load(Ordering::SeqCst);
    assert!(at < LIMIT / 2, "the add returned only after {at} of the stream's {LIMIT} items were read");
    // The stream goes on after the call.
    while received.load(Ordering::SeqCst) < LIMIT {
        tokio::task::yield_now().await;
    }
    drain.abort();
}
