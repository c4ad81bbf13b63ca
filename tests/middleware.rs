//! `tower` middleware around the engines: a server's calls behind layers (a concurrency limit, a
//! timeout, load shedding, an auth layer reading the caller's credentials), and the client used
//! as a `tower::Service`. Over real sockets (TCP loopback; a Unix socket where the kernel tells
//! the caller's credentials).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rpc::layer::{Answer, BoxError, CallRequest};
use rpc::RpcError;
use rpc_tests::CalculatorClient;
use tower::ServiceExt;

/// Observes, from inside its handler, how many calls of it run at once.
#[rpc::service]
pub trait Probe {
    /// Holds for `ms` milliseconds; returns how many `hold` calls were running when it started
    /// (itself included).
    async fn hold(&self, ms: u64) -> usize;
}

#[derive(Clone, Default)]
struct TestProbe {
    running: Arc<AtomicUsize>,
}

impl Probe for TestProbe {
    async fn hold(&self, ms: u64) -> usize {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        tokio::time::sleep(Duration::from_millis(ms)).await;
        self.running.fetch_sub(1, Ordering::SeqCst);
        now
    }
}

async fn start(server: rpc::Server, addr: &str) -> String {
    let listener = rpc::listen(addr).await.unwrap();
    let addr = listener.local_addr();
    tokio::spawn(server.serve(listener));
    addr
}

/// The most `hold` calls any of `n` concurrent ones saw running at once.
async fn most_at_once(server: rpc::Server, n: usize) -> usize {
    let addr = start(server.add_service(TestProbe::default().into_service()), "tcp://127.0.0.1:0").await;
    let probe = ProbeClient::connect(&addr).await.unwrap();
    let calls = (0..n).map(|_| {
        let probe = probe.clone();
        tokio::spawn(async move { probe.hold(30).await.unwrap() })
    });
    let mut most = 0;
    for call in calls.collect::<Vec<_>>() {
        most = most.max(call.await.unwrap());
    }
    most
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrency_limit_of_one_serialises_the_handlers() {
    // Without the layer the same calls overlap (so the handler can see it), with it they never do.
    assert!(most_at_once(rpc::Server::new(), 6).await > 1);
    let limited = rpc::Server::new().layer(tower::limit::ConcurrencyLimitLayer::new(1));
    assert_eq!(most_at_once(limited, 6).await, 1);
}

#[tokio::test]
async fn a_timeout_layer_reaches_the_caller_as_a_typed_error() {
    let server = rpc_tests::test_server().layer(tower::timeout::TimeoutLayer::new(Duration::from_millis(50)));
    let addr = start(server, "tcp://127.0.0.1:0").await;
    let calc = CalculatorClient::connect(&addr).await.unwrap();
    let err = calc.sleep(10_000).await.unwrap_err();
    assert!(matches!(err, RpcError::DeadlineExceeded), "{err:?}");
    // Calls within the limit pass through unchanged, errors of the application too.
    assert_eq!(calc.add(2, 3).await.unwrap(), 5);
    assert!(matches!(calc.div(1, 0).await, Err(rpc::CallError::App(rpc_tests::MathError::DivisionByZero))));
    // The handler was stopped, not left running.
    let (_, stopped) = calc.stats().await.unwrap();
    assert_eq!(stopped, 1);
}

#[tokio::test]
async fn load_shedding_behind_a_limit_refuses_with_overloaded() {
    let layers =
        tower::ServiceBuilder::new().load_shed().layer(tower::limit::ConcurrencyLimitLayer::new(1)).into_inner();
    let addr = start(rpc_tests::test_server().layer(layers), "tcp://127.0.0.1:0").await;
    let calc = CalculatorClient::connect(&addr).await.unwrap();
    let slow = tokio::spawn({
        let calc = calc.clone();
        async move { calc.sleep(300).await }
    });
    // Until the slow call holds the one slot, a call may still get it: retry until shed.
    let shed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match calc.add(1, 1).await {
                Err(RpcError::Overloaded) => return,
                Ok(2) => tokio::time::sleep(Duration::from_millis(5)).await,
                other => panic!("{other:?}"),
            }
        }
    })
    .await;
    assert!(shed.is_ok(), "no call was shed while the slot was taken");
    assert_eq!(slow.await.unwrap().unwrap(), 300);
}

/// A layer that lets a call through when `admit` says so; its refusal is what the caller reads
/// (as `RpcError::Rejected`).
#[derive(Clone)]
struct Gate<S, F> {
    inner: S,
    admit: F,
}

impl<S, F> tower::Service<CallRequest> for Gate<S, F>
where
    S: tower::Service<CallRequest, Response = Answer>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    F: Fn(&CallRequest) -> Result<(), String>,
{
    type Response = Answer;
    type Error = BoxError;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Answer, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: CallRequest) -> Self::Future {
        if let Err(refusal) = (self.admit)(&request) {
            return Box::pin(async move { Err(refusal.into()) });
        }
        let answer = self.inner.call(request);
        Box::pin(async move { answer.await.map_err(Into::into) })
    }
}

/// An auth rule: lets through only calls from processes of user `uid`, reading the caller's
/// credentials from the call's context.
fn only_uid(uid: u32) -> impl Fn(&CallRequest) -> Result<(), String> + Clone + Send + Sync + 'static {
    move |request| {
        let caller = request.context().peer_credentials().map(|c| c.uid);
        if caller == Some(uid) {
            return Ok(());
        }
        let method = request.method().map_or("?", |m| m.name);
        Err(format!("uid {caller:?} may not call `{method}`"))
    }
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn an_auth_layer_reads_the_callers_credentials() {
    let me = my_uid();
    for (allowed, expect_ok) in [(me, true), (me.wrapping_add(1), false)] {
        let layer = tower::layer::layer_fn(move |inner| Gate { inner, admit: only_uid(allowed) });
        let dir = std::env::temp_dir().join(format!("rpc-mw-{}-{allowed}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let addr = format!("unix://{}", dir.join("auth.sock").display());
        let addr = start(rpc_tests::test_server().layer(layer), &addr).await;
        let calc = CalculatorClient::connect(&addr).await.unwrap();
        match calc.add(1, 2).await {
            Ok(3) if expect_ok => {}
            Err(RpcError::Rejected { message }) if !expect_ok => {
                assert!(message.contains(&format!("uid Some({me}) may not call `add`")), "{message}")
            }
            other => panic!("allowed uid {allowed}: {other:?}"),
        }
        drop(calc);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// This process's effective user (the owner of `/proc/self`), without `unsafe`.
#[cfg(target_os = "linux")]
fn my_uid() -> u32 {
    std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m)).unwrap()
}

#[tokio::test]
async fn a_client_works_through_tower_oneshot_and_tower_timeout() {
    let addr = start(rpc_tests::test_server(), "tcp://127.0.0.1:0").await;
    let calc = CalculatorClient::connect(&addr).await.unwrap();
    let client = calc.rpc_client().clone();
    let add = client.service().method_by_name("add").unwrap();
    let sum: i64 = client.clone().oneshot(rpc::Request::new(add, (20i64, 22i64))).await.unwrap();
    assert_eq!(sum, 42);

    // tower's own timeout applies to a call, and the connection serves on afterwards.
    let sleep = client.service().method_by_name("sleep").unwrap();
    let timed = tower::ServiceBuilder::new().timeout(Duration::from_millis(50)).service(client.clone());
    let err = timed.oneshot(rpc::Request::<_, u64>::new(sleep, (10_000u64,))).await.unwrap_err();
    assert!(err.is::<tower::timeout::error::Elapsed>(), "{err}");
    // A typed error of the framework stays typed through tower.
    let boom = client.service().method_by_name("boom").unwrap();
    let err = client.clone().oneshot(rpc::Request::<_, ()>::new(boom, ())).await.unwrap_err();
    assert!(matches!(err, RpcError::RemotePanic { .. }), "{err:?}");
    assert_eq!(calc.add(1, 1).await.unwrap(), 2);
}

/// Retries a call the server shed (`RpcError::Overloaded`), a bounded number of times.
#[derive(Clone)]
struct RetryOverloaded {
    left: usize,
    attempts: Arc<AtomicUsize>,
}

impl<A: Clone, R> tower::retry::Policy<rpc::Request<A, R>, R, RpcError> for RetryOverloaded {
    type Future = tokio::time::Sleep;

    fn retry(&mut self, _req: &mut rpc::Request<A, R>, result: &mut Result<R, RpcError>) -> Option<Self::Future> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        match result {
            Err(RpcError::Overloaded) if self.left > 0 => {
                self.left -= 1;
                Some(tokio::time::sleep(Duration::from_millis(10)))
            }
            _ => None,
        }
    }

    fn clone_request(&mut self, req: &rpc::Request<A, R>) -> Option<rpc::Request<A, R>> {
        Some(req.clone())
    }
}

#[tokio::test]
async fn tower_retry_repeats_a_shed_call_until_it_passes() {
    let layers =
        tower::ServiceBuilder::new().load_shed().layer(tower::limit::ConcurrencyLimitLayer::new(1)).into_inner();
    let addr = start(rpc_tests::test_server().layer(layers), "tcp://127.0.0.1:0").await;
    let calc = CalculatorClient::connect(&addr).await.unwrap();
    let client = calc.rpc_client().clone();
    // Hold the one slot, and make sure it is held: a plain call is shed.
    let slow = tokio::spawn({
        let calc = calc.clone();
        async move { calc.sleep(1000).await }
    });
    tokio::time::timeout(Duration::from_secs(10), async {
        while !matches!(calc.add(0, 0).await, Err(RpcError::Overloaded)) {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .unwrap();
    let attempts = Arc::new(AtomicUsize::new(0));
    let policy = RetryOverloaded { left: 1000, attempts: Arc::clone(&attempts) };
    let retrying = tower::ServiceBuilder::new().retry(policy).service(client);
    let add = calc.rpc_client().service().method_by_name("add").unwrap();
    let sum: i64 = retrying.oneshot(rpc::Request::new(add, (40i64, 2i64))).await.unwrap();
    assert_eq!(sum, 42);
    assert!(attempts.load(Ordering::SeqCst) > 1, "the first attempt was not shed");
    assert_eq!(slow.await.unwrap().unwrap(), 1000);
}

#[tokio::test]
async fn a_rate_limit_runs_behind_a_buffer() {
    // `RateLimit` is not `Clone`; a `Buffer` in front of it is, and shares the one limiter.
    let layers = tower::ServiceBuilder::new()
        .buffer(16)
        .layer(tower::limit::RateLimitLayer::new(2, Duration::from_millis(50)))
        .into_inner();
    let addr = start(rpc_tests::test_server().layer(layers), "tcp://127.0.0.1:0").await;
    let calc = CalculatorClient::connect(&addr).await.unwrap();
    let calls = (0..6).map(|i| {
        let calc = calc.clone();
        tokio::spawn(async move { calc.add(i, i).await })
    });
    for (i, call) in calls.collect::<Vec<_>>().into_iter().enumerate() {
        assert_eq!(call.await.unwrap().unwrap(), 2 * i as i64);
    }
}

#[tokio::test]
async fn reflection_calls_run_behind_the_layers_unless_a_layer_lets_them_through() {
    for reflection_passes in [false, true] {
        // Refuses every call, but lets the reflection service's through when `reflection_passes`:
        // what a layer does to keep the server explorable while guarding its own services.
        let layer = tower::layer::layer_fn(move |inner| Gate {
            inner,
            admit: move |request: &CallRequest| {
                let name = request.service().name;
                if reflection_passes && name == rpc::reflection::REFLECTION_SERVICE {
                    Ok(())
                } else {
                    Err(format!("`{name}` is closed"))
                }
            },
        });
        let addr = start(rpc_tests::test_server().layer(layer), "tcp://127.0.0.1:0").await;
        let reflection = rpc::connect_service(&addr, &rpc::reflection::DESCRIPTOR).await.unwrap();
        match rpc::reflection::describe(&reflection, &rpc::CallOptions::new()).await {
            Ok(description) if reflection_passes => {
                assert!(description.services.iter().any(|s| s.name == "Calculator"), "{description:?}")
            }
            Err(RpcError::Rejected { message }) if !reflection_passes => {
                assert_eq!(message, format!("`{}` is closed", rpc::reflection::REFLECTION_SERVICE))
            }
            other => panic!("reflection_passes {reflection_passes}: {other:?}"),
        }
        // The user's services stay behind the layer either way.
        let calc = CalculatorClient::connect(&addr).await.unwrap();
        assert!(matches!(calc.add(1, 2).await, Err(RpcError::Rejected { .. })));
    }
}
