//! The watch client: one call of each streaming kind against the watch server.
//!
//! ```text
//! cargo run --example watch_client                   # tcp://127.0.0.1:12346
//! cargo run --example watch_client -- local://watch
//! ```

#[path = "shared/monitor.rs"]
mod monitor;

use monitor::MonitorClient;
use rpc::CallError;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "tcp://127.0.0.1:12346".to_owned());
    let monitor = MonitorClient::connect(&addr).await?;

    // Server streaming: readings arrive as the server produces them.
    let mut events = monitor.watch("cpu".to_owned()).await?;
    for _ in 0..5 {
        match events.next().await {
            Some(event) => {
                let event = event?;
                println!("watch: {} #{} = {:.1} (at {} ms)", event.key, event.seq, event.value, event.uptime_ms);
            }
            None => break,
        }
    }
    // Dropping the stream cancels it: the server's producer stops.
    drop(events);
    println!("watch: stopped after 5 readings");

    // Client streaming: chunks go up as a producer task makes them; one answer comes back.
    let (tx, chunks) = rpc::Stream::channel(4);
    let producer = tokio::spawn(async move {
        for i in 0..16u8 {
            // Fails only if the server stopped reading (an error it will also answer with).
            if tx.send(rpc::Bytes::from(vec![i; 64 << 10])).await.is_err() {
                break;
            }
        }
    });
    let stored = monitor.upload("report.bin".to_owned(), chunks).await?;
    producer.await?;
    println!("upload: the server stored {stored} bytes sent as 16 chunks of 64 KiB");
    match monitor.upload("nothing.bin".to_owned(), rpc::Stream::empty()).await {
        Err(CallError::App(e)) => println!("upload: refused by the server: {e}"),
        other => println!("upload of nothing: {other:?}"),
    }

    // Both ways: each key sent gets its reading back while the request stream is still open.
    let keys = rpc::Stream::from_iter(["cpu", "memory", "disk"].map(str::to_owned));
    let mut readings = monitor.lookup(keys).await?;
    while let Some(event) = readings.next().await {
        let event = event?;
        println!("lookup: {} = {:.1}", event.key, event.value);
    }
    Ok(())
}
