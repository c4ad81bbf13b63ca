//! The errors a caller can see: [`RpcError`] for everything the framework can go wrong with, and
//! [`CallError`] for methods whose trait signature returns `Result<T, E>`, which keeps the
//! application's own `E` apart from framework failures.

use std::fmt;
use std::io;
use std::sync::Arc;

use crate::wire::CloseCode;

/// A failure of the framework (transport, protocol, peer), never of the application.
///
/// `Clone` because one dead connection fails every pending call with the same error.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
// A word-wide tag. Left to itself the compiler picks a two-byte tag and packs the small fields
// (`ProtocolVersion`'s, `Disconnected`'s code) right after it, so every move of a whole
// `RpcError`, or of a `Poll<Result<u64, RpcError>>` it is the niche of, copied bytes 2..56 with
// 16-byte moves at offsets 2, 18 and 34: the client's `poll_enqueue` did, on every call, and so
// did `Exchange::poll` (objdump: 19 of 46 and 14 of 88 vector moves misaligned). With a `u64`
// tag every field is aligned; the size stays 56 bytes and `Result`s still use the tag's niche.
#[repr(u64)]
pub enum RpcError {
    /// The connection is gone (peer exited or crashed, network failure, closed by us).
    #[error("disconnected: {reason}")]
    Disconnected {
        /// What was observed, e.g. "connection closed by peer".
        reason: Arc<str>,
        /// Why the peer closed it, when it said so with a goaway (match on this, not on the
        /// text); `None` when the connection just ended (EOF, reset, a killed peer).
        code: Option<CloseCode>,
    },
    /// The call's deadline passed before an answer arrived.
    #[error("deadline exceeded")]
    DeadlineExceeded,
    /// The call was cancelled (by the server shutting down, or a cancel frame).
    #[error("call cancelled")]
    Cancelled,
    /// The server does not serve the service the client asked for.
    #[error("unknown service `{service}` (this server serves: {})", list(available))]
    UnknownService {
        /// The service the client asked for.
        service: String,
        /// The services the server offers.
        available: Vec<String>,
    },
    /// The server's service has no method with the requested id.
    #[error("unknown method `{method}` of service `{service}`")]
    UnknownMethod {
        /// Service name.
        service: String,
        /// Method name if the client knew it, else the numeric id.
        method: String,
    },
    /// Client and server were built from different versions of the service trait.
    #[error("interface mismatch for service `{service}`: {}", differences.join("; "))]
    InterfaceMismatch {
        /// Service name.
        service: String,
        /// One line per method that differs.
        differences: Vec<String>,
    },
    /// The peer speaks another version of the wire protocol (or is not an rpc peer at all).
    #[error("protocol version mismatch: we speak {ours}, the peer speaks {theirs}")]
    ProtocolVersion {
        /// Our protocol version.
        ours: u16,
        /// The peer's.
        theirs: u16,
    },
    /// A frame was larger than the connection's maximum frame length.
    #[error("frame of {size} bytes exceeds the maximum of {max} bytes")]
    FrameTooLarge {
        /// The frame's length in bytes.
        size: u64,
        /// The configured maximum.
        max: u64,
    },
    /// The handler panicked; the server caught it and keeps serving.
    #[error("remote handler panicked: {message}")]
    RemotePanic {
        /// The panic payload if it was a string.
        message: String,
    },
    /// The server refused the call because it is at its limit.
    #[error("server overloaded")]
    Overloaded,
    /// A server middleware layer (see `Server::layer`) refused the call, e.g. an auth layer; the
    /// message is the layer's error.
    #[error("call rejected by the server: {message}")]
    Rejected {
        /// The layer's error, as text.
        message: String,
    },
    /// An I/O error from the transport or while connecting.
    #[error("I/O error: {0}")]
    Io(#[source] Arc<io::Error>),
    /// Bytes from the peer could not be decoded into the expected type.
    #[error("decode error: {0}")]
    Decode(String),
    /// A value could not be encoded (a serde `Serialize` impl failed).
    #[error("encode error: {0}")]
    Encode(String),
    /// The peer broke the protocol (unexpected frame, second hello, ...).
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// An address string could not be used (unknown scheme, malformed, unsupported here).
    #[error("invalid address: {0}")]
    Address(String),
}

// The word-wide tag costs no size, and a call's result still fits in the error's own bytes.
#[cfg(target_pointer_width = "64")]
const _: () = {
    assert!(std::mem::size_of::<RpcError>() == 56);
    assert!(std::mem::size_of::<std::task::Poll<Result<u64, RpcError>>>() == 56);
};

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "nothing".to_owned()
    } else {
        names.join(", ")
    }
}

impl RpcError {
    /// A [`RpcError::Disconnected`] with this reason.
    pub fn disconnected(reason: impl Into<Arc<str>>) -> Self {
        RpcError::Disconnected { reason: reason.into(), code: None }
    }

    /// A [`RpcError::Disconnected`] for a connection the peer closed with a goaway.
    pub fn closed_by_peer(code: CloseCode, reason: impl Into<Arc<str>>) -> Self {
        RpcError::Disconnected { reason: reason.into(), code: Some(code) }
    }

    /// The peer's reason for closing the connection, if this error is a [`RpcError::Disconnected`]
    /// that came with one.
    pub fn close_code(&self) -> Option<CloseCode> {
        match self {
            RpcError::Disconnected { code, .. } => *code,
            _ => None,
        }
    }

    /// True for errors that mean the connection is unusable from now on.
    pub fn is_disconnect(&self) -> bool {
        matches!(self, RpcError::Disconnected { .. } | RpcError::Io(_))
    }
}

impl From<io::Error> for RpcError {
    fn from(err: io::Error) -> Self {
        // Transports report an oversized frame as an io::Error wrapping `FrameTooLarge`;
        // surface it as the typed variant instead of a generic I/O error.
        if let Some(too_large) = err.get_ref().and_then(|e| e.downcast_ref::<crate::wire::FrameTooLarge>()) {
            return RpcError::FrameTooLarge { size: too_large.size, max: too_large.max };
        }
        match err.kind() {
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::NotConnected => RpcError::disconnected(err.to_string()),
            _ => RpcError::Io(Arc::new(err)),
        }
    }
}

/// The error of a call to a method declared `-> Result<T, E>`: either the application's own
/// error, delivered intact, or a framework failure.
///
/// It implements [`std::error::Error`] when `E` does, so a single `?` works in functions
/// returning `Box<dyn Error>` or `anyhow::Result`; match on it to tell the two apart.
#[derive(Debug, Clone, PartialEq)]
pub enum CallError<E> {
    /// The remote method ran and returned `Err(e)`.
    App(E),
    /// The call did not complete: the framework failed.
    Rpc(RpcError),
}

impl<E> CallError<E> {
    /// The application error, if that is what this is.
    pub fn app(&self) -> Option<&E> {
        match self {
            CallError::App(e) => Some(e),
            CallError::Rpc(_) => None,
        }
    }

    /// The framework error, if that is what this is.
    pub fn rpc(&self) -> Option<&RpcError> {
        match self {
            CallError::App(_) => None,
            CallError::Rpc(e) => Some(e),
        }
    }

    /// Consumes the error, returning the application error if it is one.
    pub fn into_app(self) -> Result<E, RpcError> {
        match self {
            CallError::App(e) => Ok(e),
            CallError::Rpc(e) => Err(e),
        }
    }
}

impl<E> From<RpcError> for CallError<E> {
    fn from(err: RpcError) -> Self {
        CallError::Rpc(err)
    }
}

impl<E: fmt::Display> fmt::Display for CallError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::App(e) => e.fmt(f),
            CallError::Rpc(e) => e.fmt(f),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for CallError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        // Transparent: Display already shows the inner error, so expose its cause, not itself.
        match self {
            CallError::App(e) => e.source(),
            CallError::Rpc(e) => std::error::Error::source(e),
        }
    }
}

impl PartialEq for RpcError {
    /// Structural equality; I/O errors compare by kind and message.
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (RpcError::Io(a), RpcError::Io(b)) => a.kind() == b.kind() && a.to_string() == b.to_string(),
            _ => std::mem::discriminant(self) == std::mem::discriminant(other) && self.to_string() == other.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct MathError;
    impl fmt::Display for MathError {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("division by zero")
        }
    }
    impl std::error::Error for MathError {}

    fn boxed() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        Err(CallError::<MathError>::App(MathError))?
    }

    #[test]
    fn call_error_works_with_question_mark_into_box_dyn_error() {
        let err = boxed().unwrap_err();
        assert_eq!(err.to_string(), "division by zero");
        let err = err.downcast::<CallError<MathError>>().unwrap();
        assert_eq!(err.app(), Some(&MathError));
    }

    #[test]
    fn frame_too_large_io_error_maps_to_typed_variant() {
        let io = io::Error::new(io::ErrorKind::InvalidData, crate::wire::FrameTooLarge { size: 10, max: 5 });
        assert_eq!(RpcError::from(io), RpcError::FrameTooLarge { size: 10, max: 5 });
    }

    #[test]
    fn eof_maps_to_disconnected() {
        let io = io::Error::from(io::ErrorKind::UnexpectedEof);
        assert!(RpcError::from(io).is_disconnect());
    }

    #[test]
    fn unknown_service_lists_what_is_served() {
        let e = RpcError::UnknownService { service: "Calc".into(), available: vec!["Echo".into(), "Kv".into()] };
        assert_eq!(e.to_string(), "unknown service `Calc` (this server serves: Echo, Kv)");
    }
}
