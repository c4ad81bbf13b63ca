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

/// `mq_segments`: the input as a sequence of `mq://` messages (each a length byte, then that
/// many bytes) reassembled into frames by the receiving half's parser, which must never
/// return a frame above its limit or more frame bytes than arrived, and must stop at the first
/// error or [`CLOSE`](crate::mq::conn).
#[cfg(target_os = "linux")]
pub fn mq_segments(data: &[u8]) {
    use crate::mq::conn::{Segments, Step};
    const MAX_FRAME_LEN: usize = 1024;
    let mut segments = Segments::new(MAX_FRAME_LEN);
    let mut rest = data;
    let mut framed = 0;
    while let Some((&len, tail)) = rest.split_first() {
        let (message, tail) = tail.split_at(usize::from(len).min(tail.len()));
        rest = tail;
        let mut at = 0;
        loop {
            match segments.step(message, at) {
                Ok((step, next)) => {
                    assert!(next > at && next <= message.len(), "a segment from {at} to {next} of {}", message.len());
                    at = next;
                    match step {
                        Step::Frame(frame) => {
                            assert!(frame.len() <= MAX_FRAME_LEN, "a frame of {} bytes", frame.len());
                            framed += frame.len();
                            assert!(framed <= data.len(), "more frame bytes than arrived");
                        }
                        Step::More => {}
                        Step::Closed => return,
                    }
                }
                Err(_) => return,
            }
            if at == message.len() {
                break;
            }
        }
    }
}

/// `shm_setup`: the input as the server's setup message read by an `shm://` client; an accepted
/// message announces exactly what a server would have sent.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub fn shm_setup(data: &[u8]) {
    if let Ok(ring_len) = crate::shm::setup::decode(data) {
        let sent = crate::shm::setup::encode(ring_len);
        assert_eq!(data.len(), sent.len());
        assert_eq!(&data[..16], &sent[..16], "accepted a setup message no server sends");
        // What the client checks next, before it maps anything.
        let _ = crate::shm::region::valid_ring_len(ring_len);
    }
}

#[cfg(test)]
mod tests;
