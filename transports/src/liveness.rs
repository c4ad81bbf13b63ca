//! Peer liveness: noticing that the process at the other end of a connection exited, through a
//! pidfd (Linux), for the mechanisms whose channels cannot report it themselves (`mq://` queues)
//! or can be kept open by a hostile peer (`shm://` bells).

use std::io;
use std::os::fd::OwnedFd;
use std::task::Context;

use rustix::process::{pidfd_open, Pid, PidfdFlags};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// Resolves once the peer process exited; never for a peer in our own process (its drop closes
/// the channels) or where there is no watch.
#[derive(Debug)]
pub(crate) struct PeerExit(Option<AsyncFd<OwnedFd>>);

impl PeerExit {
    /// No watch: [`PeerExit::poll_exited`] is always false.
    pub(crate) fn none() -> PeerExit {
        PeerExit(None)
    }

    /// Watches process `pid` (nothing if it is us). Fails with `NotFound` if it is gone already,
    /// with `Unsupported` where the kernel has no pidfds.
    pub(crate) fn watch(pid: u32) -> io::Result<PeerExit> {
        if pid == std::process::id() {
            return Ok(PeerExit(None));
        }
        let gone = || io::Error::new(io::ErrorKind::NotFound, format!("process {pid} does not exist"));
        let pid = i32::try_from(pid).ok().and_then(Pid::from_raw).ok_or_else(gone)?;
        let fd = pidfd_open(pid, PidfdFlags::NONBLOCK).map_err(|e| match e {
            rustix::io::Errno::SRCH => gone(),
            rustix::io::Errno::NOSYS => io::Error::new(io::ErrorKind::Unsupported, "this kernel has no pidfds"),
            e => io::Error::from(e),
        })?;
        Ok(PeerExit(Some(crate::watch::watch(fd, Interest::READABLE)?)))
    }

    /// A second watch on the same process, so that each half of a connection has its own (each
    /// registers its waker on a descriptor of its own): `(the new one, self)`.
    pub(crate) fn pair(self) -> io::Result<(PeerExit, PeerExit)> {
        let other = match &self.0 {
            None => PeerExit(None),
            Some(fd) => PeerExit(Some(crate::watch::watch(fd.get_ref().try_clone()?, Interest::READABLE)?)),
        };
        Ok((other, self))
    }

    /// True once the peer exited; otherwise registers `cx` to be woken when it does.
    pub(crate) fn poll_exited(&self, cx: &mut Context<'_>) -> bool {
        // An error from the reactor means the watch is broken: treat the peer as gone rather
        // than wait forever.
        self.0.as_ref().is_some_and(|fd| fd.poll_read_ready(cx).is_ready())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Polls `f` once, in a task.
    async fn poll_once(f: impl Fn(&mut Context<'_>) -> bool) -> bool {
        std::future::poll_fn(|cx| std::task::Poll::Ready(f(cx))).await
    }

    #[tokio::test]
    async fn a_child_that_exits_is_noticed() {
        let mut child = std::process::Command::new("sleep").arg("0.05").spawn().unwrap();
        let exit = PeerExit::watch(child.id()).unwrap();
        let (other, exit) = exit.pair().unwrap();
        std::future::poll_fn(
            |cx| if exit.poll_exited(cx) { std::task::Poll::Ready(()) } else { std::task::Poll::Pending },
        )
        .await;
        assert!(poll_once(|cx| other.poll_exited(cx)).await);
        child.wait().unwrap();
        assert_eq!(PeerExit::watch(child.id()).map(|_| ()).unwrap_err().kind(), io::ErrorKind::NotFound);
        let us = PeerExit::watch(std::process::id()).unwrap();
        assert!(!poll_once(|cx| us.poll_exited(cx)).await);
    }
}
