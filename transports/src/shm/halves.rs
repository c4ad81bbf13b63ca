//! The two ends of an `shm://` connection as a byte sink and a byte source, which the one frame
//! driver ([`rpc_core::transport::stream`]) turns into frame halves, as it does for sockets; a
//! side that finds nothing to do spins briefly, then sleeps on a bell.
//!
//! **Bells.** Each side holds two Unix stream sockets to the peer: the setup socket, on which
//! the peer's sender rings "data published" for our receiver, and a second socket (a socketpair
//! made at setup) on which the peer's receiver rings "room made" for our sender. One byte is a
//! ring; a side rings only when the other set its waiting flag, so a busy pair makes no system
//! calls at all. Each socket has exactly one half waiting on it, so each half's waker is
//! registered on its own file descriptor. All socket I/O uses `MSG_DONTWAIT`, so a peer that
//! flips `O_NONBLOCK` on a description it shares with us cannot make us block.
//!
//! **Liveness.** The peer holds the other ends of both sockets for as long as it lives, so its
//! exit (even by SIGKILL) is EOF on both: a sleeping receiver wakes and reports the end of the
//! connection at once; bytes the peer published before dying are still delivered.
//!
//! **Spinning.** A side waits as [`crate::spin`] describes: polling its ring in slices of a few
//! microseconds, for an adaptive budget, before it sleeps on its bell. In a runtime with other
//! workers, where every yield wakes one of them, the reader yields more sparingly
//! ([`SPARING_RUN_MAX`]).

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use rustix::net::{RecvFlags, SendFlags};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::UnixStream;

use super::lend::{SlabOut, LEND_MIN};
use super::ring::{Reader, Writer, STEP};
pub(crate) use crate::spin::Spin;
use crate::spin::{has_other_workers, yield_to_the_runtime, Run, Spun};

/// At most this many bell-only wake-ups are handled in one poll before yielding, so a peer
/// that rings without publishing cannot keep us in one poll forever.
const MAX_WAKEUPS_PER_POLL: u32 = 32;

/// One side's end of a bell socket.
#[derive(Debug)]
pub(crate) struct Bell(pub(crate) UnixStream);

/// What draining a bell found.
enum Rung {
    /// At least one ring.
    Yes,
    /// Nothing (and readiness was cleared, so the next ring wakes the registered waker).
    No,
    /// The peer's end is closed: the peer exited or dropped the connection.
    Eof,
}

impl Bell {
    /// Rings the peer. A full socket buffer means rings are pending already; any other error
    /// means the peer is gone, which the waiting halves learn from EOF.
    fn ring(&self) {
        let _ = rustix::net::send(&self.0, &[1], SendFlags::DONTWAIT | SendFlags::NOSIGNAL);
    }

    fn drain(&self) -> io::Result<Rung> {
        let mut rung = Rung::No;
        for _ in 0..16 {
            let mut buf = [0u8; 64];
            let read = self.0.try_io(Interest::READABLE, || {
                rustix::net::recv(&self.0, &mut buf, RecvFlags::DONTWAIT).map(|(n, _)| n).map_err(io::Error::from)
            });
            match read {
                Ok(0) => return Ok(Rung::Eof),
                Ok(_) => rung = Rung::Yes,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(rung),
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(Rung::Eof),
                Err(e) => return Err(e),
            }
        }
        Ok(rung)
    }
}

/// A pidfd of the peer process, readable once it has exited. Each half has its own, so each
/// registers its waker on a descriptor of its own.
///
/// The bells' EOF already reports a peer that exits, unless the peer is hostile: it can hand
/// its ends of the sockets back to us (as `SCM_RIGHTS` in a bell's own queue), where they keep
/// the sockets open after it is gone. The pidfd cannot be kept alive that way. No watch for a
/// peer in our own process (its drop closes the bells) or where pidfds are unavailable.
pub(crate) use crate::liveness::PeerExit as PeerProcess;

/// Which check [`Waiter::poll_wait`] asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    /// Is what we wait for there? (Plain loads: for spinning and re-checks.)
    Now,
    /// Set our waiting flag, then check, in that order (`SeqCst`): the peer clears the flag
    /// when it rings, so it is set again before every sleep.
    AfterFlag,
}

/// What ended a [`Waiter::poll_wait`].
#[derive(Debug, PartialEq, Eq)]
enum Woken {
    /// Look at the ring again.
    Check,
    /// The peer closed its end of our bell, or its process exited.
    PeerGone,
}

/// How one half waits for its ring: spin (in slices), then sleep on its bell, watching the
/// peer's process meanwhile. The sender waits for room, the receiver for bytes; both wait the
/// same way.
#[derive(Debug)]
pub(crate) struct Waiter {
    /// The bell this half sleeps on.
    bell: Arc<Bell>,
    spin: Spin,
    peer: PeerProcess,
    /// The current wait is past spinning: our waiting flag may be set in the ring.
    sleeping: bool,
    /// The peer is in this process, perhaps a task of this very thread, which cannot publish
    /// while we spin: each wait lets the thread's other tasks run once before it spins.
    in_process: bool,
    /// The current wait has done so.
    yielded: bool,
}

impl Waiter {
    /// A waiter sleeping on `bell`; `in_process` if the peer is in this process.
    pub(crate) fn new(bell: Arc<Bell>, spin: Spin, peer: PeerProcess, in_process: bool) -> Self {
        Waiter { bell, spin, peer, sleeping: false, in_process, yielded: false }
    }

    /// One step of waiting; `check` says whether what we wait for is there.
    fn poll_wait(
        &mut self,
        cx: &mut Context<'_>,
        wakeups: &mut u32,
        mut check: impl FnMut(Check) -> io::Result<bool>,
    ) -> Poll<io::Result<Woken>> {
        if !self.sleeping {
            // (A client and a server in one thread: 23-25 µs a call without this, `call-count`.)
            if self.in_process && !std::mem::replace(&mut self.yielded, true) {
                return yield_to_the_runtime(cx);
            }
            match self.spin.spin(|| check(Check::Now).unwrap_or(true)) {
                Spun::Ready => return Poll::Ready(Ok(Woken::Check)),
                // Through the runtime's I/O driver: a peer task of this thread that sleeps on its
                // bell hears our publish only once the driver ran (a self-wake at once kept a
                // client and a server in one thread spinning whole budgets: 90 µs a call).
                Spun::Yield => return yield_to_the_runtime(cx),
                Spun::Spent => self.sleeping = true,
            }
        }
        if check(Check::AfterFlag)? {
            return Poll::Ready(Ok(Woken::Check));
        }
        if self.peer.poll_exited(cx) {
            return Poll::Ready(Ok(Woken::PeerGone));
        }
        match self.bell.drain()? {
            Rung::Eof => return Poll::Ready(Ok(Woken::PeerGone)),
            Rung::Yes => {
                *wakeups += 1;
                if *wakeups >= MAX_WAKEUPS_PER_POLL {
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                return Poll::Ready(Ok(Woken::Check));
            }
            Rung::No => {}
        }
        // Readiness was cleared by the drain: a ring after this point wakes us.
        if check(Check::Now)? {
            return Poll::Ready(Ok(Woken::Check));
        }
        match self.bell.0.poll_read_ready(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(Woken::Check)),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    /// What we waited for is there; true if our waiting flag may be set and must be cleared.
    fn done(&mut self) -> bool {
        self.spin.done();
        self.yielded = false;
        std::mem::take(&mut self.sleeping)
    }
}

/// The writing end of an `shm://` connection as a byte sink, for the one frame driver
/// ([`rpc_core::transport::stream`]): bytes go into the ring and are published at once (a
/// large buffer step by step).
#[derive(Debug)]
pub(crate) struct ShmWriter {
    ring: Writer,
    /// Rung for the peer's receiver when we publish.
    data_bell: Arc<Bell>,
    /// Waits on the bell the peer's receiver rings when it makes room.
    waiter: Waiter,
    closed: bool,
    /// Our slab, if we lend: parts that lie in it are sent by reference.
    slab: Option<Arc<SlabOut>>,
}

impl ShmWriter {
    pub(crate) fn new(ring: Writer, data_bell: Arc<Bell>, waiter: Waiter) -> Self {
        ShmWriter { ring, data_bell, waiter, closed: false, slab: None }
    }

    /// A writer that sends parts lying in `slab` by reference.
    pub(crate) fn with_slab(mut self, slab: Arc<SlabOut>) -> Self {
        self.slab = Some(slab);
        self
    }

    /// Copies as much of `bufs` as fits into the ring and publishes it (ringing the peer if it
    /// sleeps); `WouldBlock` if the ring is full. Never waits: this is the write-through the
    /// frame driver does when a frame is queued (a reader spinning for exactly this frame must
    /// not wait for the engine's next flush).
    ///
    /// Publishes each [`STEP`] bytes of a large buffer as soon as they are in, and looks for
    /// room the reader freed meanwhile before giving up: a large frame streams through the ring
    /// while the reader copies it out.
    pub(crate) fn try_write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        if self.closed {
            return Err(io::Error::new(io::ErrorKind::BrokenPipe, "the sending half was closed"));
        }
        let mut free = self.ring.free()?;
        if free == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        // Nearly every write is one small frame (a prefix and a body) with room to spare: it is
        // staged as it is, without the stepping below (an `add` over shm at 64 in flight, both
        // sides in one process: 5,627 → 5,542 instructions a call, `call-count` under callgrind).
        let total = bufs.iter().map(|buf| buf.len()).sum::<usize>();
        if total <= free && total < STEP && (total < LEND_MIN || !self.has_lent_part(bufs)) {
            for buf in bufs {
                self.ring.stage(buf);
            }
            self.publish();
            return Ok(total);
        }
        let mut written = 0;
        'bufs: for buf in bufs {
            if let Some(slab) = self.slab.as_ref().filter(|_| buf.len() >= LEND_MIN) {
                // A lent block (a payload filled in place): one byte of the ring and a slot
                // stand for it, if there are both.
                if free == 0 {
                    free = self.ring.free()?;
                    if free == 0 {
                        break 'bufs;
                    }
                }
                match slab.send(buf) {
                    Ok(Some((seq, offset))) => {
                        self.ring.stage_ref(seq, offset, buf.len());
                        (written, free) = (written + buf.len(), free - 1);
                        continue;
                    }
                    Ok(None) => {}
                    // The peer corrupted the acknowledgements: what is staged goes out first,
                    // and the next write reports it (the count is still wrong then).
                    Err(_) if written > 0 => break 'bufs,
                    Err(e) => return Err(e),
                }
            }
            // A large buffer (a big frame's body) crosses in steps, published one by one; small
            // ones are published together at the end, as one batch.
            for piece in buf.chunks(STEP) {
                let mut rest = piece;
                while !rest.is_empty() {
                    if free == 0 {
                        free = self.ring.free()?;
                        if free == 0 {
                            break 'bufs;
                        }
                    }
                    let n = rest.len().min(free);
                    self.ring.stage(&rest[..n]);
                    (rest, written, free) = (&rest[n..], written + n, free - n);
                }
                if piece.len() == STEP {
                    self.publish();
                }
            }
        }
        self.publish();
        Ok(written)
    }

    /// Whether a part of `bufs` lies in our slab and is large enough to be lent (so it may go
    /// by reference, off the small-frame path).
    fn has_lent_part(&self, bufs: &[IoSlice<'_>]) -> bool {
        self.slab.as_ref().is_some_and(|slab| bufs.iter().any(|buf| buf.len() >= LEND_MIN && slab.holds(buf)))
    }

    /// Publishes what was staged, ringing the peer's receiver if it sleeps.
    fn publish(&mut self) {
        if self.ring.publish() {
            self.data_bell.ring();
        }
    }

    /// Ready when there is room in the ring; an error once the peer is gone.
    fn poll_room(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut wakeups = 0;
        loop {
            if self.ring.free()? > 0 {
                if self.waiter.done() {
                    self.ring.set_waiting(false);
                }
                return Poll::Ready(Ok(()));
            }
            let ring = &mut self.ring;
            let woken = std::task::ready!(self.waiter.poll_wait(cx, &mut wakeups, |check| {
                if check == Check::AfterFlag {
                    ring.set_waiting(true);
                    return Ok(ring.free_after_flag()? > 0);
                }
                Ok(ring.free()? > 0)
            }))?;
            if woken == Woken::PeerGone {
                if self.waiter.done() {
                    self.ring.set_waiting(false);
                }
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "the peer closed the connection (or exited)",
                )));
            }
        }
    }
}

impl AsyncWrite for ShmWriter {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            match this.try_write_vectored(bufs) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::task::ready!(this.poll_room(cx))?,
                written => return Poll::Ready(written),
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    /// Everything written is published already.
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.closed {
            this.closed = true;
            if this.ring.close() {
                this.data_bell.ring();
            }
        }
        Poll::Ready(Ok(()))
    }
}

/// How long a reader that finds its bytes within each spin goes on before it yields to the
/// other tasks of its thread once, at its next wait. Over a socket a busy reader sees
/// `WouldBlock` and returns `Pending` now and then; over the ring, with the next frame there
/// within a spin every time, its task never would: on a server, a read loop taking small calls
/// one after another kept a stream's pump on the same thread from running (in the bench, the
/// stream beside the calls fell to 0-1400 MB/s; with this and the budget below, ~2.8 GB/s).
/// Checked only before a wait, not on every read: yielding every 50 µs while bytes were there
/// cost 10-20 % at 64 calls in flight. A reader that never needs to wait is held to tokio's
/// cooperative budget instead.
const RUN_MAX: Duration = Duration::from_micros(50);

/// [`RUN_MAX`] for a reader that yields sparingly: in a runtime with other workers, where each
/// yield wakes one of them ([`has_other_workers`]). Such a reader's waits take no cooperative
/// budget either, so this is what bounds how long a task that our own task woke (in the
/// worker's LIFO slot, which other workers cannot steal from) can wait behind us.
///
/// In a loop of lone `add` calls from a multi-thread client (2 vCPUs), a run of 200 or 400 µs
/// left the p99 at 6.8-12.8 µs, 1 ms brought it to 1.4-3.1 µs, and the budget alone (50 µs
/// runs) changed nothing. The cost is at depth: with every process on a multi-thread runtime,
/// 1000 calls in flight went from about 2,017 to 1,809 k calls/s (0 of 6 pairs; see the README).
const SPARING_RUN_MAX: Duration = Duration::from_millis(1);

/// The reading end of an `shm://` connection as a byte source, for the one frame driver. The
/// end of the bytes (`Ok` with nothing read) is the peer closing its ring, dropping the
/// connection or exiting; bytes it published before are delivered first.
#[derive(Debug)]
pub(crate) struct ShmReader {
    ring: Reader,
    /// Waits on the bell the peer's sender rings when it publishes.
    waiter: Waiter,
    /// Rung for the peer's sender when we make room.
    room_bell: Arc<Bell>,
    /// The peer's end of the data bell is closed, or the peer process exited.
    peer_gone: bool,
    /// Waits since `poll_read` last returned `Pending` (see [`RUN_MAX`]).
    run: Run,
    /// Whether this reader yields sparingly, decided where it first needs to know: in a runtime
    /// with other workers, where each yield wakes one of them ([`has_other_workers`]), unless
    /// the peer is in this process (it may be a task waiting behind us on this very worker).
    sparing: Option<bool>,
}

impl ShmReader {
    pub(crate) fn new(ring: Reader, waiter: Waiter, room_bell: Arc<Bell>) -> Self {
        ShmReader { ring, waiter, room_bell, peer_gone: false, run: Run::default(), sparing: None }
    }

    /// Whether this reader yields sparingly (see `sparing`); the first call decides.
    fn sparing(&mut self) -> bool {
        let in_process = self.waiter.in_process;
        *self.sparing.get_or_insert_with(|| !in_process && has_other_workers())
    }

    /// Moves available bytes into `buf`, freeing their room every [`STEP`] bytes (and ringing
    /// the peer's sender if it sleeps), so the writer refills the ring while we copy; returns
    /// how many moved.
    fn pull(&mut self, buf: &mut ReadBuf<'_>) -> io::Result<usize> {
        let mut pulled = 0;
        loop {
            let (n, wake_writer) = self.ring.read_into(buf, STEP)?;
            if wake_writer {
                self.room_bell.ring();
            }
            pulled += n;
            if n < STEP {
                break;
            }
        }
        if pulled > 0 && self.waiter.done() {
            self.ring.set_waiting(false);
        }
        Ok(pulled)
    }
}

impl AsyncRead for ShmReader {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // Each read takes a unit of tokio's budget, as its sockets' reads do: a peer that keeps
        // the ring full cannot keep this task from yielding.
        let coop = std::task::ready!(tokio::task::coop::poll_proceed(cx));
        let mut wakeups = 0;
        let mut waited = false;
        loop {
            // Read the end markers before the ring: bytes published before them are then seen.
            let ended = this.peer_gone || this.ring.writer_closed();
            if this.pull(buf)? > 0 || ended || buf.remaining() == 0 {
                // A sparing reader's read that had to wait gives its unit back (`coop` restores
                // it when dropped): over a socket, that wait would have returned `Pending` and
                // the task would have come back with a fresh budget, without a yield.
                if !(waited && this.sparing()) {
                    coop.made_progress();
                }
                return Poll::Ready(Ok(()));
            }
            waited = true;
            let run_max = if this.sparing() { SPARING_RUN_MAX } else { RUN_MAX };
            if this.run.yield_first(Instant::now(), run_max) {
                return yield_to_the_runtime(cx);
            }
            let ring = &this.ring;
            let polled = this.waiter.poll_wait(cx, &mut wakeups, |check| {
                if check == Check::AfterFlag {
                    ring.set_waiting(true);
                    return Ok(ring.available_after_flag()? > 0 || ring.writer_closed_after_flag());
                }
                Ok(ring.available()? > 0 || ring.writer_closed())
            });
            let Poll::Ready(woken) = polled else {
                this.run.yielded();
                return Poll::Pending;
            };
            let woken = woken?;
            if woken == Woken::PeerGone {
                this.peer_gone = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shm::region::{Direction, Region};
    use crate::shm::MIN_RING_LEN;

    /// A server's writer lending from a slab of 1 MiB and the client's reader of its ring of
    /// `ring_len` bytes, the slab's lender, and the bells' other ends (kept open).
    fn lending(ring_len: usize) -> (ShmWriter, Reader, rpc_core::loan::Lender, [UnixStream; 2]) {
        use crate::shm::lend::{SlabLender, SlabOut};
        use crate::shm::region::SlabMap;
        let (region, _fd) = Region::create(ring_len).unwrap();
        let region = Arc::new(region);
        let (slab, slab_fd) = SlabMap::create(1 << 20).unwrap();
        let slab = Arc::new(SlabOut::new(slab, Arc::clone(&region), Direction::ServerToClient));
        let lender = rpc_core::loan::Lender::new(SlabLender(Arc::clone(&slab)));
        let (data, data_peer) = UnixStream::pair().unwrap();
        let (room, room_peer) = UnixStream::pair().unwrap();
        let waiter = Waiter::new(Arc::new(Bell(room)), Spin::new(Duration::ZERO), PeerProcess::none(), true);
        let ring = Writer::new(Arc::clone(&region), Direction::ServerToClient);
        let writer = ShmWriter::new(ring, Arc::new(Bell(data)), waiter).with_slab(slab);
        let reader =
            Reader::new(region, Direction::ServerToClient).with_slab(SlabMap::open(&slab_fd, 1 << 20).unwrap());
        (writer, reader, lender, [data_peer, room_peer])
    }

    /// A frame the frame driver writes with a part filled in a loan (a slab block): sent again,
    /// the part crosses as one ring byte and a reference, the reader gets every byte in order,
    /// and a part of the same size from the heap crosses through the ring.
    #[tokio::test]
    async fn a_lent_part_crosses_by_reference() {
        let (mut writer, mut reader, lender, _bells) = lending(1 << 20);
        let mut loan = lender.loan(100_000);
        assert!(loan.is_shared());
        loan.iter_mut().enumerate().for_each(|(i, b)| *b = i as u8);
        let lent = loan.freeze();
        let heap = vec![5u8; 100_000];
        // The first send of a block copies it (see `lend`), later ones refer to it.
        let sends = [(&lent[..], 4 + 100_000 + 3), (&lent[..], 4 + 1 + 3), (&heap[..], 4 + 100_000 + 3)];
        for (payload, ring_bytes) in sends {
            let parts = [IoSlice::new(b"pre:"), IoSlice::new(payload), IoSlice::new(b"end")];
            assert_eq!(writer.try_write_vectored(&parts).unwrap(), 100_007);
            assert_eq!(reader.available().unwrap(), ring_bytes);
            let mut space = vec![0u8; 200_000];
            let mut buf = ReadBuf::new(&mut space);
            reader.read_into(&mut buf, usize::MAX).unwrap();
            assert!(buf.filled() == [&b"pre:"[..], payload, b"end"].concat());
        }
    }

    /// Frames with a lent part written through an 8 KiB ring in as many writes as the room the
    /// reader frees allows, each write starting where the last broke off (in the heap part, in
    /// the lent one, or between them), as the frame driver goes on with what was not taken: the
    /// bytes arrive in order, the lent part's first send copied and its later ones by reference.
    #[tokio::test]
    async fn writes_broken_off_anywhere_go_on_where_they_stopped() {
        let (mut writer, mut reader, lender, _bells) = lending(8192);
        let mut loan = lender.loan(20_000);
        loan.iter_mut().enumerate().for_each(|(i, b)| *b = (i % 251) as u8);
        let lent = loan.freeze();
        let heap: Vec<u8> = (0..10_000).map(|i| (i % 13) as u8).collect();
        let parts: [&[u8]; 4] = [b"pre:", &heap, &lent, b"end"];
        let frame = parts.concat();
        let mut take = 1usize;
        for round in 0..3 {
            let (mut sent, mut received) = (0, Vec::new());
            while received.len() < frame.len() {
                // The parts not yet taken, the first one cut where the last write stopped.
                let mut skip = sent;
                let slices: Vec<IoSlice<'_>> = parts
                    .iter()
                    .filter_map(|part| {
                        let cut = skip.min(part.len());
                        skip -= cut;
                        (cut < part.len()).then(|| IoSlice::new(&part[cut..]))
                    })
                    .collect();
                if !slices.is_empty() {
                    match writer.try_write_vectored(&slices) {
                        Ok(n) => sent += n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => panic!("round {round}, after {sent} bytes: {e}"),
                    }
                }
                take = take * 7 % 9_973 + 1;
                let mut space = vec![0u8; take];
                let mut buf = ReadBuf::new(&mut space);
                reader.read_into(&mut buf, usize::MAX).unwrap();
                received.extend_from_slice(buf.filled());
            }
            assert!(received == frame, "round {round}: the bytes arrived in order");
        }
    }

    /// A read that has to wait for its byte, polled with one unit of tokio's budget left:
    /// whether any budget is left after it. Another thread publishes each byte about 1 µs
    /// after the read began, within the reader's first slice of spinning; an attempt in which
    /// the byte came too early (the read did not wait) or too late (the slice ended: `Pending`)
    /// is read to its end and tried again.
    fn budget_left_after_a_waited_read(runtime: tokio::runtime::Runtime) -> bool {
        use std::future::Future;
        use std::sync::atomic::{AtomicU32, Ordering};
        const ATTEMPTS: u32 = 1000;
        // The bells' sockets register with this runtime's reactor.
        let _runtime = runtime.enter();
        let (region, _fd) = Region::create(MIN_RING_LEN).unwrap();
        let region = Arc::new(region);
        let mut writer = Writer::new(Arc::clone(&region), Direction::ClientToServer);
        let (data, _data_peer) = UnixStream::pair().unwrap();
        let (room, _room_peer) = UnixStream::pair().unwrap();
        let asked = Arc::new(AtomicU32::new(0));
        let publisher = {
            let asked = Arc::clone(&asked);
            std::thread::spawn(move || {
                for attempt in 1..=ATTEMPTS {
                    loop {
                        match asked.load(Ordering::Acquire) {
                            u32::MAX => return,
                            n if n >= attempt => break,
                            _ => std::hint::spin_loop(),
                        }
                    }
                    let at = Instant::now() + Duration::from_micros(1);
                    while Instant::now() < at {
                        std::hint::spin_loop();
                    }
                    writer.stage(&[7]);
                    writer.publish();
                }
            })
        };
        // Stops the publisher however the reads end (a failed assertion included).
        struct Stop(Arc<AtomicU32>);
        impl Drop for Stop {
            fn drop(&mut self) {
                self.0.store(u32::MAX, Ordering::Release);
            }
        }
        let stop = Stop(Arc::clone(&asked));
        let left = runtime.block_on(async move {
            tokio::spawn(async move {
                // A peer in another process: no `in_process` yield before the spin.
                let waiter =
                    Waiter::new(Arc::new(Bell(data)), Spin::new(Duration::from_millis(50)), PeerProcess::none(), false);
                let mut reader =
                    ShmReader::new(Reader::new(region, Direction::ClientToServer), waiter, Arc::new(Bell(room)));
                for _ in 0..ATTEMPTS {
                    // Polled afresh by the runtime, the task has its whole budget again.
                    tokio::task::yield_now().await;
                    let mut byte = [0u8; 1];
                    let mut buf = ReadBuf::new(&mut byte);
                    let attempt = std::future::poll_fn(|cx| {
                        for _ in 0..127 {
                            let spent = std::pin::pin!(tokio::task::coop::consume_budget()).poll(cx);
                            assert!(spent.is_ready(), "a task starts with a budget of 128");
                        }
                        assert!(tokio::task::coop::has_budget_remaining());
                        asked.fetch_add(1, Ordering::Release);
                        let read = Pin::new(&mut reader).poll_read(cx, &mut buf);
                        // A run of waits began in this read, and did not end in a `Pending`.
                        let waited = reader.run.running();
                        Poll::Ready(read.map(|read| (read, waited, tokio::task::coop::has_budget_remaining())))
                    })
                    .await;
                    match attempt {
                        Poll::Ready((read, waited, left)) => {
                            read.unwrap();
                            assert_eq!(buf.filled(), [7]);
                            if waited {
                                return left;
                            }
                        }
                        Poll::Pending => {
                            std::future::poll_fn(|cx| Pin::new(&mut reader).poll_read(cx, &mut buf)).await.unwrap();
                            assert_eq!(buf.filled(), [7]);
                            // The next attempt tells whether its read waited by the run it
                            // starts: end any this one left.
                            reader.run.yielded();
                        }
                    }
                }
                panic!("in {ATTEMPTS} attempts, no byte came within the read's first slice of spinning");
            })
            .await
            .unwrap()
        });
        drop(stop);
        publisher.join().unwrap();
        left
    }

    /// Where a yield is cheap (one thread), a read that waited takes a unit of budget like any
    /// other; where it wakes another worker, the read gives it back, as a socket's read that
    /// waited would have started afresh with a new budget.
    #[test]
    fn a_waited_read_takes_budget_only_where_there_are_no_other_workers() {
        use tokio::runtime::Builder;
        let current = Builder::new_current_thread().enable_all().build().unwrap();
        assert!(!budget_left_after_a_waited_read(current), "current-thread: the unit taken");
        let two = Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        assert!(budget_left_after_a_waited_read(two), "two workers: the unit given back");
    }

    /// Fills the ring's free room with sevens.
    fn fill(writer: &mut Writer) {
        let room = writer.free().unwrap();
        writer.stage(&vec![7u8; room]);
        writer.publish();
    }

    #[tokio::test]
    async fn a_reader_that_always_finds_bytes_still_lets_its_thread_run_others() {
        let (region, _fd) = Region::create(MIN_RING_LEN).unwrap();
        let region = Arc::new(region);
        let mut writer = Writer::new(Arc::clone(&region), Direction::ClientToServer);
        let (data, _data_peer) = UnixStream::pair().unwrap();
        let (room, _room_peer) = UnixStream::pair().unwrap();
        let waiter = Waiter::new(Arc::new(Bell(data)), Spin::new(Duration::from_micros(50)), PeerProcess::none(), true);
        let mut reader = ShmReader::new(Reader::new(region, Direction::ClientToServer), waiter, Arc::new(Bell(room)));
        // A byte at a time (a read loop taking small frames one by one), the ring refilled
        // whenever it runs dry: every read finds a byte, for as long as the reader keeps going.
        // It never waits, so what makes it yield is tokio's budget (this test body is polled
        // with one, as every task is).
        fill(&mut writer);
        let started = Instant::now();
        let (read, yielded) = std::future::poll_fn(|cx| {
            let mut read = 0u64;
            while started.elapsed() < Duration::from_secs(1) {
                if reader.ring.available().unwrap() == 0 {
                    fill(&mut writer);
                }
                let mut byte = [0u8; 1];
                let mut buf = ReadBuf::new(&mut byte);
                match Pin::new(&mut reader).poll_read(cx, &mut buf) {
                    Poll::Ready(result) => {
                        result.unwrap();
                        assert_eq!(buf.filled(), [7]);
                        read += 1;
                    }
                    Poll::Pending => return Poll::Ready((read, true)),
                }
            }
            Poll::Ready((read, false))
        })
        .await;
        assert!(yielded, "{read} reads in 1 s, each finding a byte, without ever yielding");
        // The yield lost nothing: what was there is read next.
        let left = reader.ring.available().unwrap();
        assert!(left > 0);
        let mut rest = vec![0u8; left];
        let mut buf = ReadBuf::new(&mut rest);
        std::future::poll_fn(|cx| Pin::new(&mut reader).poll_read(cx, &mut buf)).await.unwrap();
        assert_eq!(buf.filled().len(), left);
    }
}
