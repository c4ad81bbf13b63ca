//! Load: a thousand client connections to one server process, a million calls, every call
//! answered exactly once (counted by the clients and by the server), server memory bounded and
//! given back once the clients leave; and what happens at the file-descriptor limit.
//!
//! The server is the `rpc-test-server` helper, a real process; the clients are this process.
//! Memory is read from /proc/PID/status (VmRSS), descriptors from /proc/PID/fd.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt};
use rpc::{ClientOptions, RpcError};
use rpc_tests::CalculatorClient;
use support::ServerProcess as Server;

const CONNECTIONS: usize = 1000;
const CALLS: u64 = 1_000_000;
/// Calls each connection keeps in flight.
const WINDOW: usize = 64;

/// Server RSS may grow by this much over its idle size while serving the load (measured on a
/// 2-vCPU VM: see the figures each run prints).
/// Measured: +8 MiB (7 KiB per idle connection, +1 MiB under the calls).
const PEAK_GROWTH_KIB: u64 = 64 * 1024;
/// And must be back within this much of its idle size once every client is gone (the server
/// runs with `--trim-ms`, so freed memory goes back to the OS). Measured: +0.8 MiB.
const AFTER_GROWTH_KIB: u64 = 8 * 1024;

async fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Connects `n` clients at once.
async fn connect_all(addr: &str, n: usize) -> Vec<CalculatorClient> {
    let connects: FuturesUnordered<_> = (0..n).map(|_| CalculatorClient::connect(addr)).collect();
    connects.map(|client| client.expect("connect")).collect().await
}

async fn thousand_connections_a_million_calls(addr: &str) {
    let limit = rpc::raise_fd_limit().expect("raise RLIMIT_NOFILE");
    assert!(limit as usize > CONNECTIONS + 100, "this test needs {CONNECTIONS} descriptors; the hard limit is {limit}");
    let server = Server::start(addr, &["--trim-ms", "200"]).await;
    let fds_idle = server.open_fds();
    let rss_idle = server.rss_kib();
    let started = Instant::now();
    let clients = connect_all(&server.addr, CONNECTIONS).await;
    let connected = started.elapsed();
    assert_eq!(server.open_fds(), fds_idle + CONNECTIONS, "one descriptor per connection");
    let rss_connected = server.rss_kib();

    // Sample the server's memory while the calls run.
    let peak = Arc::new(AtomicU64::new(rss_connected));
    let sampling = Arc::new(AtomicU64::new(1));
    let sampler = tokio::spawn({
        let (peak, sampling) = (Arc::clone(&peak), Arc::clone(&sampling));
        let pid = server.pid();
        async move {
            while sampling.load(Ordering::Relaxed) == 1 {
                let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
                let rss: u64 = status
                    .lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
                    .unwrap();
                peak.fetch_max(rss, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
    });

    let answered = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let per_client = CALLS / CONNECTIONS as u64;
    let calls_started = Instant::now();
    let tasks: Vec<_> = clients
        .iter()
        .enumerate()
        .map(|(c, calc)| {
            let calc = calc.clone();
            let (answered, failed) = (Arc::clone(&answered), Arc::clone(&failed));
            tokio::spawn(async move {
                let base = c as i64 * 1_000_000;
                let mut next = 0;
                let mut in_flight = FuturesUnordered::new();
                loop {
                    while in_flight.len() < WINDOW && next < per_client as i64 {
                        let call = calc.add(base, next);
                        let expected = base + next;
                        in_flight.push(async move { (call.await, expected) });
                        next += 1;
                    }
                    let Some((result, expected)) = in_flight.next().await else { break };
                    match result {
                        Ok(sum) => {
                            assert_eq!(sum, expected, "a call got another call's answer");
                            answered.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            eprintln!("call failed: {e}");
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let calls_took = calls_started.elapsed();
    sampling.store(0, Ordering::Relaxed);
    sampler.await.unwrap();
    let answered = answered.load(Ordering::Relaxed);
    let failed = failed.load(Ordering::Relaxed);
    let served = clients[0].stats().await.unwrap().0;
    let rss_peak = peak.load(Ordering::Relaxed).max(server.rss_kib());

    drop(clients);
    wait_until("the server closes every connection", Duration::from_secs(20), || server.open_fds() == fds_idle).await;
    // The allocator may hand pages back a little after the frees.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_after = server.rss_kib();
    eprintln!(
        "{addr}: {CONNECTIONS} connections in {connected:?}; {CALLS} calls ({WINDOW} in flight per connection) in \
         {calls_took:?} = {:.0} calls/s; answered {answered}, failed {failed}, counted by the server {served}, \
         lost {}; server RSS idle {rss_idle} KiB, {CONNECTIONS} connected {rss_connected} KiB, peak {rss_peak} KiB, \
         after the clients left {rss_after} KiB",
        CALLS as f64 / calls_took.as_secs_f64(),
        CALLS - answered - failed,
    );
    assert_eq!(failed, 0, "calls failed");
    assert_eq!(answered, CALLS, "every call answered on the client's side");
    assert_eq!(served, CALLS, "every call ran exactly once on the server's side");
    assert!(rss_peak < rss_idle + PEAK_GROWTH_KIB, "server RSS grew from {rss_idle} KiB to {rss_peak} KiB");
    assert!(rss_after < rss_idle + AFTER_GROWTH_KIB, "server RSS stayed at {rss_after} KiB (idle {rss_idle} KiB)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_local_connections_a_million_calls() {
    thousand_connections_a_million_calls(&format!("local://rpc-load-{}", std::process::id())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_tcp_connections_a_million_calls() {
    thousand_connections_a_million_calls("tcp://127.0.0.1:0").await;
}

/// The server's soft descriptor limit in the limit tests.
const NOFILE: usize = 64;

/// At its descriptor limit (`nofile`) the server keeps serving the connections it has, neither
/// spins nor hangs, and serves waiting clients once descriptors free up; a client that cannot
/// wait gets a clear error (or, where a connect completes only when the server accepts, no
/// connection). Setting up a connection takes at most `per_connection` descriptors in the
/// server; where that is more than one, [`at_the_descriptor_limits`] runs this at every limit
/// from `NOFILE` to `NOFILE + per_connection - 1`, so that the accept that runs out fails at
/// each of its opens in turn, whatever number of descriptors the server inherited.
async fn at_the_descriptor_limit(addr: &str, nofile: usize, per_connection: usize) {
    rpc::raise_fd_limit().expect("raise RLIMIT_NOFILE");
    let server = Server::start(addr, &["--nofile", &nofile.to_string()]).await;
    let impatient = ClientOptions::default().handshake_timeout(Duration::from_millis(500));
    let mut clients = Vec::new();
    let refused = loop {
        // Over sockets and FIFOs the connect completes (the backlog has room) and the hello is
        // what waits; over shm:// and mq:// the connect itself waits for the server's accept.
        let attempt = CalculatorClient::connect_with(&server.addr, impatient.clone());
        match tokio::time::timeout(Duration::from_secs(1), attempt).await {
            Ok(Ok(client)) => clients.push(client),
            Ok(Err(RpcError::Disconnected { reason, .. })) if reason.contains("no answer to the hello") => {
                break reason
            }
            Ok(Err(other)) => panic!("expected a clear handshake error, got {other:?}"),
            Err(_) => break "the connect waited (no answer within 1 s)".into(),
        }
        assert!(clients.len() <= nofile, "the server accepted more connections than it has descriptors");
    };
    eprintln!(
        "{addr}: at a limit of {nofile} descriptors the server took {} connections; then: {refused}",
        clients.len()
    );
    let fds = server.open_fds();
    assert!(fds + per_connection > nofile, "the server is at its limit ({nofile}): {fds} open");
    assert!(clients.len() > 5, "the server took only {} connections", clients.len());

    // A patient client waits in the backlog while the server retries its accepts: not a spin.
    let waiting = tokio::spawn({
        let addr = server.addr.clone();
        async move { CalculatorClient::connect(&addr).await }
    });
    let cpu_before = server.cpu_time();
    let wall = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let cpu = server.cpu_time() - cpu_before;
    eprintln!("{addr}: the server used {cpu:?} of CPU in {:?} at its limit", wall.elapsed());
    assert!(cpu < Duration::from_millis(300), "the server spins at its limit: {cpu:?} of CPU in 1 s");
    assert_eq!(clients[0].add(1, 2).await.unwrap(), 3, "connections it has are served");
    assert!(!waiting.is_finished(), "no descriptor for it yet");

    // Descriptors free up: the waiting client is served.
    clients.truncate(clients.len() - 5);
    let calc = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the waiting client is served once descriptors free up")
        .unwrap()
        .unwrap();
    assert_eq!(calc.add(2, 2).await.unwrap(), 4);
    assert_eq!(clients.last().unwrap().add(3, 3).await.unwrap(), 6);
}

/// Descriptors a server needs at once to set up a connection of `transport` (the registry's fact).
fn setup_fds(transport: &str) -> usize {
    support::scheme(transport).descriptors_during_setup
}

/// [`at_the_descriptor_limit`] at each limit that matters, one after another (each server gets
/// its own address from `addr`).
async fn at_the_descriptor_limits(addr: impl Fn(usize) -> String, per_connection: usize) {
    for nofile in NOFILE..NOFILE + per_connection {
        at_the_descriptor_limit(&addr(nofile), nofile, per_connection).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_descriptor_limit_over_local() {
    at_the_descriptor_limits(|n| format!("local://rpc-load-limit-{}-{n}", std::process::id()), setup_fds("local"))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_descriptor_limit_over_tcp() {
    at_the_descriptor_limits(|_| "tcp://127.0.0.1:0".to_owned(), setup_fds("tcp")).await;
}

/// Two FIFOs a connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_descriptor_limit_over_fifo() {
    /// Removes the FIFOs' directory however the test ends.
    struct TempDir(std::path::PathBuf);
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let dir = TempDir(std::env::temp_dir().join(format!("rpc-load-fifo-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    // A directory per server: a killed server's directory is removed with it.
    let addr = |n: usize| {
        let sub = dir.0.join(n.to_string());
        std::fs::create_dir_all(&sub).unwrap();
        format!("fifo://{}", sub.join("calc").display())
    };
    at_the_descriptor_limits(addr, setup_fds("fifo")).await;
}

/// The setup socket, the memory and one end of the bell socketpair (both closed once sent), the
/// other end, and a pidfd on the client for each half.
#[cfg(any(target_os = "linux", target_os = "android"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_descriptor_limit_over_shm() {
    at_the_descriptor_limits(|n| format!("shm://rpc-load-limit-{}-{n}", std::process::id()), setup_fds("shm")).await;
}

/// The two queues, a pidfd on the client for each half, and a moment's duplicate of the
/// outgoing queue to answer the client with.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_descriptor_limit_over_mq() {
    at_the_descriptor_limits(|n| format!("mq://rpc-load-limit-{}-{n}", std::process::id()), setup_fds("mq")).await;
}
