//! The service of the network tests (`tests/tls.rs`, `tests/netns.rs`) and their helper binary
//! `rpc-net-peer`: what a handler sees of its caller over the network, and a call that stays in
//! flight.

/// What the network tests ask a server.
#[rpc::service]
pub trait Peer {
    /// The verified identity of the caller's certificate, as `(subject, names)`.
    async fn who(&self) -> Option<(String, Vec<String>)>;
    /// Answers after `ms` milliseconds.
    async fn sleep(&self, ms: u64) -> u64;
    /// The server's process id (which of several servers answered).
    async fn pid(&self) -> u32;
}

/// The server side.
pub struct PeerImpl;

impl Peer for PeerImpl {
    async fn who(&self) -> Option<(String, Vec<String>)> {
        let ctx = rpc::CallContext::current()?;
        let identity = ctx.peer_identity()?;
        Some((identity.subject.clone(), identity.names.clone()))
    }

    async fn sleep(&self, ms: u64) -> u64 {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        ms
    }

    async fn pid(&self) -> u32 {
        std::process::id()
    }
}
