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
//! goaway       07 | postcard(reason: String)       (the sender closes the connection next)
//! ```

pub mod codec;

use serde::{Deserialize, Serialize};

pub use codec::{FrameTooLarge, LengthDelimited, DEFAULT_MAX_FRAME_LEN, LENGTH_PREFIX_LEN};

/// The protocol version this build speaks. Bumped on any incompatible change of the layouts above.
pub const PROTOCOL_VERSION: u16 = 1;

const KIND_HELLO: u8 = 0x01;
const KIND_HELLO_REPLY: u8 = 0x02;
const KIND_REQUEST: u8 = 0x03;
const KIND_RESPONSE_OK: u8 = 0x04;
const KIND_RESPONSE_ERR: u8 = 0x05;
const KIND_CANCEL: u8 = 0x06;
const KIND_GOAWAY: u8 = 0x07;

/// Length of the fixed request header (kind, call id, method id, timeout).
pub const REQUEST_HEADER_LEN: usize = 1 + 8 + 4 + 8;
/// Length of the fixed response header (kind, call id).
pub const RESPONSE_HEADER_LEN: usize = 1 + 8;
/// Length of a cancel frame.
pub const CANCEL_LEN: usize = 1 + 8;

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
    Accepted,
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
        /// Human-readable reason.
        reason: String,
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
            let (head, args) =
                split_at_checked(rest, REQUEST_HEADER_LEN - 1).ok_or(DecodeError::Truncated("request"))?;
            let id = u64::from_le_bytes(head[0..8].try_into().expect("8 bytes"));
            let method = u32::from_le_bytes(head[8..12].try_into().expect("4 bytes"));
            let timeout = u64::from_le_bytes(head[12..20].try_into().expect("8 bytes"));
            let timeout_us = (timeout != 0).then_some(timeout);
            Ok(Frame::Request { header: RequestHeader { id, method, timeout_us }, args })
        }
        KIND_RESPONSE_OK => {
            let (id, payload) = split_id(rest, "response")?;
            Ok(Frame::ResponseOk { id, payload })
        }
        KIND_RESPONSE_ERR => {
            let (id, body) = split_id(rest, "error response")?;
            Ok(Frame::ResponseErr { id, error: body_of(body, "error response")? })
        }
        KIND_CANCEL => {
            let (id, rest) = split_id(rest, "cancel")?;
            if !rest.is_empty() {
                return Err(DecodeError::Trailing("cancel"));
            }
            Ok(Frame::Cancel { id })
        }
        KIND_GOAWAY => Ok(Frame::Goaway { reason: body_of(rest, "goaway")? }),
        other => Err(DecodeError::UnknownKind(other)),
    }
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

fn body_of<'de, T: Deserialize<'de>>(body: &'de [u8], what: &'static str) -> Result<T, DecodeError> {
    match postcard::take_from_bytes::<T>(body) {
        Ok((value, [])) => Ok(value),
        Ok(_) => Err(DecodeError::Trailing(what)),
        Err(_) => Err(DecodeError::Body(what)),
    }
}

/// The call id of a response frame (ok or error) without decoding its body, so the client's
/// reader can route an answer to its caller, who decodes it once; `None` for any other frame.
pub fn response_id(frame: &[u8]) -> Option<u64> {
    match frame.split_first() {
        Some((&(KIND_RESPONSE_OK | KIND_RESPONSE_ERR), rest)) => split_id(rest, "response").ok().map(|(id, _)| id),
        _ => None,
    }
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

/// Encodes a request frame whose arguments are `args`.
pub fn encode_request<A: Serialize + ?Sized>(header: RequestHeader, args: &A) -> Result<Vec<u8>, postcard::Error> {
    let mut buf = Vec::with_capacity(REQUEST_HEADER_LEN + 16);
    buf.push(KIND_REQUEST);
    buf.extend_from_slice(&header.id.to_le_bytes());
    buf.extend_from_slice(&header.method.to_le_bytes());
    buf.extend_from_slice(&header.timeout_us.unwrap_or(0).to_le_bytes());
    postcard::to_extend(args, buf)
}

/// The encoded return value of a handler, with room reserved in front for the response header,
/// so the engine turns it into a frame with [`ResponsePayload::into_frame`] without copying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponsePayload(Vec<u8>);

impl ResponsePayload {
    /// Encodes `value` as a response payload.
    pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Self, postcard::Error> {
        let buf = vec![0; RESPONSE_HEADER_LEN];
        postcard::to_extend(value, buf).map(ResponsePayload)
    }

    /// Length of the frame this payload becomes.
    pub fn frame_len(&self) -> usize {
        self.0.len()
    }

    /// Writes the header for call `id` and returns the finished response frame.
    pub fn into_frame(mut self, id: u64) -> Vec<u8> {
        self.0[0] = KIND_RESPONSE_OK;
        self.0[1..RESPONSE_HEADER_LEN].copy_from_slice(&id.to_le_bytes());
        self.0
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
pub fn encode_goaway(reason: &str) -> Vec<u8> {
    postcard::to_extend(reason, vec![KIND_GOAWAY]).expect("strings always serialize")
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
