//! Failures that pass by themselves, and how long to wait before trying again: the one errno
//! classifier of the workspace (the server engine's accept loop and every transport's setup use
//! it) and the one retry pause.

use std::io;
use std::time::Duration;

/// How long a loop waits after a transient failure (an accept out of descriptors, a connection
/// attempt that found no room) before it tries again: long enough not to spin, short enough that
/// a freed descriptor is used at once.
pub const RETRY_PAUSE: Duration = Duration::from_millis(20);

/// Resource exhaustion (`EMFILE`, `ENFILE`, `ENOMEM`, or [`io::ErrorKind::OutOfMemory`]): passes
/// when other files close. A listener that runs into it while setting up a connection keeps the
/// client waiting and fails its accept, which the server engine retries after [`RETRY_PAUSE`];
/// any other failure to set a connection up is the client's doing.
pub fn is_exhaustion(err: &io::Error) -> bool {
    if err.kind() == io::ErrorKind::OutOfMemory {
        return true;
    }
    #[cfg(unix)]
    {
        use rustix::io::Errno;
        matches!(Errno::from_io_error(err), Some(Errno::MFILE | Errno::NFILE | Errno::NOMEM))
    }
    #[cfg(not(unix))]
    false
}

/// Whether an accept error passes by itself: a client that vanished mid-accept, or
/// [exhaustion](is_exhaustion) while other connections are open. The server waits
/// [`RETRY_PAUSE`] and accepts again; after any other error it stops.
pub fn is_transient(err: &io::Error) -> bool {
    use io::ErrorKind::*;
    matches!(err.kind(), ConnectionAborted | ConnectionReset | Interrupted | WouldBlock | TimedOut)
        || is_exhaustion(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies() {
        assert!(is_exhaustion(&io::Error::from(io::ErrorKind::OutOfMemory)));
        assert!(!is_exhaustion(&io::Error::from(io::ErrorKind::ConnectionRefused)));
        assert!(is_transient(&io::Error::from(io::ErrorKind::ConnectionAborted)));
        assert!(!is_transient(&io::Error::from(io::ErrorKind::PermissionDenied)));
        #[cfg(unix)]
        for errno in [rustix::io::Errno::MFILE, rustix::io::Errno::NFILE, rustix::io::Errno::NOMEM] {
            let err = io::Error::from_raw_os_error(errno.raw_os_error());
            assert!(is_exhaustion(&err) && is_transient(&err), "{err}");
        }
    }
}
