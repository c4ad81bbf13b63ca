//! [`Bytes`]: a byte payload that, when decoded from a received frame, shares the frame's
//! buffer instead of copying out of it.
//!
//! A `Vec<u8>` or `serde_bytes::ByteBuf` argument is copied out of the frame it arrived in: for
//! a 1 MiB payload that is a 1 MiB allocation (and page faults) plus a 1 MiB copy on every
//! call. The engines decode every argument, return value and stream item inside
//! [`decoding_from`], which makes the received frame visible to [`Bytes`]'s `Deserialize`: a
//! payload found inside that frame becomes a reference-counted slice of it
//! ([`bytes::Bytes::slice_ref`]), so the only copy a received payload costs is the one the
//! transport made into its receive buffer.
//!
//! The price of sharing is that a payload keeps its frame's buffer alive for as long as it is
//! held. Payloads shorter than [`SHARE_MIN`] are therefore copied (a small allocation costs
//! less than sharing, and a few bytes kept for long should not pin a frame); to keep a small
//! part of a large payload for long, copy it (`Bytes::copy_from_slice`).
//!
//! Outside [`decoding_from`] (another serde format, a value decoded by hand), `Bytes`
//! deserializes by copying, as `bytes::Bytes` does.
//!
//! Sending is the mirror image: a payload of at least [`SPLICE_MIN`](crate::wire::SPLICE_MIN)
//! bytes in an argument, a return value or a stream item is not copied into its frame but sent
//! from its own buffer (see [`wire::Encoded`](crate::wire::Encoded)).

use std::borrow::Borrow;
use std::fmt;
use std::ops::{Deref, RangeBounds};

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

scoped_tls::scoped_thread_local!(static FRAME: bytes::Bytes);

/// Payloads at least this long share the frame they arrived in; shorter ones are copied.
pub const SHARE_MIN: usize = 256;

/// Runs `decode` with `frame` as the frame that [`Bytes`] values decoded meanwhile (on this
/// thread) may share. `decode` must only decode bytes taken from `frame` for sharing to happen;
/// bytes from elsewhere are copied, as outside this function.
pub fn decoding_from<R>(frame: &bytes::Bytes, decode: impl FnOnce() -> R) -> R {
    FRAME.set(frame, decode)
}

/// A cheaply cloneable, immutable byte payload that serializes as one byte string.
///
/// Use it for byte arguments, results and stream items: received ones share the frame they
/// arrived in (see the [module notes](self)), and large ones are sent from their own buffer,
/// not copied into the frame. It dereferences to `[u8]` and converts to and
/// from [`bytes::Bytes`] and `Vec<u8>` without copying.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bytes(bytes::Bytes);

impl Bytes {
    /// An empty payload.
    pub const fn new() -> Self {
        Bytes(bytes::Bytes::new())
    }

    /// A payload of static bytes (no allocation).
    pub const fn from_static(bytes: &'static [u8]) -> Self {
        Bytes(bytes::Bytes::from_static(bytes))
    }

    /// A payload holding a copy of `data`.
    pub fn copy_from_slice(data: &[u8]) -> Self {
        Bytes(bytes::Bytes::copy_from_slice(data))
    }

    /// The part of the payload in `range`, sharing its buffer.
    ///
    /// # Panics
    ///
    /// If `range` is out of bounds, as slicing a `[u8]` would.
    pub fn slice(&self, range: impl RangeBounds<usize>) -> Self {
        Bytes(self.0.slice(range))
    }

    /// The payload as a [`bytes::Bytes`] (no copy).
    pub fn into_inner(self) -> bytes::Bytes {
        self.0
    }
}

impl Deref for Bytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<[u8]> for Bytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Borrow<[u8]> for Bytes {
    fn borrow(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl From<bytes::Bytes> for Bytes {
    fn from(bytes: bytes::Bytes) -> Self {
        Bytes(bytes)
    }
}

impl From<Bytes> for bytes::Bytes {
    fn from(bytes: Bytes) -> Self {
        bytes.0
    }
}

impl From<Vec<u8>> for Bytes {
    fn from(vec: Vec<u8>) -> Self {
        Bytes(vec.into())
    }
}

impl From<Box<[u8]>> for Bytes {
    fn from(slice: Box<[u8]>) -> Self {
        Bytes(slice.into())
    }
}

impl From<String> for Bytes {
    fn from(string: String) -> Self {
        Bytes(string.into())
    }
}

impl From<&'static [u8]> for Bytes {
    fn from(slice: &'static [u8]) -> Self {
        Bytes::from_static(slice)
    }
}

impl From<&'static str> for Bytes {
    fn from(str: &'static str) -> Self {
        Bytes::from_static(str.as_bytes())
    }
}

impl From<Bytes> for Vec<u8> {
    fn from(bytes: Bytes) -> Self {
        bytes.0.into()
    }
}

impl PartialEq<[u8]> for Bytes {
    fn eq(&self, other: &[u8]) -> bool {
        *self.0 == *other
    }
}

impl PartialEq<&[u8]> for Bytes {
    fn eq(&self, other: &&[u8]) -> bool {
        *self.0 == **other
    }
}

impl PartialEq<Vec<u8>> for Bytes {
    fn eq(&self, other: &Vec<u8>) -> bool {
        *self.0 == **other
    }
}

impl<const N: usize> PartialEq<[u8; N]> for Bytes {
    fn eq(&self, other: &[u8; N]) -> bool {
        *self.0 == *other
    }
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Inside the engines' encoder, a large payload becomes a part of the frame instead of
        // being copied into it (`wire::Encoded`); elsewhere this does nothing.
        crate::wire::offer_splice(&self.0);
        serializer.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_bytes(BytesVisitor)
    }
}

/// A slice of the frame being decoded that is `data`, if `data` lies inside it and is long
/// enough to be worth sharing.
fn shared(data: &[u8]) -> Option<bytes::Bytes> {
    if data.len() < SHARE_MIN || !FRAME.is_set() {
        return None;
    }
    FRAME.with(|frame| {
        let inside = frame.as_ptr_range();
        let part = data.as_ptr_range();
        // `slice_ref` panics on a slice from elsewhere: check first (a deserializer may hand out
        // bytes from its own scratch buffer).
        (inside.start <= part.start && part.end <= inside.end).then(|| frame.slice_ref(data))
    })
}

struct BytesVisitor;

impl<'de> Visitor<'de> for BytesVisitor {
    type Value = Bytes;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a byte string")
    }

    fn visit_borrowed_bytes<E: de::Error>(self, data: &'de [u8]) -> Result<Bytes, E> {
        Ok(Bytes(shared(data).unwrap_or_else(|| bytes::Bytes::copy_from_slice(data))))
    }

    fn visit_bytes<E: de::Error>(self, data: &[u8]) -> Result<Bytes, E> {
        Ok(Bytes::copy_from_slice(data))
    }

    fn visit_byte_buf<E: de::Error>(self, data: Vec<u8>) -> Result<Bytes, E> {
        Ok(Bytes::from(data))
    }

    fn visit_str<E: de::Error>(self, data: &str) -> Result<Bytes, E> {
        Ok(Bytes::copy_from_slice(data.as_bytes()))
    }

    /// Formats without byte strings (JSON, say) write a sequence of numbers.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Bytes, A::Error> {
        // The hint comes from the input: cap what it may make us allocate up front.
        let mut data = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(byte) = seq.next_element::<u8>()? {
            data.push(byte);
        }
        Ok(Bytes::from(data))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(value: &impl Serialize) -> bytes::Bytes {
        postcard::to_allocvec(value).unwrap().into()
    }

    #[test]
    fn a_payload_decoded_from_its_frame_shares_it() {
        let payload = vec![7u8; 4096];
        let frame = encoded(&(1u32, Bytes::from(payload.clone()), 2u32));
        let (a, data, b): (u32, Bytes, u32) = decoding_from(&frame, || crate::wire::decode_value(&frame)).unwrap();
        assert_eq!((a, b), (1, 2));
        assert_eq!(data, payload);
        let inside = frame.as_ptr_range();
        assert!(inside.contains(&data.as_ptr()), "the payload was copied out of the frame");
    }

    #[test]
    fn a_payload_is_copied_when_short_or_outside_a_frame() {
        let short = encoded(&Bytes::from(vec![1u8; SHARE_MIN - 1]));
        let data: Bytes = decoding_from(&short, || crate::wire::decode_value(&short)).unwrap();
        assert_eq!(data.len(), SHARE_MIN - 1);
        assert!(!short.as_ptr_range().contains(&data.as_ptr()));

        let long = encoded(&Bytes::from(vec![2u8; 1000]));
        let data: Bytes = crate::wire::decode_value(&long).unwrap();
        assert_eq!(data, vec![2u8; 1000]);
        assert!(!long.as_ptr_range().contains(&data.as_ptr()), "decoded with no frame in scope");

        // Bytes of another buffer while a frame is in scope: copied, not a panic.
        let other = long.to_vec();
        let data: Bytes = decoding_from(&short, || crate::wire::decode_value(&other)).unwrap();
        assert_eq!(data, vec![2u8; 1000]);
    }

    #[test]
    fn bytes_serialize_as_one_byte_string() {
        // Length, then the bytes: what `serde_bytes` and `bytes::Bytes` write, so a peer may
        // use either.
        let data = vec![1u8, 2, 3];
        assert_eq!(&encoded(&Bytes::from(data.clone()))[..], [3, 1, 2, 3]);
        // A format without byte strings still round-trips (through a sequence of numbers).
        let seq = serde::de::value::SeqDeserializer::<_, serde::de::value::Error>::new(data.iter().copied());
        assert_eq!(seq.deserialize_seq(BytesVisitor).unwrap(), data);
    }
}
