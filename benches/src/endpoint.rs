//! Where a raw or tarpc server listens: a socket of one OS kind, written as one string so it can
//! be passed to the server process on its command line and printed back with the port filled in.
//!
//! `tcp:127.0.0.1:0`, `unix:/abs/path.sock`, `abstract:name` (Linux abstract-namespace Unix
//! socket, what `local://` uses on Linux).

use std::fmt;
use std::path::PathBuf;

/// A socket address of one OS kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// A TCP address, `host:port`.
    Tcp(String),
    /// A Unix socket file.
    Unix(PathBuf),
    /// A Linux abstract-namespace Unix socket name.
    Abstract(String),
}

impl Endpoint {
    /// Parses the form [`Display`](fmt::Display) writes.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (kind, rest) = s.split_once(':').ok_or_else(|| format!("bad endpoint {s:?}"))?;
        match kind {
            "tcp" => Ok(Self::Tcp(rest.to_owned())),
            "unix" => Ok(Self::Unix(rest.into())),
            "abstract" => Ok(Self::Abstract(rest.to_owned())),
            _ => Err(format!("bad endpoint kind {kind:?} in {s:?}")),
        }
    }

    /// The file this endpoint leaves behind, for the parent to remove after the server exits.
    pub fn file(&self) -> Option<PathBuf> {
        match self {
            Self::Unix(path) => Some(path.clone()),
            _ => None,
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(addr) => write!(f, "tcp:{addr}"),
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
            Self::Abstract(name) => write!(f, "abstract:{name}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for s in ["tcp:127.0.0.1:0", "unix:/tmp/x.sock", "abstract:rpc-bench-1"] {
            assert_eq!(Endpoint::parse(s).unwrap().to_string(), s);
        }
        assert!(Endpoint::parse("pipe:x").is_err());
    }
}
