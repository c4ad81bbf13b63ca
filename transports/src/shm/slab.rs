//! The bookkeeping of a sending side's slab: which byte ranges of its shared memory are lent out,
//! referenced by the peer, or free to reuse. No unsafe code, no I/O: offsets are plain `usize`s
//! into the slab, and whoever owns the mapping turns them into memory.
//!
//! An `shm://` connection gives its server side a slab, `size` bytes of shared memory that only
//! it writes. User code borrows ("loans") a contiguous block of it and fills it, and the transport
//! may send the peer a reference to the block instead of copying the bytes through the ring
//! (`super::lend` says when: [`Blocks::refer`]); the peer copies them out and acknowledges. A
//! block can be reused only once both its local owner has dropped it ([`Blocks::release`]) and
//! every reference sent to the peer has been acknowledged ([`Blocks::acked`]), in either order:
//! until then the peer may still read it, or the owner may still write it.
//!
//! **A ring with out-of-order release.** Blocks are taken round the slab in order, like a ring
//! buffer's bytes, each contiguous: a block that does not fit between the current position and the
//! end of the slab starts at offset 0 instead, and the rest of the slab up to its end is skipped as
//! padding. Blocks may be freed in any order, but space is reclaimed only from the oldest end: the
//! tail passes a freed block (and the padding after it) only once every block before it is freed
//! too. That keeps the bookkeeping to two positions and a short queue, with no free list to search
//! or to fragment, and memory is reused in the order it was used.
//!
//! **The trade-off.** The oldest live block holds back everything after it: a loan held for long,
//! or a reference the peer is slow to acknowledge, stops the reuse of the whole slab behind it,
//! even of blocks freed long since, and once the rest is used up [`Blocks::take`] returns `None`.
//! The caller then falls back to a heap buffer that crosses by copy as usual, so a stuck loan
//! costs speed, never correctness. Loans are meant to be short (fill, send, drop).
//!
//! Positions are free-running `u64`s (they never wrap in practice: 2^64 bytes), so `head - tail`
//! is the number of bytes in use and `position % size` is the offset in the slab. A block's start
//! position is also its [`BlockId`], unique for the slab's life, so a stale id can never name a
//! later block that happens to sit at the same offset.

use std::collections::VecDeque;

/// Alignment and granularity of blocks, in bytes (a cache line).
pub(crate) const ALIGN: usize = 64;

/// Identifies a block (its start as a free-running position; unique for the slab's life).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BlockId(u64);

/// One block between the tail and the head.
#[derive(Debug)]
struct Block {
    /// Free-running position of its first byte (also its id).
    start: u64,
    /// Its length: the length asked for, rounded up to [`ALIGN`].
    len: usize,
    /// Whether the local owner still has it.
    held: bool,
    /// References sent to the peer and not yet acknowledged.
    in_flight: u32,
    /// Whether [`Blocks::refer`] found it before (its first send is copied, not referred to).
    sent: bool,
}

impl Block {
    /// Whether nobody can touch it any more, so that the tail may pass it.
    fn is_freed(&self) -> bool {
        !self.held && self.in_flight == 0
    }
}

/// Which byte ranges of a slab of `size` bytes are in use (see the module docs).
#[derive(Debug)]
pub(crate) struct Blocks {
    size: usize,
    /// Where the next block (or the padding before it) starts.
    head: u64,
    /// The start of the oldest block not yet freed, or `head` if there is none. Everything in
    /// `tail..head` is in use: live blocks, freed blocks behind older live ones, and padding.
    tail: u64,
    /// The blocks in `tail..head` in allocation order (so by start), freed ones included until
    /// the tail passes them. Padding is not stored: it is the gap before a block's start, and the
    /// tail passes it by moving to the next block's start (or to `head`).
    blocks: VecDeque<Block>,
}

impl Blocks {
    /// An empty slab of `size` bytes (`size` a positive multiple of [`ALIGN`]).
    pub(crate) fn new(size: usize) -> Self {
        assert!(size > 0 && size % ALIGN == 0, "a slab's size must be a positive multiple of {ALIGN}, not {size}");
        Blocks { size, head: 0, tail: 0, blocks: VecDeque::new() }
    }

    /// Takes a block of `len` bytes (1 or more; rounded up to [`ALIGN`]), contiguous in the slab:
    /// its offset in the slab and its id, or `None` if there is no room (including `len == 0` and
    /// `len > size`). The block is held until [`release`](Self::release).
    pub(crate) fn take(&mut self, len: usize) -> Option<(usize, BlockId)> {
        // Checked before rounding, so that rounding cannot overflow: `size` is a multiple of
        // ALIGN, so any `len <= size` rounds up to at most `size`.
        if len == 0 || len > self.size {
            return None;
        }
        let len = len.next_multiple_of(ALIGN);
        let to_end = self.size - self.offset(self.head);
        // A block never wraps round the end of the slab: one that does not fit before the end
        // starts at offset 0, and the bytes up to the end stay in use as padding until the tail
        // passes them.
        let padding = if len <= to_end { 0 } else { to_end };
        let start = self.head + padding as u64;
        let end = start + len as u64;
        if end - self.tail > self.size as u64 {
            return None;
        }
        self.blocks.push_back(Block { start, len, held: true, in_flight: 0, sent: false });
        self.head = end;
        Some((self.offset(start), BlockId(start)))
    }

    /// The local owner of the block dropped it. Panics on an id that is not live and held (a bug
    /// of ours).
    pub(crate) fn release(&mut self, id: BlockId) {
        match self.block_mut(id) {
            Some(block) if block.held => block.held = false,
            _ => panic!("released {id:?}, which is not a held block of this slab"),
        }
        self.reclaim();
    }

    /// `len` bytes at `offset` are about to be sent: finds the live, held block whose range (its
    /// rounded length) contains all of `offset..offset + len` (`len >= 1`). The first time a
    /// block is found it is only marked, and `None` returned (the caller copies its bytes: see
    /// `super::lend` for why); from then on one more reference in flight is counted on it and
    /// its id returned. `None` too if there is no such block (the caller copies).
    pub(crate) fn refer(&mut self, offset: usize, len: usize) -> Option<BlockId> {
        let block = self.find_held(offset, len)?;
        if !std::mem::replace(&mut block.sent, true) {
            return None;
        }
        Self::count(block)
    }

    /// [`refer`](Self::refer) without the first-send rule: counts a reference on the block the
    /// first time too. The allocator's tests use it to drive references directly.
    #[cfg(test)]
    pub(crate) fn send(&mut self, offset: usize, len: usize) -> Option<BlockId> {
        let block = self.find_held(offset, len)?;
        Self::count(block)
    }

    /// The live, held block containing all of `offset..offset + len` (`len >= 1`), if any.
    fn find_held(&mut self, offset: usize, len: usize) -> Option<&mut Block> {
        let end = offset.checked_add(len)?;
        if len == 0 {
            return None;
        }
        let size = self.size;
        // A linear scan: there are rarely more than a few blocks. Blocks in the queue never
        // overlap in the slab (all lie in `tail..head`, less than a lap), so at most one matches.
        self.blocks.iter_mut().find(|block| {
            let at = (block.start % size as u64) as usize;
            block.held && at <= offset && end <= at + block.len
        })
    }

    /// Counts one more reference in flight on `block` and returns its id.
    fn count(block: &mut Block) -> Option<BlockId> {
        // Four billion references to one block cannot be in flight; should it happen, copying is
        // still correct.
        block.in_flight = block.in_flight.checked_add(1)?;
        Some(BlockId(block.start))
    }

    /// The peer consumed one reference to block `id`. Panics if none was in flight (a bug of
    /// ours: the caller only passes ids that [`refer`](Self::refer) returned, once each).
    pub(crate) fn acked(&mut self, id: BlockId) {
        match self.block_mut(id) {
            Some(block) if block.in_flight > 0 => block.in_flight -= 1,
            _ => panic!("acknowledged {id:?}, which has no reference in flight"),
        }
        self.reclaim();
    }

    /// Bytes that can be reused now (`size` minus live blocks, freed blocks the tail has not
    /// passed yet, and padding not yet passed); for tests. They need not be
    /// contiguous, so a take of this many bytes may still fail.
    #[cfg(test)]
    pub(crate) fn free(&self) -> usize {
        self.size - (self.head - self.tail) as usize
    }

    /// Whether nothing is lent or in flight.
    #[cfg(test)]
    pub(crate) fn is_idle(&self) -> bool {
        // Freed blocks at the front are always popped, so any block left is still in use.
        self.blocks.is_empty()
    }

    /// The offset in the slab of free-running position `at`.
    fn offset(&self, at: u64) -> usize {
        (at % self.size as u64) as usize
    }

    /// The block in the queue that starts at `id` (freed or not).
    fn block_mut(&mut self, id: BlockId) -> Option<&mut Block> {
        let i = self.blocks.binary_search_by_key(&id.0, |block| block.start).ok()?;
        self.blocks.get_mut(i)
    }

    /// Moves the tail over every freed block (and the padding after it) at the front.
    fn reclaim(&mut self) {
        while self.blocks.front().is_some_and(Block::is_freed) {
            self.blocks.pop_front();
        }
        match self.blocks.front() {
            Some(oldest) => self.tail = oldest.start,
            None => {
                // Nothing in use: restart at the next lap's offset 0, so that the whole slab is
                // one contiguous run again (a take of `size` bytes succeeds) and the memory just
                // used, likely still in cache, is used next. Positions only grow, so ids stay
                // unique.
                self.head = self.head.next_multiple_of(self.size as u64);
                self.tail = self.head;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    /// The structure's own invariants.
    fn check(b: &Blocks) {
        assert!(b.tail <= b.head && b.head - b.tail <= b.size as u64, "{b:?}");
        assert_eq!(b.blocks.front().map_or(b.head, |block| block.start), b.tail, "{b:?}");
        assert!(b.blocks.front().is_none_or(|block| !block.is_freed()), "{b:?}");
        let mut at = b.tail;
        for block in &b.blocks {
            assert!(block.start >= at && block.start + block.len as u64 <= b.head, "{b:?}");
            assert!(block.len > 0 && block.len % ALIGN == 0, "{b:?}");
            assert!(b.offset(block.start) + block.len <= b.size, "a block wraps: {b:?}");
            at = block.start + block.len as u64;
        }
    }

    #[test]
    fn the_first_take_is_at_zero() {
        let mut b = Blocks::new(256);
        assert!(b.is_idle());
        assert_eq!(b.free(), 256);
        let (offset, id) = b.take(1).unwrap();
        assert_eq!(offset, 0);
        assert_eq!(b.free(), 256 - ALIGN);
        assert!(!b.is_idle());
        b.release(id);
        assert!(b.is_idle());
        assert_eq!(b.free(), 256);
    }

    #[test]
    fn lengths_round_up_to_align() {
        let mut b = Blocks::new(1024);
        assert_eq!(b.take(1).unwrap().0, 0);
        assert_eq!(b.take(64).unwrap().0, 64);
        assert_eq!(b.take(65).unwrap().0, 128);
        assert_eq!(b.take(63).unwrap().0, 256);
        assert_eq!(b.free(), 1024 - 320);
        check(&b);
    }

    #[test]
    fn a_block_that_does_not_fit_before_the_end_wraps_after_padding() {
        let mut b = Blocks::new(256);
        let (_, first) = b.take(128).unwrap();
        let (at, second) = b.take(64).unwrap();
        assert_eq!(at, 128);
        b.release(first);
        assert_eq!(b.free(), 192);
        // 64 bytes left before the end, 128 at the start: the block goes to the start.
        let (at, third) = b.take(128).unwrap();
        assert_eq!(at, 0);
        assert_eq!(b.free(), 0, "the 64 bytes of padding at the end are in use");
        assert_eq!(b.take(1), None);
        check(&b);
        // The tail passes the second block and the padding after it at once.
        b.release(second);
        assert_eq!(b.free(), 128);
        assert_eq!(b.take(64).unwrap().0, 128);
        b.release(third);
        check(&b);
    }

    #[test]
    fn a_block_that_fits_exactly_to_the_end_has_no_padding() {
        let mut b = Blocks::new(256);
        let (_, first) = b.take(192).unwrap();
        let (at, second) = b.take(64).unwrap();
        assert_eq!(at, 192);
        assert_eq!(b.free(), 0);
        b.release(first);
        assert_eq!(b.free(), 192);
        assert_eq!(b.take(192).unwrap().0, 0);
        assert_eq!(b.free(), 0);
        b.release(second);
        assert_eq!(b.free(), 64);
        assert_eq!(b.take(64).unwrap().0, 192);
        check(&b);
    }

    #[test]
    fn a_full_slab_or_an_impossible_length_gives_none() {
        let mut b = Blocks::new(256);
        for len in [0, 257, 320, usize::MAX - ALIGN + 2, usize::MAX] {
            assert_eq!(b.take(len), None, "{len}");
        }
        assert!(b.is_idle());
        let (at, id) = b.take(256).unwrap();
        assert_eq!(at, 0);
        assert_eq!(b.take(1), None);
        assert_eq!(b.free(), 0);
        b.release(id);
        assert_eq!(b.free(), 256);
    }

    #[test]
    fn a_block_is_referred_to_only_from_its_second_send_on() {
        let mut b = Blocks::new(256);
        let (x_at, x) = b.take(64).unwrap();
        let (y_at, y) = b.take(64).unwrap();
        assert_eq!(b.refer(x_at, 64), None, "a first send counts nothing");
        assert_eq!(b.refer(x_at, 10), Some(x));
        assert_eq!(b.refer(y_at, 64), None, "each block its own");
        b.acked(x);
        b.release(x);
        b.release(y);
        assert!(b.is_idle(), "the first sends left nothing in flight");
        let (z_at, z) = b.take(64).unwrap();
        assert_eq!(z_at, x_at, "the same memory");
        assert_eq!(b.refer(z_at, 64), None, "a new block in the same memory was not sent before");
        assert_eq!(b.refer(z_at, 64), Some(z));
    }

    #[test]
    fn an_empty_slab_restarts_at_zero() {
        let mut b = Blocks::new(256);
        let (_, x) = b.take(64).unwrap();
        let (_, y) = b.take(64).unwrap();
        b.release(y);
        b.release(x);
        // The head was mid-slab; the whole slab is one run again.
        let (at, z) = b.take(256).unwrap();
        assert_eq!(at, 0);
        assert!(z != x && z != y, "ids are never reused");
        check(&b);
    }

    #[test]
    fn space_is_reclaimed_from_the_oldest_end() {
        let mut b = Blocks::new(256);
        let (_, a) = b.take(64).unwrap();
        let (_, m) = b.take(64).unwrap();
        let (_, c) = b.take(64).unwrap();
        assert_eq!(b.free(), 64);
        b.release(m);
        assert_eq!(b.free(), 64, "the middle block is behind the oldest, still held");
        assert_eq!(b.take(128), None);
        check(&b);
        b.release(a);
        assert_eq!(b.free(), 192, "the tail passes the oldest and the middle block");
        assert_eq!(b.take(128).unwrap().0, 0, "64 bytes before the end, so after padding");
        b.release(c);
        check(&b);
    }

    #[test]
    fn a_block_is_reused_only_when_released_and_acked() {
        let mut b = Blocks::new(128);
        // Released first, then acknowledged.
        let (at, id) = b.take(128).unwrap();
        assert_eq!(b.send(at, 10), Some(id));
        b.release(id);
        assert!(!b.is_idle());
        assert_eq!(b.free(), 0);
        assert_eq!(b.take(1), None, "the peer may still read it");
        b.acked(id);
        assert!(b.is_idle());
        assert_eq!(b.free(), 128);

        // Acknowledged first, then released.
        let (at, id) = b.take(100).unwrap();
        assert_eq!(b.send(at, 100), Some(id));
        b.acked(id);
        assert_eq!(b.take(1), None, "the owner may still write it");
        b.release(id);
        assert!(b.is_idle());

        // Two references: both must be acknowledged.
        let (at, id) = b.take(128).unwrap();
        assert_eq!(b.send(at, 1), Some(id));
        assert_eq!(b.send(at + 127, 1), Some(id));
        b.release(id);
        b.acked(id);
        assert_eq!(b.free(), 0);
        b.acked(id);
        assert_eq!(b.free(), 128);
        check(&b);
    }

    #[test]
    fn send_needs_one_held_block_containing_the_whole_range() {
        let mut b = Blocks::new(512);
        let (x_at, x) = b.take(64).unwrap();
        let (y_at, y) = b.take(100).unwrap();
        assert_eq!(b.send(x_at, 64), Some(x));
        assert_eq!(b.send(y_at + 127, 1), Some(y), "the rounded length is the block's");
        assert_eq!(b.send(y_at + 100, 28), Some(y));
        assert_eq!(b.send(x_at + 32, 64), None, "spans two blocks");
        assert_eq!(b.send(y_at + 64, 65), None, "runs past the block's end");
        assert_eq!(b.send(300, 10), None, "not lent");
        assert_eq!(b.send(600, 10), None, "outside the slab");
        assert_eq!(b.send(x_at, 0), None);
        assert_eq!(b.send(usize::MAX, 2), None);
        assert_eq!(b.send(1, usize::MAX), None);
        b.release(x);
        assert_eq!(b.send(x_at, 10), None, "released: the owner no longer has it to send");
        b.acked(x);
        b.acked(y);
        b.acked(y);
        b.release(y);
        assert!(b.is_idle());
    }

    #[test]
    fn send_finds_blocks_by_offset_in_later_laps() {
        let mut b = Blocks::new(256);
        for lap in 0..5 {
            let (_, keep) = b.take(64).unwrap();
            let (at, id) = b.take(192).unwrap();
            assert_eq!(at, 64);
            assert_eq!(b.send(64, 192), Some(id), "lap {lap}");
            b.release(keep);
            b.release(id);
            b.acked(id);
        }
    }

    #[test]
    #[should_panic(expected = "not a held block")]
    fn releasing_twice_is_a_bug() {
        let mut b = Blocks::new(256);
        let (at, id) = b.take(64).unwrap();
        b.send(at, 1).unwrap();
        b.release(id);
        b.release(id);
    }

    #[test]
    #[should_panic(expected = "not a held block")]
    fn releasing_a_reclaimed_block_is_a_bug() {
        let mut b = Blocks::new(256);
        let (_, id) = b.take(64).unwrap();
        b.release(id);
        b.take(64).unwrap();
        b.release(id);
    }

    #[test]
    #[should_panic(expected = "no reference in flight")]
    fn an_ack_without_a_send_is_a_bug() {
        let mut b = Blocks::new(256);
        let (_, id) = b.take(64).unwrap();
        b.acked(id);
    }

    #[test]
    #[should_panic(expected = "positive multiple")]
    fn a_size_that_is_not_a_multiple_of_align_is_refused() {
        Blocks::new(100);
    }

    /// A lent block as the model sees it.
    #[derive(Debug)]
    struct Lent {
        id: BlockId,
        offset: usize,
        len: usize,
        held: bool,
        in_flight: u32,
    }

    #[derive(Debug, Clone)]
    enum Op {
        Take(usize),
        /// Releases the held block at this index (modulo their number).
        Release(usize),
        /// Sends a range starting `from` bytes into the block at this index (modulo their number),
        /// which may or may not lie inside it.
        SendIn(usize, usize, usize),
        /// Sends any range.
        SendAt(usize, usize),
        /// Acknowledges the reference in flight at this index (modulo their number).
        Ack(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        let len = prop_oneof![
            4 => 0usize..=2 * ALIGN + 1,
            2 => 0usize..=9 * ALIGN,
            1 => usize::MAX - 2 * ALIGN..=usize::MAX,
        ];
        prop_oneof![
            4 => len.prop_map(Op::Take),
            3 => any::<usize>().prop_map(Op::Release),
            3 => (any::<usize>(), 0usize..3 * ALIGN, 0usize..3 * ALIGN).prop_map(|(i, from, len)| Op::SendIn(i, from, len)),
            1 => (0usize..9 * ALIGN, 0usize..3 * ALIGN).prop_map(|(offset, len)| Op::SendAt(offset, len)),
            3 => any::<usize>().prop_map(Op::Ack),
        ]
    }

    /// What the model expects `send(offset, len)` to return.
    fn expected_send(lent: &[Lent], offset: usize, len: usize) -> Option<BlockId> {
        let end = offset.checked_add(len)?;
        lent.iter()
            .find(|block| len > 0 && block.held && block.offset <= offset && end <= block.offset + block.len)
            .map(|block| block.id)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        /// Against a model that knows only which blocks are lent or in flight: blocks never
        /// overlap and lie inside the slab, ids are never reused, `send` finds exactly the held
        /// block containing the range, `free()` never counts an owned byte, and once everything is
        /// released and acknowledged the whole slab is free and one run again.
        #[test]
        fn blocks_match_a_model(size in (1usize..=8).prop_map(|n| n * ALIGN), ops in proptest::collection::vec(op(), 1..120)) {
            let mut b = Blocks::new(size);
            let mut lent: Vec<Lent> = Vec::new();
            let mut sent: Vec<BlockId> = Vec::new();
            let mut ids = HashSet::new();
            for op in ops {
                match op {
                    Op::Take(len) => match b.take(len) {
                        Some((offset, id)) => {
                            prop_assert!((1..=size).contains(&len));
                            let len = len.div_ceil(ALIGN) * ALIGN;
                            prop_assert_eq!(offset % ALIGN, 0);
                            prop_assert!(offset + len <= size, "{}+{} outside the slab of {}", offset, len, size);
                            for other in &lent {
                                prop_assert!(offset + len <= other.offset || other.offset + other.len <= offset,
                                    "{}+{} overlaps {:?}", offset, len, other);
                            }
                            prop_assert!(ids.insert(id.0), "{:?} reused", id);
                            lent.push(Lent { id, offset, len, held: true, in_flight: 0 });
                        }
                        None => prop_assert!(!(lent.is_empty() && (1..=size).contains(&len)),
                            "an idle slab refused {} bytes", len),
                    },
                    Op::Release(i) => {
                        let held: Vec<usize> = (0..lent.len()).filter(|&j| lent[j].held).collect();
                        if !held.is_empty() {
                            let j = held[i % held.len()];
                            b.release(lent[j].id);
                            lent[j].held = false;
                        }
                    }
                    Op::SendIn(i, from, len) => {
                        if !lent.is_empty() {
                            let offset = lent[i % lent.len()].offset + from;
                            let got = b.send(offset, len);
                            prop_assert_eq!(got, expected_send(&lent, offset, len));
                            if let Some(id) = got {
                                sent.push(id);
                                lent.iter_mut().find(|block| block.id == id).unwrap().in_flight += 1;
                            }
                        }
                    }
                    Op::SendAt(offset, len) => {
                        let got = b.send(offset, len);
                        prop_assert_eq!(got, expected_send(&lent, offset, len));
                        if let Some(id) = got {
                            sent.push(id);
                            lent.iter_mut().find(|block| block.id == id).unwrap().in_flight += 1;
                        }
                    }
                    Op::Ack(i) => {
                        if !sent.is_empty() {
                            let id = sent.swap_remove(i % sent.len());
                            b.acked(id);
                            lent.iter_mut().find(|block| block.id == id).unwrap().in_flight -= 1;
                        }
                    }
                }
                lent.retain(|block| block.held || block.in_flight > 0);
                check(&b);
                let owned: usize = lent.iter().map(|block| block.len).sum();
                prop_assert!(b.free() <= size - owned, "free {} but {} of {} owned", b.free(), owned, size);
                prop_assert_eq!(b.is_idle(), lent.is_empty());
            }
            for block in lent.iter().filter(|block| block.held) {
                b.release(block.id);
            }
            for id in sent {
                b.acked(id);
            }
            prop_assert!(b.is_idle());
            prop_assert_eq!(b.free(), size);
            let (offset, id) = b.take(size).unwrap();
            prop_assert_eq!(offset, 0);
            prop_assert!(!ids.contains(&id.0));
        }
    }
}
