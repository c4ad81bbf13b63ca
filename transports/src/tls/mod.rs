//! `tls://host:port`: TCP (as `tcp://`: `TCP_NODELAY`, the same keepalive) with rustls on top
//! (ring provider), framed by the shared length prefix.
//!
//! The server's certificate is checked against the client's roots and the address's host (or
//! [`TlsOptions::server_name`]); with mutual TLS the listener checks the client's certificate
//! against its client roots and puts the verified subject and names into the connection's
//! `ConnectionInfo::peer_identity`, which handlers read through `CallContext`.
//!
//! The listener accepts TCP connections on a task of its own and runs each TLS handshake on a
//! task of its own, with a time limit, so a client that connects and says nothing (or speaks
//! plain TCP) never holds up anybody else's accept.
//!
//! Bulk: rustls reads the socket through a 64 KiB buffer (on its own it reads at most a record
//! at a time), and both sides prefer AES-128-GCM, the fastest suite on machines with AES
//! instructions. Encryption and the copies on the receiving side (into rustls's record buffer,
//! out of it as a plaintext `Vec` per record, into the frame) are what bound the bulk rate.

pub(crate) mod options;
#[cfg(feature = "test-certificates")]
pub(crate) mod test_certificates;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rpc_core::transport::stream::framed;
use rpc_core::transport::{BoxFuture, Connection, ConnectionInfo, Listener, PeerIdentity};
use rustls::client::WebPkiServerVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::BufReader;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use self::options::{TlsOptions, TlsParams};
use crate::address::Address;
use crate::options::{Framing, TransportOptions};
use crate::tcp;

/// How long an accepted connection may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes a listener runs at once; further connections wait in the kernel's backlog.
const MAX_CONCURRENT_HANDSHAKES: usize = 128;
/// The read buffer between the socket and rustls, per connection.
///
/// rustls reads into its record buffer, which it grows 4 KiB at a time up to one record (16 KiB),
/// so without a buffer each MiB received took 68 `recv` calls (`strace -c` of `call-count` with
/// 1 MiB echoes); with it, 17, and rustls's small reads are served from memory. In the same
/// loop 64 KiB was faster than 32, 128 and 256 KiB.
const SOCKET_READ_BUFFER: usize = 64 * 1024;

/// The socket under rustls: polled before it sleeps on Unix ([`TransportOptions::spin`]).
#[cfg(unix)]
type Socket = crate::spin_read::SpinRead<TcpStream>;
#[cfg(not(unix))]
type Socket = TcpStream;

/// The socket as rustls reads it: through a buffer of [`SOCKET_READ_BUFFER`] (writes pass
/// straight through, vectored), polled for up to `spin` before a read sleeps.
fn buffered(stream: TcpStream, spin: Duration) -> BufReader<Socket> {
    #[cfg(unix)]
    let stream = crate::spin_read::SpinRead::new(stream, std::os::fd::AsFd::as_fd, spin);
    #[cfg(not(unix))]
    let _ = spin;
    BufReader::with_capacity(SOCKET_READ_BUFFER, stream)
}

/// The ring provider with AES-128-GCM preferred over AES-256-GCM.
///
/// rustls lists AES-256-GCM first. AES-128-GCM is TLS 1.3's mandatory suite and the first
/// choice of Go's `crypto/tls` (`defaultCipherSuitesTLS13`); on this project's machines it
/// encrypts about 40 % faster (`openssl speed -evp aes-128-gcm` 4.1 GB/s, `aes-256-gcm` 2.9 GB/s
/// on 16 KiB blocks), and encryption is a large part of a tls:// connection's bulk time. Every
/// suite rustls offers is still offered and accepted: a peer that asks for AES-256-GCM or
/// ChaCha20 gets it (a rustls server follows the client's order).
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    use rustls::crypto::ring::cipher_suite::*;
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites = vec![
        TLS13_AES_128_GCM_SHA256,
        TLS13_AES_256_GCM_SHA384,
        TLS13_CHACHA20_POLY1305_SHA256,
        TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ];
    Arc::new(provider)
}

fn invalid_input(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

fn roots(pem: Option<&options::Pem>, kind: &str) -> io::Result<RootCertStore> {
    let mut store = RootCertStore::empty();
    match pem {
        None => store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Some(pem) => {
            for cert in pem.certificates(kind).map_err(invalid_input)? {
                store.add(cert).map_err(|e| invalid_input(format!("a certificate of the {kind} is unusable: {e}")))?;
            }
        }
    }
    Ok(store)
}

/// The client side's rustls configuration.
fn client_config(tls: &TlsOptions) -> io::Result<ClientConfig> {
    let store = Arc::new(roots(tls.trust.as_ref(), "trusted roots")?);
    let verifier = WebPkiServerVerifier::builder_with_provider(store, provider())
        .build()
        .map_err(|e| invalid_input(format!("the trusted roots are unusable: {e}")))?;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| io::Error::other(e.to_string()))?
        .with_webpki_verifier(verifier);
    match &tls.identity {
        None => Ok(builder.with_no_client_auth()),
        Some(identity) => {
            let chain = identity.chain.certificates("certificate").map_err(invalid_input)?;
            let key = identity.key.private_key().map_err(invalid_input)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| invalid_input(format!("the client certificate and key do not go together: {e}")))
        }
    }
}

/// The listener side's rustls configuration.
fn server_config(tls: &TlsOptions) -> io::Result<ServerConfig> {
    let Some(identity) = &tls.identity else {
        return Err(invalid_input(
            "a tls:// listener needs a certificate and key (TlsOptions::certificate_files or \
             ?cert=FILE&key=FILE)"
                .into(),
        ));
    };
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| io::Error::other(e.to_string()))?;
    let builder = match &tls.client_roots {
        None => builder.with_no_client_auth(),
        Some(pem) => {
            let store = Arc::new(roots(Some(pem), "client roots")?);
            let verifier = WebPkiClientVerifier::builder_with_provider(store, provider())
                .build()
                .map_err(|e| invalid_input(format!("the client roots are unusable: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let chain = identity.chain.certificates("certificate").map_err(invalid_input)?;
    let key = identity.key.private_key().map_err(invalid_input)?;
    builder
        .with_single_cert(chain, key)
        .map_err(|e| invalid_input(format!("the certificate and key do not go together: {e}")))
}

/// The host of `host:port`, without the brackets of an IPv6 address.
fn host_of(host_port: &str) -> &str {
    let host = host_port.rsplit_once(':').map_or(host_port, |(host, _)| host);
    host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host)
}

/// Connects to `host:port` and runs the TLS handshake.
pub(crate) async fn connect(host_port: &str, params: &TlsParams, options: &TransportOptions) -> io::Result<Connection> {
    let tls = options.tls.filled_from(params);
    let name = tls.server_name.clone().unwrap_or_else(|| host_of(host_port).to_owned());
    let server_name = ServerName::try_from(name.clone())
        .map_err(|_| invalid_input(format!("`{name}` is not a name a certificate can carry")))?;
    let config = client_config(&tls)?;
    let stream = tcp::connect_stream(host_port, options).await?;
    let peer = stream.peer_addr()?;
    let stream = TlsConnector::from(Arc::new(config))
        .connect(server_name, buffered(stream, options.spin))
        .await
        .map_err(|e| handshake_error(e, &name))?;
    let identity = stream.get_ref().1.peer_certificates().and_then(|certs| identity_of(certs.first()?));
    Ok(connection(stream, peer, params, identity, options.effective_max_frame_len()))
}

/// Binds `host:port` (port 0 lets the OS pick one) with the listener's certificate.
pub(crate) async fn listen(
    host_port: &str,
    params: &TlsParams,
    options: &TransportOptions,
) -> io::Result<TlsFrameListener> {
    let tls = options.tls.filled_from(params);
    let acceptor = TlsAcceptor::from(Arc::new(server_config(&tls)?));
    let listener = TcpListener::bind(host_port).await?;
    let local = listener.local_addr()?;
    let local_addr = Address::Tls { host_port: local.to_string(), params: params.clone() }.to_string();
    let (sender, incoming) = mpsc::channel(MAX_CONCURRENT_HANDSHAKES);
    let accepting = tokio::spawn(accept_loop(listener, acceptor, sender, params.clone(), options.clone()));
    Ok(TlsFrameListener { incoming, local_addr, accepting })
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    sender: mpsc::Sender<io::Result<Connection>>,
    params: TlsParams,
    options: TransportOptions,
) {
    let handshakes = Arc::new(Semaphore::new(MAX_CONCURRENT_HANDSHAKES));
    let Framing { max_frame_len, spin } = options.framing();
    loop {
        let Ok(permit) = handshakes.clone().acquire_owned().await else { return };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) if tcp::concerns_only_the_pending_connection(&e) => continue,
                Err(e) => {
                    let _ = sender.send(Err(e)).await;
                    return;
                }
            },
            () = sender.closed() => return,
        };
        // As tcp://: a client already gone must not end the accept loop.
        if tcp::tune(&stream, &options).is_err() {
            continue;
        }
        let (acceptor, sender, params) = (acceptor.clone(), sender.clone(), params.clone());
        tokio::spawn(async move {
            let _permit = permit;
            // A failed or stalled handshake concerns that client only: drop it, keep serving.
            if let Ok(Ok(stream)) =
                tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(buffered(stream, spin))).await
            {
                let identity = stream.get_ref().1.peer_certificates().and_then(|certs| identity_of(certs.first()?));
                let _ = sender.send(Ok(connection(stream, peer, &params, identity, max_frame_len))).await;
            }
        });
    }
}

fn connection<S>(
    stream: S,
    peer: SocketAddr,
    params: &TlsParams,
    identity: Option<PeerIdentity>,
    max_frame_len: usize,
) -> Connection
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (read, write) = tokio::io::split(stream);
    let (sender, receiver) = framed(read, write, max_frame_len);
    let peer = Address::Tls { host_port: peer.to_string(), params: params.clone() }.to_string();
    Connection {
        sender: Box::new(sender),
        receiver: Box::new(receiver),
        info: ConnectionInfo::new("tls", peer, max_frame_len).with_peer_identity(identity),
    }
}

/// The subject and subject alternative names of a certificate rustls verified.
fn identity_of(cert: &CertificateDer<'_>) -> Option<PeerIdentity> {
    use x509_parser::extensions::GeneralName;
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let names = parsed
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::DNSName(dns) => Some(format!("DNS:{dns}")),
                    GeneralName::RFC822Name(email) => Some(format!("email:{email}")),
                    GeneralName::URI(uri) => Some(format!("URI:{uri}")),
                    GeneralName::IPAddress(bytes) => ip_of(bytes).map(|ip| format!("IP:{ip}")),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    Some(PeerIdentity::new(parsed.subject().to_string(), names))
}

fn ip_of(bytes: &[u8]) -> Option<std::net::IpAddr> {
    match bytes.len() {
        4 => Some(<[u8; 4]>::try_from(bytes).ok()?.into()),
        16 => Some(<[u8; 16]>::try_from(bytes).ok()?.into()),
        _ => None,
    }
}

/// A handshake failure in words that say what to fix.
fn handshake_error(err: io::Error, name: &str) -> io::Error {
    let kind = err.kind();
    let text = match err.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::InvalidCertificate(cert)) => match cert {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "the server's certificate has expired".to_owned()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "the server's certificate is not valid yet".to_owned()
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                format!("the server's certificate is not valid for `{name}` (see TlsOptions::server_name)")
            }
            CertificateError::UnknownIssuer => "the server's certificate is not signed by a trusted root (for a \
                                                self-signed certificate, trust it with TlsOptions::trust_file or \
                                                ?ca=FILE)"
                .to_owned(),
            other => format!("bad server certificate: {other:?}"),
        },
        Some(rustls::Error::AlertReceived(alert)) => {
            format!("the server refused the TLS handshake ({alert:?}; does it require a client certificate?)")
        }
        Some(rustls::Error::InvalidMessage(_)) | Some(rustls::Error::InappropriateMessage { .. }) => {
            "the peer does not speak TLS (is it a plain tcp:// server?)".to_owned()
        }
        Some(other) => format!("TLS handshake failed: {other}"),
        None if matches!(kind, io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset) => {
            "the peer closed the connection during the TLS handshake (is it a plain tcp:// server?)".to_owned()
        }
        None => return err,
    };
    io::Error::new(kind, text)
}

/// A TLS listener yielding framed connections whose handshakes are done.
#[derive(Debug)]
pub(crate) struct TlsFrameListener {
    incoming: mpsc::Receiver<io::Result<Connection>>,
    local_addr: String,
    accepting: tokio::task::JoinHandle<()>,
}

impl Drop for TlsFrameListener {
    fn drop(&mut self) {
        // Stop accepting: the port is released with the listener.
        self.accepting.abort();
    }
}

impl Listener for TlsFrameListener {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<Connection>> {
        // Cancel-safe: `mpsc::Receiver::recv` is.
        Box::pin(async move {
            match self.incoming.recv().await {
                Some(result) => result,
                None => Err(io::Error::other("the tls:// accept task ended")),
            }
        })
    }

    fn local_addr(&self) -> String {
        self.local_addr.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::DEFAULT_SPIN;
    use rustls::CipherSuite;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A certificate for `localhost`, as a listener's options and a client's that trust it.
    fn localhost() -> (TlsOptions, TlsOptions) {
        let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("a certificate");
        let (cert, key) = (generated.cert.pem(), generated.signing_key.serialize_pem());
        (TlsOptions::new().certificate_pem(&cert, &key), TlsOptions::new().trust_pem(&cert))
    }

    /// Runs a handshake over loopback with these configurations, and `payload` through the
    /// buffered socket both ways; returns the suite each side negotiated.
    async fn handshake(server: ServerConfig, client: ClientConfig, payload: &[u8]) -> (CipherSuite, CipherSuite) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let echo = payload.len();
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut stream = TlsAcceptor::from(Arc::new(server)).accept(buffered(stream, DEFAULT_SPIN)).await.unwrap();
            let mut data = vec![0; echo];
            stream.read_exact(&mut data).await.unwrap();
            stream.write_all(&data).await.unwrap();
            stream.flush().await.unwrap();
            stream.get_ref().1.negotiated_cipher_suite().unwrap().suite()
        });
        let stream = buffered(TcpStream::connect(addr).await.unwrap(), DEFAULT_SPIN);
        let name = ServerName::try_from("localhost").unwrap();
        let mut stream = TlsConnector::from(Arc::new(client)).connect(name, stream).await.unwrap();
        stream.write_all(payload).await.unwrap();
        stream.flush().await.unwrap();
        let mut back = vec![0; payload.len()];
        stream.read_exact(&mut back).await.unwrap();
        assert!(back == payload, "the payload came back changed");
        let ours = stream.get_ref().1.negotiated_cipher_suite().unwrap().suite();
        (ours, server.await.unwrap())
    }

    #[tokio::test]
    async fn our_two_sides_agree_on_aes_128_gcm() {
        let (listening, connecting) = localhost();
        // Larger than the socket buffer several times over, in records split across reads.
        let payload: Vec<u8> = (0..(3 * SOCKET_READ_BUFFER + 12_345)).map(|i| (i % 251) as u8).collect();
        let suites = handshake(server_config(&listening).unwrap(), client_config(&connecting).unwrap(), &payload).await;
        assert_eq!(suites, (CipherSuite::TLS13_AES_128_GCM_SHA256, CipherSuite::TLS13_AES_128_GCM_SHA256));
    }

    #[tokio::test]
    async fn a_client_that_asks_for_aes_256_gcm_gets_it() {
        let (listening, connecting) = localhost();
        let mut only_256 = rustls::crypto::ring::default_provider();
        only_256.cipher_suites = vec![rustls::crypto::ring::cipher_suite::TLS13_AES_256_GCM_SHA384];
        let verifier = WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots(connecting.trust.as_ref(), "trusted roots").unwrap()),
            provider(),
        )
        .build()
        .unwrap();
        let client = ClientConfig::builder_with_provider(Arc::new(only_256))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_webpki_verifier(verifier)
            .with_no_client_auth();
        let suites = handshake(server_config(&listening).unwrap(), client, b"hello").await;
        assert_eq!(suites, (CipherSuite::TLS13_AES_256_GCM_SHA384, CipherSuite::TLS13_AES_256_GCM_SHA384));
    }

    #[test]
    fn every_suite_of_rustls_is_still_offered() {
        let ours: Vec<_> = provider().cipher_suites.iter().map(|suite| suite.suite()).collect();
        let mut theirs: Vec<_> =
            rustls::crypto::ring::default_provider().cipher_suites.iter().map(|s| s.suite()).collect();
        assert_eq!(ours.len(), theirs.len());
        theirs.retain(|suite| !ours.contains(suite));
        assert!(theirs.is_empty(), "not offered: {theirs:?}");
    }

    #[test]
    fn hosts() {
        assert_eq!(host_of("localhost:80"), "localhost");
        assert_eq!(host_of("[::1]:80"), "::1");
        assert_eq!(host_of("127.0.0.1:0"), "127.0.0.1");
    }
}
