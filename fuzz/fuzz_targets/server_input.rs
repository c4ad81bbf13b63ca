//! Fuzz target: the server's whole input path: arbitrary bytes (after an optional valid hello) on a real
//! server connection serving a test service; it must answer sensibly, close, and never hang.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rpc_core::fuzzing::server_input(data));
