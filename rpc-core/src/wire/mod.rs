//! The wire protocol: frame layouts and their encoding, as pure functions over bytes.
//!
//! Nothing here does I/O, so every function can be unit-tested, property-tested and fuzzed
//! without a socket. A *frame* is the unit a transport carries; byte-stream transports wrap each
//! frame in a length prefix ([`codec`]), message transports carry it as one message.
//!
//! Every frame starts with a one-byte kind. Request, response and cancel frames have fixed-size
//! little-endian headers (so the engines can reserve room for the header and serialize the
//! payload straight behind it, without a second copy); the payload after the header is the
//! postcard encoding of the arguments (a tuple) or of the return value. Hello frames carry the
//! protocol version at a fixed offset, then a postcard body, so a peer of another version is
//! recognised before anything version-specific is decoded.
//!
//! ```text
//! hello        01 | version u16 | postcard(Hello)
//! hello reply  02 | version u16 | postcard(HelloReply)
//! request      03 | call id u64 | method id u32 | timeout µs u64 (0 = none) | postcard(args)
//! response ok  04 | call id u64 | postcard(return value)
//! response err 05 | call id u64 | postcard(RemoteError)
//! cancel       06 | call id u64
//! goaway       07 | close code u16 | postcard(reason: String)   (the sender closes the connection next)
//! stream items 08 | call id u64 | (item len u32 | postcard(item))+
//! stream end   09 | call id u64
//! credit       0a | call id u64 | bytes u32
//! stream stop  0b | call id u64
//! traced req.  0c | call id u64 | method id u32 | timeout µs u64 | trace id u128 | span id u64 | postcard(args)
//! ```
//!
//! A *traced request* is a request that carries the caller's trace context (see
//! [`TraceContext`]): sent only by a client that turned propagation on, so a call without it
//! costs not one byte more. A peer that knows requests but not traced requests closes the
//! connection as for any unknown frame kind, so propagation is for servers of this build or newer.
//!
//! ## Streams (protocol version 2)
//!
//! A streaming call is a request like any other; what its method streams is known to both ends
//! from the service (the signatures compared in the hello say so). Each direction of a call
//! carries at most one stream:
//!
//! - The client's stream (an argument `Stream<T>`) follows its request: *stream items* frames,
//!   then a *stream end*. The server answers with a response as for a unary call; it may answer
//!   before the client's stream ended, and it sends *stream stop* when the handler drops the
//!   stream unread, after which the client sends no more of it.
//! - The server's stream (a return type `Stream<T>`) begins with a *response ok* whose payload
//!   is empty (the handler returned its stream), then *stream items* frames, then a *stream
//!   end*. A *response err* ends it with a failure at any point (deadline, panic, shutdown).
//!
//! A stream items frame batches one or more items, each prefixed by its length. Flow control is
//! by credit, in bytes of stream items frames (whole frames, headers included): each end
//! announces in the hello exchange the window it grants every stream it receives; a sender may
//! send a stream items frame while it has credit left (so it exceeds its credit by at most one
//! frame), and the receiver grants more with a *credit* frame as its consumer takes items. A
//! stream items frame that arrives when the sender had no credit left, or a credit that would
//! give the sender more than the receiver's window, is a protocol violation. A client that no
//! longer wants a call's stream cancels the call (the *cancel* frame).

mod arena;
pub(crate) use arena::WideError;
pub mod codec;
mod encoded;
mod items;

use serde::{Deserialize, Serialize};

use arena::Sink;

pub(crate) use arena::offer as offer_splice;
pub use codec::{FrameTooLarge, LengthDelimited, DEFAULT_MAX_FRAME_LEN, LENGTH_PREFIX_LEN};
pub use encoded::{Encoded, INLINE_MAX, SPLICE_MIN};
pub use items::ItemsWriter;

/// The protocol version this build speaks. Bumped on any incompatible change of the layouts above.
///
/// Version 2 added streams (their frames, the stream window in the hello exchange) and close
/// codes in goaway frames.
pub const PROTOCOL_VERSION: u16 = 2;

const KIND_HELLO: u8 = 0x01;
const KIND_HELLO_REPLY: u8 = 0x02;
const KIND_REQUEST: u8 = 0x03;
const KIND_RESPONSE_OK: u8 = 0x04;
const KIND_RESPONSE_ERR: u8 = 0x05;
const KIND_CANCEL: u8 = 0x06;
const KIND_GOAWAY: u8 = 0x07;
const KIND_STREAM_ITEMS: u8 = 0x08;
const KIND_STREAM_END: u8 = 0x09;
const KIND_CREDIT: u8 = 0x0a;
const KIND_STREAM_STOP: u8 = 0x0b;
const KIND_TRACED_REQUEST: u8 = 0x0c;

/// Length of the fixed request header (kind, call id, method id, timeout).
pub const REQUEST_HEADER_LEN: usize = 1 + 8 + 4 + 8;
/// Length of the trace context a traced request adds after the request header.
pub const TRACE_CONTEXT_LEN: usize = 16 + 8;
/// Length of the fixed response header (kind, call id).
pub const RESPONSE_HEADER_LEN: usize = 1 + 8;
/// Length of a cancel frame.
pub const CANCEL_LEN: usize = 1 + 8;
/// Length of the fixed header of a stream items frame (kind, call id).
pub const STREAM_ITEMS_HEADER_LEN: usize = 1 + 8;
/// Bytes in front of every item in a stream items frame (its length).
pub const ITEM_PREFIX_LEN: usize = 4;
/// Length of a credit frame.
pub const CREDIT_LEN: usize = 1 + 8 + 4;
/// The stream window an end grants every stream it receives unless configured otherwise.
pub const DEFAULT_STREAM_WINDOW: u32 = 256 * 1024;
/// The smallest stream window the hello exchange accepts: below this a stream would need a
/// credit frame for every few items.
pub const MIN_STREAM_WINDOW: u32 = 4096;

/// The largest hello or hello reply [`decode`] accepts. Decoding a list expands it: an empty
/// method name and signature take 2 bytes on the wire and 48 in memory, so a frame of the
/// general maximum could cost a peer's memory two dozen times its size. A real hello (every
/// method's name and signature) is a few KiB.
pub const MAX_HELLO_LEN: usize = 256 * 1024;

/// The first frame a client sends: which service it wants, and the signatures it was built with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The service's name.
    pub service: String,
    /// Every method the client knows, with its signature.
    pub methods: Vec<MethodSignature>,
    /// The credit, in bytes, the client grants each stream the server sends it
    /// (at least [`MIN_STREAM_WINDOW`]).
    pub stream_window: u32,
}

/// A method's name and signature, as compared during the hello exchange.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MethodSignature {
    /// Method name.
    pub name: String,
    /// Argument and return types as written in the trait.
    pub signature: String,
}

/// The server's answer to a [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HelloReply {
    /// The connection is bound to the requested service; requests may follow.
    Accepted {
        /// The credit, in bytes, the server grants each stream a client sends it
        /// (at least [`MIN_STREAM_WINDOW`]).
        stream_window: u32,
    },
    /// The server serves no service of that name.
    UnknownService {
        /// What it does serve.
        available: Vec<String>,
    },
    /// The service exists but some method the client knows differs or is missing.
    InterfaceMismatch {
        /// One human-readable line per difference.
        differences: Vec<String>,
    },
    /// The client's protocol version is not supported; the hello body was not read.
    VersionMismatch,
}

/// A framework failure reported by the server in place of a return value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
// A word-wide tag, for aligned copies (see `RpcError`'s); the size stays 32 bytes (asserted below).
#[repr(u64)]
pub enum RemoteError {
    /// No method with this id in the connection's service.
    UnknownMethod {
        /// The id the request carried.
        id: u32,
    },
    /// The arguments could not be decoded as the method's argument types.
    Decode(String),
    /// The return value could not be encoded.
    Encode(String),
    /// The handler did not finish before the call's deadline.
    DeadlineExceeded,
    /// The handler was cancelled (server shutting down).
    Cancelled,
    /// The handler panicked.
    Panic(String),
    /// The server is at a limit and refused the call.
    Overloaded,
    /// The encoded return value is larger than the connection's maximum frame length.
    ResponseTooLarge {
        /// Encoded size.
        size: u64,
        /// Maximum frame length.
        max: u64,
    },
    /// A middleware layer of the server refused the call (its error, as text). Last, so the
    /// variants before it keep their numbers on the wire.
    Rejected(String),
}

#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<RemoteError>() == 32);

impl std::fmt::Display for RemoteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RemoteError::UnknownMethod { id } => write!(f, "unknown method id {id:#010x}"),
            RemoteError::Decode(what) => write!(f, "could not decode the {what}"),
            RemoteError::Encode(what) => write!(f, "could not encode the {what}"),
            RemoteError::DeadlineExceeded => f.write_str("deadline exceeded"),
            RemoteError::Cancelled => f.write_str("cancelled"),
            RemoteError::Panic(message) => write!(f, "handler panicked: {message}"),
            RemoteError::Overloaded => f.write_str("overloaded"),
            RemoteError::ResponseTooLarge { size, max } => {
                write!(f, "response of {size} bytes exceeds the maximum of {max} bytes")
            }
            RemoteError::Rejected(message) => write!(f, "rejected: {message}"),
        }
    }
}

/// So that a middleware layer's errors and ours pass through `tower`'s boxed errors.
impl std::error::Error for RemoteError {}

/// Why a connection is closed: the machine-readable half of a goaway (the other half is a text
/// for people). Codes are stable numbers on the wire; a code this build does not know arrives as
/// [`CloseCode::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseCode {
    /// The sender is done with the connection; nothing went wrong.
    Normal,
    /// The peer broke the protocol (a malformed or unexpected frame, a reused call id, stream
    /// items without credit, ...).
    ProtocolViolation,
    /// The server is shutting down.
    ShuttingDown,
    /// The connection was idle for longer than the idle timeout.
    IdleTimeout,
    /// The client did not complete the hello within the handshake timeout.
    HandshakeTimeout,
    /// The peer held part of a frame for longer than the frame timeout.
    FrameTimeout,
    /// The peer read none of its answers for longer than the send timeout.
    SendTimeout,
    /// The server refused the client (e.g. `same_uid_only`).
    Refused,
    /// The server is at a limit.
    Overloaded,
    /// A frame was larger than the connection allows.
    FrameTooLarge,
    /// The transport failed (an I/O error) while the sender could still say so.
    TransportError,
    /// A code this build does not know (sent by a newer peer).
    Other(u16),
}

impl CloseCode {
    /// The code's number on the wire.
    pub fn to_u16(self) -> u16 {
        match self {
            CloseCode::Normal => 0,
            CloseCode::ProtocolViolation => 1,
            CloseCode::ShuttingDown => 2,
            CloseCode::IdleTimeout => 3,
            CloseCode::HandshakeTimeout => 4,
            CloseCode::FrameTimeout => 5,
            CloseCode::SendTimeout => 6,
            CloseCode::Refused => 7,
            CloseCode::Overloaded => 8,
            CloseCode::FrameTooLarge => 9,
            CloseCode::TransportError => 10,
            CloseCode::Other(code) => code,
        }
    }

    /// The code a number on the wire stands for.
    pub fn from_u16(code: u16) -> Self {
        match code {
            0 => CloseCode::Normal,
            1 => CloseCode::ProtocolViolation,
            2 => CloseCode::ShuttingDown,
            3 => CloseCode::IdleTimeout,
            4 => CloseCode::HandshakeTimeout,
            5 => CloseCode::FrameTimeout,
            6 => CloseCode::SendTimeout,
            7 => CloseCode::Refused,
            8 => CloseCode::Overloaded,
            9 => CloseCode::FrameTooLarge,
            10 => CloseCode::TransportError,
            other => CloseCode::Other(other),
        }
    }
}

impl std::fmt::Display for CloseCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CloseCode::Normal => f.write_str("normal close"),
            CloseCode::ProtocolViolation => f.write_str("protocol violation"),
            CloseCode::ShuttingDown => f.write_str("shutting down"),
            CloseCode::IdleTimeout => f.write_str("idle timeout"),
            CloseCode::HandshakeTimeout => f.write_str("handshake timeout"),
            CloseCode::FrameTimeout => f.write_str("frame timeout"),
            CloseCode::SendTimeout => f.write_str("send timeout"),
            CloseCode::Refused => f.write_str("refused"),
            CloseCode::Overloaded => f.write_str("overloaded"),
            CloseCode::FrameTooLarge => f.write_str("frame too large"),
            CloseCode::TransportError => f.write_str("transport error"),
            CloseCode::Other(code) => write!(f, "close code {code}"),
        }
    }
}

/// A request header, as decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHeader {
    /// Call id chosen by the client, unique among its pending calls.
    pub id: u64,
    /// Method id ([`crate::descriptor::method_id`]).
    pub method: u32,
    /// Time left until the client's deadline, in microseconds, if it set one.
    pub timeout_us: Option<u64>,
}

/// Where a call sits in a distributed trace: the trace it belongs to and the caller's span in
/// it, as in W3C Trace Context (`traceparent`), so a server's call span can name the client's
/// call span as its parent. Carried by a traced request ([`encode_traced_request`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceContext {
    /// The trace's id (never 0 in a valid context).
    pub trace_id: u128,
    /// The id of the caller's span (never 0 in a valid context).
    pub span_id: u64,
}

/// A decoded frame. Payloads borrow from the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame<'a> {
    /// Client → server, first frame.
    Hello {
        /// The peer's protocol version.
        version: u16,
        /// The body; `None` if the version is not ours (the body's layout is then unknown).
        hello: Option<Hello>,
    },
    /// Server → client, answer to the hello.
    HelloReply {
        /// The peer's protocol version.
        version: u16,
        /// The body; `None` if the version is not ours.
        reply: Option<HelloReply>,
    },
    /// Client → server: call a method.
    Request {
        /// Fixed header.
        header: RequestHeader,
        /// postcard-encoded argument tuple.
        args: &'a [u8],
        /// The caller's trace context, if it sent a traced request.
        trace: Option<TraceContext>,
    },
    /// Server → client: the method returned.
    ResponseOk {
        /// Call id of the request.
        id: u64,
        /// postcard-encoded return value.
        payload: &'a [u8],
    },
    /// Server → client: the call failed in the framework.
    ResponseErr {
        /// Call id of the request.
        id: u64,
        /// What went wrong.
        error: RemoteError,
    },
    /// Client → server: the caller gave up on this call.
    Cancel {
        /// Call id of the request.
        id: u64,
    },
    /// Either side: the connection is about to close, and why (shutdown, protocol violation).
    Goaway {
        /// Machine-readable reason.
        code: CloseCode,
        /// Human-readable reason.
        reason: String,
    },
    /// Either side: items of the stream this side sends in call `id`.
    StreamItems {
        /// Call id of the request.
        id: u64,
        /// The items, each prefixed by its length (checked by [`decode`]; iterate with [`items()`]).
        items: &'a [u8],
    },
    /// Either side: the stream this side sends in call `id` ended normally.
    StreamEnd {
        /// Call id of the request.
        id: u64,
    },
    /// Either side: the sender may send `bytes` more of its stream in call `id`.
    Credit {
        /// Call id of the request.
        id: u64,
        /// Further bytes of stream items frames the receiver of the stream will take.
        bytes: u32,
    },
    /// Server → client: the handler dropped the client's stream of call `id`; send no more of it.
    StreamStop {
        /// Call id of the request.
        id: u64,
    },
}

/// Why a frame could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The frame had no bytes at all.
    #[error("empty frame")]
    Empty,
    /// The first byte is no known frame kind.
    #[error("unknown frame kind {0:#04x}")]
    UnknownKind(u8),
    /// The frame is shorter than its kind's fixed header.
    #[error("truncated {0} frame")]
    Truncated(&'static str),
    /// The postcard body is malformed.
    #[error("malformed {0} body")]
    Body(&'static str),
    /// Bytes left over after a frame that has no payload.
    #[error("trailing bytes after {0} frame")]
    Trailing(&'static str),
    /// A frame of a kind that has a lower limit than the transport's (see [`MAX_HELLO_LEN`]).
    #[error("{what} frame of {len} bytes exceeds the maximum of {max} bytes")]
    TooLong {
        /// The frame's kind.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit for that kind.
        max: usize,
    },
}

/// Decodes one frame. Never panics, whatever the input.
pub fn decode(buf: &[u8]) -> Result<Frame<'_>, DecodeError> {
    let (&kind, rest) = buf.split_first().ok_or(DecodeError::Empty)?;
    let bounded = |what| {
        if buf.len() > MAX_HELLO_LEN {
            return Err(DecodeError::TooLong { what, len: buf.len(), max: MAX_HELLO_LEN });
        }
        Ok(())
    };
    match kind {
        KIND_HELLO => {
            bounded("hello")?;
            let (version, body) = split_version(rest, "hello")?;
            let hello = if version == PROTOCOL_VERSION { Some(body_of(body, "hello")?) } else { None };
            Ok(Frame::Hello { version, hello })
        }
        KIND_HELLO_REPLY => {
            bounded("hello reply")?;
            let (version, body) = split_version(rest, "hello reply")?;
            let reply = if version == PROTOCOL_VERSION { Some(body_of(body, "hello reply")?) } else { None };
            Ok(Frame::HelloReply { version, reply })
        }
        KIND_REQUEST => {
            let (header, args) = request_header(rest, "request")?;
            Ok(Frame::Request { header, args, trace: None })
        }
        KIND_TRACED_REQUEST => {
            let (header, rest) = request_header(rest, "traced request")?;
            let (trace, args) =
                split_at_checked(rest, TRACE_CONTEXT_LEN).ok_or(DecodeError::Truncated("traced request"))?;
            let trace_id = u128::from_le_bytes(trace[0..16].try_into().expect("16 bytes"));
            let span_id = u64::from_le_bytes(trace[16..24].try_into().expect("8 bytes"));
            if trace_id == 0 || span_id == 0 {
                return Err(DecodeError::Body("traced request"));
            }
            Ok(Frame::Request { header, args, trace: Some(TraceContext { trace_id, span_id }) })
        }
        KIND_RESPONSE_OK => {
            let (id, payload) = split_id(rest, "response")?;
            Ok(Frame::ResponseOk { id, payload })
        }
        KIND_RESPONSE_ERR => {
            let (id, body) = split_id(rest, "error response")?;
            Ok(Frame::ResponseErr { id, error: body_of(body, "error response")? })
        }
        KIND_CANCEL => Ok(Frame::Cancel { id: id_only(rest, "cancel")? }),
        KIND_GOAWAY => {
            let (code, body) = split_at_checked(rest, 2).ok_or(DecodeError::Truncated("goaway"))?;
            let code = CloseCode::from_u16(u16::from_le_bytes([code[0], code[1]]));
            Ok(Frame::Goaway { code, reason: body_of(body, "goaway")? })
        }
        KIND_STREAM_ITEMS => {
            let (id, items) = split_id(rest, "stream items")?;
            check_items(items)?;
            Ok(Frame::StreamItems { id, items })
        }
        KIND_STREAM_END => Ok(Frame::StreamEnd { id: id_only(rest, "stream end")? }),
        KIND_STREAM_STOP => Ok(Frame::StreamStop { id: id_only(rest, "stream stop")? }),
        KIND_CREDIT => {
            let (id, rest) = split_id(rest, "credit")?;
            let bytes: [u8; 4] = rest.try_into().map_err(|_| {
                if rest.len() < 4 {
                    DecodeError::Truncated("credit")
                } else {
                    DecodeError::Trailing("credit")
                }
            })?;
            Ok(Frame::Credit { id, bytes: u32::from_le_bytes(bytes) })
        }
        other => Err(DecodeError::UnknownKind(other)),
    }
}

/// The fixed header of a request (plain or traced), and what follows it.
fn request_header<'a>(rest: &'a [u8], what: &'static str) -> Result<(RequestHeader, &'a [u8]), DecodeError> {
    let (head, tail) = split_at_checked(rest, REQUEST_HEADER_LEN - 1).ok_or(DecodeError::Truncated(what))?;
    let id = u64::from_le_bytes(head[0..8].try_into().expect("8 bytes"));
    let method = u32::from_le_bytes(head[8..12].try_into().expect("4 bytes"));
    let timeout = u64::from_le_bytes(head[12..20].try_into().expect("8 bytes"));
    let timeout_us = (timeout != 0).then_some(timeout);
    Ok((RequestHeader { id, method, timeout_us }, tail))
}

fn split_at_checked(buf: &[u8], mid: usize) -> Option<(&[u8], &[u8])> {
    (buf.len() >= mid).then(|| buf.split_at(mid))
}

fn split_version<'a>(rest: &'a [u8], what: &'static str) -> Result<(u16, &'a [u8]), DecodeError> {
    let (v, body) = split_at_checked(rest, 2).ok_or(DecodeError::Truncated(what))?;
    Ok((u16::from_le_bytes([v[0], v[1]]), body))
}

fn split_id<'a>(rest: &'a [u8], what: &'static str) -> Result<(u64, &'a [u8]), DecodeError> {
    let (id, body) = split_at_checked(rest, 8).ok_or(DecodeError::Truncated(what))?;
    Ok((u64::from_le_bytes(id.try_into().expect("8 bytes")), body))
}

/// A frame that is a call id and nothing else.
fn id_only(rest: &[u8], what: &'static str) -> Result<u64, DecodeError> {
    let (id, rest) = split_id(rest, what)?;
    if !rest.is_empty() {
        return Err(DecodeError::Trailing(what));
    }
    Ok(id)
}

/// Checks that `items` is one or more length-prefixed items that end exactly at its end.
fn check_items(mut items: &[u8]) -> Result<(), DecodeError> {
    if items.is_empty() {
        return Err(DecodeError::Truncated("stream items"));
    }
    while !items.is_empty() {
        let (len, rest) = split_at_checked(items, ITEM_PREFIX_LEN).ok_or(DecodeError::Truncated("stream items"))?;
        let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
        if rest.len() < len {
            return Err(DecodeError::Truncated("stream items"));
        }
        items = &rest[len..];
    }
    Ok(())
}

/// The items of a [`Frame::StreamItems`] (its `items`), each the postcard encoding of one item.
///
/// Only for item lists [`decode`] accepted: on anything else it stops early.
pub fn items(items: &[u8]) -> Items<'_> {
    Items { items, pos: 0 }
}

/// The iterator of [`items()`].
#[derive(Debug, Clone)]
pub struct Items<'a> {
    items: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for Items<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let (item, next) = item_at(self.items, self.pos)?;
        self.pos = next;
        Some(item)
    }
}

fn body_of<'de, T: Deserialize<'de>>(body: &'de [u8], what: &'static str) -> Result<T, DecodeError> {
    match postcard::take_from_bytes::<T>(body) {
        Ok((value, [])) => Ok(value),
        Ok(_) => Err(DecodeError::Trailing(what)),
        Err(_) => Err(DecodeError::Body(what)),
    }
}

/// What a frame that belongs to one call is, as far as routing it needs: see [`route`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// A response (ok or error): decoded by the caller.
    Response,
    /// Stream items: routed whole, decoded item by item by the stream's consumer.
    StreamItems,
    /// The end of a stream.
    StreamEnd,
    /// Credit for the stream this side sends; carries the bytes granted.
    Credit(u32),
    /// The peer stopped reading the stream this side sends.
    StreamStop,
}

/// The call a server-to-client frame belongs to and what it is, from its header alone, so the
/// client's reader routes every frame of a call without decoding its body; `None` for frames
/// that belong to no call (a goaway) or are malformed (left to [`decode`] to explain). A stream
/// items frame is checked whole here, so its consumer can walk it with [`item_at`].
pub fn route(frame: &[u8]) -> Option<(u64, Route)> {
    let (&kind, rest) = frame.split_first()?;
    let (id, body) = split_id(rest, "").ok()?;
    let route = match kind {
        KIND_RESPONSE_OK | KIND_RESPONSE_ERR => Route::Response,
        KIND_STREAM_ITEMS if check_items(body).is_ok() => Route::StreamItems,
        KIND_STREAM_END if body.is_empty() => Route::StreamEnd,
        KIND_STREAM_STOP if body.is_empty() => Route::StreamStop,
        KIND_CREDIT => Route::Credit(u32::from_le_bytes(body.try_into().ok()?)),
        _ => return None,
    };
    Some((id, route))
}

/// The item at byte offset `pos` of a stream items frame (the first is at
/// [`STREAM_ITEMS_HEADER_LEN`]), or of its item list (the first at 0), and the offset of the
/// next; `None` past the last item.
pub fn item_at(frame: &[u8], pos: usize) -> Option<(&[u8], usize)> {
    let rest = frame.get(pos..)?;
    let (len, rest) = split_at_checked(rest, ITEM_PREFIX_LEN)?;
    let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
    let item = rest.get(..len)?;
    Some((item, pos + ITEM_PREFIX_LEN + len))
}

/// Encodes a hello frame.
pub fn encode_hello(hello: &Hello) -> Vec<u8> {
    encode_versioned(KIND_HELLO, hello)
}

/// Encodes a hello reply frame.
pub fn encode_hello_reply(reply: &HelloReply) -> Vec<u8> {
    encode_versioned(KIND_HELLO_REPLY, reply)
}

fn encode_versioned<T: Serialize>(kind: u8, body: &T) -> Vec<u8> {
    let mut buf = Vec::with_capacity(64);
    buf.push(kind);
    buf.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    // Serializing our own plain data types into a Vec cannot fail.
    postcard::to_extend(body, buf).expect("hello bodies always serialize")
}

/// Encodes a request frame whose arguments are `args`; large [`crate::bytes::Bytes`] arguments
/// are parts of their own (see [`Encoded`]).
pub fn encode_request<A: Serialize + ?Sized>(header: RequestHeader, args: &A) -> Result<Encoded, postcard::Error> {
    encode_traced_request(header, None, args)
}

/// Encodes a request frame whose arguments are `args`: a traced request if `trace` is given
/// (its ids must not be 0), a plain request, byte for byte what [`encode_request`] makes, if not.
pub fn encode_traced_request<A: Serialize + ?Sized>(
    header: RequestHeader,
    trace: Option<TraceContext>,
    args: &A,
) -> Result<Encoded, postcard::Error> {
    request_frame(header, trace, args).map_err(|WideError(e)| e)
}

/// [`encode_traced_request`] for the client engine, which maps the error itself (see
/// [`WideError`]).
pub(crate) fn request_frame<A: Serialize + ?Sized>(
    header: RequestHeader,
    trace: Option<TraceContext>,
    args: &A,
) -> Result<Encoded, WideError> {
    arena::frame(|buf| {
        buf.push(if trace.is_some() { KIND_TRACED_REQUEST } else { KIND_REQUEST });
        buf.extend(&header.id.to_le_bytes());
        buf.extend(&header.method.to_le_bytes());
        buf.extend(&header.timeout_us.unwrap_or(0).to_le_bytes());
        if let Some(trace) = trace {
            buf.extend(&trace.trace_id.to_le_bytes());
            buf.extend(&trace.span_id.to_le_bytes());
        }
        arena::serialize(args, buf).map_err(WideError)
    })
    .map(arena::Built::freeze)
}

/// The encoded return value of a handler, with room reserved in front for the response header,
/// so the engine turns it into a frame with [`ResponsePayload::into_frame`] without copying
/// (large [`crate::bytes::Bytes`] in it are parts of their own, see [`Encoded`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponsePayload(arena::Built);

impl ResponsePayload {
    /// Encodes `value` as a response payload.
    pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Self, postcard::Error> {
        Self::encode_wide(value).map_err(|WideError(e)| e)
    }

    /// [`encode`](Self::encode) for the server engine, which maps the error itself (see
    /// [`WideError`]).
    pub(crate) fn encode_wide<T: Serialize + ?Sized>(value: &T) -> Result<Self, WideError> {
        arena::frame(|buf| {
            buf.extend(&[0; RESPONSE_HEADER_LEN]);
            arena::serialize(value, buf).map_err(WideError)
        })
        .map(ResponsePayload)
    }

    /// Length of the frame this payload becomes.
    pub fn frame_len(&self) -> usize {
        self.0.len()
    }

    /// Writes the header for call `id` and returns the finished response frame.
    pub fn into_frame(mut self, id: u64) -> Encoded {
        let head = self.0.head_mut();
        head[0] = KIND_RESPONSE_OK;
        head[1..RESPONSE_HEADER_LEN].copy_from_slice(&id.to_le_bytes());
        self.0.freeze()
    }
}

/// Encodes an error response frame.
pub fn encode_response_err(id: u64, error: &RemoteError) -> Vec<u8> {
    let mut buf = Vec::with_capacity(RESPONSE_HEADER_LEN + 16);
    buf.push(KIND_RESPONSE_ERR);
    buf.extend_from_slice(&id.to_le_bytes());
    postcard::to_extend(error, buf).expect("remote errors always serialize")
}

/// Encodes a cancel frame.
pub fn encode_cancel(id: u64) -> Vec<u8> {
    let mut buf = Vec::with_capacity(CANCEL_LEN);
    buf.push(KIND_CANCEL);
    buf.extend_from_slice(&id.to_le_bytes());
    buf
}

/// Encodes a goaway frame.
pub fn encode_goaway(code: CloseCode, reason: &str) -> Vec<u8> {
    let mut buf = Vec::with_capacity(3 + reason.len() + 5);
    buf.push(KIND_GOAWAY);
    buf.extend_from_slice(&code.to_u16().to_le_bytes());
    postcard::to_extend(reason, buf).expect("strings always serialize")
}

/// Encodes a stream end frame.
pub fn encode_stream_end(id: u64) -> Vec<u8> {
    encode_id_only(KIND_STREAM_END, id)
}

/// Encodes a stream stop frame.
pub fn encode_stream_stop(id: u64) -> Vec<u8> {
    encode_id_only(KIND_STREAM_STOP, id)
}

/// Encodes a credit frame.
pub fn encode_credit(id: u64, bytes: u32) -> Vec<u8> {
    let mut buf = Vec::with_capacity(CREDIT_LEN);
    buf.push(KIND_CREDIT);
    buf.extend_from_slice(&id.to_le_bytes());
    buf.extend_from_slice(&bytes.to_le_bytes());
    buf
}

fn encode_id_only(kind: u8, id: u64) -> Vec<u8> {
    let mut buf = Vec::with_capacity(1 + 8);
    buf.push(kind);
    buf.extend_from_slice(&id.to_le_bytes());
    buf
}

/// Decodes a postcard value that must span all of `bytes` (arguments or a return value).
pub fn decode_value<'de, T: Deserialize<'de>>(bytes: &'de [u8]) -> Result<T, postcard::Error> {
    match postcard::take_from_bytes::<T>(bytes)? {
        (value, []) => Ok(value),
        _ => Err(postcard::Error::DeserializeBadEncoding),
    }
}

#[cfg(test)]
mod tests;
