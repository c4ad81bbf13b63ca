//! Throwaway credentials for tests and tools (feature `test-certificates`): a fresh self-signed
//! certificate for `localhost` and `127.0.0.1`, written with its key into a new temporary
//! directory, so that [`Scheme::fresh_address`](crate::registry::Scheme::fresh_address) can
//! return a `tls://` address that works as it is. Nothing here is meant to protect anything.

use std::io;
use std::path::{Path, PathBuf};

/// The suffix of the directories made here, so that `remove_endpoint` removes only those.
pub(crate) const DIR_SUFFIX: &str = "-tls-test-certs";

/// Writes `cert.pem` and `key.pem` into `dir/{unique}-tls-test-certs/` and returns that
/// directory.
pub(crate) fn write_self_signed(dir: &Path, unique: &str) -> io::Result<PathBuf> {
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .map_err(io::Error::other)?;
    let dir = dir.join(format!("{unique}{DIR_SUFFIX}"));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("cert.pem"), generated.cert.pem())?;
    write_private(&dir.join("key.pem"), generated.signing_key.serialize_pem().as_bytes())?;
    Ok(dir)
}

fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    io::Write::write_all(&mut options.open(path)?, bytes)
}
