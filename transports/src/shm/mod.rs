//! `shm://name`: frames cross through shared memory, one single-producer/single-consumer ring
//! per direction per connection (Linux).
//!
//! **Setup.** The listener binds a local socket (the abstract name `rpc-shm.<name>`, admitted by
//! [`TransportOptions::mode`] like `local://`). For each client it accepts, it creates a memfd
//! (sealed against resizing), maps it, makes a socketpair, and sends the client one message
//! carrying the ring size with the memfd, one socketpair end and the server's slab (see Loans
//! below) attached (`SCM_RIGHTS`; see [`setup`]). Nothing is ever created in `/dev/shm` or on
//! disk, so nothing can be left behind, whoever crashes. So unlike a socket's, an `shm://`
//! connect completes only when the server accepts (a server that never does makes it fail after
//! 10 s). A server out of descriptors or memory keeps the accepted client waiting and offers it
//! memory when its next accept runs, as a socket's backlog would.
//!
//! **Data.** Each frame is the usual 4-byte length prefix and body, streamed through the ring
//! ([`ring`]); a frame larger than the ring (up to the maximum frame length) simply streams
//! through in pieces. A large frame crosses in steps of `ring::STEP` (32 KiB): the sender
//! publishes each step as soon as it is copied in and the receiver frees each step's room as
//! soon as it is copied out, so the two copies overlap on two cores. The receiver enforces the
//! maximum frame length before it allocates, like every other mechanism.
//!
//! **Loans.** The server also creates a *slab* (a second memfd, [`ShmOptions::slab_size`],
//! 16 MiB by default) and sends it along; it maps it writable and then seals it against any
//! write access but that mapping, so the client can only map it read-only. Handlers fill large
//! results and stream items in blocks of it ([`CallContext::loan`](rpc_core::CallContext::loan),
//! see [`lend`]). A block's first send is copied through the ring like any payload (that
//! measured faster for payloads filled right before it; see `lend`); when it is sent again, the
//! ring carries a reference to it instead of its bytes, and the client copies them straight out
//! of the slab into its frame buffer: one copy instead of two.
//! The client side lends nothing yet: that needs a memfd of the client's own, which the server
//! would have to accept over the setup socket (today it refuses descriptors from clients).
//!
//! **Waiting and liveness.** See [`halves`]: a side spins briefly (adaptive, at most
//! [`ShmOptions::spin`](crate::ShmOptions::spin)) and then sleeps on a Unix socket that the peer
//! rings only when it knows we sleep; the same sockets report the peer's exit as EOF, so pending
//! calls fail as soon as a peer dies.
//!
//! **Trust.** The peer may be hostile: every index read from the mapping is checked before use,
//! bytes are copied out before they are looked at, and the only unsafe code is in [`region`]
//! (the mapping) and `copy` (the copy in and out, which avoids `rep movsb`).
//! A peer can make its own connection fail (with an `InvalidData` error naming the corrupt
//! indices), never crash or hang us.

mod copy;
mod halves;
mod lend;
pub(crate) mod region;
mod ring;
pub(crate) mod setup;
mod slab;

use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use rpc_core::loan::Lender;
use rpc_core::transport::stream::framed;
use rpc_core::transport::{BoxFuture, Connection, ConnectionInfo, Listener};
use tokio::net::UnixStream;

use crate::accept::PendingAccept;
use crate::local::abstract_ns::{self, AbstractSocket};
use crate::options::{ShmOptions, TransportOptions};
use halves::{Bell, PeerProcess, ShmReader, ShmWriter, Spin, Waiter};
use lend::{SlabLender, SlabOut};
use region::{Direction, Region, SlabMap};
use rpc_core::transport::transient::is_exhaustion;

pub(crate) use region::{MAX_RING_LEN, MAX_SLAB_LEN, MIN_RING_LEN, MIN_SLAB_LEN};

/// How long a client waits for the server's setup message.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);

/// The abstract socket name of the setup socket for `shm://name`.
fn setup_name(name: &str) -> String {
    format!("rpc-shm.{name}")
}

pub(crate) async fn connect(name: &str, options: &TransportOptions) -> io::Result<Connection> {
    let stream = abstract_ns::connect_stream(&setup_name(name)).await?;
    let offer = tokio::time::timeout(SETUP_TIMEOUT, setup::receive(&stream))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "the server did not offer shared memory within 10 s"))??;
    let region = Region::open(&offer.memfd, offer.ring_len)?;
    drop(offer.memfd); // the mapping keeps the memory
    let slab = offer.slab.map(|(fd, len)| SlabMap::open(&fd, len)).transpose()?;
    let region = warm_up(region).await?;
    check_bell(&stream, &offer.bell)?;
    // From here on the server cannot pass descriptors to us; any it queued before are closed.
    region::refuse_passed_fds(&stream);
    region::refuse_passed_fds(&offer.bell);
    discard_queued(&offer.bell);
    let bell = tokio_stream(offer.bell)?;
    let peers = peer_process(&stream)?;
    let ends = Ends { setup: stream, bell, peers, slab };
    Ok(connection(Arc::new(region), Side::Client, ends, options, format!("shm://{name}")))
}

pub(crate) fn listen(name: &str, options: &TransportOptions) -> io::Result<ShmListener> {
    if !region::valid_ring_len(options.shm.ring_size) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "ring_size must be a power of two from {MIN_RING_LEN} to {MAX_RING_LEN} bytes, not {}",
                options.shm.ring_size
            ),
        ));
    }
    Ok(ShmListener {
        socket: AbstractSocket::bind(&setup_name(name), options)?,
        name: name.to_owned(),
        options: options.clone(),
        pending: None,
    })
}

/// Accepts `shm://` connections.
#[derive(Debug)]
pub(crate) struct ShmListener {
    socket: AbstractSocket,
    name: String,
    options: TransportOptions,
    /// A client accepted when the memory or the bell for it could not be made (out of
    /// descriptors or memory): offered first by the next accept, so it waits as a client in a
    /// socket's backlog would. Kept here, not in the accept future, so dropping that future
    /// loses nothing.
    pending: Option<UnixStream>,
}

/// What an accepted client's connection is made of, on our side and to be sent.
struct Parts {
    region: Region,
    memfd: OwnedFd,
    /// Our slab, if we lend, and its fd for the client.
    slab: Option<(SlabMap, OwnedFd)>,
    ours: std::os::unix::net::UnixStream,
    theirs: std::os::unix::net::UnixStream,
    peers: (PeerProcess, PeerProcess),
}

impl Parts {
    fn new(options: &ShmOptions, client: &UnixStream) -> io::Result<Parts> {
        let (region, memfd) = Region::create(options.ring_size)?;
        let slab = match (options.slab_size > 0).then(|| SlabMap::create(options.slab_size)).transpose() {
            Ok(slab) => slab,
            Err(e) if is_exhaustion(&e) => return Err(e),
            // A kernel that cannot seal it (`F_SEAL_FUTURE_WRITE` is Linux 5.1+): the connection
            // goes without one, and its loans are heap buffers.
            Err(_) => None,
        };
        let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
        Ok(Parts { region, memfd, slab, ours, theirs, peers: peer_process(client)? })
    }
}

impl ShmListener {
    /// Sets up the connection of an accepted client (no await: `accept` stays cancel-safe).
    fn serve(&self, stream: UnixStream) -> PendingAccept<UnixStream> {
        let parts = match Parts::new(&self.options.shm, &stream) {
            Ok(parts) => parts,
            Err(e) if is_exhaustion(&e) => return PendingAccept::Retry(stream, e),
            Err(e) => return PendingAccept::Failed(e),
        };
        match self.offer(stream, parts) {
            Ok(Some(conn)) => PendingAccept::Accepted(conn),
            Ok(None) => PendingAccept::Skip,
            Err(e) => PendingAccept::Failed(e),
        }
    }

    /// Gives an accepted client its memory; `Ok(None)` if the client is gone already.
    fn offer(&self, stream: UnixStream, parts: Parts) -> io::Result<Option<Connection>> {
        let Parts { region, memfd, slab, ours, theirs, peers } = parts;
        // The client cannot pass descriptors to us (anything it queued before this is closed
        // when the receiver drains the bell).
        region::refuse_passed_fds(&stream);
        region::refuse_passed_fds(&ours);
        let offered = slab.as_ref().map(|(map, fd)| (fd, map.len()));
        match setup::send(&stream, self.options.shm.ring_size, &memfd, &OwnedFd::from(theirs), offered) {
            Ok(()) => {}
            // The client's problem (it left, or stuffed its own socket): not the server's.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::BrokenPipe
                        | io::ErrorKind::ConnectionReset
                        | io::ErrorKind::WouldBlock
                        | io::ErrorKind::WriteZero
                ) =>
            {
                return Ok(None)
            }
            // Descriptors sent but not yet received count against the sender's limit; clients
            // that never read their setup message make this fail. Refuse this client, keep
            // serving (the others free theirs as they read or close).
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::TOOMANYREFS.raw_os_error()) => return Ok(None),
            Err(e) => return Err(e),
        }
        // `theirs` and `memfd` are closed here: the client now holds the only other ends, so
        // its exit is EOF on both sockets.
        let bell = tokio_stream(OwnedFd::from(ours))?;
        // Our mapping's pages, mostly allocated by the client's [`warm_up`] meanwhile, are
        // faulted in behind the accept: a thread that accepts must not stall for it.
        let region = Arc::new(region);
        let warm = Arc::clone(&region);
        tokio::task::spawn_blocking(move || warm.populate());
        let ends = Ends { setup: stream, bell, peers, slab: slab.map(|(map, _fd)| map) };
        Ok(Some(connection(region, Side::Server, ends, &self.options, self.local_addr())))
    }
}

impl Listener for ShmListener {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<Connection>> {
        // Cancel-safe: the only await is the socket's accept (taken only with no client pending);
        // setup never waits.
        Box::pin(async move {
            loop {
                let stream = match self.pending.take() {
                    Some(stream) => stream,
                    None => self.socket.accept().await?,
                };
                if let Some(accepted) = self.serve(stream).settle(&mut self.pending) {
                    return accepted;
                }
            }
        })
    }

    fn local_addr(&self) -> String {
        format!("shm://{}", self.name)
    }
}

#[derive(Debug, Clone, Copy)]
enum Side {
    Client,
    Server,
}

/// The client's check of the bell the server sent: a Unix stream socket made by the same
/// process that holds the setup socket (a socketpair reports its creator as the peer), so the
/// server cannot hand us a socket whose other end lives elsewhere (its exit would then not be
/// EOF on it).
fn check_bell(setup: &UnixStream, bell: &OwnedFd) -> io::Result<()> {
    use rustix::net::{sockopt, AddressFamily, SocketType};
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("bad shared-memory setup: {what}"));
    if sockopt::socket_domain(bell)? != AddressFamily::UNIX || sockopt::socket_type(bell)? != SocketType::STREAM {
        return Err(bad("the bell is not a Unix stream socket"));
    }
    if sockopt::socket_peercred(bell)?.pid != sockopt::socket_peercred(setup)?.pid {
        return Err(bad("the bell does not lead to the server process"));
    }
    Ok(())
}

/// A pidfd for each half, of the process at the other end of the setup socket: `(sender's,
/// receiver's)`. `None`s if that is this process, or where pidfds are unavailable (the bells'
/// EOF still reports an honest peer). Running out of descriptors is an error, not a quietly
/// weaker connection.
fn peer_process(setup: &UnixStream) -> io::Result<(PeerProcess, PeerProcess)> {
    let pid = match rustix::net::sockopt::socket_peercred(setup) {
        Ok(credentials) if credentials.pid != rustix::process::getpid() => credentials.pid,
        // Our own process, or a socket that cannot say (then the bells' EOF has to do).
        _ => return Ok((PeerProcess::none(), PeerProcess::none())),
    };
    let open = || -> io::Result<PeerProcess> {
        match PeerProcess::watch(pid.as_raw_pid() as u32) {
            Ok(watch) => Ok(watch),
            Err(e) if is_exhaustion(&e) => Err(e),
            // No pidfds here (ENOSYS), or the peer is gone already (ESRCH: the bells say so).
            Err(_) => Ok(PeerProcess::none()),
        }
    };
    Ok((open()?, open()?))
}

/// Reads and drops whatever is queued on a bell socket now; descriptors passed with it are
/// closed by the kernel as their bytes are read.
fn discard_queued(fd: &OwnedFd) {
    let mut buf = [0u8; 64];
    for _ in 0..64 {
        match rustix::net::recv(fd, &mut buf, rustix::net::RecvFlags::DONTWAIT) {
            Ok((n, _)) if n > 0 => {}
            _ => break,
        }
    }
}

fn tokio_stream(fd: OwnedFd) -> io::Result<UnixStream> {
    let std = std::os::unix::net::UnixStream::from(fd);
    std.set_nonblocking(true)?;
    UnixStream::from_std(std)
}

/// Faults every page of a new connection's rings in ([`Region::populate`]) on a blocking
/// thread, before the client's `connect` returns.
///
/// Otherwise the first lap of traffic round each ring faults a page in, in each process, every
/// 4 KiB: one small call in about a hundred, for a connection's first tens of thousands of
/// calls (the bench's `add` p99 over shm read 5.6-9.2 µs in twelve runs with 1 MiB rings left to
/// fault in, 1.0-1.7 µs in five with them populated). Doing it while the first calls go
/// through instead made them wait for the CPU on a busy machine (the demo's shm p99 read 59
/// and 71 µs in two runs of four, 6.6-21.5 µs in eight runs before). The client pays for it
/// in `connect`, which took 2.4-3.1 ms (medians of 100, pinned) on the bench's VM, where
/// allocating a page takes about 3 µs, against 0.46-0.48 ms with lazily faulted 256 KiB rings.
/// The server's populate, behind its accept, mostly maps pages the client allocated (without
/// it, `connect` took as long).
async fn warm_up(region: Region) -> io::Result<Region> {
    tokio::task::spawn_blocking(move || {
        // Best effort: without it, pages are faulted in on first use.
        let _ = region.populate();
        region
    })
    .await
    .map_err(io::Error::other)
}

/// A side's sockets, peer watches and slab, for [`connection`].
struct Ends {
    setup: UnixStream,
    bell: UnixStream,
    peers: (PeerProcess, PeerProcess),
    /// The server's slab: ours to lend on the server's side, the server's to read on the
    /// client's.
    slab: Option<SlabMap>,
}

fn connection(region: Arc<Region>, side: Side, ends: Ends, options: &TransportOptions, peer: String) -> Connection {
    let Ends { setup, bell, peers: (sender_peer, receiver_peer), slab } = ends;
    let (out, inn) = match side {
        Side::Client => (Direction::ClientToServer, Direction::ServerToClient),
        Side::Server => (Direction::ServerToClient, Direction::ClientToServer),
    };
    // The process at the other end of the setup socket (the kernel's word: SO_PEERCRED).
    let credentials = crate::credentials::of_unix_stream(&setup);
    let in_process = credentials.as_ref().is_some_and(|peer| peer.pid == Some(std::process::id()));
    // The setup socket carries "data published" rings, the socketpair "room made" rings.
    let data_bell = Arc::new(Bell(setup));
    let room_bell = Arc::new(Bell(bell));
    let max_frame_len = options.effective_max_frame_len();
    let mut writer = ShmWriter::new(
        ring::Writer::new(Arc::clone(&region), out),
        Arc::clone(&data_bell),
        // Waiting for room happens under the engine's send lock: spin less there.
        Waiter::new(Arc::clone(&room_bell), Spin::new(options.shm.spin / 8), sender_peer, in_process),
    );
    let mut ring_in = ring::Reader::new(Arc::clone(&region), inn);
    let mut lender = None;
    match (side, slab) {
        (Side::Server, Some(slab)) => {
            let slab = Arc::new(SlabOut::new(slab, region, out));
            writer = writer.with_slab(Arc::clone(&slab));
            lender = Some(Lender::new(SlabLender(slab)));
        }
        (Side::Client, Some(slab)) => ring_in = ring_in.with_slab(slab),
        (_, None) => {}
    }
    let reader = ShmReader::new(
        ring_in,
        Waiter::new(data_bell, Spin::new(options.shm.spin), receiver_peer, in_process),
        room_bell,
    );
    let (sender, receiver) = framed(reader, writer, max_frame_len);
    // Writing into the ring costs no system call: publish each frame as it is queued. (Tried
    // and measured slower: staging frames and publishing on flush or before this side's reader
    // waits, to batch a server's answers. It needs the writer behind a lock the reader shares;
    // the lock alone took the ring's round trip in rpc-bench from 1.42/1.47 to 1.67/1.66 µs, the
    // batching on top to 1.86-1.99, and 1000 calls in flight did not clearly gain.)
    let sender = sender.write_through(ShmWriter::try_write_vectored);
    Connection {
        sender: Box::new(sender),
        receiver: Box::new(receiver),
        info: ConnectionInfo::new("shm", peer, max_frame_len).with_peer_credentials(credentials).with_lender(lender),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use rpc_core::transport::{recv, send};

    fn unique(prefix: &str) -> String {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        format!("{prefix}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
    }

    async fn pair(options: &TransportOptions) -> (Connection, Connection) {
        let name = unique("shm-test");
        let mut listener = listen(&name, options).unwrap();
        let (client, server) = tokio::join!(connect(&name, options), listener.accept());
        (client.unwrap(), server.unwrap())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn frames_larger_than_the_ring_cross_both_ways() {
        let options = TransportOptions::default().shm(crate::ShmOptions::new().ring_size(MIN_RING_LEN));
        let (mut client, mut server) = pair(&options).await;
        let big = Bytes::from((0..4 << 20).map(|i: u32| (i % 251) as u8).collect::<Vec<u8>>());
        let echo = tokio::spawn(async move {
            while let Some(frame) = recv(&mut *server.receiver).await.unwrap() {
                send(&mut *server.sender, frame).await.unwrap();
            }
        });
        for frame in [Bytes::from_static(b"small"), big.clone(), Bytes::new(), big] {
            send(&mut *client.sender, frame.clone()).await.unwrap();
            assert_eq!(recv(&mut *client.receiver).await.unwrap().unwrap(), frame);
        }
        rpc_core::transport::close(&mut *client.sender).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), echo).await.expect("the server sees the close").unwrap();
    }

    /// The resident kilobytes of each mapping of a connection's memfd in this process whose
    /// size is `size_kib`, from `/proc/self/smaps`.
    fn resident_kib_of_rings(size_kib: u64) -> Vec<u64> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let kib = |line: &str, field: &str| {
            line.strip_prefix(field)
                .and_then(|rest| rest.trim().strip_suffix("kB"))
                .map(|n| n.trim().parse::<u64>().unwrap())
        };
        let (mut resident, mut ours, mut sized) = (Vec::new(), false, false);
        for line in smaps.lines() {
            // A mapping's first line starts with its address range; its fields follow.
            if line.split_whitespace().next().is_some_and(|first| first.contains('-')) {
                (ours, sized) = (line.contains("/memfd:rpc-shm"), false);
            } else if ours {
                sized |= kib(line, "Size:") == Some(size_kib);
                if let (true, Some(rss)) = (sized, kib(line, "Rss:")) {
                    resident.push(rss);
                }
            }
        }
        resident
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_connection_starts_with_its_rings_faulted_in() {
        // A ring size no other test of this binary uses, to tell this pair's mappings apart.
        let ring = 512 << 10;
        let size_kib = (region::region_len(ring) / 1024) as u64;
        let options = TransportOptions::default().shm(crate::ShmOptions::new().ring_size(ring));
        let (client, server) = pair(&options).await;
        let resident = resident_kib_of_rings(size_kib);
        assert_eq!(resident.len(), 2, "the client's mapping and the server's: {resident:?}");
        assert!(resident.contains(&size_kib), "the client's mapping is resident when connect returns: {resident:?}");
        // The server's is faulted in behind its accept.
        let start = std::time::Instant::now();
        while resident_kib_of_rings(size_kib) != [size_kib, size_kib] {
            assert!(start.elapsed() < Duration::from_secs(10), "{:?}", resident_kib_of_rings(size_kib));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        drop((client, server));
    }
}

/// A peer that scribbles over the shared memory of a live connection: our side must fail that
/// connection cleanly (an error or an end, never a panic, a hang after the peer leaves, or an
/// allocation beyond the frame limit) and go on serving everyone else.
#[cfg(test)]
mod hostile_peer {
    use super::*;
    use bytes::Bytes;
    use rpc_core::transport::{recv, send};
    use std::sync::atomic::Ordering::SeqCst;

    /// xorshift64*: reproducible randomness without a dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// An echo server: every accepted connection echoes frames until it fails or ends; returns
    /// how each connection ended.
    fn echo_server(mut listener: ShmListener, connections: usize) -> tokio::task::JoinHandle<Vec<String>> {
        tokio::spawn(async move {
            let mut tasks = Vec::new();
            for _ in 0..connections {
                let mut conn = listener.accept().await.unwrap();
                tasks.push(tokio::spawn(async move {
                    loop {
                        match recv(&mut *conn.receiver).await {
                            Ok(Some(frame)) => {
                                if let Err(e) = send(&mut *conn.sender, frame).await {
                                    return format!("send failed: {e}");
                                }
                            }
                            Ok(None) => return "ended".to_owned(),
                            Err(e) => return format!("receive failed: {e}"),
                        }
                    }
                }));
            }
            let mut ends = Vec::new();
            for task in tasks {
                let ended = tokio::time::timeout(Duration::from_secs(10), task).await;
                // A panic in our transport code would show here as a JoinError.
                ends.push(ended.expect("a connection outlived its hostile peer").expect("no panic"));
            }
            ends
        })
    }

    async fn scribble(name: &str, seed: u64) {
        let stream = abstract_ns::connect_stream(&setup_name(name)).await.unwrap();
        let offer = setup::receive(&stream).await.unwrap();
        let region = Region::open(&offer.memfd, offer.ring_len).unwrap();
        let ring_len = offer.ring_len as u64;
        let c2s = region.control(Direction::ClientToServer);
        let s2c = region.control(Direction::ServerToClient);
        let mut rng = Rng(seed | 1);
        let mut head = 0u64;
        // Odd seeds play mostly by the rules (valid frames, plausible indices), so the
        // connection lives long enough to reach the echo path and the full-ring path.
        let gentle = seed % 2 == 1;
        for step in 0..2000 {
            let op = if gentle { [1, 2, 3, 5, 6, 7][rng.below(6) as usize] } else { rng.below(8) };
            match op {
                // Random bytes, then a head anywhere (mostly impossible values).
                0 => c2s.head.0.store(rng.next(), SeqCst),
                // Plausible heads over random data: the decoder sees garbage prefixes and frames.
                1 | 2 => {
                    let len = rng.below(ring_len / 4);
                    let mut bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                    if gentle && len >= 4 {
                        bytes[..4].copy_from_slice(&(len as u32 - 4).to_le_bytes());
                    }
                    let (offset, first, rest) = ring::spans(head, len as usize, ring_len as usize);
                    region.write(Direction::ClientToServer, offset, &bytes[..first]);
                    region.write(Direction::ClientToServer, 0, &bytes[first..first + rest]);
                    head += len;
                    c2s.head.0.store(head, SeqCst);
                }
                // The words the server owns or shares: its tail, its flags, our closed flag.
                3 if gentle => {
                    // "Consume" some of what the server wrote, or pretend to.
                    let their_head = s2c.head.0.load(SeqCst);
                    s2c.tail.0.store(their_head.saturating_sub(rng.below(ring_len)), SeqCst);
                }
                3 => s2c.tail.0.store(rng.next(), SeqCst),
                4 => s2c.head.0.store(rng.next(), SeqCst),
                5 => c2s.reader_waiting.0.store(rng.next() as u32, SeqCst),
                6 => s2c.writer_waiting.0.store(rng.next() as u32, SeqCst),
                _ => {
                    // A bell without anything behind it.
                    let _ = rustix::net::send(&stream, &[7; 3], rustix::net::SendFlags::DONTWAIT);
                }
            }
            if step % 100 == 0 {
                tokio::task::yield_now().await;
            }
        }
        // Leaving: the server must notice and end the connection.
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn scribbling_peers_fail_only_their_own_connections() {
        let name = format!("shm-hostile-{}", std::process::id());
        let options =
            TransportOptions::default().shm(crate::ShmOptions::new().ring_size(MIN_RING_LEN)).max_frame_len(1 << 20);
        let hostile = 16;
        let server = echo_server(listen(&name, &options).unwrap(), hostile + 1);
        for seed in 0..hostile as u64 {
            scribble(&name, 0x9e37_79b9_7f4a_7c15 ^ seed).await;
        }
        let mut good = connect(&name, &options).await.unwrap();
        send(&mut *good.sender, Bytes::from_static(b"still serving")).await.unwrap();
        assert_eq!(recv(&mut *good.receiver).await.unwrap().unwrap(), &b"still serving"[..]);
        drop(good);
        let ends = server.await.unwrap();
        assert_eq!(ends.len(), hostile + 1);
        assert_eq!(ends.last().unwrap(), "ended", "the well-behaved connection ends cleanly");
        // The hostile ones end however their garbage made them end (that they ended at all is
        // checked in `echo_server`), but only in one of the ways a connection can end.
        for end in &ends[..hostile] {
            let known = ["ended", "receive failed: ", "send failed: "];
            assert!(known.iter().any(|k| end.starts_with(k)), "unexpected end: {end}");
        }
        eprintln!("hostile connections ended: {ends:?}");
    }
}

/// Defects an independent review found, kept as regression tests.
#[cfg(test)]
mod review {
    use super::*;
    use bytes::Bytes;
    use rpc_core::transport::{recv, send};
    use std::io::IoSlice;
    use std::mem::MaybeUninit;
    use std::os::fd::AsFd;

    /// A client that parks its own end of the setup socket in the server's bell queue (so the
    /// socket stays open after it is gone) is refused by the kernel; the server then sees the
    /// client leave at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_peer_cannot_keep_a_bell_open_by_passing_it_back() {
        if !region::refuse_passed_fds(&std::os::unix::net::UnixStream::pair().unwrap().0) {
            eprintln!("this kernel has no SO_PASSRIGHTS: only a peer in another process is covered (by its pidfd)");
            return;
        }
        let name = format!("shm-review-smuggle-{}", std::process::id());
        let options = TransportOptions::default().shm(crate::ShmOptions::new().ring_size(MIN_RING_LEN));
        let mut listener = listen(&name, &options).unwrap();
        let client = async {
            let stream = abstract_ns::connect_stream(&setup_name(&name)).await.unwrap();
            let offer = setup::receive(&stream).await.unwrap();
            let fds = [stream.as_fd()];
            let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
            let mut control = rustix::net::SendAncillaryBuffer::new(&mut space);
            assert!(control.push(rustix::net::SendAncillaryMessage::ScmRights(&fds)));
            let smuggled =
                rustix::net::sendmsg(&offer.bell, &[IoSlice::new(&[0])], &mut control, rustix::net::SendFlags::empty());
            drop(offer);
            drop(stream);
            smuggled
        };
        let (smuggled, server) = tokio::join!(client, listener.accept());
        let mut server = server.unwrap();
        assert_eq!(smuggled.unwrap_err(), rustix::io::Errno::PERM, "the kernel refuses descriptors sent to us");
        let end = tokio::time::timeout(Duration::from_secs(3), recv(&mut *server.receiver)).await;
        assert!(matches!(end, Ok(Ok(None))), "the server's receiver must see the client leave: {end:?}");
    }

    /// Clients that never read their setup message leave descriptors in flight, charged to the
    /// server's user; past its limit a setup fails with ETOOMANYREFS. That must refuse only that
    /// client, not end the accept loop. (Only non-root users are limited: as root this runs the
    /// same path without reaching the limit.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn clients_that_never_read_their_setup_do_not_stop_the_listener() {
        let name = format!("shm-review-inflight-{}", std::process::id());
        let options = TransportOptions::default().shm(crate::ShmOptions::new().ring_size(MIN_RING_LEN));
        let mut listener = listen(&name, &options).unwrap();
        let mut silent = Vec::new();
        for _ in 0..200 {
            silent.push(abstract_ns::connect_stream(&setup_name(&name)).await.unwrap());
            // Refused clients are skipped; the next admitted one is returned.
            let accepted = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
            if let Ok(accepted) = accepted {
                drop(accepted.expect("accept never fails because of a client"));
            }
        }
        let good = connect(&name, &options);
        let (good, accepted) = tokio::join!(good, listener.accept());
        let (mut good, mut accepted) = (good.unwrap(), accepted.unwrap());
        send(&mut *good.sender, Bytes::from_static(b"hi")).await.unwrap();
        assert_eq!(recv(&mut *accepted.receiver).await.unwrap().unwrap(), &b"hi"[..]);
    }

    /// A server that offers something other than its own socketpair end as the bell (here a
    /// UDP socket, whose other end is nobody) is refused at connect.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_bell_that_does_not_lead_to_the_server_is_refused() {
        let name = format!("shm-review-udp-{}", std::process::id());
        let options = TransportOptions::default().shm(crate::ShmOptions::new().ring_size(MIN_RING_LEN));
        let fake = AbstractSocket::bind(&setup_name(&name), &options).unwrap();
        let server = async {
            let stream = fake.accept().await.unwrap();
            let (region, memfd) = Region::create(MIN_RING_LEN).unwrap();
            let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            setup::send(&stream, MIN_RING_LEN, &memfd, &OwnedFd::from(udp), None).unwrap();
            (stream, region)
        };
        let (client, _held) = tokio::join!(connect(&name, &options), server);
        let err = client.unwrap_err();
        assert!(err.to_string().contains("the bell is not a Unix stream socket"), "{err}");
    }
}
