//! The `tls` row's limit: the raw echo over a blocking rustls session on a plain TCP socket, no
//! framework, no async runtime. It pays what `tls://` cannot avoid (records, AES-GCM both ways,
//! the kernel's TCP) and nothing else, so the gap from it to ours is what our engine and
//! transport cost on top of TLS, as every other row's raw column shows for its primitive.
//!
//! Both sides use rustls with the ring provider, as `tls://` does, negotiate the suite `tls://`
//! prefers, TLS 1.3 with AES-128-GCM (the client offers only it), and read the socket through a
//! 64 KiB buffer, as `tls://` does (rustls alone reads 4 KiB at a time: one 1 MiB echo here
//! moved 403 MB/s so, against 624 for ours in the same run). The certificate is a
//! throwaway self-signed one for `127.0.0.1` that the harness had the registry make
//! ([`Scheme::fresh_address`](rpc::transports::registry::Scheme::fresh_address)), which the
//! server presents and the client trusts; the harness has the registry remove it afterwards.

use std::io::{self, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection, StreamOwned};

use crate::endpoint::Endpoint;

/// A client's session with the raw TLS server.
pub type Client = StreamOwned<ClientConnection, Buffered>;

/// The read buffer between the socket and rustls: the size of `tls://`'s own
/// (`SOCKET_READ_BUFFER` in `transports/src/tls/mod.rs`, private there), which this must follow.
const SOCKET_READ_BUFFER: usize = 64 * 1024;

/// The socket as rustls reads it: through a [`SOCKET_READ_BUFFER`]; writes pass straight through.
pub struct Buffered(BufReader<TcpStream>);

impl Buffered {
    fn new(stream: TcpStream) -> io::Result<Self> {
        // As our tcp:// and tls:// transports do: without it, Nagle + delayed ACK add ~40 ms.
        stream.set_nodelay(true)?;
        Ok(Self(BufReader::with_capacity(SOCKET_READ_BUFFER, stream)))
    }
}

impl Read for Buffered {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for Buffered {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.get_mut().write(buf)
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.0.get_mut().write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.get_mut().flush()
    }
}

/// The ring provider offering only the suite `tls://` negotiates between its two sides.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites = vec![rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256];
    Arc::new(provider)
}

fn certificates(cert: &Path) -> io::Result<Vec<CertificateDer<'static>>> {
    CertificateDer::pem_file_iter(cert).and_then(|certs| certs.collect::<Result<Vec<_>, _>>()).map_err(io::Error::other)
}

/// Serves the raw echo over TLS on `addr` with the certificate `cert` and its key `key`, a
/// thread per connection, until the process is stopped; announces its address first.
pub fn serve(addr: &str, cert: &Path, key: &Path) -> io::Result<()> {
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(io::Error::other)?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(io::Error::other)?
        .with_no_client_auth()
        .with_single_cert(certificates(cert)?, key_der)
        .map_err(io::Error::other)?;
    let config = Arc::new(config);
    let listener = TcpListener::bind(addr)?;
    let addr = listener.local_addr()?.to_string();
    crate::announce(&Endpoint::Tls { addr, cert: cert.to_owned(), key: key.to_owned() });
    for stream in listener.incoming() {
        let stream = Buffered::new(stream?)?;
        let session = ServerConnection::new(config.clone()).map_err(io::Error::other)?;
        std::thread::spawn(move || crate::raw::echo_loop(StreamOwned::new(session, stream)));
    }
    Ok(())
}

/// Connects to the raw TLS server at `addr`, trusting the certificate `cert`. The handshake
/// completes with the first write (the size announcement), before anything is timed.
pub fn connect(addr: &str, cert: &Path) -> io::Result<Client> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(cert)? {
        roots.add(cert).map_err(io::Error::other)?;
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(io::Error::other)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    let name = ServerName::try_from(host.to_owned()).map_err(io::Error::other)?;
    let session = ClientConnection::new(Arc::new(config), name).map_err(io::Error::other)?;
    Ok(StreamOwned::new(session, Buffered::new(TcpStream::connect(addr)?)?))
}
