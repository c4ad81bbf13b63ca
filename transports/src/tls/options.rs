//! [`TlsOptions`]: the certificates and keys of `tls://`, and the address query parameters
//! (`?ca=...&cert=...`) that name files for them.
//!
//! Everything is read when a connection or a listener is made, not when an option is set, so a
//! missing or malformed file is an error of that connect or listen (naming the file and what is
//! wrong with it), never a panic.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// PEM text, from a file or from memory.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) enum Pem {
    File(PathBuf),
    Memory(Arc<[u8]>),
}

impl fmt::Debug for Pem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pem::File(path) => write!(f, "File({})", path.display()),
            // Never print key material.
            Pem::Memory(bytes) => write!(f, "Memory({} bytes)", bytes.len()),
        }
    }
}

impl Pem {
    fn what(&self, kind: &str) -> String {
        match self {
            Pem::File(path) => format!("{kind} file {}", path.display()),
            Pem::Memory(_) => format!("{kind} (PEM in memory)"),
        }
    }

    fn read(&self, kind: &str) -> Result<Arc<[u8]>, String> {
        match self {
            Pem::File(path) => std::fs::read(path)
                .map(Arc::from)
                .map_err(|e| format!("reading the {}: {}", self.what(kind), crate::context::describe(&e))),
            Pem::Memory(bytes) => Ok(bytes.clone()),
        }
    }

    /// Every certificate in the PEM text (at least one).
    pub(crate) fn certificates(&self, kind: &str) -> Result<Vec<CertificateDer<'static>>, String> {
        let bytes = self.read(kind)?;
        let certs = CertificateDer::pem_slice_iter(&bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("the {} is not valid PEM: {e}", self.what(kind)))?;
        if certs.is_empty() {
            return Err(format!("the {} holds no `BEGIN CERTIFICATE` block", self.what(kind)));
        }
        Ok(certs)
    }

    /// The private key in the PEM text (PKCS#8, PKCS#1 or SEC1).
    pub(crate) fn private_key(&self) -> Result<PrivateKeyDer<'static>, String> {
        let bytes = self.read("key")?;
        PrivateKeyDer::from_pem_slice(&bytes)
            .map_err(|e| format!("the {} holds no usable private key: {e}", self.what("key")))
    }
}

/// A certificate chain and its private key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Identity {
    pub(crate) chain: Pem,
    pub(crate) key: Pem,
}

/// The options of `tls://` alone, given to
/// [`TransportOptions::tls`](crate::TransportOptions::tls); other mechanisms ignore them. Built
/// like the other options: [`TlsOptions::new`] and chained setters.
///
/// A listener needs a certificate ([`certificate_files`](Self::certificate_files) or
/// [`certificate_pem`](Self::certificate_pem)); a client trusts the Mozilla root store
/// (`webpki-roots`) unless given roots of its own ([`trust_file`](Self::trust_file),
/// [`trust_pem`](Self::trust_pem)), and checks that the server's certificate names the host of
/// the address (or [`server_name`](Self::server_name)). Mutual TLS: the listener is told which
/// roots client certificates must chain to ([`client_roots_file`](Self::client_roots_file)),
/// each client gives its own certificate with the same `certificate_*` setters, and handlers
/// read the verified identity from `CallContext::peer_identity`.
///
/// Both sides offer TLS 1.3 and 1.2 with every cipher suite of rustls's ring provider, preferring
/// AES-128-GCM, then AES-256-GCM, then ChaCha20-Poly1305; a peer that prefers another of them
/// gets it. These options do not change that.
///
/// ```no_run
/// use rpc_transports::{TlsOptions, TransportOptions};
///
/// // Server: its certificate; require clients to present one signed by clients-ca.pem.
/// let server = TransportOptions::new().tls(
///     TlsOptions::new().certificate_files("server.pem", "server.key").client_roots_file("clients-ca.pem"),
/// );
/// // Client: trust the (self-signed) server certificate, present our own.
/// let client = TransportOptions::new().tls(
///     TlsOptions::new().trust_file("server.pem").certificate_files("client.pem", "client.key"),
/// );
/// # let _ = (server, client);
/// ```
///
/// The address may name the same files as query parameters, which fill in what the options leave
/// unset: `tls://host:port?cert=FILE&key=FILE` (this side's certificate and key),
/// `ca=FILE` (roots to trust), `client-ca=FILE` (listener: require client certificates chained to
/// these roots), `name=NAME` (the name the server's certificate must carry). A listener's
/// `local_addr` keeps the query, so clients given it trust what the address says.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct TlsOptions {
    pub(crate) identity: Option<Identity>,
    pub(crate) trust: Option<Pem>,
    pub(crate) client_roots: Option<Pem>,
    pub(crate) server_name: Option<String>,
}

impl TlsOptions {
    /// The default options: no certificate of our own, the Mozilla roots, no client
    /// certificates required, the server name from the address.
    pub fn new() -> Self {
        Self::default()
    }

    /// This side's certificate chain (leaf first) and private key, as PEM files: required to
    /// listen; for a client, the certificate it presents to a listener that asks for one.
    /// Default: none.
    #[must_use]
    pub fn certificate_files(mut self, chain: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.identity = Some(Identity { chain: Pem::File(chain.into()), key: Pem::File(key.into()) });
        self
    }

    /// As [`certificate_files`](Self::certificate_files), with the PEM text in memory.
    #[must_use]
    pub fn certificate_pem(mut self, chain: impl AsRef<[u8]>, key: impl AsRef<[u8]>) -> Self {
        self.identity =
            Some(Identity { chain: Pem::Memory(Arc::from(chain.as_ref())), key: Pem::Memory(Arc::from(key.as_ref())) });
        self
    }

    /// Client side: the root certificates (PEM file) a server's certificate must chain to,
    /// instead of the Mozilla roots. A self-signed server certificate is its own root.
    #[must_use]
    pub fn trust_file(mut self, roots: impl Into<PathBuf>) -> Self {
        self.trust = Some(Pem::File(roots.into()));
        self
    }

    /// As [`trust_file`](Self::trust_file), with the PEM text in memory.
    #[must_use]
    pub fn trust_pem(mut self, roots: impl AsRef<[u8]>) -> Self {
        self.trust = Some(Pem::Memory(Arc::from(roots.as_ref())));
        self
    }

    /// Listener side: require every client to present a certificate chained to these roots
    /// (PEM file): mutual TLS. Default: no client certificate is asked for.
    #[must_use]
    pub fn client_roots_file(mut self, roots: impl Into<PathBuf>) -> Self {
        self.client_roots = Some(Pem::File(roots.into()));
        self
    }

    /// As [`client_roots_file`](Self::client_roots_file), with the PEM text in memory.
    #[must_use]
    pub fn client_roots_pem(mut self, roots: impl AsRef<[u8]>) -> Self {
        self.client_roots = Some(Pem::Memory(Arc::from(roots.as_ref())));
        self
    }

    /// Client side: the DNS name (or IP address) the server's certificate must carry, when it is
    /// not the host of the address (e.g. connecting to an IP address of a server whose
    /// certificate names `calc.example.com`). Default: the address's host.
    ///
    /// # Panics
    /// If `name` is neither a valid DNS name nor an IP address.
    #[must_use]
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        let name = name.into();
        assert!(
            ServerName::try_from(name.as_str()).is_ok(),
            "TlsOptions::server_name must be a DNS name or an IP address, not `{name}`"
        );
        self.server_name = Some(name);
        self
    }

    /// These options, with what they leave unset taken from the address's query parameters.
    pub(crate) fn filled_from(&self, params: &TlsParams) -> TlsOptions {
        let mut merged = self.clone();
        if merged.identity.is_none() {
            if let (Some(cert), Some(key)) = (&params.cert, &params.key) {
                merged.identity = Some(Identity { chain: Pem::File(cert.clone()), key: Pem::File(key.clone()) });
            }
        }
        if merged.trust.is_none() {
            merged.trust = params.ca.clone().map(Pem::File);
        }
        if merged.client_roots.is_none() {
            merged.client_roots = params.client_ca.clone().map(Pem::File);
        }
        if merged.server_name.is_none() {
            merged.server_name = params.name.clone();
        }
        merged
    }
}

/// The query parameters of a `tls://` address: files (and a name) that fill in what
/// [`TlsOptions`] leave unset. See [`TlsOptions`] for their meaning.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct TlsParams {
    /// `ca=FILE`: roots a server's certificate must chain to.
    pub ca: Option<PathBuf>,
    /// `cert=FILE`: this side's certificate chain.
    pub cert: Option<PathBuf>,
    /// `key=FILE`: this side's private key.
    pub key: Option<PathBuf>,
    /// `client-ca=FILE`: roots a client's certificate must chain to (listener; mutual TLS).
    pub client_ca: Option<PathBuf>,
    /// `name=NAME`: the name the server's certificate must carry.
    pub name: Option<String>,
}

impl TlsParams {
    /// The parameters as `(key, value)` pairs, in a fixed order (the address's canonical form).
    pub(crate) fn pairs(&self) -> Vec<(&'static str, String)> {
        let path = |p: &Option<PathBuf>| p.as_deref().map(|p: &Path| p.display().to_string());
        [
            ("ca", path(&self.ca)),
            ("cert", path(&self.cert)),
            ("key", path(&self.key)),
            ("client-ca", path(&self.client_ca)),
            ("name", self.name.clone()),
        ]
        .into_iter()
        .filter_map(|(k, v)| Some((k, v?)))
        .collect()
    }

    /// Sets parameter `key`; `Err` names what is wrong.
    pub(crate) fn set(&mut self, key: &str, value: String) -> Result<(), String> {
        let slot_path = |slot: &mut Option<PathBuf>| -> Result<(), String> {
            if slot.is_some() {
                return Err(format!("`{key}` given twice"));
            }
            *slot = Some(PathBuf::from(&value));
            Ok(())
        };
        match key {
            "ca" => slot_path(&mut self.ca),
            "cert" => slot_path(&mut self.cert),
            "key" => slot_path(&mut self.key),
            "client-ca" => slot_path(&mut self.client_ca),
            "name" => {
                if self.name.is_some() {
                    return Err("`name` given twice".into());
                }
                if ServerName::try_from(value.as_str()).is_err() {
                    return Err(format!("`name={value}` is neither a DNS name nor an IP address"));
                }
                self.name = Some(value);
                Ok(())
            }
            other => Err(format!("unknown parameter `{other}` (known: ca, cert, key, client-ca, name)")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_parameters_fill_in_only_what_is_unset() {
        let params = TlsParams {
            ca: Some("ca.pem".into()),
            cert: Some("c.pem".into()),
            key: Some("k.pem".into()),
            client_ca: None,
            name: Some("example.com".into()),
        };
        let merged = TlsOptions::new().server_name("other.example").filled_from(&params);
        assert_eq!(merged.server_name.as_deref(), Some("other.example"));
        assert_eq!(merged.trust, Some(Pem::File("ca.pem".into())));
        assert_eq!(merged.identity.map(|i| i.key), Some(Pem::File("k.pem".into())));
        assert_eq!(merged.client_roots, None);
    }

    #[test]
    #[should_panic(expected = "TlsOptions::server_name must be a DNS name or an IP address, not `no spaces`")]
    fn a_bad_server_name_is_refused() {
        let _ = TlsOptions::new().server_name("no spaces");
    }

    #[test]
    fn bad_pem_is_an_error_naming_it() {
        let err = Pem::Memory(Arc::from(&b"hello"[..])).certificates("certificate").unwrap_err();
        assert!(err.contains("no `BEGIN CERTIFICATE`"), "{err}");
        let err = Pem::File("/nonexistent/x.pem".into()).certificates("certificate").unwrap_err();
        assert!(err.contains("/nonexistent/x.pem"), "{err}");
        let err = Pem::Memory(Arc::from(&b"nothing"[..])).private_key().unwrap_err();
        assert!(err.contains("no usable private key"), "{err}");
        assert_eq!(format!("{:?}", Pem::Memory(Arc::from(&b"secret"[..]))), "Memory(6 bytes)");
    }
}
