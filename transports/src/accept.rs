//! Accepting a client that may have to wait: what the listeners that set a connection up
//! themselves (`fifo://`, `mq://`, `shm://`) do with a client they have taken from their queue
//! (a connect record, a setup socket) when serving it now is not possible.
//!
//! The client is held in the listener, not in the accept future, so that dropping that future
//! (the server shutting down) or running out of descriptors loses nothing: the next accept
//! tries the held client first, as a socket's backlog keeps a client the server has not
//! accepted yet.

use std::io;

use rpc_core::transport::Connection;

/// What became of one attempt to serve a held client `T`.
#[derive(Debug)]
pub(crate) enum PendingAccept<T> {
    /// The connection is set up.
    Accepted(Connection),
    /// The client is gone, or is not one of ours (nothing of its was touched): done with it.
    Skip,
    /// Out of descriptors or memory before anything changed: the client is kept, to be
    /// retried by the next accept, and the error is reported (the server pauses and retries).
    Retry(T, io::Error),
    /// Failed after the client was told (refused), or in a way no retry cures: done with it,
    /// and the error is reported.
    Failed(io::Error),
}

impl<T> PendingAccept<T> {
    /// Settles the attempt: what `accept` returns now (`None`: take the next client), putting a
    /// client to retry back in `held`.
    pub(crate) fn settle(self, held: &mut Option<T>) -> Option<io::Result<Connection>> {
        match self {
            PendingAccept::Accepted(conn) => Some(Ok(conn)),
            PendingAccept::Skip => None,
            PendingAccept::Retry(client, e) => {
                *held = Some(client);
                Some(Err(e))
            }
            PendingAccept::Failed(e) => Some(Err(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_retry_keeps_the_client() {
        let mut held = None;
        assert!(PendingAccept::<u8>::Skip.settle(&mut held).is_none());
        assert!(held.is_none());
        let failed = PendingAccept::<u8>::Failed(io::ErrorKind::OutOfMemory.into()).settle(&mut held);
        assert_eq!(failed.unwrap().unwrap_err().kind(), io::ErrorKind::OutOfMemory);
        assert!(held.is_none(), "a refused client is done with");
        let retried = PendingAccept::Retry(7u8, io::ErrorKind::OutOfMemory.into()).settle(&mut held);
        assert!(retried.unwrap().is_err());
        assert_eq!(held, Some(7), "kept for the next accept");
    }
}
