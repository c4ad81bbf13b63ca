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
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use self::options::{TlsOptions, TlsParams};
use crate::address::Address;
use crate::options::TransportOptions;
use crate::tcp;

/// How long an accepted connection may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes a listener runs at once; further connections wait in the kernel's backlog.
const MAX_CONCURRENT_HANDSHAKES: usize = 128;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
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
        .connect(server_name, stream)
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
    let max_frame_len = options.effective_max_frame_len();
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
            if let Ok(Ok(stream)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
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

    #[test]
    fn hosts() {
        assert_eq!(host_of("localhost:80"), "localhost");
        assert_eq!(host_of("[::1]:80"), "::1");
        assert_eq!(host_of("127.0.0.1:0"), "127.0.0.1");
    }
}
