//! The watch server: serves the streaming `Monitor` on an address until Ctrl-C or SIGTERM, then
//! shuts down gracefully (stops accepting, ends open streams, exits 0).
//!
//! ```text
//! cargo run --example watch_server                   # tcp://127.0.0.1:12346
//! cargo run --example watch_server -- local://watch  # any address: tcp, local, unix, shm, ...
//! ```

#[path = "shared/monitor.rs"]
mod monitor;

use monitor::{Monitor, Sensors};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "tcp://127.0.0.1:12346".to_owned());
    let listener = rpc::listen(&addr).await?;
    // Installed before we announce the address, so an early Ctrl-C is graceful too.
    let shutdown = rpc::shutdown_signal();
    println!("serving Monitor on {} (Ctrl-C to stop)", listener.local_addr());
    rpc::Server::new().add_service(Sensors::new().into_service()).serve_until(listener, shutdown).await?;
    println!("shut down cleanly");
    Ok(())
}
