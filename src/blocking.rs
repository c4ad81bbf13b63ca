//! Blocking clients: for code that is not async. `#[service]` generates, beside `FooClient`,
//! a `FooBlockingClient` with the same methods returning their results directly:
//!
//! ```no_run
//! # #[rpc::service] trait Calculator { async fn add(&self, a: i64, b: i64) -> i64; }
//! fn main() -> Result<(), rpc::RpcError> {
//!     let calc = CalculatorBlockingClient::connect("tcp://127.0.0.1:12345")?;
//!     assert_eq!(calc.add(1, 2)?, 3);
//!     Ok(())
//! }
//! ```
//!
//! It works over the same transports with the same deadlines (`with_timeout`, `connect_with`'s
//! default) and errors, from any number of threads at once (clones share the connection, and so
//! do threads that share one client). The caller needs no runtime: the calls run on one
//! process-wide single-threaded runtime of this crate, started at the first blocking connect, and
//! each call is polled on the calling thread, which also waits for the connection's I/O itself
//! (a worker thread waiting for it instead would cost a thread wake-up on every answer). With
//! several threads calling at once, one of them waits for the I/O of all and wakes the others.
//!
//! A call is first polled once in place, outside the runtime's `block_on`, and goes on in
//! `block_on` only if it is still waiting. Over `shm://` between processes the answer usually
//! arrives during that first poll (the transport polls the ring for a few microseconds before it
//! waits), and the call then skips `block_on`'s cost: about 930 of the 4,150 instructions a small
//! call cost the calling thread (callgrind). The sockets, pipes and queues let the runtime run
//! once before their first look, so their calls, and any call made while another call of its
//! connection is in flight, go on in `block_on`.
//!
//! Nothing runs between calls: what a client leaves to a task (a cancel that had to wait for the
//! transport's room, the watch of a reconnecting client, the write of the requests of calls made
//! from several threads at once) runs while a later call waits for its answer; a dropped
//! client's flushing task ends at the next call of any blocking client. (`block_on` too polls
//! its future first and returns at once if it is ready, so the poll in place takes nothing from
//! those tasks.)
//!
//! Inside async code, use `FooClient`: a blocking call there would stall the runtime's thread,
//! so it panics instead, naming the async client.

use std::future::Future;
use std::sync::OnceLock;
use std::task::{Context, Poll, Waker};

use crate::{RpcError, Streaming};

/// The runtime every blocking client runs on.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("the blocking clients' runtime starts")
    })
}

/// Runs `future` to completion on the calling thread; used by generated blocking clients.
///
/// Polled once in place first, inside the runtime's context, with a waker that does nothing
/// (see the module docs for why); a future still pending goes on in `block_on`, which polls it
/// again with a real waker, and every waker the first poll left with the engine or a transport
/// is replaced by that poll's.
///
/// # Panics
/// When called from inside an async runtime (use the async client there).
#[doc(hidden)]
pub fn block_on<F: Future>(future: F) -> F::Output {
    if tokio::runtime::Handle::try_current().is_ok() {
        panic!("a blocking rpc client was called from async code: use the async client (`FooClient`) there");
    }
    let runtime = runtime();
    // Held until the future is dropped (locals drop in reverse order), as `block_on` would have
    // held it: a call dropped early (a panic while it is polled) sends its cancel, which may need
    // a task, and so the runtime.
    let _context = runtime.enter();
    let mut future = std::pin::pin!(future);
    if let Poll::Ready(output) = future.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        return output;
    }
    runtime.block_on(future)
}

/// The items of a streaming call made by a blocking client, one per `next`.
///
/// Dropping it cancels the call, as dropping a [`Streaming`] does.
#[derive(Debug)]
pub struct BlockingStreaming<T> {
    /// `None` only while dropping.
    inner: Option<Streaming<T>>,
}

impl<T> BlockingStreaming<T> {
    #[doc(hidden)]
    pub fn new(inner: Streaming<T>) -> Self {
        BlockingStreaming { inner: Some(inner) }
    }
}

impl<T: serde::de::DeserializeOwned> Iterator for BlockingStreaming<T> {
    type Item = Result<T, RpcError>;

    fn next(&mut self) -> Option<Self::Item> {
        block_on(self.inner.as_mut()?.next())
    }
}

impl<T> Drop for BlockingStreaming<T> {
    fn drop(&mut self) {
        // Dropping a stream sends its cancel, which needs the runtime's context.
        let _guard = runtime().enter();
        drop(self.inner.take());
    }
}
