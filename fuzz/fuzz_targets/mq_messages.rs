//! Fuzz target: mq:// messages read by the receiving half, their bytes through the frame codec.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rpc_transports::fuzzing::mq_messages(data));
