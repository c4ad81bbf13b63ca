//! The transports' fuzz targets without a fuzzer: every file of the committed seed corpus (and
//! of any corpus a fuzzing run added to `fuzz/corpus/`), then generated inputs.

use proptest::prelude::*;

use super::*;
use rpc_core::fuzzing::corpus::{self, Harness, Seed};

const TARGETS: [(&str, Harness); 3] =
    [("fifo_record", fifo_record), ("mq_segments", mq_segments), ("shm_setup", shm_setup)];

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

fn first(total: u32, bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![crate::mq::conn::FIRST];
    out.extend_from_slice(&total.to_le_bytes());
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
    out
}

fn more(bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![crate::mq::conn::MORE];
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
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
    let setup = crate::shm::setup::encode(1 << 16).to_vec();
    let mut version = setup.clone();
    version[8] = 2;
    let mut reserved = setup.clone();
    reserved[20] = 0xff;
    vec![
        ("fifo_record", "fifo", fifo),
        ("fifo_record", "mq", mq.clone()),
        ("fifo_record", "mq-truncated", mq[..63].to_vec()),
        ("fifo_record", "bad-token", bad_token),
        ("fifo_record", "nonzero-padding", padded),
        ("fifo_record", "two-records", two),
        ("mq_segments", "whole-frame", message(&first(3, b"abc"))),
        ("mq_segments", "split-frame", [message(&first(10, b"abcd")), message(&more(b"efghij"))].concat()),
        ("mq_segments", "two-frames-one-message", message(&[first(1, b"a"), first(2, b"bc")].concat())),
        ("mq_segments", "close", [message(&first(1, b"a")), message(&[CLOSE])].concat()),
        ("mq_segments", "close-inside-a-frame", [message(&first(9, b"a")), message(&[CLOSE])].concat()),
        ("mq_segments", "more-without-first", message(&more(b"x"))),
        ("mq_segments", "oversized", message(&first(u32::MAX, b"x"))),
        ("mq_segments", "continuation-too-long", [message(&first(2, b"a")), message(&more(b"bc"))].concat()),
        ("mq_segments", "unknown-kind-and-empty", [message(&[9, 1, 2]), message(&[])].concat()),
        ("shm_setup", "valid", setup.clone()),
        ("shm_setup", "version-2", version),
        ("shm_setup", "reserved-bytes", reserved),
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
        messages in proptest::collection::vec(
            prop_oneof![
                (0u32..2000, proptest::collection::vec(any::<u8>(), 0..40)).prop_map(|(t, b)| first(t, &b)),
                proptest::collection::vec(any::<u8>(), 0..40).prop_map(|b| more(&b)),
                proptest::collection::vec(any::<u8>(), 0..60),
            ],
            0..8,
        ),
    ) {
        let data: Vec<u8> = messages.iter().flat_map(|m| message(&m[..m.len().min(255)])).collect();
        mq_segments(&data);
    }

    #[test]
    fn generated_setup_messages_are_checked(bytes in proptest::collection::vec(any::<u8>(), 0..30), ring in any::<u32>()) {
        shm_setup(&bytes);
        let mut setup = crate::shm::setup::encode(1 << 16).to_vec();
        setup[12..16].copy_from_slice(&ring.to_le_bytes());
        shm_setup(&setup);
    }
}
