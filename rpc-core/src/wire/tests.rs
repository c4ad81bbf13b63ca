use super::*;
use proptest::prelude::*;

fn hello() -> Hello {
    Hello {
        service: "Calculator".into(),
        methods: vec![MethodSignature { name: "add".into(), signature: "(i64, i64) -> i64".into() }],
        stream_window: DEFAULT_STREAM_WINDOW,
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
        HelloReply::Accepted { stream_window: 65536 },
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
    let bytes = encode_request(header, &(1i64, -2i64)).unwrap().to_vec();
    let Frame::Request { header: got, args, trace: None } = decode(&bytes).unwrap() else { panic!("not a request") };
    assert_eq!(got, header);
    assert_eq!(decode_value::<(i64, i64)>(args).unwrap(), (1, -2));
}

#[test]
fn traced_requests_carry_their_context_and_plain_ones_do_not_grow() {
    let header = RequestHeader { id: 42, method: 0xdead_beef, timeout_us: Some(1500) };
    let trace = TraceContext { trace_id: 0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10, span_id: 0x1122_3344_5566_7788 };
    let traced = encode_traced_request(header, Some(trace), &(1i64, -2i64)).unwrap().to_vec();
    let plain = encode_request(header, &(1i64, -2i64)).unwrap().to_vec();
    assert_eq!(traced.len(), plain.len() + TRACE_CONTEXT_LEN);
    assert_eq!(encode_traced_request(header, None, &(1i64, -2i64)).unwrap().to_vec(), plain);
    // The layout the module docs give: kind 0x0c, the plain header, trace id, span id, args.
    assert_eq!(traced[0], 0x0c);
    assert_eq!(&traced[1..REQUEST_HEADER_LEN], &plain[1..REQUEST_HEADER_LEN]);
    assert_eq!(&traced[REQUEST_HEADER_LEN..REQUEST_HEADER_LEN + 16], &trace.trace_id.to_le_bytes());
    assert_eq!(&traced[REQUEST_HEADER_LEN + 16..REQUEST_HEADER_LEN + 24], &trace.span_id.to_le_bytes());
    let Frame::Request { header: got, args, trace: got_trace } = decode(&traced).unwrap() else {
        panic!("not a request")
    };
    assert_eq!((got, got_trace), (header, Some(trace)));
    assert_eq!(decode_value::<(i64, i64)>(args).unwrap(), (1, -2));
}

#[test]
fn a_traced_request_cut_short_or_with_zero_ids_is_refused() {
    let header = RequestHeader { id: 1, method: 2, timeout_us: None };
    let trace = TraceContext { trace_id: 5, span_id: 6 };
    let traced = encode_traced_request(header, Some(trace), &()).unwrap().to_vec();
    assert_eq!(traced.len(), REQUEST_HEADER_LEN + TRACE_CONTEXT_LEN);
    for len in 1..traced.len() {
        assert_eq!(decode(&traced[..len]), Err(DecodeError::Truncated("traced request")), "cut at {len}");
    }
    for zero in [TraceContext { trace_id: 0, span_id: 6 }, TraceContext { trace_id: 5, span_id: 0 }] {
        let bytes = encode_traced_request(header, Some(zero), &()).unwrap().to_vec();
        assert_eq!(decode(&bytes), Err(DecodeError::Body("traced request")));
    }
}

#[test]
fn request_without_timeout() {
    let header = RequestHeader { id: 1, method: 2, timeout_us: None };
    let bytes = encode_request(header, &()).unwrap().to_vec();
    assert_eq!(bytes.len(), REQUEST_HEADER_LEN);
    assert_eq!(decode(&bytes).unwrap(), Frame::Request { header, args: &[], trace: None });
}

#[test]
fn response_payload_becomes_frame_without_copy() {
    let payload = ResponsePayload::encode(&Ok::<i64, String>(3)).unwrap();
    let frame = payload.into_frame(9).to_vec();
    let Frame::ResponseOk { id, payload } = decode(&frame).unwrap() else { panic!("not a response") };
    assert_eq!(id, 9);
    assert_eq!(decode_value::<Result<i64, String>>(payload).unwrap(), Ok(3));
}

#[test]
fn a_large_byte_payload_is_sent_from_its_own_buffer_in_requests_and_responses() {
    let payload = crate::bytes::Bytes::from(vec![9u8; 1 << 20]);
    let header = RequestHeader { id: 4, method: 7, timeout_us: None };
    let request = encode_request(header, &(payload.clone(), 5u8)).unwrap();
    assert_eq!(request.part_count(), 3, "header and length | payload | the u8 after it");
    assert!(request.parts().any(|part| part.as_ptr() == payload.as_ptr()));
    let whole = request.to_vec();
    let Frame::Request { args, .. } = decode(&whole).unwrap() else { panic!("not a request") };
    let (back, five): (crate::bytes::Bytes, u8) = decode_value(args).unwrap();
    assert_eq!((back, five), (payload.clone(), 5));

    let response = ResponsePayload::encode(&payload).unwrap().into_frame(8);
    assert_eq!((response.part_count(), response.len()), (2, RESPONSE_HEADER_LEN + 3 + (1 << 20)));
    let whole = response.into_bytes();
    assert_eq!(route(&whole), Some((8, Route::Response)), "the header was written into the first part");
    let Frame::ResponseOk { payload: body, .. } = decode(&whole).unwrap() else { panic!("not a response") };
    assert_eq!(decode_value::<crate::bytes::Bytes>(body).unwrap(), payload);
}

#[test]
fn error_response_and_cancel_round_trip() {
    let err = RemoteError::Panic("boom".into());
    assert_eq!(decode(&encode_response_err(5, &err)).unwrap(), Frame::ResponseErr { id: 5, error: err });
    assert_eq!(decode(&encode_cancel(77)).unwrap(), Frame::Cancel { id: 77 });
    assert_eq!(
        decode(&encode_goaway(CloseCode::IdleTimeout, "bye")).unwrap(),
        Frame::Goaway { code: CloseCode::IdleTimeout, reason: "bye".into() }
    );
}

#[test]
fn responses_route_by_the_header_only() {
    let ok = ResponsePayload::encode(&5u8).unwrap().into_frame(11).to_vec();
    assert_eq!(route(&ok), Some((11, Route::Response)));
    // The body is not looked at: a corrupt error body still routes to its call.
    let mut err = encode_response_err(12, &RemoteError::Overloaded);
    err.push(0xff);
    assert_eq!(route(&err), Some((12, Route::Response)));
    // Frames that belong to no call, or that a client never routes.
    assert_eq!(route(&encode_cancel(13)), None);
    assert_eq!(route(&encode_goaway(CloseCode::Normal, "bye")), None);
    assert_eq!(route(&[KIND_RESPONSE_OK, 1, 2]), None);
    assert_eq!(route(&[]), None);
}

#[test]
fn malformed_frames_are_typed_errors() {
    assert_eq!(decode(&[]), Err(DecodeError::Empty));
    assert_eq!(decode(&[0x7f]), Err(DecodeError::UnknownKind(0x7f)));
    assert_eq!(decode(&[KIND_REQUEST, 1, 2]), Err(DecodeError::Truncated("request")));
    assert_eq!(decode(&[KIND_CANCEL, 0, 0, 0, 0, 0, 0, 0, 0, 1]), Err(DecodeError::Trailing("cancel")));
    assert_eq!(decode(&[KIND_HELLO, 2, 0, 0xff]), Err(DecodeError::Body("hello")));
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
    fn arbitrary_bytes_after_a_valid_kind_never_panic(kind in 1u8..=0x0c, rest in proptest::collection::vec(any::<u8>(), 0..64)) {
        let mut bytes = vec![kind];
        bytes.extend(rest);
        let _ = decode(&bytes);
    }

    #[test]
    fn requests_round_trip(id: u64, method: u32, timeout in proptest::option::of(1u64..), a: i64, s in ".*") {
        let header = RequestHeader { id, method, timeout_us: timeout };
        let bytes = encode_request(header, &(a, s.clone())).unwrap().to_vec();
        let Frame::Request { header: got, args, trace: None } = decode(&bytes).unwrap() else { panic!("not a request") };
        prop_assert_eq!(got, header);
        prop_assert_eq!(decode_value::<(i64, String)>(args).unwrap(), (a, s));
    }

    #[test]
    fn traced_requests_round_trip(id: u64, method: u32, trace_id in 1u128.., span_id in 1u64.., a: i64) {
        let header = RequestHeader { id, method, timeout_us: None };
        let trace = TraceContext { trace_id, span_id };
        let bytes = encode_traced_request(header, Some(trace), &(a,)).unwrap().to_vec();
        let Frame::Request { header: got, args, trace: got_trace } = decode(&bytes).unwrap() else { panic!("not a request") };
        prop_assert_eq!((got, got_trace), (header, Some(trace)));
        prop_assert_eq!(decode_value::<(i64,)>(args).unwrap(), (a,));
    }

    #[test]
    fn responses_round_trip(id: u64, value: Vec<u32>) {
        let frame = ResponsePayload::encode(&value).unwrap().into_frame(id).to_vec();
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
        stream_window: DEFAULT_STREAM_WINDOW,
    };
    let frame = encode_hello(&hello);
    assert_eq!(decode(&frame), Err(DecodeError::TooLong { what: "hello", len: frame.len(), max: MAX_HELLO_LEN }));
    let reply = encode_hello_reply(&HelloReply::UnknownService { available: vec![String::new(); MAX_HELLO_LEN] });
    assert!(matches!(decode(&reply), Err(DecodeError::TooLong { what: "hello reply", .. })));
    // Just under the limit still decodes.
    let fits = Hello { methods: hello.methods[..MAX_HELLO_LEN / 4].to_vec(), ..hello };
    assert!(matches!(decode(&encode_hello(&fits)), Ok(Frame::Hello { hello: Some(_), .. })));
}

#[test]
fn close_codes_round_trip_and_unknown_ones_survive() {
    for code in 0..=20u16 {
        assert_eq!(CloseCode::from_u16(code).to_u16(), code);
    }
    assert_eq!(CloseCode::from_u16(999), CloseCode::Other(999));
    let frame = encode_goaway(CloseCode::Other(999), "later");
    assert_eq!(decode(&frame).unwrap(), Frame::Goaway { code: CloseCode::Other(999), reason: "later".into() });
    assert_eq!(decode(&[KIND_GOAWAY, 1]), Err(DecodeError::Truncated("goaway")));
}

#[test]
fn stream_items_round_trip_item_by_item() {
    let mut writer = ItemsWriter::new(5);
    let items = ["a".to_owned(), String::new(), "ccc".to_owned()];
    for item in &items {
        writer.push(item).unwrap();
    }
    assert_eq!(writer.count(), 3);
    let frame = writer.finish().to_vec();
    let Frame::StreamItems { id, items: body } = decode(&frame).unwrap() else { panic!("not stream items") };
    assert_eq!(id, 5);
    let decoded: Vec<String> = super::items(body).map(|item| decode_value(item).unwrap()).collect();
    assert_eq!(decoded, items);
    let via_route: Vec<String> =
        super::items(&frame[STREAM_ITEMS_HEADER_LEN..]).map(|item| decode_value(item).unwrap()).collect();
    assert_eq!(via_route, items);
    assert_eq!(route(&frame), Some((5, Route::StreamItems)));
    let mut pos = STREAM_ITEMS_HEADER_LEN;
    let mut n = 0;
    while let Some((_, next)) = item_at(&frame, pos) {
        pos = next;
        n += 1;
    }
    assert_eq!((n, pos), (3, frame.len()));
}

#[test]
fn malformed_stream_items_are_refused() {
    let mut frame = ItemsWriter::new(1);
    frame.push(&7u32).unwrap();
    let frame = frame.finish().to_vec();
    // No item at all.
    assert_eq!(decode(&frame[..STREAM_ITEMS_HEADER_LEN]), Err(DecodeError::Truncated("stream items")));
    // An item cut short, or a length that runs past the end.
    assert_eq!(decode(&frame[..frame.len() - 1]), Err(DecodeError::Truncated("stream items")));
    let mut long = frame.clone();
    long[STREAM_ITEMS_HEADER_LEN..STREAM_ITEMS_HEADER_LEN + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(decode(&long), Err(DecodeError::Truncated("stream items")));
    assert_eq!(route(&long), None);
    // A length prefix cut short.
    let mut cut = frame.clone();
    cut.extend_from_slice(&[1, 0]);
    assert_eq!(decode(&cut), Err(DecodeError::Truncated("stream items")));
}

#[test]
fn stream_control_frames_round_trip() {
    assert_eq!(decode(&encode_stream_end(3)).unwrap(), Frame::StreamEnd { id: 3 });
    assert_eq!(decode(&encode_stream_stop(4)).unwrap(), Frame::StreamStop { id: 4 });
    assert_eq!(decode(&encode_credit(5, 77)).unwrap(), Frame::Credit { id: 5, bytes: 77 });
    assert_eq!(route(&encode_stream_end(3)), Some((3, Route::StreamEnd)));
    assert_eq!(route(&encode_stream_stop(4)), Some((4, Route::StreamStop)));
    assert_eq!(route(&encode_credit(5, 77)), Some((5, Route::Credit(77))));
    let mut long = encode_credit(5, 77);
    long.push(0);
    assert_eq!(decode(&long), Err(DecodeError::Trailing("credit")));
    assert_eq!(route(&long), None);
    assert_eq!(decode(&encode_credit(5, 77)[..10]), Err(DecodeError::Truncated("credit")));
    let mut end = encode_stream_end(3);
    end.push(1);
    assert_eq!(decode(&end), Err(DecodeError::Trailing("stream end")));
}

#[test]
fn an_item_too_long_for_its_frame_is_split_off() {
    let mut writer = ItemsWriter::new(9);
    writer.push(&1u8).unwrap();
    assert!(writer.split_last(9).is_none(), "a lone item stays");
    writer.push(&vec![7u8; 100]).unwrap();
    let rest = writer.split_last(9).unwrap();
    assert_eq!(writer.count(), 1);
    assert!(writer.split_last(9).is_none());
    let first: Vec<u8> = super::items(&writer.finish().to_vec()[STREAM_ITEMS_HEADER_LEN..])
        .map(|item| decode_value::<u8>(item).unwrap())
        .collect();
    assert_eq!(first, [1]);
    let second: Vec<Vec<u8>> = super::items(&rest.finish().to_vec()[STREAM_ITEMS_HEADER_LEN..])
        .map(|item| decode_value::<Vec<u8>>(item).unwrap())
        .collect();
    assert_eq!(second, [vec![7u8; 100]]);
}

/// The items of a finished stream items frame, decoded as `T`.
fn items_of<T: serde::de::DeserializeOwned>(frame: Encoded) -> Vec<T> {
    let whole = frame.to_vec();
    let Frame::StreamItems { items: body, .. } = decode(&whole).unwrap() else { panic!("not stream items") };
    super::items(body).map(|item| decode_value(item).unwrap()).collect()
}

#[test]
fn a_large_chunk_in_a_stream_is_a_part_of_its_frame_of_its_own() {
    let chunk = crate::bytes::Bytes::from(vec![6u8; SPLICE_MIN]);
    let small = crate::bytes::Bytes::from(vec![1u8; 10]);
    let mut writer = ItemsWriter::new(3);
    for item in [&small, &chunk, &small, &chunk] {
        writer.push(item).unwrap();
    }
    let len = writer.len();
    let frame = writer.finish();
    assert_eq!(frame.len(), len);
    assert_eq!(frame.parts().filter(|part| part.as_ptr() == chunk.as_ptr()).count(), 2, "both chunks, uncopied");
    assert_eq!(items_of::<crate::bytes::Bytes>(frame), [small.clone(), chunk.clone(), small, chunk]);
}

#[test]
fn an_item_split_off_moves_its_parts_with_it() {
    let chunk = crate::bytes::Bytes::from(vec![6u8; SPLICE_MIN]);
    let pair = (7u8, chunk.clone(), 8u8);
    // The item split off holds a spliced chunk; an earlier item holds one too.
    let mut writer = ItemsWriter::new(9);
    writer.push(&pair).unwrap();
    writer.push(&pair).unwrap();
    let before = writer.len();
    let rest = writer.split_last(9).unwrap();
    assert_eq!(writer.len() + rest.len() - STREAM_ITEMS_HEADER_LEN, before);
    assert_eq!(items_of::<(u8, crate::bytes::Bytes, u8)>(writer.finish()), std::slice::from_ref(&pair));
    // The frame split off takes further items.
    let mut rest = rest;
    rest.push(&pair).unwrap();
    let rest = rest.finish();
    assert_eq!(rest.parts().filter(|part| part.as_ptr() == chunk.as_ptr()).count(), 2);
    assert_eq!(items_of::<(u8, crate::bytes::Bytes, u8)>(rest), [pair.clone(), pair]);
}

proptest! {
    #[test]
    fn route_never_panics_and_agrees_with_decode(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let routed = route(&bytes);
        if let Some((id, Route::StreamItems)) = routed {
            let agrees = matches!(decode(&bytes), Ok(Frame::StreamItems { id: got, .. }) if got == id);
            prop_assert!(agrees);
        }
    }
}
