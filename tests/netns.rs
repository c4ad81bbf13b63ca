//! Across a real network link: a server process in a network namespace of its own, joined to
//! this test's namespace by a veth pair, and the test as the client. Needs root and `ip`;
//! skipped with a message otherwise. The namespace (and with it the veth pair) is removed by a
//! drop guard, also when a check fails; names carry the pid and a counter, so parallel runs and
//! runs in a row do not collide.
//!
//! Checked here: `tls://` calls over the link, with mutual TLS (the server process reads the client certificate's identity); a reconnecting client across a `kill -9` of its
//! server, its restart, its absence and its replacement by a server of another service; and a
//! three servers behind one balanced client, one of them killed and restarted; and a
//! link taken down (`ip link set down` on the
//! server's side) noticed within `TransportOptions::keepalive` rather than the kernel's
//! minutes-long TCP timeout.

#![cfg(target_os = "linux")]

#[path = "net/peer_service.rs"]
#[allow(dead_code)] // the server side is the helper binary's
mod peer_service;
mod support;

use std::process::Command as StdCommand;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use peer_service::PeerClient;
use rpc::transports::{TlsOptions, TransportOptions};
use rpc::{ClientOptions, ReconnectOptions, RpcError};
use tokio::process::{Child, Command};

/// A network namespace `ns` with a veth pair: `host_if` (10.x.y.1/30) here, `peer_if`
/// (10.x.y.2/30) in the namespace. Removed when dropped.
struct Netns {
    ns: String,
    peer_if: String,
    host_ip: String,
    peer_ip: String,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = StdCommand::new("ip").args(args).output().map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

impl Netns {
    /// `None` (with a message saying why) where this process cannot make namespaces.
    fn new() -> Option<Netns> {
        // SAFETY: geteuid takes no arguments and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: network namespace tests need root");
            return None;
        }
        if StdCommand::new("ip").arg("-V").output().is_err() {
            eprintln!("skipped: network namespace tests need `ip` (iproute2)");
            return None;
        }
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let tag = format!("{:x}{n:x}", pid % 0x10_0000);
        let (ns, host_if, peer_if) = (format!("rpcnet{tag}"), format!("rpch{tag}"), format!("rpcp{tag}"));
        // A /30 of 10.0.0.0/8 from the pid and the counter: distinct for distinct runs at once.
        let block = ((pid as usize) * 16 + n) % (1 << 22);
        let base = format!("10.{}.{}", block >> 14, (block >> 6) & 0xff);
        let last = (block & 0x3f) * 4;
        let (host_ip, peer_ip) = (format!("{base}.{}", last + 1), format!("{base}.{}", last + 2));
        let guard =
            Netns { ns: ns.clone(), peer_if: peer_if.clone(), host_ip: host_ip.clone(), peer_ip: peer_ip.clone() };
        let setup = || -> Result<(), String> {
            ip(&["netns", "add", &ns])?;
            ip(&["link", "add", &host_if, "type", "veth", "peer", "name", &peer_if, "netns", &ns])?;
            ip(&["addr", "add", &format!("{host_ip}/30"), "dev", &host_if])?;
            ip(&["link", "set", &host_if, "up"])?;
            ip(&["-n", &ns, "addr", "add", &format!("{peer_ip}/30"), "dev", &peer_if])?;
            ip(&["-n", &ns, "link", "set", &peer_if, "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])
        };
        if let Err(e) = setup() {
            eprintln!("skipped: cannot set up a network namespace: {e}");
            return None; // the guard removes what was made
        }
        Some(guard)
    }

    /// Starts `rpc-net-peer args...` inside the namespace; returns it and the address it
    /// announced.
    async fn serve(&self, args: &[&str]) -> (Child, String) {
        self.start(env!("CARGO_BIN_EXE_rpc-net-peer"), args).await
    }

    /// Starts `program args...` inside the namespace (`ip netns exec` execs it: the child is
    /// the server itself) and waits for its `listening ADDR`.
    async fn start(&self, program: &str, args: &[&str]) -> (Child, String) {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.ns, program]).args(args);
        let (child, line) = support::spawn_ready(command).await;
        (child, support::announced_addr(&line))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace deletes the veth pair with it (and so the end here).
        let _ = ip(&["netns", "delete", &self.ns]);
        let _ = &self.host_ip;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_link_is_noticed_within_the_keepalive() {
    let Some(net) = Netns::new() else { return };
    let keepalive = Duration::from_secs(3);
    let (_server, addr) = net.serve(&[&format!("tcp://{}:0", net.peer_ip), "--keepalive", "3"]).await;
    let options = ClientOptions::new().transport(TransportOptions::new().keepalive(keepalive));
    let client = PeerClient::connect_with(&addr, options).await.unwrap();
    assert_eq!(client.sleep(1).await.unwrap(), 1, "calls cross the link");

    let in_flight = tokio::spawn({
        let client = client.clone();
        async move { client.sleep(600_000).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    ip(&["-n", &net.ns, "link", "set", &net.peer_if, "down"]).unwrap();
    let down = Instant::now();
    // Without keepalive this call would wait for the kernel (minutes); the bound is generous
    // (keepalive probes count in whole seconds) but far below that.
    let outcome = tokio::time::timeout(Duration::from_secs(30), in_flight).await.expect("noticed within 30 s").unwrap();
    eprintln!("a dead link was noticed {:?} after it went down (keepalive {keepalive:?}): {outcome:?}", down.elapsed());
    assert!(matches!(&outcome, Err(RpcError::Io(e)) if e.kind() == std::io::ErrorKind::TimedOut), "{outcome:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_across_the_link() {
    let Some(net) = Netns::new() else { return };
    let dir = std::env::temp_dir().join(format!("rpc-netns-tls-{}-{}", std::process::id(), net.ns));
    std::fs::create_dir_all(&dir).unwrap();
    let _cleanup = RemoveDir(dir.clone());
    let server_cert = rcgen::generate_simple_self_signed(vec![net.peer_ip.clone()]).unwrap();
    let (cert_file, key_file) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_file, server_cert.cert.pem()).unwrap();
    std::fs::write(&key_file, server_cert.signing_key.serialize_pem()).unwrap();
    // Mutual TLS: the server trusts one client certificate (self-signed, its own root).
    let alice = rcgen::generate_simple_self_signed(vec!["alice.example".to_owned()]).unwrap();
    let alice_file = dir.join("alice.pem");
    std::fs::write(&alice_file, alice.cert.pem()).unwrap();
    let (_server, addr) = net
        .serve(&[&format!(
            "tls://{}:0?cert={}&key={}&client-ca={}",
            net.peer_ip,
            cert_file.display(),
            key_file.display(),
            alice_file.display()
        )])
        .await;
    let bare = addr.split('?').next().unwrap();
    let tls = TlsOptions::new()
        .trust_pem(server_cert.cert.pem())
        .certificate_pem(alice.cert.pem(), alice.signing_key.serialize_pem());
    let options = ClientOptions::new().transport(TransportOptions::new().tls(tls));
    let client = PeerClient::connect_with(bare, options).await.unwrap();
    for ms in [0, 1, 2] {
        assert_eq!(client.sleep(ms).await.unwrap(), ms);
    }
    // The server process, across the link, saw the verified client certificate.
    let (_subject, names) = client.who().await.unwrap().expect("an identity over mutual TLS");
    assert_eq!(names, ["DNS:alice.example"]);
    // Without a client certificate the server refuses.
    let options = ClientOptions::new()
        .transport(TransportOptions::new().tls(TlsOptions::new().trust_pem(server_cert.cert.pem())));
    let refused = match PeerClient::connect_with(bare, options).await {
        Err(e) => Some(e),
        Ok(other) => other.who().await.err(),
    };
    assert!(refused.is_some(), "a client without a certificate was served");
}

struct RemoveDir(std::path::PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Kills `server` (SIGKILL) while `client` waits for a long call on it; returns that call's
/// outcome.
async fn kill_with_a_call_in_flight(client: &PeerClient, server: &mut Child) -> Result<u64, RpcError> {
    let in_flight = tokio::spawn({
        let client = client.clone();
        async move { client.sleep(600_000).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.start_kill().unwrap();
    server.wait().await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), in_flight).await.unwrap().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnecting_client_survives_a_killed_and_restarted_server() {
    let Some(net) = Netns::new() else { return };
    let (mut server, addr) = net.serve(&[&format!("tcp://{}:0", net.peer_ip)]).await;
    let reconnect =
        ReconnectOptions::new().initial_delay(Duration::from_millis(20)).give_up_after(Duration::from_secs(2));
    let client = PeerClient::connect_with(&addr, ClientOptions::new().reconnect(reconnect)).await.unwrap();
    let first_pid = client.pid().await.unwrap();

    // kill -9 with a call in flight: that call fails once, and is not retried.
    let outcome = kill_with_a_call_in_flight(&client, &mut server).await;
    assert!(matches!(outcome, Err(RpcError::Disconnected { .. })), "{outcome:?}");

    // Nobody there: a new call waits for the reconnect, then gives up clearly.
    let err = client.pid().await.unwrap_err();
    assert!(err.to_string().contains("could not reconnect"), "{err}");

    // The server is back on the same address: the next call reconnects (a new hello).
    let (mut server, again) = net.serve(&[&addr]).await;
    assert_eq!(again, addr);
    let second_pid = client.pid().await.unwrap();
    assert_ne!(second_pid, first_pid, "answered by the restarted server");
    for ms in 0..5 {
        assert_eq!(client.sleep(ms).await.unwrap(), ms);
    }

    // Replaced by a server of other services: reported, not used.
    assert!(kill_with_a_call_in_flight(&client, &mut server).await.is_err());
    let (_other, _) = net.start(env!("CARGO_BIN_EXE_rpc-test-server"), &[&addr]).await;
    let err = client.pid().await.unwrap_err();
    assert!(matches!(err, RpcError::UnknownService { .. }), "{err:?}");
}

/// `n` concurrent `pid()` calls: how many each server answered, and how many failed.
async fn spread(client: &PeerClient, n: usize) -> (std::collections::BTreeMap<u32, usize>, usize) {
    let calls: Vec<_> = (0..n)
        .map(|_| {
            tokio::spawn({
                let client = client.clone();
                async move { client.pid().await }
            })
        })
        .collect();
    let mut answered = std::collections::BTreeMap::new();
    let mut failed = 0;
    for call in calls {
        match call.await.unwrap() {
            Ok(pid) => *answered.entry(pid).or_insert(0) += 1,
            Err(_) => failed += 1,
        }
    }
    (answered, failed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_servers_one_killed() {
    let Some(net) = Netns::new() else { return };
    let mut servers = Vec::new();
    for _ in 0..3 {
        servers.push(net.serve(&[&format!("tcp://{}:0", net.peer_ip)]).await);
    }
    let addrs: Vec<String> = servers.iter().map(|(_, addr)| addr.clone()).collect();
    let addr_refs: Vec<&str> = addrs.iter().map(String::as_str).collect();
    let backoff =
        ReconnectOptions::new().initial_delay(Duration::from_millis(20)).max_delay(Duration::from_millis(200));
    let client = rpc::connect_balanced(&addr_refs, PeerClient::DESCRIPTOR, ClientOptions::new().reconnect(backoff))
        .await
        .unwrap();
    let client = PeerClient::from_client(client);

    let (answered, failed) = spread(&client, 90).await;
    assert_eq!((failed, answered.values().sum::<usize>()), (0, 90), "{answered:?}");
    assert_eq!(answered.len(), 3, "every server takes calls: {answered:?}");

    // kill -9 one of them: once the client saw its connection end, every call goes to the
    // other two, and every call is answered exactly once.
    let (mut killed, killed_addr) = servers.remove(1);
    let killed_pid = killed.id().unwrap();
    killed.start_kill().unwrap();
    killed.wait().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..3 {
        let (answered, failed) = spread(&client, 60).await;
        assert_eq!((failed, answered.values().sum::<usize>()), (0, 60), "{answered:?}");
        assert!(!answered.contains_key(&killed_pid), "the killed server answered: {answered:?}");
        assert_eq!(answered.len(), 2, "{answered:?}");
    }

    // It comes back on the same address: the client uses it again.
    let (_back, again) = net.serve(&[&killed_addr]).await;
    assert_eq!(again, killed_addr);
    let started = Instant::now();
    loop {
        let (answered, failed) = spread(&client, 60).await;
        assert_eq!(failed, 0, "{answered:?}");
        if answered.len() == 3 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "the restarted server is not used again: {answered:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
