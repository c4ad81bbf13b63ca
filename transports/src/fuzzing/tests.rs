//! The transports' fuzz targets without a fuzzer: every file of the committed seed corpus (and
//! of any corpus a fuzzing run added to `fuzz/corpus/`), then generated inputs.

use proptest::prelude::*;

use super::*;
use rpc_core::fuzzing::corpus::{self, Harness, Seed};

const TARGETS: [(&str, Harness); 3] =
    [("fifo_record", fifo_record), ("mq_messages", mq_messages), ("shm_setup", shm_setup)];

#[test]
fn the_seed_corpus_replays_cleanly() {
    corpus::replay(env!("CARGO_MANIFEST_DIR"), &TARGETS, 5);
}

/// An mq message as the harness reads it: a length byte, then the message.
fn message(bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![u8::try_from(bytes.len()).expect("a short message")];
    out.extend_from_slice(bytes);
    out
}

/// A data message carrying `bytes` of the stream.
fn data(bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![crate::mq::conn::DATA];
    out.extend_from_slice(bytes);
    out
}

/// `bytes` as a frame: its length prefix, then the bytes.
fn frame(bytes: &[u8]) -> Vec<u8> {
    let mut out = (bytes.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(bytes);
    out
}

/// The inputs in the committed seed corpus, by target and file name. `cargo test -p
/// rpc-transports write_the_transport_seed_corpus -- --ignored` writes them to `fuzz/corpus/`
/// (run it after a change of a record or message format).
fn seeds() -> Vec<Seed> {
    use crate::mq::conn::CLOSE;
    let fifo = crate::fifo::record("1f-2-abc").to_vec();
    let mq = crate::mq::record(0x1f, "1f-2-abc").to_vec();
    let mut bad_token = crate::fifo::record("1f-2-abc").to_vec();
    bad_token[10] = b'/';
    let mut padded = crate::fifo::record("1f-2-abc").to_vec();
    padded[63] = 1;
    let two = [crate::fifo::record("1-2-3"), crate::fifo::record("4-5-6")].concat();
    let setup = crate::shm::setup::encode(1 << 16, 16 << 20).to_vec();
    let mut version = setup.clone();
    version[8] = 1;
    let mut huge_slab = setup.clone();
    huge_slab[20] = 0xff;
    let mut odd_slab = setup.clone();
    odd_slab[16] = 1;
    vec![
        ("fifo_record", "fifo", fifo),
        ("fifo_record", "mq", mq.clone()),
        ("fifo_record", "mq-truncated", mq[..63].to_vec()),
        ("fifo_record", "bad-token", bad_token),
        ("fifo_record", "nonzero-padding", padded),
        ("fifo_record", "two-records", two),
        ("mq_messages", "whole-frame", message(&data(&frame(b"abc")))),
        ("mq_messages", "split-frame", {
            let f = frame(b"abcdefghij");
            [message(&data(&f[..2])), message(&data(&f[2..7])), message(&data(&f[7..]))].concat()
        }),
        ("mq_messages", "two-frames-one-message", message(&data(&[frame(b"a"), frame(b"bc")].concat()))),
        ("mq_messages", "close", [message(&data(&frame(b"a"))), message(&[CLOSE])].concat()),
        ("mq_messages", "close-inside-a-frame", [message(&data(&frame(b"abc")[..5])), message(&[CLOSE])].concat()),
        ("mq_messages", "oversized", message(&data(&u32::MAX.to_le_bytes()))),
        ("mq_messages", "empty-data", [message(&[crate::mq::conn::DATA]), message(&data(&frame(b"a")))].concat()),
        ("mq_messages", "unknown-kind-and-empty", [message(&[9, 1, 2]), message(&[])].concat()),
        ("shm_setup", "valid", setup.clone()),
        ("shm_setup", "version-1", version),
        ("shm_setup", "huge-slab", huge_slab),
        ("shm_setup", "odd-slab", odd_slab),
        ("shm_setup", "short", setup[..23].to_vec()),
        ("shm_setup", "not-a-power-of-two", {
            let mut odd = setup.clone();
            odd[12..16].copy_from_slice(&12345u32.to_le_bytes());
            odd
        }),
        ("shm_setup", "huge-ring", {
            let mut huge = setup;
            huge[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
            huge
        }),
    ]
}

#[test]
#[ignore = "writes fuzz/corpus/; run by hand after a change of a record or message format"]
fn write_the_transport_seed_corpus() {
    corpus::write(env!("CARGO_MANIFEST_DIR"), &seeds());
}

#[test]
fn the_transport_seeds_pass_and_are_committed() {
    corpus::check(env!("CARGO_MANIFEST_DIR"), &TARGETS, &seeds(), "write_the_transport_seed_corpus");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn generated_records_parse_without_panics(
        token in "[0-9a-f]{1,16}-[0-9a-f]{1,16}-[0-9a-f]{1,16}",
        flip in any::<(usize, u8)>(),
        cut in 0usize..70,
    ) {
        let mut record = crate::fifo::record(&token).to_vec();
        fifo_record(&record);
        record[flip.0 % 64] ^= flip.1;
        fifo_record(&record);
        fifo_record(&record[..cut.min(64)]);
    }

    #[test]
    fn generated_messages_reassemble_without_panics(
        frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..1100), 0..6),
        cuts in proptest::collection::vec(1usize..300, 1..40),
        junk in proptest::option::of((any::<usize>(), proptest::collection::vec(any::<u8>(), 0..8))),
    ) {
        // A stream of frames (some over the limit) cut into data messages of generated sizes,
        // perhaps with a message of junk somewhere.
        let stream: Vec<u8> = frames.iter().flat_map(|f| frame(f)).collect();
        let mut messages = Vec::new();
        let mut rest = &stream[..];
        for cut in cuts.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (piece, tail) = rest.split_at((*cut).min(254).min(rest.len()));
            messages.push(data(piece));
            rest = tail;
        }
        if let Some((at, junk)) = junk {
            let at = at % (messages.len() + 1);
            messages.insert(at, junk);
        }
        let input: Vec<u8> = messages.iter().flat_map(|m| message(m)).collect();
        mq_messages(&input);
    }

    #[test]
    fn generated_setup_messages_are_checked(
        bytes in proptest::collection::vec(any::<u8>(), 0..30),
        ring in any::<u32>(),
        slab in any::<u64>(),
    ) {
        shm_setup(&bytes);
        let mut setup = crate::shm::setup::encode(1 << 16, 0).to_vec();
        setup[12..16].copy_from_slice(&ring.to_le_bytes());
        shm_setup(&setup);
        setup[16..24].copy_from_slice(&slab.to_le_bytes());
        shm_setup(&setup);
    }
}
