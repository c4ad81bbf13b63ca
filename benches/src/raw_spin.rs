//! The `shm` row's limit: a plain shared-memory ping-pong between the harness and a raw server
//! process — a memfd mapping, a few atomics, a spinning wait. No tokio, no ring, no framing.
//!
//! The server listens on an abstract Unix socket. A client connects and sends its message size
//! (8 little-endian bytes, as every raw row announces it); the server creates a memfd of
//! [`HEADER`] + 2 × the size (rounded up to a page), maps it, and passes it back over the socket
//! as `SCM_RIGHTS`. From then on the socket only tells a side that its peer is gone; the bytes
//! travel through the mapping, one mailbox per direction:
//!
//! ```text
//! header page: c2s {seq, ack, len, closed} s2c {seq, ack, len, closed}, each word on its own
//!              64-byte line
//! then:        c2s data (size bytes, page-rounded), s2c data (the same)
//! ```
//!
//! A writer waits until the reader has acknowledged its previous message (`ack == seq`), copies
//! the bytes into its direction's data area, stores `len` and bumps `seq` (release). The reader
//! waits for `seq` to move (acquire), copies the bytes out and stores `ack` (release). A message
//! is therefore one memcpy in and one out, as a socket's write and read are; an echo of `n` bytes
//! is four copies of `n` bytes. This side implements `Read` and `Write` over that, so the raw
//! echo and one-way loops of `raw.rs` run over it unchanged (a `write` is one message of at most
//! the announced size).
//!
//! Waiting spins [`SPINS`] PAUSEs, then yields the CPU between checks (so `--pin-same`, both
//! processes on one CPU, still makes progress) and every [`YIELDS_PER_CHECK`] yields peeks at the
//! socket: EOF there is a dead peer. A side that hangs up sets its `closed` word first.
//!
//! Every value read from the mapping is the peer's to choose: `len` is clamped to the data area,
//! and nothing else from it is used as an index.

use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::mm::{MapFlags, ProtFlags};
use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer, SendAncillaryMessage};

/// The header page holding both mailboxes' words.
const HEADER: usize = 4096;
/// The granule data areas are rounded up to.
const PAGE: usize = 4096;
/// The largest data area a server agrees to map (per direction).
const MAX_SIZE: usize = 1 << 30;
/// PAUSEs a waiting side spins before it starts yielding its CPU between checks: at ~28 ns a
/// PAUSE here, ~7 µs, far beyond a cross-CPU round trip (0.1–0.4 µs).
const SPINS: u32 = 256;
/// Yields between two checks that the peer's socket is still open.
const YIELDS_PER_CHECK: u32 = 1024;

/// One direction's words in the header page (byte offsets) and its data area.
#[derive(Clone, Copy)]
struct Mailbox {
    seq: usize,
    ack: usize,
    len: usize,
    closed: usize,
    data: usize,
}

impl Mailbox {
    fn new(words: usize, data: usize) -> Self {
        Self { seq: words, ack: words + 64, len: words + 128, closed: words + 192, data }
    }
}

/// The data area for an announced size (the one-way bit of `raw.rs` ignored), page-rounded.
fn capacity(announced: u64) -> io::Result<usize> {
    let size = (announced & !crate::raw::ONE_WAY).max(16);
    let size = usize::try_from(size).ok().filter(|&s| s <= MAX_SIZE).ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, format!("spin: message size {size} over {MAX_SIZE}"))
    })?;
    Ok(size.div_ceil(PAGE) * PAGE)
}

/// A shared mapping of a memfd, unmapped on drop.
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mapping {
    fn new(memfd: &OwnedFd, len: usize) -> io::Result<Self> {
        // SAFETY: a fresh shared mapping of a memfd we hold, at an address the kernel chooses;
        // no Rust object aliases it.
        let ptr = unsafe {
            rustix::mm::mmap(std::ptr::null_mut(), len, ProtFlags::READ | ProtFlags::WRITE, MapFlags::SHARED, memfd, 0)?
        };
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Self { ptr, len })
    }

    /// The atomic word at `offset` in the header page.
    fn word(&self, offset: usize) -> &AtomicU64 {
        assert!(offset % 8 == 0 && offset + 8 <= HEADER.min(self.len), "word offset {offset}");
        // SAFETY: the offset is 8-aligned (the mapping is page-aligned) and inside the mapping,
        // which lives as long as `self`; the memfd's bytes start zeroed, a valid AtomicU64, and
        // both processes only ever access these words atomically.
        unsafe { &*self.ptr.as_ptr().add(offset).cast::<AtomicU64>() }
    }

    /// A pointer to `len` bytes at `offset`, checked to lie inside the mapping.
    fn bytes(&self, offset: usize, len: usize) -> *mut u8 {
        assert!(offset.checked_add(len).is_some_and(|end| end <= self.len), "{len} bytes at {offset}");
        // SAFETY: in bounds, as just checked.
        unsafe { self.ptr.as_ptr().add(offset) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping `new` made; no reference into it outlives `self`.
        let _ = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// One end of a connection: its mapping, the socket (liveness only), and where each direction is.
pub struct Spin {
    map: Mapping,
    sock: UnixStream,
    cap: usize,
    tx: Mailbox,
    rx: Mailbox,
    /// Messages written to `tx`.
    sent: u64,
    /// Messages fully read from `rx`.
    seen: u64,
    /// The length of the `rx` message being read, and how much of it was taken.
    current: Option<usize>,
    at: usize,
}

impl Spin {
    fn new(map: Mapping, sock: UnixStream, cap: usize, client: bool) -> Self {
        let (c2s, s2c) = (Mailbox::new(0, HEADER), Mailbox::new(256, HEADER + cap));
        let (tx, rx) = if client { (c2s, s2c) } else { (s2c, c2s) };
        Self { map, sock, cap, tx, rx, sent: 0, seen: 0, current: None, at: 0 }
    }

    /// Connects to the raw spin server on the abstract socket `name`, announcing `size`.
    pub fn connect(name: &str, size: u64) -> io::Result<Self> {
        let cap = capacity(size)?;
        let mut sock = crate::raw::connect_abstract(name)?;
        sock.write_all(&size.to_le_bytes())?;
        let memfd = receive_fd(&sock)?;
        let len = HEADER + 2 * cap;
        if rustix::fs::fstat(&memfd)?.st_size != len as i64 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "spin: the server's memfd has the wrong size"));
        }
        Ok(Self::new(Mapping::new(&memfd, len)?, sock, cap, true))
    }

    /// Waits until `ready` holds (true) or the peer's socket reaches EOF first (false).
    fn wait(&self, ready: impl Fn() -> bool) -> bool {
        for _ in 0..SPINS {
            if ready() {
                return true;
            }
            std::hint::spin_loop();
        }
        let mut yields = 0u32;
        loop {
            if ready() {
                return true;
            }
            std::thread::yield_now();
            yields += 1;
            if yields % YIELDS_PER_CHECK == 0 && self.peer_gone() {
                return ready();
            }
        }
    }

    /// Whether the peer closed its socket (it exited or dropped its end).
    fn peer_gone(&self) -> bool {
        let mut byte = [0u8; 1];
        match rustix::net::recv(&self.sock, &mut byte[..], RecvFlags::PEEK | RecvFlags::DONTWAIT) {
            Ok((0, _)) => true,
            Ok(_) => false,
            Err(e) => e != rustix::io::Errno::AGAIN,
        }
    }
}

impl Read for Spin {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        let len = loop {
            if let Some(len) = self.current {
                break len;
            }
            let (seq, closed, seen) = (self.map.word(self.rx.seq), self.map.word(self.rx.closed), self.seen);
            let arrived = self.wait(|| seq.load(Ordering::Acquire) != seen || closed.load(Ordering::Acquire) != 0);
            if !arrived || seq.load(Ordering::Acquire) == seen {
                // Hung up (or gone) with nothing left unread: EOF.
                return Ok(0);
            }
            let len = (self.map.word(self.rx.len).load(Ordering::Relaxed) as usize).min(self.cap);
            if len == 0 {
                self.seen += 1;
                self.map.word(self.rx.ack).store(self.seen, Ordering::Release);
                continue;
            }
            self.current = Some(len);
            self.at = 0;
        };
        let n = out.len().min(len - self.at);
        let from = self.map.bytes(self.rx.data + self.at, n);
        // SAFETY: `from` points at `n` bytes inside the mapping (checked by `bytes`); the peer
        // published them before its release store of `seq`, which our acquire load saw, and does
        // not touch them again until we store `ack`; `out` is ours and cannot overlap the mapping.
        unsafe { std::ptr::copy_nonoverlapping(from, out.as_mut_ptr(), n) };
        self.at += n;
        if self.at == len {
            self.current = None;
            self.seen += 1;
            self.map.word(self.rx.ack).store(self.seen, Ordering::Release);
        }
        Ok(n)
    }
}

impl Write for Spin {
    /// One message of at most the announced size.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let (ack, closed, sent) = (self.map.word(self.tx.ack), self.map.word(self.rx.closed), self.sent);
        let empty = self.wait(|| ack.load(Ordering::Acquire) == sent || closed.load(Ordering::Acquire) != 0);
        if !empty || ack.load(Ordering::Acquire) != sent {
            return Err(io::Error::new(io::ErrorKind::BrokenPipe, "spin: the peer hung up"));
        }
        let n = buf.len().min(self.cap);
        let to = self.map.bytes(self.tx.data, n);
        // SAFETY: `to` points at `n` bytes inside the mapping (checked by `bytes`); the peer
        // acknowledged our previous message (acquire), so it no longer reads this area until our
        // release store of `seq` below; `buf` is ours and cannot overlap the mapping.
        unsafe { std::ptr::copy_nonoverlapping(buf.as_ptr(), to, n) };
        self.map.word(self.tx.len).store(n as u64, Ordering::Relaxed);
        self.sent += 1;
        self.map.word(self.tx.seq).store(self.sent, Ordering::Release);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Spin {
    fn drop(&mut self) {
        self.map.word(self.tx.closed).store(1, Ordering::Release);
    }
}

/// Serves spin connections accepted on `listener`, one thread each, with `raw.rs`'s echo loop.
pub fn serve(listener: UnixListener) -> io::Result<()> {
    for sock in listener.incoming() {
        let sock = sock?;
        std::thread::spawn(move || {
            if let Err(e) = serve_one(sock) {
                eprintln!("rpc-bench: raw spin server: {e}");
            }
        });
    }
    Ok(())
}

fn serve_one(mut sock: UnixStream) -> io::Result<()> {
    let mut size = [0u8; 8];
    sock.read_exact(&mut size)?;
    let cap = capacity(u64::from_le_bytes(size))?;
    let len = HEADER + 2 * cap;
    let memfd = rustix::fs::memfd_create("rpc-bench-spin", rustix::fs::MemfdFlags::CLOEXEC)?;
    rustix::fs::ftruncate(&memfd, len as u64)?;
    let map = Mapping::new(&memfd, len)?;
    send_fd(&sock, &memfd)?;
    drop(memfd);
    crate::raw::echo_loop(Spin::new(map, sock, cap, false))
}

/// Sends one byte carrying `fd` as `SCM_RIGHTS`.
fn send_fd(sock: &UnixStream, fd: &OwnedFd) -> io::Result<()> {
    let fds = [fd.as_fd()];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(io::Error::other("no room for a descriptor in the control buffer"));
    }
    rustix::net::sendmsg(sock, &[IoSlice::new(&[1])], &mut control, rustix::net::SendFlags::NOSIGNAL)?;
    Ok(())
}

/// Receives the byte and the descriptor [`send_fd`] sent.
fn receive_fd(sock: &UnixStream) -> io::Result<OwnedFd> {
    let mut byte = [0u8; 1];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let received =
        rustix::net::recvmsg(sock, &mut [IoSliceMut::new(&mut byte)], &mut control, RecvFlags::CMSG_CLOEXEC)?;
    // Every descriptor that arrived is owned here, so any we do not keep is closed.
    let mut fds: Vec<OwnedFd> = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = message {
            fds.extend(rights);
        }
    }
    if received.bytes != 1 || fds.len() != 1 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "spin: the server sent no memfd"));
    }
    Ok(fds.pop().expect("one"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_is_page_rounded_and_bounded() {
        assert_eq!(capacity(16).unwrap(), PAGE);
        assert_eq!(capacity(crate::raw::ONE_WAY | (64 << 10)).unwrap(), 64 << 10);
        assert_eq!(capacity(PAGE as u64 + 1).unwrap(), 2 * PAGE);
        assert!(capacity(1 << 40).is_err());
    }

    /// Both ends in one process over a socket pair: messages cross in order, a reader sees EOF
    /// once the writer hung up, and a writer fails once the reader is gone.
    #[test]
    fn echo_over_a_mapping() {
        let (a, b) = UnixStream::pair().unwrap();
        let cap = capacity(4096).unwrap();
        let len = HEADER + 2 * cap;
        let memfd = rustix::fs::memfd_create("rpc-bench-spin-test", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        rustix::fs::ftruncate(&memfd, len as u64).unwrap();
        let mut client = Spin::new(Mapping::new(&memfd, len).unwrap(), a, cap, true);
        let echo = std::thread::spawn(move || {
            let mut server = Spin::new(Mapping::new(&memfd, len).unwrap(), b, cap, false);
            let mut buf = vec![0u8; 4096];
            let mut echoed = 0;
            loop {
                match server.read_exact(&mut buf) {
                    Ok(()) => server.write_all(&buf).unwrap(),
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return echoed,
                    Err(e) => panic!("{e}"),
                }
                echoed += 1;
            }
        });
        for i in 0..100u8 {
            let out = vec![i; 4096];
            let mut back = vec![0u8; 4096];
            client.write_all(&out).unwrap();
            client.read_exact(&mut back).unwrap();
            assert_eq!(back, out);
        }
        drop(client);
        assert_eq!(echo.join().unwrap(), 100);
    }
}
