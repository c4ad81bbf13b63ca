//! The conformance suite: the same checks against every transport. A transport in the registry
//! (`rpc::transports::registry`) without a line of its own in the `conformance!` lists at the
//! bottom is checked by `registered::every_other_transport`; addresses, what a server leaves on
//! disk and raw streams all come from the registry.
//!
//! Transports that cross processes are served by the `rpc-test-server` helper binary started as
//! a real process; `mem://` is served in-process; for `spawn:` every client starts its own
//! `rpc-test-server --stdio` child (see [`Mode::Spawn`]).

#[path = "conformance/streams.rs"]
mod streams;
mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rpc::transports::registry;
use rpc::wire::{self, Frame, RemoteError, RequestHeader};
use rpc::{CallError, CloseCode, RpcError};
use rpc_tests::{CalculatorClient, GreeterClient, MathError};
use streams::*;
use support::{cpu_time, open_fds, raw_stream, rss_kib, unique, RawStream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

/// A running test server.
struct TestServer {
    addr: String,
    kind: ServerKind,
}

enum ServerKind {
    Process(Child),
    /// The children that `spawn:` clients start for themselves announce their pids as files in
    /// this directory while they run.
    Spawn {
        pid_dir: std::path::PathBuf,
    },
    InProcess {
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        task: tokio::task::JoinHandle<std::io::Result<()>>,
    },
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Process,
    InProcess,
    /// The "server" is `rpc-test-server --stdio`, started by each client that connects to the
    /// `spawn:` address `TestServer::start` returns (the `addr` argument is ignored).
    Spawn,
}

/// What a test server speaks.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Protocol {
    /// Our services (`Calculator`, `Greeter`) through our engine.
    Rpc,
    /// The `#[tarpc::service]` `TarpcCalculator` through tarpc's engine, over our transport.
    Tarpc,
}

impl TestServer {
    async fn start(addr: &str, mode: Mode) -> TestServer {
        Self::start_full(addr, mode, Protocol::Rpc, &[]).await
    }

    /// Starts a server process with extra `rpc-test-server` options (timeouts, limits).
    async fn start_with(addr: &str, mode: Mode, options: &[&str]) -> TestServer {
        Self::start_full(addr, mode, Protocol::Rpc, options).await
    }

    /// Starts a server of the tarpc test service.
    async fn start_tarpc(addr: &str, mode: Mode) -> TestServer {
        Self::start_full(addr, mode, Protocol::Tarpc, &[]).await
    }

    async fn start_full(addr: &str, mode: Mode, protocol: Protocol, options: &[&str]) -> TestServer {
        let tarpc_flag: &[&str] = if protocol == Protocol::Tarpc { &["--tarpc"] } else { &[] };
        match mode {
            Mode::Process => {
                let args: Vec<&str> = tarpc_flag.iter().chain(options).copied().chain([addr]).collect();
                let (child, addr) = support::start_server_helper(&args).await;
                TestServer { addr, kind: ServerKind::Process(child) }
            }
            Mode::Spawn => {
                assert!(options.is_empty(), "spawn: children take no server options here");
                let pid_dir = std::env::temp_dir().join(unique("rpc-conf-spawn"));
                std::fs::create_dir_all(&pid_dir).unwrap();
                let flags: String = tarpc_flag.iter().map(|f| format!("{f}&")).collect();
                let addr = format!(
                    "spawn:{}?{flags}--stdio&--pid-dir&{}",
                    env!("CARGO_BIN_EXE_rpc-test-server"),
                    pid_dir.display()
                );
                TestServer { addr, kind: ServerKind::Spawn { pid_dir } }
            }
            Mode::InProcess => {
                assert!(options.is_empty(), "in-process servers take no options here");
                let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
                let stopped = async {
                    let _ = stopped.await;
                };
                let (addr, task) = match protocol {
                    Protocol::Rpc => {
                        let listener = rpc::listen(addr).await.expect("listen");
                        (listener.local_addr(), tokio::spawn(rpc_tests::test_server().serve_until(listener, stopped)))
                    }
                    Protocol::Tarpc => {
                        let incoming = rpc::tarpc::listen(addr).await.expect("listen");
                        let addr = incoming.local_addr().to_owned();
                        (
                            addr,
                            tokio::spawn(async move {
                                tokio::select! {
                                    () = rpc_tests::serve_tarpc(incoming) => Err(std::io::Error::other("listener failed")),
                                    () = stopped => Ok(()),
                                }
                            }),
                        )
                    }
                };
                TestServer { addr, kind: ServerKind::InProcess { stop: Some(stop), task } }
            }
        }
    }

    fn pid(&self) -> Option<u32> {
        match &self.kind {
            ServerKind::Process(child) => child.id(),
            ServerKind::InProcess { .. } | ServerKind::Spawn { .. } => None,
        }
    }

    /// The pids of the running `spawn:` children.
    fn child_pids(&self) -> Vec<libc::pid_t> {
        let ServerKind::Spawn { pid_dir } = &self.kind else { return Vec::new() };
        std::fs::read_dir(pid_dir)
            .unwrap()
            .filter_map(|entry| entry.unwrap().file_name().to_str()?.parse().ok())
            .collect()
    }

    /// Kills the server abruptly: SIGKILL for a process, abort for an in-process server.
    /// Returns when the kill was sent (before waiting for the process to end).
    async fn kill(&mut self) -> Instant {
        match &mut self.kind {
            ServerKind::Process(child) => {
                let at = Instant::now();
                child.start_kill().unwrap();
                child.wait().await.unwrap();
                at
            }
            ServerKind::InProcess { task, .. } => {
                let at = Instant::now();
                task.abort();
                let _ = task.await;
                at
            }
            ServerKind::Spawn { .. } => {
                let pids = self.child_pids();
                let ServerKind::Spawn { pid_dir } = &self.kind else { unreachable!() };
                assert!(!pids.is_empty(), "no spawned child to kill");
                let at = Instant::now();
                for pid in pids {
                    // SAFETY: plain kill(2); the pid file exists only while that child runs.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                    // It cannot remove its own file any more.
                    let _ = std::fs::remove_file(pid_dir.join(pid.to_string()));
                }
                at
            }
        }
    }

    /// Asks for a graceful shutdown (SIGTERM / the stop signal) and waits for the server to end.
    async fn terminate(&mut self) -> bool {
        match &mut self.kind {
            ServerKind::Process(child) => {
                let pid = child.id().expect("running") as libc::pid_t;
                // SAFETY: plain kill(2) on our own child's pid, which has not been reaped yet.
                assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
                child.wait().await.unwrap().success()
            }
            ServerKind::InProcess { stop, task } => {
                let _ = stop.take().expect("not stopped yet").send(());
                task.await.unwrap().is_ok()
            }
            ServerKind::Spawn { .. } => panic!("a spawn: child has no shared server to terminate"),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let ServerKind::Process(child) = &mut self.kind {
            let _ = child.start_kill();
        }
        if let ServerKind::Spawn { pid_dir } = &self.kind {
            for pid in self.child_pids() {
                // SAFETY: plain kill(2); the pid file exists only while that child runs.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            let _ = std::fs::remove_dir_all(pid_dir);
        }
        // A killed server cannot remove its endpoint (the next server on the name would reclaim
        // it; there is none).
        support::remove_endpoint(&self.addr);
    }
}

async fn wait_until<F: std::future::Future<Output = bool>>(mut cond: impl FnMut() -> F) {
    let start = Instant::now();
    while !cond().await {
        assert!(start.elapsed() < Duration::from_secs(10), "condition not reached within 10 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A server's descriptor count once it holds still, for a baseline that later counts are
/// compared with. A server briefly holds descriptors that belong to no connection (an `mq://`
/// listener accepts and drops each lock probe of a connecting client, and holds a second end of
/// a queue while it answers a connect request). A single read that falls in such a moment (a
/// server preempted there on a loaded machine stays in it for milliseconds) gives a baseline
/// one too high, which the server then never returns to: the wait that follows fails although
/// nothing leaked. So the count must read the same several times in a row.
async fn settled_fds(pid: u32) -> usize {
    const READS: usize = 5;
    let start = Instant::now();
    let mut last = open_fds(pid);
    let mut same = 1;
    while same < READS {
        assert!(start.elapsed() < Duration::from_secs(10), "the server's descriptor count did not settle within 10 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
        let now = open_fds(pid);
        if now == last {
            same += 1;
        } else {
            (last, same) = (now, 1);
        }
    }
    last
}

impl TestServer {
    /// The files a killed server cannot remove.
    fn endpoint_files(&self) -> Vec<std::path::PathBuf> {
        support::endpoint_files(&self.addr)
    }
}

/// What a test may leave behind, compared before and after: entries in `/dev/shm` and
/// `/dev/mqueue` (where mounted), in a `fifo://` address's directory, and socket files (the
/// address's own, and the temporary names `unix://` listeners bind first) next to a `unix://`
/// address.
///
/// Other tests run in parallel and own entries of their own in the shared directories, so a new
/// entry counts only if nobody can still be using it: an shm or mqueue entry that no live
/// process has open or mapped, a temporary socket name whose creator (the pid in its name) is
/// gone.
struct Leftovers {
    before: Vec<(std::path::PathBuf, Vec<String>)>,
    /// For `unix://`: the socket file's name, in the first watched directory after the shared ones.
    socket_name: Option<String>,
}

const SHARED_DIRS: [&str; 2] = ["/dev/shm", "/dev/mqueue"];

impl Leftovers {
    fn snapshot(addr: &str) -> Leftovers {
        let mut dirs: Vec<std::path::PathBuf> = SHARED_DIRS.iter().map(std::path::PathBuf::from).collect();
        let mut socket_name = None;
        // (A `spawn:` check passes no address: its children are started per client.)
        let parsed: Option<rpc::transports::Address> = addr.parse().ok();
        if let Some((parsed, (dir, private))) = parsed.as_ref().and_then(|a| Some((a, registry::endpoint_dir(a)?))) {
            if !private {
                let files = registry::endpoint_files(parsed);
                socket_name = files.first().and_then(|f| f.file_name()).map(|n| n.to_string_lossy().into_owned());
            }
            dirs.push(dir);
        }
        let before = dirs.into_iter().map(|dir| (dir.clone(), entries_if_any(&dir))).collect();
        Leftovers { before, socket_name }
    }

    /// The entries that appeared since the snapshot and that nobody can be using any more.
    fn new_entries(&self, exempt: &[std::path::PathBuf]) -> Vec<std::path::PathBuf> {
        let mut found = Vec::new();
        for (dir, before) in &self.before {
            for name in entries_if_any(dir) {
                let path = dir.join(&name);
                if before.contains(&name) || exempt.contains(&path) {
                    continue;
                }
                let counts = if SHARED_DIRS.iter().any(|shared| dir == std::path::Path::new(shared)) {
                    !held_by_a_live_process(&path)
                } else if self.socket_name.is_some() {
                    // The shared temp directory: only our socket file and dead listeners' temp names.
                    Some(&name) == self.socket_name.as_ref() || temp_socket_of_a_dead_process(&name)
                } else {
                    true
                };
                if counts {
                    found.push(path);
                }
            }
        }
        found
    }

    /// Waits (briefly: removal may lag the test's last step) until nothing new is left.
    async fn assert_nothing_new(&self, exempt: &[std::path::PathBuf]) {
        let start = Instant::now();
        loop {
            let left = self.new_entries(exempt);
            if left.is_empty() {
                return;
            }
            assert!(start.elapsed() < Duration::from_secs(10), "left behind: {left:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn entries_if_any(dir: &std::path::Path) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries.filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned())).collect(),
        Err(_) => Vec::new(),
    }
}

/// Whether any process we can see has `path` open or mapped.
fn held_by_a_live_process(path: &std::path::Path) -> bool {
    let Ok(procs) = std::fs::read_dir("/proc") else { return false };
    let needle = path.to_string_lossy();
    // A message queue's descriptor links to `/<name>`, wherever the mqueue file system is mounted.
    let queue = path.strip_prefix("/dev/mqueue").ok().map(|name| std::path::Path::new("/").join(name));
    procs.filter_map(Result::ok).filter(|p| p.file_name().to_string_lossy().parse::<u32>().is_ok()).any(|proc_dir| {
        let fds = std::fs::read_dir(proc_dir.path().join("fd")).into_iter().flatten().filter_map(Result::ok);
        let open = fds
            .filter_map(|fd| std::fs::read_link(fd.path()).ok())
            .any(|target| target == path || queue.as_ref() == Some(&target));
        open || std::fs::read_to_string(proc_dir.path().join("maps")).is_ok_and(|maps| maps.contains(&*needle))
    })
}

/// A temporary name a listener binds before linking (the registry knows its form) of a process
/// that is gone.
fn temp_socket_of_a_dead_process(name: &str) -> bool {
    registry::temp_name_owner(name).is_some_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
}

// ---------------------------------------------------------------------------------------------
// The checks. Each takes the address to listen on and how to run the server.

async fn basic_call(addr: String, mode: Mode) {
    let server = TestServer::start(&addr, mode).await;
    let calc = CalculatorClient::connect(&server.addr).await.unwrap();
    assert_eq!(calc.add(1, 2).await.unwrap(), 3);
    assert_eq!(calc.version().await.unwrap(), env!("CARGO_PKG_VERSION"));
    assert_eq!(calc.div(7, 2).await.unwrap(), 3);
    calc.echo(Vec::new()).await.unwrap();
}

async fn several_services_on_one_address(addr: String, mode: Mode) {
    let server = TestServer::start(&addr, mode).await;
    let calc = CalculatorClient::connect(&server.addr).await.unwrap();
    let greeter = GreeterClient::connect(&server.addr).await.unwrap();
    assert_eq!(greeter.greet("ann".into()).await.unwrap(), "hello, ann");
    assert_eq!(calc.add(2, 2).await.unwrap(), 4);
}

async fn many_clients_many_concurrent_calls(addr: String, mode: Mode) {
    const CLIENTS: i64 = 10;
    const CALLS: i64 = 1000;
    let server = TestServer::start(&addr, mode).await;
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let calc = CalculatorClient::connect(&server.addr).await.unwrap();
        tasks.push(tokio::spawn(async move {
            let calls: Vec<_> = (0..CALLS)
                .map(|i| {
                    let calc = calc.clone();
                    tokio::spawn(async move { (i, calc.add(c * 1_000_000, i).await) })
                })
                .collect();
            let mut answered = 0;
            for call in calls {
                let (i, result) = call.await.unwrap();
                assert_eq!(result.unwrap(), c * 1_000_000 + i, "call {i} of client {c} got another's answer");
                answered += 1;
            }
            answered
        }));
    }
    let mut answered = 0;
    for t in tasks {
        answered += t.await.unwrap();
    }
    assert_eq!(answered, CLIENTS * CALLS);
    // Count on the server's side too: every call ran exactly once.
    let calc = CalculatorClient::connect(&server.addr).await.unwrap();
    assert_eq!(calc.stats().await.unwrap().0, (CLIENTS * CALLS) as u64);
}

async fn app_error_is_delivered_intact(addr: String, mode: Mode) {
    let server = TestServer::start(&addr, mode).await;
    let calc = CalculatorClient::connect(&server.addr).await.unwrap();
    match calc.div(1, 0).await {
        Err(CallError::App(MathError::DivisionByZero)) => {}
        other => panic!("expected the application error, got {other:?}"),
    }
    // And it converts with `?` into the usual boxed error.
    let boxed = async { Ok::<_, Box<dyn std::error::Error + Send + Sync>>(calc.div(1, 0).await?) }.await;
    assert_eq!(boxed.unwrap_err().to_string(), "division by zero");
}

async fn unknown_method_from_a_hand_made_frame(addr: String, mode: Mode) {
    let server = TestServer::start(&addr, mode).await;
    let mut conn = raw_hello(&server.addr).await;
    let request =
        wire::encode_request(RequestHeader { id: 7, method: 0xdead_beef, timeout_us: None }, &()).unwrap().to_vec();
    rpc::transport::send(&mut *conn.sender, Bytes::from(request)).await.unwrap();
    let answer = rpc::transport::recv(&mut *conn.receiver).await.unwrap().expect("an answer");
    assert_eq!(
        wire::decode(&answer).unwrap(),
        Frame::ResponseErr { id: 7, error: RemoteError::UnknownMethod { id: 0xdead_beef } }
    );
    // Through the typed client it is `UnknownMethod` too (a client whose descriptor has a method
    // the server lacks is refused at connect instead: see the interface mismatch check).
    let calc = CalculatorClient::connect(&server.addr).await.unwrap();
    assert_eq!(calc.add(1, 1).await.unwrap(), 2);
}

/// Connects at the frame level and completes a valid hello for `Calculator`.
async fn raw_hello(addr: &str) -> rpc::transport::Connection {
    let mut conn = rpc::transports::connect(addr).await.unwrap();
    let desc = CalculatorClient::DESCRIPTOR;
    let hello = wire::Hello {
        service: desc.name.into(),
        methods: desc
            .methods
            .iter()
            .map(|m| wire::MethodSignature { name: m.name.into(), signature: m.signature.into() })
            .collect(),
        stream_window: wire::DEFAULT_STREAM_WINDOW,
    };
    rpc::transport::send(&mut *conn.sender, Bytes::from(wire::encode_hello(&hello))).await.unwrap();
    let reply = rpc::transport::recv(&mut *conn.receiver).await.unwrap().unwrap();
    assert!(matches!(
        wire::decode(&reply).unwrap(),
        Frame::HelloReply { version: wire::PROTOCOL_VERSION, reply: Some(wire::HelloReply::Accepted { .. }) }
    ));
    conn
}

async fn deadline_exceeded_stops_the_handler(addr: String, mode: Mode) {
    let server = TestServer::start(&addr, mode).await;
    let calc = CalculatorClient::connect(&server.addr).await.unwrap();
    let started = Instant::now();
    let err = calc.with_timeout(Duration::from_millis(100)).sleep(30_000).await.unwrap_err();
    assert_eq!(err, RpcError::DeadlineExceeded);
    assert!(started.elapsed() < Duration::from_secs(10));
    wait_until(|| async { calc.stats().await.unwrap().1 == 1 }).await;
    // The common call is unaffected by the option used on a copy of the client.
    assert_eq!(calc.sleep(1).await.unwrap(), 1);
}

async fn dropping_a_call_cancels_the_handler(addr: String, mode: Mode) {
    let server = TestServer::start(&addr, mode).await;
    let calc = CalculatorClient::connect(&server.addr).await.unwrap();
    let call = calc.sleep(30_000);
    assert!(tokio::time::timeout(Duration::from_millis(100), call).await.is_err(), "sleep returned early");
    wait_until(|| async { calc.stats().await.unwrap().1 == 1 }).await;
}

async fn handler_panic_is_reported(addr: String, mode: Mode) {
    let server = TestServer::start(&addr, mode).await;
    let calc = CalculatorClient::connect(&server.addr).await.unwrap();
    match calc.boom().await {
        Err(RpcError::RemotePanic { message }) => assert_eq!(message, "boom on purpose"),
        other => panic!("expected RemotePanic, got {other:?}"),
    }
    assert_eq!(calc.add(1, 2).await.unwrap(), 3);
}

mod v2 {
    /// `Calculator` as another build might define it: `add` takes `i32`s.
    #[rpc::service(name = "Calculator")]
    pub trait OtherCalculator {
        async fn add(&self, a: i32, b: i32) -> i32;
        async fn sub(&self, a: i64, b: i64) -> i64;
    }
}

async fn interface_mismatch_is_refused_at_connect(addr: String, mode: Mode) {
    let server = TestServer::start(&addr, mode).await;
    match v2::OtherCalculatorClient::connect(&server.addr).await {
        Err(RpcError::InterfaceMismatch { service, differences }) => {
            assert_eq!(service, "Calculator");
            let text = differences.join("\n");
            assert!(text.contains("`add` is `(i32, i32) -> i32` on the client"), "{text}");
            assert!(text.contains("`sub` does not exist on the server"), "{text}");
        }
        other => panic!("expected InterfaceMismatch, got {other:?}"),
    }
    match rpc::connect_service(&server.addr, &rpc::ServiceDescriptor { name: "Nope", methods: &[] }).await {
        // The built-in reflection service is served too.
        Err(RpcError::UnknownService { available, .. }) => {
            assert_eq!(available, ["Calculator", "Greeter", "Streams", rpc::reflection::REFLECTION_SERVICE])
        }
        other => panic!("expected UnknownService, got {other:?}"),
    }
}

/// Results and stream items filled in place (`CallContext::loan`) arrive whole: over `shm://`
/// from the connection's shared memory (the handler's loan says so), elsewhere from the heap;
/// a lent item sent again and again too (over `shm://` by reference). Far more than the
/// server's slab holds crosses, one call after another and many at once, so lent blocks must
/// come back and a full slab must fall back to the heap rather than stall.
async fn loans_fill_results_in_place(addr: String, mode: Mode) {
    let server = TestServer::start(&addr, mode).await;
    let streams = rpc_tests::StreamsClient::connect(&server.addr).await.unwrap();
    let lends = server.addr.starts_with("shm://");
    let check = |len: u32, seed: u8, (shared, bytes): (bool, rpc::Bytes)| {
        assert_eq!(bytes.len(), len as usize);
        let wrong = bytes.iter().enumerate().position(|(i, &b)| b != seed.wrapping_add(i as u8));
        assert_eq!(wrong, None, "the first wrong byte of {len} (seed {seed}) over {addr}");
        shared
    };
    // Too small to be worth lending, then large enough.
    for (len, lent) in [(100, false), (16 * 1024, lends), (1 << 20, lends), (3 << 20, lends)] {
        let shared = check(len, 9, streams.fill(len, 9).await.unwrap());
        assert_eq!(shared, lent, "a loan of {len} bytes");
    }
    // 40 MiB one call after another through the 16 MiB slab: every block comes back.
    for seed in 0..40 {
        assert_eq!(check(1 << 20, seed, streams.fill(1 << 20, seed).await.unwrap()), lends, "call {seed}");
    }
    // 24 calls of 2 MiB at once, more than the slab holds: all arrive (those the server lends
    // while the slab is full are heap buffers).
    let calls = (0..24u8).map(|seed| {
        let streams = streams.clone();
        async move { (seed, streams.fill(2 << 20, seed).await.unwrap()) }
    });
    for (seed, answer) in futures_util::future::join_all(calls).await {
        check(2 << 20, seed, answer);
    }
    // Stream items, lent by the producing task: each filled afresh, then one sent 100 times
    // (over shm:// by reference from the second on, 32 at most in flight).
    for same in [false, true] {
        let mut items = streams.fills(100, 64 * 1024, same).await.unwrap();
        let mut k = 0u32;
        while let Some(item) = items.next().await {
            let seed = if same { 0 } else { k as u8 };
            assert_eq!(check(64 * 1024, seed, item.unwrap()), lends, "item {k}");
            k += 1;
        }
        assert_eq!(k, 100);
    }
    // Nothing stayed lent or in flight: a loan of the whole slab (16 MiB by default) is shared
    // memory again.
    assert_eq!(check(16 << 20, 1, streams.fill(16 << 20, 1).await.unwrap()), lends);
}

async fn large_arguments(addr: String, mode: Mode) {
    let server = TestServer::start(&addr, mode).await;
    let calc = CalculatorClient::connect(&server.addr).await.unwrap();
    let data: Vec<u8> = (0..16 * 1024 * 1024).map(|i: u32| (i % 251) as u8).collect();
    assert_eq!(calc.echo(data.clone()).await.unwrap(), data);
    let too_big = vec![0u8; rpc::wire::DEFAULT_MAX_FRAME_LEN + 1];
    assert!(matches!(calc.echo(too_big).await, Err(RpcError::FrameTooLarge { .. })));
    assert_eq!(calc.add(1, 2).await.unwrap(), 3, "the connection survives a refused frame");
}

async fn garbage_frames_close_only_that_connection(addr: String, mode: Mode) {
    let server = TestServer::start(&addr, mode).await;
    let calc = CalculatorClient::connect(&server.addr).await.unwrap();
    let junk: [&[u8]; 4] = [b"", b"\xff\x00garbage", &wire::encode_cancel(1)[..], b"\x03short"];
    for bytes in junk {
        // Before a hello.
        let mut conn = rpc::transports::connect(&server.addr).await.unwrap();
        rpc::transport::send(&mut *conn.sender, Bytes::copy_from_slice(bytes)).await.unwrap();
        expect_closed(&mut conn).await;
        // After a hello.
        let mut conn = raw_hello(&server.addr).await;
        rpc::transport::send(&mut *conn.sender, Bytes::copy_from_slice(bytes)).await.unwrap();
        if bytes == &wire::encode_cancel(1)[..] {
            continue; // a cancel for an unknown call is fine after a hello
        }
        expect_closed(&mut conn).await;
    }
    // A hello of a future protocol version gets a typed refusal, then the connection closes.
    let mut conn = rpc::transports::connect(&server.addr).await.unwrap();
    let mut hello = wire::encode_hello(&wire::Hello {
        service: "Calculator".into(),
        methods: vec![],
        stream_window: wire::DEFAULT_STREAM_WINDOW,
    });
    hello[1..3].copy_from_slice(&99u16.to_le_bytes());
    rpc::transport::send(&mut *conn.sender, Bytes::from(hello)).await.unwrap();
    let reply = rpc::transport::recv(&mut *conn.receiver).await.unwrap().expect("a reply");
    assert_eq!(
        wire::decode(&reply).unwrap(),
        Frame::HelloReply { version: wire::PROTOCOL_VERSION, reply: Some(wire::HelloReply::VersionMismatch) }
    );
    expect_closed(&mut conn).await;
    assert_eq!(calc.add(40, 2).await.unwrap(), 42, "other connections are unaffected");
    assert_eq!(CalculatorClient::connect(&server.addr).await.unwrap().add(1, 1).await.unwrap(), 2);
}

/// Reads until the server closes; a goaway frame may come first.
async fn expect_closed(conn: &mut rpc::transport::Connection) {
    let read = async {
        loop {
            match rpc::transport::recv(&mut *conn.receiver).await {
                Ok(Some(frame)) => match wire::decode(&frame) {
                    Ok(Frame::Goaway { .. }) => continue,
                    other => panic!("unexpected frame {other:?}"),
                },
                Ok(None) | Err(_) => return,
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read).await.expect("the server closes a bad connection");
}

/// Byte-level abuse for stream transports: random bytes, and a 4 GiB length prefix.
async fn hostile_bytes_on_a_raw_stream(addr: String, mode: Mode) {
    let server = TestServer::start(&addr, mode).await;
    let calc = CalculatorClient::connect(&server.addr).await.unwrap();
    let rss_before = server.pid().map(rss_kib);
    for bytes in [&b"\xff\xff\xff\xff"[..], &b"GET / HTTP/1.1\r\n\r\n"[..], &[0xffu8; 64][..], &[7, 0, 0, 0, 1][..]] {
        let mut raw = raw_stream(&server.addr).await;
        raw.write_all(bytes).await.unwrap();
        raw.flush().await.unwrap();
        let mut sink = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(15), raw.read_to_end(&mut sink)).await;
        assert!(closed.is_ok(), "the server must close a connection that sent {bytes:?}");
    }
    if let (Some(before), Some(pid)) = (rss_before, server.pid()) {
        let after = rss_kib(pid);
        assert!(after < before + 64 * 1024, "server RSS grew from {before} KiB to {after} KiB");
    }
    assert_eq!(calc.add(1, 2).await.unwrap(), 3);
}

/// How soon after a SIGKILL of the server its pending calls must fail: the 100 ms issue 8
/// asks for, measured from the signal to each call's failure. Generous: the check prints what
/// it took, 0.3–1 ms on a loaded 2-vCPU VM.
const KILL_NOTICED_WITHIN: Duration = Duration::from_millis(100);

async fn killed_server_fails_pending_calls(addr: String, mode: Mode) {
    let leftovers = Leftovers::snapshot(&addr);
    let mut server = TestServer::start(&addr, mode).await;
    let addr = server.addr.clone(); // as announced (with the port), for the messages
    let calc = CalculatorClient::connect(&server.addr).await.unwrap();
    let pending: Vec<_> = (0..20)
        .map(|_| {
            let calc = calc.clone();
            tokio::spawn(async move { (calc.sleep(60_000).await, Instant::now()) })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let killed = server.kill().await;
    let mut slowest = Duration::ZERO;
    for call in pending {
        let (result, failed_at) =
            tokio::time::timeout(Duration::from_secs(10), call).await.expect("pending call hangs").unwrap();
        assert!(matches!(result, Err(RpcError::Disconnected { .. })), "{result:?}");
        slowest = slowest.max(failed_at.saturating_duration_since(killed));
    }
    eprintln!("{addr}: 20 pending calls failed at most {slowest:?} after the SIGKILL");
    assert!(slowest <= KILL_NOTICED_WITHIN, "pending calls failed only {slowest:?} after the kill");
    assert!(matches!(calc.add(1, 1).await, Err(RpcError::Disconnected { .. })));
    // A killed server cannot remove the endpoint it listens on (a socket file, a connect FIFO);
    // the next server reclaims it. Nothing else may stay.
    drop(calc);
    leftovers.assert_nothing_new(&server.endpoint_files()).await;
}

async fn graceful_shutdown_finishes_in_flight_calls(addr: String, mode: Mode) {
    let mut server = TestServer::start(&addr, mode).await;
    let calc = CalculatorClient::connect(&server.addr).await.unwrap();
    let slow = tokio::spawn({
        let calc = calc.clone();
        async move { calc.sleep(300).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(server.terminate().await, "the server exits cleanly");
    assert_eq!(slow.await.unwrap().unwrap(), 300, "the in-flight call finished");
    assert!(matches!(calc.add(1, 1).await, Err(RpcError::Disconnected { .. })));
    assert!(CalculatorClient::connect(&server.addr).await.is_err(), "no longer accepting");
}

// ---------------------------------------------------------------------------------------------
// Faults: killed clients, stalled connections. They need a server process to look into (its
// descriptors in /proc/PID/fd), so they run on every line with `Mode::Process`; `mem://` has no
// second process to kill, and a `spawn:` child serves exactly one client (its parent), so the
// spawn list has its own checks for a killed parent and a killed child instead.

/// A client SIGKILLed in the middle of its calls: the server stops those calls, closes the
/// connection (its descriptors return to the baseline) and keeps serving the others.
async fn killed_client_frees_its_connection(addr: String, mode: Mode) {
    const CALLS: u64 = 5;
    let server = TestServer::start(&addr, mode).await;
    let addr = server.addr.clone(); // as announced (with the port), for the messages
    let pid = server.pid().expect("a server process");
    let calc = CalculatorClient::connect(&server.addr).await.unwrap();
    assert_eq!(calc.add(1, 2).await.unwrap(), 3);
    let leftovers = Leftovers::snapshot(&addr);
    let baseline = settled_fds(pid).await;
    let stopped_before = calc.stats().await.unwrap().1;
    let mut client = client_process_with(&server.addr, &["--sleep-calls", &CALLS.to_string()]).await;
    wait_until(|| async { open_fds(pid) > baseline }).await;
    // The requests leave right after the connect; give them time to reach their handlers.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let killed = Instant::now();
    client.start_kill().unwrap();
    client.wait().await.unwrap();
    wait_until(|| async { open_fds(pid) == baseline }).await;
    let freed = killed.elapsed();
    // Every handler of the dead client was stopped, not left sleeping for a minute.
    wait_until(|| async { calc.stats().await.unwrap().1 == stopped_before + CALLS }).await;
    eprintln!("{addr}: server descriptors back to {baseline} {freed:?} after a client's SIGKILL");
    assert_eq!(calc.add(2, 2).await.unwrap(), 4, "the server keeps serving the others");
    assert_eq!(CalculatorClient::connect(&server.addr).await.unwrap().add(3, 3).await.unwrap(), 6);
    leftovers.assert_nothing_new(&[]).await;
}

/// A client that sends requests and never reads the answers: the server stops reading it once
/// its calls all wait to be answered (memory stays bounded), serves the others meanwhile, and
/// closes it after the send timeout.
async fn a_client_that_never_reads_is_held_back_then_closed(addr: String, mode: Mode) {
    const SEND_TIMEOUT_MS: u64 = 1000;
    let server = TestServer::start_with(&addr, mode, &["--send-timeout-ms", &SEND_TIMEOUT_MS.to_string()]).await;
    let addr = server.addr.clone(); // as announced (with the port), for the messages
    let pid = server.pid().expect("a server process");
    let calc = CalculatorClient::connect(&server.addr).await.unwrap();
    assert_eq!(calc.add(1, 2).await.unwrap(), 3);
    let baseline = settled_fds(pid).await;
    let rss_before = rss_kib(pid);
    let mut conn = raw_hello(&server.addr).await;
    let echo = CalculatorClient::DESCRIPTOR.method_by_name("echo").unwrap().id;
    let arg = (vec![7u8; 1024],);
    let mut sent = 0u64;
    let started = Instant::now();
    let held_back = loop {
        let request = wire::encode_request(RequestHeader { id: sent + 1, method: echo, timeout_us: None }, &arg)
            .unwrap()
            .to_vec();
        match tokio::time::timeout(Duration::from_millis(500), rpc::transport::send(&mut *conn.sender, request.into()))
            .await
        {
            Ok(Ok(())) => sent += 1,
            // Closed by the send timeout before our own send blocked for long.
            Ok(Err(_)) => break started.elapsed(),
            Err(_) => break started.elapsed(),
        }
        assert!(sent < 200_000, "the server kept reading from a client that reads nothing");
    };
    let rss_stalled = rss_kib(pid);
    eprintln!(
        "{addr}: a non-reading client got {sent} requests of 1 KiB in before it was held back ({held_back:?}); \
         server RSS {rss_before} -> {rss_stalled} KiB"
    );
    assert!(rss_stalled < rss_before + 64 * 1024, "server RSS grew from {rss_before} KiB to {rss_stalled} KiB");
    // The others are served meanwhile.
    let quick = tokio::time::timeout(Duration::from_secs(2), calc.add(40, 2)).await;
    assert_eq!(quick.expect("other clients are served while one does not read").unwrap(), 42);
    // The send timeout closes the connection that reads nothing.
    wait_until(|| async { open_fds(pid) == baseline }).await;
    let closed = started.elapsed();
    eprintln!("{addr}: the non-reading client's connection was closed {closed:?} after it started");
    assert!(closed >= Duration::from_millis(SEND_TIMEOUT_MS), "closed before the send timeout: {closed:?}");
    // What the client can still read are answers to its own calls, then the end.
    let drain = async {
        let mut answers = 0u64;
        while let Ok(Some(frame)) = rpc::transport::recv(&mut *conn.receiver).await {
            match wire::decode(&frame).unwrap() {
                Frame::ResponseOk { .. } => answers += 1,
                Frame::Goaway { .. } => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        answers
    };
    let answers = tokio::time::timeout(Duration::from_secs(10), drain).await.expect("the connection ends");
    assert!(answers < sent, "{answers} answers to {sent} requests: not all of them can have been sent");
    assert_eq!(calc.add(1, 1).await.unwrap(), 2);
}

/// A client process that runs out of descriptors gets a clear error, not a hang; the server
/// frees whatever the failed connect had started and keeps serving.
async fn client_at_its_descriptor_limit_gets_a_clear_error(addr: String, mode: Mode) {
    let server = TestServer::start(&addr, mode).await;
    let addr = server.addr.clone(); // as announced (with the port), for the messages
    let pid = server.pid().expect("a server process");
    let calc = CalculatorClient::connect(&server.addr).await.unwrap();
    let leftovers = Leftovers::snapshot(&addr);
    let baseline = settled_fds(pid).await;
    let client = Command::new(env!("CARGO_BIN_EXE_rpc-test-server"))
        .args(["--client", &server.addr, "--connections", "200", "--nofile", "32"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(20), client).await.expect("the client ends").unwrap();
    let line = String::from_utf8_lossy(&output.stdout);
    eprintln!("{addr}: a client limited to 32 descriptors: {}", line.trim());
    assert!(!output.status.success(), "200 connections cannot fit in 32 descriptors");
    assert!(line.starts_with("failed after "), "{line}");
    assert!(line.contains("too many open files"), "{line}");
    wait_until(|| async { open_fds(pid) == baseline }).await;
    assert_eq!(calc.add(1, 2).await.unwrap(), 3, "the server keeps serving");
    leftovers.assert_nothing_new(&[]).await;
}

/// The server's timeouts, short, for the stall checks: (option, milliseconds).
const SHORT_TIMEOUT_MS: u64 = 300;

/// A connection that never says hello is closed by the handshake timeout.
async fn silent_connection_is_closed_by_the_handshake_timeout(addr: String, mode: Mode) {
    let ms = SHORT_TIMEOUT_MS.to_string();
    let server = TestServer::start_with(&addr, mode, &["--handshake-timeout-ms", &ms]).await;
    let addr = server.addr.clone(); // as announced (with the port), for the messages
    let pid = server.pid().expect("a server process");
    let calc = CalculatorClient::connect(&server.addr).await.unwrap();
    let leftovers = Leftovers::snapshot(&addr);
    let baseline = settled_fds(pid).await;
    let started = Instant::now();
    let mut conn = rpc::transports::connect(&server.addr).await.unwrap();
    let reason = closed_with(&mut conn).await;
    let closed = started.elapsed();
    eprintln!("{addr}: a silent connection was closed after {closed:?}: {reason:?}");
    assert!(closed >= Duration::from_millis(SHORT_TIMEOUT_MS), "closed before the timeout: {closed:?}");
    assert_eq!(reason.map(|(code, _)| code), Some(CloseCode::HandshakeTimeout));
    drop(conn);
    wait_until(|| async { open_fds(pid) == baseline }).await;
    assert_eq!(calc.add(1, 2).await.unwrap(), 3, "other connections are unaffected");
    leftovers.assert_nothing_new(&[]).await;
}

/// With an idle timeout, a connection with no frame and no call running is closed; a call that
/// runs longer than the timeout keeps its connection open.
async fn idle_connection_is_closed_by_the_idle_timeout(addr: String, mode: Mode) {
    let ms = SHORT_TIMEOUT_MS.to_string();
    let server = TestServer::start_with(&addr, mode, &["--idle-timeout-ms", &ms]).await;
    let addr = server.addr.clone(); // as announced (with the port), for the messages
    let pid = server.pid().expect("a server process");
    let calc = CalculatorClient::connect(&server.addr).await.unwrap();
    // A call three timeouts long: running calls are not idleness.
    assert_eq!(calc.sleep(3 * SHORT_TIMEOUT_MS).await.unwrap(), 3 * SHORT_TIMEOUT_MS);
    let baseline = settled_fds(pid).await;
    let started = Instant::now();
    let mut conn = raw_hello(&server.addr).await;
    let reason = closed_with(&mut conn).await;
    let closed = started.elapsed();
    eprintln!("{addr}: an idle connection was closed after {closed:?}: {reason:?}");
    assert!(closed >= Duration::from_millis(SHORT_TIMEOUT_MS), "closed before the timeout: {closed:?}");
    assert_eq!(reason.map(|(code, _)| code), Some(CloseCode::IdleTimeout));
    drop(conn);
    wait_until(|| async { open_fds(pid) <= baseline }).await;
    // The typed client fell idle too (its quiet time counts from the first check after its call
    // ended, so it is closed within two timeouts of that): its next call fails with the goaway's
    // reason (even where its write runs into the closed connection before it reads the goaway).
    tokio::time::sleep(Duration::from_millis(2 * SHORT_TIMEOUT_MS)).await;
    match calc.add(1, 2).await {
        Err(e @ RpcError::Disconnected { .. }) => assert_eq!(e.close_code(), Some(CloseCode::IdleTimeout), "{e}"),
        other => panic!("expected Disconnected after the idle timeout, got {other:?}"),
    }
    assert_eq!(CalculatorClient::connect(&server.addr).await.unwrap().add(1, 2).await.unwrap(), 3);
}

/// Connections that fall idle right after a burst of calls (when every side polls longest
/// before it sleeps: `TransportOptions::spin`, `ShmOptions::spin`) cost the server no CPU once
/// the polling is over: it sleeps until the next call.
async fn idle_connections_cost_the_server_no_cpu(addr: String, mode: Mode) {
    let server = TestServer::start(&addr, mode).await;
    let pid = server.pid().expect("a server process");
    let mut clients = Vec::new();
    for _ in 0..8 {
        let calc = CalculatorClient::connect(&server.addr).await.unwrap();
        for i in 0..200 {
            assert_eq!(calc.add(i, 1).await.unwrap(), i + 1);
        }
        clients.push(calc);
    }
    // Past the longest poll (50 µs by default) and the slowest scheduling of a loaded VM.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = cpu_time(pid);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let used = cpu_time(pid) - before;
    eprintln!("{}: the server used {used:?} of CPU in 1 s with {} idle connections", server.addr, clients.len());
    assert!(used < Duration::from_millis(100), "idle connections cost the server {used:?} of CPU in 1 s");
    assert_eq!(clients[0].add(1, 2).await.unwrap(), 3, "and they still work");
}

/// Reads until the server closes the connection; returns the goaway's code and reason if one
/// came.
async fn closed_with(conn: &mut rpc::transport::Connection) -> Option<(CloseCode, String)> {
    let read = async {
        let mut reason = None;
        loop {
            match rpc::transport::recv(&mut *conn.receiver).await {
                Ok(Some(frame)) => match wire::decode(&frame) {
                    Ok(Frame::Goaway { code, reason: r }) => reason = Some((code, r.to_string())),
                    other => panic!("unexpected frame {other:?}"),
                },
                Ok(None) | Err(_) => return reason,
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read).await.expect("the server closes a stalled connection")
}

/// Byte streams: part of a hello, or part of a frame after a hello, then nothing: closed by the
/// handshake and frame timeouts; a frame that keeps trickling in is not.
async fn partial_frames_on_a_raw_stream_time_out(addr: String, mode: Mode) {
    let ms = SHORT_TIMEOUT_MS.to_string();
    let options = ["--handshake-timeout-ms", &ms, "--frame-timeout-ms", &ms];
    let server = TestServer::start_with(&addr, mode, &options).await;
    let addr = server.addr.clone(); // as announced (with the port), for the messages
    let pid = server.pid().expect("a server process");
    let calc = CalculatorClient::connect(&server.addr).await.unwrap();
    let baseline = settled_fds(pid).await;
    let hello = prefixed(&wire::encode_hello(&wire::Hello {
        service: "Calculator".into(),
        methods: CalculatorClient::DESCRIPTOR
            .methods
            .iter()
            .map(|m| wire::MethodSignature { name: m.name.into(), signature: m.signature.into() })
            .collect(),
        stream_window: wire::DEFAULT_STREAM_WINDOW,
    }));

    // Half a hello.
    let mut raw = raw_stream(&server.addr).await;
    let started = Instant::now();
    raw.write_all(&hello[..hello.len() / 2]).await.unwrap();
    let reason = raw_closed_with(&mut raw).await;
    eprintln!("{addr}: half a hello was closed after {:?}: {reason:?}", started.elapsed());
    assert_eq!(reason.map(|(code, _)| code), Some(CloseCode::HandshakeTimeout));

    // A hello, then part of a request.
    let mut raw = raw_stream(&server.addr).await;
    raw.write_all(&hello).await.unwrap();
    let reply = raw_frame(&mut raw).await.expect("a hello reply");
    assert!(matches!(
        wire::decode(&reply).unwrap(),
        Frame::HelloReply { reply: Some(wire::HelloReply::Accepted { .. }), .. }
    ));
    let request = prefixed(
        &wire::encode_request(RequestHeader { id: 1, method: 0, timeout_us: None }, &vec![0u8; 64]).unwrap().to_vec(),
    );
    let started = Instant::now();
    raw.write_all(&request[..10]).await.unwrap();
    let reason = raw_closed_with(&mut raw).await;
    let closed = started.elapsed();
    eprintln!("{addr}: a stalled partial frame was closed after {closed:?}: {reason:?}");
    assert!(closed >= Duration::from_millis(SHORT_TIMEOUT_MS), "closed before the timeout: {closed:?}");
    assert_eq!(reason.map(|(code, _)| code), Some(CloseCode::FrameTimeout));

    // A frame that keeps arriving, one byte per third of the timeout, is not a stall: its
    // request reaches the server (an unknown method: the answer proves it was read whole).
    let mut raw = raw_stream(&server.addr).await;
    raw.write_all(&hello).await.unwrap();
    raw_frame(&mut raw).await.expect("a hello reply");
    let request = prefixed(
        &wire::encode_request(RequestHeader { id: 9, method: 0xdead_beef, timeout_us: None }, &()).unwrap().to_vec(),
    );
    for byte in &request {
        raw.write_all(std::slice::from_ref(byte)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(SHORT_TIMEOUT_MS / 3)).await;
    }
    let answer = raw_frame(&mut raw).await.expect("an answer to the trickled request");
    assert_eq!(
        wire::decode(&answer).unwrap(),
        Frame::ResponseErr { id: 9, error: RemoteError::UnknownMethod { id: 0xdead_beef } }
    );
    drop(raw);
    wait_until(|| async { open_fds(pid) == baseline }).await;
    assert_eq!(calc.add(1, 2).await.unwrap(), 3, "other connections are unaffected");
}

/// A frame with its little-endian length prefix, as byte streams carry it.
fn prefixed(frame: &[u8]) -> Vec<u8> {
    let mut bytes = (frame.len() as u32).to_le_bytes().to_vec();
    bytes.extend_from_slice(frame);
    bytes
}

/// One length-prefixed frame from a raw stream; `None` at EOF or on an error.
async fn raw_frame(raw: &mut RawStream) -> Option<Vec<u8>> {
    let read = async {
        let mut len = [0u8; 4];
        raw.read_exact(&mut len).await.ok()?;
        let mut frame = vec![0u8; u32::from_le_bytes(len) as usize];
        raw.read_exact(&mut frame).await.ok()?;
        Some(frame)
    };
    tokio::time::timeout(Duration::from_secs(10), read).await.expect("a frame or EOF in time")
}

/// Reads a raw stream until the server closes it; returns the goaway's code and reason if one
/// came.
async fn raw_closed_with(raw: &mut RawStream) -> Option<(CloseCode, String)> {
    let mut reason = None;
    while let Some(frame) = raw_frame(raw).await {
        match wire::decode(&frame) {
            Ok(Frame::Goaway { code, reason: r }) => reason = Some((code, r.to_string())),
            other => panic!("unexpected frame {other:?}"),
        }
    }
    reason
}

// tarpc over our transports: the `#[tarpc::service]` `TarpcCalculator`, served by tarpc's
// `BaseChannel` and called by its generated client, both over `rpc::tarpc`.

/// tarpc's default context, with a deadline long enough for a slow debug build on a busy machine
/// (the default is 10 s).
fn tarpc_context() -> tarpc::context::Context {
    let mut context = tarpc::context::current();
    context.deadline = Instant::now() + Duration::from_secs(120);
    context
}

async fn tarpc_add(addr: String, mode: Mode) {
    let server = TestServer::start_tarpc(&addr, mode).await;
    let calc = rpc_tests::tarpc_client(&server.addr).await.unwrap();
    assert_eq!(calc.add(tarpc_context(), 1, 2).await.unwrap(), 3);
    // Concurrent calls on one connection each get their own answer.
    let calls: Vec<_> = (0..200)
        .map(|i| {
            let calc = calc.clone();
            tokio::spawn(async move { (i, calc.add(tarpc_context(), i, 1_000_000).await) })
        })
        .collect();
    for call in calls {
        let (i, result) = call.await.unwrap();
        assert_eq!(result.unwrap(), i + 1_000_000, "call {i} got another's answer");
    }
    let other = rpc_tests::tarpc_client(&server.addr).await.unwrap();
    assert_eq!(other.add(tarpc_context(), 40, 2).await.unwrap(), 42);
}

async fn tarpc_large_argument(addr: String, mode: Mode) {
    let server = TestServer::start_tarpc(&addr, mode).await;
    let calc = rpc_tests::tarpc_client(&server.addr).await.unwrap();
    let data: Vec<u8> = (0..1024 * 1024).map(|i: u32| (i % 251) as u8).collect();
    assert_eq!(calc.echo(tarpc_context(), data.clone()).await.unwrap(), data);
    assert_eq!(calc.add(tarpc_context(), 1, 2).await.unwrap(), 3, "the connection carries on");
}

async fn tarpc_client_disconnect_leaves_others_served(addr: String, mode: Mode) {
    let server = TestServer::start_tarpc(&addr, mode).await;
    let staying = rpc_tests::tarpc_client(&server.addr).await.unwrap();
    assert_eq!(staying.add(tarpc_context(), 1, 1).await.unwrap(), 2);
    let slow = tokio::spawn({
        let staying = staying.clone();
        async move { staying.sleep(tarpc_context(), 300).await }
    });

    // A client dropped in the middle of a call.
    let leaving = rpc_tests::tarpc_client(&server.addr).await.unwrap();
    let call = leaving.sleep(tarpc_context(), 60_000);
    assert!(tokio::time::timeout(Duration::from_millis(100), call).await.is_err(), "sleep returned early");
    drop(leaving);

    // A client process killed in the middle of a call (nothing outside this process reaches a
    // mem:// server).
    if mode != Mode::InProcess {
        let mut killed = helper_client_process(&["--tarpc", "--client", &server.addr]).await;
        killed.start_kill().unwrap();
        killed.wait().await.unwrap();
    }

    assert_eq!(staying.add(tarpc_context(), 40, 2).await.unwrap(), 42, "a connected client is still served");
    assert_eq!(slow.await.unwrap().unwrap(), 300, "its call in flight finished");
    let fresh = rpc_tests::tarpc_client(&server.addr).await.unwrap();
    assert_eq!(fresh.add(tarpc_context(), 2, 2).await.unwrap(), 4, "a new client is served");
}

async fn tarpc_bad_bytes_close_only_that_connection(addr: String, mode: Mode) {
    let server = TestServer::start_tarpc(&addr, mode).await;
    let calc = rpc_tests::tarpc_client(&server.addr).await.unwrap();
    // Not a message at all; a variant that does not exist; a valid message with bytes left over.
    let mut trailing = valid_cancel_message();
    trailing.extend_from_slice(b"junk");
    for bytes in [&b""[..], b"\x07\xff\xff\xff", &trailing] {
        let mut conn = rpc::transports::connect(&server.addr).await.unwrap();
        rpc::transport::send(&mut *conn.sender, Bytes::copy_from_slice(bytes)).await.unwrap();
        expect_closed(&mut conn).await;
    }
    assert_eq!(calc.add(tarpc_context(), 40, 2).await.unwrap(), 42, "other connections are unaffected");
    let fresh = rpc_tests::tarpc_client(&server.addr).await.unwrap();
    assert_eq!(fresh.add(tarpc_context(), 1, 1).await.unwrap(), 2);
}

/// A whole, valid tarpc message (a cancel for call 7), encoded as the client's transport would.
fn valid_cancel_message() -> Vec<u8> {
    let cancel = tarpc::ClientMessage::<rpc_tests::TarpcCalculatorRequest>::Cancel {
        trace_context: tarpc::trace::Context::default(),
        request_id: 7,
    };
    postcard::to_stdvec(&cancel).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Checks for the pipe transports.

fn dir_entries(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

/// Starts `rpc-test-server --client ADDR` and waits until it is connected.
async fn client_process(addr: &str) -> Child {
    client_process_with(addr, &[]).await
}

/// [`client_process`] with extra options (`--sleep-calls N`).
async fn client_process_with(addr: &str, options: &[&str]) -> Child {
    let mut args = vec!["--client", addr];
    args.extend_from_slice(options);
    helper_client_process(&args).await
}

/// Starts `rpc-test-server ARGS...` and waits until it prints `connected`.
async fn helper_client_process(args: &[&str]) -> Child {
    let (child, line) = support::start_helper(args).await;
    assert_eq!(line, "connected");
    child
}

/// fifo: a SIGKILLed client leaves no FIFO; a SIGKILLed server leaves only its connect FIFO,
/// which the next server reclaims; a server that stops cleanly leaves nothing.
async fn no_fifo_left_after_a_killed_peer(addr: String, mode: Mode) {
    let path = std::path::PathBuf::from(addr.strip_prefix("fifo://").unwrap());
    let dir = path.parent().unwrap().to_owned();
    let name = vec![path.file_name().unwrap().to_string_lossy().into_owned()];
    let mut server = TestServer::start(&addr, mode).await;
    let calc = CalculatorClient::connect(&server.addr).await.unwrap();
    let mut client = client_process(&server.addr).await;
    assert_eq!(dir_entries(&dir), name, "only the connect FIFO while connected");
    client.start_kill().unwrap();
    client.wait().await.unwrap();
    assert_eq!(calc.add(1, 2).await.unwrap(), 3, "the server outlives a killed client");
    assert_eq!(dir_entries(&dir), name);

    server.kill().await;
    let after_kill = calc.add(1, 1).await;
    assert!(matches!(after_kill, Err(RpcError::Disconnected { .. })), "{after_kill:?}");
    assert_eq!(dir_entries(&dir), name, "a killed server leaves only its connect FIFO");

    let mut next = TestServer::start(&addr, mode).await;
    assert_eq!(CalculatorClient::connect(&next.addr).await.unwrap().add(2, 2).await.unwrap(), 4);
    assert!(next.terminate().await);
    assert!(dir_entries(&dir).is_empty(), "left behind: {:?}", dir_entries(&dir));
}

/// shm: the shared memory is a memfd passed over the setup socket, so no entry ever appears in
/// `/dev/shm`: not while connected, not after SIGKILL of a client or of the server; the name is
/// free again for the next server at once.
async fn no_shm_left_after_a_killed_peer(addr: String, mode: Mode) {
    let dev_shm = std::path::Path::new("/dev/shm");
    let before = dev_shm.is_dir().then(|| dir_entries(dev_shm));
    let same_as_before = || {
        if let Some(before) = &before {
            assert_eq!(&dir_entries(dev_shm), before, "/dev/shm changed");
        }
    };
    let mut server = TestServer::start(&addr, mode).await;
    let calc = CalculatorClient::connect(&server.addr).await.unwrap();
    let mut client = client_process(&server.addr).await;
    same_as_before();
    client.start_kill().unwrap();
    client.wait().await.unwrap();
    assert_eq!(calc.add(1, 2).await.unwrap(), 3, "the server outlives a killed client");

    let pending = tokio::spawn({
        let calc = calc.clone();
        async move { calc.sleep(10_000).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    server.kill().await;
    let after_kill = tokio::time::timeout(Duration::from_secs(5), pending).await.expect("no hang").unwrap();
    assert!(matches!(after_kill, Err(RpcError::Disconnected { .. })), "{after_kill:?}");
    same_as_before();

    let mut next = TestServer::start(&addr, mode).await;
    assert_eq!(CalculatorClient::connect(&next.addr).await.unwrap().add(2, 2).await.unwrap(), 4);
    assert!(next.terminate().await);
    same_as_before();
}

/// The queues of connect queue `name` (the connect queue itself, and private pairs named
/// `name.<token>.c2s` / `.s2c`), listed through a mount of the mqueue file system on a private
/// temporary directory (`/dev/mqueue` may not be mounted); `None` where mounting is not
/// permitted (it needs root).
#[cfg(target_os = "linux")]
fn mq_queues(name: &str) -> Option<Vec<String>> {
    use std::os::unix::ffi::OsStrExt;
    let dir = std::env::temp_dir().join(unique("rpc-conf-mqueue"));
    std::fs::create_dir_all(&dir).unwrap();
    let c_dir = std::ffi::CString::new(dir.as_os_str().as_bytes()).unwrap();
    // SAFETY: mount(2) with NUL-terminated strings that outlive the call and no data argument.
    let mounted =
        unsafe { libc::mount(c"none".as_ptr(), c_dir.as_ptr(), c"mqueue".as_ptr(), 0, std::ptr::null()) } == 0;
    let queues = mounted.then(|| {
        let ours = |entry: &String| entry == name || entry.starts_with(&format!("{name}."));
        dir_entries(&dir).into_iter().filter(ours).collect()
    });
    if mounted {
        // SAFETY: umount2(2) of the directory mounted above; the string outlives the call.
        assert_eq!(unsafe { libc::umount2(c_dir.as_ptr(), libc::MNT_DETACH) }, 0);
    }
    std::fs::remove_dir(&dir).unwrap();
    queues
}

/// Whether the queue `/name` exists (works without a mount).
#[cfg(target_os = "linux")]
fn mq_exists(name: &str) -> bool {
    let c_name = std::ffi::CString::new(format!("/{name}")).unwrap();
    // SAFETY: mq_open without O_CREAT reads only the NUL-terminated name; the descriptor it
    // returns is closed at once.
    let fd = unsafe { libc::mq_open(c_name.as_ptr(), libc::O_RDONLY | libc::O_NONBLOCK) };
    if fd >= 0 {
        // SAFETY: `fd` was just returned to us; closing it is mq_close.
        unsafe { libc::close(fd) };
    }
    fd >= 0
}

/// Asserts that exactly `expected` of `name`'s queues exist (see [`mq_queues`]), or, where the
/// namespace cannot be listed, at least that the connect queue exists or not as expected.
#[cfg(target_os = "linux")]
fn assert_mq_queues(name: &str, expected: &[&str], what: &str) {
    match mq_queues(name) {
        Some(queues) => assert_eq!(queues, expected, "{what}"),
        None => {
            eprintln!("cannot mount an mqueue file system here (needs root): only the connect queue is checked");
            assert_eq!(mq_exists(name), expected.contains(&name), "{what}");
        }
    }
}

/// mq: a SIGKILLed client leaves no queue; a SIGKILLed server leaves only its connect queue,
/// which the next server reclaims; a server that stops cleanly leaves nothing. Pending calls of
/// the killed server's client fail promptly (the server's pid is watched).
#[cfg(target_os = "linux")]
async fn no_queue_left_after_a_killed_peer(addr: String, mode: Mode) {
    let name = addr.strip_prefix("mq://").unwrap().to_owned();
    let mut server = TestServer::start(&addr, mode).await;
    let calc = CalculatorClient::connect(&server.addr).await.unwrap();
    let mut client = client_process(&server.addr).await;
    assert_mq_queues(&name, &[&name], "only the connect queue while connected");
    client.start_kill().unwrap();
    client.wait().await.unwrap();
    assert_eq!(calc.add(1, 2).await.unwrap(), 3, "the server outlives a killed client");
    assert_mq_queues(&name, &[&name], "a killed client leaves nothing");

    let pending = tokio::spawn({
        let calc = calc.clone();
        async move { calc.sleep(60_000).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.kill().await;
    let killed = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(10), pending).await.expect("pending call hangs").unwrap();
    assert!(matches!(result, Err(RpcError::Disconnected { .. })), "{result:?}");
    assert!(killed.elapsed() < Duration::from_secs(2), "noticed {:?} after the kill", killed.elapsed());
    assert_mq_queues(&name, &[&name], "a killed server leaves only its connect queue");

    let mut next = TestServer::start(&addr, mode).await;
    assert_eq!(CalculatorClient::connect(&next.addr).await.unwrap().add(2, 2).await.unwrap(), 4);
    assert!(next.terminate().await);
    assert_mq_queues(&name, &[], "a server that stopped leaves nothing");
}

/// mq: a live server is never displaced by a second one on the same name.
#[cfg(target_os = "linux")]
async fn a_live_mq_server_is_not_displaced(addr: String, mode: Mode) {
    let server = TestServer::start(&addr, mode).await;
    let second = Command::new(env!("CARGO_BIN_EXE_rpc-test-server")).arg(&server.addr).output().await.unwrap();
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(stderr.contains("another server is already listening"), "{stderr}");
    assert_eq!(CalculatorClient::connect(&server.addr).await.unwrap().add(1, 2).await.unwrap(), 3);
}

/// spawn: a child killed by SIGKILL fails pending calls with an error naming the signal.
async fn killed_child_is_named_in_the_error(addr: String, mode: Mode) {
    let mut server = TestServer::start(&addr, mode).await;
    let calc = CalculatorClient::connect(&server.addr).await.unwrap();
    let pending = tokio::spawn({
        let calc = calc.clone();
        async move { calc.sleep(60_000).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.kill().await;
    let result = tokio::time::timeout(Duration::from_secs(10), pending).await.expect("pending call hangs").unwrap();
    match result {
        Err(RpcError::Disconnected { reason, .. }) => {
            assert!(reason.contains("was killed by signal 9 (SIGKILL)"), "{reason}");
        }
        other => panic!("expected Disconnected, got {other:?}"),
    }
}

/// The state letter of /proc/PID/stat, or `None` if the process is gone.
fn process_state(pid: libc::pid_t) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.chars().next()
}

/// spawn: when the parent is SIGKILLed, the child sees EOF on stdin and exits.
async fn killed_parent_makes_the_child_exit(addr: String, mode: Mode) {
    let server = TestServer::start(&addr, mode).await;
    let mut parent = client_process(&server.addr).await;
    let pids = server.child_pids();
    assert_eq!(pids.len(), 1, "{pids:?}");
    parent.start_kill().unwrap();
    parent.wait().await.unwrap();
    // Gone, or a zombie waiting for whoever inherited it (the child of a dead parent is
    // reparented; some containers' init does not reap).
    wait_until(|| async { matches!(process_state(pids[0]), None | Some('Z')) }).await;
    assert!(server.child_pids().is_empty(), "the child returned from serve_stdio and removed its pid file");
}

/// spawn: dropping the client ends the child and reaps it (no zombie).
async fn dropped_client_reaps_the_child(addr: String, mode: Mode) {
    let server = TestServer::start(&addr, mode).await;
    let calc = CalculatorClient::connect(&server.addr).await.unwrap();
    assert_eq!(calc.add(1, 2).await.unwrap(), 3);
    let peer = calc.rpc_client().connection_info().peer.clone();
    let pid: libc::pid_t = peer.rsplit_once("(pid ").unwrap().1.trim_end_matches(')').parse().unwrap();
    assert_eq!(server.child_pids(), [pid]);
    drop(calc);
    wait_until(|| async { process_state(pid).is_none() }).await;
}

/// spawn: a child that prints to stdout gives the parent a clear error, not a hang.
async fn stray_stdout_is_a_clear_error(addr: String, mode: Mode) {
    let server = TestServer::start(&addr, mode).await;
    let noisy = format!("{}&--noisy", server.addr);
    let result = tokio::time::timeout(Duration::from_secs(10), CalculatorClient::connect(&noisy)).await;
    let Err(err) = result.expect("no hang") else { panic!("the connect must fail") };
    assert!(err.to_string().contains("must not print to stdout"), "{err}");
}

/// `$callback!($($args)* [checks])` with the checks that apply to one shared server, in a
/// process of its own or in this one.
macro_rules! shared_checks {
    ($callback:ident!($($args:tt)*)) => {
        $callback! { $($args)* [basic_call, several_services_on_one_address,
            many_clients_many_concurrent_calls, app_error_is_delivered_intact,
            unknown_method_from_a_hand_made_frame, deadline_exceeded_stops_the_handler,
            dropping_a_call_cancels_the_handler, handler_panic_is_reported,
            interface_mismatch_is_refused_at_connect, large_arguments, loans_fill_results_in_place,
            garbage_frames_close_only_that_connection, killed_server_fails_pending_calls,
            graceful_shutdown_finishes_in_flight_calls, tarpc_add, tarpc_large_argument,
            tarpc_client_disconnect_leaves_others_served, tarpc_bad_bytes_close_only_that_connection,
            streams_server_stream_in_order, streams_client_stream, streams_bidirectional,
            streams_backpressure_and_cancel, streams_unary_calls_while_a_stream_saturates,
            streams_deadline_ends_the_stream, streams_killed_server_mid_stream, streams_shutdown_mid_stream] }
    };
}

/// `$callback!($($args)* [checks])` with the faults checked against a server process.
macro_rules! process_checks {
    ($callback:ident!($($args:tt)*)) => {
        $callback! { $($args)* [killed_client_frees_its_connection,
            silent_connection_is_closed_by_the_handshake_timeout,
            idle_connection_is_closed_by_the_idle_timeout,
            idle_connections_cost_the_server_no_cpu,
            a_client_that_never_reads_is_held_back_then_closed,
            client_at_its_descriptor_limit_gets_a_clear_error] }
    };
}

/// `$callback!($($args)* [checks])` with the checks that send raw bytes to a server.
macro_rules! raw_checks {
    ($callback:ident!($($args:tt)*)) => {
        $callback! { $($args)* [hostile_bytes_on_a_raw_stream, partial_frames_on_a_raw_stream_time_out] }
    };
}

/// The longest one conformance check may take; each takes seconds (a slow debug build on a
/// loaded 2-vCPU VM included).
const CHECK_LIMIT: Duration = Duration::from_secs(300);

macro_rules! conformance {
    (@only $transport:ident => $addr:expr, $mode:expr, [$($check:ident),*]) => {
        mod $transport {
            use super::*;
            conformance!(@tests $addr, $mode, $($check),*);
        }
    };
    // Every check that applies to one shared server, and `$more`.
    (@shared $addr:expr, $mode:expr, [$($more:ident),*]) => {
        shared_checks!(conformance!(@shared_then $addr, $mode, [$($more),*]));
    };
    (@shared_then $addr:expr, $mode:expr, [$($more:ident),*] [$($check:ident),*]) => {
        conformance!(@tests $addr, $mode, $($check,)* $($more),*);
    };
    // An in-process server: the shared checks only (see the faults section for why).
    (@in_process $transport:ident => $addr:expr, [$($extra:ident),*]) => {
        mod $transport {
            use super::*;
            conformance!(@shared $addr, Mode::InProcess, [$($extra),*]);
        }
    };
    (@process_then $addr:expr, $mode:expr, [$($extra:ident),*] [$($check:ident),*]) => {
        conformance!(@shared $addr, $mode, [$($check,)* $($extra),*]);
    };
    // A server process: the shared checks and the faults.
    ($( $transport:ident => $addr:expr, $mode:expr, [$($extra:ident),*]; )*) => {$(
        mod $transport {
            use super::*;
            process_checks!(conformance!(@process_then $addr, $mode, [$($extra),*]));
        }
    )*};
    (@tests $addr:expr, $mode:expr, $($check:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $check() {
            // A check that hangs (a stream that never ends, a call stuck behind another) fails
            // here instead of holding the suite, and CI, forever.
            tokio::time::timeout(super::CHECK_LIMIT, super::$check($addr, $mode))
                .await
                .unwrap_or_else(|_| panic!("{} did not finish within {:?}", stringify!($check), super::CHECK_LIMIT));
        }
    )*};
}

/// Runs `[checks]` one after another, each on a fresh `$addr`.
macro_rules! run_checks {
    ($name:expr, $addr:expr, $mode:expr, [$($check:ident),*]) => {$(
        eprintln!("{}: {}", $name, stringify!($check));
        $check($addr, $mode).await;
    )*};
}

/// A fresh address for `transport`, from the registry.
fn fresh(transport: &str) -> String {
    support::scheme(transport).fresh_address(&unique("rpc-conf")).unwrap()
}

conformance!(@in_process mem => fresh("mem"), []);

conformance! {
    tcp => fresh("tcp"), Mode::Process,
        [hostile_bytes_on_a_raw_stream, partial_frames_on_a_raw_stream_time_out];
    local => fresh("local"), Mode::Process,
        [hostile_bytes_on_a_raw_stream, partial_frames_on_a_raw_stream_time_out];
    unix => fresh("unix"), Mode::Process, [hostile_bytes_on_a_raw_stream, partial_frames_on_a_raw_stream_time_out];
    // No raw-byte checks: a FIFO connection needs the record handshake before any byte flows
    // (the fifo module's own tests feed garbage to the connect FIFO). Partial hellos and frames
    // are the same stream framing as the lines above.
    fifo => fresh("fifo"), Mode::Process, [no_fifo_left_after_a_killed_peer];
}

// shm and mq are Linux only.
// shm: no raw-byte check: the setup socket carries one setup message, then only bells (the shm
// module's own tests scribble over a live connection's shared memory instead).
// mq: no raw-byte check: a connection needs the handshake before any message flows (the mq
// module's own tests send malformed messages).
#[cfg(target_os = "linux")]
conformance! {
    shm => fresh("shm"), Mode::Process, [no_shm_left_after_a_killed_peer];
    mq => fresh("mq"), Mode::Process,
        [no_queue_left_after_a_killed_peer, a_live_mq_server_is_not_displaced];
}

// spawn: every client starts its own child, so the checks about one server shared by many
// clients (many_clients_many_concurrent_calls counts calls server-wide; graceful shutdown of the
// shared server by SIGTERM) and raw bytes on a stream to a running server do not apply.
conformance!(@only spawn => String::new(), Mode::Spawn, [basic_call, several_services_on_one_address,
    app_error_is_delivered_intact, unknown_method_from_a_hand_made_frame, deadline_exceeded_stops_the_handler,
    dropping_a_call_cancels_the_handler, handler_panic_is_reported, interface_mismatch_is_refused_at_connect,
    large_arguments, loans_fill_results_in_place, garbage_frames_close_only_that_connection, killed_server_fails_pending_calls,
    killed_child_is_named_in_the_error, killed_parent_makes_the_child_exit, dropped_client_reaps_the_child,
    stray_stdout_is_a_clear_error, tarpc_add, tarpc_large_argument, tarpc_client_disconnect_leaves_others_served,
    tarpc_bad_bytes_close_only_that_connection, streams_server_stream_in_order, streams_client_stream,
    streams_bidirectional, streams_backpressure_and_cancel, streams_unary_calls_while_a_stream_saturates,
    streams_deadline_ends_the_stream, streams_killed_server_mid_stream]);

/// The transports above with a line of their own. Every other transport in the registry is
/// checked by [`registered::every_other_transport`], so a new transport is covered as soon as it
/// has its registry entry; a line of its own names its checks one by one and adds its own.
const WITH_A_LINE: &[&str] = &["mem", "tcp", "local", "unix", "fifo", "shm", "mq", "spawn"];

mod registered {
    use super::*;
    use rpc::transports::registry::Reach;

    #[test]
    fn every_line_is_a_registered_transport() {
        for name in WITH_A_LINE {
            assert!(registry::lookup(name).is_some(), "{name} has a conformance line but no registry entry");
        }
    }

    /// The shared checks (and, for a transport that crosses processes, the faults and, where it
    /// takes raw bytes, the raw-byte checks) for every transport without a line above.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_other_transport() {
        for scheme in registry::available().filter(|s| !WITH_A_LINE.contains(&s.name) && s.listens()) {
            let name = scheme.name;
            let mode = if scheme.reach == Reach::SameProcess { Mode::InProcess } else { Mode::Process };
            shared_checks!(run_checks!(name, fresh(name), mode,));
            if mode == Mode::Process {
                process_checks!(run_checks!(name, fresh(name), mode,));
                if scheme.raw_stream {
                    raw_checks!(run_checks!(name, fresh(name), mode,));
                }
            }
        }
    }
}
