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
//! At the other end, a frame of at most [`INLINE_MAX`] bytes is held in place, in the `Encoded`
//! itself, with no buffer of its own: the byte-stream sender copies it into its coalescing buffer
//! as it copies every small frame, and a transport that needs `Bytes` has them carved then.
//!
//! On the wire nothing changes: the parts, back to back, are byte for byte the frame a
//! contiguous encoder would have written.

use bytes::Bytes;

/// Byte payloads at least this long are parts of their own instead of being copied into the
/// frame. Shorter ones cost less to copy than a part costs to queue; the byte-stream sender
/// copies parts up to this size into its coalescing buffer anyway.
pub const SPLICE_MIN: usize = 16 * 1024;

/// Frames of at most this many bytes (an `add(i64, i64)` request or its answer) are held in
/// place by [`Encoded`]: no buffer is carved for them and no reference count is taken and
/// dropped. A byte-stream sender copies them into its coalescing buffer as it would any small
/// frame; only a transport that needs a frame as [`Bytes`] (`mem://`) gets one made.
pub const INLINE_MAX: usize = 56;

/// An encoded frame: one or more parts that, sent back to back, are the frame.
///
/// Build one from a contiguous frame with `From<Bytes>` or `From<Vec<u8>>`; the engines' encoders
/// ([`encode_request`](super::encode_request), [`ResponsePayload`](super::ResponsePayload),
/// [`ItemsWriter`](super::ItemsWriter)) return frames whose large byte payloads are parts of
/// their own, and hold frames of at most [`INLINE_MAX`] bytes in place.
#[derive(Clone)]
pub struct Encoded {
    repr: Repr,
}

#[derive(Clone)]
enum Repr {
    /// A small frame, in one piece, held in place.
    Inline(Inline),
    Parts {
        head: Bytes,
        /// The parts after `head`, in order; empty for a frame in one piece (no allocation).
        rest: Vec<Bytes>,
        len: usize,
    },
}

/// The bytes of a frame of at most [`INLINE_MAX`] bytes, held in place.
///
/// Aligned, with the bytes first: an [`Encoded`] holding one (after its enum tag) then keeps the
/// bytes at an aligned offset, and every move of a call's request is a few aligned vector moves.
/// Unaligned, with the length first, the bytes sat one byte past the tag: 72 of the 254 vector
/// moves in `Client::unary` were at misaligned stack offsets (objdump); loads that straddle
/// earlier stores cannot take their data from the store buffer, our likely cost (this VM shows
/// no hardware counters to check it). The instructions barely changed (5,634 → 5,606 a call,
/// both sides of an `add` over unix:// at 64 in flight, callgrind), the time did: medians of ten
/// alternated `rpc-bench --reps 1 --pin --only shm,unix` runs each, shm at 1000 in flight
/// 1,655 → 1,956 k calls/s, at 64 in flight 2,042 → 2,225, unix at 64 in flight 1,367 → 1,512,
/// its `add` 7.18 → 6.47 µs.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
pub(crate) struct Inline {
    bytes: [u8; INLINE_MAX],
    len: u8,
}

const _: () = assert!(INLINE_MAX <= u8::MAX as usize);

impl Inline {
    pub(crate) const fn new() -> Self {
        Inline { len: 0, bytes: [0; INLINE_MAX] }
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.bytes[..usize::from(self.len)]
    }

    /// Appends `data` if it fits; `false`, with nothing written, if it does not.
    #[inline]
    pub(crate) fn push(&mut self, data: &[u8]) -> bool {
        let at = usize::from(self.len);
        match self.bytes.get_mut(at..at + data.len()) {
            Some(room) => {
                copy_short(room, data);
                // At most `INLINE_MAX`, which fits a `u8` (checked above).
                self.len = (at + data.len()) as u8;
                true
            }
            None => false,
        }
    }

    /// Appends one byte if it fits.
    #[inline]
    pub(crate) fn push_byte(&mut self, byte: u8) -> bool {
        match self.bytes.get_mut(usize::from(self.len)) {
            Some(slot) => {
                *slot = byte;
                self.len += 1;
                true
            }
            None => false,
        }
    }
}

/// `dst.copy_from_slice(src)` (same lengths) without a call to `memcpy` for the lengths of
/// varints and headers: two fixed-size copies that overlap in the middle. (`memcpy` for a
/// frame's handful of short writes cost ~80 instructions an `add` call, callgrind.)
#[inline]
fn copy_short(dst: &mut [u8], src: &[u8]) {
    let n = src.len();
    match n {
        0 => {}
        1..=3 => {
            dst[0] = src[0];
            dst[n / 2] = src[n / 2];
            dst[n - 1] = src[n - 1];
        }
        4..=7 => {
            dst[..4].copy_from_slice(&src[..4]);
            dst[n - 4..].copy_from_slice(&src[n - 4..]);
        }
        8..=16 => {
            dst[..8].copy_from_slice(&src[..8]);
            dst[n - 8..].copy_from_slice(&src[n - 8..]);
        }
        _ => dst.copy_from_slice(src),
    }
}

impl std::fmt::Debug for Inline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Inline").field(&self.as_slice()).finish()
    }
}

impl Encoded {
    /// A frame of `head` followed by `rest`.
    #[inline]
    pub fn from_parts(head: Bytes, rest: Vec<Bytes>) -> Self {
        let len = head.len() + rest.iter().map(Bytes::len).sum::<usize>();
        Encoded { repr: Repr::Parts { head, rest, len } }
    }

    /// A small frame held in place.
    #[inline]
    pub(crate) fn inline(frame: Inline) -> Self {
        Encoded { repr: Repr::Inline(frame) }
    }

    /// The frame's length in bytes (all parts).
    #[inline]
    pub fn len(&self) -> usize {
        match &self.repr {
            Repr::Inline(frame) => usize::from(frame.len),
            Repr::Parts { len, .. } => *len,
        }
    }

    /// Whether the frame has no bytes at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The first part: the frame's kind and header are always in it.
    pub fn head(&self) -> &[u8] {
        match &self.repr {
            Repr::Inline(frame) => frame.as_slice(),
            Repr::Parts { head, .. } => head,
        }
    }

    /// The parts after the first.
    pub(crate) fn rest(&self) -> &[Bytes] {
        match &self.repr {
            Repr::Inline(_) => &[],
            Repr::Parts { rest, .. } => rest,
        }
    }

    /// Every part, in order (the first is [`head`](Self::head)).
    pub fn parts(&self) -> impl Iterator<Item = &[u8]> {
        std::iter::once(self.head()).chain(self.rest().iter().map(|part| &part[..]))
    }

    /// Every part, in order, by value (a frame held in place becomes one [`Bytes`]).
    pub fn into_parts(self) -> impl Iterator<Item = Bytes> {
        let (head, rest) = match self.repr {
            Repr::Inline(frame) => (super::arena::carve(frame.as_slice()), Vec::new()),
            Repr::Parts { head, rest, .. } => (head, rest),
        };
        std::iter::once(head).chain(rest)
    }

    /// How many parts the frame is in.
    pub fn part_count(&self) -> usize {
        1 + self.rest().len()
    }

    /// The frame in one piece: its only part as is, or the parts copied into one buffer (a
    /// frame held in place is copied into a buffer shared with other small frames).
    pub fn into_bytes(self) -> Bytes {
        match self.repr {
            Repr::Inline(frame) => super::arena::carve(frame.as_slice()),
            Repr::Parts { head, rest, .. } if rest.is_empty() => head,
            Repr::Parts { .. } => self.to_vec().into(),
        }
    }

    /// A copy of the whole frame.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut whole = Vec::with_capacity(self.len());
        for part in self.parts() {
            whole.extend_from_slice(part);
        }
        whole
    }
}

/// The empty frame.
impl Default for Encoded {
    fn default() -> Self {
        Encoded::inline(Inline::new())
    }
}

/// Frames are equal when their bytes are, however they are held.
impl PartialEq for Encoded {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.parts().flatten().eq(other.parts().flatten())
    }
}

impl Eq for Encoded {}

impl std::fmt::Debug for Encoded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoded").field("len", &self.len()).field("parts", &self.part_count()).finish()
    }
}

impl From<Bytes> for Encoded {
    #[inline]
    fn from(frame: Bytes) -> Self {
        Encoded { repr: Repr::Parts { len: frame.len(), head: frame, rest: Vec::new() } }
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

    #[test]
    fn a_frame_held_in_place_is_the_same_frame() {
        let mut small = Inline::new();
        assert!(small.push(b"ab") && small.push_byte(b'c'));
        let frame = Encoded::inline(small);
        assert_eq!((frame.len(), frame.part_count(), frame.head()), (3, 1, &b"abc"[..]));
        assert_eq!(frame, Encoded::from(Bytes::from_static(b"abc")), "equal by their bytes");
        assert_ne!(frame, Encoded::from_parts(Bytes::from_static(b"ab"), vec![Bytes::from_static(b"d")]));
        assert_eq!(&frame.clone().into_bytes()[..], b"abc");
        assert_eq!(frame.into_parts().collect::<Vec<_>>(), vec![Bytes::from_static(b"abc")]);
        assert!(Encoded::default().is_empty());
    }

    #[test]
    fn short_copies_copy_every_byte() {
        for n in 0..=40 {
            let src: Vec<u8> = (1..=n as u8).collect();
            let mut dst = vec![0u8; n];
            copy_short(&mut dst, &src);
            assert_eq!(dst, src, "{n} bytes");
        }
    }

    #[test]
    fn a_frame_held_in_place_takes_at_most_its_room() {
        let mut full = Inline::new();
        assert!(full.push(&[1; INLINE_MAX - 1]));
        assert!(!full.push(&[2, 2]), "two bytes do not fit");
        assert!(full.push_byte(3));
        assert!(!full.push_byte(4) && !full.push(&[5]));
        assert!(full.push(&[]));
        assert_eq!(full.as_slice().len(), INLINE_MAX);
        assert_eq!(full.as_slice()[INLINE_MAX - 1], 3, "nothing of a refused write is kept");
    }
}
