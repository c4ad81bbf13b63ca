//! Typed RPC between processes: annotate a trait with [`#[service]`](service), implement it,
//! serve it on an address, and call it from another process like a local async function.
//!
//! ```no_run
//! use rpc::service;
//!
//! #[service]
//! pub trait Calculator {
//!     /// Adds two numbers.
//!     async fn add(&self, a: i64, b: i64) -> i64;
//! }
//!
//! struct Calc;
//! impl Calculator for Calc {
//!     async fn add(&self, a: i64, b: i64) -> i64 {
//!         a + b
//!     }
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // In the server process:
//! let listener = rpc::listen("tcp://127.0.0.1:12345").await?;
//! tokio::spawn(rpc::Server::new().add_service(Calc.into_service()).serve(listener));
//!
//! // In the client process:
//! let calc = CalculatorClient::connect("tcp://127.0.0.1:12345").await?;
//! assert_eq!(calc.add(1, 2).await?, 3);
//! # Ok(()) }
//! ```
//!
//! The address picks the mechanism at run time; see [`transports`] for the schemes this build
//! supports (tcp, tls, local, shm, unix, fifo, spawn, mq, mem). A worker child started with a
//! `spawn:` address serves with [`serve_stdio`]. Client method futures own their connection
//! handle (`'static + Send`), so they can be stored or given to `tokio::spawn`; each call can
//! carry its own deadline (`calc.with_timeout(d).add(1, 2)`), and a client can have a default
//! one for all its calls (`CalculatorClient::connect_with(addr, ClientOptions::new().call_timeout(d))`,
//! see [`ClientOptions`]). For a graceful stop on Ctrl-C/SIGTERM pass [`shutdown_signal()`] to
//! [`Server::serve_until`]. With the `tarpc` feature, `rpc::tarpc` (the `rpc-tarpc` crate,
//! also at `rpc::transports::tarpc`) runs existing `#[tarpc::service]` traits over every
//! transport (see the README, "Coming from tarpc").
//!
//! A method streams when an argument or its return type is a [`Stream<T>`]: the client gets a
//! [`Streaming<T>`] of `Result<T, RpcError>` items, with flow control in both directions (see
//! [`stream`](rpc_core::stream) and the README, "Streams").
//!
//! # What is where
//!
//! The crate root holds what a service's author and its callers use: the [`service`] macro,
//! [`Server`] and [`ServerOptions`], [`ClientOptions`] and [`CallOptions`], the errors
//! ([`RpcError`], [`CallError`], [`CloseCode`]), [`listen`] (the listener a [`Server`] serves), [`Stream`] and
//! [`Streaming`], [`CallContext`] (with [`PeerCredentials`] and [`PeerIdentity`], which a handler reads from it),
//! [`Bytes`], [`serve_stdio`], [`shutdown_signal`] and [`raise_fd_limit`]; and, for hand-written
//! clients and services, [`Client`], [`Service`], the descriptors, [`connect_service_with`] and
//! [`handshake_service_with`].
//!
//! Below it is the layer those are built on, for code that writes a transport, speaks the
//! protocol by hand or takes a connection apart: [`transport`] (the frame-moving traits and
//! types: `Connection`, `ConnectionInfo`, `Listener`, `PeerCredentials`), [`wire`] (the frames
//! and their encoding) and [`transports`] (the mechanisms, the address parser and their
//! `TransportOptions`), with [`transports::connect`], which opens a bare connection to an address
//! (a generated client's `from_connection` takes one). [`listen`] returns that layer's listener;
//! a service needs it only to hand it to the server.
//!
//! # Options
//!
//! [`ServerOptions`], [`ClientOptions`], [`CallOptions`] and
//! [`TransportOptions`](transports::TransportOptions) are built the same way: `new()` (the same
//! as `Default`), then chained setters, each of which names its default. A setter panics, with a
//! message naming the option, on a value nothing could work with (a stream window under the
//! protocol's minimum, a frame limit of 0, no calls in flight, an `shm://` ring size that is not
//! a power of two in range), so a mistake shows where it is made; a value larger than can be used
//! is taken as the largest that can (`Duration::MAX` as "never").
//!
//! This crate is a facade: the engines live in `rpc-core`, the macro in `rpc-macros`, the
//! mechanisms in `rpc-transports`.

pub mod blocking;
mod options;

pub use options::ClientOptions;
pub use rpc_core::bytes::Bytes;
pub use rpc_core::client::{CallOptions, Client, ReconnectOptions, Request, Streaming};
pub use rpc_core::context::{self, CallContext};
pub use rpc_core::descriptor::{MethodDescriptor, ServiceDescriptor};
pub use rpc_core::error::{CallError, RpcError};
pub use rpc_core::layer;
pub use rpc_core::loan::Loan;
pub use rpc_core::server::{Server, ServerOptions};
pub use rpc_core::service::Service;
pub use rpc_core::stream::{Stream, StreamClosed, StreamSender};
pub use rpc_core::telemetry::{self, ServerStats};
/// Also at [`transport::PeerCredentials`]: kept here because a handler reads it from
/// [`CallContext::peer_credentials`].
pub use rpc_core::transport::PeerCredentials;
/// Also at [`transport::PeerIdentity`]: kept here because a handler reads it from
/// [`CallContext::peer_identity`].
pub use rpc_core::transport::PeerIdentity;
pub use rpc_core::wire::CloseCode;
pub use rpc_core::{loan, reflection, schema, transport, wire};
pub use rpc_macros::service;
/// The transports: [`rpc_transports`], and with the `tarpc` feature its tarpc adapter
/// (`rpc::tarpc`, kept here as `rpc::transports::tarpc` too).
pub mod transports {
    #[doc(inline)]
    pub use rpc_transports::*;

    #[cfg(feature = "tarpc")]
    #[doc(no_inline)]
    pub use rpc_tarpc as tarpc;
}
/// tarpc over every transport (feature `tarpc`): the `rpc-tarpc` crate.
#[cfg(feature = "tarpc")]
pub use rpc_tarpc as tarpc;
pub use rpc_transports::listen;

/// Performs the hello exchange for `service` over `conn`, a connection made already (a spawned
/// child's pipes, a socket handed over), with the engine options in `options`: the handshake
/// timeout, the stream window, the default call options. Its transport options and
/// [`reconnect`](ClientOptions::reconnect) do not apply, since there is no address to dial (again);
/// a `reconnect` given here is ignored with a warning in the log.
///
/// Generated clients call this from their `from_connection_with`; it is public for hand-written
/// clients.
pub async fn handshake_service_with(
    conn: transport::Connection,
    service: &'static ServiceDescriptor,
    options: ClientOptions,
) -> Result<Client, RpcError> {
    if options.reconnect_options().is_some() {
        tracing::warn!(
            service = service.name,
            "ClientOptions::reconnect has no effect on a client made from a connection (there is no address to dial)"
        );
    }
    let (client, _transport) = options.into_parts();
    Client::handshake(conn, service, client).await
}

/// Connects to `addr` and performs the hello exchange for `service`, with default options:
/// [`connect_service_with`]`(addr, service, ClientOptions::default())`.
///
/// Generated clients call this from their `connect`; it is public for hand-written clients.
pub async fn connect_service(addr: &str, service: &'static ServiceDescriptor) -> Result<Client, RpcError> {
    connect_service_with(addr, service, ClientOptions::default()).await
}

/// Connects to `addr` with the transport options in `options`, then performs the hello exchange
/// for `service` with its engine options (see [`ClientOptions`]).
///
/// Generated clients call this from their `connect_with`; it is public for hand-written clients.
pub async fn connect_service_with(
    addr: &str,
    service: &'static ServiceDescriptor,
    options: ClientOptions,
) -> Result<Client, RpcError> {
    let reconnect = options.reconnect_options().cloned();
    let (client, transport) = options.into_parts();
    let conn = rpc_transports::connect_with(addr, &transport).await?;
    let first = Client::handshake(conn, service, client.clone()).await?;
    let Some(reconnect) = reconnect else { return Ok(first) };
    // The address is parsed once; each redial connects to it anew and repeats the hello.
    let addr = std::sync::Arc::new(rpc_transports::Address::parse(addr)?);
    let dial: rpc_core::client::Dialer = std::sync::Arc::new(move || {
        let (addr, transport, client) = (addr.clone(), transport.clone(), client.clone());
        Box::pin(async move {
            let conn = addr.connect(&transport).await?;
            Client::handshake(conn, service, client).await
        })
    });
    Ok(first.reconnecting(dial, reconnect))
}

/// A client over several servers of one service, at `addrs` (the transports may differ): each
/// call goes to the less loaded of two live servers picked at random (tower's
/// power-of-two-choices balancer), and a server whose connection dies is left out until it can
/// be reached again (dialed in the background with the backoff of the options'
/// [`ReconnectOptions`], default [`ReconnectOptions::new`]). A call in flight on a server that
/// dies fails with [`RpcError::Disconnected`]; it is not sent again elsewhere. With no server
/// reachable, a call waits up to [`ReconnectOptions::give_up_after`], then fails.
///
/// Connects to every address at once and fails only if none can be reached (with the first
/// address's error). Wrap the result in a generated client with its `from_client`:
///
/// ```no_run
/// # #[rpc::service] pub trait Calculator { async fn add(&self, a: i64, b: i64) -> i64; }
/// # async fn run() -> Result<(), rpc::RpcError> {
/// let addrs = ["tls://10.0.0.1:4000", "tls://10.0.0.2:4000", "tcp://10.0.0.3:4000"];
/// let client = rpc::connect_balanced(&addrs, CalculatorClient::DESCRIPTOR, rpc::ClientOptions::new()).await?;
/// let calc = CalculatorClient::from_client(client);
/// calc.add(1, 2).await?;
/// # Ok(()) }
/// ```
pub async fn connect_balanced(
    addrs: &[&str],
    service: &'static ServiceDescriptor,
    options: ClientOptions,
) -> Result<Client, RpcError> {
    let backoff = options.reconnect_options().cloned().unwrap_or_default();
    let (client, transport) = options.into_parts();
    let mut servers = Vec::new();
    for addr in addrs {
        let parsed = std::sync::Arc::new(rpc_transports::Address::parse(addr)?);
        let (transport, client) = (transport.clone(), client.clone());
        let dial: rpc_core::client::Dialer = std::sync::Arc::new(move || {
            let (addr, transport, client) = (parsed.clone(), transport.clone(), client.clone());
            Box::pin(async move {
                let conn = addr.connect(&transport).await?;
                Client::handshake(conn, service, client).await
            })
        });
        servers.push((addr.to_string(), dial));
    }
    let first_tries: Vec<_> = servers.iter().map(|(_, dial)| dial()).collect();
    let mut first_error = None;
    let mut entries = Vec::new();
    for ((name, dial), outcome) in servers.into_iter().zip(futures_util::future::join_all(first_tries).await) {
        let connected = match outcome {
            Ok(client) => Some(client),
            Err(e) => {
                first_error.get_or_insert(e);
                None
            }
        };
        entries.push((name, dial, connected));
    }
    if entries.iter().all(|(_, _, connected)| connected.is_none()) {
        return Err(first_error.unwrap_or_else(|| RpcError::Address("connect_balanced: no addresses".into())));
    }
    Ok(Client::balanced(entries, backoff))
}

/// Serves `server` over this process's stdin and stdout until the parent closes them (or dies):
/// the child's half of a `spawn:` address. See [`transports::spawn`] for the rule that comes with
/// it (nothing else may use stdout; after this call, stray prints go to stderr).
///
/// ```no_run
/// # async fn run(server: rpc::Server) -> Result<(), rpc::RpcError> {
/// // In the worker's main, when started by the parent with e.g. `spawn:/path/to/worker?--stdio`:
/// rpc::serve_stdio(server).await?;
/// # Ok(()) }
/// ```
#[cfg(unix)]
pub async fn serve_stdio(server: Server) -> Result<(), RpcError> {
    let conn = rpc_transports::spawn::stdio()?;
    server.serve_connection(conn).await;
    Ok(())
}

/// Completes when the process receives Ctrl-C (SIGINT) or, on Unix, SIGTERM: pass it to
/// [`Server::serve_until`] for a graceful shutdown.
///
/// The handlers are installed when this is *called*, not when the future is first polled, so a
/// signal that arrives between the call and the server's first poll (a supervisor that stops a
/// server right after it printed its address) still means "shut down gracefully" instead of
/// the default action, which kills the process. Call it inside a tokio runtime.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate()).ok();
        let int = signal(SignalKind::interrupt()).ok();
        async move {
            let wait = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = wait(term) => {}
                () = wait(int) => {}
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Raises this process's soft limit on open file descriptors (`RLIMIT_NOFILE`) to its hard
/// limit and returns the new soft limit.
///
/// Every connection costs a server one descriptor (a `fifo://` connection two) and a client
/// one, and the usual soft limit is 1024: a server for a thousand clients, or a process holding
/// a thousand client connections, calls this at start. Raising the soft limit up to the hard
/// one needs no privilege. At the limit, a server keeps its connections and retries accepting
/// every 20 ms (waiting clients are served as descriptors free up); a client's `connect` fails
/// with an error that says "too many open files".
///
/// ```no_run
/// let limit = rpc::raise_fd_limit()?;
/// println!("up to {limit} open descriptors");
/// # Ok::<(), std::io::Error>(())
/// ```
#[cfg(unix)]
// `rlim_t` is u64 on Linux and macOS but i64 on some BSDs.
#[allow(clippy::unnecessary_cast)]
pub fn raise_fd_limit() -> std::io::Result<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one `rlimit` into the valid, exclusively borrowed `limit`.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if limit.rlim_cur >= limit.rlim_max {
        return Ok(limit.rlim_cur as u64);
    }
    let mut raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
    // SAFETY: setrlimit only reads the valid `raised`.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        // macOS refuses a soft limit above OPEN_MAX (10240) even when the hard limit is
        // "unlimited".
        raised.rlim_cur = limit.rlim_max.min(10240);
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(raised.rlim_cur as u64)
}

/// What `#[service]`-generated code refers to. Not a stable API.
#[doc(hidden)]
pub mod __private {
    pub use rpc_core::client::{CallOptions, Client, ReconnectOptions, Streaming};
    pub use rpc_core::descriptor::{method_id, MethodDescriptor, ServiceDescriptor};
    pub use rpc_core::error::{CallError, RpcError};
    pub use rpc_core::schema::{Field, MethodKind, SchemaBuilder, ServiceSchema};
    pub use rpc_core::service::{
        decode_args, handler, stream_handler, unknown_method, Call, CallSetup, HandlerFuture, Service,
    };
    pub use rpc_core::stream::EncodedStream;
    pub use rpc_core::transport::Connection;
    pub use rpc_core::wire::RemoteError;
    pub use serde;

    pub use crate::blocking::{block_on, BlockingStreaming};
    pub use crate::{connect_service, connect_service_with, handshake_service_with, ClientOptions};
}
