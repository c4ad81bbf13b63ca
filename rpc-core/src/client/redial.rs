//! The reconnecting client (opt-in, [`ReconnectOptions`]): when its connection has died, the
//! next call waits while the client dials again, with exponential backoff and jitter, up to a
//! time limit, then fails with a clear error.
//!
//! Calls in flight when the connection dies fail as they always do (`Disconnected`): nothing is
//! retried behind the caller's back, since the server may have run them. Each new connection
//! repeats the hello, so a server now serving an incompatible trait is reported
//! (`InterfaceMismatch`, `UnknownService`, `ProtocolVersion`) instead of used.
//!
//! A watcher task reads the connection while no call does, so a peer that closes it (or is
//! killed: the kernel closes its sockets) is noticed at once, and the next call reconnects
//! instead of being sent into a dead connection. A link that dies silently is noticed through
//! the transport's keepalive (`TransportOptions::keepalive`); a call sent before that fails like
//! an in-flight one.
//!
//! A client made without these options never comes here: its calls take the connection they
//! were made with, as before.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Client, Inner};
use crate::error::RpcError;
use crate::transport::BoxFuture;

/// Makes a new connection and repeats the hello: what the facade gives
/// [`Client::reconnecting`] (it knows the address and the transports; this crate does not).
pub type Dialer = Arc<dyn Fn() -> BoxFuture<'static, Result<Client, RpcError>> + Send + Sync>;

/// How a reconnecting client dials again. Built like every options type: [`ReconnectOptions::new`]
/// and chained setters, each naming its default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconnectOptions {
    pub(crate) initial_delay: Duration,
    pub(crate) max_delay: Duration,
    pub(crate) give_up_after: Duration,
}

impl Default for ReconnectOptions {
    fn default() -> Self {
        Self {
            initial_delay: Duration::from_millis(50),
            max_delay: Duration::from_secs(2),
            give_up_after: Duration::from_secs(30),
        }
    }
}

impl ReconnectOptions {
    /// The default options.
    pub fn new() -> Self {
        Self::default()
    }

    /// The wait after the first failed attempt; each further wait doubles, up to
    /// [`max_delay`](Self::max_delay), and is shortened by a random part of up to half (so that
    /// many clients of one restarted server do not dial in step). Default 50 ms.
    ///
    /// # Panics
    /// If `delay` is zero.
    #[must_use]
    pub fn initial_delay(mut self, delay: Duration) -> Self {
        assert!(!delay.is_zero(), "ReconnectOptions::initial_delay must be more than zero");
        self.initial_delay = delay;
        self
    }

    /// The longest wait between two attempts. Default 2 s.
    #[must_use]
    pub fn max_delay(mut self, delay: Duration) -> Self {
        self.max_delay = delay;
        self
    }

    /// How long a call waits for a new connection before it fails with
    /// [`RpcError::Disconnected`] naming the last attempt's error. Default 30 s.
    #[must_use]
    pub fn give_up_after(mut self, limit: Duration) -> Self {
        self.give_up_after = limit;
        self
    }
}

/// The state a reconnecting client's clones share.
pub(crate) struct Redial {
    current: Mutex<Arc<Inner>>,
    dial: Dialer,
    options: ReconnectOptions,
    /// One reconnect at a time; the calls waiting behind it take its result.
    dialing: tokio::sync::Mutex<()>,
    /// The task that notices a dead connection; stopped with the last clone of the client.
    watcher: std::sync::OnceLock<tokio::task::AbortHandle>,
}

impl Drop for Redial {
    fn drop(&mut self) {
        if let Some(watcher) = self.watcher.get() {
            watcher.abort();
        }
    }
}

impl Redial {
    pub(crate) fn new(first: Arc<Inner>, dial: Dialer, options: ReconnectOptions) -> Self {
        Redial {
            current: Mutex::new(first),
            dial,
            options,
            dialing: tokio::sync::Mutex::new(()),
            watcher: std::sync::OnceLock::new(),
        }
    }

    /// The connection calls use now.
    pub(crate) fn current(&self) -> Arc<Inner> {
        Arc::clone(&self.current.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// `inner` if it is alive, else a new connection (waiting for it as the options say).
    pub(crate) async fn ready(&self, inner: Arc<Inner>) -> Result<Arc<Inner>, RpcError> {
        if inner.lock_inbound().closed.is_none() {
            return Ok(inner);
        }
        let _dialing = self.dialing.lock().await;
        let now = self.current();
        if !Arc::ptr_eq(&now, &inner) && now.lock_inbound().closed.is_none() {
            return Ok(now); // another call reconnected meanwhile
        }
        let started = Instant::now();
        let mut delay = self.options.initial_delay;
        loop {
            let error = match (self.dial)().await {
                Ok(client) => {
                    let fresh = client.inner;
                    // Calls prepared on the dead connection carry ids from its counter; start
                    // the new one far beyond them so an id never names two calls.
                    fresh.next_id.store(now.next_id.load(Ordering::Relaxed) + (1 << 32), Ordering::Relaxed);
                    *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Arc::clone(&fresh);
                    return Ok(fresh);
                }
                Err(e @ (RpcError::InterfaceMismatch { .. } | RpcError::UnknownService { .. })) => return Err(e),
                Err(e @ RpcError::ProtocolVersion { .. }) => return Err(e),
                Err(e) => e,
            };
            let wait = jittered(delay);
            if started.elapsed() + wait > self.options.give_up_after {
                return Err(RpcError::disconnected(format!(
                    "could not reconnect to {} within {:?}: {error}",
                    inner.info.peer, self.options.give_up_after
                )));
            }
            tokio::time::sleep(wait).await;
            delay = (delay * 2).min(self.options.max_delay.max(self.options.initial_delay));
        }
    }
}

/// Dials until it connects (a server that is down, or now serves something else, is tried
/// again after the longest delay): for the balanced client's watchers, which wait for their
/// server for as long as the client lives.
pub(crate) async fn dial_with_backoff(dial: &Dialer, options: &ReconnectOptions) -> Arc<Inner> {
    let mut delay = options.initial_delay;
    loop {
        if let Ok(client) = dial().await {
            return client.inner;
        }
        tokio::time::sleep(jittered(delay)).await;
        delay = (delay * 2).min(options.max_delay.max(options.initial_delay));
    }
}

/// `delay` less a random part of up to half of it.
fn jittered(delay: Duration) -> Duration {
    let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
    let fraction = (random % 1000) as f64 / 2000.0;
    delay.mul_f64(1.0 - fraction)
}

impl Client {
    /// This client, made to reconnect: when its connection has died, a new call waits while
    /// `dial` makes a new one (see [`ReconnectOptions`]). The facade's `ClientOptions::reconnect`
    /// does this for clients that connect by address.
    pub fn reconnecting(self, dial: Dialer, options: ReconnectOptions) -> Client {
        let redial = Arc::new(Redial::new(Arc::clone(&self.inner), dial, options));
        // Holds the redial weakly: the client's last clone ends it (and so the connection).
        let weak = Arc::downgrade(&redial);
        let watcher = tokio::spawn(async move {
            loop {
                let Some(inner) = weak.upgrade().map(|redial| redial.current()) else { return };
                let _ = inner.until_closed().await;
                // The next call dials; wait for its connection.
                loop {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let Some(redial) = weak.upgrade() else { return };
                    if !Arc::ptr_eq(&redial.current(), &inner) {
                        break;
                    }
                }
            }
        });
        let _ = redial.watcher.set(watcher.abort_handle());
        Client { inner: self.inner, via: Some(super::Via::Redial(redial)) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_takes_at_most_half() {
        for _ in 0..100 {
            let d = jittered(Duration::from_millis(100));
            assert!(d <= Duration::from_millis(100) && d >= Duration::from_millis(50), "{d:?}");
        }
    }

    #[test]
    #[should_panic(expected = "ReconnectOptions::initial_delay must be more than zero")]
    fn a_zero_delay_is_refused() {
        let _ = ReconnectOptions::new().initial_delay(Duration::ZERO);
    }
}
