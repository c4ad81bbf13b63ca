//! The transports through their public API: the same checks against every mechanism, then the
//! behaviour particular to each (socket files, name clashes, backpressure).
//!
//! Every test uses names and directories unique to it (pid, counter, test name), so tests run
//! in parallel and twice in a row; only loopback and local endpoints are used.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use rpc_core::error::RpcError;
use rpc_core::transport::{close, recv, send, Connection, FrameReceiver, Listener};
use rpc_transports::{connect, connect_with, listen, listen_with, TransportOptions};

const TIMEOUT: Duration = Duration::from_secs(10);

fn unique(test: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("rpct-{}-{}-{test}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// A directory under the system temp dir, removed with everything in it on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> Self {
        let dir = std::env::temp_dir().join(unique(test));
        std::fs::create_dir(&dir).unwrap();
        TempDir(dir)
    }

    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    fn entries(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(TIMEOUT, future).await.unwrap_or_else(|_| panic!("{what} did not finish within {TIMEOUT:?}"))
}

/// Connects to `listener` and accepts: (client, server).
async fn pair_with(listener: &mut dyn Listener, options: &TransportOptions) -> (Connection, Connection) {
    let addr = listener.local_addr();
    let (client, server) =
        within("connect + accept", async { tokio::join!(connect_with(&addr, options), listener.accept()) }).await;
    (client.unwrap_or_else(|e| panic!("connect {addr}: {e}")), server.unwrap_or_else(|e| panic!("accept {addr}: {e}")))
}

async fn pair(listener: &mut dyn Listener) -> (Connection, Connection) {
    pair_with(listener, &TransportOptions::default()).await
}

async fn next(receiver: &mut Box<dyn FrameReceiver>) -> Option<Bytes> {
    within("recv", recv(&mut **receiver)).await.unwrap_or_else(|e| panic!("recv: {e}"))
}

/// The addresses every generic check runs against (listen side; ports and names are fresh).
struct Case {
    listen: String,
    transport: &'static str,
    _dir: Option<TempDir>,
}

fn cases(test: &str) -> Vec<Case> {
    let mut cases = vec![
        Case { listen: "tcp://127.0.0.1:0".into(), transport: "tcp", _dir: None },
        Case { listen: format!("mem://{}", unique(test)), transport: "mem", _dir: None },
    ];
    #[cfg(any(unix, windows))]
    cases.push(Case { listen: format!("local://{}", unique(test)), transport: "local", _dir: None });
    #[cfg(unix)]
    {
        let dir = TempDir::new(test);
        let path = dir.join("s.sock");
        cases.push(Case { listen: format!("unix://{}", path.display()), transport: "unix", _dir: Some(dir) });
        let dir = TempDir::new(test);
        let path = dir.join("calc");
        cases.push(Case { listen: format!("fifo://{}", path.display()), transport: "fifo", _dir: Some(dir) });
    }
    #[cfg(target_os = "linux")]
    cases.push(Case { listen: format!("shm://{}", unique(test)), transport: "shm", _dir: None });
    cases
}

// ---------------------------------------------------------------------------------------------
// Every transport

#[tokio::test]
async fn frames_cross_both_ways_small_large_and_empty() {
    for case in cases("frames") {
        let mut listener = listen(&case.listen).await.unwrap();
        let (mut client, mut server) = pair(&mut *listener).await;
        assert_eq!(client.info.transport, case.transport);
        assert_eq!(server.info.transport, case.transport);
        assert_eq!(client.info.max_frame_len, rpc_core::wire::DEFAULT_MAX_FRAME_LEN);

        let big: Bytes = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect::<Vec<u8>>().into();
        let frames = vec![Bytes::from_static(b"hello"), big.clone(), Bytes::new(), Bytes::from_static(b"after empty")];
        // Both directions at once, from separate tasks: the halves must work concurrently, and
        // a 1 MiB frame does not fit in a socket buffer.
        let client_sends = tokio::spawn({
            let frames = frames.clone();
            let mut sender = client.sender;
            async move {
                for frame in frames {
                    send(&mut *sender, frame).await.unwrap();
                }
                sender
            }
        });
        let server_sends = tokio::spawn({
            let frames = frames.clone();
            let mut sender = server.sender;
            async move {
                for frame in frames {
                    send(&mut *sender, frame).await.unwrap();
                }
                sender
            }
        });
        for frame in &frames {
            assert_eq!(next(&mut server.receiver).await.as_ref(), Some(frame), "{} client -> server", case.transport);
            assert_eq!(next(&mut client.receiver).await.as_ref(), Some(frame), "{} server -> client", case.transport);
        }
        client.sender = within("client sends", client_sends).await.unwrap();
        server.sender = within("server sends", server_sends).await.unwrap();
    }
}

#[tokio::test]
async fn closing_the_sender_ends_the_peers_stream_but_not_the_other_direction() {
    for case in cases("close") {
        let mut listener = listen(&case.listen).await.unwrap();
        let (mut client, mut server) = pair(&mut *listener).await;
        send(&mut *client.sender, Bytes::from_static(b"last")).await.unwrap();
        within("close", close(&mut *client.sender)).await.unwrap();
        assert_eq!(next(&mut server.receiver).await.as_deref(), Some(&b"last"[..]), "{}", case.transport);
        assert_eq!(next(&mut server.receiver).await, None, "{}: end of stream after close", case.transport);
        send(&mut *server.sender, Bytes::from_static(b"reply")).await.unwrap();
        assert_eq!(next(&mut client.receiver).await.as_deref(), Some(&b"reply"[..]), "{}: half-close", case.transport);
    }
}

#[tokio::test]
async fn dropping_a_side_ends_the_peers_stream() {
    for case in cases("drop") {
        let mut listener = listen(&case.listen).await.unwrap();

        let (client, mut server) = pair(&mut *listener).await;
        drop(client);
        assert_eq!(next(&mut server.receiver).await, None, "{}: client dropped", case.transport);

        let (mut client, server) = pair(&mut *listener).await;
        drop(server);
        assert_eq!(next(&mut client.receiver).await, None, "{}: server dropped", case.transport);
        // Sending into a dead connection fails sooner or later, and never hangs.
        let sent = within("send to a dropped peer", async {
            for _ in 0..64 {
                send(&mut *client.sender, Bytes::from(vec![0u8; 64 * 1024])).await?;
            }
            Ok::<_, std::io::Error>(())
        })
        .await;
        assert!(sent.is_err(), "{}: sending to a dropped peer must fail", case.transport);
    }
}

#[tokio::test]
async fn oversized_frames_are_refused_by_sender_and_receiver() {
    for case in cases("oversized") {
        let small = TransportOptions::new().max_frame_len(1024);
        let mut listener = listen_with(&case.listen, &small).await.unwrap();

        // The sender refuses a frame above its own maximum before it leaves.
        let (mut client, _server) = pair_with(&mut *listener, &small).await;
        assert_eq!(client.info.max_frame_len, 1024);
        send(&mut *client.sender, Bytes::from(vec![1u8; 1024])).await.expect("exactly the maximum is fine");
        let err = client.sender.start_send(Bytes::from(vec![1u8; 1025])).unwrap_err();
        assert_eq!(RpcError::from(err), RpcError::FrameTooLarge { size: 1025, max: 1024 }, "{}", case.transport);

        // The receiver refuses a frame above its maximum from a peer that allows more.
        let (mut client, mut server) = pair(&mut *listener).await;
        assert_eq!(server.info.max_frame_len, 1024);
        let writer = tokio::spawn(async move {
            let _ = send(&mut *client.sender, Bytes::from(vec![2u8; 2048])).await;
            client
        });
        let err = within("recv", recv(&mut *server.receiver)).await.unwrap_err();
        assert_eq!(RpcError::from(err), RpcError::FrameTooLarge { size: 2048, max: 1024 }, "{}", case.transport);
        drop(server);
        within("writer", writer).await.unwrap();
    }
}

#[tokio::test]
async fn accept_is_cancel_safe() {
    for case in cases("cancel") {
        let mut listener = listen(&case.listen).await.unwrap();
        let addr = listener.local_addr();
        // Accept futures dropped while waiting lose nothing...
        for _ in 0..3 {
            assert!(tokio::time::timeout(Duration::from_millis(10), listener.accept()).await.is_err());
        }
        // ...and a connection made while nobody is accepting waits for the next accept.
        let (mut client, mut server) = if case.transport == "shm" {
            // shm's connect completes only once the server accepts (the server makes the
            // shared memory and sends it), so here the two must overlap.
            let connecting = tokio::spawn(async move { connect(&addr).await });
            tokio::time::sleep(Duration::from_millis(20)).await;
            let server = within("accept", listener.accept()).await.unwrap();
            (within("connect", connecting).await.unwrap().unwrap(), server)
        } else {
            let client = within("connect", connect(&addr)).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
            (client, within("accept", listener.accept()).await.unwrap())
        };
        send(&mut *client.sender, Bytes::from_static(b"queued")).await.unwrap();
        assert_eq!(next(&mut server.receiver).await.as_deref(), Some(&b"queued"[..]), "{}", case.transport);
    }
}

#[tokio::test]
async fn many_connections_on_one_listener() {
    for case in cases("many") {
        let mut listener = listen(&case.listen).await.unwrap();
        let addr = listener.local_addr();
        let server = tokio::spawn(async move {
            let mut echoes = Vec::new();
            for _ in 0..16 {
                let mut conn = listener.accept().await.unwrap();
                echoes.push(tokio::spawn(async move {
                    while let Some(frame) = recv(&mut *conn.receiver).await.unwrap() {
                        send(&mut *conn.sender, frame).await.unwrap();
                    }
                }));
            }
            for echo in echoes {
                echo.await.unwrap();
            }
        });
        let clients: Vec<_> = (0..16u8)
            .map(|i| {
                let addr = addr.clone();
                tokio::spawn(async move {
                    let mut conn = connect(&addr).await.unwrap();
                    for n in 0..10u8 {
                        send(&mut *conn.sender, Bytes::from(vec![i, n])).await.unwrap();
                        assert_eq!(recv(&mut *conn.receiver).await.unwrap().as_deref(), Some(&[i, n][..]));
                    }
                })
            })
            .collect();
        for client in clients {
            within("client", client).await.unwrap();
        }
        within("server", server).await.unwrap();
    }
}

#[tokio::test]
async fn local_addr_round_trips_through_the_parser() {
    for case in cases("local-addr") {
        let listener = listen(&case.listen).await.unwrap();
        let addr = listener.local_addr();
        let parsed = rpc_transports::Address::parse(&addr).unwrap();
        assert_eq!(parsed.to_string(), addr);
        assert_eq!(parsed.scheme(), case.transport);
    }
}

#[tokio::test]
async fn bad_addresses_are_address_errors() {
    for addr in ["foo://x", "tcp://127.0.0.1", "shm://a/b", "unix://relative", "mem://"] {
        assert!(matches!(connect(addr).await, Err(RpcError::Address(_))), "connect {addr}");
        assert!(matches!(listen(addr).await, Err(RpcError::Address(_))), "listen {addr}");
    }
}

// ---------------------------------------------------------------------------------------------
// tcp://

#[tokio::test]
async fn tcp_port_zero_gets_a_real_port_and_peers_are_tcp_addresses() {
    let mut listener = listen("tcp://127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr();
    let port: u16 = addr.rsplit_once(':').unwrap().1.parse().unwrap();
    assert!(addr.starts_with("tcp://127.0.0.1:") && port != 0, "{addr}");
    let (client, server) = pair(&mut *listener).await;
    assert_eq!(client.info.peer, addr);
    assert!(server.info.peer.starts_with("tcp://127.0.0.1:") && server.info.peer != addr, "{}", server.info.peer);
}

#[tokio::test]
async fn tcp_ipv6_loopback() {
    let mut listener = match listen("tcp://[::1]:0").await {
        Ok(listener) => listener,
        Err(e) => return eprintln!("no IPv6 loopback here, skipped: {e}"),
    };
    assert!(listener.local_addr().starts_with("tcp://[::1]:"), "{}", listener.local_addr());
    let (mut client, mut server) = pair(&mut *listener).await;
    send(&mut *client.sender, Bytes::from_static(b"v6")).await.unwrap();
    assert_eq!(next(&mut server.receiver).await.as_deref(), Some(&b"v6"[..]));
    assert!(server.info.peer.starts_with("tcp://[::1]:"));
}

#[tokio::test]
async fn tcp_connect_failure_names_the_address() {
    // A port that was just free: nothing listens on it.
    let addr = listen("tcp://127.0.0.1:0").await.unwrap().local_addr();
    let err = connect(&addr).await.unwrap_err();
    let RpcError::Io(io) = &err else { panic!("{err:?}") };
    assert_eq!(io.kind(), std::io::ErrorKind::ConnectionRefused);
    assert_eq!(err.to_string(), format!("I/O error: connecting to {addr}: connection refused"));
}

#[tokio::test]
async fn tcp_listen_on_a_taken_port_names_the_address() {
    let first = listen("tcp://127.0.0.1:0").await.unwrap();
    let addr = first.local_addr();
    let err = listen(&addr).await.err().expect("port taken");
    assert!(err.to_string().contains(&format!("listening on {addr}: address already in use")), "{err}");
}

// ---------------------------------------------------------------------------------------------
// mem://

#[tokio::test]
async fn mem_name_is_exclusive_while_the_listener_lives() {
    let addr = format!("mem://{}", unique("mem-exclusive"));
    let first = listen(&addr).await.unwrap();
    let err = listen(&addr).await.err().expect("name taken");
    let RpcError::Io(io) = &err else { panic!("{err:?}") };
    assert_eq!(io.kind(), std::io::ErrorKind::AddrInUse);
    assert!(err.to_string().contains("already uses this name"), "{err}");
    drop(first);
    let mut again = listen(&addr).await.expect("name freed on drop");
    let (_client, _server) = pair(&mut *again).await;
}

#[tokio::test]
async fn mem_connect_without_listener_is_refused() {
    let addr = format!("mem://{}", unique("mem-nobody"));
    let err = connect(&addr).await.unwrap_err();
    let RpcError::Io(io) = &err else { panic!("{err:?}") };
    assert_eq!(io.kind(), std::io::ErrorKind::ConnectionRefused);
    assert_eq!(err.to_string(), format!("I/O error: connecting to {addr}: no listener with this name in this process"));

    // Nor after the listener is gone; a connection it never accepted ends.
    let listener = listen(&addr).await.unwrap();
    let mut orphan = connect(&addr).await.unwrap();
    drop(listener);
    assert_eq!(next(&mut orphan.receiver).await, None);
    assert!(connect(&addr).await.is_err());
}

#[tokio::test]
async fn mem_sender_waits_while_the_peer_does_not_read() {
    let addr = format!("mem://{}", unique("mem-backpressure"));
    let mut listener = listen(&addr).await.unwrap();
    let (mut client, mut server) = pair(&mut *listener).await;
    let chunk = Bytes::from(vec![0u8; 64 * 1024]);
    let mut sent = 0usize;
    // Fill the channel until the sender refuses more.
    let blocked = loop {
        let ready = futures_util::FutureExt::now_or_never(std::future::poll_fn(|cx| client.sender.poll_ready(cx)));
        match ready {
            Some(result) => {
                result.unwrap();
                client.sender.start_send(chunk.clone()).unwrap();
                sent += chunk.len();
                assert!(sent < 64 << 20, "the sender never waited");
            }
            None => break sent,
        }
    };
    assert!(blocked >= rpc_core::transport::HIGH_WATER, "waited after only {blocked} bytes");
    // Reading makes room again, and wakes the waiting sender.
    let waiting = tokio::spawn(async move {
        std::future::poll_fn(|cx| client.sender.poll_ready(cx)).await.unwrap();
        client
    });
    let mut received = 0usize;
    while received < blocked {
        received += next(&mut server.receiver).await.unwrap().len();
    }
    within("the sender wakes", waiting).await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// unix://

#[cfg(unix)]
mod unix {
    use super::*;
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[tokio::test]
    async fn socket_file_is_owner_only_by_default_and_mode_is_configurable() {
        let dir = TempDir::new("unix-mode");
        let path = dir.join("s.sock");
        let listener = listen(&format!("unix://{}", path.display())).await.unwrap();
        assert!(std::fs::symlink_metadata(&path).unwrap().file_type().is_socket());
        assert_eq!(mode(&path), 0o600);
        assert_eq!(dir.entries(), ["s.sock"], "no temporary name left behind");
        drop(listener);

        let listener =
            listen_with(&format!("unix://{}", path.display()), &TransportOptions::new().mode(0o660)).await.unwrap();
        assert_eq!(mode(&path), 0o660);
        drop(listener);
    }

    #[tokio::test]
    async fn socket_file_is_removed_on_drop() {
        let dir = TempDir::new("unix-drop");
        let path = dir.join("s.sock");
        let addr = format!("unix://{}", path.display());
        let mut listener = listen(&addr).await.unwrap();
        assert_eq!(listener.local_addr(), addr);
        let (client, server) = pair(&mut *listener).await;
        assert_eq!((client.info.peer.as_str(), server.info.peer.as_str()), (addr.as_str(), addr.as_str()));
        drop(listener);
        assert!(!path.exists(), "socket file removed");
        assert!(dir.entries().is_empty());
        let err = connect(&addr).await.unwrap_err();
        assert!(err.to_string().contains(&format!("connecting to {addr}: no such file or directory")), "{err}");
    }

    #[tokio::test]
    async fn a_stale_socket_file_is_reclaimed() {
        let dir = TempDir::new("unix-stale");
        let path = dir.join("s.sock");
        // What a crashed server leaves: a socket file nobody listens on.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(std::fs::symlink_metadata(&path).unwrap().file_type().is_socket());

        let mut listener = listen(&format!("unix://{}", path.display())).await.expect("stale file reclaimed");
        assert_eq!(mode(&path), 0o600);
        let (mut client, mut server) = pair(&mut *listener).await;
        send(&mut *client.sender, Bytes::from_static(b"fresh")).await.unwrap();
        assert_eq!(next(&mut server.receiver).await.as_deref(), Some(&b"fresh"[..]));
        assert_eq!(dir.entries(), ["s.sock"]);
    }

    #[tokio::test]
    async fn a_live_server_is_not_displaced() {
        let dir = TempDir::new("unix-live");
        let path = dir.join("s.sock");
        let addr = format!("unix://{}", path.display());
        let mut first = listen(&addr).await.unwrap();
        let inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&path).unwrap());

        let err = listen(&addr).await.err().expect("a live server keeps its address");
        let RpcError::Io(io) = &err else { panic!("{err:?}") };
        assert_eq!(io.kind(), std::io::ErrorKind::AddrInUse);
        assert!(
            err.to_string().contains(&format!("listening on {addr}: another server is already listening there")),
            "{err}"
        );

        // The first server's file is untouched and still reaches it (the probe connection
        // the second listen made is in its backlog: accept and discard it first).
        assert_eq!(std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&path).unwrap()), inode);
        let probe = within("accept the probe", first.accept()).await.unwrap();
        drop(probe);
        let (mut client, mut server) = pair(&mut *first).await;
        send(&mut *client.sender, Bytes::from_static(b"still here")).await.unwrap();
        assert_eq!(next(&mut server.receiver).await.as_deref(), Some(&b"still here"[..]));
        assert_eq!(dir.entries(), ["s.sock"], "no temporary name left behind by the failed listen");
    }

    #[tokio::test]
    async fn a_file_that_is_not_a_socket_is_left_alone() {
        let dir = TempDir::new("unix-regular");
        let path = dir.join("s.sock");
        std::fs::write(&path, b"precious").unwrap();
        let addr = format!("unix://{}", path.display());
        let err = listen(&addr).await.err().expect("not a socket");
        assert!(err.to_string().contains("not a socket"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"precious");
        assert_eq!(dir.entries(), ["s.sock"]);

        // Nor is a symlink followed or replaced.
        let link = dir.join("link.sock");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(listen(&format!("unix://{}", link.display())).await.is_err());
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    }

    #[tokio::test]
    async fn drop_leaves_a_file_that_replaced_ours() {
        let dir = TempDir::new("unix-replaced");
        let path = dir.join("s.sock");
        let listener = listen(&format!("unix://{}", path.display())).await.unwrap();
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, b"someone else's").unwrap();
        drop(listener);
        assert_eq!(std::fs::read(&path).unwrap(), b"someone else's");
    }

    #[tokio::test]
    async fn missing_directory_is_a_clear_error() {
        let dir = TempDir::new("unix-nodir");
        let addr = format!("unix://{}", dir.join("nope/s.sock").display());
        let err = listen(&addr).await.err().expect("no such directory");
        assert!(err.to_string().contains("does not exist"), "{err}");
    }
}

// ---------------------------------------------------------------------------------------------
// local://

#[cfg(any(unix, windows))]
mod local {
    use super::*;

    #[tokio::test]
    async fn second_listener_on_a_live_name_fails_and_succeeds_after_drop() {
        let addr = format!("local://{}", unique("local-exclusive"));
        let mut first = listen(&addr).await.unwrap();
        assert_eq!(first.local_addr(), addr);
        let err = listen(&addr).await.err().expect("name taken");
        let RpcError::Io(io) = &err else { panic!("{err:?}") };
        assert_eq!(io.kind(), std::io::ErrorKind::AddrInUse);
        assert!(
            err.to_string().contains(&format!("listening on {addr}: another listener already uses this name")),
            "{err}"
        );

        // The first listener still works.
        let (mut client, mut server) = pair(&mut *first).await;
        send(&mut *client.sender, Bytes::from_static(b"first")).await.unwrap();
        assert_eq!(next(&mut server.receiver).await.as_deref(), Some(&b"first"[..]));

        drop(first);
        let mut second = listen(&addr).await.expect("free after the first listener is dropped");
        let (_client, _server) = pair(&mut *second).await;
    }

    #[tokio::test]
    async fn connect_without_listener_names_the_address() {
        let addr = format!("local://{}", unique("local-nobody"));
        let err = connect(&addr).await.unwrap_err();
        assert!(err.to_string().contains(&format!("connecting to {addr}: ")), "{err}");
    }

    /// The abstract namespace has no permissions; the listener admits by credentials instead.
    /// Needs root (to run a client as another user) and python3 (the client); skipped otherwise.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn other_users_are_refused_unless_the_mode_admits_them() {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return eprintln!("not root: cannot run a client as another user, skipped");
        }
        // As user and group `nobody`: connect, send the frame "hi", report whether the server
        // answers ("open") or closes the connection ("closed").
        const CLIENT: &[&str] = &[
            "import os, socket, sys",
            "os.setgid(65534); os.setuid(65534)",
            "s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)",
            "s.connect('\\0' + sys.argv[1])",
            "s.settimeout(10)",
            // The server may close the refused connection before the send: that is "closed" too.
            "try:",
            "    s.sendall(b'\\x02\\x00\\x00\\x00hi')",
            "    data = s.recv(1)",
            "except (ConnectionResetError, BrokenPipeError):",
            "    data = b''",
            "print('open' if data else 'closed')",
        ];
        let run_client = |name: String| {
            tokio::task::spawn_blocking(move || {
                std::process::Command::new("python3").args(["-c", &CLIENT.join("\n"), &name]).output()
            })
        };

        let name = unique("local-creds");
        let mut owner_only = listen(&format!("local://{name}")).await.unwrap();
        let client = run_client(name.clone());
        let output = tokio::select! {
            accepted = owner_only.accept() => panic!("another user's client was admitted: {:?}", accepted.map(|c| c.info)),
            output = within("client", client) => output.unwrap(),
        };
        let Ok(output) = output else { return eprintln!("no python3 here, skipped") };
        assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "closed", "{output:?}");
        // The refused client did not end the listener's accept loop.
        let (_client, _server) = pair(&mut *owner_only).await;

        let name = unique("local-creds-open");
        let mut everyone = listen_with(&format!("local://{name}"), &TransportOptions::new().mode(0o666)).await.unwrap();
        let client = run_client(name);
        let mut server = within("accept", everyone.accept()).await.unwrap();
        assert_eq!(next(&mut server.receiver).await.as_deref(), Some(&b"hi"[..]));
        send(&mut *server.sender, Bytes::from_static(b"ok")).await.unwrap();
        let output = within("client", client).await.unwrap().unwrap();
        assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "open", "{output:?}");
    }

    /// The abstract namespace leaves nothing on disk to go stale.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn local_names_leave_nothing_on_disk() {
        let name = unique("local-nodisk");
        let listener = listen(&format!("local://{name}")).await.unwrap();
        let unix_sockets = std::fs::read_to_string("/proc/net/unix").unwrap();
        assert!(unix_sockets.contains(&format!("@{name}")), "bound in the abstract namespace");
        assert!(!Path::new("/tmp").join(&name).exists());
        drop(listener);
    }
}

#[cfg(unix)]
#[tokio::test]
async fn spawn_addresses_are_connected_to_not_listened_on() {
    match listen("spawn:/bin/cat").await {
        Err(RpcError::Address(message)) => assert!(message.contains("a spawn: address is connected to"), "{message}"),
        other => panic!("expected an address error, got {:?}", other.map(|l| l.local_addr())),
    }
    // `cat` is a loopback child: what we send comes back.
    let mut conn = within("spawn cat", connect("spawn:cat")).await.unwrap();
    assert_eq!(conn.info.transport, "spawn");
    within("send", send(&mut *conn.sender, Bytes::from_static(b"echo"))).await.unwrap();
    assert_eq!(next(&mut conn.receiver).await.as_deref(), Some(&b"echo"[..]));
}

#[cfg(unix)]
#[tokio::test]
async fn fifo_listener_drop_removes_every_file() {
    let dir = TempDir::new("fifo-drop");
    let mut listener = listen(&format!("fifo://{}", dir.join("calc").display())).await.unwrap();
    let (client, server) = pair(&mut *listener).await;
    assert_eq!(dir.entries(), ["calc"]);
    drop((client, server, listener));
    assert!(dir.entries().is_empty(), "{:?}", dir.entries());
}

/// fifo:// endpoints are owner-only by default, and the mode option widens both the connect
/// FIFO (the listener's) and a connection's private pair (the client's).
#[cfg(unix)]
#[tokio::test]
async fn fifo_files_are_owner_only_by_default_and_mode_is_configurable() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    for (options, expected) in [(TransportOptions::new(), 0o600), (TransportOptions::new().mode(0o660), 0o660)] {
        let dir = TempDir::new("fifo-mode");
        let addr = format!("fifo://{}", dir.join("calc").display());
        let mut listener = listen_with(&addr, &options).await.unwrap();
        assert_eq!(mode(&dir.join("calc")), expected, "connect FIFO");
        // Before the server accepts, the client's private pair is on disk.
        let client = within("connect", connect_with(&addr, &options)).await.unwrap();
        let pair: Vec<String> = dir.entries().into_iter().filter(|name| name != "calc").collect();
        assert_eq!(pair.len(), 2, "{pair:?}");
        for name in &pair {
            assert_eq!(mode(&dir.join(name)), expected, "{name}");
        }
        let server = within("accept", listener.accept()).await.unwrap();
        assert_eq!(dir.entries(), ["calc"], "the pair is unlinked once both sides hold it");
        drop((client, server, listener));
    }
}

/// What each mechanism tells about the peer process (`ConnectionInfo::peer_credentials`).
#[cfg(unix)]
#[tokio::test]
async fn peer_credentials_by_mechanism() {
    for case in cases("creds") {
        let mut listener = listen(&case.listen).await.unwrap();
        let (client, server) = pair(&mut *listener).await;
        let (from_client, from_server) = (client.info.peer_credentials, server.info.peer_credentials);
        match case.transport {
            "tcp" | "fifo" => assert_eq!((from_client, from_server), (None, None), "{}", case.transport),
            _ => {
                // Both ends are this process.
                let creds = from_server.unwrap_or_else(|| panic!("{}: no credentials", case.transport));
                assert_eq!(creds.pid, Some(std::process::id()), "{}", case.transport);
                // SAFETY: geteuid has no preconditions and cannot fail.
                assert_eq!(creds.uid, unsafe { libc::geteuid() }, "{}", case.transport);
                assert_eq!(from_client, from_server, "{}", case.transport);
            }
        }
    }
}
