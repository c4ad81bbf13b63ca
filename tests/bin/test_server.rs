//! The helper process of the integration tests.
//!
//! * `rpc-test-server [--mode OCTAL] [--same-uid] ADDR`: serves the test services on ADDR,
//!   prints `listening <address>` (with any OS-chosen port filled in) on stdout once ready, and
//!   shuts down gracefully on SIGTERM or Ctrl-C, exiting 0. `--mode` sets who may connect to a
//!   local endpoint (`TransportOptions::mode`), `--same-uid` turns on
//!   `ServerOptions::same_uid_only`.
//! * `rpc-test-server --stdio [--pid-dir DIR] [--noisy]`: the child of a `spawn:` address; serves
//!   the test services over stdin/stdout until the parent goes away. With `--pid-dir` it creates
//!   `DIR/<pid>` while it runs (so a test can SIGKILL the children its clients spawned), with
//!   `--noisy` it first breaks the stdio rule by printing to stdout.
//! * `rpc-test-server --client ADDR`: connects a `Calculator` client to ADDR, prints
//!   `connected`, and waits forever: the peer a test kills with SIGKILL.
//! * `rpc-test-server --whoami ADDR`: connects, calls `whoami(0)`, prints what the server saw as
//!   `uid gid pid` (`none` without credentials) and exits; a failure goes to stderr, exit 1.

use std::io::Write;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--stdio") => stdio(&args[1..]).await,
        Some("--client") if args.len() == 2 => client(&args[1]).await,
        Some("--whoami") if args.len() == 2 => whoami(&args[1]).await,
        _ => match serve_args(&args) {
            Some((addr, transport, server)) => serve(addr, transport, server).await,
            None => {
                eprintln!(
                    "usage: rpc-test-server [--mode OCTAL] [--same-uid] ADDR | --stdio [--pid-dir DIR] [--noisy] \
                     | --client ADDR | --whoami ADDR"
                );
                std::process::exit(2);
            }
        },
    }
}

/// `[--mode OCTAL] [--same-uid] ADDR`.
fn serve_args(args: &[String]) -> Option<(&str, rpc::transports::TransportOptions, rpc::ServerOptions)> {
    let mut transport = rpc::transports::TransportOptions::new();
    let mut server = rpc::ServerOptions::default();
    let mut args = args.iter();
    loop {
        match args.next()?.as_str() {
            "--mode" => transport = transport.mode(u32::from_str_radix(args.next()?, 8).ok()?),
            "--same-uid" => server = server.same_uid_only(true),
            addr if !addr.starts_with("--") => return args.next().is_none().then_some((addr, transport, server)),
            _ => return None,
        }
    }
}

async fn serve(addr: &str, transport: rpc::transports::TransportOptions, server: rpc::ServerOptions) {
    let listener = match rpc::transports::listen_with(addr, &transport).await {
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
    let result = rpc_tests::test_server_with(server).serve_until(listener, shutdown).await;
    if let Err(e) = result {
        eprintln!("rpc-test-server: {e}");
        std::process::exit(1);
    }
}

async fn stdio(options: &[String]) {
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
    let result = rpc::serve_stdio(rpc_tests::test_server()).await;
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

async fn whoami(addr: &str) {
    let seen = async { rpc_tests::CalculatorClient::connect(addr).await?.whoami(0).await };
    match seen.await {
        Ok(Some(rpc_tests::Whoami { credentials: Some((uid, gid, pid)), .. })) => {
            println!("{uid} {gid} {}", pid.map_or_else(|| "-".to_owned(), |pid| pid.to_string()));
        }
        Ok(_) => println!("none"),
        Err(e) => {
            eprintln!("rpc-test-server: {e}");
            std::process::exit(1);
        }
    }
}
