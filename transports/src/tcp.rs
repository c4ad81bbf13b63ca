//! `tcp://host:port`: TCP with `TCP_NODELAY` (the engines flush whole frames themselves, so
//! Nagle's algorithm would only add latency), framed by the shared length prefix. With
//! [`TransportOptions::keepalive`] set, both sides' sockets probe an idle link and give up on
//! unacknowledged data after that long, so a dead peer or link is noticed in time.

use std::io;
use std::net::SocketAddr;

use rpc_core::transport::{BoxFuture, Connection, ConnectionInfo, Listener};
use tokio::net::{TcpListener, TcpStream};

use crate::options::{Framing, TransportOptions};

/// Connects to `host:port` (a name is resolved and each of its addresses tried in turn).
pub(crate) async fn connect(host_port: &str, options: &TransportOptions) -> io::Result<Connection> {
    let stream = connect_stream(host_port, options).await?;
    let peer = stream.peer_addr()?;
    Ok(connection(stream, peer, options.framing()))
}

/// A connected TCP stream, tuned by [`tune`] (also for `tls://`).
pub(crate) async fn connect_stream(host_port: &str, options: &TransportOptions) -> io::Result<TcpStream> {
    let stream = TcpStream::connect(host_port).await?;
    tune(&stream, options)?;
    Ok(stream)
}

/// `TCP_NODELAY`, and the keepalive of [`TransportOptions::keepalive`] where set: probes start
/// after half the time of silence and are sent every sixth, three unanswered ones end the
/// connection; on Linux `TCP_USER_TIMEOUT` ends it when sent data stays unacknowledged that
/// long (keepalive probes are not sent while data is outstanding).
pub(crate) fn tune(stream: &TcpStream, options: &TransportOptions) -> io::Result<()> {
    stream.set_nodelay(true)?;
    if let Some(within) = options.keepalive {
        let socket = socket2::SockRef::from(stream);
        let keepalive = socket2::TcpKeepalive::new().with_time(within / 2);
        #[cfg(any(unix, windows))]
        let keepalive = keepalive.with_interval((within / 6).max(std::time::Duration::from_secs(1)));
        #[cfg(unix)]
        let keepalive = keepalive.with_retries(3);
        socket.set_tcp_keepalive(&keepalive)?;
        #[cfg(any(target_os = "linux", target_os = "android"))]
        socket.set_tcp_user_timeout(Some(within))?;
    }
    Ok(())
}

/// Binds `host:port`; port 0 lets the OS pick one, which [`Listener::local_addr`] reports.
pub(crate) async fn listen(host_port: &str, options: &TransportOptions) -> io::Result<TcpFrameListener> {
    let listener = TcpListener::bind(host_port).await?;
    let local = listener.local_addr()?;
    Ok(TcpFrameListener { listener, local, options: options.clone() })
}

fn connection(stream: TcpStream, peer: SocketAddr, framing: Framing) -> Connection {
    let max_frame_len = framing.max_frame_len;
    let (read, write) = stream.into_split();
    #[cfg(unix)]
    let (sender, receiver) = crate::spin_read::framed(read, |r| std::os::fd::AsFd::as_fd(r.as_ref()), write, framing);
    #[cfg(not(unix))]
    let (sender, receiver) = rpc_core::transport::stream::framed(read, write, max_frame_len);
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
    options: TransportOptions,
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
                if tune(&stream, &self.options).is_ok() {
                    return Ok(connection(stream, peer, self.options.framing()));
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
pub(crate) fn concerns_only_the_pending_connection(err: &io::Error) -> bool {
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
pub(crate) fn concerns_only_the_pending_connection(_err: &io::Error) -> bool {
    false
}
