//! Services shared by the integration tests and the `rpc-test-server` helper binary.
//!
//! `TestCalculator` counts what it does (calls answered, handlers stopped before finishing) so
//! tests in another process can ask it, through the service itself, what happened on its side.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rpc::service;
use serde::{Deserialize, Serialize};

/// The application error of [`Calculator::div`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum MathError {
    /// The divisor was zero.
    #[error("division by zero")]
    DivisionByZero,
}

/// The service every transport is checked with.
#[service]
pub trait Calculator {
    /// Adds two numbers.
    async fn add(&self, a: i64, b: i64) -> i64;
    /// Divides, failing with an application error on zero.
    async fn div(&self, a: i64, b: i64) -> Result<i64, MathError>;
    /// A plain (non-async) method.
    fn version(&self) -> String;
    /// Sleeps `ms` milliseconds, then returns `ms`.
    async fn sleep(&self, ms: u64) -> u64;
    /// Panics.
    async fn boom(&self);
    /// Returns its argument.
    async fn echo(&self, data: Vec<u8>) -> Vec<u8>;
    /// `(adds answered, handlers stopped before they finished)` so far.
    fn stats(&self) -> (u64, u64);
    /// Waits `wait_ms` milliseconds (more than 0 makes the engine move the call to a task of its
    /// own), then reports what the call context says; `None` if there is no context.
    async fn whoami(&self, wait_ms: u64) -> Option<Whoami>;
}

/// What [`Calculator::whoami`] found in its [`rpc::CallContext`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Whoami {
    /// The transport the call came over.
    pub transport: String,
    /// The caller's `(uid, gid, pid)`, where the transport can tell.
    pub credentials: Option<(u32, u32, Option<u32>)>,
    /// Milliseconds left until the call's deadline when the handler looked; `None`: no deadline.
    pub deadline_ms: Option<u64>,
}

/// A second service, served beside [`Calculator`] on the same address.
#[service]
pub trait Greeter {
    /// Greets.
    async fn greet(&self, name: String) -> String;
}

/// Counters shared by every connection of one server.
#[derive(Debug, Default)]
pub struct Stats {
    adds: AtomicU64,
    stopped: AtomicU64,
}

/// The implementation of [`Calculator`] used by the tests.
#[derive(Debug, Default, Clone)]
pub struct TestCalculator {
    stats: Arc<Stats>,
}

/// Counts a handler as stopped unless it is disarmed by finishing.
struct StopGuard(Option<Arc<Stats>>);

impl Drop for StopGuard {
    fn drop(&mut self) {
        if let Some(stats) = self.0.take() {
            stats.stopped.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Calculator for TestCalculator {
    async fn add(&self, a: i64, b: i64) -> i64 {
        self.stats.adds.fetch_add(1, Ordering::SeqCst);
        a + b
    }

    async fn div(&self, a: i64, b: i64) -> Result<i64, MathError> {
        a.checked_div(b).ok_or(MathError::DivisionByZero)
    }

    fn version(&self) -> String {
        env!("CARGO_PKG_VERSION").to_owned()
    }

    async fn sleep(&self, ms: u64) -> u64 {
        let mut guard = StopGuard(Some(Arc::clone(&self.stats)));
        tokio::time::sleep(Duration::from_millis(ms)).await;
        guard.0 = None;
        ms
    }

    async fn boom(&self) {
        panic!("boom on purpose");
    }

    async fn echo(&self, data: Vec<u8>) -> Vec<u8> {
        data
    }

    fn stats(&self) -> (u64, u64) {
        (self.stats.adds.load(Ordering::SeqCst), self.stats.stopped.load(Ordering::SeqCst))
    }

    async fn whoami(&self, wait_ms: u64) -> Option<Whoami> {
        if wait_ms > 0 {
            tokio::time::sleep(Duration::from_millis(wait_ms)).await;
        }
        let ctx = rpc::CallContext::current()?;
        Some(Whoami {
            transport: ctx.transport().to_owned(),
            credentials: ctx.peer_credentials().map(|c| (c.uid, c.gid, c.pid)),
            deadline_ms: ctx
                .deadline()
                .map(|d| d.saturating_duration_since(std::time::Instant::now()).as_millis() as u64),
        })
    }
}

/// The implementation of [`Greeter`] used by the tests.
#[derive(Debug, Default, Clone)]
pub struct TestGreeter;

impl Greeter for TestGreeter {
    async fn greet(&self, name: String) -> String {
        format!("hello, {name}")
    }
}

/// The options the tests' servers start from: the defaults with a short shutdown grace.
pub fn test_options() -> rpc::ServerOptions {
    rpc::ServerOptions::default().shutdown_grace(Duration::from_secs(5))
}

/// The server the tests run: both services, with [`test_options`].
pub fn test_server() -> rpc::Server {
    test_server_with(test_options())
}

/// Both services, with the given options.
pub fn test_server_with(options: rpc::ServerOptions) -> rpc::Server {
    rpc::Server::new()
        .with_options(options)
        .add_service(TestCalculator::default().into_service())
        .add_service(TestGreeter.into_service())
}

/// The `#[tarpc::service]` every transport is also checked with, through
/// `rpc::tarpc`: what a tarpc user brings along unchanged.
#[tarpc::service]
pub trait TarpcCalculator {
    /// Adds two numbers.
    async fn add(a: i64, b: i64) -> i64;
    /// Returns its argument (a plain `Vec<u8>`, as tarpc users write it).
    async fn echo(data: Vec<u8>) -> Vec<u8>;
    /// Sleeps `ms` milliseconds, then returns `ms`.
    async fn sleep(ms: u64) -> u64;
}

/// The implementation of [`TarpcCalculator`] used by the tests.
#[derive(Debug, Default, Clone)]
pub struct TestTarpcCalculator;

impl TarpcCalculator for TestTarpcCalculator {
    async fn add(self, _: tarpc::context::Context, a: i64, b: i64) -> i64 {
        a + b
    }

    async fn echo(self, _: tarpc::context::Context, data: Vec<u8>) -> Vec<u8> {
        data
    }

    async fn sleep(self, _: tarpc::context::Context, ms: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        ms
    }
}

/// A server's end of one connection carrying [`TarpcCalculator`].
pub type TarpcServerTransport =
    rpc::tarpc::Transport<tarpc::ClientMessage<TarpcCalculatorRequest>, tarpc::Response<TarpcCalculatorResponse>>;

/// Serves [`TestTarpcCalculator`] on every connection `incoming` yields, one task per
/// connection (tarpc's documented pattern), until the stream ends.
pub async fn serve_tarpc(
    incoming: rpc::tarpc::Incoming<
        tarpc::ClientMessage<TarpcCalculatorRequest>,
        tarpc::Response<TarpcCalculatorResponse>,
    >,
) {
    use futures_util::{future, StreamExt};
    incoming
        .filter_map(|accepted| future::ready(accepted.ok()))
        .for_each(|transport| {
            tokio::spawn(serve_tarpc_connection(transport));
            future::ready(())
        })
        .await;
}

/// Serves [`TestTarpcCalculator`] on one connection until the client goes away, one task per
/// request.
pub async fn serve_tarpc_connection(transport: TarpcServerTransport) {
    use futures_util::{future, StreamExt};
    use tarpc::server::{BaseChannel, Channel};
    BaseChannel::with_defaults(transport)
        .execute(TestTarpcCalculator.serve())
        .for_each(|call| {
            tokio::spawn(call);
            future::ready(())
        })
        .await;
}

/// Connects a [`TarpcCalculatorClient`] to `addr` over our transport for that address.
pub async fn tarpc_client(addr: &str) -> Result<TarpcCalculatorClient, rpc::RpcError> {
    let transport = rpc::tarpc::connect(addr).await?;
    Ok(TarpcCalculatorClient::new(tarpc::client::Config::default(), transport).spawn())
}
