//! The demo: starts the add server and client over every transport this build has, and prints a
//! table of transport, address, result, round-trip time and the item rate of a short server
//! stream (the streaming example's `Monitor::history`, served beside the calculator).
//!
//! ```text
//! cargo run --release --example demo
//! ```
//!
//! Each server runs as a separate process (this binary re-executed with `--serve ADDR`), except
//! `mem://`, which is in-process by definition, and `spawn:`, whose server is a child the client
//! starts itself (this binary with `--stdio`). Each listening server is stopped with SIGTERM and
//! must exit 0.

#[path = "shared/calculator.rs"]
mod calculator;
#[path = "shared/monitor.rs"]
mod monitor;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use calculator::{Calc, Calculator, CalculatorClient};
use monitor::{Monitor, MonitorClient, Sensors};

const WARMUP: usize = 200;
const CALLS: usize = 2000;
/// Items of the timed server stream.
const STREAM_ITEMS: u64 = 20_000;

/// One address per mechanism in this build.
fn addresses() -> Vec<(&'static str, String)> {
    let id = std::process::id();
    let mut list = vec![("tcp", "tcp://127.0.0.1:0".to_owned()), ("local", format!("local://rpc-demo-{id}"))];
    if cfg!(target_os = "linux") {
        list.push(("shm", format!("shm://rpc-demo-{id}")));
    }
    if cfg!(unix) {
        let path = std::env::temp_dir().join(format!("rpc-demo-{id}.sock"));
        list.push(("unix", format!("unix://{}", path.display())));
        let fifo = std::env::temp_dir().join(format!("rpc-demo-{id}.fifo"));
        list.push(("fifo", format!("fifo://{}", fifo.display())));
        if let Ok(exe) = std::env::current_exe() {
            list.push(("spawn", format!("spawn:{}?--stdio", exe.display())));
        }
    }
    if cfg!(target_os = "linux") {
        list.push(("mq", format!("mq://rpc-demo-{id}")));
    }
    list.push(("mem", format!("mem://demo-{id}")));
    list
}

/// An error that may cross threads (the client runs in a runtime task).
type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if let [_, flag, addr] = &args[..] {
        if flag == "--serve" {
            return serve(addr);
        }
    }
    #[cfg(unix)]
    if let [_, flag] = &args[..] {
        if flag == "--stdio" {
            return serve_stdio();
        }
    }
    let runtime = tokio::runtime::Runtime::new()?;
    println!(
        "{:<8} {:<44} {:<10} {:>14} {:>12} {:>16}",
        "transport", "address", "1 + 2", "median rtt", "p99 rtt", "stream items/s"
    );
    let mut failures = 0;
    for (name, addr) in addresses() {
        // The client runs in a task of the runtime, as callers in an async program do: a call
        // from `block_on`'s own thread (the body of `#[tokio::main]`) to an in-process server
        // adds a wake-up of another thread each way (about 30 µs here, against 2 µs from a task).
        let job = runtime.spawn({
            let addr = addr.clone();
            async move { run_one(&addr).await.map_err(|e| e.to_string()) }
        });
        match runtime.block_on(job).map_err(|e| e.to_string()).and_then(|row| row) {
            Ok(row) => println!(
                "{:<8} {:<44} {:<10} {:>11.1} µs {:>9.1} µs {:>14.0} k",
                name,
                shorten(&row.addr),
                row.result,
                row.median_us,
                row.p99_us,
                row.stream_items_s / 1e3
            ),
            Err(e) => {
                failures += 1;
                println!("{name:<8} {addr:<44} FAILED: {e}");
            }
        }
    }
    println!(
        "({CALLS} sequential add calls per transport after {WARMUP} warm-up calls; then one server stream of {STREAM_ITEMS} Monitor events; one process per side except mem; the client runs in a runtime task; spawn's server is the client's child)"
    );
    if failures > 0 {
        return Err(format!("{failures} transport(s) failed").into());
    }
    Ok(())
}

/// Keeps the table aligned: a long address (spawn's program path) loses its middle.
fn shorten(addr: &str) -> String {
    const WIDTH: usize = 44;
    let chars: Vec<char> = addr.chars().collect();
    if chars.len() <= WIDTH {
        return addr.to_owned();
    }
    let head: String = chars[..8].iter().collect();
    let tail: String = chars[chars.len() - (WIDTH - 9)..].iter().collect();
    format!("{head}…{tail}")
}

struct Row {
    addr: String,
    result: i64,
    median_us: f64,
    p99_us: f64,
    stream_items_s: f64,
}

async fn run_one(addr: &str) -> Result<Row, BoxError> {
    if addr.starts_with("mem://") {
        let listener = rpc::listen(addr).await?;
        let addr = listener.local_addr();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(server().serve_until(listener, async {
            let _ = stopped.await;
        }));
        let row = measure(&addr).await;
        let _ = stop.send(());
        server.await??;
        return row;
    }
    if addr.starts_with("spawn:") {
        // The client starts (and owns) its server: nothing to start or stop here.
        return measure(addr).await;
    }
    let mut child = ServerProcess::start(addr)?;
    let row = measure(&child.addr).await;
    child.stop()?;
    row
}

async fn measure(addr: &str) -> Result<Row, BoxError> {
    let calc = CalculatorClient::connect(addr).await?;
    let result = calc.add(1, 2).await?;
    for i in 0..WARMUP as i64 {
        calc.add(i, i).await?;
    }
    let mut samples = Vec::with_capacity(CALLS);
    for i in 0..CALLS as i64 {
        let start = Instant::now();
        let sum = calc.add(i, 1).await?;
        samples.push(start.elapsed());
        assert_eq!(sum, i + 1);
    }
    samples.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let stream_items_s = stream_rate(addr).await?;
    Ok(Row {
        addr: addr.to_owned(),
        result,
        median_us: us(samples[CALLS / 2]),
        p99_us: us(samples[CALLS * 99 / 100]),
        stream_items_s,
    })
}

/// Items/s of one `history` stream of [`STREAM_ITEMS`] events, timed from the first item (a
/// `spawn:` address starts a second child for this connection).
async fn stream_rate(addr: &str) -> Result<f64, BoxError> {
    let monitor = MonitorClient::connect(addr).await?;
    let mut events = monitor.history("demo".to_owned(), STREAM_ITEMS).await?;
    events.next().await.ok_or("the stream ended at once")??;
    let start = Instant::now();
    let mut received = 1;
    while let Some(event) = events.next().await {
        let event = event?;
        received += 1;
        assert_eq!(event.seq + 1, received);
    }
    if received != STREAM_ITEMS {
        return Err(format!("{received} of {STREAM_ITEMS} events arrived").into());
    }
    Ok((STREAM_ITEMS - 1) as f64 / start.elapsed().as_secs_f64())
}

/// The calculator and the monitor, on one server.
fn server() -> rpc::Server {
    rpc::Server::new().add_service(Calc.into_service()).add_service(Sensors::new().into_service())
}

/// The server half, run as `demo --serve ADDR`.
fn serve(addr: &str) -> Result<(), Box<dyn std::error::Error>> {
    tokio::runtime::Runtime::new()?.block_on(async {
        let listener = rpc::listen(addr).await?;
        // Installed before the address is announced: a SIGTERM sent right after it is graceful.
        let shutdown = rpc::shutdown_signal();
        println!("listening {}", listener.local_addr());
        std::io::stdout().flush()?;
        server().serve_until(listener, shutdown).await?;
        Ok(())
    })
}

/// The server half of `spawn:`, run as `demo --stdio` by the client's connect.
#[cfg(unix)]
fn serve_stdio() -> Result<(), Box<dyn std::error::Error>> {
    tokio::runtime::Runtime::new()?.block_on(async {
        rpc::serve_stdio(server()).await?;
        Ok(())
    })
}

struct ServerProcess {
    child: Child,
    addr: String,
}

impl ServerProcess {
    fn start(addr: &str) -> Result<Self, BoxError> {
        let mut child =
            Command::new(std::env::current_exe()?).arg("--serve").arg(addr).stdout(Stdio::piped()).spawn()?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().ok_or("no stdout")?).read_line(&mut line)?;
        let Some(addr) = line.trim().strip_prefix("listening ") else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("server did not start: {line:?}").into());
        };
        Ok(Self { addr: addr.to_owned(), child })
    }

    /// SIGTERM, then the exit status must be success.
    fn stop(&mut self) -> Result<(), BoxError> {
        #[cfg(unix)]
        // SAFETY: kill(2) on the pid of our own child, which has not been reaped yet.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        #[cfg(not(unix))]
        self.child.kill()?;
        let status = self.child.wait()?;
        if !status.success() && cfg!(unix) {
            return Err(format!("server exited with {status}").into());
        }
        Ok(())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
