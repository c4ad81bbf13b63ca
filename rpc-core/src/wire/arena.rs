//! Where frames are encoded: a buffer kept per thread, from which each frame is split off.
//!
//! Encoding every frame into a fresh `Vec` costs little for small frames, but a large one
//! (a 1 MiB payload) gets fresh memory from the allocator each time, which returns it to the
//! kernel when it is freed and takes it back, page fault by page fault, for the next: with a
//! 1 MiB echo, more than half the time went to page faults. Here a frame is split off a
//! [`BytesMut`] that stays with the thread; once the frame has been sent and dropped, the next
//! frame encoded on that thread reuses the same memory (`BytesMut` reclaims a buffer it holds
//! the only handle to). Small frames are carved from one shared chunk, so they cost no
//! allocation of their own either.
//!
//! The smallest frames (at most [`INLINE_MAX`](super::INLINE_MAX) bytes: an `add` call and its
//! answer) are not even carved. A frame is written in place first, into what becomes its
//! [`Encoded`], and moves to the buffer only if it outgrows that room (moved, not encoded again:
//! `Serialize` runs once). Taking the buffer, carving the frame off, freezing it and later
//! dropping its handle cost an `add` call over unix:// at 64 in flight ~400 of its 6,100
//! instructions (callgrind, `call-count`), two atomic operations a frame among them.
//!
//! The encoder here also splices: a large [`crate::bytes::Bytes`] payload offered by its
//! `Serialize` impl ([`offer`]) becomes a part of the frame instead of being copied into the
//! buffer (see [`Encoded`]). Frames ([`frame`]) and stream item batches
//! ([`ItemsWriter`](super::ItemsWriter)) share the one serializer, [`serialize`], over a [`Sink`].

use std::cell::{Cell, RefCell};

use bytes::{BufMut, Bytes, BytesMut};
use postcard::ser_flavors::Flavor;
use serde::Serialize;

use super::encoded::{Encoded, Inline, SPLICE_MIN};

/// Small frames are carved from chunks of at least this size.
const CHUNK: usize = 64 * 1024;
/// A buffer that held a frame larger than this is not kept for the next one: a thread that
/// sent one huge frame should not hold its memory forever.
const RETAIN_MAX: usize = 4 * 1024 * 1024;

thread_local! {
    static ARENA: RefCell<BytesMut> = RefCell::new(BytesMut::new());
    /// How many values [`serialize`] is encoding on this thread (more than one only when a
    /// `Serialize` impl encodes a frame of its own): payloads are offered for splicing only
    /// while one is.
    static BUILDING: Cell<u32> = const { Cell::new(0) };
    /// The payload [`offer`] was last given, until the encoder takes it or the next offer
    /// replaces it.
    static OFFERED: Cell<Option<Bytes>> = const { Cell::new(None) };
    /// Whether `OFFERED` may hold a payload (a plain flag: cheaper to read than `OFFERED`,
    /// which has a destructor, for the many values encoded without any large payload).
    static MAYBE_OFFERED: Cell<bool> = const { Cell::new(false) };
}

/// Called by [`crate::bytes::Bytes`]'s `Serialize` just before it hands its bytes to the
/// serializer: if [`serialize`] is running on this thread and the payload is long enough, the
/// encoder may take `payload` as a part of the frame instead of copying its bytes.
pub(crate) fn offer(payload: &Bytes) {
    if payload.len() >= SPLICE_MIN && BUILDING.try_with(Cell::get).unwrap_or(0) > 0 {
        let _ = OFFERED.try_with(|offered| offered.set(Some(payload.clone())));
        let _ = MAYBE_OFFERED.try_with(|maybe| maybe.set(true));
    }
}

/// Counts a value being encoded by [`serialize`] for as long as it lives (also when a
/// `Serialize` impl panics).
struct Building;

impl Building {
    fn start() -> Self {
        let _ = BUILDING.try_with(|n| n.set(n.get() + 1));
        Building
    }
}

impl Drop for Building {
    fn drop(&mut self) {
        let _ = BUILDING.try_with(|n| n.set(n.get() - 1));
        // An offer nobody took (a payload serialized by another format meanwhile) must not
        // keep the payload's memory alive.
        if MAYBE_OFFERED.try_with(|maybe| maybe.replace(false)).unwrap_or(true) {
            let _ = OFFERED.try_with(Cell::take);
        }
    }
}

/// What [`serialize`] writes into: bytes it copies, and a place for the payloads it takes as
/// parts of their own.
pub(crate) trait Sink {
    /// Appends `data` to the part being written.
    fn extend(&mut self, data: &[u8]);

    /// Appends one byte to the part being written.
    fn push(&mut self, byte: u8);

    /// Ends the part being written and makes `payload` the next part.
    fn splice(&mut self, payload: Bytes);
}

/// A frame being built: in place while it fits ([`Inline`]), then in this thread's buffer (the
/// bytes written so far) with the parts already finished.
pub(crate) struct Builder {
    /// The frame until it outgrows this room (or takes a payload as a part).
    inline: Inline,
    /// From then on: this thread's buffer, taken out of [`ARENA`] until [`finish`](Self::finish)
    /// puts it back (a frame encoded meanwhile, by a `Serialize` impl, finds it empty and uses
    /// fresh memory).
    buf: Option<BytesMut>,
    /// The first part, once a payload was spliced in after it.
    head: Option<BytesMut>,
    rest: Vec<Bytes>,
    /// Bytes of spliced payloads (not written into `buf`).
    spliced: usize,
}

impl Sink for Builder {
    #[inline]
    fn extend(&mut self, data: &[u8]) {
        match &mut self.buf {
            Some(buf) => buf.extend_from_slice(data),
            None if self.inline.push(data) => {}
            None => self.spill().extend_from_slice(data),
        }
    }

    #[inline]
    fn push(&mut self, byte: u8) {
        match &mut self.buf {
            Some(buf) => buf.put_u8(byte),
            None if self.inline.push_byte(byte) => {}
            None => self.spill().put_u8(byte),
        }
    }

    fn splice(&mut self, payload: Bytes) {
        let written = self.spill().split();
        match self.head {
            None => self.head = Some(written),
            Some(_) if !written.is_empty() => self.rest.push(written.freeze()),
            Some(_) => {}
        }
        self.spliced += payload.len();
        self.rest.push(payload);
    }
}

impl Builder {
    #[inline]
    fn new() -> Self {
        Builder { inline: Inline::new(), buf: None, head: None, rest: Vec::new(), spliced: 0 }
    }

    /// The buffer the frame goes on in: on the first call, this thread's, with what was written
    /// in place moved into it.
    fn spill(&mut self) -> &mut BytesMut {
        let inline = &self.inline;
        self.buf.get_or_insert_with(|| {
            let mut buf = take_arena();
            ready_for_small_frames(&mut buf);
            buf.extend_from_slice(inline.as_slice());
            buf
        })
    }

    /// The frame (also when writing it failed: then the caller drops it); the thread's buffer,
    /// if taken, goes back, unless the frame wrote more than [`RETAIN_MAX`] bytes into it.
    #[inline]
    fn finish(self) -> Built {
        let Some(mut buf) = self.buf else { return Built::Inline(self.inline) };
        let tail = buf.split();
        let built = match self.head {
            // Nothing spliced: the frame is what was written.
            None => Built::Parts { head: tail, rest: self.rest },
            Some(head) => {
                let mut rest = self.rest;
                if !tail.is_empty() {
                    rest.push(tail.freeze());
                }
                Built::Parts { head, rest }
            }
        };
        // What this frame wrote into the buffer (not what it spliced).
        let written = built.len() - self.spliced;
        if written <= RETAIN_MAX {
            let _ = ARENA.try_with(|arena| {
                if let Ok(mut arena) = arena.try_borrow_mut() {
                    *arena = buf;
                }
            });
        }
        built
    }
}

/// A built frame whose first part can still be written to (a response's header is filled in
/// once the call id is known). Equal to another when their bytes are, however they are held.
#[derive(Debug, Clone)]
pub(crate) enum Built {
    /// A small frame, held in place.
    Inline(Inline),
    Parts {
        head: BytesMut,
        rest: Vec<Bytes>,
    },
}

impl PartialEq for Built {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.bytes().eq(other.bytes())
    }
}

impl Eq for Built {}

impl Built {
    /// The frame's length in bytes (all parts).
    pub(crate) fn len(&self) -> usize {
        match self {
            Built::Inline(frame) => frame.as_slice().len(),
            Built::Parts { head, rest } => head.len() + rest.iter().map(Bytes::len).sum::<usize>(),
        }
    }

    /// The frame's bytes, in order.
    fn bytes(&self) -> impl Iterator<Item = &u8> {
        let (head, rest): (&[u8], &[Bytes]) = match self {
            Built::Inline(frame) => (frame.as_slice(), &[]),
            Built::Parts { head, rest } => (head, rest),
        };
        head.iter().chain(rest.iter().flat_map(|part| part.iter()))
    }

    /// The first part, to write a header into.
    pub(crate) fn head_mut(&mut self) -> &mut [u8] {
        match self {
            Built::Inline(frame) => frame.as_mut_slice(),
            Built::Parts { head, .. } => head,
        }
    }

    #[inline]
    pub(crate) fn freeze(self) -> Encoded {
        match self {
            Built::Inline(frame) => Encoded::inline(frame),
            Built::Parts { head, rest } => Encoded::from_parts(head.freeze(), rest),
        }
    }
}

/// This thread's buffer, taken out (an empty one if another frame has it, or in a thread-local
/// destructor).
fn take_arena() -> BytesMut {
    ARENA
        .try_with(|arena| arena.try_borrow_mut().map(|mut arena| std::mem::take(&mut *arena)).unwrap_or_default())
        .unwrap_or_default()
}

/// A `postcard::Error` (one byte) as wide as a word, for [`frame`]'s result: in a
/// `Result<Built, postcard::Error>` the error's byte overlaps the first byte of a frame held in
/// place, and the compiler then copies an `Ok` frame as that byte and 63 bytes from an odd
/// offset, each 16-byte move misaligned (44 of the 101 vector moves of the server's handler
/// future, objdump). A word-wide error keeps the frame's copies aligned. The engines map it
/// straight to their own errors; the public encoders convert it back to a `postcard::Error`
/// (the engines must not use those: the conversion puts the odd byte back, 24 misaligned moves
/// in `Client::unary` when it did).
#[repr(align(8))]
pub(crate) struct WideError(pub(crate) postcard::Error);

/// Builds one frame with `write`: in place if it fits, else in this thread's buffer, from which
/// it is split off.
pub(crate) fn frame<E>(write: impl FnOnce(&mut Builder) -> Result<(), E>) -> Result<Built, E> {
    let mut builder = Builder::new();
    let written = write(&mut builder);
    let built = builder.finish();
    written.map(|()| built)
}

/// `bytes` as [`Bytes`] carved from this thread's buffer (for a frame held in place that a
/// transport needs as `Bytes`): no allocation of its own, as if it had been encoded there.
pub(crate) fn carve(bytes: &[u8]) -> Bytes {
    // In the buffer where it is (a builder's take and put back cost ~240 instructions a frame
    // more over mem://, callgrind).
    let carved = ARENA.try_with(|arena| {
        let mut arena = arena.try_borrow_mut().ok()?;
        ready_for_small_frames(&mut arena);
        arena.extend_from_slice(bytes);
        Some(arena.split().freeze())
    });
    carved.ok().flatten().unwrap_or_else(|| Bytes::copy_from_slice(bytes))
}

/// Gives `buf` a chunk to carve small frames from when it has too little room left.
fn ready_for_small_frames(buf: &mut BytesMut) {
    if buf.capacity() < CHUNK / 16 {
        buf.reserve(CHUNK);
    }
}

/// Appends `value`'s postcard encoding to `sink`, large [`crate::bytes::Bytes`] payloads in it as
/// parts of their own.
pub(crate) fn serialize<T: Serialize + ?Sized, S: Sink>(value: &T, sink: &mut S) -> Result<(), postcard::Error> {
    let _building = Building::start();
    postcard::serialize_with_flavor(value, Append(sink))
}

/// Takes the offered payload as the next part of `sink` if `data` is that payload's bytes;
/// `false` (the bytes are to be copied) otherwise. Out of line: most values hold no large payload.
#[cold]
#[inline(never)]
fn try_splice<S: Sink>(sink: &mut S, data: &[u8]) -> bool {
    let Some(payload) = OFFERED.try_with(Cell::take).ok().flatten() else { return false };
    // Only the very bytes that were offered: then the part is exactly what the copy would have
    // been (the payload is immutable), whoever serialized it.
    let offered = payload.as_ptr() == data.as_ptr() && payload.len() == data.len();
    if offered {
        sink.splice(payload);
    }
    offered
}

/// A postcard flavor appending to a frame with slice copies (`BytesMut`'s `Extend<u8>` impl
/// would push byte by byte), which takes an offered payload as a part instead of copying it.
struct Append<'a, S>(&'a mut S);

impl<S: Sink> Flavor for Append<'_, S> {
    type Output = ();

    #[inline]
    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        self.0.push(byte);
        Ok(())
    }

    #[inline]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        if data.len() < SPLICE_MIN || !try_splice(self.0, data) {
            self.0.extend(data);
        }
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::INLINE_MAX;

    /// Bytes that serialize as one slice.
    struct Raw<'a>(&'a [u8]);

    /// A frame built in the buffer (too long to be held in place): its parts.
    fn parts(built: Built) -> (BytesMut, Vec<Bytes>) {
        match built {
            Built::Parts { head, rest } => (head, rest),
            Built::Inline(frame) => panic!("held in place: {frame:?}"),
        }
    }

    /// A frame of `len` bytes (a `Raw` of `len - 1` bytes, behind its one-byte length).
    fn sized(len: usize, byte: u8) -> Result<Built, postcard::Error> {
        frame(|buf| serialize(&Raw(&vec![byte; len - 1]), buf))
    }

    impl Serialize for Raw<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(self.0)
        }
    }

    #[test]
    fn a_dropped_large_frame_leaves_its_memory_for_the_next() {
        let big = vec![7u8; 1 << 20];
        let first = frame(|buf| serialize(&Raw(&big), buf)).unwrap().freeze();
        let at = first.head().as_ptr();
        assert_eq!((first.len(), first.part_count()), ((1 << 20) + 3, 1), "a varint length, then the bytes");
        drop(first);
        let second = parts(frame(|buf| serialize(&Raw(&big), buf)).unwrap()).0;
        assert_eq!(second.as_ptr(), at, "the same memory, reclaimed");
        // While a frame lives, the next one gets other memory (nothing is overwritten).
        let third = parts(frame(|buf| serialize(&Raw(&big[..100]), buf)).unwrap()).0;
        assert_ne!(third.as_ptr(), second.as_ptr());
        assert_eq!(&second[3..], &big[..]);
    }

    #[test]
    fn small_frames_share_a_chunk_and_errors_leave_nothing_behind() {
        let len = INLINE_MAX + 4;
        let a = parts(sized(len, 1).unwrap()).0;
        let failed: Result<Built, &str> = frame(|buf| {
            buf.extend(&[9; 2 * INLINE_MAX]);
            Err("no")
        });
        assert_eq!(failed.unwrap_err(), "no");
        let b = parts(sized(len, 2).unwrap()).0;
        assert_eq!((a[0], &a[1..]), (len as u8 - 1, &vec![1u8; len - 1][..]));
        assert_eq!((b[0], &b[1..]), (len as u8 - 1, &vec![2u8; len - 1][..]), "nothing of the failed frame");
        let gap = (b.as_ptr() as usize).wrapping_sub(a.as_ptr() as usize);
        assert!((len..=len + 2 * INLINE_MAX).contains(&gap), "carved one after the other from one chunk: {gap}");
    }

    #[test]
    fn a_frame_that_fits_is_held_in_place_and_one_that_does_not_moves_whole() {
        for len in [1, INLINE_MAX - 1, INLINE_MAX, INLINE_MAX + 1, 3 * INLINE_MAX] {
            let built = frame(|buf| {
                buf.push(7);
                buf.extend(&vec![8; len - 1]);
                Ok::<_, ()>(())
            })
            .unwrap();
            assert_eq!(matches!(built, Built::Inline(_)), len <= INLINE_MAX, "{len} bytes");
            let mut expected = vec![7u8];
            expected.resize(len, 8);
            assert_eq!(built.freeze().to_vec(), expected, "{len} bytes");
        }
        // A value whose last varint does not fit, and one that splices a payload after bytes
        // written in place: byte for byte the contiguous encoding, in the right parts.
        let value = (Raw(&[0; INLINE_MAX - 3]), u64::MAX);
        assert_eq!(frame(|buf| serialize(&value, buf)).unwrap().freeze().to_vec(), contiguous(&value));
        let big = crate::bytes::Bytes::from(vec![3u8; SPLICE_MIN]);
        let value = (1u8, big.clone(), 2u8);
        let built = frame(|buf| serialize(&value, buf)).unwrap().freeze();
        assert_eq!(built.to_vec(), contiguous(&value));
        assert_eq!(built.parts().nth(1).map(<[u8]>::as_ptr), Some(big.as_ptr()), "the payload, not a copy");
    }

    #[test]
    fn a_frame_held_in_place_that_a_transport_needs_whole_is_carved() {
        let small = frame(|buf| serialize(&5u32, buf)).unwrap().freeze();
        let (a, b) = (small.clone().into_bytes(), small.into_bytes());
        assert_eq!((&a[..], &b[..]), (&[5u8][..], &[5u8][..]));
        assert_eq!(b.as_ptr() as usize, a.as_ptr() as usize + 1, "carved one after the other");
    }

    #[test]
    fn reentrant_encoding_uses_a_fresh_buffer() {
        struct Nested;
        impl Serialize for Nested {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let inner = parts(sized(2 * INLINE_MAX, 5).unwrap()).0;
                s.serialize_bytes(&inner)
            }
        }
        let outer = parts(frame(|buf| serialize(&Nested, buf)).unwrap()).0;
        let mut expected = vec![2 * INLINE_MAX as u8, 2 * INLINE_MAX as u8 - 1];
        expected.resize(2 + 2 * INLINE_MAX - 1, 5);
        assert_eq!(&outer[..], &expected[..]);
    }

    /// What a contiguous encoder writes for `value`.
    fn contiguous<T: Serialize>(value: &T) -> Vec<u8> {
        postcard::to_allocvec(value).unwrap()
    }

    #[test]
    fn a_large_payload_is_a_part_of_its_own_and_the_parts_are_the_frame() {
        let big = crate::bytes::Bytes::from(vec![3u8; SPLICE_MIN]);
        let small = crate::bytes::Bytes::from(vec![4u8; SPLICE_MIN - 1]);
        let value = (1u32, big.clone(), small.clone(), 2u8, big.clone());
        let built = frame(|buf| {
            buf.extend(b"hd");
            serialize(&value, buf)
        })
        .unwrap()
        .freeze();
        let mut expected = b"hd".to_vec();
        expected.extend(contiguous(&value));
        assert_eq!(built.to_vec(), expected, "byte for byte the contiguous encoding");
        let parts: Vec<_> = built.parts().collect();
        // hd + 1 + big's length | big | small's length + small + 2 + big's length | big
        assert_eq!(parts.len(), 4, "{:?}", parts.iter().map(|p| p.len()).collect::<Vec<_>>());
        for spliced in [parts[1], parts[3]] {
            assert_eq!(spliced.as_ptr(), big.as_ptr(), "the payload itself, not a copy");
        }
        assert!(!parts[2].as_ptr_range().contains(&small.as_ptr()), "a short payload is copied");
    }

    #[test]
    fn payloads_are_offered_only_while_a_frame_is_built_and_never_outlive_it() {
        let big = crate::bytes::Bytes::from(vec![5u8; SPLICE_MIN * 2]);
        // Outside a frame: nothing is offered.
        assert_eq!(contiguous(&big).len(), SPLICE_MIN * 2 + 3);
        assert!(OFFERED.with(Cell::take).is_none());

        /// Serializes `0` with another encoder, then writes one byte of its own.
        struct Elsewhere<'a>(&'a crate::bytes::Bytes);
        impl Serialize for Elsewhere<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                assert_eq!(contiguous(self.0).len(), SPLICE_MIN * 2 + 3);
                assert!(MAYBE_OFFERED.with(Cell::get), "offered while a frame is built");
                s.serialize_u8(1)
            }
        }
        // Offered, not taken (another encoder wrote it), and gone with the frame: it must not
        // pin the payload's memory.
        let built = frame(|buf| serialize(&Elsewhere(&big), buf)).unwrap().freeze();
        assert_eq!((built.part_count(), built.to_vec()), (1, vec![1u8]));
        assert!(OFFERED.with(Cell::take).is_none());
        assert_eq!(BUILDING.with(Cell::get), 0);

        /// Offers `0`, then serializes the same bytes from another buffer.
        struct Lookalike<'a>(&'a crate::bytes::Bytes, &'a [u8]);
        impl Serialize for Lookalike<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                crate::wire::offer_splice(&self.0.clone().into_inner());
                s.serialize_bytes(self.1)
            }
        }
        // Only the very slice offered is spliced: the same bytes elsewhere are copied.
        let copy = vec![5u8; SPLICE_MIN * 2];
        let built = frame(|buf| serialize(&Lookalike(&big, &copy), buf)).unwrap().freeze();
        assert_eq!((built.part_count(), built.len()), (1, SPLICE_MIN * 2 + 3));
    }

    #[test]
    fn a_spliced_payload_does_not_count_against_the_kept_buffer() {
        let huge = crate::bytes::Bytes::from(vec![6u8; RETAIN_MAX + 1]);
        let (head, rest) = parts(frame(|buf| serialize(&huge, buf)).unwrap());
        assert_eq!((head.len(), rest.len()), (4, 1), "a 4-byte varint, then the payload");
        assert_eq!(rest[0].len(), RETAIN_MAX + 1);
        let at = head.as_ptr();
        drop((head, rest));
        let next = parts(sized(INLINE_MAX + 1, 1).unwrap()).0;
        assert_eq!(next.as_ptr() as usize, at as usize + 4, "carved right after the length prefix: the arena was kept");
    }
}
