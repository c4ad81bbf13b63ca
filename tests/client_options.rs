//! A generated client's `connect_with` (and `from_connection_with`) and the `rpc::ClientOptions`
//! they take: the default
//! deadline of every call (and a per-call timeout that overrides it), the handshake timeout, and
//! the transport options, against a real server over real transports.

use std::time::Duration;

use rpc::transports::TransportOptions;
use rpc::{CallOptions, ClientOptions, RpcError};
use rpc_tests::CalculatorClient;

/// Starts the tests' server in this process on `addr`; returns the address clients use.
async fn serve(addr: &str) -> (String, tokio::task::JoinHandle<std::io::Result<()>>) {
    let listener = rpc::listen(addr).await.unwrap();
    let addr = listener.local_addr();
    (addr, tokio::spawn(rpc_tests::test_server().serve(listener)))
}

/// Waits until `cond` holds, failing after 10 s.
async fn wait_until<F: std::future::Future<Output = bool>>(mut cond: impl FnMut() -> F) {
    let start = std::time::Instant::now();
    while !cond().await {
        assert!(start.elapsed() < Duration::from_secs(10), "condition not reached within 10 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The addresses the checks run over: TCP, and a local socket where there is one.
fn addresses(test: &str) -> Vec<String> {
    let mut addresses = vec!["tcp://127.0.0.1:0".to_owned()];
    if cfg!(unix) {
        addresses.push(format!("local://rpc-client-options-{test}-{}", std::process::id()));
    }
    addresses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_default_deadline_fails_slow_calls_unless_a_call_overrides_it() {
    for addr in addresses("deadline") {
        let (addr, _server) = serve(&addr).await;
        let options = ClientOptions::new().call_timeout(Duration::from_millis(100));
        let calc = CalculatorClient::connect_with(&addr, options).await.unwrap();

        // A call slower than the default deadline fails with the timeout error, and the server
        // was told the deadline: it stopped the handler.
        assert_eq!(calc.sleep(30_000).await, Err(RpcError::DeadlineExceeded), "{addr}");
        wait_until(|| async { calc.stats().await.unwrap().1 == 1 }).await;
        let seen = calc.whoami(0).await.unwrap().expect("a context");
        assert!(seen.deadline_ms.is_some_and(|ms| ms <= 100), "{addr}: the server saw {seen:?}");
        // Fast calls are fine.
        assert_eq!(calc.add(1, 2).await, Ok(3));

        // A timeout given to a call overrides the default one, in both directions.
        assert_eq!(calc.with_timeout(Duration::from_secs(20)).sleep(300).await, Ok(300), "{addr}");
        let impatient = calc.with_timeout(Duration::from_millis(10));
        assert_eq!(impatient.sleep(300).await, Err(RpcError::DeadlineExceeded), "{addr}");
        // Other call options replace the default ones altogether: no deadline at all.
        assert_eq!(calc.with_options(CallOptions::new()).sleep(300).await, Ok(300), "{addr}");
        // And the clones leave the client's own default alone.
        assert_eq!(calc.sleep(300).await, Err(RpcError::DeadlineExceeded), "{addr}");

        // `connect` is `connect_with` with the defaults: no deadline.
        let patient = CalculatorClient::connect(&addr).await.unwrap();
        assert_eq!(patient.sleep(300).await, Ok(300), "{addr}");
        assert_eq!(patient.whoami(0).await.unwrap().expect("a context").deadline_ms, None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_from_a_connection_takes_the_engine_options() {
    for addr in addresses("from-connection") {
        let (addr, _server) = serve(&addr).await;
        let conn = rpc::transports::connect(&addr).await.unwrap();
        let options = ClientOptions::new().call_timeout(Duration::from_millis(100));
        let calc = CalculatorClient::from_connection_with(conn, options).await.unwrap();
        assert_eq!(calc.add(1, 2).await, Ok(3), "{addr}");
        assert_eq!(calc.sleep(30_000).await, Err(RpcError::DeadlineExceeded), "{addr}");
        let seen = calc.whoami(0).await.unwrap().expect("a context");
        assert!(seen.deadline_ms.is_some_and(|ms| ms <= 100), "{addr}: the server saw {seen:?}");

        // `from_connection` is `from_connection_with` with the defaults: no deadline.
        let patient = CalculatorClient::from_connection(rpc::transports::connect(&addr).await.unwrap()).await.unwrap();
        assert_eq!(patient.sleep(300).await, Ok(300), "{addr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handshake_timeout_is_honoured() {
    for addr in addresses("handshake") {
        // A listener that accepts connections and never answers their hello.
        let mut listener = rpc::listen(&addr).await.unwrap();
        let addr = listener.local_addr();
        let _mute = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok(conn) = listener.accept().await {
                held.push(conn);
            }
        });
        let options = ClientOptions::new().handshake_timeout(Duration::from_millis(200));
        // The default handshake timeout is 10 s: a connect that gives up within 5 s honoured ours.
        let connect = CalculatorClient::connect_with(&addr, options);
        match tokio::time::timeout(Duration::from_secs(5), connect).await {
            Ok(Err(RpcError::Disconnected { reason, code: None })) => {
                assert!(reason.contains("no answer to the hello") && reason.contains("200ms"), "{addr}: {reason}")
            }
            Ok(other) => panic!("{addr}: expected a handshake timeout, got {other:?}"),
            Err(_) => panic!("{addr}: the connect ignored the handshake timeout"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_transport_options_reach_the_transport() {
    for addr in addresses("transport") {
        let (addr, _server) = serve(&addr).await;
        let small = ClientOptions::new().transport(TransportOptions::new().max_frame_len(1024));
        let calc = CalculatorClient::connect_with(&addr, small).await.unwrap();
        assert_eq!(calc.rpc_client().connection_info().max_frame_len, 1024, "{addr}");
        // Refused on our side before it is sent; the connection stays usable.
        let err = calc.echo(vec![7; 4096]).await.unwrap_err();
        assert!(matches!(err, RpcError::FrameTooLarge { max: 1024, .. }), "{addr}: {err:?}");
        assert_eq!(calc.echo(vec![7; 100]).await, Ok(vec![7; 100]), "{addr}");
        // The default client takes the same argument.
        let calc = CalculatorClient::connect(&addr).await.unwrap();
        assert_eq!(calc.echo(vec![7; 4096]).await.map(|v| v.len()), Ok(4096), "{addr}");
    }
}
