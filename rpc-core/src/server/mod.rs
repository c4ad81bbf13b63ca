//! The server engine: accepts connections from a [`Listener`], binds each to one of its services
//! through the hello exchange, and runs calls concurrently with a bound on calls in flight.
//!
//! Shutdown is graceful: [`Server::serve_until`] stops accepting when its signal fires, lets
//! in-flight calls finish within [`ServerOptions::shutdown_grace`], cancels the rest (their
//! callers get [`RpcError::Cancelled`](crate::error::RpcError::Cancelled)), tells every client
//! why the connection closes, and returns.

mod connection;
mod permits;
mod watch;
mod woken;

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::layer::{Answer, BoxError, CallRequest, Handlers, Middleware};
use crate::service::Service;
use crate::telemetry::{Counters, ServerStats};
use crate::transport::{Connection, Listener};

/// The most calls [`ServerOptions::max_in_flight`] lets one connection run at once; larger
/// values are taken as this.
pub const MAX_IN_FLIGHT: usize = u32::MAX as usize >> 3;

/// Limits and timeouts of a server, given to [`Server::with_options`].
///
/// Like every options type of the framework ([`ClientOptions`](crate::client::ClientOptions),
/// [`CallOptions`](crate::client::CallOptions), and the transports' `TransportOptions`), it
/// starts from [`ServerOptions::new`] (the same as [`Default`]) and is changed by chained
/// setters, each of which names its default. A setter panics, with a message naming the option,
/// on a value no connection could work with (its `# Panics` section says which); a value larger
/// than the engine can use is taken as the largest it can (`Duration::MAX` means "never").
///
/// ```
/// use std::time::Duration;
/// use rpc_core::ServerOptions;
///
/// let options = ServerOptions::new()
///     .max_in_flight(64)
///     .idle_timeout(Some(Duration::from_secs(300)))
///     .same_uid_only(true);
/// # let _ = rpc_core::Server::new().with_options(options);
/// ```
#[derive(Debug, Clone)]
pub struct ServerOptions {
    max_in_flight: usize,
    handshake_timeout: Duration,
    frame_timeout: Duration,
    idle_timeout: Option<Duration>,
    send_timeout: Duration,
    shutdown_grace: Duration,
    same_uid_only: bool,
    stream_window: u32,
    reflection: bool,
    identity: Option<(String, Option<String>)>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            max_in_flight: 1024,
            handshake_timeout: Duration::from_secs(10),
            frame_timeout: Duration::from_secs(30),
            idle_timeout: None,
            send_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(10),
            same_uid_only: false,
            stream_window: crate::wire::DEFAULT_STREAM_WINDOW,
            reflection: true,
            identity: None,
        }
    }
}

impl ServerOptions {
    /// The default options.
    pub fn new() -> Self {
        Self::default()
    }

    /// Calls one connection may have running at once. When reached, the server stops reading
    /// that connection until a call finishes (backpressure; memory stays bounded). Default 1024;
    /// values above [`MAX_IN_FLIGHT`] are taken as that.
    ///
    /// # Panics
    /// If `n` is 0: such a connection could never run a call.
    #[must_use]
    pub fn max_in_flight(mut self, n: usize) -> Self {
        assert!(n > 0, "ServerOptions::max_in_flight must be at least 1");
        self.max_in_flight = n.min(MAX_IN_FLIGHT);
        self
    }

    /// How long a new connection may take to send its hello (a client that sends nothing, or
    /// part of a hello, is closed after this). Default 10 s.
    #[must_use]
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// How long a connection may hold part of a frame without sending more of it (whether or
    /// not some of its calls are running); then it gets a goaway and is closed, so a peer that
    /// stalls in the middle of a frame does not keep its buffer and task forever. Any new byte
    /// restarts the clock, and so does the server pausing its reads for backpressure. A stall
    /// is noticed between one and two timeouts after it began. Default 30 s.
    #[must_use]
    pub fn frame_timeout(mut self, timeout: Duration) -> Self {
        self.frame_timeout = timeout;
        self
    }

    /// How long a connection may stay idle (no frame received and no call running) before it
    /// gets a goaway and is closed; `None` keeps idle connections open. Default `None`: clients
    /// do not reconnect by themselves, and an idle connection costs only a descriptor, a task
    /// and a few KiB. Set it when many clients may vanish without closing (hosts that go away
    /// without a TCP reset). An idle connection is noticed between one and two timeouts after
    /// it fell idle.
    #[must_use]
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// How long answers may wait for a client that does not read them: when answers are queued
    /// and not one byte of them has left for this long, the connection is closed. (Before that,
    /// backpressure keeps memory bounded: the server stops reading a connection whose
    /// [`max_in_flight`](Self::max_in_flight) calls all wait to be answered.) Noticed between one
    /// and two timeouts after the client stopped reading. Default 30 s.
    #[must_use]
    pub fn send_timeout(mut self, timeout: Duration) -> Self {
        self.send_timeout = timeout;
        self
    }

    /// How long in-flight calls may take to finish after shutdown starts. Default 10 s.
    #[must_use]
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// The credit, in bytes of encoded items, the server grants each stream a client sends it
    /// (a method's `Stream<T>` argument): how much of it may wait here for the handler to read.
    /// A client that has sent this much waits until the handler takes some. Default 256 KiB
    /// ([`DEFAULT_STREAM_WINDOW`](crate::wire::DEFAULT_STREAM_WINDOW)).
    ///
    /// # Panics
    /// If `bytes` is below the protocol's minimum,
    /// [`MIN_STREAM_WINDOW`](crate::wire::MIN_STREAM_WINDOW) (4 KiB).
    #[must_use]
    pub fn stream_window(mut self, bytes: u32) -> Self {
        let min = crate::wire::MIN_STREAM_WINDOW;
        assert!(bytes >= min, "ServerOptions::stream_window must be at least {min} bytes, not {bytes}");
        self.stream_window = bytes;
        self
    }

    /// Serve only clients that run as this process's own (effective) user, whatever the
    /// listener's mode would let connect (root too is refused unless the server runs as root).
    /// The peer's user comes from the connection's
    /// [`peer_credentials`](crate::transport::ConnectionInfo::peer_credentials): a transport that
    /// cannot tell (`tcp://`, `fifo://`, `mq://`) has every connection refused. A refused client is told
    /// why (its connect fails with [`RpcError::Disconnected`](crate::RpcError::Disconnected)
    /// naming both users) and closed. Default `false`.
    #[must_use]
    pub fn same_uid_only(mut self, same_uid_only: bool) -> Self {
        self.same_uid_only = same_uid_only;
        self
    }

    /// Whether the server answers the built-in reflection service
    /// ([`crate::reflection`]), which tells any client the services served with the schemas
    /// of their methods (what `rpc list` shows). Default `true`. It costs nothing until asked:
    /// one more entry in the table of services.
    #[must_use]
    pub fn reflection(mut self, enabled: bool) -> Self {
        self.reflection = enabled;
        self
    }

    /// The name and version the reflection service reports for this server. Default: the
    /// executable's file name, no version.
    #[must_use]
    pub fn identity(mut self, name: impl Into<String>, version: Option<String>) -> Self {
        self.identity = Some((name.into(), version));
        self
    }
}

/// Serves one or more services on any number of listeners.
///
/// Handlers run on the tokio runtime and must not block: a call is first polled on its
/// connection's task (so a handler that returns at once costs no task switch), and a handler that
/// blocks there stalls that connection. Put blocking work in `tokio::task::spawn_blocking`.
///
/// ```no_run
/// # async fn run(svc: impl rpc_core::service::Service, listener: impl rpc_core::transport::Listener) -> std::io::Result<()> {
/// use rpc_core::server::Server;
/// let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
/// # drop(stop);
/// // Serves until `stop` is sent or dropped, then shuts down gracefully.
/// Server::new().add_service(svc).serve_until(listener, async { let _ = stopped.await; }).await
/// # }
/// ```
#[derive(Clone, Default)]
pub struct Server {
    services: HashMap<&'static str, Arc<dyn Service>>,
    options: ServerOptions,
    /// The layers every call runs behind; `None`: calls go straight to their handlers.
    middleware: Option<Middleware>,
    /// Shared by this server's clones, so any clone's [`Server::stats`] sees all.
    counters: Arc<Counters>,
}

/// What a connection task needs of its server.
pub(crate) struct Shared {
    pub(crate) services: HashMap<&'static str, Arc<dyn Service>>,
    pub(crate) middleware: Option<Middleware>,
    pub(crate) counters: Arc<Counters>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<_> = self.services.keys().collect();
        names.sort();
        f.debug_struct("Server").field("services", &names).field("options", &self.options).finish()
    }
}

impl Server {
    /// A server with no services and default options.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the options.
    pub fn with_options(mut self, options: ServerOptions) -> Self {
        self.options = options;
        self
    }

    /// Adds a service; clients select it by name in their hello.
    ///
    /// # Panics
    /// If a service with the same name was already added.
    pub fn add_service<S: Service>(mut self, service: S) -> Self {
        let name = service.descriptor().name;
        let previous = self.services.insert(name, Arc::new(service));
        assert!(previous.is_none(), "a service named `{name}` was already added to this server");
        self
    }

    /// Runs every call of every service behind `layer` (a `tower::Layer`; compose several with
    /// `tower::ServiceBuilder`): e.g. `ConcurrencyLimitLayer`, `TimeoutLayer`, `LoadShedLayer`,
    /// or an auth layer reading [`CallRequest::context`]. Replaces a layer given before. See
    /// [`crate::layer`] for what a layer sees and how its errors reach the caller.
    ///
    /// The built-in [reflection service](crate::reflection) is a service like the others: its
    /// calls run behind the layers too, so an auth layer also decides who may list the server's
    /// methods. A layer that should let them through tests
    /// `request.service().name == rpc_core::reflection::REFLECTION_SERVICE`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use rpc_core::Server;
    ///
    /// let server = Server::new().layer(
    ///     tower::ServiceBuilder::new()
    ///         .layer(tower::timeout::TimeoutLayer::new(Duration::from_secs(5)))
    ///         .layer(tower::load_shed::LoadShedLayer::new()),
    /// );
    /// # let _ = server;
    /// ```
    pub fn layer<L>(mut self, layer: L) -> Self
    where
        L: tower::Layer<Handlers>,
        L::Service: tower::Service<CallRequest, Response = Answer> + Clone + Send + Sync + 'static,
        <L::Service as tower::Service<CallRequest>>::Error: Into<BoxError>,
        <L::Service as tower::Service<CallRequest>>::Future: Send + 'static,
    {
        self.middleware = Some(Middleware::new(layer));
        self
    }

    /// What this server (and its clones) have done so far: connections, calls, bytes.
    pub fn stats(&self) -> ServerStats {
        self.counters.snapshot()
    }

    fn shared(&self) -> Arc<Shared> {
        Arc::new(Shared {
            services: self.services_served(),
            middleware: self.middleware.clone(),
            counters: Arc::clone(&self.counters),
        })
    }

    /// The services a connection may name: the user's, and the reflection service unless it is
    /// turned off (or the user added a service of that name).
    fn services_served(&self) -> HashMap<&'static str, Arc<dyn Service>> {
        let mut services = self.services.clone();
        if self.options.reflection && !services.contains_key(crate::reflection::REFLECTION_SERVICE) {
            let (name, version) =
                self.options.identity.clone().unwrap_or_else(|| (crate::reflection::default_server_name(), None));
            let mut served: Vec<_> = self.services.values().cloned().collect();
            served.sort_by_key(|s| s.descriptor().name);
            let reflection = crate::reflection::Reflection::new(served, name, version);
            services.insert(crate::reflection::REFLECTION_SERVICE, Arc::new(reflection));
        }
        services
    }

    /// Serves connections from `listener` until an accept error that is not transient.
    pub async fn serve<L: Listener>(self, listener: L) -> io::Result<()> {
        self.serve_until(listener, std::future::pending()).await
    }

    /// Serves connections from `listener` until `shutdown` completes, then shuts down gracefully
    /// (see the module docs) and returns `Ok(())`.
    pub async fn serve_until<L, F>(self, mut listener: L, shutdown: F) -> io::Result<()>
    where
        L: Listener,
        F: Future<Output = ()>,
    {
        let shared = self.shared();
        let token = CancellationToken::new();
        let mut connections = JoinSet::new();
        // Set while accepting fails for want of descriptors or memory: logged once when it
        // starts and once when it ends, not on every retry.
        let mut exhausted = false;
        tokio::pin!(shutdown);
        let result = loop {
            tokio::select! {
                () = &mut shutdown => break Ok(()),
                accepted = listener.accept() => match accepted {
                    Ok(conn) => {
                        if std::mem::take(&mut exhausted) {
                            tracing::info!(connections = connections.len(), "accepting connections again");
                        }
                        let serve = connection::serve(Arc::clone(&shared), self.options.clone(), conn, token.clone());
                        connections.spawn(serve);
                    }
                    Err(e) if is_transient(&e) => {
                        if crate::transport::transient::is_exhaustion(&e) {
                            if !std::mem::replace(&mut exhausted, true) {
                                tracing::warn!(
                                    error = %e,
                                    connections = connections.len(),
                                    "cannot accept: out of descriptors or memory; retrying"
                                );
                            }
                        } else {
                            tracing::debug!(error = %e, "accept failed; retrying");
                        }
                        // Out of file descriptors, or a client that vanished mid-accept: other
                        // connections are fine; wait a little instead of spinning.
                        tokio::time::sleep(crate::transport::transient::RETRY_PAUSE).await;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "accept failed; the server stops");
                        break Err(e);
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        };
        // Stop accepting first (a Unix listener removes its socket file when dropped).
        drop(listener);
        tracing::info!(connections = connections.len(), grace = ?self.options.shutdown_grace, "shutting down: stopped accepting");
        token.cancel();
        let drain = async { while connections.join_next().await.is_some() {} };
        if tokio::time::timeout(self.options.shutdown_grace.saturating_add(Duration::from_secs(6)), drain)
            .await
            .is_err()
        {
            tracing::warn!(
                connections = connections.len(),
                "shutdown: connections still open after the grace period; aborting them"
            );
            connections.shutdown().await;
        }
        tracing::info!("shutdown complete");
        result
    }

    /// Serves a single, already established connection (a child process's pipes, a test's
    /// in-memory pair) until the peer closes it.
    pub async fn serve_connection(&self, conn: Connection) {
        connection::serve(self.shared(), self.options.clone(), conn, CancellationToken::new()).await;
    }
}

/// This process's effective user id; `None` where there is no such thing.
fn effective_uid() -> Option<u32> {
    #[cfg(unix)]
    return Some(rustix::process::geteuid().as_raw());
    #[cfg(not(unix))]
    return None;
}

/// Whether an accept error passes by itself (a client that vanished mid-accept, out of file
/// descriptors or memory while other connections are open): the server waits a little and
/// accepts again; after any other error it stops.
pub fn is_transient(err: &io::Error) -> bool {
    crate::transport::transient::is_transient(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "ServerOptions::max_in_flight must be at least 1")]
    fn no_calls_in_flight_is_refused() {
        let _ = ServerOptions::new().max_in_flight(0);
    }

    #[test]
    fn in_flight_limits_beyond_the_engine_are_capped() {
        assert_eq!(ServerOptions::new().max_in_flight(usize::MAX).max_in_flight, MAX_IN_FLIGHT);
        assert_eq!(ServerOptions::new().max_in_flight(1).max_in_flight, 1);
        assert_eq!(ServerOptions::default().max_in_flight, 1024);
    }

    #[test]
    #[should_panic(expected = "ServerOptions::stream_window must be at least 4096 bytes, not 100")]
    fn a_stream_window_under_the_minimum_is_refused() {
        let _ = ServerOptions::new().stream_window(100);
    }

    #[test]
    fn the_smallest_stream_window_is_accepted() {
        let min = crate::wire::MIN_STREAM_WINDOW;
        assert_eq!(ServerOptions::new().stream_window(min).stream_window, min);
    }
}
