//! What a handler may know about the call it is serving: who called (the peer's credentials on
//! local mechanisms, its verified certificate's identity over mutual TLS), over which connection, and until when the caller waits.
//!
//! Handlers keep the trait's own signature (`async fn add(&self, a: i64, b: i64) -> i64`): the
//! server engine does not pass the context as an argument but makes it *current* while the
//! handler runs, and the handler asks for it with [`CallContext::current`].
//!
//! ```
//! use rpc_core::context::CallContext;
//!
//! # #[allow(dead_code)]
//! // Inside a handler:
//! async fn add(a: i64, b: i64) -> i64 {
//!     if let Some(ctx) = CallContext::current() {
//!         if let Some(peer) = ctx.peer_credentials() {
//!             eprintln!("add called by uid {} (pid {:?}) over {}", peer.uid, peer.pid, ctx.transport());
//!         }
//!     }
//!     a + b
//! }
//! ```
//!
//! The context belongs to the handler's future, wherever the engine polls it (first inline on the
//! connection's task, then on a task of its own if the handler waits). A task the handler spawns
//! does not inherit it: take [`CallContext::current`] before spawning and move it in.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use crate::loan::Loan;
use crate::transport::{ConnectionInfo, PeerCredentials, PeerIdentity};
use crate::wire::TraceContext;

// The context of the call whose handler this thread is polling, for the length of that poll
// (see `scope` and `sync_scope`); scopes nest, each restoring the one it replaced. A scoped
// thread-local borrows the context instead of moving it in and out of a task-local on every poll:
// an inline `add` call paid ~100 instructions for tokio's `sync_scope` and a clone of the
// context (callgrind).
scoped_tls::scoped_thread_local!(static CURRENT: CallContext);

/// The call a handler is serving. Cheap to clone (the connection's facts are shared).
#[derive(Debug, Clone)]
pub struct CallContext {
    connection: Arc<ConnectionInfo>,
    id: u64,
    method: u32,
    deadline: Option<Instant>,
    trace: Option<TraceContext>,
}

impl CallContext {
    /// The context of the call being served, or `None` outside a handler (or in a task the
    /// handler spawned).
    pub fn current() -> Option<CallContext> {
        Self::with_current(Clone::clone)
    }

    /// Runs `f` with the context of the call being served, without cloning it; `None` outside a
    /// handler.
    pub fn with_current<R>(f: impl FnOnce(&CallContext) -> R) -> Option<R> {
        CURRENT.is_set().then(|| CURRENT.with(f))
    }

    /// Who the peer process is, where the transport can tell: `local://`, `unix://` (from the
    /// kernel, `SO_PEERCRED`), `spawn:` and `mem://`; `None` over `tcp://`, `fifo://` and `mq://`.
    pub fn peer_credentials(&self) -> Option<PeerCredentials> {
        self.connection.peer_credentials
    }

    /// Who the peer is as its verified certificate says: over `tls://` with mutual TLS (the
    /// listener requires client certificates), the client certificate's subject and alternative
    /// names; `None` elsewhere. The transport verified the certificate against the listener's
    /// client roots before the first call, so a handler may authorise on it.
    pub fn peer_identity(&self) -> Option<&PeerIdentity> {
        self.connection.peer_identity.as_ref()
    }

    /// The mechanism the call came over, e.g. `"unix"`.
    pub fn transport(&self) -> &'static str {
        self.connection.transport
    }

    /// The peer as the transport names it (`tcp://127.0.0.1:50312`; for socket files and local
    /// names, the listener's own address: the client has none).
    pub fn peer(&self) -> &str {
        &self.connection.peer
    }

    /// Everything known about the connection the call came over.
    pub fn connection(&self) -> &ConnectionInfo {
        &self.connection
    }

    /// A buffer of `len` bytes for a payload the handler returns or sends: memory the connection
    /// shares with the client, which it can send by reference (`shm://`), else a zeroed heap
    /// buffer (see [`crate::loan`]). Write all of it: a lent buffer holds earlier payloads of the
    /// connection; and only what the client may see: it can read a lent buffer at any time.
    /// Only worth it for payloads of at least [`SPLICE_MIN`](crate::wire::SPLICE_MIN) bytes
    /// (smaller ones are copied into their frame anyway).
    ///
    /// ```
    /// use rpc_core::bytes::Bytes;
    /// use rpc_core::context::CallContext;
    /// use rpc_core::loan::Loan;
    ///
    /// // A handler whose result is written where the connection sends it from (over `shm://`);
    /// // called outside a handler (no call being served), it fills a heap buffer.
    /// async fn read_block(len: usize) -> Bytes {
    ///     let mut block = CallContext::with_current(|ctx| ctx.loan(len)).unwrap_or_else(|| Loan::heap(len));
    ///     // All of it: a lent buffer holds earlier payloads of the connection.
    ///     block.fill(0xAB);
    ///     block.freeze()
    /// }
    /// # let block = futures_util::FutureExt::now_or_never(read_block(64 * 1024)).unwrap();
    /// # assert!(block.iter().all(|&b| b == 0xAB));
    /// ```
    pub fn loan(&self, len: usize) -> Loan {
        match &self.connection.lender {
            Some(lender) => lender.loan(len),
            None => Loan::heap(len),
        }
    }

    /// When the caller stops waiting (the call's timeout, counted from when the server read the
    /// request); `None` if the call has no deadline. The engine enforces it: the handler is
    /// stopped then. A handler may use it to pass a deadline on to calls of its own.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The call's id on its connection (unique among the connection's calls in flight).
    pub fn call_id(&self) -> u64 {
        self.id
    }

    /// The id of the method called.
    pub fn method_id(&self) -> u32 {
        self.method
    }

    /// The caller's trace context, if its client propagates one
    /// ([`ClientOptions::propagate_trace_context`](crate::client::ClientOptions::propagate_trace_context)).
    /// Calls this handler makes with a propagating client continue the same trace.
    pub fn trace_context(&self) -> Option<TraceContext> {
        self.trace
    }

    pub(crate) fn new(
        connection: Arc<ConnectionInfo>,
        id: u64,
        method: u32,
        deadline: Option<Instant>,
        trace: Option<TraceContext>,
    ) -> Self {
        CallContext { connection, id, method, deadline, trace }
    }

    /// Makes `self` current while `f` runs.
    pub(crate) fn sync_scope<R>(&self, f: impl FnOnce() -> R) -> R {
        CURRENT.set(self, f)
    }

    /// Makes `self` current whenever `future` is polled.
    pub(crate) fn scope<F: Future + Unpin>(self, future: F) -> Scoped<F> {
        Scoped { context: self, future }
    }
}

/// A future polled with its call's context current ([`CallContext::scope`]). The engine's
/// handler futures are boxed already, so `F: Unpin` costs nothing and needs no pin projection.
pub(crate) struct Scoped<F> {
    context: CallContext,
    future: F,
}

impl<F: Future + Unpin> Future for Scoped<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        CURRENT.set(&this.context, || Pin::new(&mut this.future).poll(cx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn current_only_inside_the_scope() {
        assert!(CallContext::current().is_none());
        let info = Arc::new(ConnectionInfo::new("test", "peer", 64).with_peer_credentials(Some(PeerCredentials::new(
            1,
            2,
            Some(3),
        ))));
        let ctx = CallContext::new(info, 9, 4, None, None);
        let seen = ctx
            .scope(Box::pin(async {
                tokio::task::yield_now().await;
                let ctx = CallContext::current().expect("inside the scope");
                let spawned = tokio::spawn(async { CallContext::current().is_none() }).await.unwrap();
                (ctx.call_id(), ctx.method_id(), ctx.peer_credentials(), ctx.transport(), spawned)
            }))
            .await;
        assert_eq!(seen, (9, 4, Some(PeerCredentials::new(1, 2, Some(3))), "test", true));
        assert!(CallContext::with_current(|_| ()).is_none());
    }
}
