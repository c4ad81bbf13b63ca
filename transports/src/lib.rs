//! The mechanisms that carry the rpc framework's frames, selected at run time by an address
//! string.
//!
//! [`connect`] and [`listen`] parse an address, pick the mechanism it names and return the
//! engines' transport types ([`Connection`], [`Listener`]), so a program, a test or a user
//! switches mechanism by changing a string:
//!
//! | address | mechanism | who can connect | platforms |
//! |---|---|---|---|
//! | `tcp://host:port` | TCP with `TCP_NODELAY`; `host` is a name, an IPv4 address or a bracketed IPv6 address (`tcp://[::1]:4000`); port 0 picks a free port | any host | all |
//! | `tls://host:port` | TLS 1.2/1.3 (rustls) over TCP as `tcp://`; the server's certificate is checked against the client's roots (Mozilla's by default) and the host name; optional mutual TLS whose verified client identity handlers read from the call context (see [`TlsOptions`]) | any host | all |
//! | `local://name` | a local socket: an abstract-namespace Unix socket on Linux (nothing on disk), a socket file `/tmp/name` on other Unix systems, a named pipe `\\.\pipe\name` on Windows | same machine; by default only the same user (see [`TransportOptions::mode`]) | Unix, Windows |
//! | `shm://name` | shared-memory rings, one per direction per connection, in a sealed memfd passed over the local socket `rpc-shm.<name>` (abstract namespace), which stays open to report the peer's exit; see the `shm` module notes below | same machine; by default only the same user (see [`TransportOptions::mode`]) | Linux |
//! | `unix:///abs/path.sock` | a Unix domain socket at a file path, created with mode 0600; a stale file left by a crashed server is reclaimed, a live server is never displaced | same machine, file permissions | Unix |
//! | `fifo:///dir/name` | named FIFOs: a connect FIFO at the path (mode 0600), a private FIFO pair per connection, unlinked as soon as both sides opened it (see the `fifo` module notes below) | same machine, file permissions | Unix |
//! | `spawn:/path/to/program?arg1&arg2` | a child process started by `connect`, spoken to over its stdin/stdout pipes; the parent owns its lifetime. Arguments are `&`-separated and %-decoded; a bare program name is looked up in `PATH`. See [`spawn`] for the child's side and the rules | the parent and its child | Unix |
//! | `mq://name` | POSIX message queues: a connect queue `/name` (mode 0600), a private queue pair per connection, unlinked as soon as both sides opened it; the framed byte stream goes in messages (frames larger than one message span several); a peer that dies is noticed through a pidfd (see the `mq` module notes below) | same machine, same user | Linux |
//! | `mem://name` | in-process channels | same process | all |
//!
//! `fifo://`: many clients may connect at once; each writes one 64-byte connect record into the
//! connect FIFO, atomically (it is under `PIPE_BUF`), and each private FIFO has a single writer,
//! so frames never interleave. A stale connect FIFO left by a crashed server is reclaimed, a live
//! one is never displaced; nothing else stays on disk after a crash of either side. Pipes and
//! FIFOs get a 1 MiB kernel buffer where the OS allows (`F_SETPIPE_SZ` on Linux).
//!
//! `shm://`: nothing is created in `/dev/shm` or on disk, so nothing can leak. A waiting side
//! polls its ring for up to [`ShmOptions::spin`] (adaptive) before it sleeps on a socket
//! the peer rings only when it knows we sleep, so calls between busy peers make no system
//! calls. Every index and length read from the shared memory is checked before use; a peer
//! that corrupts it fails its own connection with an `InvalidData` error. Frames larger than
//! [`ShmOptions::ring_size`] stream through the ring in pieces.
//!
//! `mq://`: the kernel caps queue depth and message size (`/proc/sys/fs/mqueue`) and the bytes
//! of all queues of one user (`RLIMIT_MSGQUEUE`, `ulimit -q`, often 800 KiB); each connection's
//! queues take the largest of a few shapes that still fits (about 17 KiB per connection, down to
//! under 2 KiB), and an error names the limit when none does. A queue does not report a dead
//! peer, so each side watches the other's process through a pidfd, and says so with a close
//! message when it drops a connection; pending calls fail promptly after a SIGKILL of either
//! side. Nothing is left in the queue namespace after a crash, except the connect queue of a
//! killed server, which the next server on that name reclaims (a live one is never displaced).
//!
//! Sockets, pipes and queues (`tcp://`, `tls://`, `unix://`, `local://`, `fifo://`, `spawn:`,
//! `mq://`, on Unix): a side that finds nothing to read lets the other tasks of its thread run,
//! then looks again with non-blocking system calls for up to [`TransportOptions::spin`]
//! (adaptive) before it sleeps, since waking a sleeping thread across cores costs more than most
//! answers take to come back; an idle connection costs no CPU.
//!
//! Schemes the platform lacks (`shm://` and `mq://` off Linux, `unix://`, `fifo://` and
//! `spawn:` off Unix) are recognised and refused with a clear [`RpcError::Address`].
//! [`SCHEMES`] lists what this build supports.
//!
//! The `rpc-tarpc` crate (the facade's `tarpc` feature, `rpc::tarpc`) turns any of these
//! connections into a tarpc transport, so existing `#[tarpc::service]` traits run over every
//! mechanism above.
//!
//! Every mechanism but `mem://` (which carries whole frames) frames its bytes with the one frame
//! driver of [`rpc_core::transport::stream`]: sockets and pipes directly, the `shm://` rings and
//! the `mq://` queues as byte streams of their own. Every mechanism refuses frames
//! above [`TransportOptions::max_frame_len`] on both the sending and the receiving side.
//!
//! ```no_run
//! # async fn run() -> Result<(), rpc_core::error::RpcError> {
//! use rpc_core::transport::{recv, send, Listener};
//!
//! let mut listener = rpc_transports::listen("tcp://127.0.0.1:0").await?;
//! let addr = listener.local_addr(); // the port the OS picked
//! let mut client = rpc_transports::connect(&addr).await?;
//! let mut server = listener.accept().await?;
//! send(&mut *client.sender, bytes::Bytes::from_static(b"hello")).await?;
//! assert_eq!(recv(&mut *server.receiver).await?.as_deref(), Some(&b"hello"[..]));
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

#[cfg(unix)]
mod accept;
mod address;
mod context;
#[cfg(unix)]
mod credentials;
#[cfg(unix)]
mod endpoint;
#[cfg(unix)]
mod fifo;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
#[cfg(any(target_os = "linux", target_os = "android"))]
mod liveness;
mod local;
mod mem;
#[cfg(target_os = "linux")]
mod mq;
mod options;
#[cfg(unix)]
mod pipes;
pub mod registry;
#[cfg(unix)]
mod rendezvous;
#[cfg(any(target_os = "linux", target_os = "android"))]
mod shm;
#[cfg(unix)]
pub mod spawn;
#[cfg(unix)]
mod spin;
#[cfg(unix)]
mod spin_read;
mod tcp;
mod tls;
#[cfg(unix)]
mod unix;
#[cfg(unix)]
mod watch;

pub use address::{Address, SCHEMES};
pub use options::{
    ShmOptions, TlsOptions, TransportOptions, DEFAULT_RING_SIZE, DEFAULT_SLAB_SIZE, DEFAULT_SPIN, MAX_RING_SIZE,
    MAX_SLAB_SIZE, MIN_RING_SIZE, MIN_SLAB_SIZE,
};
pub use tls::options::TlsParams;

use rpc_core::error::RpcError;
use rpc_core::transport::{Connection, Listener};

/// Connects to `addr` with default [`TransportOptions`].
///
/// Errors: [`RpcError::Address`] for an address this build cannot use; otherwise the I/O error,
/// with a message naming the address (`connecting to tcp://127.0.0.1:1: connection refused`).
pub async fn connect(addr: &str) -> Result<Connection, RpcError> {
    connect_with(addr, &TransportOptions::default()).await
}

/// Connects to `addr` with the given options.
pub async fn connect_with(addr: &str, options: &TransportOptions) -> Result<Connection, RpcError> {
    Address::parse(addr)?.connect(options).await
}

/// Listens on `addr` with default [`TransportOptions`]. [`Listener::local_addr`] of the result
/// is the address clients connect to, with any port the OS chose filled in.
pub async fn listen(addr: &str) -> Result<Box<dyn Listener>, RpcError> {
    listen_with(addr, &TransportOptions::default()).await
}

/// Listens on `addr` with the given options.
pub async fn listen_with(addr: &str, options: &TransportOptions) -> Result<Box<dyn Listener>, RpcError> {
    Address::parse(addr)?.listen(options).await
}

impl Address {
    /// Connects to this address.
    pub async fn connect(&self, options: &TransportOptions) -> Result<Connection, RpcError> {
        let scheme = self.registered();
        let Some(driver) = scheme.driver else { return Err(address::unsupported_here(scheme)) };
        (driver.connect)(self, options).await.map_err(|e| context::error("connecting to", self, e))
    }

    /// Starts listening on this address.
    pub async fn listen(&self, options: &TransportOptions) -> Result<Box<dyn Listener>, RpcError> {
        let scheme = self.registered();
        let Some(driver) = scheme.driver else { return Err(address::unsupported_here(scheme)) };
        let Some(listen) = driver.listen else {
            return Err(RpcError::Address(format!(
                "cannot listen on `{self}`: a spawn: address is connected to (the parent starts the \
                 child); the child serves its own stdin/stdout (`rpc_transports::spawn::stdio`)"
            )));
        };
        listen(self, options).await.map_err(|e| context::error("listening on", self, e))
    }
}
