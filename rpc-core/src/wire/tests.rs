use super::*;
use proptest::prelude::*;

fn hello() -> Hello {
    Hello {
        service: "Calculator".into(),
        methods: vec![MethodSignature { name: "add".into(), signature: "(i64, i64) -> i64".into() }],
    }
}

#[test]
fn hello_round_trips() {
    let bytes = encode_hello(&hello());
    assert_eq!(decode(&bytes).unwrap(), Frame::Hello { version: PROTOCOL_VERSION, hello: Some(hello()) });
}

#[test]
fn hello_of_another_version_is_recognised_without_reading_its_body() {
    let mut bytes = encode_hello(&hello());
    bytes[1..3].copy_from_slice(&7u16.to_le_bytes());
    bytes.truncate(3);
    bytes.extend_from_slice(b"\xff\xff future layout");
    assert_eq!(decode(&bytes).unwrap(), Frame::Hello { version: 7, hello: None });
}

#[test]
fn hello_reply_round_trips() {
    for reply in [
        HelloReply::Accepted,
        HelloReply::UnknownService { available: vec!["Echo".into()] },
        HelloReply::InterfaceMismatch { differences: vec!["method `add` differs".into()] },
        HelloReply::VersionMismatch,
    ] {
        let bytes = encode_hello_reply(&reply);
        assert_eq!(decode(&bytes).unwrap(), Frame::HelloReply { version: PROTOCOL_VERSION, reply: Some(reply) });
    }
}

#[test]
fn request_round_trips_and_args_decode() {
    let header = RequestHeader { id: 42, method: 0xdead_beef, timeout_us: Some(1500) };
    let bytes = encode_request(header, &(1i64, -2i64)).unwrap();
    let Frame::Request { header: got, args } = decode(&bytes).unwrap() else { panic!("not a request") };
    assert_eq!(got, header);
    assert_eq!(decode_value::<(i64, i64)>(args).unwrap(), (1, -2));
}

#[test]
fn request_without_timeout() {
    let header = RequestHeader { id: 1, method: 2, timeout_us: None };
    let bytes = encode_request(header, &()).unwrap();
    assert_eq!(bytes.len(), REQUEST_HEADER_LEN);
    assert_eq!(decode(&bytes).unwrap(), Frame::Request { header, args: &[] });
}

#[test]
fn response_payload_becomes_frame_without_copy() {
    let payload = ResponsePayload::encode(&Ok::<i64, String>(3)).unwrap();
    let frame = payload.into_frame(9);
    let Frame::ResponseOk { id, payload } = decode(&frame).unwrap() else { panic!("not a response") };
    assert_eq!(id, 9);
    assert_eq!(decode_value::<Result<i64, String>>(payload).unwrap(), Ok(3));
}

#[test]
fn error_response_and_cancel_round_trip() {
    let err = RemoteError::Panic("boom".into());
    assert_eq!(decode(&encode_response_err(5, &err)).unwrap(), Frame::ResponseErr { id: 5, error: err });
    assert_eq!(decode(&encode_cancel(77)).unwrap(), Frame::Cancel { id: 77 });
    assert_eq!(decode(&encode_goaway("bye")).unwrap(), Frame::Goaway { reason: "bye".into() });
}

#[test]
fn response_id_reads_only_the_header() {
    let ok = ResponsePayload::encode(&5u8).unwrap().into_frame(11);
    assert_eq!(response_id(&ok), Some(11));
    // The body is not looked at: a corrupt error body still routes to its call.
    let mut err = encode_response_err(12, &RemoteError::Overloaded);
    err.push(0xff);
    assert_eq!(response_id(&err), Some(12));
    assert_eq!(response_id(&encode_cancel(13)), None);
    assert_eq!(response_id(&[KIND_RESPONSE_OK, 1, 2]), None);
    assert_eq!(response_id(&[]), None);
}

#[test]
fn malformed_frames_are_typed_errors() {
    assert_eq!(decode(&[]), Err(DecodeError::Empty));
    assert_eq!(decode(&[0x7f]), Err(DecodeError::UnknownKind(0x7f)));
    assert_eq!(decode(&[KIND_REQUEST, 1, 2]), Err(DecodeError::Truncated("request")));
    assert_eq!(decode(&[KIND_CANCEL, 0, 0, 0, 0, 0, 0, 0, 0, 1]), Err(DecodeError::Trailing("cancel")));
    assert_eq!(decode(&[KIND_HELLO, 1, 0, 0xff]), Err(DecodeError::Body("hello")));
}

#[test]
fn decode_value_rejects_trailing_bytes() {
    let mut bytes = postcard::to_allocvec(&(1u8, 2u8)).unwrap();
    bytes.push(0);
    assert!(decode_value::<(u8, u8)>(&bytes).is_err());
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode(&bytes);
    }

    #[test]
    fn arbitrary_bytes_after_a_valid_kind_never_panic(kind in 1u8..=7, rest in proptest::collection::vec(any::<u8>(), 0..64)) {
        let mut bytes = vec![kind];
        bytes.extend(rest);
        let _ = decode(&bytes);
    }

    #[test]
    fn requests_round_trip(id: u64, method: u32, timeout in proptest::option::of(1u64..), a: i64, s in ".*") {
        let header = RequestHeader { id, method, timeout_us: timeout };
        let bytes = encode_request(header, &(a, s.clone())).unwrap();
        let Frame::Request { header: got, args } = decode(&bytes).unwrap() else { panic!("not a request") };
        prop_assert_eq!(got, header);
        prop_assert_eq!(decode_value::<(i64, String)>(args).unwrap(), (a, s));
    }

    #[test]
    fn responses_round_trip(id: u64, value: Vec<u32>) {
        let frame = ResponsePayload::encode(&value).unwrap().into_frame(id);
        let Frame::ResponseOk { id: got, payload } = decode(&frame).unwrap() else { panic!("not a response") };
        prop_assert_eq!(got, id);
        prop_assert_eq!(decode_value::<Vec<u32>>(payload).unwrap(), value);
    }
}

#[test]
fn hellos_above_their_limit_are_refused_before_decoding() {
    let hello = Hello {
        service: "S".into(),
        methods: vec![MethodSignature { name: String::new(), signature: String::new() }; MAX_HELLO_LEN / 2],
    };
    let frame = encode_hello(&hello);
    assert_eq!(decode(&frame), Err(DecodeError::TooLong { what: "hello", len: frame.len(), max: MAX_HELLO_LEN }));
    let reply = encode_hello_reply(&HelloReply::UnknownService { available: vec![String::new(); MAX_HELLO_LEN] });
    assert!(matches!(decode(&reply), Err(DecodeError::TooLong { what: "hello reply", .. })));
    // Just under the limit still decodes.
    let fits = Hello { methods: hello.methods[..MAX_HELLO_LEN / 4].to_vec(), ..hello };
    assert!(matches!(decode(&encode_hello(&fits)), Ok(Frame::Hello { hello: Some(_), .. })));
}
