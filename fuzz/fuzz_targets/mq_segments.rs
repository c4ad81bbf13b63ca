//! Fuzz target: mq:// messages reassembled into frames by the receiving half.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rpc_transports::fuzzing::mq_segments(data));
