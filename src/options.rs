//! [`ClientOptions`]: everything a client that connects by address can be told.

use std::time::Duration;

use rpc_core::client::{CallOptions, ReconnectOptions};
use rpc_transports::TransportOptions;

/// Options for a client that connects by address: a generated client's `connect_with`, and
/// [`connect_service_with`](crate::connect_service_with) for hand-written ones.
///
/// ```no_run
/// # #[rpc::service] pub trait Calculator { async fn add(&self, a: i64, b: i64) -> i64; }
/// # async fn run() -> Result<(), rpc::RpcError> {
/// use std::time::Duration;
/// use rpc::transports::TransportOptions;
///
/// let options = rpc::ClientOptions::new()
///     .handshake_timeout(Duration::from_secs(1))
///     .call_timeout(Duration::from_secs(5)) // every call, unless it is given another deadline
///     .transport(TransportOptions::new().max_frame_len(1 << 20));
/// let calc = CalculatorClient::connect_with("local://calc", options).await?;
/// calc.add(1, 2).await?; // DeadlineExceeded if not answered within 5 s
/// calc.with_timeout(Duration::from_secs(60)).add(1, 2).await?; // this one may take a minute
/// # Ok(()) }
/// ```
///
/// They are two layers' options in one: the engine's (the handshake timeout, the stream window
/// and the call options every call starts with: [`rpc_core::client::ClientOptions`], what
/// [`Client::handshake`](crate::Client::handshake) takes) and the transport's
/// ([`TransportOptions`], what [`transports::connect_with`](crate::transports::connect_with)
/// takes). The engine crate does not depend on the transports, so the type that holds both lives
/// here, in the facade that has both; its setters forward to the engine's, and
/// [`transport`](Self::transport) sets the rest.
///
/// Built like every options type of the framework: [`ClientOptions::new`] (the same as
/// [`Default`]) and chained setters, each naming its default; a setter panics on a value no
/// connection could work with (its `# Panics` section says which).
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    client: rpc_core::client::ClientOptions,
    transport: TransportOptions,
    reconnect: Option<ReconnectOptions>,
}

impl ClientOptions {
    /// The default options.
    pub fn new() -> Self {
        Self::default()
    }

    /// How long to wait for the server's answer to the hello, once the transport is connected;
    /// then the connect fails with [`RpcError::Disconnected`](crate::RpcError::Disconnected).
    /// Default 10 s. (See [`rpc_core::client::ClientOptions::handshake_timeout`].)
    #[must_use]
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.client = self.client.handshake_timeout(timeout);
        self
    }

    /// The credit, in bytes of encoded items, this client grants each stream the server sends
    /// it. Default 256 KiB. (See [`rpc_core::client::ClientOptions::stream_window`].)
    ///
    /// # Panics
    /// If `bytes` is below the protocol's minimum,
    /// [`MIN_STREAM_WINDOW`](crate::wire::MIN_STREAM_WINDOW) (4 KiB).
    #[must_use]
    pub fn stream_window(mut self, bytes: u32) -> Self {
        self.client = self.client.stream_window(bytes);
        self
    }

    /// The call options every call of the client starts with: its default deadline. The
    /// client's `with_timeout`, `with_deadline` and `with_options` change them for the calls of
    /// the clone they return. Default: no deadline. (See
    /// [`rpc_core::client::ClientOptions::call_options`].)
    #[must_use]
    pub fn call_options(mut self, options: CallOptions) -> Self {
        self.client = self.client.call_options(options);
        self
    }

    /// Every call of the client fails with
    /// [`RpcError::DeadlineExceeded`](crate::RpcError::DeadlineExceeded) if not answered within
    /// `timeout`, unless it is given another timeout (`client.with_timeout(t)`). Default: none.
    /// (See [`rpc_core::client::ClientOptions::call_timeout`].)
    #[must_use]
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.client = self.client.call_timeout(timeout);
        self
    }

    /// Sends each call's trace context with its request, so the server's call span names the
    /// client's as its parent (see the README, "Logging and tracing"). Default `false`.
    /// (See [`rpc_core::client::ClientOptions::propagate_trace_context`].)
    #[must_use]
    pub fn propagate_trace_context(mut self, propagate: bool) -> Self {
        self.client = self.client.propagate_trace_context(propagate);
        self
    }

    /// The options of the transport the address names: the frame limit, the permissions of
    /// local endpoints, the `shm://` rings. Default [`TransportOptions::new`].
    #[must_use]
    pub fn transport(mut self, options: TransportOptions) -> Self {
        self.transport = options;
        self
    }

    /// Reconnect when the connection dies: calls in flight then fail with
    /// [`RpcError::Disconnected`](crate::RpcError::Disconnected) as always (nothing is retried
    /// behind the caller's back), and a later call waits while the client dials the address
    /// again, with exponential backoff and jitter, up to
    /// [`ReconnectOptions::give_up_after`]; each new connection repeats the hello, so a server
    /// now serving an incompatible trait is reported, not used. See [`ReconnectOptions`] for
    /// the rest. Default: off (a dead connection stays dead).
    #[must_use]
    pub fn reconnect(mut self, options: ReconnectOptions) -> Self {
        self.reconnect = Some(options);
        self
    }

    /// What [`reconnect`](Self::reconnect) set.
    pub(crate) fn reconnect_options(&self) -> Option<&ReconnectOptions> {
        self.reconnect.as_ref()
    }

    /// The engine's part and the transport's: e.g. to give the engine's part to
    /// [`Client::handshake`](crate::Client::handshake) over a connection made some other way.
    pub fn into_parts(self) -> (rpc_core::client::ClientOptions, TransportOptions) {
        (self.client, self.transport)
    }
}

/// The engine's options, with the default transport options.
impl From<rpc_core::client::ClientOptions> for ClientOptions {
    fn from(client: rpc_core::client::ClientOptions) -> Self {
        Self { client, transport: TransportOptions::default(), reconnect: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setters_reach_the_engine_and_the_transport() {
        let call = CallOptions::new().timeout(Duration::from_secs(1));
        let (client, transport) = ClientOptions::new()
            .handshake_timeout(Duration::from_secs(2))
            .stream_window(8192)
            .call_options(call.clone())
            .call_timeout(Duration::from_secs(3))
            .transport(TransportOptions::new().mode(0o660))
            .into_parts();
        let expected = rpc_core::client::ClientOptions::new()
            .handshake_timeout(Duration::from_secs(2))
            .stream_window(8192)
            .call_options(call.timeout(Duration::from_secs(3)));
        // The engine's options have no `PartialEq` (nothing needs to compare them but this test).
        assert_eq!(format!("{client:?}"), format!("{expected:?}"));
        assert_eq!(transport, TransportOptions::new().mode(0o660));

        let (client, transport) = ClientOptions::from(expected.clone()).into_parts();
        assert_eq!(format!("{client:?}"), format!("{expected:?}"));
        assert_eq!(transport, TransportOptions::default());
    }

    #[test]
    #[should_panic(expected = "ClientOptions::stream_window must be at least 4096 bytes, not 10")]
    fn the_engine_checks_what_is_forwarded() {
        let _ = ClientOptions::new().stream_window(10);
    }
}
