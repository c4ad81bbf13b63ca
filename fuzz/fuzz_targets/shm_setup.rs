//! Fuzz target: the setup message an shm:// client receives from the server.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rpc_transports::fuzzing::shm_setup(data));
