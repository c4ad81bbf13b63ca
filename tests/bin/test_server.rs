//! The helper process of the integration tests.
//!
//! * `rpc-test-server ADDR`: serves the test services on ADDR, prints `listening <address>`
//!   (with any OS-chosen port filled in) on stdout once ready, and shuts down gracefully on
//!   SIGTERM or Ctrl-C, exiting 0.
//! * `rpc-test-server --stdio [--pid-dir DIR] [--noisy]`: the child of a `spawn:` address; serves
//!   the test services over stdin/stdout until the parent goes away. With `--pid-dir` it creates
//!   `DIR/<pid>` while it runs (so a test can SIGKILL the children its clients spawned), with
//!   `--noisy` it first breaks the stdio rule by printing to stdout.
//! * `rpc-test-server --client ADDR`: connects a `Calculator` client to ADDR, prints
//!   `connected`, and waits forever: the peer a test kills with SIGKILL.
//!
//! With `--tarpc` first, each mode does the same with the `#[tarpc::service]`
//! `TarpcCalculator` over `rpc::transports::tarpc` instead of our services (the `--client`
//! leaves a `sleep` call in flight before it prints `connected`).

use std::io::Write;
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let tarpc = args.first().is_some_and(|a| a == "--tarpc");
    if tarpc {
        args.remove(0);
    }
    match args.first().map(String::as_str) {
        Some("--stdio") => stdio(&args[1..], tarpc).await,
        Some("--client") if args.len() == 2 && tarpc => tarpc_client(&args[1]).await,
        Some("--client") if args.len() == 2 => client(&args[1]).await,
        Some(addr) if args.len() == 1 && !addr.starts_with("--") && tarpc => serve_tarpc(addr).await,
        Some(addr) if args.len() == 1 && !addr.starts_with("--") => serve(addr).await,
        _ => {
            eprintln!("usage: rpc-test-server [--tarpc] (ADDR | --stdio [--pid-dir DIR] [--noisy] | --client ADDR)");
            std::process::exit(2);
        }
    }
}

fn fail(e: impl std::fmt::Display) -> ! {
    eprintln!("rpc-test-server: {e}");
    std::process::exit(1);
}

fn announce(line: &str) {
    println!("{line}");
    std::io::stdout().flush().expect("stdout");
}

async fn serve_tarpc(addr: &str) {
    let incoming = rpc::transports::tarpc::listen(addr).await.unwrap_or_else(|e| fail(e));
    let shutdown = rpc::shutdown_signal();
    announce(&format!("listening {}", incoming.local_addr()));
    // Dropping `incoming` on shutdown closes the listener (and removes a unix:// socket file).
    tokio::select! {
        () = rpc_tests::serve_tarpc(incoming) => fail("the listener failed"),
        () = shutdown => {}
    }
}

async fn tarpc_client(addr: &str) {
    let calc = rpc_tests::tarpc_client(addr).await.unwrap_or_else(|e| fail(e));
    let ctx = tarpc::context::current();
    if let Err(e) = calc.add(ctx, 1, 2).await {
        fail(e);
    }
    let mut ctx = tarpc::context::current();
    ctx.deadline = Instant::now() + Duration::from_secs(120);
    let pending = tokio::spawn({
        let calc = calc.clone();
        async move { calc.sleep(ctx, 60_000).await }
    });
    // Time for the request to leave before the test is told to kill us.
    tokio::time::sleep(Duration::from_millis(50)).await;
    announce("connected");
    let _ = pending.await;
    std::future::pending::<()>().await;
}

async fn serve(addr: &str) {
    let listener = match rpc::listen(addr).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("rpc-test-server: {e}");
            std::process::exit(1);
        }
    };
    // Installed before the address is announced: a SIGTERM sent right after it is graceful.
    let shutdown = rpc::shutdown_signal();
    println!("listening {}", listener.local_addr());
    std::io::stdout().flush().expect("stdout");
    let result = rpc_tests::test_server().serve_until(listener, shutdown).await;
    if let Err(e) = result {
        eprintln!("rpc-test-server: {e}");
        std::process::exit(1);
    }
}

async fn stdio(options: &[String], tarpc: bool) {
    let mut pid_file = None;
    let mut options = options.iter();
    while let Some(option) = options.next() {
        match option.as_str() {
            "--pid-dir" => {
                let dir = options.next().expect("--pid-dir DIR");
                let path = std::path::Path::new(dir).join(std::process::id().to_string());
                std::fs::write(&path, b"").expect("pid file");
                pid_file = Some(path);
            }
            "--noisy" => {
                println!("hello from a child that prints to stdout");
                std::io::stdout().flush().expect("stdout");
            }
            other => panic!("unknown option {other}"),
        }
    }
    let result = if tarpc {
        match rpc::transports::tarpc::stdio() {
            Ok(transport) => {
                rpc_tests::serve_tarpc_connection(transport).await;
                Ok(())
            }
            Err(e) => Err(e),
        }
    } else {
        rpc::serve_stdio(rpc_tests::test_server()).await
    };
    if let Some(path) = pid_file {
        let _ = std::fs::remove_file(path);
    }
    if let Err(e) = result {
        eprintln!("rpc-test-server: {e}");
        std::process::exit(1);
    }
}

async fn client(addr: &str) {
    let calc = match rpc_tests::CalculatorClient::connect(addr).await {
        Ok(calc) => calc,
        Err(e) => {
            eprintln!("rpc-test-server: {e}");
            std::process::exit(1);
        }
    };
    println!("connected");
    std::io::stdout().flush().expect("stdout");
    std::future::pending::<()>().await;
    drop(calc);
}
