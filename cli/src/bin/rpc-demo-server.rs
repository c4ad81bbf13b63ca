//! Serves the demo services (`Calculator`, `Inventory`) on an address until Ctrl-C or SIGTERM:
//! something to point `rpc list` and `rpc call` at.
//!
//! ```text
//! rpc-demo-server                        # tcp://127.0.0.1:12345
//! rpc-demo-server unix:///tmp/demo.sock  # any address
//! rpc-demo-server --stdio                # one connection over stdin/stdout (for spawn:)
//! ```
//!
//! The first line it prints is `serving Calculator and Inventory on ADDR`, with the address
//! bound (a `tcp://…:0` address gets its port there).

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "tcp://127.0.0.1:12345".to_owned());
    if addr == "--stdio" {
        #[cfg(unix)]
        return Ok(rpc::serve_stdio(rpc_cli::demo::server()).await?);
        #[cfg(not(unix))]
        return Err("--stdio needs a Unix system".into());
    }
    let listener = rpc::listen(&addr).await?;
    let shutdown = rpc::shutdown_signal();
    println!("serving Calculator and Inventory on {}", listener.local_addr());
    rpc_cli::demo::server().serve_until(listener, shutdown).await?;
    Ok(())
}
