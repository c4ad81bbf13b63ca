//! [`Encoded`]: a frame ready to send, held as the parts it was built from.
//!
//! A large byte payload ([`crate::bytes::Bytes`] of at least [`SPLICE_MIN`] bytes) in an
//! argument, a return value or a stream item is not copied into the frame: the encoder ends the
//! part it was writing, takes a reference-counted handle to the payload as a part of its own, and
//! goes on in a new part. The byte-stream sender then writes the parts with one vectored write,
//! so a 1 MiB payload reaches the socket (or the shared-memory ring) straight from the caller's
//! buffer, without the copy into an encode buffer it used to cost per direction. Transports that
//! need a frame in one piece (`mem://`) join the parts, one copy, as encoding used to make.
//!
//! On the wire nothing changes: the parts, back to back, are byte for byte the frame a
//! contiguous encoder would have written.

use bytes::Bytes;

/// Byte payloads at least this long are parts of their own instead of being copied into the
/// frame. Shorter ones cost less to copy than a part costs to queue; the byte-stream sender
/// copies parts up to this size into its coalescing buffer anyway.
pub const SPLICE_MIN: usize = 16 * 1024;

/// An encoded frame: one or more parts that, sent back to back, are the frame.
///
/// Build one from a contiguous frame with `From<Bytes>` or `From<Vec<u8>>`; the engines' encoders
/// ([`encode_request`](super::encode_request), [`ResponsePayload`](super::ResponsePayload),
/// [`ItemsWriter`](super::ItemsWriter)) return frames whose large byte payloads are parts of
/// their own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Encoded {
    head: Bytes,
    /// The parts after `head`, in order; empty for a frame in one piece (no allocation).
    rest: Vec<Bytes>,
    len: usize,
}

impl Encoded {
    /// A frame of `head` followed by `rest`.
    #[inline]
    pub fn from_parts(head: Bytes, rest: Vec<Bytes>) -> Self {
        let len = head.len() + rest.iter().map(Bytes::len).sum::<usize>();
        Encoded { head, rest, len }
    }

    /// The frame's length in bytes (all parts).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the frame has no bytes at all.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The first part: the frame's kind and header are always in it.
    pub fn head(&self) -> &Bytes {
        &self.head
    }

    /// Every part, in order (the first is [`head`](Self::head)).
    pub fn parts(&self) -> impl Iterator<Item = &Bytes> {
        std::iter::once(&self.head).chain(&self.rest)
    }

    /// Every part, in order, by value.
    pub fn into_parts(self) -> impl Iterator<Item = Bytes> {
        std::iter::once(self.head).chain(self.rest)
    }

    /// How many parts the frame is in.
    pub fn part_count(&self) -> usize {
        1 + self.rest.len()
    }

    /// The frame in one piece: its only part as is, or the parts copied into one buffer.
    pub fn into_bytes(self) -> Bytes {
        if self.rest.is_empty() {
            return self.head;
        }
        self.to_vec().into()
    }

    /// A copy of the whole frame.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut whole = Vec::with_capacity(self.len);
        for part in self.parts() {
            whole.extend_from_slice(part);
        }
        whole
    }
}

impl From<Bytes> for Encoded {
    #[inline]
    fn from(frame: Bytes) -> Self {
        Encoded { len: frame.len(), head: frame, rest: Vec::new() }
    }
}

impl From<Vec<u8>> for Encoded {
    fn from(frame: Vec<u8>) -> Self {
        Bytes::from(frame).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_make_the_frame_in_order() {
        let frame = Encoded::from_parts(Bytes::from_static(b"ab"), vec![Bytes::from_static(b"cde"), Bytes::new()]);
        assert_eq!((frame.len(), frame.part_count(), frame.is_empty()), (5, 3, false));
        assert_eq!(frame.to_vec(), b"abcde");
        assert_eq!(&frame.clone().into_bytes()[..], b"abcde");
        let whole = Bytes::from_static(b"xyz");
        let one = Encoded::from(whole.clone());
        assert_eq!(one.into_bytes().as_ptr(), whole.as_ptr(), "one part is handed out as is");
        assert!(Encoded::from(Vec::new()).is_empty());
    }
}
