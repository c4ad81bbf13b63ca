//! One single-producer/single-consumer byte ring in a [`Region`]: the index math, the checks on
//! what the peer stored, and the waiting flags. No unsafe code, no I/O.
//!
//! Indices are free-running `u64` stream positions (they never wrap in practice: 2^64 bytes), so
//! `head - tail` is the number of bytes in the ring and `index % ring_len` is where a byte lives.
//! Each side keeps its own index privately and only *stores* it to the mapping; it never reads
//! its own index back, so the peer cannot move it. The peer's index is loaded once per use and
//! checked (`head - tail` must be within `0..=ring_len` in wrapping arithmetic) before anything
//! depends on it; a bad value is a [`corrupt`] error for this connection.
//!
//! Sleeping without losing a wake-up (both sides use `SeqCst`): a side about to sleep stores its
//! waiting flag, then re-reads the peer's index; a side that moved its index stores it, then
//! swaps the peer's waiting flag to 0 and rings the bell if it was set. Whichever order the two
//! happen in, either the sleeper sees the new index or the mover sees the flag.
//!
//! Two changes to this protocol were built, measured and left out (2026-12-08; `rpc-bench
//! --alternate` of this code, `--pin --only shm`, medians of the pairs whose runs were both in
//! the VM's fast mode; the code is on the branches `experiment-mailbox` and
//! `experiment-fences`):
//! - A copy of each publish of up to 48 bytes beside `head`, in its cache line (a seqlock), so
//!   that a reader takes a small frame with the one transfer that brings it the new head, not a
//!   second one for the data. `add` 0.681 → 0.666 µs (5 of 8 pairs), the ring alone 0.350 →
//!   0.340 (6 of 8), 1000 calls in flight 2514 → 2446 k calls/s (2 of 8): the data line was not
//!   what a round trip waits for.
//! - Plain release stores of `head` and `tail` (no `SeqCst` fence on every publish and read),
//!   with `membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)` on the sleeping side instead (the
//!   asymmetric form of the same handshake). No figure moved (`add` 0.671 → 0.671 µs, 1000 in
//!   flight 2536 → 2536 k calls/s, 6 pairs) but 4 × 64 in flight, 2286 → 2147 (0 of 6),
//!   presumably because sides sleep more often there and each sleep paid the barrier's
//!   interrupts.
//!
//! What a round trip costs here is instructions (the engines' and the frame driver's), not
//! cache-line transfers or fences.

use std::io;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};
use std::sync::Arc;

use tokio::io::ReadBuf;

use super::region::{Control, Direction, Region, SlabMap, REFS};

/// The most bytes either side copies before it publishes them (the writer) or frees their
/// room (the reader). A frame larger than this crosses in steps, so the writer fills one part of
/// the ring while the reader empties another, each on its own core, instead of each waiting for
/// the other's whole copy; a frame smaller than this crosses in one step, as before.
pub(crate) const STEP: usize = 32 * 1024;

/// Bytes in a ring whose writer is at `head` and reader at `tail`, or `None` if the two
/// cannot both be right.
pub(crate) fn used(head: u64, tail: u64, ring_len: usize) -> Option<usize> {
    let used = head.wrapping_sub(tail);
    (used <= ring_len as u64).then_some(used as usize)
}

/// Where `len <= ring_len` bytes starting at stream index `at` lie: the offset, the length up
/// to the end of the ring, and the length that wraps to offset 0.
pub(crate) fn spans(at: u64, len: usize, ring_len: usize) -> (usize, usize, usize) {
    debug_assert!(ring_len.is_power_of_two() && len <= ring_len);
    let offset = (at & (ring_len as u64 - 1)) as usize;
    let first = len.min(ring_len - offset);
    (offset, first, len - first)
}

/// The error for indices the peer stored that cannot be right.
pub(crate) fn corrupt(head: u64, tail: u64, ring_len: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("the peer corrupted the shared ring (head {head}, tail {tail}, ring size {ring_len})"),
    )
}

/// The writing end of one ring.
#[derive(Debug)]
pub(crate) struct Writer {
    region: Arc<Region>,
    ring: Direction,
    /// Published position.
    head: u64,
    /// Bytes copied in after `head` but not published yet.
    staged: usize,
    /// The reader's tail as last loaded. Room computed from it is never more than the real
    /// room (the tail only moves forward), so it is reloaded only when it shows none: the
    /// reader's line is then not pulled across cores on every write.
    tail_seen: u64,
}

impl Writer {
    pub(crate) fn new(region: Arc<Region>, ring: Direction) -> Self {
        Writer { region, ring, head: 0, staged: 0, tail_seen: 0 }
    }

    fn control(&self) -> &Control {
        self.region.control(self.ring)
    }

    /// Bytes that can be staged now (at least; more may have been freed since the last load).
    pub(crate) fn free(&mut self) -> io::Result<usize> {
        match self.free_with(self.tail_seen)? {
            0 => {
                self.tail_seen = self.control().tail.0.load(Acquire);
                self.free_with(self.tail_seen)
            }
            free => Ok(free),
        }
    }

    /// Like [`free`](Self::free), always loading the tail, ordered after a store of the
    /// writer's waiting flag.
    pub(crate) fn free_after_flag(&mut self) -> io::Result<usize> {
        self.tail_seen = self.control().tail.0.load(SeqCst);
        self.free_with(self.tail_seen)
    }

    fn free_with(&self, tail: u64) -> io::Result<usize> {
        let len = self.region.ring_len();
        let end = self.head + self.staged as u64;
        // `used` counts published bytes only; staged ones take room too.
        match used(self.head, tail, len).and_then(|used| len.checked_sub(used + self.staged)) {
            Some(free) => Ok(free),
            None => Err(corrupt(end, tail, len)),
        }
    }

    /// Copies `src` after the staged bytes. The caller checked it fits ([`free`](Self::free)).
    pub(crate) fn stage(&mut self, src: &[u8]) {
        let len = self.region.ring_len();
        let (offset, first, rest) = spans(self.head + self.staged as u64, src.len(), len);
        self.region.write(self.ring, offset, &src[..first]);
        // Only a copy that crosses the ring's end has a second part (an empty copy is still a
        // call into `memcpy`, on every frame).
        if rest > 0 {
            self.region.write(self.ring, 0, &src[first..first + rest]);
        }
        self.staged += src.len();
    }

    /// Stages a reference instead of bytes: the next stream byte (staged here, its value
    /// unused) stands for `len` bytes of our slab at `offset`. `seq` is the reference's number,
    /// whose slot the caller knows the reader is done with; it needs one byte of room. The slot
    /// is filled before the byte is published, so a reader that sees the byte sees the slot.
    pub(crate) fn stage_ref(&mut self, seq: u64, offset: usize, len: usize) {
        let control = self.region.control(self.ring);
        let slot = &control.refs[(seq % REFS as u64) as usize];
        slot.at.store(self.head + self.staged as u64, Relaxed);
        slot.offset.store(offset as u64, Relaxed);
        slot.len.store(len as u64, Relaxed);
        control.refs_head.0.store(seq + 1, Release);
        self.stage(&[0]);
    }

    /// Makes the staged bytes visible to the reader; true if the reader was asleep and must be
    /// woken (its flag is cleared: one bell per sleep).
    pub(crate) fn publish(&mut self) -> bool {
        if self.staged == 0 {
            return false;
        }
        self.head += self.staged as u64;
        self.staged = 0;
        self.control().head.0.store(self.head, SeqCst);
        take_flag(&self.control().reader_waiting.0)
    }

    /// Tells the reader no more bytes follow; true if it must be woken.
    pub(crate) fn close(&mut self) -> bool {
        self.control().closed.0.store(1, SeqCst);
        take_flag(&self.control().reader_waiting.0)
    }

    /// Says whether this writer is about to sleep until the reader makes room.
    pub(crate) fn set_waiting(&self, waiting: bool) {
        self.control().writer_waiting.0.store(u32::from(waiting), SeqCst);
    }
}

/// The reading end of one ring.
#[derive(Debug)]
pub(crate) struct Reader {
    region: Arc<Region>,
    ring: Direction,
    tail: u64,
    /// The writer's slab and where we are in its references, if it has one.
    refs: Option<Refs>,
}

/// A reader's side of the writer's slab references.
#[derive(Debug)]
struct Refs {
    slab: SlabMap,
    /// References copied out (and acknowledged).
    consumed: u64,
    /// Reference number `consumed`, once loaded and checked.
    next: Option<Ref>,
    /// Bytes of `next` copied out so far (a reference larger than the room of one read is
    /// copied over several).
    done: usize,
}

/// One reference, checked: `len` bytes of the slab at `offset` stand for the stream byte `at`.
#[derive(Debug, Clone, Copy)]
struct Ref {
    at: u64,
    offset: usize,
    len: usize,
}

impl Refs {
    /// The next reference, loading it if it is stored; an error if what the writer stored
    /// cannot be right. Every reference whose byte is published is stored (`stage_ref`), so
    /// after a load of the ring's head this finds any that the bytes up to it contain.
    fn next(&mut self, control: &Control, tail: u64) -> io::Result<Option<Ref>> {
        if self.next.is_some() {
            return Ok(self.next);
        }
        let head = control.refs_head.0.load(Acquire);
        let pending = head.wrapping_sub(self.consumed);
        if pending == 0 {
            return Ok(None);
        }
        let slot = &control.refs[(self.consumed % REFS as u64) as usize];
        let (at, offset, len) = (slot.at.load(Relaxed), slot.offset.load(Relaxed), slot.len.load(Relaxed));
        let slab = self.slab.len() as u64;
        if pending > REFS as u64 || at < tail || len == 0 || offset > slab || len > slab - offset {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the peer corrupted the shared ring's references (reference {} of {head}: at {at}, read up to \
                     {tail}, {len} bytes at {offset} of a {slab}-byte slab)",
                    self.consumed
                ),
            ));
        }
        self.next = Some(Ref { at, offset: offset as usize, len: len as usize });
        Ok(self.next)
    }
}

impl Reader {
    pub(crate) fn new(region: Arc<Region>, ring: Direction) -> Self {
        Reader { region, ring, tail: 0, refs: None }
    }

    /// A reader of a ring whose writer may send references to its `slab`.
    pub(crate) fn with_slab(mut self, slab: SlabMap) -> Self {
        self.refs = Some(Refs { slab, consumed: 0, next: None, done: 0 });
        self
    }

    fn control(&self) -> &Control {
        self.region.control(self.ring)
    }

    /// Bytes published and not consumed yet.
    pub(crate) fn available(&self) -> io::Result<usize> {
        self.available_with(self.control().head.0.load(Acquire))
    }

    /// Like [`available`](Self::available), ordered after a store of the reader's waiting flag.
    pub(crate) fn available_after_flag(&self) -> io::Result<usize> {
        self.available_with(self.control().head.0.load(SeqCst))
    }

    fn available_with(&self, head: u64) -> io::Result<usize> {
        let len = self.region.ring_len();
        used(head, self.tail, len).ok_or_else(|| corrupt(head, self.tail, len))
    }

    /// Whether the writer said it will write no more. Check it *before*
    /// [`available`](Self::available): bytes published before the flag are then visible.
    pub(crate) fn writer_closed(&self) -> bool {
        self.control().closed.0.load(Acquire) != 0
    }

    /// Like [`writer_closed`](Self::writer_closed), ordered after a store of the reader's
    /// waiting flag (the writer stores `closed`, then reads the flag: both `SeqCst`, or each
    /// could miss the other).
    pub(crate) fn writer_closed_after_flag(&self) -> bool {
        self.control().closed.0.load(SeqCst) != 0
    }

    /// Moves as many available bytes to `buf` as it has room for, up to `max`, and frees their
    /// space; returns how many moved and whether the writer was asleep waiting for room (its
    /// flag is cleared).
    pub(crate) fn read_into(&mut self, buf: &mut ReadBuf<'_>, max: usize) -> io::Result<(usize, bool)> {
        if self.refs.is_some() {
            return self.read_with_refs(buf, max);
        }
        let n = self.available()?.min(buf.remaining()).min(max);
        if n == 0 {
            return Ok((0, false));
        }
        let len = self.region.ring_len();
        let (offset, first, rest) = spans(self.tail, n, len);
        self.region.read_into(self.ring, offset, first, buf);
        if rest > 0 {
            self.region.read_into(self.ring, 0, rest, buf);
        }
        self.tail += n as u64;
        self.control().tail.0.store(self.tail, SeqCst);
        Ok((n, take_flag(&self.control().writer_waiting.0)))
    }

    /// [`read_into`](Self::read_into) for a ring whose bytes may stand for slab references:
    /// the bytes in front of the next reference's byte come from the ring, that byte is
    /// replaced by the slab's bytes (copied out, then acknowledged so the writer may reuse
    /// them), and so on. `max` and the room in `buf` count the bytes delivered.
    fn read_with_refs(&mut self, buf: &mut ReadBuf<'_>, max: usize) -> io::Result<(usize, bool)> {
        let mut left = self.available()?;
        let mut room = buf.remaining().min(max);
        let (start, mut moved, mut acked) = (self.tail, 0, false);
        let len = self.region.ring_len();
        let control = self.region.control(self.ring);
        let refs = self.refs.as_mut().expect("checked by read_into");
        while room > 0 && left > 0 {
            let next = refs.next(control, self.tail)?;
            let gap = next.map_or(left as u64, |r| r.at - self.tail).min(left as u64) as usize;
            if gap == 0 {
                // The reference's byte is published (`left > 0`): copy its bytes instead.
                let r = next.expect("a gap of 0 is a reference");
                let n = (r.len - refs.done).min(room);
                refs.slab.read_into(r.offset + refs.done, n, buf);
                (refs.done, moved, room) = (refs.done + n, moved + n, room - n);
                if refs.done == r.len {
                    (refs.done, refs.next, refs.consumed, acked) = (0, None, refs.consumed + 1, true);
                    self.tail += 1;
                    left -= 1;
                }
                continue;
            }
            let n = gap.min(room);
            let (offset, first, rest) = spans(self.tail, n, len);
            self.region.read_into(self.ring, offset, first, buf);
            if rest > 0 {
                self.region.read_into(self.ring, 0, rest, buf);
            }
            (self.tail, moved, room, left) = (self.tail + n as u64, moved + n, room - n, left - n);
        }
        if acked {
            // After the copies: the writer reuses the blocks once it loads this.
            control.refs_tail.0.store(refs.consumed, Release);
        }
        if self.tail == start {
            return Ok((moved, false));
        }
        control.tail.0.store(self.tail, SeqCst);
        Ok((moved, take_flag(&control.writer_waiting.0)))
    }

    /// Says whether this reader is about to sleep until bytes arrive.
    pub(crate) fn set_waiting(&self, waiting: bool) {
        self.control().reader_waiting.0.store(u32::from(waiting), SeqCst);
    }
}

/// Clears a waiting flag; true if it was set. The plain load first keeps the common case (the
/// peer is awake) free of a write to the shared line. Values other than 0 and 1 from a hostile
/// peer are harmless: they read as "asleep" and cost one extra bell.
fn take_flag(flag: &std::sync::atomic::AtomicU32) -> bool {
    flag.load(SeqCst) != 0 && flag.swap(0, SeqCst) != 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shm::region::MIN_RING_LEN;
    use proptest::prelude::*;

    /// Reads up to `max` bytes (at most two rings' worth) onto the end of `out`.
    fn read(r: &mut Reader, out: &mut Vec<u8>, max: usize) -> io::Result<(usize, bool)> {
        read_step(r, out, max, usize::MAX)
    }

    /// Like [`read`], taking at most `step` bytes however much room there is.
    fn read_step(r: &mut Reader, out: &mut Vec<u8>, max: usize, step: usize) -> io::Result<(usize, bool)> {
        let mut space = vec![0u8; max.min(2 * MIN_RING_LEN)];
        let mut buf = ReadBuf::new(&mut space);
        let read = r.read_into(&mut buf, step)?;
        out.extend_from_slice(buf.filled());
        Ok(read)
    }

    fn pair(ring_len: usize) -> (Writer, Reader, Arc<Region>) {
        let (region, _fd) = Region::create(ring_len).unwrap();
        let region = Arc::new(region);
        (
            Writer::new(Arc::clone(&region), Direction::ClientToServer),
            Reader::new(Arc::clone(&region), Direction::ClientToServer),
            region,
        )
    }

    #[test]
    fn used_checks_both_orders() {
        assert_eq!(used(10, 10, 16), Some(0));
        assert_eq!(used(26, 10, 16), Some(16));
        assert_eq!(used(27, 10, 16), None, "more than the ring holds");
        assert_eq!(used(9, 10, 16), None, "tail ahead of head");
        assert_eq!(used(3, u64::MAX - 2, 16), Some(6), "wrapping stream indices");
        assert_eq!(used(u64::MAX, 0, 16), None);
    }

    #[test]
    fn spans_split_at_the_end_of_the_ring() {
        assert_eq!(spans(0, 16, 16), (0, 16, 0));
        assert_eq!(spans(14, 4, 16), (14, 2, 2));
        assert_eq!(spans(16 * 1000 + 3, 5, 16), (3, 5, 0));
        assert_eq!(spans(15, 0, 16), (15, 0, 0));
    }

    #[test]
    fn copies_that_cross_the_end_by_one_byte_keep_it() {
        // Every split of a copy at the ring's end, at the edges most of all: one byte before
        // the end and the rest after it, and all but one before. Staged and read in one copy
        // each, so each crosses the end itself.
        for before in [1, 2, MIN_RING_LEN / 2, MIN_RING_LEN - 1] {
            for after in [1, 2, 100].into_iter().filter(|after| before + after <= MIN_RING_LEN) {
                let (mut w, mut r, _region) = pair(MIN_RING_LEN);
                let lead = vec![0u8; MIN_RING_LEN - before];
                w.stage(&lead);
                w.publish();
                read(&mut r, &mut Vec::new(), lead.len()).unwrap();
                let crossing: Vec<u8> = (1..=before + after).map(|i| i as u8).collect();
                w.stage(&crossing);
                w.publish();
                let mut got = Vec::new();
                assert_eq!(read(&mut r, &mut got, usize::MAX).unwrap().0, crossing.len());
                assert_eq!(got, crossing, "{before} bytes before the end, {after} after");
            }
        }
    }

    #[test]
    fn a_corrupt_peer_index_is_an_error_not_a_copy() {
        let (mut w, mut r, region) = pair(MIN_RING_LEN);
        w.stage(b"hello");
        w.publish();
        // The "peer" (writer) stores a head far ahead of anything it wrote.
        region.control(Direction::ClientToServer).head.0.store(1 << 40, SeqCst);
        let err = read(&mut r, &mut Vec::new(), usize::MAX).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("corrupted the shared ring"), "{err}");
        // The "peer" (reader) stores a tail ahead of our head.
        region.control(Direction::ClientToServer).tail.0.store(100, SeqCst);
        assert!(w.free_after_flag().is_err());
        assert!(w.free().is_err(), "a bad tail, once loaded, stays an error");
    }

    #[test]
    fn the_cached_tail_is_reloaded_when_it_shows_no_room() {
        let (mut w, mut r, _region) = pair(MIN_RING_LEN);
        w.stage(&vec![1; MIN_RING_LEN]);
        w.publish();
        assert_eq!(w.free().unwrap(), 0);
        read(&mut r, &mut Vec::new(), 100).unwrap();
        assert_eq!(w.free().unwrap(), 100, "reloaded because the cached copy showed none");
        read(&mut r, &mut Vec::new(), 100).unwrap();
        assert_eq!(w.free().unwrap(), 100, "not reloaded while the cached copy shows room");
        assert_eq!(w.free_after_flag().unwrap(), 200);
    }

    #[test]
    fn waiting_flags_are_taken_once() {
        let (mut w, mut r, _region) = pair(MIN_RING_LEN);
        r.set_waiting(true);
        w.stage(b"x");
        assert!(w.publish(), "the sleeping reader must be woken");
        w.stage(b"y");
        assert!(!w.publish(), "one bell per sleep");
        w.set_waiting(true);
        assert!(read(&mut r, &mut Vec::new(), 1).unwrap().1, "the sleeping writer must be woken");
        assert!(!read(&mut r, &mut Vec::new(), 1).unwrap().1);
    }

    #[test]
    fn close_is_seen_after_the_bytes_before_it() {
        let (mut w, r, _region) = pair(MIN_RING_LEN);
        w.stage(b"last");
        w.publish();
        w.close();
        assert!(r.writer_closed());
        assert_eq!(r.available().unwrap(), 4);
    }

    /// A ring whose writer may send references to a slab of `SLAB` bytes, which the reader
    /// maps read-only; the writer's mapping fills it.
    fn pair_with_slab(ring_len: usize) -> (Writer, Reader, Arc<Region>, SlabMap) {
        let (w, r, region) = pair(ring_len);
        let (ours, fd) = SlabMap::create(SLAB).unwrap();
        let r = r.with_slab(SlabMap::open(&fd, SLAB).unwrap());
        (w, r, region, ours)
    }

    const SLAB: usize = 64 * 1024;

    #[test]
    fn a_reference_must_lie_in_the_slab_and_ahead_of_the_reader() {
        let slot = |region: &Region, at: u64, offset: u64, len: u64| {
            let control = region.control(Direction::ClientToServer);
            control.refs[0].at.store(at, SeqCst);
            control.refs[0].offset.store(offset, SeqCst);
            control.refs[0].len.store(len, SeqCst);
            control.refs_head.0.store(1, SeqCst);
        };
        let cases: [(u64, u64, u64, &str); 5] = [
            (4, SLAB as u64 - 10, 11, "11 bytes at 65526 of a 65536-byte slab"),
            (4, SLAB as u64 + 1, 1, "1 bytes at 65537"),
            (4, 0, 0, "0 bytes"),
            (4, u64::MAX, 2, "2 bytes at 18446744073709551615"),
            (2, 0, 1, "at 2, read up to 4"),
        ];
        for (at, offset, len, what) in cases {
            let (mut w, mut r, region, _slab) = pair_with_slab(MIN_RING_LEN);
            w.stage(b"abcd");
            w.publish();
            // The reader is at 4 now; a reference for the next byte is at 4.
            read(&mut r, &mut Vec::new(), 4).unwrap();
            slot(&region, at, offset, len);
            w.stage(b"x");
            w.publish();
            let err = read(&mut r, &mut Vec::new(), usize::MAX).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{what}");
            assert!(err.to_string().contains(what), "{what}: {err}");
        }
        // More references stored than there are slots.
        let (mut w, mut r, region, _slab) = pair_with_slab(MIN_RING_LEN);
        region.control(Direction::ClientToServer).refs_head.0.store(REFS as u64 + 1, SeqCst);
        w.stage(b"x");
        w.publish();
        assert!(read(&mut r, &mut Vec::new(), usize::MAX).unwrap_err().to_string().contains("references"));
    }

    proptest! {
        /// Whatever a hostile writer stores in the queue of references, the reader delivers at
        /// most the room it was given or reports corruption: never a copy outside the slab or
        /// the buffer (which would panic), never a loop.
        #[test]
        fn any_stored_reference_is_checked(
            refs_head in 0u64..(2 * REFS as u64),
            slots in proptest::collection::vec((0u64..64, any::<u64>(), any::<u64>()), REFS),
            small in proptest::collection::vec((0u64..64, 0u64..(SLAB as u64 + 10), 0u64..(SLAB as u64 + 10)), REFS),
            room in 1usize..(2 * SLAB),
            wild in any::<bool>(),
        ) {
            let (mut w, mut r, region, _slab) = pair_with_slab(MIN_RING_LEN);
            let control = region.control(Direction::ClientToServer);
            for (slot, &(at, offset, len)) in control.refs.iter().zip(if wild { &slots } else { &small }) {
                slot.at.store(at, SeqCst);
                slot.offset.store(offset, SeqCst);
                slot.len.store(len, SeqCst);
            }
            control.refs_head.0.store(refs_head, SeqCst);
            w.stage(&[9; 64]);
            w.publish();
            let mut space = vec![0u8; room];
            let mut buf = ReadBuf::new(&mut space);
            for _ in 0..100 {
                match r.read_into(&mut buf, usize::MAX) {
                    Ok((0, _)) => break,
                    Ok((n, _)) => prop_assert!(n <= room && buf.filled().len() <= room),
                    Err(e) => {
                        prop_assert_eq!(e.kind(), io::ErrorKind::InvalidData);
                        break;
                    }
                }
            }
        }
    }

    proptest! {
        /// Any sequence of writes and reads of any sizes moves the same bytes in the same order,
        /// and `free + available` always equals the ring size.
        #[test]
        fn bytes_cross_in_order(
            ops in proptest::collection::vec((any::<bool>(), 0usize..3 * MIN_RING_LEN / 2, 1usize..MIN_RING_LEN), 1..60),
        ) {
            let (mut w, mut r, _region) = pair(MIN_RING_LEN);
            let mut sent = Vec::new();
            let mut received = Vec::new();
            let mut next = 0u8;
            for (write, n, step) in ops {
                if write {
                    let n = n.min(w.free().unwrap());
                    let chunk: Vec<u8> = (0..n).map(|_| { next = next.wrapping_add(7); next }).collect();
                    w.stage(&chunk);
                    w.publish();
                    sent.extend_from_slice(&chunk);
                } else {
                    let (moved, _) = read_step(&mut r, &mut received, n, step).unwrap();
                    prop_assert!(moved <= step);
                }
                prop_assert_eq!(w.free_after_flag().unwrap() + r.available().unwrap(), MIN_RING_LEN);
                prop_assert!(w.free().unwrap() <= MIN_RING_LEN - r.available().unwrap());
            }
            read(&mut r, &mut received, usize::MAX).unwrap();
            prop_assert_eq!(&received[..], &sent[..]);
        }

        /// Whatever indices a hostile peer stores, the reader either moves at most a ring's worth
        /// of bytes or reports corruption: never a copy out of bounds (which would panic).
        #[test]
        fn any_stored_head_is_checked(head in any::<u64>(), tail_steps in 0u64..5) {
            let (mut w, mut r, region) = pair(MIN_RING_LEN);
            for _ in 0..tail_steps {
                w.stage(&[1; 1000]);
                w.publish();
                read(&mut r, &mut Vec::new(), 1000).unwrap();
            }
            region.control(Direction::ClientToServer).head.0.store(head, SeqCst);
            let mut buf = Vec::new();
            match read(&mut r, &mut buf, usize::MAX) {
                Ok((n, _)) => prop_assert!(n <= MIN_RING_LEN && buf.len() == n),
                Err(e) => prop_assert_eq!(e.kind(), io::ErrorKind::InvalidData),
            }
        }
    }
}
