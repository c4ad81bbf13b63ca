//! `mem://name`: connections between tasks of one process, over in-memory channels.
//!
//! Listeners register their name in a process-wide registry; `connect` builds a pair of channels
//! (one per direction) carrying whole frames as [`Bytes`] (no copy, no framing) and hands the
//! server's end to the listener. Each direction is bounded by the bytes queued in it, not by a
//! frame count, so that backpressure means the same as on a socket: `poll_ready` is pending
//! while more than [`HIGH_WATER`] bytes wait for the peer to read them.

use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use rpc_core::transport::{BoxFuture, Connection, ConnectionInfo, FrameReceiver, FrameSender, Listener, HIGH_WATER};
use rpc_core::wire::FrameTooLarge;
use tokio::sync::mpsc;

use crate::options::TransportOptions;

/// Connections a listener may hold before it accepts them; `connect` fails beyond that, as a
/// socket's backlog would.
const BACKLOG: usize = 1024;
/// What a frame costs on top of its bytes, so that a flood of empty frames is bounded too.
const FRAME_COST: usize = 64;

/// Live listeners by name. A `BTreeMap` because its `new` is `const`.
static REGISTRY: Mutex<BTreeMap<String, Registered>> = Mutex::new(BTreeMap::new());
static NEXT_LISTENER_ID: AtomicU64 = AtomicU64::new(0);

struct Registered {
    /// Tells a listener's `Drop` apart from a later listener of the same name.
    id: u64,
    incoming: mpsc::Sender<Ends>,
}

fn registry() -> MutexGuard<'static, BTreeMap<String, Registered>> {
    // The map stays consistent even if a thread panicked while holding the lock (every update
    // is a single insert or remove), so a poisoned lock is safe to use.
    REGISTRY.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Registers a listener for `name`.
pub(crate) fn listen(name: &str, options: &TransportOptions) -> io::Result<MemListener> {
    let mut registry = registry();
    if registry.get(name).is_some_and(|live| !live.incoming.is_closed()) {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "another listener in this process already uses this name",
        ));
    }
    let (incoming, accept) = mpsc::channel(BACKLOG);
    let id = NEXT_LISTENER_ID.fetch_add(1, Ordering::Relaxed);
    registry.insert(name.to_owned(), Registered { id, incoming });
    Ok(MemListener { name: name.to_owned(), id, accept, max_frame_len: options.effective_max_frame_len() })
}

/// Connects to the listener registered as `name`.
pub(crate) fn connect(name: &str, options: &TransportOptions) -> io::Result<Connection> {
    let refused = || io::Error::new(io::ErrorKind::ConnectionRefused, "no listener with this name in this process");
    let incoming = registry().get(name).map(|live| live.incoming.clone()).ok_or_else(refused)?;
    let (client_sender, server_receiver) = channel();
    let (server_sender, client_receiver) = channel();
    incoming.try_send(Ends { sender: server_sender, receiver: server_receiver }).map_err(|e| match e {
        mpsc::error::TrySendError::Full(_) => io::Error::new(
            io::ErrorKind::WouldBlock,
            format!("the listener already has {BACKLOG} connections waiting to be accepted"),
        ),
        mpsc::error::TrySendError::Closed(_) => refused(),
    })?;
    let ends = Ends { sender: client_sender, receiver: client_receiver };
    Ok(ends.into_connection(name, options.effective_max_frame_len()))
}

/// A `mem://` listener. Dropping it frees the name and drops the connections not yet accepted
/// (their clients then read `Ok(None)`).
#[derive(Debug)]
pub(crate) struct MemListener {
    name: String,
    id: u64,
    accept: mpsc::Receiver<Ends>,
    max_frame_len: usize,
}

impl Listener for MemListener {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<Connection>> {
        // `mpsc::Receiver::recv` is cancel-safe: a connection is either returned or stays queued.
        Box::pin(async move {
            match self.accept.recv().await {
                Some(ends) => Ok(ends.into_connection(&self.name, self.max_frame_len)),
                // Unreachable while the registry holds our sender, which only our Drop removes;
                // an error rather than a panic all the same.
                None => Err(io::Error::new(io::ErrorKind::NotConnected, "the mem:// listener was unregistered")),
            }
        })
    }

    fn local_addr(&self) -> String {
        format!("mem://{}", self.name)
    }
}

impl Drop for MemListener {
    fn drop(&mut self) {
        let mut registry = registry();
        if registry.get(&self.name).is_some_and(|entry| entry.id == self.id) {
            registry.remove(&self.name);
        }
    }
}

/// A `mem://` peer is this very process.
fn ourselves() -> Option<rpc_core::transport::PeerCredentials> {
    #[cfg(unix)]
    return Some(crate::credentials::same_user_as_us(std::process::id()));
    #[cfg(not(unix))]
    return None;
}

/// One side's halves before the side's maximum frame length is known (the server's comes from
/// its listener).
#[derive(Debug)]
struct Ends {
    sender: MemSender,
    receiver: MemReceiver,
}

impl Ends {
    fn into_connection(mut self, name: &str, max_frame_len: usize) -> Connection {
        self.sender.max_frame_len = max_frame_len;
        self.receiver.max_frame_len = max_frame_len;
        Connection {
            sender: Box::new(self.sender),
            receiver: Box::new(self.receiver),
            info: ConnectionInfo::new("mem", format!("mem://{name}"), max_frame_len).with_peer_credentials(ourselves()),
        }
    }
}

/// One direction: an unbounded channel of frames, bounded by the byte accounting in [`Flow`].
fn channel() -> (MemSender, MemReceiver) {
    let (tx, rx) = mpsc::unbounded_channel();
    let flow = Arc::new(Flow::default());
    (MemSender { tx: Some(tx), flow: Arc::clone(&flow), max_frame_len: 0 }, MemReceiver { rx, flow, max_frame_len: 0 })
}

/// Shared by the two ends of one direction.
#[derive(Debug, Default)]
struct Flow {
    /// Bytes (plus [`FRAME_COST`] per frame) sent and not yet received.
    queued: AtomicUsize,
    /// The receiving end was dropped: sending is pointless.
    receiver_gone: AtomicBool,
    /// The sender waiting in `poll_ready` for `queued` to fall below [`HIGH_WATER`].
    sender_waker: AtomicWaker,
}

#[derive(Debug)]
struct MemSender {
    /// `None` once closed; dropping it is what ends the peer's stream of frames.
    tx: Option<mpsc::UnboundedSender<Bytes>>,
    flow: Arc<Flow>,
    max_frame_len: usize,
}

fn peer_gone() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the peer closed the connection")
}

fn closed_by_us() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "the sending half was already closed")
}

impl FrameSender for MemSender {
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.tx.is_none() {
            return Poll::Ready(Err(closed_by_us()));
        }
        if self.flow.queued.load(Ordering::SeqCst) >= HIGH_WATER {
            // Register, then look again: the receiver may have drained the queue in between,
            // and it only wakes us when it crosses the mark.
            self.flow.sender_waker.register(cx.waker());
            if self.flow.queued.load(Ordering::SeqCst) >= HIGH_WATER && !self.flow.receiver_gone.load(Ordering::SeqCst)
            {
                return Poll::Pending;
            }
        }
        if self.flow.receiver_gone.load(Ordering::SeqCst) {
            return Poll::Ready(Err(peer_gone()));
        }
        Poll::Ready(Ok(()))
    }

    fn start_send(&mut self, frame: Bytes) -> io::Result<()> {
        if frame.len() > self.max_frame_len {
            return Err(FrameTooLarge { size: frame.len() as u64, max: self.max_frame_len as u64 }.into());
        }
        let tx = self.tx.as_ref().ok_or_else(closed_by_us)?;
        // Count before sending, so the receiver never subtracts what was not yet added.
        self.flow.queued.fetch_add(frame.len() + FRAME_COST, Ordering::SeqCst);
        tx.send(frame).map_err(|_| peer_gone())
    }

    fn poll_flush(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // A sent frame is already in the peer's queue: there is nothing to push.
        Poll::Ready(Ok(()))
    }

    fn poll_close(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.tx = None;
        Poll::Ready(Ok(()))
    }
}

#[derive(Debug)]
struct MemReceiver {
    rx: mpsc::UnboundedReceiver<Bytes>,
    flow: Arc<Flow>,
    max_frame_len: usize,
}

impl FrameReceiver for MemReceiver {
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Bytes>>> {
        let Some(frame) = ready!(self.rx.poll_recv(cx)) else {
            // Every sender is gone (closed or dropped) and the queue is drained.
            return Poll::Ready(Ok(None));
        };
        let cost = frame.len() + FRAME_COST;
        let before = self.flow.queued.fetch_sub(cost, Ordering::SeqCst);
        if before >= HIGH_WATER && before - cost < HIGH_WATER {
            self.flow.sender_waker.wake();
        }
        // The peer may have been configured with a larger maximum than ours.
        if frame.len() > self.max_frame_len {
            // The connection is unusable after an error: tell the sender at once.
            self.rx.close();
            self.flow.receiver_gone.store(true, Ordering::SeqCst);
            self.flow.sender_waker.wake();
            return Poll::Ready(Err(FrameTooLarge { size: frame.len() as u64, max: self.max_frame_len as u64 }.into()));
        }
        Poll::Ready(Ok(Some(frame)))
    }
}

impl Drop for MemReceiver {
    fn drop(&mut self) {
        self.flow.receiver_gone.store(true, Ordering::SeqCst);
        self.flow.sender_waker.wake();
    }
}
