//! Services shared by the integration tests and the `rpc-test-server` helper binary.
//!
//! `TestCalculator` counts what it does (calls answered, handlers stopped before finishing) so
//! tests in another process can ask it, through the service itself, what happened on its side.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream as _;
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

/// The streaming service every transport is checked with, served beside [`Calculator`].
#[service]
pub trait Streams {
    /// `n` items `(i, pad)` for `i` in `0..n` (`u64::MAX`: until the caller goes away), each
    /// with `pad` bytes of padding, `every_ms` apart.
    async fn count(&self, n: u64, pad: u32, every_ms: u64) -> rpc::Stream<(u64, rpc::Bytes)>;
    /// Items `0..fail_at`, then an application error.
    async fn fallible(&self, fail_at: u64) -> rpc::Stream<Result<u64, MathError>>;
    /// The sum of the first `take` numbers (all of them with `u64::MAX`); stops reading after.
    async fn sum(&self, take: u64, numbers: rpc::Stream<u64>) -> u64;
    /// Waits `wait_ms` milliseconds before it reads any number, then sums them all.
    async fn slow_sum(&self, wait_ms: u64, numbers: rpc::Stream<Vec<u8>>) -> u64;
    /// Every line, uppercased.
    async fn shout(&self, lines: rpc::Stream<String>) -> rpc::Stream<String>;
    /// `(items count produced, count producers that saw their stream dropped)` so far.
    fn produced(&self) -> (u64, u64);
    /// `len` bytes (byte `i` is `seed + i`, wrapping) written into a loan of the call's connection
    /// ([`rpc::CallContext::loan`]), and whether the loan was the connection's shared memory.
    async fn fill(&self, len: u32, seed: u8) -> (bool, rpc::Bytes);
    /// `n` items like [`fill`](Streams::fill)'s, item `k` with seed `k`, each written into a loan
    /// of the call's connection by the producing task; if `same`, one loan (seed 0) sent `n`
    /// times, which `shm://` sends by reference from the second time on.
    async fn fills(&self, n: u32, len: u32, same: bool) -> rpc::Stream<(bool, rpc::Bytes)>;
}

/// `len` bytes written as [`Streams::fill`] describes into a loan from `ctx` (a heap buffer
/// without one), and whether the loan was shared memory.
pub fn filled(ctx: Option<&rpc::CallContext>, len: u32, seed: u8) -> (bool, rpc::Bytes) {
    let mut loan = ctx.map_or_else(|| rpc::Loan::heap(len as usize), |ctx| ctx.loan(len as usize));
    for (i, byte) in loan.iter_mut().enumerate() {
        *byte = seed.wrapping_add(i as u8);
    }
    (loan.is_shared(), loan.freeze())
}

/// The implementation of [`Streams`] used by the tests.
#[derive(Debug, Default, Clone)]
pub struct TestStreams {
    produced: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
}

impl Streams for TestStreams {
    async fn count(&self, n: u64, pad: u32, every_ms: u64) -> rpc::Stream<(u64, rpc::Bytes)> {
        let (tx, stream) = rpc::Stream::channel(8);
        let (produced, dropped) = (Arc::clone(&self.produced), Arc::clone(&self.dropped));
        let padding = rpc::Bytes::from(vec![0x5a; pad as usize]);
        // The producer runs in a task of its own, as a handler's loop would: the stream is
        // the only link to the caller, so a failed send is how it learns that nobody reads.
        tokio::spawn(async move {
            for i in 0..n {
                if every_ms > 0 {
                    tokio::time::sleep(Duration::from_millis(every_ms)).await;
                }
                if tx.send((i, padding.clone())).await.is_err() {
                    dropped.fetch_add(1, Ordering::SeqCst);
                    return;
                }
                produced.fetch_add(1, Ordering::SeqCst);
            }
        });
        stream
    }

    async fn fill(&self, len: u32, seed: u8) -> (bool, rpc::Bytes) {
        filled(rpc::CallContext::current().as_ref(), len, seed)
    }

    async fn fills(&self, n: u32, len: u32, same: bool) -> rpc::Stream<(bool, rpc::Bytes)> {
        let (tx, stream) = rpc::Stream::channel(8);
        // A task the handler spawns does not inherit the context: it takes it along.
        let ctx = rpc::CallContext::current();
        tokio::spawn(async move {
            let once = same.then(|| filled(ctx.as_ref(), len, 0));
            for k in 0..n {
                let item = once.clone().unwrap_or_else(|| filled(ctx.as_ref(), len, k as u8));
                if tx.send(item).await.is_err() {
                    return;
                }
            }
        });
        stream
    }

    async fn fallible(&self, fail_at: u64) -> rpc::Stream<Result<u64, MathError>> {
        rpc::Stream::from_iter((0..fail_at).map(Ok).chain([Err(MathError::DivisionByZero)]))
    }

    async fn sum(&self, take: u64, mut numbers: rpc::Stream<u64>) -> u64 {
        let mut sum = 0u64;
        for _ in 0..take {
            match numbers.next().await {
                Some(n) => sum = sum.wrapping_add(n),
                None => break,
            }
        }
        sum
    }

    async fn slow_sum(&self, wait_ms: u64, mut numbers: rpc::Stream<Vec<u8>>) -> u64 {
        tokio::time::sleep(Duration::from_millis(wait_ms)).await;
        let mut sum = 0u64;
        while let Some(bytes) = numbers.next().await {
            sum += bytes.iter().map(|&b| u64::from(b)).sum::<u64>();
        }
        sum
    }

    async fn shout(&self, mut lines: rpc::Stream<String>) -> rpc::Stream<String> {
        rpc::Stream::new(futures_util::stream::poll_fn(move |cx| {
            std::pin::Pin::new(&mut lines).poll_next(cx).map(|line| line.map(|l| l.to_uppercase()))
        }))
    }

    fn produced(&self) -> (u64, u64) {
        (self.produced.load(Ordering::SeqCst), self.dropped.load(Ordering::SeqCst))
    }
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
        .add_service(TestStreams::default().into_service())
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
