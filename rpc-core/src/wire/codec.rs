//! Length-prefixed framing for byte-stream transports (TCP, local sockets, pipes, FIFOs).
//!
//! Each frame travels as a 4-byte little-endian length followed by that many bytes. The decoder
//! works like tokio-util's codecs: it returns `Ok(None)` until a whole frame is buffered, and it
//! rejects an announced length above the maximum *before* reserving anything, so a peer cannot
//! make us allocate what its prefix claims. While a frame is arriving, the buffer grows with the
//! bytes actually received: at most [`MAX_RESERVE_STEP`] ahead of them, or as many bytes as
//! have arrived, whichever is more. (Growing a large frame 64 KiB at a time copied it over and
//! over; growing it by what arrived keeps the copies to about one frame, and a peer still cannot
//! make us hold more than twice what it sent.)

use bytes::{Buf, Bytes, BytesMut};

/// Bytes of the length prefix.
pub const LENGTH_PREFIX_LEN: usize = 4;

/// The default maximum frame length: 32 MiB, so a 16 MiB argument fits with room to spare.
pub const DEFAULT_MAX_FRAME_LEN: usize = 32 * 1024 * 1024;

/// The most the decoder asks to reserve beyond what has arrived.
pub const MAX_RESERVE_STEP: usize = 64 * 1024;
/// The least [`LengthDelimited::reserve_hint`] asks for: room for the next read even when only
/// a few bytes are awaited (a prefix, the end of a small frame).
pub const MIN_RESERVE: usize = 4096;

/// A frame longer than the allowed maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("frame of {size} bytes exceeds the maximum of {max} bytes")]
pub struct FrameTooLarge {
    /// The frame's (announced) length.
    pub size: u64,
    /// The maximum.
    pub max: u64,
}

impl From<FrameTooLarge> for std::io::Error {
    fn from(err: FrameTooLarge) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidData, err)
    }
}

/// The length-prefix codec. Pure: it only looks at and splits buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LengthDelimited {
    max: usize,
}

impl Default for LengthDelimited {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME_LEN)
    }
}

impl LengthDelimited {
    /// A codec accepting frames of at most `max` bytes (capped at `u32::MAX`).
    pub fn new(max: usize) -> Self {
        Self { max: max.min(u32::MAX as usize) }
    }

    /// The maximum frame length.
    pub fn max_frame_len(&self) -> usize {
        self.max
    }

    /// Checks a frame of `len` bytes against the maximum and returns its length prefix.
    pub fn prefix(&self, len: usize) -> Result<[u8; LENGTH_PREFIX_LEN], FrameTooLarge> {
        if len > self.max {
            return Err(FrameTooLarge { size: len as u64, max: self.max as u64 });
        }
        Ok((len as u32).to_le_bytes())
    }

    /// Takes one whole frame off the front of `buf`, or returns `Ok(None)` if more bytes are needed.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Bytes>, FrameTooLarge> {
        let Some(len) = self.announced(buf)? else { return Ok(None) };
        if buf.len() < LENGTH_PREFIX_LEN + len {
            return Ok(None);
        }
        // The prefix is split off with the frame and skipped there: advancing a `Bytes` moves a
        // pointer, advancing the `BytesMut` re-encodes its offset (29 instructions of a call at 64
        // in flight over unix://, callgrind).
        let mut frame = buf.split_to(LENGTH_PREFIX_LEN + len).freeze();
        frame.advance(LENGTH_PREFIX_LEN);
        Ok(Some(frame))
    }

    /// How many bytes to reserve in `buf` before the next read: enough for the rest of the frame
    /// being received, but never more than [`MAX_RESERVE_STEP`] or the bytes already in `buf`,
    /// whichever is larger (the buffer then grows as bytes actually arrive, geometrically for a
    /// large frame), and never based on a length above the maximum.
    pub fn reserve_hint(&self, buf: &BytesMut) -> usize {
        let missing = match self.announced(buf) {
            Ok(Some(len)) => (LENGTH_PREFIX_LEN + len).saturating_sub(buf.len()),
            _ => LENGTH_PREFIX_LEN,
        };
        missing.clamp(MIN_RESERVE, MAX_RESERVE_STEP.max(buf.len()))
    }

    fn announced(&self, buf: &[u8]) -> Result<Option<usize>, FrameTooLarge> {
        let Some(prefix) = buf.get(..LENGTH_PREFIX_LEN) else { return Ok(None) };
        let len = u32::from_le_bytes(prefix.try_into().expect("4 bytes")) as usize;
        if len > self.max {
            return Err(FrameTooLarge { size: len as u64, max: self.max as u64 });
        }
        Ok(Some(len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn framed(codec: &LengthDelimited, frames: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for f in frames {
            out.extend_from_slice(&codec.prefix(f.len()).unwrap());
            out.extend_from_slice(f);
        }
        out
    }

    #[test]
    fn needs_more_bytes_then_yields_frame() {
        let codec = LengthDelimited::new(100);
        let bytes = framed(&codec, &[b"hello"]);
        let mut buf = BytesMut::new();
        for (i, b) in bytes.iter().enumerate() {
            assert_eq!(codec.decode(&mut buf).unwrap(), None, "after {i} bytes");
            buf.extend_from_slice(&[*b]);
        }
        assert_eq!(codec.decode(&mut buf).unwrap().as_deref(), Some(&b"hello"[..]));
        assert!(buf.is_empty());
    }

    #[test]
    fn empty_frame_is_a_frame() {
        let codec = LengthDelimited::new(100);
        let mut buf = BytesMut::from(&framed(&codec, &[b""])[..]);
        assert_eq!(codec.decode(&mut buf).unwrap().as_deref(), Some(&b""[..]));
    }

    #[test]
    fn oversized_prefix_is_rejected_before_any_allocation() {
        let codec = LengthDelimited::new(1024);
        let mut buf = BytesMut::from(&u32::MAX.to_le_bytes()[..]);
        let cap = buf.capacity();
        assert_eq!(codec.decode(&mut buf), Err(FrameTooLarge { size: u32::MAX as u64, max: 1024 }));
        assert_eq!(codec.reserve_hint(&buf), 4096);
        assert_eq!(buf.capacity(), cap);
    }

    #[test]
    fn frame_at_exactly_the_maximum_is_accepted() {
        let codec = LengthDelimited::new(8);
        let mut buf = BytesMut::from(&framed(&codec, &[b"12345678"])[..]);
        assert_eq!(codec.decode(&mut buf).unwrap().unwrap().len(), 8);
        assert!(codec.prefix(9).is_err());
    }

    #[test]
    fn reserve_hint_is_bounded_by_step() {
        let codec = LengthDelimited::new(DEFAULT_MAX_FRAME_LEN);
        let buf = BytesMut::from(&(16u32 * 1024 * 1024).to_le_bytes()[..]);
        assert_eq!(codec.reserve_hint(&buf), MAX_RESERVE_STEP);
        let mut small = BytesMut::from(&10u32.to_le_bytes()[..]);
        small.extend_from_slice(b"abc");
        assert_eq!(codec.reserve_hint(&small), 4096);
        // With 1 MiB of a 16 MiB frame in, up to as much again: growth by doubling, never more.
        let mut half = BytesMut::from(&(16u32 * 1024 * 1024).to_le_bytes()[..]);
        half.resize(1 << 20, 0);
        assert_eq!(codec.reserve_hint(&half), 1 << 20);
    }

    proptest! {
        #[test]
        fn round_trips_any_frames_split_anywhere(
            frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..8),
            cut in any::<prop::sample::Index>(),
        ) {
            let codec = LengthDelimited::new(300);
            let refs: Vec<&[u8]> = frames.iter().map(|f| &f[..]).collect();
            let bytes = framed(&codec, &refs);
            let cut = if bytes.is_empty() { 0 } else { cut.index(bytes.len()) };
            let mut buf = BytesMut::from(&bytes[..cut]);
            let mut out = Vec::new();
            while let Some(f) = codec.decode(&mut buf).unwrap() { out.push(f.to_vec()); }
            buf.extend_from_slice(&bytes[cut..]);
            while let Some(f) = codec.decode(&mut buf).unwrap() { out.push(f.to_vec()); }
            prop_assert_eq!(out, frames);
            prop_assert!(buf.is_empty());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let codec = LengthDelimited::new(256);
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = codec.decode(&mut buf) {}
            prop_assert!(codec.reserve_hint(&buf) <= MAX_RESERVE_STEP.max(buf.len()));
        }
    }
}
