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

use std::cell::RefCell;

use bytes::{BufMut, BytesMut};
use postcard::ser_flavors::Flavor;
use serde::Serialize;

/// Small frames are carved from chunks of at least this size.
const CHUNK: usize = 64 * 1024;
/// A buffer that held a frame larger than this is not kept for the next one: a thread that
/// sent one huge frame should not hold its memory forever.
const RETAIN_MAX: usize = 4 * 1024 * 1024;

thread_local! {
    static ARENA: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

/// Builds one frame with `write` in this thread's buffer and splits it off.
pub(crate) fn frame<E>(write: impl FnOnce(&mut BytesMut) -> Result<(), E>) -> Result<BytesMut, E> {
    let mut write = Some(write);
    let kept = ARENA.try_with(|arena| {
        // A `Serialize` impl that encodes a frame of its own while we encode (or a call from a
        // thread-local destructor) finds the buffer busy or gone, and uses a fresh one.
        let mut arena = arena.try_borrow_mut().ok()?;
        if arena.capacity() < CHUNK / 16 {
            arena.reserve(CHUNK);
        }
        let written = (write.take().expect("called once"))(&mut arena);
        let frame = arena.split();
        if frame.len() > RETAIN_MAX {
            *arena = BytesMut::new();
        }
        Some(written.map(|()| frame))
    });
    match kept.ok().flatten() {
        Some(result) => result,
        None => {
            let mut fresh = BytesMut::new();
            (write.take().expect("not called yet"))(&mut fresh)?;
            Ok(fresh)
        }
    }
}

/// Appends `value`'s postcard encoding to `buf`.
pub(crate) fn serialize<T: Serialize + ?Sized>(value: &T, buf: &mut BytesMut) -> Result<(), postcard::Error> {
    postcard::serialize_with_flavor(value, Append(buf))
}

/// A postcard flavor appending to a [`BytesMut`] with slice copies (its `Extend<u8>` impl would
/// push byte by byte).
struct Append<'a>(&'a mut BytesMut);

impl Flavor for Append<'_> {
    type Output = ();

    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        self.0.put_u8(byte);
        Ok(())
    }

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
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
        let at = first.as_ptr();
        assert_eq!(first.len(), (1 << 20) + 3, "a varint length, then the bytes");
        drop(first);
        let second = frame(|buf| serialize(&Raw(&big), buf)).unwrap();
        assert_eq!(second.as_ptr(), at, "the same memory, reclaimed");
        // While a frame lives, the next one gets other memory (nothing is overwritten).
        let third = frame(|buf| serialize(&Raw(&big[..10]), buf)).unwrap();
        assert_ne!(third.as_ptr(), second.as_ptr());
        assert_eq!(&second[3..], &big[..]);
    }

    #[test]
    fn small_frames_share_a_chunk_and_errors_leave_nothing_behind() {
        let a = frame(|buf| serialize(&1u8, buf)).unwrap();
        let failed: Result<BytesMut, &str> = frame(|buf| {
            buf.put_slice(b"partial");
            Err("no")
        });
        assert_eq!(failed.unwrap_err(), "no");
        let b = frame(|buf| serialize(&2u8, buf)).unwrap();
        assert_eq!((&a[..], &b[..]), (&[1u8][..], &[2u8][..]));
        let gap = (b.as_ptr() as usize).wrapping_sub(a.as_ptr() as usize);
        assert!((1..=1 + 7).contains(&gap), "carved one after the other from one chunk: {gap}");
    }

    #[test]
    fn reentrant_encoding_uses_a_fresh_buffer() {
        struct Nested;
        impl Serialize for Nested {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let inner = frame(|buf| serialize(&5u8, buf)).unwrap();
                s.serialize_bytes(&inner)
            }
        }
        let outer = frame(|buf| serialize(&Nested, buf)).unwrap();
        assert_eq!(&outer[..], &[1, 5]);
    }
}
