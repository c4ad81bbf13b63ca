//! A fixed number of `add` calls, client and server in one process on one thread, for counting
//! what a call costs the engines with callgrind. Wall time on a shared 2-vCPU VM does not repeat
//! from run to run; instruction counts do, to a few in a million.
//!
//! ```text
//! cargo build --release -p rpc-bench --bin call-count
//! valgrind --tool=callgrind target/release/call-count 20000 mem://count 1
//! valgrind --tool=callgrind target/release/call-count 40000 mem://count 1
//! ```
//!
//! The difference of the two totals over the difference of the calls is one call's cost, both
//! sides of it (the setup cancels out). Arguments: the number of calls, an address this process
//! can listen on (`mem://name`, `unix:///tmp/x.sock`, `tcp://127.0.0.1:0`, `local://name`, ...),
//! how many tasks call at once (calls in flight), and optionally a payload size: with it, each
//! call is an `echo` of that many bytes instead of an `add` (for what a bulk call costs; count
//! its system calls with `strace -c -f` as well, they are where a socket's bulk time goes).
//! The address `tls` stands for a `tls://` address on loopback with a throwaway certificate.
//! Without valgrind it prints the time per call, which is only indicative.

use std::time::Instant;

#[rpc::service]
trait Count {
    async fn add(&self, a: i64, b: i64) -> i64;
    async fn echo(&self, data: rpc::Bytes) -> rpc::Bytes;
}

struct Counter;

impl Count for Counter {
    async fn add(&self, a: i64, b: i64) -> i64 {
        a.wrapping_add(b)
    }

    async fn echo(&self, data: rpc::Bytes) -> rpc::Bytes {
        data
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), BoxError> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: call-count CALLS ADDRESS TASKS [ECHO_BYTES]";
    let calls: u64 = args.next().ok_or(usage)?.parse()?;
    let address = args.next().ok_or(usage)?;
    let tasks: u64 = args.next().ok_or(usage)?.parse()?;
    if tasks == 0 || calls < tasks {
        return Err("TASKS must be at least 1 and at most CALLS".into());
    }
    // `Some`: each call echoes this payload instead of adding.
    let payload = args.next().map(|bytes| bytes.parse::<usize>()).transpose()?.map(|n| rpc::Bytes::from(vec![7u8; n]));
    let address = if address == "tls" {
        rpc_transports::registry::lookup("tls")
            .and_then(|scheme| scheme.fresh_address("call-count"))
            .ok_or("no tls:// address with a test certificate")?
    } else {
        address
    };
    // What the registry made for the address (a socket file, tls's throwaway certificate) is
    // removed after the run.
    let endpoint = rpc_transports::Address::parse(&address).ok();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let run = runtime.block_on(async move {
        let listener = rpc::listen(&address).await?;
        let address = listener.local_addr();
        let server = tokio::spawn(rpc::Server::new().add_service(Counter.into_service()).serve(listener));
        let client = CountClient::connect(&address).await?;
        let start = Instant::now();
        // The callers are tasks, as in a program: a call from `block_on`'s own future would also
        // count the runtime's wake-up of the thread it parks.
        let callers: Vec<_> = (0..tasks)
            .map(|task| {
                let client = client.clone();
                let payload = payload.clone();
                tokio::spawn(async move {
                    for i in 0..calls / tasks {
                        if let Some(payload) = &payload {
                            let back = client.echo(payload.clone()).await?;
                            if back.len() != payload.len() {
                                return Err(format!("echo of {} bytes returned {}", payload.len(), back.len()).into());
                            }
                            continue;
                        }
                        let sum = client.add(i as i64, task as i64).await?;
                        if sum != (i + task) as i64 {
                            return Err::<(), BoxError>(format!("add({i}, {task}) returned {sum}").into());
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        for caller in callers {
            caller.await??;
        }
        let made = calls / tasks * tasks;
        println!(
            "{made} calls, {:.2} µs a call (wall time, indicative only)",
            start.elapsed().as_secs_f64() * 1e6 / made as f64
        );
        server.abort();
        Ok(())
    });
    if let Some(endpoint) = endpoint {
        rpc_transports::registry::remove_endpoint(&endpoint);
    }
    run
}
