//! The one frame driver: any byte sink and source (`AsyncWrite` + `AsyncRead`) become a
//! [`FrameSender`] + [`FrameReceiver`] using the length-prefix codec of [`crate::wire::codec`],
//! in the shape of tokio-util's `FramedImpl`. Every transport uses it: sockets and pipes
//! directly, the shared-memory ring and the message queues through a byte sink/source of their
//! own, so the framing, the send queue, the progress counters and the hostile-input limits are
//! written (and fuzzed) once.
//!
//! The sender coalesces small frames into one buffer and writes the queue vectored, so frames
//! queued by many callers while a write is in progress leave in one system call; large frames,
//! and the large parts of a frame in parts ([`Encoded`]: a big byte payload), are queued as they
//! are, without a copy. A sink whose writes cost no system call (shared memory) can ask for
//! [write-through](StreamSender::write_through): each frame then goes out as soon as it is
//! queued, without waiting for a flush. The receiver reads into a buffer that
//! grows only with bytes that actually arrived.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::io::poll_read_buf;

use super::{FrameReceiver, FrameSender, HIGH_WATER};
use crate::wire::codec::MIN_RESERVE;
use crate::wire::{Encoded, LengthDelimited};

/// Frames up to this size are copied into the coalescing buffer; larger ones are queued as is.
const COALESCE_MAX: usize = 16 * 1024;
/// At most this many queued chunks go into one vectored write (well under every `IOV_MAX`).
const MAX_IOVECS: usize = 32;
/// A frame written through goes out in one write of its prefix and at most this many parts
/// less one; a larger array costs its initialisation on every frame.
const WRITE_THROUGH_SLICES: usize = 4;
/// The least a receiver asks for when its buffer lacks room for the next read: twice the
/// codec's smallest hint ([`MIN_RESERVE`]), so that small frames taken off the front leave room
/// for many more reads before the buffer must be reclaimed. Asking for exactly the hint, a
/// buffer of that size had less than it left after any frame, and took `BytesMut::reserve`'s
/// slow path (reclaiming it) before every read.
const RECEIVE_ROOM: usize = 2 * MIN_RESERVE;

/// Wraps the two halves of a byte stream as frame halves with the given maximum frame length.
pub fn framed<R, W>(read: R, write: W, max_frame_len: usize) -> (StreamSender<W>, StreamReceiver<R>)
where
    R: AsyncRead + Send + Unpin + 'static,
    W: AsyncWrite + Send + Unpin + 'static,
{
    let codec = LengthDelimited::new(max_frame_len);
    (StreamSender::new(write, codec), StreamReceiver::new(read, codec))
}

/// Writes what a sink takes at once, without waiting: `Err(WouldBlock)` when it takes nothing.
/// See [`StreamSender::write_through`].
pub type TryWrite<W> = fn(&mut W, &[IoSlice<'_>]) -> io::Result<usize>;

/// The sending half of a length-prefixed byte stream.
#[derive(Debug)]
pub struct StreamSender<W> {
    io: W,
    codec: LengthDelimited,
    /// Small frames (with prefixes) waiting to be moved to `queue`.
    coalesce: BytesMut,
    /// Chunks in the order they must be written; the front may be partly written.
    queue: VecDeque<Bytes>,
    queued: usize,
    written: u64,
    /// Set by [`write_through`](Self::write_through).
    try_write: Option<TryWrite<W>>,
}

impl<W: AsyncWrite + Send + Unpin + 'static> StreamSender<W> {
    /// A sender writing to `io`.
    pub fn new(io: W, codec: LengthDelimited) -> Self {
        Self { io, codec, coalesce: BytesMut::new(), queue: VecDeque::new(), queued: 0, written: 0, try_write: None }
    }

    /// Writes every frame as soon as it is queued, with `try_write`, as far as the sink takes it
    /// without waiting (the rest leaves on the next flush). For sinks where a write costs no
    /// system call: a reader spinning on shared memory then sees each frame at once, not when
    /// the engine next flushes. What `try_write` took must need no flush of the sink: the sender
    /// then reports [`FrameSender::sends_at_once`], and the engines count a frame that left whole
    /// as flushed without polling the sink's `poll_flush`.
    #[must_use]
    pub fn write_through(mut self, try_write: TryWrite<W>) -> Self {
        self.try_write = Some(try_write);
        self
    }

    /// The sink.
    pub fn get_ref(&self) -> &W {
        &self.io
    }

    /// The sink. Writing to it directly would corrupt the stream of frames.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.io
    }

    fn seal_coalesced(&mut self) {
        if !self.coalesce.is_empty() {
            self.queue.push_back(self.coalesce.split().freeze());
        }
    }

    /// Writes queued chunks with `write` until the queue is empty or `write` is pending.
    fn write_queued(
        &mut self,
        mut write: impl FnMut(&mut W, &[IoSlice<'_>]) -> Poll<io::Result<usize>>,
    ) -> Poll<io::Result<()>> {
        self.seal_coalesced();
        while !self.queue.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let count = self.queue.iter().zip(&mut slices).map(|(chunk, slice)| *slice = IoSlice::new(chunk)).count();
            let mut n = ready!(write(&mut self.io, &slices[..count]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.queued -= n;
            self.written += n as u64;
            while n > 0 {
                let front = self.queue.front_mut().expect("a sink wrote no more than it was given");
                let step = n.min(front.len());
                front.advance(step);
                n -= step;
                if front.is_empty() {
                    self.queue.pop_front();
                }
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Queues what is left of `prefix` and then of `frame` after their first `skip` bytes were
    /// written: small parts are copied into the coalescing buffer, large ones queued as they are.
    fn enqueue(&mut self, mut skip: usize, prefix: &[u8], frame: Encoded) {
        self.coalesce_part(&mut skip, prefix);
        // A small frame is copied whole, from wherever its parts are (one held in place has no
        // `Bytes` to take).
        if frame.len() <= COALESCE_MAX {
            self.coalesce_part(&mut skip, frame.head());
            for part in frame.rest() {
                self.coalesce_part(&mut skip, part);
            }
            return;
        }
        for mut part in frame.into_parts() {
            if part.len() <= COALESCE_MAX {
                self.coalesce_part(&mut skip, &part);
                continue;
            }
            if skip >= part.len() {
                skip -= part.len();
                continue;
            }
            part.advance(skip);
            skip = 0;
            self.queued += part.len();
            self.seal_coalesced();
            self.queue.push_back(part);
        }
    }

    /// Copies what is left of `part` after `skip` bytes into the coalescing buffer.
    fn coalesce_part(&mut self, skip: &mut usize, part: &[u8]) {
        let take = (*skip).min(part.len());
        *skip -= take;
        self.coalesce.put_slice(&part[take..]);
        self.queued += part.len() - take;
    }

    fn poll_write_queued(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Nothing waits (what a write-through sender finds at nearly every flush): no more to do
        // than this test. (`queued` counts the coalescing buffer's bytes too.)
        if self.queued == 0 {
            return Poll::Ready(Ok(()));
        }
        self.write_queued(|io, slices| Pin::new(io).poll_write_vectored(cx, slices))
    }
}

impl<W: AsyncWrite + Send + Unpin + 'static> FrameSender for StreamSender<W> {
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.queued >= HIGH_WATER {
            ready!(self.poll_write_queued(cx))?;
        }
        Poll::Ready(Ok(()))
    }

    fn start_send(&mut self, frame: Bytes) -> io::Result<()> {
        self.start_send_parts(frame.into())
    }

    fn start_send_parts(&mut self, frame: Encoded) -> io::Result<()> {
        let prefix = self.codec.prefix(frame.len())?;
        let Some(try_write) = self.try_write else {
            self.enqueue(0, &prefix, frame);
            return Ok(());
        };
        if !self.queue.is_empty() || !self.coalesce.is_empty() {
            // Frames before this one wait: they leave first.
            self.enqueue(0, &prefix, frame);
            let written = self.write_queued(|io, slices| match try_write(io, slices) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Poll::Pending,
                other => Poll::Ready(other),
            });
            return match written {
                Poll::Ready(Err(e)) => Err(e),
                _ => Ok(()),
            };
        }
        // Nothing waits: write straight from the frame's parts (the first few: a frame is rarely
        // in more), and queue only what did not fit.
        let mut slices = [IoSlice::new(&[]); WRITE_THROUGH_SLICES];
        slices[0] = IoSlice::new(&prefix);
        let count = 1 + frame.parts().zip(&mut slices[1..]).map(|(part, slice)| *slice = IoSlice::new(part)).count();
        let n = match try_write(&mut self.io, &slices[..count]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(e) => return Err(e),
        };
        self.written += n as u64;
        if n < prefix.len() + frame.len() {
            self.enqueue(n, &prefix, frame);
        }
        Ok(())
    }

    fn sends_at_once(&self) -> bool {
        self.try_write.is_some()
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_write_queued(cx))?;
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_flush(cx))?;
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn unsent_len(&self) -> usize {
        self.queued
    }

    fn bytes_written(&self) -> u64 {
        self.written
    }
}

/// The receiving half of a length-prefixed byte stream.
#[derive(Debug)]
pub struct StreamReceiver<R> {
    io: R,
    codec: LengthDelimited,
    buf: BytesMut,
    eof: bool,
}

impl<R: AsyncRead + Send + Unpin + 'static> StreamReceiver<R> {
    /// A receiver reading from `io`.
    pub fn new(io: R, codec: LengthDelimited) -> Self {
        Self { io, codec, buf: BytesMut::new(), eof: false }
    }
}

impl<R: AsyncRead + Send + Unpin + 'static> FrameReceiver for StreamReceiver<R> {
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Bytes>>> {
        loop {
            if let Some(frame) = self.codec.decode(&mut self.buf)? {
                return Poll::Ready(Ok(Some(frame)));
            }
            if self.eof {
                return Poll::Ready(if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed in the middle of a frame"))
                });
            }
            let hint = self.codec.reserve_hint(&self.buf);
            if self.buf.capacity() - self.buf.len() < hint {
                self.buf.reserve(hint.max(RECEIVE_ROOM));
            }
            if ready!(poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf))? == 0 {
                self.eof = true;
            }
        }
    }

    /// Whole frames are handed out as soon as they are complete, so what stays in the buffer
    /// between polls is the beginning of the next frame.
    fn partial_frame_len(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::{recv, send};

    #[tokio::test]
    async fn frames_cross_a_duplex_pipe_in_order() {
        let (a, b) = tokio::io::duplex(1024);
        let (ar, aw) = tokio::io::split(a);
        let (br, bw) = tokio::io::split(b);
        let (mut tx, _rx_unused) = framed(ar, aw, 1 << 20);
        let (_tx_unused, mut rx) = framed(br, bw, 1 << 20);
        let big = Bytes::from(vec![7u8; 100_000]);
        let parts = Encoded::from_parts(Bytes::from_static(b"a"), vec![big.clone(), Bytes::from_static(b"z")]);
        let whole = parts.to_vec();
        let writer = tokio::spawn(async move {
            send(&mut tx, Bytes::from_static(b"one")).await.unwrap();
            send(&mut tx, big).await.unwrap();
            std::future::poll_fn(|cx| tx.poll_ready(cx)).await.unwrap();
            tx.start_send_parts(parts).unwrap();
            send(&mut tx, Bytes::new()).await.unwrap();
            crate::transport::close(&mut tx).await.unwrap();
        });
        assert_eq!(recv(&mut rx).await.unwrap().unwrap(), &b"one"[..]);
        assert_eq!(recv(&mut rx).await.unwrap().unwrap(), vec![7u8; 100_000]);
        assert_eq!(recv(&mut rx).await.unwrap().unwrap(), whole);
        assert_eq!(recv(&mut rx).await.unwrap().unwrap(), &b""[..]);
        assert!(recv(&mut rx).await.unwrap().is_none());
        writer.await.unwrap();
    }

    #[tokio::test]
    async fn oversized_frame_is_refused_by_sender_and_receiver() {
        let (a, b) = tokio::io::duplex(1024);
        let (mut tx, _) = framed(tokio::io::empty(), a, 8);
        let err = tx.start_send(Bytes::from_static(b"123456789")).unwrap_err();
        assert_eq!(crate::error::RpcError::from(err), crate::error::RpcError::FrameTooLarge { size: 9, max: 8 });

        let (_, mut rx) = framed(b, tokio::io::sink(), 8);
        tokio::io::AsyncWriteExt::write_all(&mut tx.io, &u32::MAX.to_le_bytes()).await.unwrap();
        let err = recv(&mut rx).await.unwrap_err();
        assert!(matches!(crate::error::RpcError::from(err), crate::error::RpcError::FrameTooLarge { .. }));
    }

    #[tokio::test]
    async fn small_frames_leave_room_for_the_next_reads() {
        // Frames of 20 bytes, one at a time: after each, the buffer still has the codec's
        // smallest hint (`MIN_RESERVE`) free, so the next read needs no `reserve` (whose slow path
        // reclaims the buffer), for as many frames as `RECEIVE_ROOM` holds beyond the hint.
        let (a, b) = tokio::io::duplex(1 << 16);
        let (mut tx, _) = framed(tokio::io::empty(), a, 1 << 20);
        let (_, mut rx) = framed(b, tokio::io::sink(), 1 << 20);
        let frames = (RECEIVE_ROOM - MIN_RESERVE) / 24;
        for i in 0..frames {
            send(&mut tx, Bytes::from(vec![i as u8; 20])).await.unwrap();
            assert_eq!(recv(&mut rx).await.unwrap().unwrap(), vec![i as u8; 20]);
            let room = rx.buf.capacity() - rx.buf.len();
            assert!(room >= MIN_RESERVE, "after frame {i}, {room} bytes of room");
        }
    }

    #[tokio::test]
    async fn progress_counters_follow_the_bytes() {
        let (a, b) = tokio::io::duplex(64);
        let (mut tx, _) = framed(tokio::io::empty(), a, 1 << 20);
        let (_, mut rx) = framed(b, tokio::io::sink(), 1 << 20);
        assert!(!tx.sends_at_once(), "a queued frame waits for a flush");
        // 4 + 100 bytes queued; the pipe takes 64 of them, then the reader must make room.
        tx.start_send(Bytes::from(vec![1u8; 100])).unwrap();
        assert_eq!((tx.unsent_len(), tx.bytes_written()), (104, 0));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(tx.poll_flush(&mut cx).is_pending());
        assert_eq!((tx.unsent_len(), tx.bytes_written()), (40, 64));
        // The receiver now holds the beginning of the frame, and says so.
        assert!(rx.poll_recv(&mut cx).is_pending());
        assert_eq!(rx.partial_frame_len(), 64);
        send(&mut tx, Bytes::new()).await.unwrap();
        assert_eq!(recv(&mut rx).await.unwrap().unwrap().len(), 100);
        assert_eq!((tx.unsent_len(), tx.bytes_written()), (0, 108));
    }

    #[tokio::test]
    async fn eof_mid_frame_is_an_error() {
        let (mut a, b) = tokio::io::duplex(64);
        let (_, mut rx) = framed(b, tokio::io::sink(), 64);
        tokio::io::AsyncWriteExt::write_all(&mut a, &[10, 0, 0, 0, 1, 2]).await.unwrap();
        drop(a);
        assert_eq!(recv(&mut rx).await.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    }

    /// A sink that takes at most `room` bytes until the test gives it more.
    #[derive(Default)]
    struct Tight {
        out: Vec<u8>,
        room: usize,
    }

    impl Tight {
        fn try_write(&mut self, slices: &[IoSlice<'_>]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let mut n = 0;
            for slice in slices {
                let take = slice.len().min(self.room - n);
                self.out.extend_from_slice(&slice[..take]);
                n += take;
            }
            self.room -= n;
            Ok(n)
        }
    }

    impl AsyncWrite for Tight {
        fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            match self.get_mut().try_write(&[IoSlice::new(buf)]) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Poll::Pending,
                other => Poll::Ready(other),
            }
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn write_through_writes_what_fits_at_once_and_keeps_the_order() {
        let codec = LengthDelimited::new(1 << 20);
        let mut tx = StreamSender::new(Tight { room: 6, ..Tight::default() }, codec).write_through(Tight::try_write);
        assert!(tx.sends_at_once(), "a frame written through leaves when queued");
        let frames: Vec<Bytes> = vec![
            Bytes::from_static(b"ab"),   // 6 bytes: fits exactly
            Bytes::from_static(b"cdef"), // nothing fits: all queued
            Bytes::from(vec![9u8; 20_000]),
            Bytes::new(),
        ];
        tx.start_send(frames[0].clone()).unwrap();
        assert_eq!((tx.unsent_len(), tx.bytes_written()), (0, 6), "written straight from the frame");
        tx.start_send(frames[1].clone()).unwrap();
        assert_eq!(tx.unsent_len(), 8);
        tx.get_mut().room = 10;
        tx.start_send(frames[2].clone()).unwrap();
        assert_eq!((tx.unsent_len(), tx.bytes_written()), (8 + 20_004 - 10, 16), "queued frames first");
        tx.get_mut().room = usize::MAX / 2;
        tx.start_send(frames[3].clone()).unwrap();
        assert_eq!(tx.unsent_len(), 0);
        // Cut short inside a prefix: the rest of it is queued before the frame.
        tx.get_mut().room = 2;
        tx.start_send(Bytes::from_static(b"xyz")).unwrap();
        assert_eq!(tx.unsent_len(), 5);
        tx.get_mut().room = usize::MAX / 2;
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(tx.poll_flush(&mut cx).is_ready());
        let mut buf = BytesMut::from(&tx.get_ref().out[..]);
        for frame in frames.iter().chain([&Bytes::from_static(b"xyz")]) {
            assert_eq!(&codec.decode(&mut buf).unwrap().unwrap(), frame);
        }
        assert!(buf.is_empty());
    }

    #[test]
    fn a_frame_in_parts_leaves_whole_and_in_order_wherever_the_sink_cuts_it() {
        let codec = LengthDelimited::new(1 << 20);
        let big = Bytes::from(vec![8u8; 40_000]);
        let frame = || Encoded::from_parts(Bytes::from_static(b"head"), vec![big.clone(), Bytes::from_static(b"t")]);
        // Cut in the prefix, at its end, in the head, in the large part, at its end, in the tail.
        for room in [0, 2, 4, 6, 20_000, 40_008, 40_009, usize::MAX / 2] {
            let mut tx = StreamSender::new(Tight { room, ..Tight::default() }, codec).write_through(Tight::try_write);
            tx.start_send_parts(frame()).unwrap();
            assert_eq!(tx.unsent_len() as u64 + tx.bytes_written(), 4 + 40_005, "room {room}");
            tx.start_send(Bytes::from_static(b"next")).unwrap();
            tx.get_mut().room = usize::MAX / 2;
            let mut cx = Context::from_waker(std::task::Waker::noop());
            assert!(tx.poll_flush(&mut cx).is_ready());
            let mut buf = BytesMut::from(&tx.get_ref().out[..]);
            assert_eq!(codec.decode(&mut buf).unwrap().unwrap(), frame().to_vec(), "room {room}");
            assert_eq!(&codec.decode(&mut buf).unwrap().unwrap()[..], b"next");
            assert!(buf.is_empty());
            assert_eq!((tx.unsent_len(), tx.bytes_written()), (0, 4 + 40_005 + 4 + 4));
        }
    }

    #[test]
    fn a_small_frame_is_copied_whole_wherever_the_sink_cuts_it() {
        let codec = LengthDelimited::new(1 << 20);
        let header = crate::wire::RequestHeader { id: 7, method: 1, timeout_us: None };
        let small = [
            // In parts, each short: copied part by part.
            ("parts", Encoded::from_parts(Bytes::from_static(b"head"), vec![Bytes::from_static(b"mid"), Bytes::new()])),
            // Held in place by the encoder (an `add` request).
            ("in place", crate::wire::encode_request(header, &(1i64, 2i64)).unwrap()),
        ];
        for (what, frame) in small {
            let len = frame.len();
            for room in 0..=4 + len {
                let mut tx =
                    StreamSender::new(Tight { room, ..Tight::default() }, codec).write_through(Tight::try_write);
                tx.start_send_parts(frame.clone()).unwrap();
                assert_eq!(tx.unsent_len() as u64 + tx.bytes_written(), (4 + len) as u64, "{what}, room {room}");
                tx.start_send(Bytes::from_static(b"next")).unwrap();
                tx.get_mut().room = usize::MAX / 2;
                let mut cx = Context::from_waker(std::task::Waker::noop());
                assert!(tx.poll_flush(&mut cx).is_ready());
                let mut buf = BytesMut::from(&tx.get_ref().out[..]);
                assert_eq!(codec.decode(&mut buf).unwrap().unwrap(), frame.to_vec(), "{what}, room {room}");
                assert_eq!(&codec.decode(&mut buf).unwrap().unwrap()[..], b"next");
                assert!(buf.is_empty());
            }
        }
    }
}
