//! Error messages that say what was being done to which address.
//!
//! A bare `Connection refused (os error 111)` does not say which of a program's addresses
//! failed; users see `connecting to tcp://127.0.0.1:1: connection refused` instead. The
//! original error stays reachable through [`std::error::Error::source`], and the
//! [`io::ErrorKind`] is kept so callers (and `RpcError::from`) can still match on it.

use std::error::Error;
use std::fmt;
use std::io;

use rpc_core::error::RpcError;

use crate::address::Address;

/// `"{action} {address}: {err}"` as an [`RpcError`].
pub(crate) fn error(action: &str, address: &Address, err: io::Error) -> RpcError {
    RpcError::from(io_error(action, address, err))
}

/// `"{action} {address}: {err}"` as an [`io::Error`] of the same kind.
pub(crate) fn io_error(action: &str, address: &Address, err: io::Error) -> io::Error {
    let message = format!("{action} {address}: {}", describe(&err));
    io::Error::new(err.kind(), Contextual { message, source: err })
}

/// An io error's text in the style of the rest of our messages: std renders OS errors as
/// `Connection refused (os error 111)`; we keep the words, drop the number (the source still has
/// it) and start in lower case.
pub(crate) fn describe(err: &io::Error) -> String {
    let text = err.to_string();
    let text = match (err.raw_os_error(), text.rfind(" (os error ")) {
        (Some(_), Some(at)) => text[..at].to_owned(),
        _ => text,
    };
    let mut chars = text.chars();
    match (chars.next(), chars.next()) {
        // "Connection refused" -> "connection refused", but leave "IPv6 ..." or "EOF" alone.
        (Some(first), Some(second)) if first.is_uppercase() && second.is_lowercase() => {
            first.to_lowercase().chain(text[first.len_utf8()..].chars()).collect()
        }
        _ => text,
    }
}

#[derive(Debug)]
struct Contextual {
    message: String,
    source: io::Error,
}

impl fmt::Display for Contextual {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl Error for Contextual {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_errors_lose_the_number_and_the_capital() {
        // ENOENT on Unix, ERROR_FILE_NOT_FOUND on Windows: both have a capitalised message.
        let err = io::Error::from_raw_os_error(2);
        let text = describe(&err);
        assert!(!text.contains("os error"), "{text}");
        assert!(text.starts_with(|c: char| c.is_lowercase()), "{text}");
    }

    #[test]
    fn custom_messages_are_kept() {
        assert_eq!(describe(&io::Error::other("IPv6 needs brackets")), "IPv6 needs brackets");
        assert_eq!(describe(&io::Error::other("no listener")), "no listener");
    }

    #[test]
    fn context_keeps_kind_and_source() {
        let address = Address::Mem("x".into());
        let err = io_error("connecting to", &address, io::Error::new(io::ErrorKind::ConnectionRefused, "nobody home"));
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
        assert_eq!(err.to_string(), "connecting to mem://x: nobody home");
        let source = err.get_ref().and_then(|e| e.source()).expect("source kept");
        assert_eq!(source.to_string(), "nobody home");
    }
}
