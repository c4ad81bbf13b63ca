//! Fuzz target: a connect record as a fifo:// listener (and an mq:// one) reads it from its connect FIFO (queue).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rpc_transports::fuzzing::fifo_record(data));
