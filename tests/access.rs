//! Who may call, and what a handler knows about its caller: the call context's peer credentials
//! over every transport, `ServerOptions::same_uid_only`, and (as root, with clients running as
//! another user) the endpoint modes, all against real server and client processes.

#![cfg(target_os = "linux")]

mod support;

use std::time::Duration;

use rpc::transports::registry::{self, Reach, Scheme};
use rpc::{CloseCode, RpcError};
use rpc_tests::{CalculatorClient, Whoami};
use support::{fresh_addr, unique, ServerProcess};

/// This process as a server's call context should see it: `(uid, gid, pid)`.
fn me() -> (u32, u32, Option<u32>) {
    // SAFETY: getuid and getgid take no arguments and cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    (uid, gid, Some(std::process::id()))
}

/// Asks the server at `addr` what its call context says, inline and from a call that waited
/// (the engine then runs it in a task of its own), with and without a deadline.
async fn check_context(addr: &str, transport: &str, credentials: Option<(u32, u32, Option<u32>)>) {
    let calc = CalculatorClient::connect(addr).await.unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    for wait_ms in [0, 30] {
        let seen = calc.whoami(wait_ms).await.unwrap();
        let expected = Whoami { transport: transport.to_owned(), credentials, deadline_ms: None };
        assert_eq!(seen, Some(expected), "{addr}, after waiting {wait_ms} ms");

        let seen = calc.with_timeout(Duration::from_secs(20)).whoami(wait_ms).await.unwrap().expect("a context");
        let left = seen.deadline_ms.expect("the call's deadline");
        assert!((10_000..=20_000).contains(&left), "{addr}: {left} ms left of a 20 s deadline");
    }
}

/// The schemes a server process listens on (not `spawn:`, which has no listener, nor `mem://`,
/// which reaches only its own process), from the registry: a transport added there is
/// checked here too.
fn served_by_a_process() -> impl Iterator<Item = &'static Scheme> {
    registry::available().filter(|scheme| scheme.listens() && scheme.reach != Reach::SameProcess)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_see_the_calling_process_where_the_transport_can_tell() {
    for scheme in served_by_a_process() {
        let server = ServerProcess::start(&fresh_addr(scheme.name), &[]).await;
        check_context(&server.addr, scheme.name, scheme.peer_credentials.then(me)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spawned_child_sees_its_parent() {
    let addr = format!("spawn:{}?--stdio", env!("CARGO_BIN_EXE_rpc-test-server"));
    check_context(&addr, "spawn", Some(me())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mem_handlers_see_this_process() {
    let listener = rpc::listen(&format!("mem://{}", unique("access"))).await.unwrap();
    let addr = listener.local_addr();
    let server = tokio::spawn(rpc_tests::test_server().serve(listener));
    check_context(&addr, "mem", Some(me())).await;
    server.abort();
}

#[test]
fn outside_a_handler_there_is_no_context() {
    assert!(rpc::CallContext::current().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_uid_only_serves_our_user_and_refuses_peers_it_cannot_identify() {
    for scheme in served_by_a_process() {
        let transport = scheme.name;
        let server = ServerProcess::start(&fresh_addr(transport), &["--same-uid"]).await;
        if scheme.peer_credentials {
            check_context(&server.addr, transport, Some(me())).await;
            continue;
        }
        match CalculatorClient::connect(&server.addr).await {
            Err(e @ RpcError::Disconnected { .. }) => assert!(
                e.close_code() == Some(CloseCode::Refused) && e.to_string().contains(&format!(
                    "refused: this server accepts only its own user, and a {transport} connection cannot tell who the client is"
                )),
                "{e}"
            ),
            other => panic!("{transport}: expected a refusal, got {other:?}"),
        }
    }
}

/// Runs `rpc-test-server --whoami ADDR` as user `uid`, group `gid`: `Ok("uid gid pid")` as the
/// server saw it, or `Err(stderr)` if the client failed.
async fn whoami_as(uid: u32, gid: u32, addr: &str) -> (Result<String, String>, u32) {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_rpc-test-server"))
        .args(["--whoami", addr])
        .uid(uid)
        .gid(gid)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the client as another user");
    let pid = child.id().unwrap();
    let output = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("the client finishes")
        .unwrap();
    let result = if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).trim().to_owned())
    };
    (result, pid)
}

/// Needs root, to run clients as user `nobody` (65534); skipped otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_users_by_mode_and_same_uid_only() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return eprintln!("not root: cannot run a client as another user, skipped");
    }
    const NOBODY: u32 = 65534;
    for transport in ["local", "unix"] {
        // Owner-only by default: another user cannot even complete a connection.
        let server = ServerProcess::start(&fresh_addr(transport), &[]).await;
        let (result, _) = whoami_as(NOBODY, NOBODY, &server.addr).await;
        let err = result.expect_err("another user is refused by the default mode");
        // unix: the file's mode stops the connect; local: the listener closes the connection.
        let expected = if transport == "unix" { "permission denied" } else { "disconnected" };
        assert!(err.contains(expected), "{transport}: {err}");
        drop(server);

        // The mode admits everyone: the handler sees who the client is.
        let server = ServerProcess::start(&fresh_addr(transport), &["--mode", "666"]).await;
        let (result, pid) = whoami_as(NOBODY, NOBODY, &server.addr).await;
        assert_eq!(result, Ok(format!("{NOBODY} {NOBODY} {pid}")), "{transport}");
        drop(server);

        // The group bits admit our group (the client runs as another user in group 0).
        let server = ServerProcess::start(&fresh_addr(transport), &["--mode", "660"]).await;
        let (result, pid) = whoami_as(NOBODY, 0, &server.addr).await;
        assert_eq!(result, Ok(format!("{NOBODY} 0 {pid}")), "{transport}");
        let (result, _) = whoami_as(NOBODY, NOBODY, &server.addr).await;
        assert!(result.is_err(), "{transport}: neither our user nor our group: {result:?}");
        drop(server);

        // same_uid_only refuses whom the mode admits, and says why.
        let server = ServerProcess::start(&fresh_addr(transport), &["--mode", "666", "--same-uid"]).await;
        let (result, _) = whoami_as(NOBODY, NOBODY, &server.addr).await;
        let err = result.expect_err("refused by same_uid_only");
        assert!(
            err.contains("refused: this server accepts only its own user (uid 0), and the client runs as uid 65534"),
            "{transport}: {err}"
        );
        check_context(&server.addr, transport, Some(me())).await;
    }
}
