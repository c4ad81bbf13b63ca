//! The add client without async: a plain `fn main()`, no runtime in sight, calling the add
//! server through the generated `CalculatorBlockingClient` (see `rpc::blocking`).
//!
//! ```text
//! cargo run --example add_server &                 # tcp://127.0.0.1:12345
//! cargo run --example add_client_blocking          # or: -- unix:///tmp/calc.sock
//! ```

#[path = "shared/calculator.rs"]
mod calculator;

use std::time::Duration;

use calculator::CalculatorBlockingClient;
use rpc::CallError;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "tcp://127.0.0.1:12345".to_owned());
    let calc = CalculatorBlockingClient::connect(&addr)?;

    println!("1 + 2 = {}", calc.add(1, 2)?);
    match calc.div(1, 0) {
        Err(CallError::App(e)) => println!("1 / 0 failed in the server: {e}"),
        other => println!("1 / 0 = {other:?}"),
    }
    println!("40 + 2 = {} (with a 1 s deadline)", calc.with_timeout(Duration::from_secs(1)).add(40, 2)?);

    // Threads share one client (and its connection).
    let sums: Vec<i64> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|i| {
                s.spawn({
                    let calc = &calc;
                    move || calc.add(i, i)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("no panic")).collect::<Result<_, _>>()
    })?;
    println!("from 4 threads: {sums:?}");
    Ok(())
}
