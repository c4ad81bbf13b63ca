//! `tls://` beyond what the conformance suite checks (it runs every shared check over `tls://`
//! with a self-signed certificate from the registry): mutual TLS and the identity a handler
//! sees, and the errors for an untrusted, misnamed or expired certificate, a missing client
//! certificate, and plain TCP spoken to a TLS port and the reverse. Servers are `rpc-net-peer`
//! processes; certificates are made here with rcgen, in a fresh temporary directory.

#[path = "net/peer_service.rs"]
#[allow(dead_code)] // the server side is the helper binary's
mod peer_service;
mod support;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use peer_service::PeerClient;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
use rpc::transports::{TlsOptions, TransportOptions};
use rpc::ClientOptions;
use tokio::process::{Child, Command};

/// A directory of PEM files, removed when dropped.
struct Certs {
    dir: PathBuf,
    ca_pem: String,
}

/// A certificate and key made by [`Certs::issue`], as PEM.
struct Issued {
    cert: String,
    key: String,
}

impl Certs {
    fn new() -> Certs {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "rpc-tls-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let (ca_pem, _) = Self::ca();
        std::fs::write(dir.join("ca.pem"), &ca_pem).unwrap();
        Certs { dir, ca_pem }
    }

    /// The test CA: its certificate and its issuer (rcgen makes the same CA from the same key
    /// only once, so the key is kept in a thread-local for the test's lifetime).
    fn ca() -> (String, &'static Issuer<'static, KeyPair>) {
        thread_local! {
            static CA: (String, &'static Issuer<'static, KeyPair>) = {
                let key = KeyPair::generate().unwrap();
                let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
                params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
                params.distinguished_name.push(DnType::CommonName, "rpc test CA");
                let cert = params.self_signed(&key).unwrap();
                (cert.pem(), Box::leak(Box::new(Issuer::new(params, key))))
            };
        }
        CA.with(|(pem, issuer)| (pem.clone(), *issuer))
    }

    /// A certificate signed by the test CA.
    fn issue(&self, common_name: &str, names: &[&str], extra: Vec<SanType>, expired: bool) -> Issued {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.subject_alt_names.extend(extra);
        if expired {
            params.not_before = rcgen::date_time_ymd(2000, 1, 1);
            params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        }
        let cert = params.signed_by(&key, Self::ca().1).unwrap();
        Issued { cert: cert.pem(), key: key.serialize_pem() }
    }

    /// Writes `issued` as `name.pem` and `name.key`; returns their paths.
    fn write(&self, name: &str, issued: &Issued) -> (PathBuf, PathBuf) {
        let (cert, key) = (self.dir.join(format!("{name}.pem")), self.dir.join(format!("{name}.key")));
        std::fs::write(&cert, &issued.cert).unwrap();
        std::fs::write(&key, &issued.key).unwrap();
        (cert, key)
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An `rpc-net-peer` process, killed when dropped.
struct Server {
    addr: String,
    _child: Child,
}

async fn serve(addr: &str) -> Server {
    let mut command = Command::new(env!("CARGO_BIN_EXE_rpc-net-peer"));
    command.arg(addr);
    let (child, line) = support::spawn_ready(command).await;
    Server { addr: support::announced_addr(&line), _child: child }
}

/// The `tls://host:port` of `addr` with its query dropped (clients bring their own options).
fn bare(addr: &str) -> String {
    addr.split('?').next().unwrap().to_owned()
}

fn options(tls: TlsOptions) -> ClientOptions {
    ClientOptions::new().handshake_timeout(Duration::from_secs(10)).transport(TransportOptions::new().tls(tls))
}

fn server_addr(cert: &Path, key: &Path, client_ca: Option<&Path>) -> String {
    let mut addr = format!("tls://127.0.0.1:0?cert={}&key={}", cert.display(), key.display());
    if let Some(ca) = client_ca {
        addr = format!("tls://127.0.0.1:0?cert={}&key={}&client-ca={}", cert.display(), key.display(), ca.display());
    }
    addr
}

async fn connect_error(addr: &str, options: ClientOptions) -> String {
    let connecting = PeerClient::connect_with(addr, options);
    match tokio::time::timeout(Duration::from_secs(20), connecting).await.expect("the connect ends") {
        Ok(client) => match client.pid().await {
            Ok(_) => panic!("{addr}: connected and called"),
            Err(e) => e.to_string(),
        },
        Err(e) => e.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_gives_the_handler_the_verified_client_identity() {
    let certs = Certs::new();
    let server = certs.issue("calc server", &["localhost", "127.0.0.1"], vec![], false);
    let (cert, key) = certs.write("server", &server);
    let server = serve(&server_addr(&cert, &key, Some(&certs.ca_file()))).await;
    let addr = bare(&server.addr);

    let alice = certs.issue(
        "alice",
        &[],
        vec![
            SanType::Rfc822Name("alice@example.com".try_into().unwrap()),
            SanType::URI("spiffe://example/alice".try_into().unwrap()),
        ],
        false,
    );
    let tls = TlsOptions::new().trust_pem(&certs.ca_pem).certificate_pem(&alice.cert, &alice.key);
    let client = PeerClient::connect_with(&addr, options(tls)).await.unwrap();
    let (subject, names) = client.who().await.unwrap().expect("an identity over mutual TLS");
    assert_eq!(subject, "CN=alice");
    assert_eq!(names, ["email:alice@example.com", "URI:spiffe://example/alice"]);

    // Without a client certificate the server refuses; others are unaffected.
    let err = connect_error(&addr, options(TlsOptions::new().trust_pem(&certs.ca_pem))).await;
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    // A client certificate from another CA is refused too (TLS 1.3: the server's alert arrives
    // after the client's side of the handshake, with the first answer).
    let stranger = rcgen::generate_simple_self_signed(vec!["mallory".to_owned()]).unwrap();
    let tls = TlsOptions::new()
        .trust_pem(&certs.ca_pem)
        .certificate_pem(stranger.cert.pem(), stranger.signing_key.serialize_pem());
    let err = connect_error(&addr, options(tls)).await;
    assert!(err.contains("UnknownCA"), "{err}");
    assert!(client.who().await.unwrap().is_some(), "the first client is still served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_mutual_tls_there_is_no_identity() {
    let certs = Certs::new();
    let server = certs.issue("calc server", &["localhost"], vec![], false);
    let (cert, key) = certs.write("server", &server);
    let server = serve(&server_addr(&cert, &key, None)).await;
    // Over the name in the certificate, with the roots named in the address.
    let port = bare(&server.addr).rsplit(':').next().unwrap().to_owned();
    let addr = format!("tls://localhost:{port}?ca={}", certs.ca_file().display());
    let client = PeerClient::connect(&addr).await.unwrap();
    assert_eq!(client.who().await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_server_certificates_are_clear_errors() {
    let certs = Certs::new();
    let good = certs.issue("good", &["localhost", "127.0.0.1"], vec![], false);
    let (cert, key) = certs.write("good", &good);
    let server = serve(&server_addr(&cert, &key, None)).await;
    let addr = bare(&server.addr);

    let err = connect_error(&addr, options(TlsOptions::new())).await;
    assert!(err.contains("not signed by a trusted root"), "{err}");
    let err =
        connect_error(&addr, options(TlsOptions::new().trust_pem(&certs.ca_pem).server_name("calc.example"))).await;
    assert!(err.contains("not valid for `calc.example`"), "{err}");

    let expired = certs.issue("old", &["127.0.0.1"], vec![], true);
    let (cert, key) = certs.write("expired", &expired);
    let old = serve(&server_addr(&cert, &key, None)).await;
    let err = connect_error(&bare(&old.addr), options(TlsOptions::new().trust_pem(&certs.ca_pem))).await;
    assert!(err.contains("has expired"), "{err}");

    // The good server served none of that and still serves.
    let client = PeerClient::connect_with(&addr, options(TlsOptions::new().trust_pem(&certs.ca_pem))).await.unwrap();
    client.pid().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_tcp_and_tls_do_not_mix_quietly() {
    let certs = Certs::new();
    let good = certs.issue("good", &["127.0.0.1"], vec![], false);
    let (cert, key) = certs.write("good", &good);
    let tls_server = serve(&server_addr(&cert, &key, None)).await;
    let tls_addr = bare(&tls_server.addr);

    // Plain TCP to the TLS port: an error, not a hang; the TLS server keeps serving.
    let err = connect_error(&tls_addr.replace("tls://", "tcp://"), ClientOptions::new()).await;
    eprintln!("plain tcp to a tls port: {err}");
    let client =
        PeerClient::connect_with(&tls_addr, options(TlsOptions::new().trust_pem(&certs.ca_pem))).await.unwrap();
    client.pid().await.unwrap();

    // TLS to a plain TCP server.
    let tcp_server = serve("tcp://127.0.0.1:0").await;
    let err = connect_error(
        &tcp_server.addr.replace("tcp://", "tls://"),
        options(TlsOptions::new().trust_pem(&certs.ca_pem)),
    )
    .await;
    assert!(err.contains("tcp:// server"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_without_a_certificate_says_so() {
    let err = rpc::transports::listen("tls://127.0.0.1:0").await.err().expect("refused").to_string();
    assert!(err.contains("needs a certificate and key"), "{err}");
    let err = rpc::transports::listen("tls://127.0.0.1:0?cert=/nonexistent/c.pem&key=/nonexistent/k.pem")
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("/nonexistent/c.pem"), "{err}");
}
