//! The shared mappings of one `shm://` connection, and the only unsafe code of the shm transport
//! besides the copy it uses (`copy.rs`) and the lending of slab blocks (`lend.rs`): the rings'
//! mapping, the slabs' mappings ([`SlabMap`]), and one `setsockopt` that rustix has no wrapper
//! for ([`refuse_passed_fds`]).
//!
//! Layout of the memfd (all offsets fixed, nothing in it describes the layout; the ring size is
//! agreed during setup and checked against the file's size):
//!
//! ```text
//! 0       control block of ring 0 (client -> server), 1664 bytes (7 lines of 128, 32 slots of 24)
//! 1664    control block of ring 1 (server -> client), 1664 bytes
//! 4096    ring 0 data, `ring_len` bytes
//! 4096 + ring_len   ring 1 data, `ring_len` bytes
//! ```
//!
//! **Trust.** The peer maps the same memory and may be buggy or hostile, so this module never
//! lets a value read from the mapping decide where it reads or writes: callers pass offsets they
//! computed from their own state, and every copy checks its range against the ring size fixed at
//! setup. Shared bytes are copied with raw pointers only, never seen through `&[u8]` (the peer
//! can change them at any time, which a shared reference would promise cannot happen); shared
//! words are atomics. The memfd is sealed against shrinking and growing before the peer gets it,
//! and a received memfd must carry those seals, so neither side can make the other's mapping
//! shorter (which would turn our loads into `SIGBUS`).

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64};

use rustix::fs::{FileType, MemfdFlags, SealFlags};
use rustix::mm::{MapFlags, ProtFlags};
use tokio::io::ReadBuf;

/// Smallest ring, in bytes.
pub(crate) const MIN_RING_LEN: usize = 4096;
/// Largest ring, in bytes.
pub(crate) const MAX_RING_LEN: usize = 64 << 20;
/// Bytes before the first ring: the two control blocks, padded to a page.
const CONTROL_LEN: usize = 4096;
/// Seals a region's memfd must carry.
const REQUIRED_SEALS: SealFlags = SealFlags::SHRINK.union(SealFlags::GROW);

/// One of the two rings of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    /// Written by the client, read by the server.
    ClientToServer = 0,
    /// Written by the server, read by the client.
    ServerToClient = 1,
}

/// A value on a cache line of its own (128 bytes: adjacent-line prefetch pairs lines), so the
/// two sides' stores do not slow each other down.
#[repr(C, align(128))]
pub(crate) struct Line<T>(pub(crate) T);

/// The shared words of one ring. Each is stored by one side; the other side only loads it,
/// except the waiting flags, which the other side clears when it rings the bell.
#[repr(C)]
pub(crate) struct Control {
    /// Stream index one past the last byte the writer published.
    pub(crate) head: Line<AtomicU64>,
    /// Stream index of the first byte the reader has not consumed.
    pub(crate) tail: Line<AtomicU64>,
    /// Set by the reader before it sleeps; the writer clears it and rings the data bell.
    pub(crate) reader_waiting: Line<AtomicU32>,
    /// Set by the writer before it sleeps on a full ring; the reader clears it and rings.
    pub(crate) writer_waiting: Line<AtomicU32>,
    /// Set by the writer when it will write no more (its half was closed).
    pub(crate) closed: Line<AtomicU32>,
    /// References to the writer's slab pushed into `refs` (stored by the writer).
    pub(crate) refs_head: Line<AtomicU64>,
    /// References the reader has copied out (stored by the reader): the writer's blocks behind
    /// them may be reused.
    pub(crate) refs_tail: Line<AtomicU64>,
    /// The queue of references, reference `n` in slot `n % REFS` (see [`super::ring`]).
    pub(crate) refs: [RefSlot; REFS],
}

/// Slots in a ring's queue of slab references: at most this many references are in flight
/// (sent and not yet copied out by the reader) at once; a writer that finds the queue full
/// copies the bytes instead.
pub(crate) const REFS: usize = 32;

/// One reference: the byte at stream index `at` of the ring stands for `len` bytes of the
/// writer's slab at `offset`. Stored by the writer before the ring's head passes `at`.
#[repr(C)]
pub(crate) struct RefSlot {
    pub(crate) at: AtomicU64,
    pub(crate) offset: AtomicU64,
    pub(crate) len: AtomicU64,
}

const _: () = assert!(2 * std::mem::size_of::<Control>() <= CONTROL_LEN);

/// The number of bytes a region with rings of `ring_len` bytes occupies.
pub(crate) fn region_len(ring_len: usize) -> usize {
    CONTROL_LEN + 2 * ring_len
}

/// Whether `ring_len` is a ring size both sides accept.
pub(crate) fn valid_ring_len(ring_len: usize) -> bool {
    ring_len.is_power_of_two() && (MIN_RING_LEN..=MAX_RING_LEN).contains(&ring_len)
}

/// A shared mapping of a connection's memfd, unmapped on drop.
#[derive(Debug)]
pub(crate) struct Region {
    base: NonNull<u8>,
    ring_len: usize,
}

// SAFETY: the mapping is plain memory owned by this value until drop. Every access through a
// shared `&Region` is either an atomic (`control`) or a raw copy whose range is checked
// (`write`, `read_into`); which side may write which ring is enforced by the single `ring::Writer`
// and `ring::Reader` built on it, so moving or sharing the handle between threads adds no data
// race that the peer process could not cause anyway (and that the copies are written to
// tolerate: the bytes are plain `u8`s, and anything read is validated after the copy).
unsafe impl Send for Region {}
// SAFETY: as above.
unsafe impl Sync for Region {}

impl Region {
    /// Creates the memfd of a new connection (sealed: it can never shrink or grow) and maps it.
    /// The fd is what the peer receives; nothing is created in any file system.
    pub(crate) fn create(ring_len: usize) -> io::Result<(Region, OwnedFd)> {
        assert!(valid_ring_len(ring_len), "ring size {ring_len} was validated by the options");
        let fd = rustix::fs::memfd_create("rpc-shm", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)?;
        rustix::fs::ftruncate(&fd, region_len(ring_len) as u64)?;
        rustix::fs::fcntl_add_seals(&fd, REQUIRED_SEALS | SealFlags::SEAL)?;
        let region = Region::map(&fd, ring_len)?;
        Ok((region, fd))
    }

    /// Maps a memfd received from the peer after checking that it is what setup promised: a
    /// regular file of exactly the expected size, sealed against shrinking and growing.
    pub(crate) fn open(fd: &OwnedFd, ring_len: usize) -> io::Result<Region> {
        if !valid_ring_len(ring_len) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the server offered rings of {ring_len} bytes"),
            ));
        }
        check_received(fd, region_len(ring_len), "the shared memory")?;
        Region::map(fd, ring_len)
    }

    fn map(fd: &OwnedFd, ring_len: usize) -> io::Result<Region> {
        let base = map_shared(fd, region_len(ring_len), ProtFlags::READ | ProtFlags::WRITE)?;
        Ok(Region { base, ring_len })
    }

    /// Faults every page of the mapping in, in this process, allocating those the peer has not
    /// yet: what the first lap of traffic round each ring would otherwise do a page at a time.
    /// Best effort: on kernels before 5.14 (no `MADV_POPULATE_WRITE`) pages stay faulted in
    /// on first use. The bytes are not changed, so the rings may be in use meanwhile.
    pub(crate) fn populate(&self) -> io::Result<()> {
        // SAFETY: `base..base + len` is exactly our mapping, alive while `self` is. Populating
        // only installs the pages the mapping would fault in on a write; it changes no byte.
        unsafe {
            rustix::mm::madvise(
                self.base.as_ptr().cast(),
                region_len(self.ring_len),
                rustix::mm::Advice::LinuxPopulateWrite,
            )?
        };
        Ok(())
    }

    /// The size of each ring in bytes (a power of two).
    pub(crate) fn ring_len(&self) -> usize {
        self.ring_len
    }

    /// The control block of one ring.
    pub(crate) fn control(&self, ring: Direction) -> &Control {
        let offset = ring as usize * std::mem::size_of::<Control>();
        // SAFETY: `offset + size_of::<Control>() <= CONTROL_LEN <= len` (checked at compile
        // time above), the mapping is page-aligned so the 128-byte alignment holds, and every
        // bit pattern is a valid `Control` (it holds only atomics and padding). The reference
        // lives no longer than `self`, which keeps the mapping. The peer writes these words
        // concurrently, which is what atomics are for.
        unsafe { &*self.base.as_ptr().add(offset).cast::<Control>() }
    }

    fn data(&self, ring: Direction, offset: usize, len: usize) -> *mut u8 {
        assert!(offset <= self.ring_len && len <= self.ring_len - offset, "copy outside the ring");
        let start = CONTROL_LEN + ring as usize * self.ring_len + offset;
        // SAFETY: `start + len <= CONTROL_LEN + 2 * ring_len = len of the mapping` by the assert.
        unsafe { self.base.as_ptr().add(start) }
    }

    /// Copies `src` into `ring` at `offset`. Panics if the range leaves the ring (a bug in the
    /// caller's index math, never something the peer controls).
    pub(crate) fn write(&self, ring: Direction, offset: usize, src: &[u8]) {
        let dst = self.data(ring, offset, src.len());
        // SAFETY: `dst..dst + src.len()` lies inside the mapping (checked by `data`), which no
        // Rust reference points into, and cannot overlap `src`, which is private memory. The
        // peer may read these bytes meanwhile (it only reads what we published, unless hostile),
        // which cannot affect us.
        unsafe { super::copy::copy(src.as_ptr(), dst, src.len()) }
    }

    /// Appends `len` bytes of `ring` at `offset` to `buf`. Panics like [`write`](Self::write),
    /// and if `buf` has less room than `len`.
    pub(crate) fn read_into(&self, ring: Direction, offset: usize, len: usize, buf: &mut ReadBuf<'_>) {
        let src = self.data(ring, offset, len);
        // SAFETY: `src..src + len` lies inside the mapping (checked by `data`), alive while
        // `self` is.
        unsafe { copy_out(src, len, buf) }
    }
}

/// Appends `len` bytes at `src` to `buf`, with a raw copy: the peer may change them meanwhile.
/// Panics if `buf` has less room than `len`.
///
/// # Safety
///
/// `src` is valid for reads of `len` bytes (a range of one of our mappings).
unsafe fn copy_out(src: *const u8, len: usize, buf: &mut ReadBuf<'_>) {
    assert!(buf.remaining() >= len, "a copy of {len} bytes into {} bytes of room", buf.remaining());
    // SAFETY: the caller of `unfilled_mut` must not de-initialise bytes; we only write
    // initialised `u8`s into them.
    let dst = unsafe { buf.unfilled_mut() }.as_mut_ptr().cast::<u8>();
    // SAFETY: `src` is readable for `len` bytes (the caller's promise); `dst` has at least `len`
    // bytes (asserted) of private memory, so the ranges cannot overlap. A hostile peer may
    // change the source bytes during the copy: we get some mix of old and new `u8`s, every one
    // of which is a valid `u8`, and the frame decoder validates whatever arrives. After the copy
    // the first `len` unfilled bytes are initialised, which is what `assume_init` asks.
    unsafe {
        super::copy::copy(src, dst, len);
        buf.assume_init(len);
    }
    buf.advance(len);
}

/// Checks that a memfd received from the peer is what setup announced: a regular file (not a
/// socket, not a device) of exactly `len` bytes, sealed against shrinking and growing, so that
/// its peer cannot make our mapping of it shorter (which would turn our loads into `SIGBUS`).
/// `what` names it in the errors.
fn check_received(fd: &OwnedFd, len: usize, what: &str) -> io::Result<()> {
    let bad = |why: String| io::Error::new(io::ErrorKind::InvalidData, format!("bad shared-memory setup: {why}"));
    let stat = rustix::fs::fstat(fd)?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
        return Err(bad(format!("{what} is not shared memory")));
    }
    if u64::try_from(stat.st_size).ok() != Some(len as u64) {
        return Err(bad(format!("{what} has {} bytes, not the {len} announced", stat.st_size)));
    }
    if !rustix::fs::fcntl_get_seals(fd)?.contains(REQUIRED_SEALS) {
        return Err(bad(format!("{what} is not sealed against resizing")));
    }
    Ok(())
}

/// Maps `len` bytes of `fd` shared, with `prot`.
fn map_shared(fd: &OwnedFd, len: usize, prot: ProtFlags) -> io::Result<NonNull<u8>> {
    // SAFETY: a fresh mapping chosen by the kernel (null hint, no MAP_FIXED) cannot alias any
    // Rust object. The callers made or checked the file to be at least `len` bytes and sealed
    // against shrinking, so every page of the mapping stays backed.
    let ptr = unsafe { rustix::mm::mmap(std::ptr::null_mut(), len, prot, MapFlags::SHARED, fd.as_fd(), 0)? };
    NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: the mapping was created by `map` with this address and length, and nothing
        // borrowed from it outlives `self` (`control` references are tied to `&self`).
        let _ = unsafe { rustix::mm::munmap(self.base.as_ptr().cast(), region_len(self.ring_len)) };
    }
}

/// The largest slab, in bytes: also what a hostile server can make a client map (and fault in,
/// a page for each reference into memory it never wrote).
pub(crate) const MAX_SLAB_LEN: usize = 256 << 20;
/// The smallest slab that is not 0: one block of the smallest payload that is lent.
pub(crate) const MIN_SLAB_LEN: usize = super::lend::LEND_MIN;

/// Whether `len` is a slab size both sides accept (0: no slab).
pub(crate) fn valid_slab_len(len: usize) -> bool {
    len == 0 || (len % 4096 == 0 && (MIN_SLAB_LEN..=MAX_SLAB_LEN).contains(&len))
}

/// A mapping of one side's slab: memory its owner lends to users to fill in place, and the
/// peer only reads (see [`super::lend`]). The owner maps it writable and then seals the memfd
/// against any further write access (`F_SEAL_FUTURE_WRITE`) before the peer gets it, so the
/// peer can map it read-only and nothing else: a user writing a lent buffer through a
/// `&mut [u8]` is the only writer of those bytes, as Rust requires of it. The peer, which must
/// assume the owner changes them at any time, only copies them out with raw pointers, as it
/// does the ring's bytes.
#[derive(Debug)]
pub(crate) struct SlabMap {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: as for `Region`: plain memory owned by this value until drop; every access goes
// through a raw copy or a lent range whose exclusive use `super::lend` arranges.
unsafe impl Send for SlabMap {}
// SAFETY: as above.
unsafe impl Sync for SlabMap {}

impl SlabMap {
    /// Creates a slab of `len` bytes (`valid_slab_len`, not 0), mapped writable here and
    /// sealed so that the fd returned, which the peer receives, maps read-only. Fails with
    /// `EINVAL` where the kernel has no `F_SEAL_FUTURE_WRITE` (before Linux 5.1).
    pub(crate) fn create(len: usize) -> io::Result<(SlabMap, OwnedFd)> {
        assert!(len > 0 && valid_slab_len(len), "slab size {len} was validated by the options");
        let fd = rustix::fs::memfd_create("rpc-shm-slab", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)?;
        rustix::fs::ftruncate(&fd, len as u64)?;
        let base = map_shared(&fd, len, ProtFlags::READ | ProtFlags::WRITE)?;
        let slab = SlabMap { base, len };
        // After our writable mapping exists: the seal refuses new ones (and `write`s, and
        // turning a read-only mapping writable), and keeps ours.
        rustix::fs::fcntl_add_seals(&fd, REQUIRED_SEALS | SealFlags::FUTURE_WRITE | SealFlags::SEAL)?;
        Ok((slab, fd))
    }

    /// Maps the peer's slab read-only after checking that it is what setup promised: a
    /// regular file of exactly `len` bytes, sealed against resizing. (Whether its owner sealed
    /// it against our writes is the owner's concern: we only read it, with raw copies.)
    pub(crate) fn open(fd: &OwnedFd, len: usize) -> io::Result<SlabMap> {
        if len == 0 || !valid_slab_len(len) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad shared-memory setup: the server offered a slab of {len} bytes"),
            ));
        }
        check_received(fd, len, "the slab")?;
        Ok(SlabMap { base: map_shared(fd, len, ProtFlags::READ)?, len })
    }

    /// The slab's size in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The address of the byte at `offset` (for lending a block; only the owner's mapping may
    /// be written through it).
    pub(crate) fn at(&self, offset: usize) -> NonNull<u8> {
        assert!(offset < self.len, "offset {offset} outside a slab of {} bytes", self.len);
        // SAFETY: `offset < len`, so the result stays inside the mapping.
        unsafe { self.base.add(offset) }
    }

    /// Where `bytes` starts in the slab, if all of it lies inside.
    pub(crate) fn offset_of(&self, bytes: &[u8]) -> Option<usize> {
        let offset = (bytes.as_ptr() as usize).checked_sub(self.base.as_ptr() as usize)?;
        (offset <= self.len && bytes.len() <= self.len - offset).then_some(offset)
    }

    /// Appends `len` bytes at `offset` to `buf`. Panics if the range leaves the slab (the
    /// caller checks what the peer sent first) or `buf` has less room than `len`. The owner
    /// may change the bytes during the copy (only if buggy or hostile: it reuses a block only
    /// after we said we copied it out).
    pub(crate) fn read_into(&self, offset: usize, len: usize, buf: &mut ReadBuf<'_>) {
        assert!(offset <= self.len && len <= self.len - offset, "copy outside the slab");
        // SAFETY: `offset..offset + len` lies inside the mapping (asserted), alive while `self` is.
        unsafe { copy_out(self.base.as_ptr().add(offset), len, buf) }
    }
}

impl Drop for SlabMap {
    fn drop(&mut self) {
        // SAFETY: the mapping was made by `map` with this address and length; lent buffers
        // keep the `SlabMap` alive (through `super::lend`), so nothing points into it now.
        let _ = unsafe { rustix::mm::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

/// `SO_PASSRIGHTS` (Linux 6.16+): whether a socket accepts file descriptors passed to it.
const SO_PASSRIGHTS: libc::c_int = 83;

/// Makes the kernel refuse `SCM_RIGHTS` sent to this socket (the sender gets `EPERM`). A
/// hostile peer could otherwise park its own end of a bell in our queue, where it keeps the
/// bell open after the peer has gone. `false` where the kernel lacks the option (the peer's
/// pidfd still reports its exit).
pub(crate) fn refuse_passed_fds(socket: &impl AsFd) -> bool {
    let off: libc::c_int = 0;
    // SAFETY: `socket` is an open descriptor for the duration of the call (it is borrowed), and
    // the option value points to a live `c_int` whose size is passed with it; setsockopt only
    // reads it.
    let rc = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&socket.as_fd()),
            libc::SOL_SOCKET,
            SO_PASSRIGHTS,
            std::ptr::from_ref(&off).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    rc == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn two_mappings_of_one_memfd_share_bytes_and_words() {
        let (a, fd) = Region::create(MIN_RING_LEN).unwrap();
        let b = Region::open(&fd, MIN_RING_LEN).unwrap();
        a.write(Direction::ServerToClient, MIN_RING_LEN - 3, b"xyz");
        let mut space = [0u8; 3];
        let mut buf = ReadBuf::new(&mut space);
        b.read_into(Direction::ServerToClient, MIN_RING_LEN - 3, 3, &mut buf);
        assert_eq!(buf.filled(), b"xyz");
        a.control(Direction::ClientToServer).head.0.store(42, Ordering::SeqCst);
        assert_eq!(b.control(Direction::ClientToServer).head.0.load(Ordering::SeqCst), 42);
        assert_eq!(b.control(Direction::ServerToClient).head.0.load(Ordering::SeqCst), 0);
    }

    /// Minor page faults this thread has taken so far.
    fn minor_faults() -> i64 {
        let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
        // SAFETY: `getrusage` fills the `rusage` it is given; zeroed is a valid one anyway.
        assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_THREAD, usage.as_mut_ptr()) }, 0);
        // SAFETY: initialised (zeroed, then filled).
        unsafe { usage.assume_init() }.ru_minflt
    }

    /// Writes a byte into every page of both rings; returns the page faults that took.
    fn touch_every_page(region: &Region) -> i64 {
        let before = minor_faults();
        for ring in [Direction::ClientToServer, Direction::ServerToClient] {
            for offset in (0..region.ring_len()).step_by(4096) {
                region.write(ring, offset, &[offset as u8 ^ 0x5a]);
            }
        }
        minor_faults() - before
    }

    #[test]
    fn a_populated_mapping_takes_no_faults_and_keeps_its_bytes() {
        let ring_len = 64 * 4096;
        let (cold, fd) = Region::create(ring_len).unwrap();
        let cold_faults = touch_every_page(&cold);
        assert!(cold_faults >= 100, "a fresh mapping faults each of its 128 ring pages in: {cold_faults}");

        // The peer's mapping of the same (now allocated) pages, populated: what the other
        // side wrote is still there, and writing takes no fault.
        let peer = Region::open(&fd, ring_len).unwrap();
        if let Err(e) = peer.populate() {
            assert_eq!(e.raw_os_error(), Some(rustix::io::Errno::INVAL.raw_os_error()), "{e}");
            eprintln!("no MADV_POPULATE_WRITE on this kernel (before 5.14): nothing to test");
            return;
        }
        let mut space = [0u8; 1];
        let mut buf = ReadBuf::new(&mut space);
        peer.read_into(Direction::ServerToClient, 4096 * 7, 1, &mut buf);
        assert_eq!(buf.filled(), [(4096 * 7) as u8 ^ 0x5a]);
        let peer_faults = touch_every_page(&peer);
        assert!(peer_faults < 8, "a populated mapping took {peer_faults} faults");

        let (warm, _fd) = Region::create(ring_len).unwrap();
        warm.populate().unwrap();
        let warm_faults = touch_every_page(&warm);
        assert!(warm_faults < 8, "a populated fresh mapping took {warm_faults} faults");
    }

    #[test]
    #[should_panic(expected = "copy outside the ring")]
    fn copies_outside_the_ring_panic() {
        let (a, _fd) = Region::create(MIN_RING_LEN).unwrap();
        a.write(Direction::ClientToServer, MIN_RING_LEN - 2, b"xyz");
    }

    #[test]
    fn open_refuses_what_setup_did_not_promise() {
        let (_a, fd) = Region::create(MIN_RING_LEN).unwrap();
        let err = Region::open(&fd, 2 * MIN_RING_LEN).unwrap_err();
        assert!(err.to_string().contains("not the"), "{err}");
        assert!(Region::open(&fd, 3000).unwrap_err().to_string().contains("offered rings"));

        // Unsealed: the peer could shrink it under us.
        let unsealed = rustix::fs::memfd_create("t", MemfdFlags::CLOEXEC).unwrap();
        rustix::fs::ftruncate(&unsealed, region_len(MIN_RING_LEN) as u64).unwrap();
        let err = Region::open(&unsealed, MIN_RING_LEN).unwrap_err();
        assert!(err.to_string().contains("not sealed"), "{err}");

        // Not a file at all.
        let (sock, _) = std::os::unix::net::UnixStream::pair().unwrap();
        let err = Region::open(&OwnedFd::from(sock), MIN_RING_LEN).unwrap_err();
        assert!(err.to_string().contains("not shared memory"), "{err}");
    }

    #[test]
    fn the_seals_hold() {
        let (_a, fd) = Region::create(MIN_RING_LEN).unwrap();
        assert!(rustix::fs::ftruncate(&fd, 0).is_err(), "shrinking must be refused");
        assert!(rustix::fs::ftruncate(&fd, 1 << 30).is_err(), "growing must be refused");
        assert!(rustix::fs::fcntl_add_seals(&fd, SealFlags::WRITE).is_err(), "the seals are sealed");
    }

    #[test]
    fn a_slab_maps_read_only_for_the_peer_and_stays_so() {
        let (ours, fd) = SlabMap::create(MIN_SLAB_LEN).unwrap();
        let theirs = SlabMap::open(&fd, MIN_SLAB_LEN).unwrap();
        // What the owner writes, the peer reads.
        // SAFETY: the owner's mapping is writable, `MIN_SLAB_LEN` (4 pages) long; nothing else
        // uses it here.
        unsafe { ours.at(4096).as_ptr().write(42) };
        let mut space = [0u8; 3];
        let mut buf = ReadBuf::new(&mut space);
        theirs.read_into(4095, 3, &mut buf);
        assert_eq!(buf.filled(), [0, 42, 0]);
        // The peer cannot turn its mapping writable, write the file or map it writable anew,
        // nor resize it.
        // SAFETY: changes only the protection of the peer's mapping, which this test owns and
        // does not use again if the call (wrongly) succeeds.
        let upgraded =
            unsafe { rustix::mm::mprotect(theirs.at(0).as_ptr().cast(), 4096, rustix::mm::MprotectFlags::WRITE) };
        assert!(upgraded.is_err(), "the read-only mapping must stay read-only");
        assert!(rustix::io::pwrite(&fd, b"x", 0).is_err(), "writes through the fd are refused");
        // SAFETY: a fresh mapping (or, as expected, an error); unmapped at once if it succeeds.
        let writable = unsafe {
            rustix::mm::mmap(std::ptr::null_mut(), 4096, ProtFlags::READ | ProtFlags::WRITE, MapFlags::SHARED, &fd, 0)
        };
        if let Ok(ptr) = writable {
            // SAFETY: the mapping just made.
            let _ = unsafe { rustix::mm::munmap(ptr, 4096) };
            panic!("a writable mapping of a sealed slab was allowed");
        }
        assert!(rustix::fs::ftruncate(&fd, 4096).is_err(), "shrinking must be refused");
        assert_eq!(ours.offset_of(&[1, 2, 3]), None, "a slice elsewhere is not in the slab");
    }

    #[test]
    fn a_peer_slab_must_be_sealed_against_resizing_and_of_the_announced_size() {
        let (_ours, fd) = SlabMap::create(16 << 10).unwrap();
        assert!(SlabMap::open(&fd, 32 << 10).unwrap_err().to_string().contains("not the 32768 announced"));
        assert!(SlabMap::open(&fd, 40_000).unwrap_err().to_string().contains("slab of 40000 bytes"));
        assert!(SlabMap::open(&fd, 4096).unwrap_err().to_string().contains("slab of 4096 bytes"), "too small to lend");
        // Not sealed against resizing: its owner could shrink it under us.
        let unsealed = rustix::fs::memfd_create("t", MemfdFlags::CLOEXEC).unwrap();
        rustix::fs::ftruncate(&unsealed, 16 << 10).unwrap();
        let err = SlabMap::open(&unsealed, 16 << 10).unwrap_err();
        assert!(err.to_string().contains("the slab is not sealed against resizing"), "{err}");
    }
}
