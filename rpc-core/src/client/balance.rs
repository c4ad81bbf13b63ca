//! A client over several servers of one service ([`Client::balanced`]): each call goes to the
//! less loaded (fewer calls in flight) of two servers picked at random, by
//! `tower::balance::p2c`, over the set of live connections a `tower::discover` stream keeps.
//!
//! Each server has a watcher task: it dials (with the backoff of [`ReconnectOptions`], for as
//! long as the client lives), adds the connection to the set, waits until the connection dies,
//! removes it, and dials again. A call is sent to one server only, once: a call in flight on a
//! server that dies fails with `Disconnected` (nothing is retried behind the caller's back);
//! later calls go to the others until it is back. With no server reachable, a call waits up to
//! [`ReconnectOptions::give_up_after`], then fails.

use std::convert::Infallible;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower::balance::p2c::Balance;
use tower::discover::Change;
use tower::load::completion::TrackCompletion;
use tower::load::PendingRequests;
use tower::{Service, ServiceExt};

use super::redial::{dial_with_backoff, Dialer, ReconnectOptions};
use super::{Client, Inner};
use crate::error::RpcError;

/// The request the balancer routes: "pick a connection for a call".
pub(crate) struct Pick;

/// One server's live connection, as a `tower::Service` that hands itself out.
struct Endpoint {
    inner: Arc<Inner>,
}

impl Service<Pick> for Endpoint {
    type Response = Arc<Inner>;
    type Error = RpcError;
    type Future = std::future::Ready<Result<Arc<Inner>, RpcError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), RpcError>> {
        // A dead connection fails readiness, so the balancer drops it at once (the watcher also
        // removes it and dials again).
        match &self.inner.lock_inbound().closed {
            Some(err) => Poll::Ready(Err(err.clone())),
            None => Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, _: Pick) -> Self::Future {
        std::future::ready(Ok(Arc::clone(&self.inner)))
    }
}

/// Keeps an endpoint's in-flight count up while the call that picked it runs: the count is the
/// balancer's load metric.
#[derive(Clone, Copy, Default)]
struct WhileTheCallRuns;

/// The connection a call was given and the load handle it holds until it is done.
pub(crate) type Picked = (Arc<Inner>, tower::load::pending_requests::Handle);

impl TrackCompletion<tower::load::pending_requests::Handle, Arc<Inner>> for WhileTheCallRuns {
    type Output = Picked;

    fn track_completion(&self, handle: tower::load::pending_requests::Handle, inner: Arc<Inner>) -> Picked {
        (inner, handle)
    }
}

type Tracked = PendingRequests<Endpoint, WhileTheCallRuns>;
/// One change of the set of live connections, as the balancer's discover stream yields it.
type Changed = Option<Result<Change<usize, Tracked>, Infallible>>;
/// The discover stream: the watchers' changes, from a channel.
type PollChanges = Box<dyn FnMut(&mut Context<'_>) -> Poll<Changed> + Send>;
type Discovery = futures_util::stream::PollFn<PollChanges>;

/// The state a balanced client's clones share.
pub(crate) struct Balanced {
    balance: tokio::sync::Mutex<Balance<Discovery, Pick>>,
    /// Ids for calls over all the connections, so an id encoded before the pick is unique on
    /// whichever connection it goes to.
    pub(crate) next_id: AtomicU64,
    options: ReconnectOptions,
    peers: String,
    watchers: Vec<tokio::task::AbortHandle>,
}

impl Drop for Balanced {
    fn drop(&mut self) {
        for watcher in &self.watchers {
            watcher.abort();
        }
    }
}

impl Balanced {
    /// A live connection for the next call, and the handle that counts the call as its load.
    pub(crate) async fn pick(&self) -> Result<Picked, RpcError> {
        let mut balance = self.balance.lock().await;
        let ready = tokio::time::timeout(self.options.give_up_after, balance.ready()).await;
        let endpoint = match ready {
            Err(_) => {
                return Err(RpcError::disconnected(format!(
                    "none of {} could be reached within {:?}",
                    self.peers, self.options.give_up_after
                )))
            }
            Ok(Err(e)) => return Err(RpcError::disconnected(format!("balancing over {}: {e}", self.peers))),
            Ok(Ok(endpoint)) => endpoint,
        };
        endpoint.call(Pick).await.map_err(|e| RpcError::disconnected(format!("balancing over {}: {e}", self.peers)))
    }
}

impl Client {
    /// A client over several servers of one service. Each entry of `servers` names a server
    /// (for errors), makes a connection to it with the hello done, and may come with a
    /// connection already made; at least one must, and the first such gives the client its
    /// service, options and frame limit. Each call goes to the less loaded of two live servers
    /// picked at random (`tower::balance::p2c`); a dead server is left out until its dialer
    /// reaches it again, with the backoff of `options`. The facade's `rpc::connect_balanced`
    /// builds this from addresses.
    ///
    /// # Panics
    /// If no entry comes with a connection.
    pub fn balanced(servers: Vec<(String, Dialer, Option<Client>)>, options: ReconnectOptions) -> Client {
        let first = servers
            .iter()
            .find_map(|(_, _, client)| client.clone())
            .expect("Client::balanced needs at least one connected server");
        let (changes, mut receive) = tokio::sync::mpsc::unbounded_channel::<Change<usize, Tracked>>();
        let poll: PollChanges = Box::new(move |cx| receive.poll_recv(cx).map(|change| change.map(Ok)));
        let discovery: Discovery = futures_util::stream::poll_fn(poll);
        let peers = servers.iter().map(|(name, _, _)| name.as_str()).collect::<Vec<_>>().join(", ");
        let mut watchers = Vec::new();
        let endpoint =
            |inner: &Arc<Inner>| PendingRequests::new(Endpoint { inner: Arc::clone(inner) }, WhileTheCallRuns);
        for (key, (_, dial, client)) in servers.into_iter().enumerate() {
            let changes = changes.clone();
            // A server connected already is in the balancer before the first call, not once its
            // watcher task has run: a burst of calls made right away would otherwise all go to
            // the servers whose watchers happened to run first.
            let mut connected = client.map(|client| {
                let _ = changes.send(Change::Insert(key, endpoint(&client.inner)));
                client.inner
            });
            let options = options.clone();
            let task = tokio::spawn(async move {
                loop {
                    let inner = match connected.take() {
                        Some(inner) => inner,
                        None => {
                            let inner = dial_with_backoff(&dial, &options).await;
                            if changes.send(Change::Insert(key, endpoint(&inner))).is_err() {
                                return;
                            }
                            inner
                        }
                    };
                    let _ = inner.until_closed().await;
                    if changes.send(Change::Remove(key)).is_err() {
                        return;
                    }
                }
            });
            watchers.push(task.abort_handle());
        }
        let balanced = Balanced {
            balance: tokio::sync::Mutex::new(Balance::new(discovery)),
            next_id: AtomicU64::new(1),
            options,
            peers,
            watchers,
        };
        Client { inner: first.inner, via: Some(super::Via::Balanced(Arc::new(balanced))) }
    }
}
