//! `unix:///abs/path.sock`: Unix domain sockets at a file path, framed by the shared length
//! prefix; plus the helpers `local://` shares on Unix (the connection builder, the connect
//! retry).
//!
//! Creating the socket file safely is most of this module:
//!
//! * **Owner-only from the first moment.** The socket is bound to a unique temporary name in
//!   the target's directory, chmod-ed to the requested mode, set listening, and only then
//!   hard-linked to the final path. Clients can only find the socket through the final path, so
//!   no client ever sees it with the looser permissions `bind` gives (those depend on the umask).
//!   Setting the umask instead would race with other threads creating files.
//! * **A live server is never displaced.** `link(2)` fails if the final path exists, unlike
//!   `rename(2)`, so the socket file of a running server is never replaced. Listening before
//!   linking means the file is connectable the moment it appears, so another starting server
//!   never mistakes it for a stale one.
//! * **A stale file is reclaimed.** If the path exists, we probe it with a connect: a server
//!   that answers keeps its file (`AddrInUse`); a socket nobody listens on (`ECONNREFUSED`) is
//!   what a crashed server leaves behind, and is unlinked if it is still the very file we probed
//!   (same device and inode); anything that is not a socket is never touched.
//! * **Cleanup on drop.** The listener removes its file when dropped, but only if the file at
//!   the path is still the one it created (a later server may have reclaimed the path).
//!
//! One race remains, between two servers reclaiming the same stale path at the same instant:
//! each checks the inode just before unlinking, so the window is a few microseconds wide.

use std::fs;
use std::future::Future;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rpc_core::transport::{BoxFuture, Connection, ConnectionInfo, Listener};
use socket2::{Domain, SockAddr, Socket, Type};
use tokio::net::{UnixListener, UnixStream};

use crate::context::describe;
use crate::credentials;
use crate::endpoint::{self, remove_if_ours, remove_stale, FileId, TempName};
use crate::options::{Framing, TransportOptions};

/// Pending connections the kernel queues for us (Linux caps it at `net.core.somaxconn`).
pub(crate) const BACKLOG: i32 = 1024;
/// How often a connect is retried while the server's backlog is full.
const BUSY_RETRIES: u32 = 10;
/// The kind of the temporary names a listener binds before linking (`.rpc<pid>-<n>.tmp`).
pub(crate) const TEMP_KIND: &str = "rpc";

/// Connects to the socket file at `path`.
pub(crate) async fn connect(path: &Path, options: &TransportOptions) -> io::Result<Connection> {
    connect_as(path, options, "unix", format!("unix://{}", path.display())).await
}

/// Connects to the socket file at `path`, describing the connection as `transport` / `peer`.
pub(crate) async fn connect_as(
    path: &Path,
    options: &TransportOptions,
    transport: &'static str,
    peer: String,
) -> io::Result<Connection> {
    let stream = retry_while_busy(|| UnixStream::connect(path)).await?;
    Ok(connection(stream, transport, peer, options.framing()))
}

/// Creates a socket file at `path` (see the module docs) and listens on it.
pub(crate) async fn listen(path: &Path, options: &TransportOptions) -> io::Result<UnixFileListener> {
    listen_as(path, options, "unix", format!("unix://{}", path.display())).await
}

/// [`listen`], with the transport name and address the listener reports.
pub(crate) async fn listen_as(
    path: &Path,
    options: &TransportOptions,
    transport: &'static str,
    addr: String,
) -> io::Result<UnixFileListener> {
    let (socket, id) = create_socket_file(path, options.permission_bits()).await?;
    let listener = match into_tokio_listener(socket) {
        Ok(listener) => listener,
        Err(e) => {
            remove_if_ours(path, id);
            return Err(e);
        }
    };
    Ok(UnixFileListener { listener, path: path.to_owned(), id, transport, addr, framing: options.framing() })
}

/// A listening socket2 socket as a tokio listener.
pub(crate) fn into_tokio_listener(socket: Socket) -> io::Result<UnixListener> {
    socket.set_nonblocking(true)?;
    UnixListener::from_std(std::os::unix::net::UnixListener::from(OwnedFd::from(socket)))
}

/// A framed connection over a connected Unix stream (also used by `local://`).
pub(crate) fn connection(stream: UnixStream, transport: &'static str, peer: String, framing: Framing) -> Connection {
    let max_frame_len = framing.max_frame_len;
    let peer_credentials = credentials::of_unix_stream(&stream);
    let (read, write) = stream.into_split();
    let (sender, receiver) = crate::spin_read::framed(read, |r| r.as_ref().as_fd(), write, framing);
    Connection {
        sender: Box::new(sender),
        receiver: Box::new(receiver),
        info: ConnectionInfo::new(transport, peer, max_frame_len).with_peer_credentials(peer_credentials),
    }
}

/// Runs a connect attempt again while it fails with `WouldBlock`: a non-blocking connect to a
/// Unix socket fails that way (instead of waiting) when the server's backlog is full, which
/// passes as soon as the server accepts.
pub(crate) async fn retry_while_busy<T, F, Fut>(mut attempt: F) -> io::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = io::Result<T>>,
{
    let mut delay = Duration::from_millis(1);
    for _ in 0..BUSY_RETRIES {
        match attempt().await {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_millis(50));
            }
            done => return done,
        }
    }
    attempt().await.map_err(|e| {
        if e.kind() == io::ErrorKind::WouldBlock {
            io::Error::new(e.kind(), "the server's backlog of pending connections stayed full")
        } else {
            e
        }
    })
}

/// Binds, chmods and listens under a temporary name, then links the socket to `path`,
/// reclaiming a stale file on the way. Returns the listening socket and the file's identity.
async fn create_socket_file(path: &Path, mode: u32) -> io::Result<(Socket, FileId)> {
    let dir = endpoint::directory_of(path)?;
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    let temp = bind_temporary(&socket, dir)?;
    fs::set_permissions(&temp.path, fs::Permissions::from_mode(mode))?;
    let id = FileId::at(&temp.path)?;
    socket.listen(BACKLOG)?;
    endpoint::link_into_place(&temp.path, path, || reclaim_if_stale(path)).await?;
    Ok((socket, id))
}

/// Binds `socket` to a fresh temporary name in `dir`. A name can be taken only by a file a
/// crashed process left behind (the names hold our pid and a counter): then the next is tried.
fn bind_temporary(socket: &Socket, dir: &Path) -> io::Result<TempName> {
    let mut attempts = 0;
    loop {
        let temp = TempName::new(dir, TEMP_KIND);
        let addr = SockAddr::unix(&temp.path).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "the temporary socket path {} is too long for a Unix socket; use a shorter directory",
                    temp.path.display()
                ),
            )
        })?;
        match socket.bind(&addr) {
            Ok(()) => return Ok(temp.created()),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && attempts < 8 => attempts += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(io::Error::new(e.kind(), format!("the directory {} does not exist", dir.display())));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Decides what to do about an existing file at `path`: `Ok` if it was stale and is gone (or
/// vanished by itself), an error if it must be left alone.
async fn reclaim_if_stale(path: &Path) -> io::Result<()> {
    let metadata = match fs::symlink_metadata(path) {
        Ok(metadata) => metadata,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !metadata.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "a file that is not a socket exists at this path (it was left alone)",
        ));
    }
    let in_use = |detail: &str| {
        io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("another server is already listening there{detail} (its socket file was left alone)"),
        )
    };
    match UnixStream::connect(path).await {
        Ok(_probe) => Err(in_use("")),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(in_use(" and its backlog is full")),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            // Nobody listens: a crashed server's file.
            remove_stale(path, FileId::of(&metadata), "socket file")
        }
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("a socket file exists at this path and probing it failed: {} (it was left alone)", describe(&e)),
        )),
    }
}

/// A listener on a socket file, which it removes when dropped.
#[derive(Debug)]
pub(crate) struct UnixFileListener {
    listener: UnixListener,
    path: PathBuf,
    id: FileId,
    transport: &'static str,
    addr: String,
    framing: Framing,
}

impl Listener for UnixFileListener {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<Connection>> {
        // Cancel-safe: `UnixListener::accept` is, and nothing after it awaits.
        Box::pin(async move {
            let (stream, _) = self.listener.accept().await?;
            // The client has no address of its own; the connection is known by ours.
            Ok(connection(stream, self.transport, self.addr.clone(), self.framing))
        })
    }

    fn local_addr(&self) -> String {
        self.addr.clone()
    }
}

impl Drop for UnixFileListener {
    fn drop(&mut self) {
        remove_if_ours(&self.path, self.id);
    }
}
