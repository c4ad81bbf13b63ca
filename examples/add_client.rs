//! The add client: calls the add server like a local object.
//!
//! ```text
//! cargo run --example add_client                  # tcp://127.0.0.1:12345
//! cargo run --example add_client -- local://calc
//! ```

#[path = "shared/calculator.rs"]
mod calculator;

use std::time::Duration;

use calculator::CalculatorClient;
use rpc::CallError;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "tcp://127.0.0.1:12345".to_owned());
    let calc = CalculatorClient::connect(&addr).await?;

    println!("1 + 2 = {}", calc.add(1, 2).await?);
    println!("7 / 2 = {}", calc.div(7, 2).await?);
    match calc.div(1, 0).await {
        Err(CallError::App(e)) => println!("1 / 0 failed in the server: {e}"),
        other => println!("1 / 0 = {other:?}"),
    }
    // A per-call deadline, without changing the common call.
    let answer = calc.with_timeout(Duration::from_secs(1)).add(40, 2).await?;
    println!("40 + 2 = {answer} (with a 1 s deadline)");
    println!("server version {}", calc.version().await?);
    Ok(())
}
