//! Fuzz target: the wire decoder on one frame, and the length-prefix codec on a byte stream arriving in pieces.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rpc_core::fuzzing::frame_decoder(data));
