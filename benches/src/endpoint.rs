//! Where a raw or tarpc server listens: a socket of one OS kind, written as one string so it can
//! be passed to the server process on its command line and printed back with the port filled in.
//!
//! `tcp:127.0.0.1:0`, `tls:127.0.0.1:0@/cert.pem@/key.pem` (the raw TLS echo with that
//! certificate and key, see `raw_tls.rs`; paths without `@`), `unix:/abs/path.sock`, `abstract:name` (Linux abstract-namespace Unix
//! socket, what `local://` uses on Linux), `fifo:/abs/stem` (a pair of named FIFOs,
//! `stem.c2s` and `stem.s2c`), `spawn:` or `spawn:N` (no listener: the client starts this binary
//! as its child and talks over the child's stdin/stdout; `N` is the CPU the child pins itself to),
//! `mq:name` (Linux: a pair of POSIX message queues `/name.c2s` and `/name.s2c`), `shm:name` (our
//! `shm://` transport's frames, see `raw_shm.rs`), `spin:name` (Linux: a plain shared-memory
//! ping-pong set up over the abstract socket `name`, see `raw_spin.rs`).

use std::fmt;
use std::path::{Path, PathBuf};

/// A socket address of one OS kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// A TCP address, `host:port`.
    Tcp(String),
    /// TLS over TCP at `addr` (`host:port`) with a throwaway certificate the registry made (see
    /// `raw_tls.rs`): the server presents it, the client trusts it.
    Tls {
        /// `host:port`.
        addr: String,
        /// The certificate (PEM).
        cert: PathBuf,
        /// Its private key (PEM).
        key: PathBuf,
    },
    /// A Unix socket file.
    Unix(PathBuf),
    /// A Linux abstract-namespace Unix socket name.
    Abstract(String),
    /// A pair of named FIFOs `<stem>.c2s` and `<stem>.s2c`, created by the server.
    Fifo(PathBuf),
    /// Frames through our own `shm://name` transport (shared memory has no OS primitive to
    /// compare with; see `raw_shm.rs`).
    Shm(String),
    /// A plain shared-memory ping-pong (Linux): a memfd mapping with a mailbox per direction,
    /// handed over on the abstract Unix socket `name` (see `raw_spin.rs`).
    Spin(String),
    /// No server to start: each client connection spawns this binary as a child (pinned to the
    /// given CPU, if any) and talks to it over its stdin and stdout.
    Spawn(Option<usize>),
    /// A pair of POSIX message queues `/<name>.c2s` and `/<name>.s2c`, created by the server.
    Mq(String),
}

impl Endpoint {
    /// Parses the form [`Display`](fmt::Display) writes.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (kind, rest) = s.split_once(':').ok_or_else(|| format!("bad endpoint {s:?}"))?;
        match kind {
            "tcp" => Ok(Self::Tcp(rest.to_owned())),
            "tls" => match rest.split('@').collect::<Vec<_>>()[..] {
                [addr, cert, key] => Ok(Self::Tls { addr: addr.to_owned(), cert: cert.into(), key: key.into() }),
                _ => Err(format!("expected tls:host:port@cert@key, got {s:?}")),
            },
            "unix" => Ok(Self::Unix(rest.into())),
            "abstract" => Ok(Self::Abstract(rest.to_owned())),
            "fifo" => Ok(Self::Fifo(rest.into())),
            "shm" => Ok(Self::Shm(rest.to_owned())),
            "spin" => Ok(Self::Spin(rest.to_owned())),
            "mq" => Ok(Self::Mq(rest.to_owned())),
            "spawn" if rest.is_empty() => Ok(Self::Spawn(None)),
            "spawn" => Ok(Self::Spawn(Some(rest.parse().map_err(|e| format!("bad CPU in {s:?}: {e}"))?))),
            _ => Err(format!("bad endpoint kind {kind:?} in {s:?}")),
        }
    }

    /// The `tls://` address whose throwaway certificate this endpoint uses, for the registry to
    /// remove (`registry::remove_endpoint`, which removes only directories it made).
    pub fn registry_address(&self) -> Option<rpc::transports::Address> {
        let Self::Tls { addr, cert, key } = self else { return None };
        let mut params = rpc::transports::TlsParams::default();
        (params.ca, params.cert, params.key) = (Some(cert.clone()), Some(cert.clone()), Some(key.clone()));
        Some(rpc::transports::Address::Tls { host_port: addr.clone(), params })
    }

    /// The files this endpoint leaves behind, for the parent to remove after the server exits.
    pub fn files(&self) -> Vec<PathBuf> {
        match self {
            Self::Unix(path) => vec![path.clone()],
            Self::Fifo(stem) => vec![fifo_path(stem, "c2s"), fifo_path(stem, "s2c")],
            _ => Vec::new(),
        }
    }

    /// The message queues this endpoint leaves behind (names with their leading `/`), for the
    /// parent to unlink after the server exits.
    pub fn queues(&self) -> Vec<String> {
        match self {
            Self::Mq(name) => vec![format!("/{name}.c2s"), format!("/{name}.s2c")],
            _ => Vec::new(),
        }
    }
}

/// `<stem>.<direction>`, one FIFO of a [`Endpoint::Fifo`] pair.
pub fn fifo_path(stem: &Path, direction: &str) -> PathBuf {
    let mut path = stem.as_os_str().to_owned();
    path.push(".");
    path.push(direction);
    path.into()
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(addr) => write!(f, "tcp:{addr}"),
            Self::Tls { addr, cert, key } => write!(f, "tls:{addr}@{}@{}", cert.display(), key.display()),
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
            Self::Abstract(name) => write!(f, "abstract:{name}"),
            Self::Fifo(stem) => write!(f, "fifo:{}", stem.display()),
            Self::Shm(name) => write!(f, "shm:{name}"),
            Self::Spin(name) => write!(f, "spin:{name}"),
            Self::Spawn(None) => write!(f, "spawn:"),
            Self::Spawn(Some(cpu)) => write!(f, "spawn:{cpu}"),
            Self::Mq(name) => write!(f, "mq:{name}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for s in [
            "tcp:127.0.0.1:0",
            "tls:127.0.0.1:0@/tmp/x-tls-test-certs/cert.pem@/tmp/x-tls-test-certs/key.pem",
            "unix:/tmp/x.sock",
            "abstract:rpc-bench-1",
            "fifo:/tmp/x",
            "shm:rpc-bench-1",
            "spin:rpc-bench-1",
            "spawn:",
            "spawn:1",
            "mq:rpc-bench-1",
        ] {
            assert_eq!(Endpoint::parse(s).unwrap().to_string(), s);
        }
        assert!(Endpoint::parse("pipe:x").is_err());
        assert!(Endpoint::parse("spawn:x").is_err());
        assert!(Endpoint::parse("tls:127.0.0.1:0").is_err());
        assert!(Endpoint::parse("tls:127.0.0.1:0@/c.pem").is_err());
        assert_eq!(Endpoint::Fifo("/tmp/x".into()).files(), [PathBuf::from("/tmp/x.c2s"), "/tmp/x.s2c".into()]);
        let tls = Endpoint::parse("tls:127.0.0.1:0@/d/c.pem@/d/k.pem").unwrap();
        assert!(tls.files().is_empty());
        assert!(matches!(tls.registry_address(), Some(rpc::transports::Address::Tls { .. })));
    }
}
