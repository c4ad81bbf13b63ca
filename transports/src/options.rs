//! [`TransportOptions`], the knobs of the mechanisms, grouped by the mechanisms they affect; the
//! `shm://` ones in a [`ShmOptions`] of their own.

use std::time::Duration;

use rpc_core::wire::DEFAULT_MAX_FRAME_LEN;

pub use crate::tls::options::TlsOptions;

/// Default [`ShmOptions::ring_size`]: 1 MiB per direction, so a connection maps 2 MiB and
/// 4 KiB, which each side faults in on a blocking thread as the connection starts.
///
/// Not smaller because of what a large frame costs. A frame larger than the free room goes
/// round the ring with the reader one step behind the writer, and the writer then stores into
/// lines the reader's core has only just read. On the bench's 2-vCPU EPYC VM (1 MiB of L2 a
/// core), `perf` found the writer's copy into a 256 KiB ring five times slower than the
/// reader's copy out, and a 1 MiB echo over `shm://` took 219-285 µs with 256 KiB rings,
/// 134-140 µs with 512 KiB and 68-92 µs with 1 or 2 MiB (over a Unix socket: about 150-180 µs). Small
/// calls did not change. A server with many mostly idle connections can lower it with
/// [`ShmOptions::ring_size`] (see there what a connection's rings cost).
pub const DEFAULT_RING_SIZE: usize = 1 << 20;
/// The smallest [`ShmOptions::ring_size`]: 4 KiB.
pub const MIN_RING_SIZE: usize = 4096;
/// The largest [`ShmOptions::ring_size`]: 64 MiB.
pub const MAX_RING_SIZE: usize = 64 << 20;
/// Default [`ShmOptions::slab_size`]: 16 MiB, of address space; memory only as loans use it.
pub const DEFAULT_SLAB_SIZE: usize = 16 << 20;
/// The smallest [`ShmOptions::slab_size`] but 0: 16 KiB, the smallest loan that is lent.
pub const MIN_SLAB_SIZE: usize = 16 << 10;
/// The largest [`ShmOptions::slab_size`]: 256 MiB.
pub const MAX_SLAB_SIZE: usize = 256 << 20;
/// Default [`ShmOptions::spin`] and [`TransportOptions::spin`]: about what a round trip to a
/// busy peer can take while still being worth not sleeping for (waking a sleeping peer costs
/// 50-90 µs here).
pub const DEFAULT_SPIN: Duration = Duration::from_micros(50);

// The range the setter allows is the range the rings support.
#[cfg(any(target_os = "linux", target_os = "android"))]
const _: () = assert!(
    MIN_RING_SIZE == crate::shm::MIN_RING_LEN
        && MAX_RING_SIZE == crate::shm::MAX_RING_LEN
        && MIN_SLAB_SIZE == crate::shm::MIN_SLAB_LEN
        && MAX_SLAB_SIZE == crate::shm::MAX_SLAB_LEN
);

/// Options for [`connect_with`](crate::connect_with) and [`listen_with`](crate::listen_with)
/// (and, through the `rpc` facade's `ClientOptions`, for a generated client's `connect_with`).
///
/// They are grouped by the mechanisms they affect, in the order of the `impl` blocks below:
///
/// | setter | affects |
/// |---|---|
/// | [`max_frame_len`](Self::max_frame_len) | every mechanism |
/// | [`spin`](Self::spin) | sockets, pipes and queues: `tcp://`, `tls://`, `unix://`, `local://`, `fifo://`, `spawn:`, `mq://` (Unix) |
/// | [`mode`](Self::mode) | local endpoints this side creates: `unix://`, `fifo://`, `local://`, `shm://`, `mq://` |
/// | [`keepalive`](Self::keepalive) | network mechanisms: `tcp://`, `tls://` |
/// | [`tls`](Self::tls), a [`TlsOptions`] | `tls://` only: certificates, keys, trusted roots, mutual TLS |
/// | [`shm`](Self::shm), a [`ShmOptions`] | `shm://` only: its rings and how long a side polls them |
///
/// Built like every options type of the framework: [`TransportOptions::new`] (the same as
/// [`Default`]) and chained setters, each naming its default. A setter panics, with a message
/// naming the option, on a value no mechanism could work with (its `# Panics` section says
/// which); a value larger than a mechanism can use is taken as the largest it can.
///
/// ```
/// use std::time::Duration;
/// use rpc_transports::{ShmOptions, TransportOptions};
///
/// let options = TransportOptions::new()
///     .max_frame_len(1 << 20)
///     .mode(0o660)
///     .shm(ShmOptions::new().ring_size(256 << 10).spin(Duration::ZERO));
/// # let _ = options;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportOptions {
    pub(crate) max_frame_len: usize,
    pub(crate) spin: Duration,
    pub(crate) mode: u32,
    pub(crate) shm: ShmOptions,
    pub(crate) keepalive: Option<Duration>,
    pub(crate) tls: TlsOptions,
}

impl Default for TransportOptions {
    fn default() -> Self {
        Self {
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            spin: DEFAULT_SPIN,
            mode: 0o600,
            shm: ShmOptions::default(),
            keepalive: None,
            tls: TlsOptions::default(),
        }
    }
}

/// # Every mechanism
impl TransportOptions {
    /// The default options.
    pub fn new() -> Self {
        Self::default()
    }

    /// The largest frame this side sends or accepts, in bytes; larger frames are refused with an
    /// error wrapping [`FrameTooLarge`](rpc_core::wire::FrameTooLarge). Values above `u32::MAX`
    /// are taken as `u32::MAX` (the byte-stream mechanisms' length prefix is 32 bits, and every
    /// mechanism uses the same limit). Default: [`DEFAULT_MAX_FRAME_LEN`].
    ///
    /// # Panics
    /// If `max_frame_len` is 0: no frame would pass.
    #[must_use]
    pub fn max_frame_len(mut self, max_frame_len: usize) -> Self {
        assert!(max_frame_len > 0, "TransportOptions::max_frame_len must be at least 1 byte");
        self.max_frame_len = max_frame_len;
        self
    }

    /// The maximum frame length byte-stream framing can honour (its prefix is 32 bits); every
    /// mechanism uses this value so that `ConnectionInfo::max_frame_len` means the same thing
    /// everywhere.
    pub(crate) fn effective_max_frame_len(&self) -> usize {
        self.max_frame_len.min(u32::MAX as usize)
    }

    /// What a byte-stream connection (a socket, a pair of pipes or of queues) is built with.
    pub(crate) fn framing(&self) -> Framing {
        Framing { max_frame_len: self.effective_max_frame_len(), spin: self.spin }
    }
}

/// # Sockets, pipes and queues: `tcp://`, `tls://`, `unix://`, `local://`, `fifo://`, `spawn:`, `mq://`
impl TransportOptions {
    /// The longest a side of a socket, pipe or message-queue connection polls it for bytes
    /// (non-blocking reads; over `mq://` also for room in a full queue) before it sleeps until
    /// the kernel wakes it. Waking a sleeping thread on another core
    /// costs tens of microseconds on a VM, more than most answers take to come back: polling
    /// first took an `add` round trip over `unix://` between two processes from about 60 µs to
    /// about 6 µs in `rpc-bench` on a 2-vCPU VM. The time actually spent adapts, as `shm://`'s
    /// does ([`ShmOptions::spin`]): it shrinks while the peer is slow or idle, so an idle
    /// connection costs no CPU; between looks the task lets the other tasks of its thread run
    /// and, in a runtime of one thread, offers its CPU to other threads (`sched_yield`), so a
    /// peer on the same CPU is not held up. (A multi-thread runtime does not offer it: there
    /// the kernel may put the workers of both processes on one CPU, and each offer handed the
    /// CPU to the next of them, costing the demo's round trips tens of microseconds.)
    /// `Duration::ZERO` turns polling off (every wait sleeps at once, as tokio alone does).
    /// Applies on Unix; set on each side for that side's reads. Default [`DEFAULT_SPIN`].
    #[must_use]
    pub fn spin(mut self, spin: Duration) -> Self {
        self.spin = spin;
        self
    }
}

/// What a byte-stream connection is built with, taken from [`TransportOptions`] when a
/// connection is made or a listener created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Framing {
    /// [`TransportOptions::effective_max_frame_len`].
    pub(crate) max_frame_len: usize,
    /// [`TransportOptions::spin`].
    #[cfg_attr(not(unix), allow(dead_code))]
    pub(crate) spin: Duration,
}

/// # Local endpoints: `unix://`, `fifo://`, `local://`, `shm://`, `mq://`
impl TransportOptions {
    /// Who may connect to a local endpoint this side creates, as Unix permission bits (only the
    /// `0o777` bits are used). Default `0o600`: the owner only.
    ///
    /// `unix://` sets these bits on the socket file, `fifo://` on the connect FIFO (listener) and
    /// on each connection's private FIFO pair (client), `mq://` on its queues. `local://` on
    /// Linux lives in the abstract namespace, which has no permissions, so the listener checks
    /// each client's credentials instead: the same user and root always pass, the group passes
    /// if `0o020` is set, everyone if `0o002` is set. `shm://` applies the same check to its
    /// setup socket. Ignored by `tcp://`, `spawn:` and `mem://`, and on Windows.
    #[must_use]
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }

    /// The permission bits that matter.
    #[cfg_attr(not(unix), allow(dead_code))]
    pub(crate) fn permission_bits(&self) -> u32 {
        self.mode & 0o777
    }
}

/// # Network mechanisms: `tcp://`, `tls://`
impl TransportOptions {
    /// Notice a dead peer or a dead link within about `within`, instead of the kernel's default
    /// (over two hours for an idle connection, about 15 minutes for one with data outstanding):
    /// the socket sends TCP keepalive probes after `within / 2` of silence, every
    /// `within / 6` (at least a second), and gives up after three unanswered ones; on Linux
    /// `TCP_USER_TIMEOUT` also ends the connection when sent data stays unacknowledged for
    /// `within`. The connection then fails: pending calls end with `RpcError::Io` of kind
    /// `TimedOut`. Set on both sides (a listener applies it to every accepted
    /// connection). The probes are the kernel's: no per-call work. Default: off.
    ///
    /// # Panics
    /// If `within` is under 2 s (the kernel counts keepalive times in whole seconds).
    #[must_use]
    pub fn keepalive(mut self, within: Duration) -> Self {
        assert!(within >= Duration::from_secs(2), "TransportOptions::keepalive must be at least 2 s, not {within:?}");
        self.keepalive = Some(within);
        self
    }

    /// The options of `tls://` connections and listeners: certificates, keys, trusted roots,
    /// mutual TLS. Default [`TlsOptions::new`].
    #[must_use]
    pub fn tls(mut self, tls: TlsOptions) -> Self {
        self.tls = tls;
        self
    }
}

/// # `shm://` only
impl TransportOptions {
    /// The options of `shm://` connections: the size of their rings and how long a side polls
    /// them before it sleeps. Default [`ShmOptions::new`].
    #[must_use]
    pub fn shm(mut self, shm: ShmOptions) -> Self {
        self.shm = shm;
        self
    }
}

/// The options of `shm://` alone, given to [`TransportOptions::shm`]; other mechanisms ignore
/// them. Built like the other options: [`ShmOptions::new`] and chained setters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShmOptions {
    pub(crate) ring_size: usize,
    pub(crate) slab_size: usize,
    pub(crate) spin: Duration,
}

impl Default for ShmOptions {
    fn default() -> Self {
        Self { ring_size: DEFAULT_RING_SIZE, slab_size: DEFAULT_SLAB_SIZE, spin: DEFAULT_SPIN }
    }
}

impl ShmOptions {
    /// The default options.
    pub fn new() -> Self {
        Self::default()
    }

    /// Listener side: the size in bytes of each of a connection's two rings (frames larger than
    /// the ring stream through it in pieces). Each connection maps `2 * ring_size + 4096` bytes,
    /// all of it faulted in on a blocking thread as the connection starts, so that no call waits
    /// for a page of a ring later. `connect` returns once the client's side is in: with the
    /// default size it took 2.4-3.1 ms on a 2-vCPU VM (about 3 µs a page), where lazily faulted
    /// 256 KiB rings connected in about 0.5 ms; a smaller ring connects sooner.
    /// The client uses the size the server offers. Default [`DEFAULT_RING_SIZE`].
    ///
    /// # Panics
    /// If `bytes` is not a power of two from [`MIN_RING_SIZE`] (4 KiB) to [`MAX_RING_SIZE`]
    /// (64 MiB).
    #[must_use]
    pub fn ring_size(mut self, bytes: usize) -> Self {
        assert!(
            bytes.is_power_of_two() && (MIN_RING_SIZE..=MAX_RING_SIZE).contains(&bytes),
            "ShmOptions::ring_size must be a power of two from {MIN_RING_SIZE} to {MAX_RING_SIZE} bytes, not {bytes}"
        );
        self.ring_size = bytes;
        self
    }

    /// Listener side: the size in bytes of the shared memory (the *slab*) each connection's
    /// server side lends to handlers to fill results and stream items in place
    /// ([`CallContext::loan`](rpc_core::CallContext::loan)); 0 for none. Loans of 16 KiB or
    /// more are lent from it while it has room; others, and all loans when it has none, are
    /// heap buffers. The client maps it read-only, and can read all of it at any time: a lent
    /// buffer is for bytes that client may see. Default [`DEFAULT_SLAB_SIZE`].
    ///
    /// A lent payload crosses like a heap one (copied through the ring) the first time it is
    /// sent, and by reference every later time it is sent on the same connection: the client
    /// copies it straight out of the slab, and the server copies nothing (unless 32 references
    /// are already in flight, when it copies). `rpc-bench`, 1 MiB results one call after
    /// another on a 2-vCPU VM: filled afresh for each call 20.5-22.2 GB/s lent against
    /// 19.6-21.0 from the heap; sent again unchanged 32-36 GB/s lent against 28-29. (Referring
    /// to a block on its first send measured 3.6-4.7 GB/s: the handler's next fill then waits
    /// for every cache line the client's core just read.)
    ///
    /// Blocks are lent in order round the slab and reused in that order, so a loan kept for
    /// long (a payload sent again and again) keeps the blocks lent after it from being reused:
    /// once the rest of the slab is used round, later loans are heap buffers until it is
    /// dropped. A payload frozen from a loan also keeps the connection's mappings until it is
    /// dropped, after the connection closes too. A page of the slab is allocated when a loan
    /// first writes it and kept until the connection closes, so a connection's slab memory
    /// grows to what its loans held at most at once (the seal that keeps the client from
    /// writing the slab also keeps the server from giving pages back: Linux refuses to punch
    /// holes in a memfd sealed with `F_SEAL_FUTURE_WRITE`, by `fallocate` or by
    /// `madvise(MADV_REMOVE)`, with `EPERM`). Every connection with a slab maps two more
    /// areas (the slab on each side), whether it lends or not.
    ///
    /// # Panics
    /// If `bytes` is neither 0 nor a multiple of 4096 from [`MIN_SLAB_SIZE`] (16 KiB) to
    /// [`MAX_SLAB_SIZE`] (256 MiB).
    #[must_use]
    pub fn slab_size(mut self, bytes: usize) -> Self {
        assert!(
            bytes == 0 || (bytes % 4096 == 0 && (MIN_SLAB_SIZE..=MAX_SLAB_SIZE).contains(&bytes)),
            "ShmOptions::slab_size must be 0 or a multiple of 4096 from {MIN_SLAB_SIZE} to {MAX_SLAB_SIZE} bytes, not {bytes}"
        );
        self.slab_size = bytes;
        self
    }

    /// The longest a side polls its ring for bytes (or room) before it sleeps. Polling lets a
    /// busy peer's answer arrive in well under a microsecond instead of the tens of microseconds
    /// a wake-up costs; the time actually spent adapts (it shrinks while the peer is idle), and
    /// `Duration::ZERO` turns polling off. Default [`DEFAULT_SPIN`].
    #[must_use]
    pub fn spin(mut self, spin: Duration) -> Self {
        self.spin = spin;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setters_set_and_groups_stay_apart() {
        let shm = ShmOptions::new().ring_size(MIN_RING_SIZE).spin(Duration::ZERO);
        let options = TransportOptions::new().max_frame_len(10).mode(0o7660).shm(shm.clone());
        assert_eq!((options.max_frame_len, options.permission_bits(), &options.shm), (10, 0o660, &shm));
        assert_eq!(ShmOptions::new().ring_size(MAX_RING_SIZE).ring_size, MAX_RING_SIZE);
        assert_eq!(ShmOptions::new().slab_size(0).slab_size, 0);
        assert_eq!(ShmOptions::new().slab_size(MAX_SLAB_SIZE).slab_size, MAX_SLAB_SIZE);
        assert_eq!(ShmOptions::new().slab_size, DEFAULT_SLAB_SIZE);
        assert_eq!(ShmOptions::new().slab_size(16 << 20).slab_size, 16 << 20);
        let defaults = TransportOptions::default();
        assert_eq!((defaults.max_frame_len, defaults.mode), (DEFAULT_MAX_FRAME_LEN, 0o600));
        assert_eq!((defaults.shm.ring_size, defaults.shm.spin), (DEFAULT_RING_SIZE, DEFAULT_SPIN));
        assert_eq!(defaults.framing(), Framing { max_frame_len: DEFAULT_MAX_FRAME_LEN, spin: DEFAULT_SPIN });
        let quiet = TransportOptions::new().spin(Duration::ZERO).max_frame_len(64);
        assert_eq!(quiet.framing(), Framing { max_frame_len: 64, spin: Duration::ZERO });
        assert_eq!(quiet.shm.spin, DEFAULT_SPIN, "the sockets' spin is not shm's");
    }

    #[test]
    fn network_options_set() {
        let tls = TlsOptions::new().server_name("example.com");
        let options = TransportOptions::new().keepalive(Duration::from_secs(3)).tls(tls.clone());
        assert_eq!((options.keepalive, &options.tls), (Some(Duration::from_secs(3)), &tls));
        assert_eq!(TransportOptions::new().keepalive, None);
    }

    #[test]
    #[should_panic(expected = "TransportOptions::keepalive must be at least 2 s, not 1s")]
    fn a_keepalive_under_two_seconds_is_refused() {
        let _ = TransportOptions::new().keepalive(Duration::from_secs(1));
    }

    #[test]
    fn frame_limits_beyond_the_length_prefix_are_capped() {
        assert_eq!(TransportOptions::new().max_frame_len(usize::MAX).effective_max_frame_len(), u32::MAX as usize);
    }

    #[test]
    #[should_panic(
        expected = "ShmOptions::slab_size must be 0 or a multiple of 4096 from 16384 to 268435456 bytes, not 12345"
    )]
    fn a_slab_of_a_partial_page_is_refused() {
        let _ = ShmOptions::new().slab_size(12345);
    }

    #[test]
    #[should_panic(expected = "not 8192")]
    fn a_slab_too_small_to_lend_from_is_refused() {
        let _ = ShmOptions::new().slab_size(8192);
    }

    #[test]
    #[should_panic(expected = "TransportOptions::max_frame_len must be at least 1 byte")]
    fn a_zero_frame_limit_is_refused() {
        let _ = TransportOptions::new().max_frame_len(0);
    }

    #[test]
    fn ring_sizes_outside_the_range_are_refused() {
        for bad in [0, 1, MIN_RING_SIZE / 2, MIN_RING_SIZE + 1, 3 * MIN_RING_SIZE, 2 * MAX_RING_SIZE, usize::MAX] {
            let refused = std::panic::catch_unwind(|| ShmOptions::new().ring_size(bad)).unwrap_err();
            let message = refused.downcast_ref::<String>().expect("a formatted message");
            assert_eq!(
                message,
                &format!("ShmOptions::ring_size must be a power of two from 4096 to 67108864 bytes, not {bad}")
            );
        }
    }
}
