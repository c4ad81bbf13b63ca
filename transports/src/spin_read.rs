//! [`SpinRead`]: the read half of a socket or pipe that, finding nothing to read, polls its
//! descriptor for a while before it lets its task sleep.
//!
//! Waking a thread that sleeps in the kernel on another core costs tens of microseconds on the
//! VMs this project is measured on (a blocking 16-byte ping-pong over a Unix socketpair, client
//! and server pinned to different vCPUs: 72 µs median; the same ping-pong with both sides
//! polling `recv` with `MSG_DONTWAIT`: 4.5 µs). An RPC answer or the next request of a busy
//! caller usually arrives within a few microseconds, so a side that polls for it first rarely
//! sleeps at all, and neither side pays for the other's wake-up. `shm://` waits the same way
//! (without system calls); [`crate::spin::PollFirst`] holds the wait this module and `mq://`
//! share: a first yield to the thread's other tasks, then an adaptive budget of looks spent in
//! short slices, and back to a plain sleep for a peer that keeps it waiting longer (an idle
//! connection costs no CPU). The inner half is polled first, as if there were no polling, so
//! no wake-up is lost.

use std::io;
use std::os::fd::BorrowedFd;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use rpc_core::transport::stream::{StreamReceiver, StreamSender};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::options::Framing;
use crate::spin::PollFirst;

/// A read half that polls its descriptor (non-blocking `read`, one system call per look) for up
/// to its [`PollFirst`] budget before it returns `Pending`. Writes pass straight through.
#[derive(Debug)]
pub(crate) struct SpinRead<R> {
    io: R,
    /// The descriptor `io` reads from (a function, so any half that can lend it works:
    /// tokio's split halves lend theirs through the whole stream).
    fd: fn(&R) -> BorrowedFd<'_>,
    wait: PollFirst,
}

impl<R> SpinRead<R> {
    /// Wraps `io`, polling `fd(&io)` for at most `max` (adaptive) before each sleep; a `max`
    /// of zero never polls.
    pub(crate) fn new(io: R, fd: fn(&R) -> BorrowedFd<'_>, max: Duration) -> Self {
        SpinRead { io, fd, wait: PollFirst::new(max) }
    }
}

/// One non-blocking read of `fd` into `buf`: true if it read bytes.
///
/// Only bytes count: a read of nothing (the end) and an error are left for the inner reader
/// to report once the reactor says so, since what they mean depends on the descriptor (the read
/// end of a FIFO whose writer has not opened it yet reads as the end, but is not).
fn read_now(fd: BorrowedFd<'_>, buf: &mut ReadBuf<'_>) -> bool {
    // SAFETY: `unfilled_mut` asks that no uninitialised byte be written into what it lends:
    // only the kernel writes into it, and only bytes it read.
    let unfilled = unsafe { buf.unfilled_mut() };
    match rustix::io::read(fd, unfilled) {
        Ok((filled, _)) if !filled.is_empty() => {
            let n = filled.len();
            // SAFETY: the kernel wrote `n` bytes at the start of the unfilled part (`filled`
            // is exactly those bytes), so they are initialised.
            unsafe { buf.assume_init(n) };
            buf.advance(n);
            true
        }
        _ => false,
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for SpinRead<R> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Poll::Ready(read) = Pin::new(&mut this.io).poll_read(cx, buf) {
            this.wait.done();
            return Poll::Ready(read);
        }
        // Nothing there: the reactor holds our waker now.
        let fd = (this.fd)(&this.io);
        std::task::ready!(this.wait.poll_look(cx, || read_now(fd, buf)));
        Poll::Ready(Ok(()))
    }
}

impl<R: AsyncWrite + Unpin> AsyncWrite for SpinRead<R> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// The frame halves of a byte stream whose read half is polled before it sleeps.
pub(crate) fn framed<R, W>(
    read: R,
    fd: fn(&R) -> BorrowedFd<'_>,
    write: W,
    framing: Framing,
) -> (StreamSender<W>, StreamReceiver<SpinRead<R>>)
where
    R: AsyncRead + Send + Unpin + 'static,
    W: AsyncWrite + Send + Unpin + 'static,
{
    rpc_core::transport::stream::framed(SpinRead::new(read, fd, framing.spin), write, framing.max_frame_len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::DEFAULT_SPIN;
    use std::io::Write;
    use std::os::fd::AsFd;
    use tokio::net::UnixStream;

    fn spinning(stream: UnixStream, max: Duration) -> SpinRead<UnixStream> {
        SpinRead::new(stream, |s| s.as_fd(), max)
    }

    /// Polls `reader` once into `space`: `Some(bytes read)` or `None` if pending.
    fn poll_once(reader: &mut SpinRead<UnixStream>, space: &mut [u8]) -> Option<usize> {
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut buf = ReadBuf::new(space);
        match Pin::new(reader).poll_read(&mut cx, &mut buf) {
            Poll::Ready(read) => {
                read.unwrap();
                Some(buf.filled().len())
            }
            Poll::Pending => None,
        }
    }

    /// Bytes that arrive while the task is being polled (the reactor has not run since, so the
    /// socket still looks unready to tokio) are found by the spin in that same poll; without a
    /// spin the same poll is `Pending` and the bytes wait for the reactor.
    #[tokio::test]
    async fn the_spin_reads_bytes_the_reactor_has_not_reported_yet() {
        for (max, found_at_once) in [(Duration::from_millis(20), true), (Duration::ZERO, false)] {
            let (ours, theirs) = UnixStream::pair().unwrap();
            let mut theirs = theirs.into_std().unwrap();
            theirs.set_nonblocking(false).unwrap();
            let mut reader = spinning(ours, max);
            let mut space = [0u8; 64];
            assert_eq!(poll_once(&mut reader, &mut space), None, "nothing sent yet: the first look yields");
            theirs.write_all(b"answer").unwrap();
            let read = poll_once(&mut reader, &mut space);
            if found_at_once {
                assert_eq!(read, Some(6));
                assert_eq!(&space[..6], b"answer");
            } else {
                assert_eq!(read, None, "a zero spin never reads past the reactor");
                // The reactor reports the bytes once the task yields to it.
                let mut buf = vec![0u8; 64];
                let n = tokio::io::AsyncReadExt::read(&mut reader, &mut buf).await.unwrap();
                assert_eq!(&buf[..n], b"answer");
            }
        }
    }

    /// With polling off, a wait sleeps at once: no yield through the runtime (which would wake
    /// the task again), as a plain tokio read.
    #[tokio::test]
    async fn a_zero_spin_neither_polls_nor_yields() {
        for (max, wakes) in [(Duration::ZERO, 0), (Duration::from_millis(20), 1)] {
            let (ours, _theirs) = UnixStream::pair().unwrap();
            let mut reader = spinning(ours, max);
            let (count, waker) = rpc_core::wake_count::WakeCount::new();
            let mut space = [0u8; 8];
            let mut buf = ReadBuf::new(&mut space);
            let polled = Pin::new(&mut reader).poll_read(&mut Context::from_waker(&waker), &mut buf);
            assert!(polled.is_pending());
            // Let the runtime run its driver and deferred wakes.
            tokio::task::yield_now().await;
            tokio::task::yield_now().await;
            assert_eq!(count.get(), wakes, "wakes after one Pending poll with a spin of {max:?}");
        }
    }

    /// The spin delivers bytes only: the end that follows them (the peer closed) comes from
    /// the inner reader once the reactor reports it.
    #[tokio::test]
    async fn the_end_after_the_last_bytes_comes_from_the_reactor() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let mut theirs = theirs.into_std().unwrap();
        theirs.set_nonblocking(false).unwrap();
        let mut reader = spinning(ours, Duration::from_micros(200));
        let mut space = [0u8; 64];
        assert_eq!(poll_once(&mut reader, &mut space), None);
        theirs.write_all(b"last").unwrap();
        drop(theirs);
        assert_eq!(poll_once(&mut reader, &mut space), Some(4), "the bytes, from the spin");
        assert_eq!(&space[..4], b"last");
        assert_eq!(poll_once(&mut reader, &mut space), None, "the end is not the spin's to report");
        let read = tokio::io::AsyncReadExt::read(&mut reader, &mut space);
        assert_eq!(tokio::time::timeout(Duration::from_secs(10), read).await.unwrap().unwrap(), 0);
    }

    /// The read end of a FIFO that no writer has opened yet reads as the end (0 bytes), but
    /// is not one: the spin must not report it (`fifo://`'s client waits on such a FIFO for
    /// the server's acknowledgement).
    #[tokio::test]
    async fn a_fifo_without_its_writer_is_not_at_its_end() {
        let dir = std::env::temp_dir().join(format!("rpc-spin-read-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f");
        let _ = std::fs::remove_file(&path);
        rustix::fs::mkfifoat(rustix::fs::CWD, &path, rustix::fs::Mode::RUSR | rustix::fs::Mode::WUSR).unwrap();
        let receiver = tokio::net::unix::pipe::OpenOptions::new().open_receiver(&path).unwrap();
        let mut reader = SpinRead::new(receiver, |r| r.as_fd(), Duration::from_micros(200));
        let mut space = [0u8; 8];
        let started = std::time::Instant::now();
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        while started.elapsed() < Duration::from_millis(2) {
            let mut buf = ReadBuf::new(&mut space);
            assert!(Pin::new(&mut reader).poll_read(&mut cx, &mut buf).is_pending(), "no writer yet: no end");
        }
        let mut writer = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        writer.write_all(b"ack").unwrap();
        let read = tokio::io::AsyncReadExt::read(&mut reader, &mut space);
        let n = tokio::time::timeout(Duration::from_secs(10), read).await.unwrap().unwrap();
        assert_eq!(&space[..n], b"ack");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A wait whose budget is spent sleeps on the reactor, which still wakes it for bytes that
    /// come much later (the spin cleared nothing the reactor needs).
    #[tokio::test]
    async fn bytes_after_a_spent_budget_wake_the_sleeping_reader() {
        let max = Duration::from_micros(200);
        let (ours, theirs) = UnixStream::pair().unwrap();
        let mut theirs = theirs.into_std().unwrap();
        theirs.set_nonblocking(false).unwrap();
        let mut reader = spinning(ours, max);
        let mut space = [0u8; 8];
        let started = std::time::Instant::now();
        while started.elapsed() < 4 * max {
            assert_eq!(poll_once(&mut reader, &mut space), None, "nothing was sent");
        }
        let late = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            theirs.write_all(b"late").unwrap();
            theirs
        });
        let read = tokio::io::AsyncReadExt::read(&mut reader, &mut space);
        let n = tokio::time::timeout(Duration::from_secs(10), read).await.expect("woken for the late bytes").unwrap();
        assert_eq!(&space[..n], b"late");
        drop(late.join().unwrap());
    }

    /// A client and a server in one thread over one socket pair: each side's wait yields to
    /// the other before it polls, so a ping-pong goes on (it would still finish without that,
    /// each wait spinning its whole budget first).
    #[tokio::test]
    async fn a_ping_pong_within_one_thread_goes_on() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (a, b) = UnixStream::pair().unwrap();
        let (mut a, mut b) = (spinning(a, DEFAULT_SPIN), spinning(b, DEFAULT_SPIN));
        let echo = tokio::spawn(async move {
            let mut byte = [0u8; 1];
            while b.read_exact(&mut byte).await.is_ok() {
                b.write_all(&byte).await.unwrap();
            }
        });
        for i in 0..2000u32 {
            a.write_all(&[i as u8]).await.unwrap();
            let mut back = [0u8; 1];
            a.read_exact(&mut back).await.unwrap();
            assert_eq!(back[0], i as u8);
        }
        drop(a);
        echo.await.unwrap();
    }
}
