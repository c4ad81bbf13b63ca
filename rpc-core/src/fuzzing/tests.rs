//! The fuzz targets without a fuzzer: every file of the committed seed corpus (and of any corpus
//! a fuzzing run added to `fuzz/corpus/`), then a few thousand generated inputs, through the same
//! harness functions the cargo-fuzz targets call. Runs with a plain `cargo test` on stable.

use proptest::prelude::*;

use super::*;
use crate::fuzzing::corpus::{self, Harness, Seed};
use crate::wire::RequestHeader;

const TARGETS: [(&str, Harness); 3] =
    [("frame_decoder", frame_decoder), ("hello_exchange", hello_exchange), ("server_input", server_input)];

#[test]
fn the_seed_corpus_replays_cleanly() {
    corpus::replay(env!("CARGO_MANIFEST_DIR"), &TARGETS, 5);
}

/// Frames a client could send, valid and not: the building blocks of generated input.
fn client_frame() -> impl Strategy<Value = Vec<u8>> {
    let method = prop_oneof![Just(method_id("add")), Just(method_id("echo")), Just(method_id("sleep")), any::<u32>(),];
    prop_oneof![
        4 => (any::<u64>(), method, proptest::option::of(1u64..50_000), proptest::collection::vec(any::<u8>(), 0..24))
            .prop_map(|(id, method, timeout_us, args)| {
                let mut frame = wire::encode_request(RequestHeader { id: id % 8, method, timeout_us }, &()).unwrap().to_vec();
                frame.extend_from_slice(&args);
                frame
            }),
        3 => (any::<u64>(), any::<i64>(), any::<i64>()).prop_map(|(id, a, b)| {
            wire::encode_request(RequestHeader { id: id % 8, method: method_id("add"), timeout_us: None }, &(a, b))
                .unwrap().to_vec()
        }),
        2 => (any::<u64>(), 0u64..30).prop_map(|(id, ms)| {
            wire::encode_request(RequestHeader { id: id % 8, method: method_id("sleep"), timeout_us: None }, &(ms,))
                .unwrap().to_vec()
        }),
        2 => (any::<u64>(), any::<u128>(), any::<u64>(), any::<i64>()).prop_map(|(id, trace_id, span_id, a)| {
            let trace = wire::TraceContext { trace_id, span_id };
            let header = RequestHeader { id: id % 8, method: method_id("add"), timeout_us: None };
            wire::encode_traced_request(header, Some(trace), &(a, a)).unwrap().to_vec()
        }),
        2 => (0u64..8).prop_map(wire::encode_cancel),
        1 => Just(wire::encode_hello(&valid_hello())),
        1 => (any::<u16>(), ".{0,12}").prop_map(|(code, reason)| wire::encode_goaway(wire::CloseCode::from_u16(code), &reason)),
        2 => (any::<u64>(), 0u32..50).prop_map(|(id, n)| {
            wire::encode_request(RequestHeader { id: id % 8, method: method_id("count"), timeout_us: None }, &(n,))
                .unwrap().to_vec()
        }),
        2 => any::<u64>().prop_map(|id| {
            wire::encode_request(RequestHeader { id: id % 8, method: method_id("sum"), timeout_us: None }, &())
                .unwrap().to_vec()
        }),
        2 => (0u64..8, proptest::collection::vec(any::<u32>(), 1..20)).prop_map(|(id, items)| {
            let mut frame = wire::ItemsWriter::new(id);
            for item in items {
                frame.push(&item).unwrap();
            }
            frame.finish().to_vec()
        }),
        1 => (0u64..8).prop_map(wire::encode_stream_end),
        1 => (0u64..8, any::<u32>()).prop_map(|(id, bytes)| wire::encode_credit(id, bytes)),
        1 => (0u64..8).prop_map(wire::encode_stream_stop),
        1 => any::<u64>().prop_map(ok_response),
        1 => (any::<u64>(), ".{0,8}").prop_map(|(id, text)| wire::encode_response_err(id, &RemoteError::Decode(text))),
        1 => proptest::collection::vec(any::<u8>(), 0..16),
    ]
}

/// A well-formed "ok" response frame (what only a server should send).
fn ok_response(id: u64) -> Vec<u8> {
    wire::ResponsePayload::encode(&7i64).unwrap().into_frame(id).to_vec()
}

/// A client's byte stream: mostly length-prefixed frames, sometimes raw bytes (a broken prefix,
/// a truncated frame, a huge length).
fn client_stream() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        8 => client_frame().prop_map(|frame| length_prefixed(&frame)),
        1 => proptest::collection::vec(any::<u8>(), 0..8),
        1 => any::<u32>().prop_map(|len| len.to_le_bytes().to_vec()),
    ];
    proptest::collection::vec(piece, 0..12).prop_map(|pieces| pieces.concat())
}

fn hello_frame() -> impl Strategy<Value = Vec<u8>> {
    let signature = prop_oneof![
        Just(("add".to_owned(), "(i64, i64) -> i64".to_owned())),
        Just(("echo".to_owned(), "(Vec<u8>) -> Vec<u8>".to_owned())),
        Just(("add".to_owned(), "(i32, i32) -> i32".to_owned())),
        Just(("describe".to_owned(), "() -> ServerDescription".to_owned())),
        ("[a-z]{0,6}", ".{0,6}"),
    ];
    let service =
        prop_oneof![Just("Fuzz".to_owned()), Just(crate::reflection::REFLECTION_SERVICE.to_owned()), ".{0,6}"];
    let hello = (service, proptest::collection::vec(signature, 0..40)).prop_map(|(service, methods)| Hello {
        service,
        methods: methods.into_iter().map(|(name, signature)| MethodSignature { name, signature }).collect(),
        stream_window: wire::DEFAULT_STREAM_WINDOW,
    });
    (hello, any::<u16>(), 0usize..4).prop_map(|(hello, version, tweak)| {
        let mut frame = wire::encode_hello(&hello);
        match tweak {
            // Another protocol version.
            1 => frame[1..3].copy_from_slice(&version.to_le_bytes()),
            // A cut-off body.
            2 => frame.truncate(frame.len() / 2),
            // A hello reply where a hello belongs, and vice versa for the client side.
            3 => frame[0] = 0x02,
            _ => {}
        }
        frame
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn generated_frames_decode_without_panics(bytes in prop_oneof![
        client_frame(),
        client_stream(),
        proptest::collection::vec(any::<u8>(), 0..300),
    ]) {
        frame_decoder(&bytes);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn generated_hellos_get_the_right_answer(frame in prop_oneof![
        3 => hello_frame(),
        1 => client_frame(),
        1 => proptest::collection::vec(any::<u8>(), 0..64),
    ]) {
        hello_exchange(&frame);
    }

    #[test]
    fn generated_client_streams_leave_the_server_well_behaved(
        flags in any::<u8>(),
        stream in prop_oneof![4 => client_stream(), 1 => proptest::collection::vec(any::<u8>(), 0..256)],
    ) {
        let mut input = vec![flags];
        input.extend_from_slice(&stream);
        server_input(&input);
    }
}

/// The inputs in the committed seed corpus, by target and file name. `cargo test -p rpc-core
/// write_the_seed_corpus -- --ignored` writes them to `fuzz/corpus/` (run it after a wire change).
fn seeds() -> Vec<Seed> {
    let hello = wire::encode_hello(&valid_hello());
    let request =
        |id, method, args: &dyn Fn(RequestHeader) -> Vec<u8>| args(RequestHeader { id, method, timeout_us: None });
    let add = request(1, method_id("add"), &|h| wire::encode_request(h, &(1i64, 2i64)).unwrap().to_vec());
    let echo = request(2, method_id("echo"), &|h| wire::encode_request(h, &(vec![1u8, 2, 3],)).unwrap().to_vec());
    let sleep =
        wire::encode_request(RequestHeader { id: 3, method: method_id("sleep"), timeout_us: Some(5_000) }, &(10u64,))
            .unwrap()
            .to_vec();
    let unknown = request(4, 0xdead_beef, &|h| wire::encode_request(h, &()).unwrap().to_vec());
    let bad_args = request(5, method_id("add"), &|h| wire::encode_request(h, &(1u8,)).unwrap().to_vec());
    let traced = wire::encode_traced_request(
        RequestHeader { id: 8, method: method_id("add"), timeout_us: None },
        Some(wire::TraceContext { trace_id: 0x5eed, span_id: 0x5a11 }),
        &(3i64, 4i64),
    )
    .unwrap()
    .to_vec();
    let cancel = wire::encode_cancel(3);
    let goaway = wire::encode_goaway(wire::CloseCode::Normal, "bye");
    let count = request(6, method_id("count"), &|h| wire::encode_request(h, &(5u32,)).unwrap().to_vec());
    let sum = request(7, method_id("sum"), &|h| wire::encode_request(h, &()).unwrap().to_vec());
    let items = {
        let mut frame = wire::ItemsWriter::new(7);
        for item in [1u32, 2, 3] {
            frame.push(&item).unwrap();
        }
        frame.finish().to_vec()
    };
    let end = wire::encode_stream_end(7);
    let credit = wire::encode_credit(6, 4096);
    let ok = ok_response(1);
    let err = wire::encode_response_err(1, &RemoteError::UnknownMethod { id: 9 });
    let accepted = wire::encode_hello_reply(&HelloReply::Accepted { stream_window: wire::DEFAULT_STREAM_WINDOW });
    let mismatch = wire::encode_hello_reply(&HelloReply::InterfaceMismatch { differences: vec!["x".into()] });
    let mut old_version = hello.clone();
    old_version[1..3].copy_from_slice(&0u16.to_le_bytes());
    let other_service = wire::encode_hello(&Hello {
        service: "Other".into(),
        methods: vec![],
        stream_window: wire::DEFAULT_STREAM_WINDOW,
    });
    let mismatched = wire::encode_hello(&Hello {
        service: "Fuzz".into(),
        methods: vec![MethodSignature { name: "add".into(), signature: "(i32, i32) -> i32".into() }],
        stream_window: wire::DEFAULT_STREAM_WINDOW,
    });
    // The reflection service every server answers by default.
    let reflection = &crate::reflection::DESCRIPTOR;
    let reflection_hello = wire::encode_hello(&Hello {
        service: reflection.name.into(),
        methods: reflection
            .methods
            .iter()
            .map(|m| MethodSignature { name: m.name.into(), signature: m.signature.into() })
            .collect(),
        stream_window: wire::DEFAULT_STREAM_WINDOW,
    });
    let describe = request(1, method_id("describe"), &|h| wire::encode_request(h, &()).unwrap().to_vec());
    let ping = request(2, method_id("ping"), &|h| wire::encode_request(h, &()).unwrap().to_vec());
    let framed = |frames: &[&[u8]]| frames.iter().flat_map(|f| length_prefixed(f)).collect::<Vec<u8>>();
    let with_flags = |flags: u8, bytes: Vec<u8>| [vec![flags], bytes].concat();

    let mut seeds = Vec::new();
    for (name, frame) in [
        ("hello", &hello),
        ("request-add", &add),
        ("request-echo", &echo),
        ("request-sleep-deadline", &sleep),
        ("request-unknown-method", &unknown),
        ("request-bad-args", &bad_args),
        ("traced-request-add", &traced),
        ("cancel", &cancel),
        ("goaway", &goaway),
        ("response-ok", &ok),
        ("response-err", &err),
        ("hello-reply-accepted", &accepted),
        ("hello-reply-mismatch", &mismatch),
        ("hello-version-0", &old_version),
        ("stream-items", &items),
        ("stream-end", &end),
        ("credit", &credit),
    ] {
        seeds.push(("frame_decoder", name, frame.clone()));
    }
    seeds.push(("frame_decoder", "stream-two-frames", framed(&[&add, &cancel])));
    seeds.push(("frame_decoder", "stream-huge-prefix", u32::MAX.to_le_bytes().to_vec()));
    seeds.push(("frame_decoder", "truncated-request", add[..10].to_vec()));

    for (name, frame) in [
        ("hello", &hello),
        ("hello-version-0", &old_version),
        ("hello-other-service", &other_service),
        ("hello-mismatched-method", &mismatched),
        ("hello-reply-accepted", &accepted),
        ("hello-reply-mismatch", &mismatch),
        ("request-before-hello", &add),
        ("goaway", &goaway),
        ("hello-reflection", &reflection_hello),
    ] {
        seeds.push(("hello_exchange", name, frame.clone()));
    }

    // Flag bit 0: the harness sends a valid hello first; bit 1: the bytes arrive in pieces.
    seeds.push(("server_input", "calls", with_flags(1, framed(&[&add, &echo, &unknown, &bad_args]))));
    seeds.push(("server_input", "traced-call", with_flags(1, framed(&[&traced, &add]))));
    seeds.push(("server_input", "sleep-then-cancel", with_flags(1, framed(&[&sleep, &cancel, &add]))));
    seeds.push(("server_input", "calls-in-3-byte-pieces", with_flags(0b1011, framed(&[&add, &sleep, &echo]))));
    seeds.push(("server_input", "own-hello-then-call", with_flags(0, framed(&[&hello, &add]))));
    seeds.push(("server_input", "second-hello", with_flags(1, framed(&[&hello]))));
    seeds.push(("server_input", "response-to-server", with_flags(1, framed(&[&ok]))));
    seeds.push(("server_input", "goaway", with_flags(1, framed(&[&add, &goaway, &add]))));
    seeds.push(("server_input", "huge-prefix", with_flags(1, u32::MAX.to_le_bytes().to_vec())));
    seeds.push(("server_input", "truncated-frame", with_flags(1, framed(&[&add])[..12].to_vec())));
    seeds.push(("server_input", "no-hello", with_flags(0, framed(&[&add]))));
    seeds.push(("server_input", "reused-call-id", with_flags(1, framed(&[&sleep, &sleep, &add]))));
    seeds.push(("server_input", "server-stream", with_flags(1, framed(&[&count, &credit, &add]))));
    seeds.push(("server_input", "client-stream", with_flags(1, framed(&[&sum, &items, &items, &end, &add]))));
    seeds.push(("server_input", "items-after-end", with_flags(1, framed(&[&sum, &items, &end, &items]))));
    seeds.push(("server_input", "items-for-no-stream", with_flags(1, framed(&[&items, &end, &add]))));
    seeds.push((
        "server_input",
        "reflection-calls",
        with_flags(0, framed(&[&reflection_hello, &describe, &ping, &bad_args])),
    ));
    seeds
}

#[test]
#[ignore = "writes fuzz/corpus/; run by hand after a wire change"]
fn write_the_seed_corpus() {
    corpus::write(env!("CARGO_MANIFEST_DIR"), &seeds());
}

#[test]
fn the_seeds_pass_and_are_committed() {
    corpus::check(env!("CARGO_MANIFEST_DIR"), &TARGETS, &seeds(), "write_the_seed_corpus");
}
