//! A server with tracing output and `tower` layers: at most 2 calls at once, 200 ms per call.
//! Runs a short client against itself (with trace propagation), prints the server's stats, and
//! shuts down.
//!
//! ```text
//! cargo run --example traced_server                        # RUST_LOG=info: a healthy server is quiet
//! RUST_LOG=rpc_core=debug cargo run --example traced_server  # every connection, call and close
//! cargo run --example traced_server -- unix:///tmp/work.sock # any address
//! ```

use std::time::Duration;

use rpc::service;
use tracing_subscriber::EnvFilter;

/// Work that takes a while.
#[service]
pub trait Work {
    /// Works for `ms` milliseconds, then returns it.
    async fn work(&self, ms: u64) -> u64;
}

struct Worker;

impl Work for Worker {
    async fn work(&self, ms: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        tracing::info!(ms, "worked");
        ms
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // RUST_LOG picks what is shown (default `info`); spans close with their outcome and duration.
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .init();

    let addr = std::env::args().nth(1).unwrap_or_else(|| "tcp://127.0.0.1:0".to_owned());
    let listener = rpc::listen(&addr).await?;
    let addr = listener.local_addr();
    let layers = tower::ServiceBuilder::new()
        .layer(tower::timeout::TimeoutLayer::new(Duration::from_millis(200)))
        .layer(tower::limit::ConcurrencyLimitLayer::new(2))
        .into_inner();
    let server = rpc::Server::new().layer(layers).add_service(Worker.into_service());
    let stats = server.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve_until(listener, async {
        let _ = stopped.await;
    }));
    tracing::info!(%addr, "serving Work");

    let options = rpc::ClientOptions::new().propagate_trace_context(true);
    let client = WorkClient::connect_with(&addr, options).await?;
    // Four calls of 150 ms at once: the limit runs two at a time (the last two start ~150 ms
    // later; the timeout counts from when a call has its slot, so all four pass).
    let calls = (0..4).map(|_| {
        let client = client.clone();
        tokio::spawn(async move { client.work(150).await })
    });
    for call in calls.collect::<Vec<_>>() {
        match call.await? {
            Ok(ms) => println!("work(150) -> {ms}"),
            Err(e) => println!("work(150) failed: {e}"),
        }
    }
    // Longer than the timeout layer allows: the caller gets `RpcError::DeadlineExceeded`.
    match client.work(500).await {
        Ok(ms) => println!("work(500) -> {ms}"),
        Err(e) => println!("work(500) failed: {e}"),
    }
    drop(client);
    let _ = stop.send(());
    serving.await??;
    println!("{:#?}", stats.stats());
    Ok(())
}
