//! Streams: the items of a streaming call, in either direction.
//!
//! A service method streams when an argument or its return type is a [`Stream<T>`]:
//!
//! ```ignore
//! #[rpc::service]
//! pub trait Monitor {
//!     async fn watch(&self, key: String) -> rpc::Stream<Event>;                 // server streaming
//!     async fn upload(&self, chunks: rpc::Stream<rpc::Bytes>) -> u64;           // client streaming
//!     async fn chat(&self, incoming: rpc::Stream<Line>) -> rpc::Stream<Line>;   // both
//! }
//! ```
//!
//! A [`Stream<T>`] is any `futures` stream of `T`, boxed: a handler returns one (built with
//! [`Stream::new`], [`Stream::from_iter`] or [`Stream::channel`]) and receives one; a client
//! passes one and gets a [`Streaming<T>`](crate::client::Streaming) back, whose items are
//! `Result<T, RpcError>` so a failed connection or deadline ends it with a typed error. An item
//! type `Result<T, E>` carries application errors apart from those.
//!
//! The engines move items with flow control (see [`crate::wire`], "Streams"): a producer waits
//! while its consumer has not taken what it sent, so a slow consumer costs the producer no
//! memory, and other calls on the connection keep flowing.
//!
//! This module holds what both engines share: the user-facing [`Stream`], the type-erased
//! encoding source ([`EncodedStream`]), and in private submodules the credit accounting
//! (`flow`), the sending loop (`pump`) and the receiving end a handler reads (`inbox`).

pub(crate) mod flow;
pub(crate) mod inbox;
pub(crate) mod pump;

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::stream::Stream as FuturesStream;
use serde::Serialize;

use crate::wire::ItemsWriter;

/// A stream of `T`: the argument or return type of a streaming method.
///
/// Any [`futures_util::Stream`] becomes one with [`Stream::new`]; it is itself a
/// `futures_util::Stream`, and [`Stream::next`] reads it without importing a trait.
pub struct Stream<T> {
    inner: Pin<Box<dyn FuturesStream<Item = T> + Send + 'static>>,
}

impl<T> Stream<T> {
    /// Wraps any stream of `T`.
    pub fn new<S>(stream: S) -> Self
    where
        S: FuturesStream<Item = T> + Send + 'static,
    {
        Stream { inner: Box::pin(stream) }
    }

    /// A stream of the items of `iter`, all ready at once.
    // Not `FromIterator`: that would collect an iterator's items first, and the iterator may be
    // endless.
    #[allow(clippy::should_implement_trait)]
    pub fn from_iter<I>(iter: I) -> Self
    where
        I: IntoIterator<Item = T>,
        I::IntoIter: Send + 'static,
    {
        Stream::new(futures_util::stream::iter(iter))
    }

    /// A stream with no items.
    pub fn empty() -> Self
    where
        T: Send + 'static,
    {
        Stream::new(futures_util::stream::empty())
    }

    /// A stream fed from elsewhere: items sent on the [`StreamSender`] are the stream's items,
    /// and the stream ends when every sender is dropped. `capacity` items (at least 1) wait in
    /// between; a sender that gets ahead waits for the stream to be read.
    ///
    /// The usual way for a handler to produce items from a loop in a task of its own: when the
    /// caller goes away the stream is dropped, and the loop's next [`StreamSender::send`] fails.
    pub fn channel(capacity: usize) -> (StreamSender<T>, Stream<T>)
    where
        T: Send + 'static,
    {
        let (tx, mut rx) = tokio::sync::mpsc::channel(capacity.max(1));
        (StreamSender(tx), Stream::new(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))))
    }

    /// The next item, or `None` at the end.
    pub async fn next(&mut self) -> Option<T> {
        std::future::poll_fn(|cx| self.inner.as_mut().poll_next(cx)).await
    }
}

impl<T> FuturesStream for Stream<T> {
    type Item = T;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        self.inner.as_mut().poll_next(cx)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

impl<T> fmt::Debug for Stream<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stream").finish_non_exhaustive()
    }
}

/// The sending side of [`Stream::channel`]. Cheap to clone; the stream ends when the last clone
/// is dropped.
#[derive(Debug)]
pub struct StreamSender<T>(tokio::sync::mpsc::Sender<T>);

impl<T> Clone for StreamSender<T> {
    fn clone(&self) -> Self {
        StreamSender(self.0.clone())
    }
}

impl<T> StreamSender<T> {
    /// Sends one item, waiting while the stream's buffer is full. Fails, giving the item back,
    /// once the stream was dropped (its reader went away: the caller cancelled, the connection
    /// died, the call's deadline passed).
    pub async fn send(&self, item: T) -> Result<(), StreamClosed<T>> {
        self.0.send(item).await.map_err(|e| StreamClosed(e.0))
    }

    /// Whether the stream was dropped.
    pub fn is_closed(&self) -> bool {
        self.0.is_closed()
    }

    /// Completes when the stream is dropped: for a producer that waits for something else and
    /// should stop when nobody reads any more.
    pub async fn closed(&self) {
        self.0.closed().await
    }
}

/// The error of [`StreamSender::send`]: the stream is gone; the item that was not sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamClosed<T>(pub T);

impl<T> fmt::Display for StreamClosed<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the stream's reader is gone")
    }
}

impl<T: fmt::Debug> std::error::Error for StreamClosed<T> {}

/// A [`Stream`] whose items are encoded as they are taken: what the engines send. Made by
/// generated code; the engines only ever see this type-erased form.
pub struct EncodedStream {
    source: Box<dyn ItemSource>,
}

impl EncodedStream {
    /// Encodes the items of `stream` with postcard.
    pub fn new<T>(stream: Stream<T>) -> Self
    where
        T: Serialize + Send + 'static,
    {
        EncodedStream { source: Box::new(Encode(stream)) }
    }

    /// Appends the next item to `frame`: `Ready(Some(Ok(())))` when one was appended,
    /// `Ready(None)` at the end, `Ready(Some(Err(_)))` when an item failed to encode.
    pub(crate) fn poll_push(
        &mut self,
        cx: &mut Context<'_>,
        frame: &mut ItemsWriter,
    ) -> Poll<Option<Result<(), String>>> {
        self.source.poll_push(cx, frame)
    }
}

impl fmt::Debug for EncodedStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncodedStream").finish_non_exhaustive()
    }
}

trait ItemSource: Send {
    fn poll_push(&mut self, cx: &mut Context<'_>, frame: &mut ItemsWriter) -> Poll<Option<Result<(), String>>>;
}

struct Encode<T>(Stream<T>);

impl<T: Serialize + Send + 'static> ItemSource for Encode<T> {
    fn poll_push(&mut self, cx: &mut Context<'_>, frame: &mut ItemsWriter) -> Poll<Option<Result<(), String>>> {
        match self.0.inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(item)) => Poll::Ready(Some(frame.push(&item).map_err(|e| e.to_string()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// A received stream items frame being read item by item.
#[derive(Debug)]
pub(crate) struct Cursor {
    frame: bytes::Bytes,
    pos: usize,
}

impl Cursor {
    /// `frame` must be a stream items frame that [`crate::wire::route`] or
    /// [`crate::wire::decode`] accepted.
    pub(crate) fn new(frame: bytes::Bytes) -> Self {
        Cursor { frame, pos: crate::wire::STREAM_ITEMS_HEADER_LEN }
    }

    /// The next item, decoded (byte payloads in it share the frame, see [`crate::bytes`]);
    /// `None` after the last.
    pub(crate) fn next_item<T: serde::de::DeserializeOwned>(&mut self) -> Option<Result<T, postcard::Error>> {
        let item = Self::advance(&self.frame, &mut self.pos)?;
        Some(crate::bytes::decoding_from(&self.frame, || crate::wire::decode_value(item)))
    }

    /// The next item as encoded (a slice of the frame); `None` after the last.
    pub(crate) fn next_encoded(&mut self) -> Option<bytes::Bytes> {
        let item = Self::advance(&self.frame, &mut self.pos)?;
        Some(self.frame.slice_ref(item))
    }

    /// The encoded item of `frame` at `pos`, moving `pos` past it.
    fn advance<'f>(frame: &'f bytes::Bytes, pos: &mut usize) -> Option<&'f [u8]> {
        let (item, next) = crate::wire::item_at(frame, *pos)?;
        *pos = next;
        Some(item)
    }

    /// The frame's length, the credit it used.
    pub(crate) fn frame_len(&self) -> usize {
        self.frame.len()
    }
}

#[cfg(test)]
mod tests {
    use super::Cursor;
    use crate::bytes::Bytes;

    #[test]
    fn byte_items_share_their_frame() {
        let mut writer = crate::wire::ItemsWriter::new(1);
        writer.push(&Bytes::from(vec![1u8; 1000])).unwrap();
        writer.push(&Bytes::from(vec![2u8; 3])).unwrap();
        let frame = writer.finish().into_bytes();
        let mut cursor = Cursor::new(frame.clone());
        let long: Bytes = cursor.next_item().unwrap().unwrap();
        let short: Bytes = cursor.next_item().unwrap().unwrap();
        assert!(cursor.next_item::<Bytes>().is_none());
        assert_eq!(long, vec![1u8; 1000]);
        assert_eq!(short, vec![2u8; 3]);
        let inside = frame.as_ptr_range();
        assert!(inside.contains(&long.as_ptr()), "a long item was copied out of its frame");
        assert!(!inside.contains(&short.as_ptr()), "a short item shares its frame");
    }
}
