//! The harnesses behind the transports' fuzz targets in `fuzz/` (cargo-fuzz), written once so
//! that a plain `cargo test` runs the same code over the committed seed corpus and generated
//! inputs (the pattern of `rpc_core::fuzzing`). Not part of the API: compiled for this crate's
//! tests and with the `fuzzing` feature only.
//!
//! Each drives a parser that reads bytes another process wrote and panics only when an
//! invariant breaks: a panic in our code, an accepted input that is not in the exact form a
//! peer writes, a frame longer than the limit or than the bytes that carried it.

/// `fifo_record`: the input as a connect record read from a connect FIFO, and (on Linux) as one
/// read from an `mq://` connect queue. A record is accepted only if it is exactly what a client
/// would have written for the token (and pid) it names.
#[cfg(unix)]
pub fn fifo_record(data: &[u8]) {
    use crate::rendezvous::RECORD_LEN;
    if let Some(token) = crate::fifo::parse_record(data) {
        assert!(crate::rendezvous::is_token(token.as_bytes()), "{token:?}");
        assert_eq!(&crate::fifo::record(&token)[..], &data[..RECORD_LEN], "a fifo record other than a client's");
    }
    #[cfg(target_os = "linux")]
    if let Some(request) = crate::mq::parse_record(data) {
        assert_eq!(data.len(), RECORD_LEN);
        assert_eq!(&crate::mq::record(request.pid, &request.token)[..], data, "an mq record other than a client's");
    }
}

/// `mq_messages`: the input as a sequence of `mq://` messages (each a length byte, then that
/// many bytes) read by the receiving half: each message is checked, and the bytes of the data
/// messages go through the frame codec, as on a connection. No frame may be above the limit or
/// hold more bytes than arrived; reading stops at the first error or at the end of the stream.
#[cfg(target_os = "linux")]
pub fn mq_messages(data: &[u8]) {
    use crate::mq::conn::{message, Message};
    use rpc_core::wire::LengthDelimited;
    const MAX_FRAME_LEN: usize = 1024;
    let codec = LengthDelimited::new(MAX_FRAME_LEN);
    let mut stream = bytes::BytesMut::new();
    let (mut arrived, mut framed) = (0, 0);
    let mut rest = data;
    while let Some((&len, tail)) = rest.split_first() {
        let (bytes, tail) = tail.split_at(usize::from(len).min(tail.len()));
        rest = tail;
        match message(bytes) {
            Ok(Message::Data(bytes)) => {
                assert!(!bytes.is_empty(), "an empty data message was accepted");
                arrived += bytes.len();
                stream.extend_from_slice(bytes);
            }
            Ok(Message::Close) => {
                assert_eq!(bytes.len(), 1, "a close message with bytes after it was accepted");
                return;
            }
            Err(_) => return,
        }
        loop {
            match codec.decode(&mut stream) {
                Ok(Some(frame)) => {
                    assert!(frame.len() <= MAX_FRAME_LEN, "a frame of {} bytes", frame.len());
                    framed += frame.len();
                    assert!(framed <= arrived, "more frame bytes than arrived");
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
}

/// `shm_setup`: the input as the server's setup message read by an `shm://` client; an accepted
/// message announces exactly what a server would have sent.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub fn shm_setup(data: &[u8]) {
    if let Ok((ring_len, slab_len)) = crate::shm::setup::decode(data) {
        let sent = crate::shm::setup::encode(ring_len, slab_len);
        assert_eq!(data, &sent[..], "accepted a setup message no server sends");
        // What the client checks next, before it maps anything.
        let _ = crate::shm::region::valid_ring_len(ring_len);
    }
}

#[cfg(test)]
mod tests;
