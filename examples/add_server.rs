//! The add server: serves `Calculator` on an address until Ctrl-C or SIGTERM, then shuts down
//! gracefully (stops accepting, lets in-flight calls finish, exits 0).
//!
//! ```text
//! cargo run --example add_server                  # tcp://127.0.0.1:12345
//! cargo run --example add_server -- local://calc  # any address: tcp, local, unix, mem
//! ```

#[path = "shared/calculator.rs"]
mod calculator;

use calculator::{Calc, Calculator};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "tcp://127.0.0.1:12345".to_owned());
    let listener = rpc::listen(&addr).await?;
    // Installed before we announce the address, so an early Ctrl-C is graceful too.
    let shutdown = rpc::shutdown_signal();
    println!("serving Calculator on {} (Ctrl-C to stop)", listener.local_addr());
    rpc::Server::new().add_service(Calc.into_service()).serve_until(listener, shutdown).await?;
    println!("shut down cleanly");
    Ok(())
}
