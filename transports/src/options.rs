//! [`TransportOptions`]: the knobs shared by every mechanism.

use std::time::Duration;

use rpc_core::wire::DEFAULT_MAX_FRAME_LEN;

/// Default [`TransportOptions::ring_size`]: 256 KiB per direction.
pub const DEFAULT_RING_SIZE: usize = 256 * 1024;
/// Default [`TransportOptions::spin`]: about what a ring round trip to a busy peer can take
/// while still being worth not sleeping for (waking a sleeping peer costs 50-90 µs here).
pub const DEFAULT_SPIN: Duration = Duration::from_micros(50);

/// Options for [`connect_with`](crate::connect_with) and [`listen_with`](crate::listen_with).
///
/// `#[non_exhaustive]`: build it from [`Default`] (or [`TransportOptions::new`]) and the
/// builder-style setters, so new options can be added without breaking callers.
///
/// ```
/// let options = rpc_transports::TransportOptions::new().max_frame_len(1 << 20).mode(0o660);
/// assert_eq!(options.max_frame_len, 1 << 20);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TransportOptions {
    /// The largest frame this side sends or accepts, in bytes; larger frames are refused with an
    /// error wrapping [`FrameTooLarge`](rpc_core::wire::FrameTooLarge). Byte-stream mechanisms
    /// cap it at `u32::MAX` (the length prefix is 32 bits). Default:
    /// [`DEFAULT_MAX_FRAME_LEN`].
    pub max_frame_len: usize,
    /// Who may connect to a local endpoint this side creates, as Unix permission bits (only the
    /// `0o777` bits are used). Default `0o600`: the owner only.
    ///
    /// `unix://` sets these bits on the socket file, `fifo://` on the connect FIFO (listener) and
    /// on each connection's private FIFO pair (client). `local://` on Linux lives in the abstract
    /// namespace, which has no permissions, so the listener checks each client's credentials
    /// instead: the same user and root always pass, the group passes if `0o020` is set, everyone
    /// if `0o002` is set. `shm://` applies the same check to its setup socket. Ignored by
    /// `tcp://` and `mem://`, and on Windows.
    pub mode: u32,
    /// `shm://` only, listener side: the size in bytes of each of a connection's two rings (a
    /// power of two from 4 KiB to 64 MiB; frames larger than the ring stream through it in
    /// pieces). Each connection maps `2 * ring_size + 4096` bytes. The client uses the size the
    /// server offers. Default [`DEFAULT_RING_SIZE`].
    pub ring_size: usize,
    /// `shm://` only: the longest a side polls its ring for bytes (or room) before it sleeps.
    /// Polling lets a busy peer's answer arrive in well under a microsecond instead of the tens
    /// of microseconds a wake-up costs; the time actually spent adapts (it shrinks while the
    /// peer is idle), and `Duration::ZERO` turns polling off. Default [`DEFAULT_SPIN`].
    pub spin: Duration,
}

impl Default for TransportOptions {
    fn default() -> Self {
        Self { max_frame_len: DEFAULT_MAX_FRAME_LEN, mode: 0o600, ring_size: DEFAULT_RING_SIZE, spin: DEFAULT_SPIN }
    }
}

impl TransportOptions {
    /// The default options.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`max_frame_len`](Self::max_frame_len).
    #[must_use]
    pub fn max_frame_len(mut self, max_frame_len: usize) -> Self {
        self.max_frame_len = max_frame_len;
        self
    }

    /// Sets [`mode`](Self::mode).
    #[must_use]
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }

    /// Sets [`ring_size`](Self::ring_size).
    #[must_use]
    pub fn ring_size(mut self, ring_size: usize) -> Self {
        self.ring_size = ring_size;
        self
    }

    /// Sets [`spin`](Self::spin).
    #[must_use]
    pub fn spin(mut self, spin: Duration) -> Self {
        self.spin = spin;
        self
    }

    /// The maximum frame length byte-stream framing can honour (its prefix is 32 bits); every
    /// mechanism uses this value so that `ConnectionInfo::max_frame_len` means the same thing
    /// everywhere.
    pub(crate) fn effective_max_frame_len(&self) -> usize {
        self.max_frame_len.min(u32::MAX as usize)
    }

    /// The permission bits that matter.
    #[cfg_attr(not(unix), allow(dead_code))]
    pub(crate) fn permission_bits(&self) -> u32 {
        self.mode & 0o777
    }
}
