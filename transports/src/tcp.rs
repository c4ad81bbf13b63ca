//! `tcp://host:port`: TCP with `TCP_NODELAY` (the engines flush whole frames themselves, so
//! Nagle's algorithm would only add latency), framed by the shared length prefix.

use std::io;
use std::net::SocketAddr;

use rpc_core::transport::stream::framed;
use rpc_core::transport::{BoxFuture, Connection, ConnectionInfo, Listener};
use tokio::net::{TcpListener, TcpStream};

use crate::options::TransportOptions;

/// Connects to `host:port` (a name is resolved and each of its addresses tried in turn).
pub(crate) async fn connect(host_port: &str, options: &TransportOptions) -> io::Result<Connection> {
    let stream = TcpStream::connect(host_port).await?;
    stream.set_nodelay(true)?;
    let peer = stream.peer_addr()?;
    Ok(connection(stream, peer, options.effective_max_frame_len()))
}

/// Binds `host:port`; port 0 lets the OS pick one, which [`Listener::local_addr`] reports.
pub(crate) async fn listen(host_port: &str, options: &TransportOptions) -> io::Result<TcpFrameListener> {
    let listener = TcpListener::bind(host_port).await?;
    let local = listener.local_addr()?;
    Ok(TcpFrameListener { listener, local, max_frame_len: options.effective_max_frame_len() })
}

fn connection(stream: TcpStream, peer: SocketAddr, max_frame_len: usize) -> Connection {
    let (read, write) = stream.into_split();
    let (sender, receiver) = framed(read, write, max_frame_len);
    Connection {
        sender: Box::new(sender),
        receiver: Box::new(receiver),
        // `SocketAddr`'s Display brackets IPv6 addresses, so this is a valid tcp:// address.
        info: ConnectionInfo::new("tcp", format!("tcp://{peer}"), max_frame_len),
    }
}

/// A TCP listener yielding framed connections.
#[derive(Debug)]
pub(crate) struct TcpFrameListener {
    listener: TcpListener,
    local: SocketAddr,
    max_frame_len: usize,
}

impl Listener for TcpFrameListener {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<Connection>> {
        // Cancel-safe: `TcpListener::accept` is, and nothing after it awaits.
        Box::pin(async move {
            loop {
                let (stream, peer) = match self.listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) if concerns_only_the_pending_connection(&e) => continue,
                    Err(e) => return Err(e),
                };
                // Fails only if the client is already gone; that must not end the server's
                // accept loop, so skip this connection instead of returning the error.
                if stream.set_nodelay(true).is_ok() {
                    return Ok(connection(stream, peer, self.max_frame_len));
                }
            }
        })
    }

    fn local_addr(&self) -> String {
        format!("tcp://{}", self.local)
    }
}

/// Linux's accept(2) passes on network errors of the connection being accepted and says to
/// treat them like `EAGAIN`: they concern that one client, not the listener, so they must not
/// end the server's accept loop.
#[cfg(target_os = "linux")]
fn concerns_only_the_pending_connection(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(
            libc::ENETDOWN
                | libc::EPROTO
                | libc::ENOPROTOOPT
                | libc::EHOSTDOWN
                | libc::ENONET
                | libc::EHOSTUNREACH
                | libc::EOPNOTSUPP
                | libc::ENETUNREACH
        )
    )
}

#[cfg(not(target_os = "linux"))]
fn concerns_only_the_pending_connection(_err: &io::Error) -> bool {
    false
}
