//! Who is at the other end of a local connection: the [`PeerCredentials`] every Unix mechanism
//! puts in its `ConnectionInfo`, read once when the connection is made.
//!
//! Sockets ask the kernel (`SO_PEERCRED` on Linux, `getpeereid` elsewhere, through tokio); the
//! answer describes the process that *connected* (or listened), as it was at that moment, and
//! cannot be forged by the peer. Mechanisms without such a query (`fifo://`, `tcp://`) report
//! none rather than guess.

use rpc_core::transport::PeerCredentials;
use tokio::net::UnixStream;

/// The credentials of the process at the other end of `stream`; `None` if the kernel cannot say
/// (the peer is gone, or the platform has no such query). Also for the setup socket of
/// transports that use one.
pub(crate) fn of_unix_stream(stream: &UnixStream) -> Option<PeerCredentials> {
    let cred = stream.peer_cred().ok()?;
    let pid = cred.pid().and_then(|pid| u32::try_from(pid).ok()).filter(|&pid| pid != 0);
    Some(PeerCredentials::new(cred.uid(), cred.gid(), pid))
}

/// Credentials of process `pid`, which runs as this process's effective user and group (a
/// child we started, the parent that started us, or this process itself).
pub(crate) fn same_user_as_us(pid: u32) -> PeerCredentials {
    // SAFETY: geteuid and getegid take no arguments, touch no memory of ours and cannot fail
    // (POSIX: "shall always be successful").
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    PeerCredentials::new(uid, gid, Some(pid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_socket_pair_reports_this_process() {
        let (a, _b) = UnixStream::pair().unwrap();
        let creds = of_unix_stream(&a).expect("credentials of a socket pair");
        assert_eq!(creds, same_user_as_us(std::process::id()));
        // SAFETY: as above.
        assert_eq!(creds.uid, unsafe { libc::geteuid() });
    }
}
