//! `local://name` through `interprocess`'s local sockets: the implementation on Windows, where
//! the name is the named pipe `\\.\pipe\<name>`.
//!
//! It is written against `interprocess`'s portable API, so test builds compile it on every
//! platform and the tests below run it on Linux too (where it binds the same abstract names as
//! [`super::abstract_ns`], which makes them interoperate).
//!
//! interprocess 2.4.7 deprecates split halves in favour of sharing the stream, since `&Stream`
//! implements `AsyncRead` and `AsyncWrite`: each half here holds an `Arc<Stream>`. Consequences
//! of that API: `poll_shutdown` is a no-op, so the peer sees EOF only when both halves are
//! dropped; and a named pipe has no half-close anyway.
//!
//! A second listener on a live name fails: the first pipe instance is created with
//! `FILE_FLAG_FIRST_PIPE_INSTANCE` (and on Linux the abstract bind fails). `try_overwrite`,
//! which would displace a live listener, is never enabled. The pipe's default security
//! descriptor gives other users read access only, so they cannot connect; the
//! [`TransportOptions::mode`] bits are not mapped onto Windows ACLs.

#![cfg_attr(not(windows), allow(dead_code))]

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use interprocess::local_socket::tokio::prelude::*;
use interprocess::local_socket::tokio::{Listener as IpcListener, Stream};
use interprocess::local_socket::{GenericNamespaced, ListenerOptions};
use rpc_core::transport::stream::framed;
use rpc_core::transport::{BoxFuture, Connection, ConnectionInfo, Listener};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::options::TransportOptions;

pub(crate) async fn connect(name: &str, options: &TransportOptions) -> io::Result<Connection> {
    let stream = Stream::connect(name.to_ns_name::<GenericNamespaced>()?).await?;
    Ok(connection(stream, name, options.effective_max_frame_len()))
}

pub(crate) fn listen(name: &str, options: &TransportOptions) -> io::Result<LocalIpcListener> {
    let listener =
        ListenerOptions::new().name(name.to_ns_name::<GenericNamespaced>()?).create_tokio().map_err(|e| {
            // Windows reports a taken pipe name (FILE_FLAG_FIRST_PIPE_INSTANCE) as access denied.
            let taken =
                e.kind() == io::ErrorKind::AddrInUse || (cfg!(windows) && e.kind() == io::ErrorKind::PermissionDenied);
            if taken {
                io::Error::new(io::ErrorKind::AddrInUse, "another listener already uses this name")
            } else {
                e
            }
        })?;
    Ok(LocalIpcListener { listener, name: name.to_owned(), max_frame_len: options.effective_max_frame_len() })
}

fn connection(stream: Stream, name: &str, max_frame_len: usize) -> Connection {
    let stream = Arc::new(stream);
    let (sender, receiver) = framed(SharedStream(Arc::clone(&stream)), SharedStream(stream), max_frame_len);
    Connection {
        sender: Box::new(sender),
        receiver: Box::new(receiver),
        info: ConnectionInfo::new("local", format!("local://{name}"), max_frame_len),
    }
}

/// One half of a connection: the stream, shared with the other half.
struct SharedStream(Arc<Stream>);

impl AsyncRead for SharedStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut &*self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for SharedStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut &*self.0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut &*self.0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut &*self.0).poll_shutdown(cx)
    }
}

/// A listener on an `interprocess` local socket name.
#[derive(Debug)]
pub(crate) struct LocalIpcListener {
    listener: IpcListener,
    name: String,
    max_frame_len: usize,
}

impl Listener for LocalIpcListener {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<Connection>> {
        // Cancel-safe: on Unix this is tokio's `UnixListener::accept`; on Windows it awaits a
        // lock and tokio's `NamedPipeServer::connect`, both cancel-safe, and hands over the
        // connected instance without awaiting again.
        Box::pin(async move {
            let stream = self.listener.accept().await?;
            Ok(connection(stream, &self.name, self.max_frame_len))
        })
    }

    fn local_addr(&self) -> String {
        format!("local://{}", self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use rpc_core::transport::{recv, send};

    fn unique(test: &str) -> String {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        format!("rpc-ipc-{test}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
    }

    #[tokio::test]
    async fn frames_cross_both_ways() {
        let options = TransportOptions::default();
        let name = unique("frames");
        let mut listener = listen(&name, &options).unwrap();
        assert_eq!(listener.local_addr(), format!("local://{name}"));
        let (client, server) = tokio::join!(connect(&name, &options), listener.accept());
        let (mut client, mut server) = (client.unwrap(), server.unwrap());
        let big = Bytes::from(vec![3u8; 1 << 20]);
        let writer = tokio::spawn(async move {
            send(&mut *client.sender, Bytes::from_static(b"ping")).await.unwrap();
            send(&mut *client.sender, big).await.unwrap();
            send(&mut *client.sender, Bytes::new()).await.unwrap();
            let reply = recv(&mut *client.receiver).await.unwrap();
            assert_eq!(reply.as_deref(), Some(&b"pong"[..]));
            // Dropping both halves closes the stream: the server reads the end.
        });
        assert_eq!(recv(&mut *server.receiver).await.unwrap().as_deref(), Some(&b"ping"[..]));
        assert_eq!(recv(&mut *server.receiver).await.unwrap().map(|f| f.len()), Some(1 << 20));
        assert_eq!(recv(&mut *server.receiver).await.unwrap().as_deref(), Some(&b""[..]));
        send(&mut *server.sender, Bytes::from_static(b"pong")).await.unwrap();
        writer.await.unwrap();
        assert!(recv(&mut *server.receiver).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_live_name_is_not_taken_over() {
        let options = TransportOptions::default();
        let name = unique("taken");
        let first = listen(&name, &options).unwrap();
        let err = listen(&name, &options).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        drop(first);
        listen(&name, &options).expect("free again after the first listener is dropped");
    }

    /// On Linux this path and `abstract_ns` bind the same names.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[tokio::test]
    async fn interoperates_with_the_abstract_namespace_implementation() {
        let options = TransportOptions::default();
        let name = unique("interop");
        let mut listener = super::super::abstract_ns::listen(&name, &options).unwrap();
        let (client, server) = tokio::join!(connect(&name, &options), listener.accept());
        let (mut client, mut server) = (client.unwrap(), server.unwrap());
        send(&mut *client.sender, Bytes::from_static(b"hi")).await.unwrap();
        assert_eq!(recv(&mut *server.receiver).await.unwrap().as_deref(), Some(&b"hi"[..]));
    }
}
