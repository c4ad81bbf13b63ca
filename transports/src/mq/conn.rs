//! One established `mq://` connection: a queue per direction, frames split into messages, and
//! the liveness watch that message queues lack.
//!
//! # Messages
//!
//! A message holds one or more *segments*, each a piece of one frame: a [`FIRST`] segment
//! (kind byte, the frame's total length and the segment's length as little-endian `u32`s, then
//! the bytes) starts a frame, [`MORE`] segments (kind, length, bytes; never empty) continue it.
//! A frame that fits goes in one segment, and the sender packs as many segments as fit into each
//! message, so small frames queued while the peer was busy leave together: a queue holds only a
//! few messages (see the limits in the `mq` module notes), and packing is what keeps it from capping
//! pipelined calls at a few per wake-up. A message of just [`CLOSE`] says no more frames follow.
//! Only one process writes into each queue and each side's sender pushes frames in order, so the
//! pieces of a frame are never interleaved with another frame's. The receiver refuses a frame
//! whose announced length is above its maximum before it keeps a byte of it, and grows the frame
//! only with bytes that arrived; any message that breaks these rules fails the connection with
//! `InvalidData`.
//!
//! # Liveness
//!
//! A queue does not report that the process at the other end died: its messages just stop. Each
//! side therefore watches the peer's process through a pidfd (readable once it exited), polled
//! whenever a half would wait: a receiver with an empty queue, a sender with a full one. A peer
//! in the same process never exits while we run, so a sender also says [`CLOSE`] when it is
//! dropped without being closed, as a socket's EOF would. [`CLOSE`] ends one direction only (the
//! peer may still read what we send, like a stream's half-close).
//!
//! # The slot kept for [`CLOSE`]
//!
//! A full queue refuses every message, [`CLOSE`] included, and a peer that stopped reading (or
//! reads slowly) keeps it full: a [`CLOSE`] that waited for room could come too late or never,
//! and a peer whose process lives would then wait forever after draining our last frames. So a
//! sender never lets frames take the last free slot of its queue: that slot is [`CLOSE`]'s, and
//! closing or dropping the sender ends the connection at once, however full the queue is. This
//! works because each queue has one writer (the sender) and one reader: the count of waiting
//! messages the sender reads (`mq_curmsgs`) can only shrink before its next send. A queue
//! therefore holds at least [`MIN_MSGS`] messages, and frames use one fewer than it holds.
//! (The alternative, taking back one of our own unread messages to make room, would drop whole
//! frames out of the middle of the stream; keeping the slot loses nothing the peer would read.)

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use rpc_core::transport::{FrameReceiver, FrameSender};
use rpc_core::wire::FrameTooLarge;
use tokio::io::unix::AsyncFd;

pub(crate) use crate::liveness::PeerExit;
use tokio::io::Interest;

use super::sys;

/// The first segment of a frame: kind, total length and segment length (`u32` LE), bytes.
pub(crate) const FIRST: u8 = 1;
/// A later segment of a frame: kind, segment length (`u32` LE), bytes.
pub(crate) const MORE: u8 = 2;
/// No more frames follow.
pub(crate) const CLOSE: u8 = 3;
/// Sent by the server as the first message on a new connection: it holds both queues.
pub(crate) const ACCEPT: u8 = 4;
/// Sent by a listener that stops with the client's connect request still unanswered.
pub(crate) const REFUSE: u8 = 5;

/// A [`FIRST`] segment's header.
const FIRST_HEADER: usize = 9;
/// A [`MORE`] segment's header.
const MORE_HEADER: usize = 5;
/// The smallest message size a connection works with (room for a header and some bytes).
pub(crate) const MIN_MSG_SIZE: usize = 64;
/// The smallest queue depth a connection works with: a message of frames, and the slot kept
/// for [`CLOSE`] (see the module notes).
pub(crate) const MIN_MSGS: usize = 2;
/// `poll_ready` pushes queued frames out before taking more once this many bytes wait.
const HIGH_WATER: usize = 256 * 1024;
/// What a queued frame costs on top of its bytes, so a flood of empty frames is bounded too.
const FRAME_COST: usize = 64;

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
    max_frame_len: usize,
) -> io::Result<(MqSender, MqReceiver)> {
    let in_size = checked_geometry(&incoming)?.msg_size;
    let out = checked_geometry(&outgoing)?;
    let peer = Peer { pid };
    let receiver = MqReceiver {
        fd: sys::register(incoming, Interest::READABLE)?,
        buf: vec![0; in_size].into_boxed_slice(),
        at: 0,
        len: 0,
        segments: Segments::new(max_frame_len),
        peer,
        exit: receiver_exit,
        state: State::Open,
    };
    let sender = MqSender {
        fd: sys::register(outgoing, Interest::WRITABLE)?,
        msg_size: out.msg_size,
        max_msgs: out.max_msgs,
        room: 0,
        queue: VecDeque::new(),
        sent: None,
        queued: 0,
        message: Vec::with_capacity(out.msg_size),
        max_frame_len,
        peer,
        exit: sender_exit,
        closed: false,
    };
    Ok((sender, receiver))
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
fn poll_push(
    fd: &AsyncFd<OwnedFd>,
    peer: &Peer,
    exit: &PeerExit,
    cx: &mut Context<'_>,
    mut try_send: impl FnMut(BorrowedFd<'_>) -> io::Result<()>,
) -> Poll<io::Result<()>> {
    loop {
        match fd.poll_write_ready(cx) {
            // `try_io` clears the readiness on `WouldBlock` (unless an event came meanwhile).
            Poll::Ready(Ok(mut guard)) => match guard.try_io(|fd| try_send(fd.get_ref().as_fd())) {
                Ok(result) => return Poll::Ready(result),
                Err(_would_block) => continue,
            },
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => {
                // The queue is full: only the peer can make room, so stop waiting if it is gone.
                if exit.poll_exited(cx) {
                    return Poll::Ready(Err(peer.died()));
                }
                return Poll::Pending;
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

/// The sending half: frames queue here and leave as messages of at most the queue's size,
/// leaving the queue's last slot to [`CLOSE`] (see the module notes).
#[derive(Debug)]
pub(crate) struct MqSender {
    fd: AsyncFd<OwnedFd>,
    msg_size: usize,
    /// The queue's depth.
    max_msgs: usize,
    /// Messages of frames that may still go before the queue is looked at again (the peer may
    /// have taken some meanwhile, so there can be more room, never less).
    room: usize,
    queue: VecDeque<Bytes>,
    /// Bytes of the front frame already sent; `None` until its first message left.
    sent: Option<usize>,
    /// Bytes (plus [`FRAME_COST`] per frame) queued and not yet sent.
    queued: usize,
    /// The message being built (reused).
    message: Vec<u8>,
    max_frame_len: usize,
    peer: Peer,
    exit: PeerExit,
    /// [`CLOSE`] was sent.
    closed: bool,
}

impl MqSender {
    fn closed_by_us() -> io::Error {
        io::Error::new(io::ErrorKind::NotConnected, "the sending half was already closed")
    }

    /// Packs the next message into `self.message` from the queued frames, starting where the
    /// last message stopped. Returns how many queued frames it finishes and where it leaves the
    /// frame after them (`None`: at its start), to be committed once the message is sent.
    fn build_next(&mut self) -> (usize, Option<usize>) {
        self.message.clear();
        let mut sent = self.sent;
        let mut done = 0;
        for frame in &self.queue {
            let room = self.msg_size - self.message.len();
            let start = sent.unwrap_or(0);
            let header = if sent.is_none() { FIRST_HEADER } else { MORE_HEADER };
            // A segment needs its header and a byte (or nothing more, for an empty frame).
            if room < header + usize::from(frame.len() > start) {
                break;
            }
            let end = frame.len().min(start + (room - header));
            let len = (end - start) as u32;
            if sent.is_none() {
                self.message.push(FIRST);
                // `start_send` refused frames above `max_frame_len`, which is at most u32::MAX.
                self.message.extend_from_slice(&(frame.len() as u32).to_le_bytes());
            } else {
                self.message.push(MORE);
            }
            self.message.extend_from_slice(&len.to_le_bytes());
            self.message.extend_from_slice(&frame[start..end]);
            if end < frame.len() {
                sent = Some(end);
                break;
            }
            done += 1;
            sent = None;
        }
        (done, sent)
    }
}

impl FrameSender for MqSender {
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.closed {
            return Poll::Ready(Err(Self::closed_by_us()));
        }
        if self.queued >= HIGH_WATER {
            ready!(self.poll_flush(cx))?;
        }
        Poll::Ready(Ok(()))
    }

    fn start_send(&mut self, frame: Bytes) -> io::Result<()> {
        if self.closed {
            return Err(Self::closed_by_us());
        }
        if frame.len() > self.max_frame_len {
            return Err(FrameTooLarge { size: frame.len() as u64, max: self.max_frame_len as u64 }.into());
        }
        self.queued += frame.len() + FRAME_COST;
        self.queue.push_back(frame);
        Ok(())
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.queue.is_empty() {
            let (done, sent) = self.build_next();
            let (room, max_msgs, message) = (&mut self.room, self.max_msgs, &self.message);
            ready!(poll_push(&self.fd, &self.peer, &self.exit, cx, |fd| send_keeping_a_slot(
                fd, room, max_msgs, message
            )))?;
            for frame in self.queue.drain(..done) {
                self.queued -= frame.len() + FRAME_COST;
            }
            self.sent = sent;
        }
        Poll::Ready(Ok(()))
    }

    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.closed {
            return Poll::Ready(Ok(()));
        }
        ready!(self.poll_flush(cx))?;
        // The slot frames leave free takes it at once; this waits only if another writer got
        // into our queue (see `send_keeping_a_slot`).
        ready!(poll_push(&self.fd, &self.peer, &self.exit, cx, |fd| sys::send(fd, &[CLOSE])))?;
        self.closed = true;
        Poll::Ready(Ok(()))
    }
}

impl Drop for MqSender {
    /// Says [`CLOSE`] if the connection was dropped without being closed: a peer in another
    /// process would notice our exit, one in ours would not. Frames still queued are dropped,
    /// as a socket's unsent bytes would be. The slot frames never take is free for [`CLOSE`],
    /// so this never waits, even when the peer stopped reading. (It fails only if another
    /// process of our user wrote into our queue; a peer in another process then still sees
    /// our exit.)
    fn drop(&mut self) {
        if self.closed {
            return;
        }
        // After a frame cut short the peer sees CLOSE inside a frame, which it reports as an
        // error, as a stream reports EOF inside a frame.
        let _ = sys::send(self.fd.get_ref().as_fd(), &[CLOSE]);
    }
}

/// A frame being reassembled.
#[derive(Debug)]
struct Partial {
    total: usize,
    data: BytesMut,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    /// The peer said [`CLOSE`]: `Ok(None)` from now on.
    Closed,
    /// An error was returned: the connection is unusable.
    Failed,
}

/// What one segment did to the frame being received.
#[derive(Debug)]
pub(crate) enum Step {
    Frame(Bytes),
    More,
    Closed,
}

/// Splits `n` bytes off the front of `rest`.
fn take<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    let (head, tail) = rest.split_at_checked(n)?;
    *rest = tail;
    Some(head)
}

fn take_u32(rest: &mut &[u8]) -> Option<usize> {
    take(rest, 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
}

/// The receiving half: reassembles frames from the messages of the incoming queue.
#[derive(Debug)]
pub(crate) struct MqReceiver {
    fd: AsyncFd<OwnedFd>,
    /// One message (the queue's message size: `mq_receive` wants at least that much room).
    buf: Box<[u8]>,
    /// The segments of the message in `buf` not yet taken: `buf[at..len]`.
    at: usize,
    len: usize,
    segments: Segments,
    peer: Peer,
    exit: PeerExit,
    state: State,
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("invalid mq:// message: {what}"))
}

/// The parser of incoming messages, without I/O: reassembles frames from segments.
#[derive(Debug)]
pub(crate) struct Segments {
    partial: Option<Partial>,
    max_frame_len: usize,
}

impl Segments {
    pub(crate) fn new(max_frame_len: usize) -> Self {
        Segments { partial: None, max_frame_len }
    }

    /// Takes the segment of `message` that starts at `at`: what it did, and where the next
    /// segment starts.
    pub(crate) fn step(&mut self, message: &[u8], at: usize) -> io::Result<(Step, usize)> {
        let mut rest = message.get(at..).unwrap_or_default();
        let Some(&kind) = rest.first() else { return Err(invalid("an empty message")) };
        rest = &rest[1..];
        let step = match kind {
            FIRST => {
                if self.partial.is_some() {
                    return Err(invalid("a frame began inside another"));
                }
                let (Some(total), Some(len)) = (take_u32(&mut rest), take_u32(&mut rest)) else {
                    return Err(invalid("a segment header is cut short"));
                };
                if total > self.max_frame_len {
                    return Err(FrameTooLarge { size: total as u64, max: self.max_frame_len as u64 }.into());
                }
                let Some(bytes) = take(&mut rest, len).filter(|_| len <= total) else {
                    return Err(invalid("a segment longer than its message or its frame"));
                };
                if len == total {
                    Step::Frame(Bytes::copy_from_slice(bytes))
                } else {
                    self.partial = Some(Partial { total, data: BytesMut::from(bytes) });
                    Step::More
                }
            }
            MORE => {
                let Some(mut partial) = self.partial.take() else {
                    return Err(invalid("the continuation of a frame that did not begin"));
                };
                let Some(len) = take_u32(&mut rest) else { return Err(invalid("a segment header is cut short")) };
                let Some(bytes) = take(&mut rest, len).filter(|b| !b.is_empty()) else {
                    return Err(invalid("an empty segment, or one longer than its message"));
                };
                if partial.data.len() + bytes.len() > partial.total {
                    return Err(invalid("a continuation beyond the frame's announced length"));
                }
                partial.data.extend_from_slice(bytes);
                if partial.data.len() < partial.total {
                    self.partial = Some(partial);
                    Step::More
                } else {
                    Step::Frame(partial.data.freeze())
                }
            }
            CLOSE if rest.is_empty() && at == 0 => {
                if self.partial.is_some() {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the mq:// peer closed the connection inside a frame",
                    ));
                }
                Step::Closed
            }
            _ => return Err(invalid(&format!("unknown segment kind {kind}"))),
        };
        Ok((step, message.len() - rest.len()))
    }
}

impl MqReceiver {
    /// Takes the next segment of the current message.
    fn step(&mut self) -> io::Result<Step> {
        let (step, at) = self.segments.step(&self.buf[..self.len], self.at)?;
        self.at = at;
        Ok(step)
    }

    /// The next message's length, `Pending` while the queue is empty and the peer alive.
    fn poll_message(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        loop {
            match self.fd.poll_read_ready(cx) {
                Poll::Ready(Ok(mut guard)) => match guard.try_io(|fd| sys::receive(fd.as_fd(), &mut self.buf)) {
                    Ok(result) => return Poll::Ready(result),
                    Err(_would_block) => continue,
                },
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    if !self.exit.poll_exited(cx) {
                        return Poll::Pending;
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
}

impl FrameReceiver for MqReceiver {
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Bytes>>> {
        loop {
            match self.state {
                State::Open => {}
                State::Closed => return Poll::Ready(Ok(None)),
                State::Failed => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::NotConnected,
                        "the mq:// connection failed earlier",
                    )))
                }
            }
            if self.at == self.len {
                match ready!(self.poll_message(cx)) {
                    Ok(len) => (self.at, self.len) = (0, len),
                    Err(e) => {
                        self.state = State::Failed;
                        return Poll::Ready(Err(e));
                    }
                }
                if self.len == 0 {
                    self.state = State::Failed;
                    return Poll::Ready(Err(invalid("an empty message")));
                }
            }
            let step = match self.step() {
                Ok(step) => step,
                Err(e) => {
                    self.state = State::Failed;
                    return Poll::Ready(Err(e));
                }
            };
            match step {
                Step::Frame(frame) => return Poll::Ready(Ok(Some(frame))),
                Step::More => {}
                Step::Closed => self.state = State::Closed,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rpc_core::transport::{recv, send};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

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
            halves(rx.try_clone().unwrap(), tx.try_clone().unwrap(), (exit(), exit()), 0, 1 << 20).unwrap();
        let (mut unused, receiver) = halves(rx, tx, (exit(), exit()), 0, 1 << 20).unwrap();
        unused.closed = true;
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
        // Frames that fill a message each: the drop comes between frames.
        let (mut sender, mut receiver) = looped("full");
        let sent = fill(&mut sender, 128 - FIRST_HEADER).await;
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
