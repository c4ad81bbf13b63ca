//! The helper process of the integration tests.
//!
//! * `rpc-test-server [OPTIONS] ADDR`: serves the test services on ADDR, prints
//!   `listening <address>` (with any OS-chosen port filled in) on stdout once ready, and shuts
//!   down gracefully on SIGTERM or Ctrl-C, exiting 0. Options (times in milliseconds):
//!   `--handshake-timeout-ms N`, `--frame-timeout-ms N`, `--idle-timeout-ms N`,
//!   `--send-timeout-ms N` set the
//!   server's timeouts; `--nofile N` sets the soft `RLIMIT_NOFILE` to N (without it the limit
//!   is raised to the hard limit, as a server for many clients would); `--trim-ms N` returns
//!   the allocator's free memory to the OS every N ms (glibc), so memory tests see what is
//!   still in use rather than what the allocator keeps for reuse. `--mode OCTAL` sets who may
//!   connect to a local endpoint (`TransportOptions::mode`), `--same-uid` turns on
//!   `ServerOptions::same_uid_only`.
//! * `rpc-test-server --stdio [--pid-dir DIR] [--noisy]`: the child of a `spawn:` address; serves
//!   the test services over stdin/stdout until the parent goes away. With `--pid-dir` it creates
//!   `DIR/<pid>` while it runs (so a test can SIGKILL the children its clients spawned), with
//!   `--noisy` it first breaks the stdio rule by printing to stdout.
//! * `rpc-test-server --client ADDR [--sleep-calls N] [--connections K] [--nofile M]`: connects
//!   K `Calculator` clients to ADDR (default 1; with a soft descriptor limit of M if given),
//!   starts N calls of `sleep(60 s)` on the first (default 0), prints `connected`, and waits
//!   forever: the peer a test kills with SIGKILL, in the middle of its calls if N > 0. If a
//!   connect fails it prints `failed after <n> connections: <error>` and exits 1.
//! * `rpc-test-server --whoami ADDR`: connects, calls `whoami(0)`, prints what the server saw as
//!   `uid gid pid` (`none` without credentials) and exits; a failure goes to stderr, exit 1.
//!
//! With `RUST_LOG` set, what the framework logs (`tracing`) goes to stderr, filtered by it.
//!
//! With `--tarpc` first, each mode does the same with the `#[tarpc::service]`
//! `TarpcCalculator` over `rpc::tarpc` instead of our services (the `--client`
//! leaves a `sleep` call in flight before it prints `connected`; the server options do not apply).

use std::io::Write;
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() {
    if std::env::var_os("RUST_LOG").is_some() {
        // stderr: stdout belongs to the ready line (and, with --stdio, to the protocol).
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .init();
    }
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let tarpc = args.first().is_some_and(|a| a == "--tarpc");
    if tarpc {
        args.remove(0);
    }
    match args.first().map(String::as_str) {
        Some("--stdio") => stdio(&args[1..], tarpc).await,
        Some("--client") if args.len() == 2 && tarpc => tarpc_client(&args[1]).await,
        Some("--client") if args.len() >= 2 => client(&args[1], &args[2..]).await,
        Some("--whoami") if args.len() == 2 => whoami(&args[1]).await,
        Some(_) => match server_options(&args) {
            Some((addr, ..)) if tarpc => serve_tarpc(addr).await,
            Some((addr, transport, options)) => serve(addr, transport, options).await,
            None => usage(),
        },
        None => usage(),
    }
}

fn usage() -> ! {
    eprintln!(
        "usage: rpc-test-server [--tarpc] [--mode OCTAL] [--same-uid] [--handshake-timeout-ms N] [--frame-timeout-ms N] [--idle-timeout-ms N] \
         [--send-timeout-ms N] [--nofile N] [--trim-ms N] ADDR \
         | --stdio [--pid-dir DIR] [--noisy] | --client ADDR [--sleep-calls N] [--connections K] [--nofile M] \
         | --whoami ADDR"
    );
    std::process::exit(2);
}

/// Parses `[OPTIONS] ADDR`, applying `--nofile` (or raising the limit) on the way.
fn server_options(args: &[String]) -> Option<(&str, rpc::transports::TransportOptions, rpc::ServerOptions)> {
    let mut options = rpc_tests::test_options();
    let mut transport = rpc::transports::TransportOptions::new();
    let mut nofile = None;
    let mut args = args.iter();
    let ms = |value: Option<&String>| value?.parse().ok().map(Duration::from_millis);
    loop {
        match args.next()?.as_str() {
            "--handshake-timeout-ms" => options = options.handshake_timeout(ms(args.next())?),
            "--frame-timeout-ms" => options = options.frame_timeout(ms(args.next())?),
            "--idle-timeout-ms" => options = options.idle_timeout(Some(ms(args.next())?)),
            "--send-timeout-ms" => options = options.send_timeout(ms(args.next())?),
            "--nofile" => nofile = Some(args.next()?.parse().ok()?),
            "--mode" => transport = transport.mode(u32::from_str_radix(args.next()?, 8).ok()?),
            "--same-uid" => options = options.same_uid_only(true),
            "--trim-ms" => {
                let every = ms(args.next())?;
                tokio::spawn(trim_every(every));
            }
            addr if !addr.starts_with("--") && args.len() == 0 => {
                match nofile {
                    Some(n) => set_fd_limit(n),
                    None => {
                        rpc::raise_fd_limit().expect("raise RLIMIT_NOFILE");
                    }
                }
                return Some((addr, transport, options));
            }
            _ => return None,
        }
    }
}

/// Gives the allocator's free memory back to the OS every `period`, so a test can tell memory
/// that was freed (and is returned here) from memory still in use (which no trim returns).
async fn trim_every(period: Duration) {
    loop {
        tokio::time::sleep(period).await;
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: malloc_trim only walks the allocator's own free lists.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

fn set_fd_limit(soft: libc::rlim_t) {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one `rlimit` into the valid, exclusively borrowed `limit`.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) }, 0);
    limit.rlim_cur = soft.min(limit.rlim_max);
    // SAFETY: setrlimit only reads the valid `limit`.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0, "set RLIMIT_NOFILE");
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
    let incoming = rpc::tarpc::listen(addr).await.unwrap_or_else(|e| fail(e));
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
        match rpc::tarpc::stdio() {
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

async fn client(addr: &str, options: &[String]) {
    let mut sleep_calls = 0;
    let mut connections = 1;
    let mut options = options.iter();
    while let Some(option) = options.next() {
        let mut value = || options.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| usage());
        match option.as_str() {
            "--sleep-calls" => sleep_calls = value(),
            "--connections" => connections = value(),
            "--nofile" => set_fd_limit(value() as libc::rlim_t),
            _ => usage(),
        }
    }
    let mut clients = Vec::new();
    for _ in 0..connections {
        match rpc_tests::CalculatorClient::connect(addr).await {
            Ok(calc) => clients.push(calc),
            Err(e) => {
                // The line a test reads: how far it got, and the error that stopped it.
                println!("failed after {} connections: {e}", clients.len());
                std::io::stdout().flush().expect("stdout");
                std::process::exit(1);
            }
        }
    }
    // Spawned tasks keep polling their calls, so the requests leave and the calls stay pending.
    let calls: Vec<_> = (0..sleep_calls).map(|_| tokio::spawn(clients[0].sleep(60_000))).collect();
    println!("connected");
    std::io::stdout().flush().expect("stdout");
    std::future::pending::<()>().await;
    drop((clients, calls));
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
