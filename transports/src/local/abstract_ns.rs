//! `local://name` on Linux: a Unix domain socket in the abstract namespace.
//!
//! An abstract name is bound like a path but lives only as long as the listening socket, so
//! nothing is left on disk after a crash and there is no stale file to reclaim; `bind` fails with
//! `EADDRINUSE` while another socket holds the name, so a live listener is never displaced.
//!
//! The namespace has no permissions: any process in the same network namespace can connect. The
//! listener therefore checks each client's credentials (`SO_PEERCRED`) against
//! [`TransportOptions::mode`] and closes connections the mode would not have let through a
//! socket file.

use std::ffi::OsStr;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;

use rpc_core::transport::{BoxFuture, Connection, Listener};
use socket2::{Domain, SockAddr, Socket, Type};
use tokio::net::{UnixListener, UnixStream};

use crate::credentials;
use crate::options::{Framing, TransportOptions};
use crate::unix::{connection, into_tokio_listener, retry_while_busy, BACKLOG};

/// The abstract address for `name`: a leading NUL byte, then the name, not NUL-terminated
/// (the same address `interprocess`'s `GenericNamespaced` builds).
pub(crate) fn abstract_addr(name: &str) -> io::Result<SockAddr> {
    let mut bytes = Vec::with_capacity(name.len() + 1);
    bytes.push(0);
    bytes.extend_from_slice(name.as_bytes());
    SockAddr::unix(OsStr::from_bytes(&bytes))
}

pub(crate) async fn connect(name: &str, options: &TransportOptions) -> io::Result<Connection> {
    let stream = connect_stream(name).await?;
    Ok(connection(stream, "local", format!("local://{name}"), options.framing()))
}

/// A Unix stream connected to the abstract name `name` (also the setup socket of `shm://`).
pub(crate) async fn connect_stream(name: &str) -> io::Result<UnixStream> {
    let addr = abstract_addr(name)?;
    retry_while_busy(|| connect_once(&addr)).await
}

/// One non-blocking connect (std's `connect_addr` would block the runtime's thread while the
/// server's backlog is full).
pub(crate) async fn connect_once(addr: &SockAddr) -> io::Result<UnixStream> {
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    socket.set_nonblocking(true)?;
    let in_progress = match socket.connect(addr) {
        Ok(()) => false,
        // Linux completes or refuses Unix stream connects at once; be ready for the general case.
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => true,
        Err(e) => return Err(e),
    };
    let stream = UnixStream::from_std(std::os::unix::net::UnixStream::from(OwnedFd::from(socket)))?;
    if in_progress {
        stream.writable().await?;
        if let Some(e) = stream.take_error()? {
            return Err(e);
        }
    }
    Ok(stream)
}

pub(crate) fn listen(name: &str, options: &TransportOptions) -> io::Result<AbstractListener> {
    Ok(AbstractListener {
        socket: AbstractSocket::bind(name, options)?,
        name: name.to_owned(),
        framing: options.framing(),
    })
}

/// A listening socket on an abstract name that hands out only the clients [`TransportOptions::mode`]
/// admits (also the setup socket of `shm://`). The name is released when it is dropped.
#[derive(Debug)]
pub(crate) struct AbstractSocket {
    listener: UnixListener,
    admission: Admission,
}

impl AbstractSocket {
    /// Binds `name`; fails with `AddrInUse` while another socket holds it.
    pub(crate) fn bind(name: &str, options: &TransportOptions) -> io::Result<Self> {
        let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
        socket.bind(&abstract_addr(name)?).map_err(|e| {
            if e.kind() == io::ErrorKind::AddrInUse {
                io::Error::new(e.kind(), "another listener already uses this name")
            } else {
                e
            }
        })?;
        socket.listen(BACKLOG)?;
        Ok(AbstractSocket {
            listener: into_tokio_listener(socket)?,
            admission: Admission::for_mode(options.permission_bits()),
        })
    }

    /// The next client the mode admits. Cancel-safe: the only await is
    /// `UnixListener::accept`, which is; a refused client is closed before the next await.
    pub(crate) async fn accept(&self) -> io::Result<UnixStream> {
        loop {
            let (stream, _) = self.listener.accept().await?;
            // A client whose credentials cannot be read is gone already or not to be trusted;
            // either way it is dropped without ending the server's accept loop.
            if credentials::of_unix_stream(&stream).is_some_and(|cred| self.admission.admits(cred.uid, cred.gid)) {
                return Ok(stream);
            }
        }
    }
}

/// A listener on an abstract name; the name is released when it is dropped.
#[derive(Debug)]
pub(crate) struct AbstractListener {
    socket: AbstractSocket,
    name: String,
    framing: Framing,
}

impl Listener for AbstractListener {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<Connection>> {
        Box::pin(async move {
            let stream = self.socket.accept().await?;
            Ok(connection(stream, "local", self.local_addr(), self.framing))
        })
    }

    fn local_addr(&self) -> String {
        format!("local://{}", self.name)
    }
}

/// Who may connect, derived from the permission bits a socket file would have had.
#[derive(Debug, Clone, Copy)]
struct Admission {
    uid: libc::uid_t,
    gid: libc::gid_t,
    /// Group write bit (`0o020`): a file socket would admit the owning group.
    group: bool,
    /// Others write bit (`0o002`): a file socket would admit everyone.
    others: bool,
}

impl Admission {
    fn for_mode(mode: u32) -> Self {
        // SAFETY: geteuid and getegid take no arguments, touch no memory of ours and cannot
        // fail (POSIX: "shall always be successful").
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        Admission { uid, gid, group: mode & 0o020 != 0, others: mode & 0o002 != 0 }
    }

    /// Like the permission check on a socket file: the owner and root always pass (root ignores
    /// file permissions), then the group and others by their write bits. Supplementary groups
    /// are not known from `SO_PEERCRED` and are not considered.
    fn admits(&self, uid: libc::uid_t, gid: libc::gid_t) -> bool {
        self.others || uid == self.uid || uid == 0 || (self.group && gid == self.gid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_follows_the_write_bits_of_the_mode() {
        let owner_only = Admission { uid: 1000, gid: 100, group: false, others: false };
        assert!(owner_only.admits(1000, 5));
        assert!(owner_only.admits(0, 0), "root passes, as with a socket file");
        assert!(!owner_only.admits(1001, 100), "same group, but 0o600 has no group bits");
        assert!(!owner_only.admits(1001, 5));

        let group = Admission { group: true, ..owner_only };
        assert!(group.admits(1001, 100));
        assert!(!group.admits(1001, 5));

        let everyone = Admission { others: true, ..owner_only };
        assert!(everyone.admits(1001, 5));
    }

    #[test]
    fn mode_bits_map_to_admission() {
        let a = Admission::for_mode(0o600);
        assert!(!a.group && !a.others);
        let a = Admission::for_mode(0o660);
        assert!(a.group && !a.others);
        let a = Admission::for_mode(0o666);
        assert!(a.group && a.others);
        // Read bits alone do not let anyone connect to a socket file.
        let a = Admission::for_mode(0o644);
        assert!(!a.group && !a.others);
    }
}
