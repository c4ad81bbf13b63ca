//! Lending: the sending side's slab, whose blocks users fill in place ([`rpc_core::loan`]) and
//! the ring then carries by reference.
//!
//! A side with a slab hands out blocks of it as [`Lent`] buffers. When a frame the engine writes
//! contains one (a frozen loan is a large payload, which the frame driver passes on as a part
//! of its own, not copied), [`ShmWriter`](super::halves::ShmWriter) finds that the part lies in
//! the slab. The first time a block is sent its bytes are copied into the ring like any
//! payload's; every later time the writer stages a reference instead (one placeholder byte,
//! and the block's offset and length in the ring's queue of references; see [`super::ring`]),
//! the reader copies the bytes straight out of the slab into its frame buffer and acknowledges
//! the reference. So a payload sent again is copied once on its way, by the receiver, instead
//! of twice (into the ring and out of it); why not on its first send, see [`SlabOut::send`].
//!
//! A block is reused only when both its local owner is gone (every clone of the frozen payload
//! dropped, so nothing here still reads it) and every reference sent to it was acknowledged
//! (so the peer is done reading it); [`Blocks`] keeps that account. A loan the slab has no
//! room for, or a reference the queue has no slot for, falls back to the heap and to copying:
//! slower, never stuck.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rpc_core::loan::{Lend, Lent};
use rpc_core::wire::SPLICE_MIN;

use super::region::{Direction, Region, SlabMap, REFS};
use super::slab::{BlockId, Blocks};

/// Loans smaller than this are not lent: a frame of up to 16 KiB is copied into the frame
/// driver's buffer whatever its payload's memory (`SPLICE_MIN`), so lending it would save
/// nothing.
pub(crate) const LEND_MIN: usize = SPLICE_MIN;

/// One side's slab, shared by its lender (the blocks it hands out) and its ring writer (the
/// references it sends).
#[derive(Debug)]
pub(crate) struct SlabOut {
    map: SlabMap,
    region: Arc<Region>,
    ring: Direction,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    blocks: Blocks,
    /// The block of each reference sent and not yet acknowledged, oldest first.
    in_flight: VecDeque<BlockId>,
    /// References sent.
    sent: u64,
    /// References the reader acknowledged, as last loaded.
    acked: u64,
}

impl SlabOut {
    /// The slab `map`, whose references travel on `ring` of `region`.
    pub(crate) fn new(map: SlabMap, region: Arc<Region>, ring: Direction) -> Self {
        let blocks = Blocks::new(map.len());
        let state = State { blocks, in_flight: VecDeque::new(), sent: 0, acked: 0 };
        SlabOut { map, region, ring, state: Mutex::new(state) }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The state is consistent between calls (no method panics halfway on input from the
        // peer), so a panic elsewhere while it was held leaves nothing to repair.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Frees what the reader acknowledged since the last look. An acknowledgement count that
    /// goes back or past what was sent is the peer corrupting the ring.
    fn collect_acks(&self, state: &mut State) -> io::Result<()> {
        let done = self.region.control(self.ring).refs_tail.0.load(std::sync::atomic::Ordering::Acquire);
        if done < state.acked || done > state.sent {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the peer corrupted the shared ring's references (acknowledged {done}, after {} of {} sent)",
                    state.acked, state.sent
                ),
            ));
        }
        for _ in state.acked..done {
            let block = state.in_flight.pop_front().expect("one block a reference sent");
            state.blocks.acked(block);
        }
        state.acked = done;
        Ok(())
    }

    /// Whether `bytes` lies in the slab.
    pub(crate) fn holds(&self, bytes: &[u8]) -> bool {
        self.map.offset_of(bytes).is_some()
    }

    /// If `bytes` lies in a block lent out that was sent before and a slot is free, counts a
    /// reference to it as sent and returns the reference's number and the bytes' offset in the
    /// slab; `None` if the bytes must be copied instead (always the first time a block is
    /// sent). The caller stages the reference before it publishes.
    pub(crate) fn send(&self, bytes: &[u8]) -> io::Result<Option<(u64, usize)>> {
        let Some(offset) = self.map.offset_of(bytes) else {
            return Ok(None);
        };
        let mut state = self.state();
        let state = &mut *state;
        self.collect_acks(state)?;
        if state.sent - state.acked >= REFS as u64 {
            return Ok(None);
        }
        // A block's first send copies its bytes through the ring, like any payload's (`refer`
        // says `None`); only a block sent again goes by reference. The peer's copy out of the
        // slab leaves the block's cache lines on its core, and a handler filling the block
        // afresh for its next payload then waits for each line to come back before it can
        // write it, all before the send; through the ring the peer never touches the block,
        // and the ring's copy overlaps that wait with the peer's copy out (1 MiB results filled
        // afresh for each call, one call after another, on a 2-vCPU VM: 3.6-4.7 GB/s by
        // reference, 20.5-22.2 GB/s copied, against 19.6-21.0 from a heap buffer). A payload
        // sent again unchanged (prepared or cached) is not written in between, and by
        // reference it saves the sender its copy: 32-36 GB/s, against 28-29 from the heap.
        let Some(block) = state.blocks.refer(offset, bytes.len()) else {
            return Ok(None);
        };
        state.in_flight.push_back(block);
        state.sent += 1;
        Ok(Some((state.sent - 1, offset)))
    }
}

/// The lender of one side's slab, for [`ConnectionInfo`](rpc_core::transport::ConnectionInfo).
#[derive(Debug)]
pub(crate) struct SlabLender(pub(crate) Arc<SlabOut>);

impl Lend for SlabLender {
    fn lend(&self, len: usize) -> Option<Lent> {
        if len < LEND_MIN {
            return None;
        }
        let slab = &self.0;
        let (offset, block) = {
            let mut state = slab.state();
            // A corrupt count is the writer's to report; lending just stops freeing blocks.
            let _ = slab.collect_acks(&mut state);
            state.blocks.take(len)?
        };
        let owner = LentBlock { slab: Arc::clone(slab), block };
        // SAFETY: `Blocks::take` gave `offset..offset + len` (rounded up, so at least `len`
        // bytes) inside the slab to this loan alone: no other block overlaps it while `owner`
        // lives, and the ring writer reads it only through a payload frozen from the loan
        // (after its user is done writing). The mapping outlives `owner`, which holds the
        // slab. Its bytes are initialised (a memfd's pages are zeroed; later, earlier
        // payloads). No other process can write them: the memfd was sealed against writes
        // after our mapping was made (`SlabMap::create`); the peer only reads them.
        Some(unsafe { Lent::new(slab.map.at(offset), len, Box::new(owner)) })
    }
}

/// Gives a lent block back when the loan, or the last clone of the payload frozen from it, is
/// dropped.
struct LentBlock {
    slab: Arc<SlabOut>,
    block: BlockId,
}

impl Drop for LentBlock {
    fn drop(&mut self) {
        self.slab.state().blocks.release(self.block);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shm::region::MIN_RING_LEN;
    use crate::shm::ring::{Reader, Writer};
    use rpc_core::loan::Lender;
    use std::sync::atomic::Ordering::SeqCst;
    use tokio::io::ReadBuf;

    const SLAB: usize = 1 << 20;
    const RING: Direction = Direction::ServerToClient;

    /// A ring and a slab as the two sides see them: the writer's slab and lender, the reader
    /// with its read-only mapping of the same slab.
    struct Sides {
        writer: Writer,
        reader: Reader,
        slab: Arc<SlabOut>,
        lender: Lender,
        region: Arc<Region>,
    }

    fn sides(ring_len: usize) -> Sides {
        let (region, _fd) = Region::create(ring_len).unwrap();
        let region = Arc::new(region);
        let (map, fd) = SlabMap::create(SLAB).unwrap();
        let peer = SlabMap::open(&fd, SLAB).unwrap();
        let slab = Arc::new(SlabOut::new(map, Arc::clone(&region), RING));
        Sides {
            writer: Writer::new(Arc::clone(&region), RING),
            reader: Reader::new(Arc::clone(&region), RING).with_slab(peer),
            lender: Lender::new(SlabLender(Arc::clone(&slab))),
            slab,
            region,
        }
    }

    /// A payload of `len` bytes filled in a loan (shared if `shared`), byte `i` being `seed + i`.
    fn filled(lender: &Lender, len: usize, seed: u8, shared: bool) -> rpc_core::bytes::Bytes {
        let mut loan = lender.loan(len);
        assert_eq!(loan.is_shared(), shared, "a loan of {len} bytes");
        for (i, byte) in loan.iter_mut().enumerate() {
            *byte = seed.wrapping_add(i as u8);
        }
        loan.freeze()
    }

    /// A payload like [`filled`]'s, lent, and sent once already (copied, as every block's first
    /// send is), so that sending it again goes by reference.
    fn sent_once(sides: &Sides, len: usize, seed: u8) -> rpc_core::bytes::Bytes {
        let payload = filled(&sides.lender, len, seed, true);
        assert_eq!(sides.slab.send(&payload).unwrap(), None, "a block's first send copies it");
        payload
    }

    /// Stages `bytes` as the shm writer does: by reference if the slab takes it, else copied.
    fn stage(sides: &mut Sides, bytes: &[u8]) -> bool {
        match sides.slab.send(bytes).unwrap() {
            Some((seq, offset)) => {
                sides.writer.stage_ref(seq, offset, bytes.len());
                true
            }
            None => {
                sides.writer.stage(bytes);
                false
            }
        }
    }

    /// Reads everything available, `step` bytes of room at a time.
    fn read_all(reader: &mut Reader, step: usize) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let mut space = vec![0u8; step];
            let mut buf = ReadBuf::new(&mut space);
            let (n, _) = reader.read_into(&mut buf, usize::MAX).unwrap();
            out.extend_from_slice(buf.filled());
            if n == 0 {
                return out;
            }
        }
    }

    #[test]
    fn a_lent_payload_crosses_by_reference_between_ring_bytes() {
        let mut sides = sides(MIN_RING_LEN);
        // Larger than the ring: only a reference can carry it through at once.
        let payload = sent_once(&sides, 2 * LEND_MIN + 3, 7);
        let expected = [&b"head"[..], &payload, b"tail"].concat();
        for step in [1, 5, 1000, 64 * 1024] {
            sides.writer.stage(b"head");
            assert!(stage(&mut sides, &payload), "a lent payload goes by reference");
            sides.writer.stage(b"tail");
            sides.writer.publish();
            assert_eq!(sides.reader.available().unwrap(), 9, "one ring byte stands for the payload");
            let got = read_all(&mut sides.reader, step);
            assert!(got == expected, "read {step} bytes at a time: {} bytes, not {}", got.len(), expected.len());
        }
    }

    #[test]
    fn a_block_is_copied_the_first_time_it_is_sent_and_referenced_after() {
        let mut sides = sides(1 << 20);
        let payload = filled(&sides.lender, LEND_MIN, 3, true);
        assert!(!stage(&mut sides, &payload), "copied");
        assert!(stage(&mut sides, &payload), "by reference");
        assert!(stage(&mut sides, &payload.slice(5..)), "by reference, part of it");
        sides.writer.publish();
        let got = read_all(&mut sides.reader, 1 << 20);
        assert!(got == [&payload[..], &payload, &payload[5..]].concat(), "{} bytes", got.len());
        // A new loan in the same memory starts over.
        drop(payload);
        let again = filled(&sides.lender, LEND_MIN, 4, true);
        assert!(!stage(&mut sides, &again), "a new block's first send copies");
    }

    #[test]
    fn a_block_is_reused_only_once_its_owner_and_the_reader_are_done() {
        let mut sides = sides(MIN_RING_LEN);
        // The whole slab, so that any reuse must be of this block.
        let payload = sent_once(&sides, SLAB, 1);
        assert!(stage(&mut sides, &payload));
        sides.writer.publish();
        drop(payload);
        assert!(!sides.lender.loan(SLAB).is_shared(), "the reader has not copied it out yet");
        let got = read_all(&mut sides.reader, 64 * 1024);
        assert_eq!(got.len(), SLAB);
        assert!(got.iter().enumerate().all(|(i, &b)| b == 1u8.wrapping_add(i as u8)));
        let payload = sent_once(&sides, SLAB, 2);

        // The other order: acknowledged first, dropped after.
        assert!(stage(&mut sides, &payload));
        sides.writer.publish();
        assert_eq!(read_all(&mut sides.reader, 64 * 1024).len(), SLAB);
        assert!(!sides.lender.loan(SLAB).is_shared(), "the payload is still held here");
        drop(payload);
        filled(&sides.lender, SLAB, 3, true);
    }

    #[test]
    fn with_every_slot_in_flight_the_writer_copies() {
        let mut sides = sides(1 << 20);
        let payloads: Vec<_> = (0..=REFS).map(|i| sent_once(&sides, LEND_MIN, i as u8)).collect();
        for payload in &payloads[..REFS] {
            assert!(stage(&mut sides, payload));
        }
        assert!(!stage(&mut sides, &payloads[REFS]), "no slot: copied");
        sides.writer.publish();
        let got = read_all(&mut sides.reader, 1 << 20);
        assert!(got == payloads.concat(), "{} bytes", got.len());
        assert!(stage(&mut sides, &payloads[0]), "acknowledged: the slots are free again");
    }

    #[test]
    fn bytes_outside_a_lent_block_are_copied() {
        let sides = sides(MIN_RING_LEN);
        assert_eq!(sides.slab.send(&vec![0u8; LEND_MIN]).unwrap(), None, "heap bytes");
        let small = sides.lender.loan(LEND_MIN - 1);
        assert!(!small.is_shared(), "too small to be worth lending");
        let lent = sent_once(&sides, LEND_MIN, 0);
        let inside = lent.slice(1..);
        assert!(sides.slab.send(&inside).unwrap().is_some(), "part of a lent block");
    }

    #[test]
    fn a_corrupt_acknowledgement_is_an_error() {
        let sides = sides(MIN_RING_LEN);
        let payload = filled(&sides.lender, LEND_MIN, 0, true);
        sides.region.control(RING).refs_tail.0.store(5, SeqCst);
        let err = sides.slab.send(&payload).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("acknowledged 5, after 0 of 0 sent"), "{err}");
    }
    /// A writer thread lending, filling and sending payloads (each 1 to 3 times, so that later
    /// sends go by reference), while a reader thread copies them out and acknowledges, through
    /// an 8 KiB ring and a slab far smaller than what crosses: every byte arrives as written, so
    /// no block is filled again while the reader may still copy it.
    #[test]
    fn blocks_reused_while_the_reader_copies_never_show_other_bytes() {
        const SLAB_LEN: usize = 256 * 1024;
        let plan: Vec<(usize, u8, usize)> =
            (0..400).map(|i| (LEND_MIN + (i * 7919) % (3 * LEND_MIN), i as u8, 1 + i % 3)).collect();
        let expected: Vec<u8> = plan
            .iter()
            .flat_map(|&(len, seed, times)| {
                (0..times).flat_map(move |_| (0..len).map(move |j| seed.wrapping_add((j / 64) as u8)))
            })
            .collect();
        let (region, _fd) = Region::create(8192).unwrap();
        let region = Arc::new(region);
        let (map, fd) = SlabMap::create(SLAB_LEN).unwrap();
        let mut reader = Reader::new(Arc::clone(&region), RING).with_slab(SlabMap::open(&fd, SLAB_LEN).unwrap());
        let slab = Arc::new(SlabOut::new(map, Arc::clone(&region), RING));
        let mut writer = Writer::new(Arc::clone(&region), RING);
        let writing = std::thread::spawn(move || {
            let lender = Lender::new(SlabLender(Arc::clone(&slab)));
            let mut refs = 0;
            for (len, seed, times) in plan {
                let mut loan = lender.loan(len);
                loan.chunks_mut(64).enumerate().for_each(|(j, line)| line.fill(seed.wrapping_add(j as u8)));
                let payload = loan.freeze();
                for _ in 0..times {
                    // As the shm writer does: by reference if the slab takes it, else copied in
                    // pieces as room frees up.
                    let mut rest = &payload[..];
                    while !rest.is_empty() {
                        let free = writer.free().unwrap();
                        if free == 0 {
                            std::thread::yield_now();
                            continue;
                        }
                        if let Some((seq, offset)) = slab.send(rest).unwrap() {
                            writer.stage_ref(seq, offset, rest.len());
                            (refs, rest) = (refs + 1, &[]);
                        } else {
                            let n = free.min(rest.len()).min(7000);
                            writer.stage(&rest[..n]);
                            rest = &rest[n..];
                        }
                        writer.publish();
                    }
                }
            }
            refs
        });
        let mut got = 0;
        let mut space = vec![0u8; 100_000];
        while got < expected.len() {
            let mut buf = ReadBuf::new(&mut space);
            let (n, _) = reader.read_into(&mut buf, usize::MAX).unwrap();
            assert!(buf.filled() == &expected[got..got + n], "other bytes within {got}..{}", got + n);
            got += n;
            if n == 0 {
                // A writer that failed (panicked) sends no more: stop waiting and report it.
                if writing.is_finished() && reader.available().unwrap() == 0 {
                    break;
                }
                std::thread::yield_now();
            }
        }
        let refs = writing.join().unwrap();
        assert_eq!(got, expected.len());
        assert!(refs > 100, "only {refs} sends went by reference");
    }
}
