//! A parent that starts a worker child process and calls `add` on it over the child's stdin and
//! stdout: Python's `multiprocessing.Pipe` with a worker, typed.
//!
//! ```text
//! cargo run --example spawn_worker
//! ```
//!
//! The same binary is both sides: run without arguments it is the parent, which starts itself
//! with `--worker`. The parent owns the worker: dropping the client closes the worker's stdin,
//! the worker's `serve_stdio` returns, and the parent reaps it (a worker that ignores EOF is
//! killed after a grace period). The worker logs to stderr, which it shares with the parent;
//! its stdout is the connection, so it must never print there.

#[path = "shared/calculator.rs"]
mod calculator;

#[cfg(unix)]
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    use calculator::{Calc, Calculator, CalculatorClient};

    if std::env::args().nth(1).as_deref() == Some("--worker") {
        eprintln!("worker (pid {}): serving over stdin/stdout", std::process::id());
        rpc::serve_stdio(rpc::Server::new().add_service(Calc.into_service())).await?;
        eprintln!("worker (pid {}): the parent closed the pipes, exiting", std::process::id());
        return Ok(());
    }

    let exe = std::env::current_exe()?;

    // With an address string, like every other transport...
    let calc = CalculatorClient::connect(&format!("spawn:{}?--worker", exe.display())).await?;
    println!("parent: 1 + 2 = {} (worker: {})", calc.add(1, 2).await?, calc.rpc_client().connection_info().peer);
    drop(calc);

    // ...or with a Command you build yourself (environment, working directory, ...).
    let mut command = tokio::process::Command::new(&exe);
    command.arg("--worker").env("WORKER_MODE", "example");
    let conn = rpc::transports::spawn::connect_command(command)?;
    let calc = CalculatorClient::from_connection(conn).await?;
    let sums = futures_sum(&calc).await?;
    println!("parent: 100 concurrent adds on the worker, total {sums}");
    drop(calc);

    // Give the workers a moment to log their exit: when this runtime ends, a worker that is
    // still running is killed rather than left behind.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    Ok(())
}

#[cfg(unix)]
async fn futures_sum(calc: &calculator::CalculatorClient) -> Result<i64, rpc::RpcError> {
    let calls: Vec<_> = (0..100)
        .map(|i| {
            let calc = calc.clone();
            tokio::spawn(async move { calc.add(i, 1).await })
        })
        .collect();
    let mut total = 0;
    for call in calls {
        total += call.await.expect("call task")?;
    }
    Ok(total)
}

#[cfg(not(unix))]
fn main() {
    eprintln!("spawn: addresses need a Unix system in this build");
}
