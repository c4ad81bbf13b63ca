//! The seed's `add` as a `#[tarpc::service]`, served by tarpc's `BaseChannel` and called by its
//! generated client over our transports (`rpc::tarpc` with the feature `tarpc`; this example
//! names that crate itself, `rpc_tarpc`, so that it runs without `--features`). The trait, the
//! impl and the serving code are plain tarpc; only the two lines that make the transport
//! change (marked `was:` below).
//!
//! ```text
//! cargo run --example tarpc_add                         # both sides, over local:// and spawn:
//! cargo run --example tarpc_add -- server local://calc  # one terminal; Ctrl-C stops it
//! cargo run --example tarpc_add -- client local://calc  # another; any address works
//! ```

use std::time::Instant;

use futures_util::{future, StreamExt};
use tarpc::context;
use tarpc::server::{BaseChannel, Channel};

/// A calculator, callable from another process.
#[tarpc::service]
trait Calculator {
    /// Adds two numbers.
    async fn add(a: i64, b: i64) -> i64;
}

#[derive(Clone)]
struct Calc;

impl Calculator for Calc {
    async fn add(self, _: context::Context, a: i64, b: i64) -> i64 {
        a + b
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

type Incoming = rpc_tarpc::Incoming<tarpc::ClientMessage<CalculatorRequest>, tarpc::Response<CalculatorResponse>>;

/// Listens on `addr`.
async fn listen(addr: &str) -> Result<Incoming, BoxError> {
    // was: tarpc::serde_transport::tcp::listen(addr, Bincode::default).await?
    let incoming = rpc_tarpc::listen(addr).await?;
    println!("serving Calculator (tarpc) on {}", incoming.local_addr());
    Ok(incoming)
}

/// Serves `Calc` on every connection until the listener fails: tarpc's usual serving code.
async fn serve(incoming: Incoming) -> Result<(), BoxError> {
    incoming
        .filter_map(|accepted| future::ready(accepted.ok()))
        .map(BaseChannel::with_defaults)
        .for_each(|channel| {
            tokio::spawn(channel.execute(Calc.serve()).for_each(|call| {
                tokio::spawn(call);
                future::ready(())
            }));
            future::ready(())
        })
        .await;
    Err("the listener failed".into())
}

/// Calls `add` on `addr` and prints the answer and the median round trip.
async fn call(addr: &str) -> Result<(), BoxError> {
    // was: tarpc::serde_transport::tcp::connect(addr, Bincode::default).await?
    let transport = rpc_tarpc::connect(addr).await?;
    let calc = CalculatorClient::new(tarpc::client::Config::default(), transport).spawn();
    println!("{addr}: 1 + 2 = {}", calc.add(context::current(), 1, 2).await?);
    let mut rtts = Vec::with_capacity(1000);
    for i in 0..1000 {
        let start = Instant::now();
        calc.add(context::current(), i, 1).await?;
        rtts.push(start.elapsed());
    }
    rtts.sort();
    println!("{addr}: median round trip {:?} over {} calls", rtts[rtts.len() / 2], rtts.len());
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let addr = args.get(1).map_or("local://tarpc-calc", String::as_str);
    match args.first().map(String::as_str) {
        Some("server") => {
            let shutdown = rpc::shutdown_signal();
            let incoming = listen(addr).await?;
            tokio::select! {
                served = serve(incoming) => served,
                () = shutdown => Ok(()),
            }
        }
        Some("client") => call(addr).await,
        // The child's side of the spawn: address below: tarpc over our stdin and stdout.
        #[cfg(unix)]
        Some("stdio") => {
            let transport = rpc_tarpc::stdio()?;
            BaseChannel::with_defaults(transport)
                .execute(Calc.serve())
                .for_each(|call| {
                    tokio::spawn(call);
                    future::ready(())
                })
                .await;
            Ok(())
        }
        Some(other) => Err(format!("unknown mode {other:?}: use server ADDR, client ADDR, or nothing").into()),
        None => {
            let local = format!("local://tarpc-add-{}", std::process::id());
            let server = tokio::spawn(serve(listen(&local).await?));
            call(&local).await?;
            server.abort();
            // tarpc over a child process's pipes: something tarpc has no transport for itself.
            #[cfg(unix)]
            call(&format!("spawn:{}?stdio", std::env::current_exe()?.display())).await?;
            Ok(())
        }
    }
}
