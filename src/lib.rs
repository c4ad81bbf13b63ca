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
//! supports (tcp, local, unix, fifo, spawn, mem). A worker child started with a `spawn:` address
//! serves with [`serve_stdio`]. Client method futures own their connection handle (`'static +
//! Send`), so they can be stored or given to `tokio::spawn`; each call can carry its own deadline
//! (`calc.with_timeout(d).add(1, 2)`). For a graceful stop on Ctrl-C/SIGTERM pass
//! [`shutdown_signal()`] to [`Server::serve_until`]. This crate is a facade: the engines live in `rpc-core`, the macro in `rpc-macros`,
//! the mechanisms in `rpc-transports`.

pub use rpc_core::client::{CallOptions, Client, ClientOptions};
pub use rpc_core::context::{self, CallContext};
pub use rpc_core::descriptor::{MethodDescriptor, ServiceDescriptor};
pub use rpc_core::error::{CallError, RpcError};
pub use rpc_core::server::{Server, ServerOptions};
pub use rpc_core::service::Service;
pub use rpc_core::transport::{Connection, ConnectionInfo, Listener, PeerCredentials};
pub use rpc_core::{transport, wire};
pub use rpc_macros::service;
pub use rpc_transports as transports;
pub use rpc_transports::{connect, listen};

/// Connects to `addr` and performs the hello exchange for `service`.
///
/// Generated clients call this from their `connect`; it is public for hand-written clients.
pub async fn connect_service(addr: &str, service: &'static ServiceDescriptor) -> Result<Client, RpcError> {
    let conn = rpc_transports::connect(addr).await?;
    Client::handshake(conn, service, ClientOptions::default()).await
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

/// What `#[service]`-generated code refers to. Not a stable API.
#[doc(hidden)]
pub mod __private {
    pub use rpc_core::client::{CallOptions, Client};
    pub use rpc_core::descriptor::{method_id, MethodDescriptor, ServiceDescriptor};
    pub use rpc_core::error::{CallError, RpcError};
    pub use rpc_core::service::{decode_args, handler, unknown_method, HandlerFuture, Service};
    pub use rpc_core::transport::Connection;
    pub use rpc_core::wire::RemoteError;
    pub use serde;

    pub use crate::connect_service;
}
