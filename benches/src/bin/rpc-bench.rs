//! The `rpc-bench` command; see the library's documentation for what it measures.

#[cfg(unix)]
fn main() {
    if let Err(e) = rpc_bench::main() {
        eprintln!("rpc-bench: {e}");
        std::process::exit(1);
    }
}

#[cfg(not(unix))]
fn main() {
    eprintln!("rpc-bench: the harness needs Unix sockets; nothing to run on this platform");
}
