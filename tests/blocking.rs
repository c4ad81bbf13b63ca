//! The generated blocking clients, from test functions that have no runtime (plain `#[test]`),
//! against `rpc-test-server` processes: many threads at once, deadlines, application errors,
//! streams both ways, and the refusal to block inside async code.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use rpc::transports::registry;
use rpc::{CallError, ClientOptions, ReconnectOptions, RpcError};
use rpc_tests::{CalculatorBlockingClient, MathError, StreamsBlockingClient};

/// A `rpc-test-server` process, killed (its endpoint removed) on drop.
struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(scheme: &str) -> Option<Server> {
        static N: AtomicU32 = AtomicU32::new(0);
        let scheme = registry::lookup(scheme).filter(|s| s.is_available())?;
        let unique = format!("blocking-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        Some(Server::at(&scheme.fresh_address(&unique)?))
    }

    /// A server on `addr` (which it reports back, resolved).
    fn at(addr: &str) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_rpc-test-server"))
            .arg(addr)
            .stdout(Stdio::piped())
            .spawn()
            .expect("the test server starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line).expect("a ready line");
        let addr =
            line.trim().strip_prefix("listening ").unwrap_or_else(|| panic!("bad ready line {line:?}")).to_owned();
        Server { child, addr }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Ok(addr) = self.addr.parse() {
            registry::remove_endpoint(&addr);
        }
    }
}

/// A server over tcp (available everywhere: it must start), then one over shm where the platform
/// has it, each started when the loop gets to it.
fn tcp_and_shm() -> impl Iterator<Item = (&'static str, Server)> {
    ["tcp", "shm"].into_iter().filter_map(|scheme| {
        let server = Server::start(scheme);
        assert!(server.is_some() || scheme != "tcp", "tcp is available everywhere");
        Some((scheme, server?))
    })
}

#[test]
fn eight_threads_share_one_blocking_client() {
    for scheme in ["tcp", "unix", "shm"] {
        let Some(server) = Server::start(scheme) else { continue };
        let calc = CalculatorBlockingClient::connect(&server.addr).unwrap();
        let (adds_before, _) = calc.stats().unwrap();
        std::thread::scope(|s| {
            for t in 0..8i64 {
                let calc = &calc;
                s.spawn(move || {
                    for i in 0..100i64 {
                        assert_eq!(calc.add(t, i).unwrap(), t + i, "{scheme}");
                    }
                    // A clone shares the connection and works from its own thread too.
                    assert_eq!(calc.clone().add(t, 1).unwrap(), t + 1);
                });
            }
        });
        let (adds_after, _) = calc.stats().unwrap();
        assert_eq!(adds_after - adds_before, 8 * 101, "{scheme}: every call reached the server once");
    }
}

#[test]
fn deadlines_errors_and_streams_are_those_of_the_async_client() {
    // Over tcp an answer comes after a call's first poll, over shm mostly within it: both the
    // runtime's `block_on` and the poll in place before it (see `rpc::blocking`) are taken.
    for (scheme, server) in tcp_and_shm() {
        let calc = CalculatorBlockingClient::connect(&server.addr).unwrap();
        assert_eq!(calc.div(1, 0), Err(CallError::App(MathError::DivisionByZero)), "{scheme}");
        let slow = calc.with_timeout(Duration::from_millis(50)).sleep(5_000);
        assert!(matches!(slow, Err(RpcError::DeadlineExceeded)), "{scheme}: {slow:?}");
        assert!(matches!(calc.boom(), Err(RpcError::RemotePanic { .. })), "{scheme}");
        assert_eq!(calc.add(2, 2).unwrap(), 4, "{scheme}: the connection survives them");
        assert_eq!(calc.sleep(20).unwrap(), 20, "{scheme}: an answer long after the first poll");

        let streams = StreamsBlockingClient::connect(&server.addr).unwrap();
        let items: Vec<u64> = streams.count(5, 0, 0).unwrap().map(|item| item.unwrap().0).collect();
        assert_eq!(items, [0, 1, 2, 3, 4], "{scheme}");
        // Dropping a stream half-read cancels it; the client goes on.
        let mut endless = streams.count(u64::MAX, 0, 1).unwrap();
        assert_eq!(endless.next().unwrap().unwrap().0, 0, "{scheme}");
        drop(endless);
        // A stream argument is sent by a task of its own, which must run while the caller waits.
        assert_eq!(streams.sum(u64::MAX, rpc::Stream::from_iter(1..=10u64)).unwrap(), 55, "{scheme}");
        assert_eq!(calc.add(3, 4).unwrap(), 7, "{scheme}");
    }

    let missing = CalculatorBlockingClient::connect("tcp://127.0.0.1:1").unwrap_err();
    assert!(matches!(missing, RpcError::Io(_) | RpcError::Disconnected { .. }), "{missing:?}");
}

#[test]
fn a_reconnecting_blocking_client_survives_a_restarted_server() {
    // Its watch is a task alive on the blocking runtime all along: calls answered within their
    // first poll (over shm) leave it unrun, and it must still notice the dead connection while
    // a later call waits, so that the client dials again.
    for (scheme, server) in tcp_and_shm() {
        let addr = server.addr.clone();
        let reconnect =
            ReconnectOptions::new().initial_delay(Duration::from_millis(20)).give_up_after(Duration::from_secs(5));
        let options = ClientOptions::new().reconnect(reconnect).call_timeout(Duration::from_secs(10));
        let calc = CalculatorBlockingClient::connect_with(&addr, options).unwrap();
        for i in 0..1000 {
            assert_eq!(calc.add(i, 1).unwrap(), i + 1, "{scheme}");
        }
        drop(server);
        let _server = Server::at(&addr);
        // A call that went out on the dead connection fails (once: it is not retried); then the
        // client dials the new server.
        let answered = (0..50).find_map(|_| match calc.add(2, 3) {
            Ok(sum) => Some(sum),
            Err(RpcError::Disconnected { .. } | RpcError::Io(_)) => {
                std::thread::sleep(Duration::from_millis(20));
                None
            }
            Err(other) => panic!("{scheme}: {other:?}"),
        });
        assert_eq!(answered, Some(5), "{scheme}: answered by the restarted server");
        let (adds, _) = calc.stats().unwrap();
        for i in 0..1000 {
            assert_eq!(calc.add(i, 2).unwrap(), i + 2, "{scheme}");
        }
        assert_eq!(calc.stats().unwrap().0 - adds, 1000, "{scheme}: every call reached the new server once");
    }
}

#[test]
fn a_blocking_call_inside_async_code_panics_with_advice() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let panic = runtime
        .block_on(async { std::panic::catch_unwind(|| CalculatorBlockingClient::connect("tcp://127.0.0.1:1")) })
        .unwrap_err();
    let message = panic.downcast_ref::<&str>().copied().unwrap_or_default();
    assert!(message.contains("use the async client"), "{message:?}");
}
