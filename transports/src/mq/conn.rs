//! One established `mq://` connection: a queue per direction, frames split into messages, and
//! the liveness watch that message queues lack.
//!
//! # Messages
//!
//! The queues carry a byte stream, framed by the one frame driver
//! ([`rpc_core::transport::stream`]) exactly as sockets are: a [`DATA`] message is the kind byte
//! followed by the next bytes of the stream (at least one, at most a message's worth), a
//! message of just [`CLOSE`] is the end of the stream. The driver packs as many small frames
//! into each write as fit, so frames queued while the peer was busy leave together: a queue
//! holds only a few messages (see the limits in the `mq` module notes), and packing is what
//! keeps it from capping pipelined calls at a few per wake-up. Frames larger than a message
//! simply span several. Only one process writes into each queue, so the stream's bytes arrive
//! in order. The receiver's only parser of what the peer sent is the frame codec every
//! transport uses (fuzzed once, in `rpc-core`); a message of any other shape fails the
//! connection with `InvalidData`.
//!
//! # Waiting
//!
//! A reader with an empty queue and a writer with a full one first look again for a while
//! (`mq_receive` / `mq_send` without waiting, [`crate::spin::PollFirst`], at most
//! `TransportOptions::spin`) before they sleep until the queue's descriptor is reported ready:
//! the peer on another core takes or sends its next message within microseconds, and a wake-up
//! from a sleep costs tens of them. A queue holds only a few messages, so a large frame makes
//! the writer wait for room many times over.
//!
//! # Liveness
//!
//! A queue does not report that the process at the other end died: its messages just stop. Each
//! side therefore watches the peer's process through a pidfd (readable once it exited), polled
//! whenever a half would wait: a receiver with an empty queue, a sender with a full one. A peer
//! in the same process never exits while we run, so a writer also says [`CLOSE`] when it is
//! dropped without being closed, as a socket's EOF would. [`CLOSE`] ends one direction only (the
//! peer may still read what we send, like a stream's half-close).
//!
//! # The slot kept for [`CLOSE`]
//!
//! A full queue refuses every message, [`CLOSE`] included, and a peer that stopped reading (or
//! reads slowly) keeps it full: a [`CLOSE`] that waited for room could come too late or never,
//! and a peer whose process lives would then wait forever after draining our last frames. So a
//! writer never lets data take the last free slot of its queue: that slot is [`CLOSE`]'s, and
//! closing or dropping the writer ends the connection at once, however full the queue is. This
//! works because each queue has one writer (the sender) and one reader: the count of waiting
//! messages the sender reads (`mq_curmsgs`) can only shrink before its next send. A queue
//! therefore holds at least [`MIN_MSGS`] messages, and data uses one fewer than it holds.
//! (The alternative, taking back one of our own unread messages to make room, would drop bytes
//! out of the middle of the stream; keeping the slot loses nothing the peer would read.)

use std::io::{self, IoSlice};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use rpc_core::transport::stream::{framed, StreamReceiver, StreamSender};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};

pub(crate) use crate::liveness::PeerExit;

use crate::options::Framing;
use crate::spin::PollFirst;

use super::sys;

/// The next bytes of the stream: kind, then at least one byte.
pub(crate) const DATA: u8 = 1;
/// No more bytes follow.
pub(crate) const CLOSE: u8 = 3;
/// Sent by the server as the first message on a new connection: it holds both queues.
pub(crate) const ACCEPT: u8 = 4;
/// Sent by a listener that stops with the client's connect request still unanswered.
pub(crate) const REFUSE: u8 = 5;

/// The smallest message size a connection works with (room for the kind and some bytes).
pub(crate) const MIN_MSG_SIZE: usize = 64;
/// The smallest queue depth a connection works with: a message of data, and the slot kept
/// for [`CLOSE`] (see the module notes).
pub(crate) const MIN_MSGS: usize = 2;

/// The frame halves of a connection.
pub(crate) type MqSender = StreamSender<MqWriter>;
/// See [`MqSender`].
pub(crate) type MqReceiver = StreamReceiver<MqReader>;

/// The other side of a connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer {
    /// The peer's process id.
    pid: u32,
}

impl Peer {
    fn died(&self) -> io::Error {
        io::Error::new(
            io::ErrorKind::ConnectionReset,
            format!("the mq:// peer (pid {}) exited without closing the connection", self.pid),
        )
    }
}

/// Both halves of a connection over the queue pair `(incoming, outgoing)` with the peer `pid`.
pub(crate) fn halves(
    incoming: OwnedFd,
    outgoing: OwnedFd,
    (receiver_exit, sender_exit): (PeerExit, PeerExit),
    pid: u32,
    framing: Framing,
) -> io::Result<(MqSender, MqReceiver)> {
    let in_size = checked_geometry(&incoming)?.msg_size;
    let out = checked_geometry(&outgoing)?;
    let peer = Peer { pid };
    let reader = MqReader {
        fd: sys::register(incoming, Interest::READABLE)?,
        buf: vec![0; in_size].into_boxed_slice(),
        at: 0,
        len: 0,
        peer,
        exit: receiver_exit,
        state: State::Open,
        wait: PollFirst::new(framing.spin),
    };
    let writer = MqWriter {
        fd: sys::register(outgoing, Interest::WRITABLE)?,
        msg_size: out.msg_size,
        max_msgs: out.max_msgs,
        room: 0,
        message: Vec::with_capacity(out.msg_size),
        peer,
        exit: sender_exit,
        closed: false,
        wait: PollFirst::new(framing.spin),
    };
    Ok(framed(reader, writer, framing.max_frame_len))
}

/// The shape of a queue the peer may have created: messages of at least [`MIN_MSG_SIZE`], and
/// at most what the kernel lets unprivileged users create (or 1 MiB), so a hostile peer cannot
/// make us allocate a huge receive buffer; room for at least [`MIN_MSGS`] messages.
fn checked_geometry(fd: &OwnedFd) -> io::Result<sys::Geometry> {
    let geometry = sys::geometry(fd.as_fd())?;
    let size = geometry.msg_size;
    let max = sys::limits().msg_size.max(1 << 20);
    if !(MIN_MSG_SIZE..=max).contains(&size) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a queue of this connection has messages of {size} bytes (expected {MIN_MSG_SIZE} to {max})"),
        ));
    }
    if geometry.max_msgs < MIN_MSGS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a queue of this connection holds {} message(s) (expected at least {MIN_MSGS})", geometry.max_msgs),
        ));
    }
    Ok(geometry)
}

/// Waits until `try_send` put its message into the queue (a message goes whole or not at all),
/// or the peer is gone. `try_send` says `WouldBlock` while the message may not go in; then only
/// the peer can make room, by taking a message (which Linux reports as the queue becoming
/// writable, also when it was not full).
///
/// With a [`PollFirst`], a full queue is looked at again (`try_send`, a system call) for a
/// while before the task sleeps: the peer on another core usually takes a message within
/// microseconds, and waking from a sleep costs tens of them.
fn poll_push(
    fd: &AsyncFd<OwnedFd>,
    peer: &Peer,
    exit: &PeerExit,
    mut wait: Option<&mut PollFirst>,
    cx: &mut Context<'_>,
    mut try_send: impl FnMut(BorrowedFd<'_>) -> io::Result<()>,
) -> Poll<io::Result<()>> {
    loop {
        match fd.poll_write_ready(cx) {
            // `try_io` clears the readiness on `WouldBlock` (unless an event came meanwhile).
            Poll::Ready(Ok(mut guard)) => match guard.try_io(|fd| try_send(fd.get_ref().as_fd())) {
                Ok(result) => {
                    if let Some(wait) = wait.as_mut() {
                        wait.done();
                    }
                    return Poll::Ready(result);
                }
                Err(_would_block) => continue,
            },
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => {
                // The queue is full: only the peer can make room, so stop waiting if it is gone.
                if exit.poll_exited(cx) {
                    return Poll::Ready(Err(peer.died()));
                }
                let Some(wait) = wait.as_mut() else { return Poll::Pending };
                // Only a message that went counts; a refusal other than a full queue is
                // reported through the reactor, as without looking.
                let mut sent = false;
                ready!(wait.poll_look(cx, || {
                    sent = try_send(fd.get_ref().as_fd()).is_ok();
                    sent
                }));
                debug_assert!(sent);
                return Poll::Ready(Ok(()));
            }
        }
    }
}

/// Sends `message` if that leaves a slot free for [`CLOSE`], `WouldBlock` if it would not.
/// `room` is how many messages may still go without looking at the queue again.
fn send_keeping_a_slot(fd: BorrowedFd<'_>, room: &mut usize, max_msgs: usize, message: &[u8]) -> io::Result<()> {
    if *room == 0 {
        // We are the queue's only writer: the count can only shrink before we send, so the room
        // seen now is there when we use it.
        *room = max_msgs.saturating_sub(sys::queued(fd)? + 1);
        if *room == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
    }
    let sent = sys::send(fd, message);
    // A refusal while we counted room means someone else writes into our queue (a process of
    // our user): count afresh next time.
    *room = if sent.is_ok() { *room - 1 } else { 0 };
    sent
}

/// The writing end as a byte sink: each write sends one [`DATA`] message of at most the
/// queue's message size, leaving the queue's last slot to [`CLOSE`] (see the module notes).
#[derive(Debug)]
pub(crate) struct MqWriter {
    fd: AsyncFd<OwnedFd>,
    msg_size: usize,
    /// The queue's depth.
    max_msgs: usize,
    /// Messages that may still go before the queue is looked at again (the peer may have taken
    /// some meanwhile, so there can be more room, never less).
    room: usize,
    /// The message being built (reused).
    message: Vec<u8>,
    peer: Peer,
    exit: PeerExit,
    /// [`CLOSE`] was sent.
    closed: bool,
    /// How a write to a full queue waits for room.
    wait: PollFirst,
}

impl MqWriter {
    fn closed_by_us() -> io::Error {
        io::Error::new(io::ErrorKind::NotConnected, "the sending half was already closed")
    }
}

impl AsyncWrite for MqWriter {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.closed {
            return Poll::Ready(Err(Self::closed_by_us()));
        }
        this.message.clear();
        this.message.push(DATA);
        for buf in bufs {
            let n = buf.len().min(this.msg_size - this.message.len());
            this.message.extend_from_slice(&buf[..n]);
            if this.message.len() == this.msg_size {
                break;
            }
        }
        let len = this.message.len() - 1;
        if len == 0 {
            return Poll::Ready(Ok(0));
        }
        let (room, max_msgs, message) = (&mut this.room, this.max_msgs, &this.message);
        let wait = Some(&mut this.wait);
        ready!(poll_push(&this.fd, &this.peer, &this.exit, wait, cx, |fd| send_keeping_a_slot(
            fd, room, max_msgs, message
        )))?;
        Poll::Ready(Ok(len))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    /// Every write sent its message.
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.closed {
            return Poll::Ready(Ok(()));
        }
        // The slot data leaves free takes it at once; this waits only if another writer got
        // into our queue (see `send_keeping_a_slot`).
        ready!(poll_push(&this.fd, &this.peer, &this.exit, None, cx, |fd| sys::send(fd, &[CLOSE])))?;
        this.closed = true;
        Poll::Ready(Ok(()))
    }
}

impl Drop for MqWriter {
    /// Says [`CLOSE`] if the connection was dropped without being closed: a peer in another
    /// process would notice our exit, one in ours would not. Bytes still queued in the frame
    /// driver are dropped, as a socket's unsent bytes would be. The slot data never takes is
    /// free for [`CLOSE`], so this never waits, even when the peer stopped reading. (It fails
    /// only if another process of our user wrote into our queue; a peer in another process
    /// then still sees our exit.)
    fn drop(&mut self) {
        if self.closed {
            return;
        }
        // After a frame cut short the peer sees the end inside a frame, which it reports as an
        // error, as a stream reports EOF inside a frame.
        let _ = sys::send(self.fd.get_ref().as_fd(), &[CLOSE]);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    /// The peer said [`CLOSE`]: the end of the bytes from now on.
    Closed,
    /// An error was returned: the connection is unusable.
    Failed,
}

/// What one incoming message is.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Message<'a> {
    /// The next bytes of the stream (never empty).
    Data(&'a [u8]),
    /// The end of the stream.
    Close,
}

/// Reads one message of an established connection, without I/O: the only check of the
/// message layer (what the bytes say is the frame codec's business).
pub(crate) fn message(bytes: &[u8]) -> io::Result<Message<'_>> {
    match bytes {
        [DATA, data @ ..] if !data.is_empty() => Ok(Message::Data(data)),
        [CLOSE] => Ok(Message::Close),
        [] => Err(invalid("an empty message")),
        [DATA] => Err(invalid("a data message without data")),
        [kind, ..] => Err(invalid(&format!("a message of unknown kind {kind} or length {}", bytes.len()))),
    }
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("invalid mq:// message: {what}"))
}

/// The reading end as a byte source: the bytes of the incoming queue's [`DATA`] messages, in
/// order, and their end at [`CLOSE`].
#[derive(Debug)]
pub(crate) struct MqReader {
    fd: AsyncFd<OwnedFd>,
    /// One message (the queue's message size: `mq_receive` wants at least that much room).
    buf: Box<[u8]>,
    /// The bytes of the message in `buf` not yet taken: `buf[at..len]`.
    at: usize,
    len: usize,
    peer: Peer,
    exit: PeerExit,
    state: State,
    /// How a read of an empty queue waits for a message.
    wait: PollFirst,
}

impl MqReader {
    /// The next message's length, `Pending` while the queue is empty and the peer alive.
    fn poll_message(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        loop {
            match self.fd.poll_read_ready(cx) {
                Poll::Ready(Ok(mut guard)) => match guard.try_io(|fd| sys::receive(fd.as_fd(), &mut self.buf)) {
                    Ok(result) => {
                        self.wait.done();
                        return Poll::Ready(result);
                    }
                    Err(_would_block) => continue,
                },
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    if !self.exit.poll_exited(cx) {
                        // Look at the queue for a while before sleeping; only a message counts
                        // (an error is reported through the reactor, as without looking).
                        let (fd, buf) = (self.fd.get_ref().as_fd(), &mut self.buf);
                        let mut got = None;
                        ready!(self.wait.poll_look(cx, || {
                            got = sys::receive(fd, buf).ok();
                            got.is_some()
                        }));
                        return Poll::Ready(Ok(got.expect("a look succeeds only with a message")));
                    }
                    // The peer exited: deliver what it sent before it died, then report it.
                    return Poll::Ready(match sys::receive(self.fd.get_ref().as_fd(), &mut self.buf) {
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(self.peer.died()),
                        other => other,
                    });
                }
            }
        }
    }

    /// Takes the next message into `buf[at..len]`.
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let len = ready!(self.poll_message(cx))?;
        match message(&self.buf[..len])? {
            Message::Data(_) => (self.at, self.len) = (1, len),
            Message::Close => self.state = State::Closed,
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for MqReader {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            match this.state {
                State::Open => {}
                State::Closed => return Poll::Ready(Ok(())),
                State::Failed => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::NotConnected,
                        "the mq:// connection failed earlier",
                    )))
                }
            }
            if this.at < this.len {
                let n = (this.len - this.at).min(buf.remaining());
                buf.put_slice(&this.buf[this.at..this.at + n]);
                this.at += n;
                return Poll::Ready(Ok(()));
            }
            if let Err(e) = ready!(this.poll_next(cx)) {
                this.state = State::Failed;
                return Poll::Ready(Err(e));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use rpc_core::transport::{recv, send};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    /// The options of a default connection with a 1 MiB frame limit.
    fn framing() -> Framing {
        Framing { max_frame_len: 1 << 20, spin: crate::options::DEFAULT_SPIN }
    }

    /// A connection with itself over a fresh queue (4 messages of 128 bytes), in this process
    /// (so no pidfd: only [`CLOSE`] can tell the receiver that the sender went).
    fn looped(tag: &str) -> (MqSender, MqReceiver) {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let name = sys::name(&format!("rpc-mq-conn-{tag}-{}-{n}", std::process::id())).unwrap();
        let geometry = sys::Geometry { max_msgs: 4, msg_size: 128 };
        let tx = sys::create(&name, sys::Access::Write, 0o600, geometry).unwrap();
        let rx = sys::open(&name, sys::Access::Read).unwrap();
        sys::unlink(&name).unwrap();
        // `halves` wants both directions: give it the one queue as both, and keep one half of
        // each call (the other sender is marked closed so that dropping it says nothing).
        let exit = || PeerExit::watch(std::process::id()).unwrap();
        let (sender, _) =
            halves(rx.try_clone().unwrap(), tx.try_clone().unwrap(), (exit(), exit()), 0, framing()).unwrap();
        let (mut unused, receiver) = halves(rx, tx, (exit(), exit()), 0, framing()).unwrap();
        unused.get_mut().closed = true;
        (sender, receiver)
    }

    /// Sends frames of `len` bytes until the queue is full (a send still waits after a second):
    /// returns those that went whole.
    async fn fill(sender: &mut MqSender, len: usize) -> Vec<Bytes> {
        let mut sent = Vec::new();
        for i in 0u8.. {
            let frame = Bytes::from(vec![i; len]);
            match tokio::time::timeout(Duration::from_secs(1), send(sender, frame.clone())).await {
                Ok(result) => result.unwrap(),
                Err(_full) => return sent,
            }
            sent.push(frame);
            assert!(sent.len() < 100, "a queue of 4 messages took {} frames", sent.len());
        }
        unreachable!()
    }

    // Paused time: the reader comes back long after the sender was dropped, at once.
    #[tokio::test(start_paused = true)]
    async fn a_sender_dropped_on_a_full_queue_still_says_close() {
        // Frames that fill a message each (with the kind byte and the length prefix): the drop
        // comes between frames.
        let (mut sender, mut receiver) = looped("full");
        let sent = fill(&mut sender, 128 - 1 - rpc_core::wire::LENGTH_PREFIX_LEN).await;
        assert!(!sent.is_empty());
        drop(sender);
        tokio::time::sleep(Duration::from_secs(60)).await;
        for frame in &sent {
            assert_eq!(&recv(&mut receiver).await.unwrap().unwrap(), frame);
        }
        let end = tokio::time::timeout(Duration::from_secs(10), recv(&mut receiver)).await;
        assert!(matches!(end, Ok(Ok(None))), "the end after the frames: {end:?}");

        // Frames of two messages: the second frame's first message takes the last slot frames
        // may use, so the drop cuts it short, which the receiver reports.
        let (mut sender, mut receiver) = looped("cut");
        let sent = fill(&mut sender, 200).await;
        assert_eq!(sent.len(), 1);
        drop(sender);
        tokio::time::sleep(Duration::from_secs(60)).await;
        for frame in &sent {
            assert_eq!(&recv(&mut receiver).await.unwrap().unwrap(), frame);
        }
        let end = tokio::time::timeout(Duration::from_secs(10), recv(&mut receiver)).await;
        let err = end.expect("the end after the frames").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err}");
    }
}
