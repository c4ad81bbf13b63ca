//! `rpc-test-server ADDR`: serves the test services on ADDR, prints `listening <address>` (with
//! any OS-chosen port filled in) on stdout once ready, and shuts down gracefully on SIGTERM or
//! Ctrl-C, exiting 0. The integration tests start it as a real process.

use std::io::Write;

#[tokio::main]
async fn main() {
    let addr = std::env::args().nth(1).unwrap_or_else(|| {
        eprintln!("usage: rpc-test-server ADDR");
        std::process::exit(2);
    });
    let listener = match rpc::listen(&addr).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("rpc-test-server: {e}");
            std::process::exit(1);
        }
    };
    println!("listening {}", listener.local_addr());
    std::io::stdout().flush().expect("stdout");
    let result = rpc_tests::test_server().serve_until(listener, rpc::shutdown_signal()).await;
    if let Err(e) = result {
        eprintln!("rpc-test-server: {e}");
        std::process::exit(1);
    }
}
