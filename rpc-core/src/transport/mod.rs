//! What the engines need from a transport: a [`Connection`] that moves whole frames in both
//! directions at once, and a [`Listener`] that accepts them.
//!
//! The traits are poll-based and object-safe so that one binary can pick a mechanism at run time
//! (`Box<dyn FrameSender>`), and so that the client engine can poll the receiving half from inside
//! a caller's own future (the caller that is waiting reads its answer itself: no hop through
//! another task). Every mechanism gets both halves from the one frame driver in [`stream`]:
//! sockets and pipes as they are, shared-memory rings and message queues through a byte
//! sink/source of their own.

pub mod stream;
pub mod transient;

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;

use crate::loan::Lender;
use crate::wire::Encoded;

/// The backpressure limit of every transport: a sender's `poll_ready` pushes queued bytes to
/// the peer before it takes more once this many wait. Enough for the largest batch the engines
/// write at once, small enough that a peer that stops reading holds little memory per
/// connection.
pub const HIGH_WATER: usize = 256 * 1024;

/// The sending half of a connection. Frames are queued with [`start_send`](Self::start_send) and
/// pushed to the peer by [`poll_flush`](Self::poll_flush); bytes already queued stay queued if the
/// future that was flushing is dropped, so the next flush carries on where it stopped.
pub trait FrameSender: Send + 'static {
    /// Ready when another frame may be queued (queued bytes are under the transport's limit).
    /// May flush to make room.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;

    /// Queues one whole frame. Call after `poll_ready` returned `Ready(Ok)`.
    fn start_send(&mut self, frame: Bytes) -> io::Result<()>;

    /// Queues one whole frame given in parts (the engines send every frame this way; see
    /// [`Encoded`]). The default joins the parts (a copy if there are several, or if the frame
    /// is one of the small ones [`Encoded`] holds in place) and calls
    /// [`start_send`](Self::start_send); a sender that can write the parts as they are (the
    /// byte-stream driver in [`stream`] writes them vectored) overrides it, and a sender that
    /// wraps another forwards it.
    fn start_send_parts(&mut self, frame: Encoded) -> io::Result<()> {
        self.start_send(frame.into_bytes())
    }

    /// Whether a queued frame is already on its way to the peer when
    /// [`start_send_parts`](Self::start_send_parts) returns, leaving a flush nothing to do while
    /// the peer keeps up (a shared-memory ring written through). The client engine then sends a
    /// call under load as it would send a lone one, rather than leaving its flush to the
    /// connection's flushing task, which writes the requests of the callers ready at once
    /// together: there is no write for them to share.
    ///
    /// A sender that says so promises two things the engines rely on: its
    /// [`unsent_len`](Self::unsent_len) is exact, and what it took (everything but those bytes)
    /// needs no [`poll_flush`](Self::poll_flush). When a frame leaves whole (`unsent_len` is 0
    /// after it is queued) the engines count it flushed without calling `poll_flush`.
    fn sends_at_once(&self) -> bool {
        false
    }

    /// Pushes every queued frame to the peer.
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;

    /// Flushes, then tells the peer no more frames follow (EOF on streams).
    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;

    /// Bytes queued here that the peer has not taken yet. With
    /// [`bytes_written`](Self::bytes_written) it lets the server notice a peer that stopped
    /// reading (see `ServerOptions::send_timeout`) to the byte; for mechanisms that keep the
    /// defaults (0) the server goes by whether `poll_ready`/`poll_flush` stay pending instead,
    /// so a frame that takes longer than the timeout to leave counts as a stall there.
    fn unsent_len(&self) -> usize {
        0
    }

    /// Bytes handed to the peer so far (a counter that only grows).
    fn bytes_written(&self) -> u64 {
        0
    }
}

/// The receiving half of a connection.
pub trait FrameReceiver: Send + 'static {
    /// The next whole frame; `Ok(None)` when the peer closed the connection cleanly between
    /// frames. A frame above the maximum length is an error wrapping
    /// [`FrameTooLarge`](crate::wire::FrameTooLarge); after any error the connection is unusable.
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Bytes>>>;

    /// How many bytes of a frame that has begun to arrive but is not complete are held here.
    /// The server watches it to close a connection that stalls in the middle of a frame (see
    /// `ServerOptions::frame_timeout`); mechanisms that only ever hold whole frames keep the
    /// default, 0.
    fn partial_frame_len(&self) -> usize {
        0
    }
}

/// Facts about a connection, for errors, logs and access control.
///
/// `#[non_exhaustive]`: transports build it with [`ConnectionInfo::new`] and the `with_` setters,
/// so that facts can be added without breaking them; everyone else reads the fields.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionInfo {
    /// The mechanism, e.g. `"tcp"`.
    pub transport: &'static str,
    /// The peer, as an address string where it has one (`tcp://127.0.0.1:50312`).
    pub peer: String,
    /// The largest frame either side may send; frames above it are refused.
    pub max_frame_len: usize,
    /// Who the peer process is, where the mechanism can tell: `local://`, `unix://` and `shm://`
    /// (its setup socket) ask the kernel (`SO_PEERCRED`), `spawn:` knows its child (and the
    /// child its parent), `mem://` is this process. `None` for `tcp://`, `fifo://` and `mq://`.
    pub peer_credentials: Option<PeerCredentials>,
    /// Who the peer is as its verified certificate says: `tls://` with mutual TLS (on the
    /// listener's side, the client's certificate; on the client's side, the server's). `None`
    /// elsewhere.
    pub peer_identity: Option<PeerIdentity>,
    /// The connection's lender: set by transports that lend memory the connection sends from
    /// without copying (`shm://`), so that handlers fill payloads in place (see [`crate::loan`]).
    /// `None` elsewhere.
    pub lender: Option<Lender>,
}

impl ConnectionInfo {
    /// Facts about a connection over `transport` to `peer` (no peer credentials).
    pub fn new(transport: &'static str, peer: impl Into<String>, max_frame_len: usize) -> Self {
        Self { transport, peer: peer.into(), max_frame_len, peer_credentials: None, peer_identity: None, lender: None }
    }

    /// Sets [`peer_identity`](Self::peer_identity).
    #[must_use]
    pub fn with_peer_identity(mut self, identity: Option<PeerIdentity>) -> Self {
        self.peer_identity = identity;
        self
    }

    /// Sets [`peer_credentials`](Self::peer_credentials).
    #[must_use]
    pub fn with_peer_credentials(mut self, credentials: Option<PeerCredentials>) -> Self {
        self.peer_credentials = credentials;
        self
    }

    /// Sets [`lender`](Self::lender).
    #[must_use]
    pub fn with_lender(mut self, lender: Option<Lender>) -> Self {
        self.lender = lender;
        self
    }
}

/// The identity of the peer of a connection as its certificate states it, after the transport
/// verified the certificate against its trusted roots (`tls://`). Server handlers read it
/// through [`CallContext::peer_identity`](crate::context::CallContext::peer_identity).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct PeerIdentity {
    /// The certificate's subject as a distinguished name, e.g. `CN=alice, O=Example`.
    pub subject: String,
    /// The certificate's subject alternative names, each with its kind: `DNS:alice.example`,
    /// `IP:10.0.0.1`, `email:alice@example.com`, `URI:spiffe://example/alice`.
    pub names: Vec<String>,
}

impl PeerIdentity {
    /// An identity with the given subject and alternative names.
    pub fn new(subject: impl Into<String>, names: Vec<String>) -> Self {
        Self { subject: subject.into(), names }
    }
}

/// The identity of the process at the other end of a local connection, as the kernel reported
/// it when the connection was made (`SO_PEERCRED` on Linux): the user and group it ran as, and
/// its process id where known. Server handlers read it through
/// [`CallContext`](crate::context::CallContext).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct PeerCredentials {
    /// Effective user id.
    pub uid: u32,
    /// Effective group id.
    pub gid: u32,
    /// Process id; `None` where the platform does not report it.
    pub pid: Option<u32>,
}

impl PeerCredentials {
    /// Credentials of a peer running as `uid`/`gid`, with process id `pid` where known.
    pub fn new(uid: u32, gid: u32, pid: Option<u32>) -> Self {
        Self { uid, gid, pid }
    }
}

/// One established connection: both halves, usable at the same time from different tasks.
pub struct Connection {
    /// The sending half.
    pub sender: Box<dyn FrameSender>,
    /// The receiving half.
    pub receiver: Box<dyn FrameReceiver>,
    /// Facts about the connection.
    pub info: ConnectionInfo,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection").field("info", &self.info).finish_non_exhaustive()
    }
}

/// A boxed future, as returned by [`Listener::accept`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Accepts connections for a server.
pub trait Listener: Send + 'static {
    /// Waits for the next connection. Must be cancel-safe: dropping the future loses no
    /// connection (the server drops it when shutting down).
    fn accept(&mut self) -> BoxFuture<'_, io::Result<Connection>>;

    /// The address a client passes to `connect` to reach this listener, with any port chosen by
    /// the OS filled in (`tcp://127.0.0.1:41234`).
    fn local_addr(&self) -> String;
}

impl Listener for Box<dyn Listener> {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<Connection>> {
        (**self).accept()
    }

    fn local_addr(&self) -> String {
        (**self).local_addr()
    }
}

/// `recv().await` for any [`FrameReceiver`].
pub fn recv<R: FrameReceiver + ?Sized>(receiver: &mut R) -> impl Future<Output = io::Result<Option<Bytes>>> + '_ {
    std::future::poll_fn(move |cx| receiver.poll_recv(cx))
}

/// Queues and flushes one frame on any [`FrameSender`].
pub async fn send<S: FrameSender + ?Sized>(sender: &mut S, frame: Bytes) -> io::Result<()> {
    std::future::poll_fn(|cx| sender.poll_ready(cx)).await?;
    sender.start_send(frame)?;
    std::future::poll_fn(|cx| sender.poll_flush(cx)).await
}

/// Flushes and closes any [`FrameSender`].
pub async fn close<S: FrameSender + ?Sized>(sender: &mut S) -> io::Result<()> {
    std::future::poll_fn(|cx| sender.poll_close(cx)).await
}
