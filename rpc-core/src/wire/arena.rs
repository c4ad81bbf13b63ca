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
//! The encoder here also splices: a large [`crate::bytes::Bytes`] payload offered by its
//! `Serialize` impl ([`offer`]) becomes a part of the frame instead of being copied into the
//! buffer (see [`Encoded`]). Frames ([`frame`]) and stream item batches
//! ([`ItemsWriter`](super::ItemsWriter)) share the one serializer, [`serialize`], over a [`Sink`].

use std::cell::{Cell, RefCell};
use std::ops::{Deref, DerefMut};

use bytes::{BufMut, Bytes, BytesMut};
use postcard::ser_flavors::Flavor;
use serde::Serialize;

use super::encoded::{Encoded, SPLICE_MIN};

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

/// What [`serialize`] writes into: a buffer for the bytes it copies, and a place for the
/// payloads it takes as parts of their own.
pub(crate) trait Sink {
    /// Where the bytes being written go.
    fn bytes(&mut self) -> &mut BytesMut;

    /// Ends the part being written and makes `payload` the next part.
    fn splice(&mut self, payload: Bytes);
}

/// A frame being built: the bytes written so far (a `BytesMut` to write headers into, through
/// `Deref`) and the parts already finished.
pub(crate) struct Builder<'a> {
    buf: &'a mut BytesMut,
    /// The first part, once a payload was spliced in after it.
    head: Option<BytesMut>,
    rest: Vec<Bytes>,
    /// Bytes of spliced payloads (not written into `buf`).
    spliced: usize,
}

impl Sink for Builder<'_> {
    #[inline]
    fn bytes(&mut self) -> &mut BytesMut {
        self.buf
    }

    fn splice(&mut self, payload: Bytes) {
        let written = self.buf.split();
        match self.head {
            None => self.head = Some(written),
            Some(_) if !written.is_empty() => self.rest.push(written.freeze()),
            Some(_) => {}
        }
        self.spliced += payload.len();
        self.rest.push(payload);
    }
}

impl<'a> Builder<'a> {
    #[inline]
    fn new(buf: &'a mut BytesMut) -> Self {
        Builder { buf, head: None, rest: Vec::new(), spliced: 0 }
    }

    /// The frame, and how many of its bytes were written into the buffer (not spliced).
    #[inline]
    fn finish(self) -> (Built, usize) {
        let tail = self.buf.split();
        if self.head.is_none() {
            // Nothing spliced (nearly every frame): the frame is what was written.
            let written = tail.len();
            return (Built { head: tail, rest: Vec::new() }, written);
        }
        let written =
            tail.len() + self.head.as_ref().map_or(0, BytesMut::len) + self.rest.iter().map(Bytes::len).sum::<usize>()
                - self.spliced;
        let built = match self.head {
            None => Built { head: tail, rest: self.rest },
            Some(head) => {
                let mut rest = self.rest;
                if !tail.is_empty() {
                    rest.push(tail.freeze());
                }
                Built { head, rest }
            }
        };
        (built, written)
    }
}

impl Deref for Builder<'_> {
    type Target = BytesMut;

    fn deref(&self) -> &BytesMut {
        self.buf
    }
}

impl DerefMut for Builder<'_> {
    fn deref_mut(&mut self) -> &mut BytesMut {
        self.buf
    }
}

/// A built frame whose first part can still be written to (a response's header is filled in
/// once the call id is known).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Built {
    pub(crate) head: BytesMut,
    pub(crate) rest: Vec<Bytes>,
}

impl Built {
    /// The frame's length in bytes (all parts).
    pub(crate) fn len(&self) -> usize {
        self.head.len() + self.rest.iter().map(Bytes::len).sum::<usize>()
    }

    #[inline]
    pub(crate) fn freeze(self) -> Encoded {
        Encoded::from_parts(self.head.freeze(), self.rest)
    }
}

/// Builds one frame with `write` in this thread's buffer and splits it off.
pub(crate) fn frame<E>(write: impl FnOnce(&mut Builder<'_>) -> Result<(), E>) -> Result<Built, E> {
    let mut write = Some(write);
    let kept = ARENA.try_with(|arena| {
        // A `Serialize` impl that encodes a frame of its own while we encode (or a call from a
        // thread-local destructor) finds the buffer busy or gone, and uses a fresh one.
        let mut arena = arena.try_borrow_mut().ok()?;
        if arena.capacity() < CHUNK / 16 {
            arena.reserve(CHUNK);
        }
        let mut builder = Builder::new(&mut arena);
        let written = (write.take().expect("called once"))(&mut builder);
        let (frame, own_bytes) = builder.finish();
        if own_bytes > RETAIN_MAX {
            *arena = BytesMut::new();
        }
        Some(written.map(|()| frame))
    });
    match kept.ok().flatten() {
        Some(result) => result,
        None => {
            let mut fresh = BytesMut::new();
            let mut builder = Builder::new(&mut fresh);
            (write.take().expect("not called yet"))(&mut builder)?;
            Ok(builder.finish().0)
        }
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
        self.0.bytes().put_u8(byte);
        Ok(())
    }

    #[inline]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        if data.len() < SPLICE_MIN || !try_splice(self.0, data) {
            self.0.bytes().extend_from_slice(data);
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

    /// Bytes that serialize as one slice.
    struct Raw<'a>(&'a [u8]);

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
        let second = frame(|buf| serialize(&Raw(&big), buf)).unwrap().head;
        assert_eq!(second.as_ptr(), at, "the same memory, reclaimed");
        // While a frame lives, the next one gets other memory (nothing is overwritten).
        let third = frame(|buf| serialize(&Raw(&big[..10]), buf)).unwrap().head;
        assert_ne!(third.as_ptr(), second.as_ptr());
        assert_eq!(&second[3..], &big[..]);
    }

    #[test]
    fn small_frames_share_a_chunk_and_errors_leave_nothing_behind() {
        let a = frame(|buf| serialize(&1u8, buf)).unwrap().head;
        let failed: Result<Built, &str> = frame(|buf| {
            buf.put_slice(b"partial");
            Err("no")
        });
        assert_eq!(failed.unwrap_err(), "no");
        let b = frame(|buf| serialize(&2u8, buf)).unwrap().head;
        assert_eq!((&a[..], &b[..]), (&[1u8][..], &[2u8][..]));
        let gap = (b.as_ptr() as usize).wrapping_sub(a.as_ptr() as usize);
        assert!((1..=1 + 7).contains(&gap), "carved one after the other from one chunk: {gap}");
    }

    #[test]
    fn reentrant_encoding_uses_a_fresh_buffer() {
        struct Nested;
        impl Serialize for Nested {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let inner = frame(|buf| serialize(&5u8, buf)).unwrap().head;
                s.serialize_bytes(&inner)
            }
        }
        let outer = frame(|buf| serialize(&Nested, buf)).unwrap().head;
        assert_eq!(&outer[..], &[1, 5]);
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
            buf.put_slice(b"hd");
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
        let built = frame(|buf| serialize(&Elsewhere(&big), buf)).unwrap();
        assert_eq!((built.rest.len(), &built.head[..]), (0, &[1u8][..]));
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
        let built = frame(|buf| serialize(&Lookalike(&big, &copy), buf)).unwrap();
        assert_eq!((built.rest.len(), built.len()), (0, SPLICE_MIN * 2 + 3));
    }

    #[test]
    fn a_spliced_payload_does_not_count_against_the_kept_buffer() {
        let huge = crate::bytes::Bytes::from(vec![6u8; RETAIN_MAX + 1]);
        let first = frame(|buf| serialize(&huge, buf)).unwrap();
        assert_eq!((first.len(), first.rest.len()), (4 + RETAIN_MAX + 1, 1), "a 4-byte varint, then the payload");
        let at = first.head.as_ptr();
        drop(first);
        let next = frame(|buf| serialize(&1u8, buf)).unwrap().head;
        assert_eq!(next.as_ptr() as usize, at as usize + 4, "carved right after the length prefix: the arena was kept");
    }
}
