//! Fuzz target: the hello exchange: the input as a client's first frame to a real server connection, and as
//! the server's reply to a client's hello.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rpc_core::fuzzing::hello_exchange(data));
