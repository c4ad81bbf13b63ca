//! The add server: serves `Calculator` on an address until Ctrl-C or SIGTERM, then shuts down
//! gracefully (stops accepting, lets in-flight calls finish, exits 0).
//!
//! ```text
//! cargo run --example add_server                  # tcp://127.0.0.1:12345
//! cargo run --example add_server -- local://calc  # any address: tcp, local, unix, mem
//! RUST_LOG=debug cargo run --example add_server   # log every connection and its close
//! ```

#[path = "shared/calculator.rs"]
mod calculator;

use calculator::{Calc, Calculator};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // What the server logs goes to stderr, filtered by RUST_LOG (default: warnings and errors,
    // e.g. a client that broke the protocol, a handler that panicked).
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let addr = std::env::args().nth(1).unwrap_or_else(|| "tcp://127.0.0.1:12345".to_owned());
    let listener = rpc::listen(&addr).await?;
    // Installed before we announce the address, so an early Ctrl-C is graceful too.
    let shutdown = rpc::shutdown_signal();
    println!("serving Calculator on {} (Ctrl-C to stop)", listener.local_addr());
    rpc::Server::new().add_service(Calc.into_service()).serve_until(listener, shutdown).await?;
    println!("shut down cleanly");
    Ok(())
}
