//! Pipelined throughput against a running add server: N calls in flight on one connection.
//!
//! ```text
//! cargo run --release --example add_server -- unix:///tmp/calc.sock &
//! cargo run --release --example throughput -- unix:///tmp/calc.sock 64 3
//! ```
//!
//! A quick probe, not the benchmark harness: it prints calls per second for one run.

#[path = "shared/calculator.rs"]
mod calculator;

use std::time::{Duration, Instant};

use calculator::CalculatorClient;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "tcp://127.0.0.1:12345".to_owned());
    let in_flight: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(64);
    let seconds: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(3);
    let calc = CalculatorClient::connect(&addr).await?;
    let stop = Instant::now() + Duration::from_secs(seconds);
    let workers: Vec<_> = (0..in_flight)
        .map(|w| {
            let calc = calc.clone();
            tokio::spawn(async move {
                let mut calls = 0u64;
                while Instant::now() < stop {
                    let sum = calc.add(w as i64, 1).await?;
                    assert_eq!(sum, w as i64 + 1);
                    calls += 1;
                }
                Ok::<_, rpc::RpcError>(calls)
            })
        })
        .collect();
    let start = Instant::now();
    let mut total = 0;
    for w in workers {
        total += w.await??;
    }
    let secs = start.elapsed().as_secs_f64();
    println!("{addr}: {in_flight} in flight, {total} calls in {secs:.2} s = {:.0} calls/s", total as f64 / secs);
    Ok(())
}
