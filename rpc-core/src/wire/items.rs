//! [`ItemsWriter`]: builds a stream items frame one item at a time.
//!
//! Each item is encoded straight into the frame, behind a length prefix filled in once the item
//! is written. A large [`crate::bytes::Bytes`] in an item (a chunk of a byte stream) becomes a
//! part of the frame of its own, as in requests and responses (see [`Encoded`]), so a stream of
//! 64 KiB chunks is not copied into its frames either.

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;

use super::arena::{self, Sink};
use super::{Encoded, ITEM_PREFIX_LEN, KIND_STREAM_ITEMS, STREAM_ITEMS_HEADER_LEN};

/// A finished part of a frame being built.
#[derive(Debug)]
enum Part {
    /// Written here; the length prefix of the item being written may be in it.
    Own(BytesMut),
    /// A payload taken as it is.
    Shared(Bytes),
}

impl Part {
    fn len(&self) -> usize {
        match self {
            Part::Own(bytes) => bytes.len(),
            Part::Shared(bytes) => bytes.len(),
        }
    }

    fn freeze(self) -> Bytes {
        match self {
            Part::Own(bytes) => bytes.freeze(),
            Part::Shared(bytes) => bytes,
        }
    }
}

/// Builds a stream items frame, one item at a time, each encoded straight into the frame.
#[derive(Debug)]
pub struct ItemsWriter {
    /// The parts before `buf`, in order.
    parts: Vec<Part>,
    /// Bytes in `parts`.
    in_parts: usize,
    /// Where the frame is being written now.
    buf: BytesMut,
    /// Where the last item's length prefix is: the index of its part (`parts.len()`: in `buf`)
    /// and its offset there; `None` before the first item.
    last: Option<(usize, usize)>,
    count: usize,
}

impl Sink for ItemsWriter {
    #[inline]
    fn extend(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    #[inline]
    fn push(&mut self, byte: u8) {
        self.buf.put_u8(byte);
    }

    fn splice(&mut self, payload: Bytes) {
        let written = self.buf.split();
        self.in_parts += written.len() + payload.len();
        self.parts.push(Part::Own(written));
        self.parts.push(Part::Shared(payload));
    }
}

impl ItemsWriter {
    /// An empty frame for call `id`.
    pub fn new(id: u64) -> Self {
        let mut buf = BytesMut::with_capacity(256);
        buf.put_u8(KIND_STREAM_ITEMS);
        buf.put_slice(&id.to_le_bytes());
        ItemsWriter { parts: Vec::new(), in_parts: 0, buf, last: None, count: 0 }
    }

    /// Appends one item.
    pub fn push<T: Serialize + ?Sized>(&mut self, item: &T) -> Result<(), postcard::Error> {
        let start = self.len();
        let at = (self.parts.len(), self.buf.len());
        self.buf.put_slice(&[0; ITEM_PREFIX_LEN]);
        if let Err(e) = arena::serialize(item, self) {
            // Part of the item may have been written: the frame cannot be finished.
            self.count = 0;
            return Err(e);
        }
        let len = self.len() - start - ITEM_PREFIX_LEN;
        let len = u32::try_from(len).map_err(|_| postcard::Error::SerializeBufferFull)?;
        let prefix = match self.parts.get_mut(at.0) {
            None => &mut self.buf[at.1..],
            Some(Part::Own(bytes)) => &mut bytes[at.1..],
            Some(Part::Shared(_)) => unreachable!("a prefix is written into a part of our own"),
        };
        prefix[..ITEM_PREFIX_LEN].copy_from_slice(&len.to_le_bytes());
        self.last = Some(at);
        self.count += 1;
        Ok(())
    }

    /// Items in the frame so far.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Length of the frame so far.
    pub fn len(&self) -> usize {
        self.in_parts + self.buf.len()
    }

    /// Whether no item has been pushed yet.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Removes the last item pushed into a frame of its own (for call `id`), for when it made
    /// this frame too long; `None` if this frame holds fewer than two items.
    pub fn split_last(&mut self, id: u64) -> Option<ItemsWriter> {
        let (part, offset) = self.last.filter(|_| self.count >= 2)?;
        let mut rest = ItemsWriter::new(id);
        if part == self.parts.len() {
            // The item is all in `buf`: copy it (it holds no large payload).
            rest.buf.extend_from_slice(&self.buf[offset..]);
            self.buf.truncate(offset);
            rest.last = Some((0, STREAM_ITEMS_HEADER_LEN));
        } else {
            // The item begins in one of the parts: move that part's end and every later part.
            let Part::Own(begins) = &mut self.parts[part] else {
                unreachable!("a prefix is written into a part of our own")
            };
            let begins = begins.split_off(offset);
            let header = rest.buf.split();
            rest.parts.push(Part::Own(header));
            rest.parts.push(Part::Own(begins));
            rest.parts.extend(self.parts.drain(part + 1..));
            rest.buf = self.buf.split();
            rest.in_parts = rest.parts.iter().map(Part::len).sum();
            self.in_parts = self.parts.iter().map(Part::len).sum();
            rest.last = Some((1, 0));
        }
        rest.count = 1;
        self.count -= 1;
        // Where the new last item starts is not kept; splitting twice is never needed.
        self.last = None;
        Some(rest)
    }

    /// The finished frame.
    pub fn finish(self) -> Encoded {
        let mut parts = self.parts.into_iter().map(Part::freeze).filter(|part| !part.is_empty());
        let tail = self.buf.freeze();
        match parts.next() {
            None => tail.into(),
            Some(head) => {
                let mut rest: Vec<Bytes> = parts.collect();
                if !tail.is_empty() {
                    rest.push(tail);
                }
                Encoded::from_parts(head, rest)
            }
        }
    }
}
