//! What the engine test files share: a connected pair of framed in-memory connections.

use rpc_core::transport::{stream, Connection, ConnectionInfo};

/// Both ends of a `tokio::io::duplex` of `buffer` bytes, framed with `max` as the frame limit:
/// (the server's end, the client's end).
pub fn pair_buffered(max: usize, buffer: usize) -> (Connection, Connection) {
    let (a, b) = tokio::io::duplex(buffer);
    let conn = |s: tokio::io::DuplexStream, peer: &str| {
        let (r, w) = tokio::io::split(s);
        let (sender, receiver) = stream::framed(r, w, max);
        Connection {
            sender: Box::new(sender),
            receiver: Box::new(receiver),
            info: ConnectionInfo::new("duplex", peer, max),
        }
    };
    (conn(a, "server"), conn(b, "client"))
}
