//! [`TransportOptions`]: the knobs shared by every mechanism.

use rpc_core::wire::DEFAULT_MAX_FRAME_LEN;

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
    /// if `0o002` is set. Ignored by `tcp://` and `mem://`, and on Windows.
    pub mode: u32,
}

impl Default for TransportOptions {
    fn default() -> Self {
        Self { max_frame_len: DEFAULT_MAX_FRAME_LEN, mode: 0o600 }
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
