//! `rpc bench`: one method called many times with K calls in flight, a progress bar while it
//! runs, calls/s and latency percentiles at the end; and the percentile line `rpc ping` prints.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use rpc::{CallOptions, Client, MethodDescriptor};
use rpc_cli::codec::Value;

use crate::Failure;

/// `min … p50 … p99 … max` of sorted durations.
pub(crate) fn percentiles(sorted: &[Duration]) -> String {
    let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
    format!(
        "min {:?}  p50 {:?}  p90 {:?}  p99 {:?}  max {:?}",
        sorted[0],
        at(0.5),
        at(0.9),
        at(0.99),
        sorted[sorted.len() - 1]
    )
}

pub(crate) async fn run(
    client: Client,
    method: &'static MethodDescriptor,
    args: Value,
    calls: u64,
    in_flight: u64,
    options: CallOptions,
) -> Result<(), Failure> {
    let bar = ProgressBar::new(calls);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} calls  {per_sec}  eta {eta}").expect("a valid template"),
    );
    let next = Arc::new(AtomicU64::new(0));
    let args = Arc::new(args);
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..in_flight.min(calls) {
        let (client, next, args, bar, options) =
            (client.clone(), Arc::clone(&next), Arc::clone(&args), bar.clone(), options.clone());
        workers.spawn(async move {
            let mut times = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < calls {
                let start = Instant::now();
                client.call_encoded(method, &*args, None, &options).await?;
                times.push(start.elapsed());
                bar.inc(1);
            }
            Ok::<_, rpc::RpcError>(times)
        });
    }
    let mut times = Vec::with_capacity(calls as usize);
    while let Some(done) = workers.join_next().await {
        match done {
            Ok(Ok(part)) => times.extend(part),
            Ok(Err(e)) => {
                bar.abandon();
                return Err(Failure::Rpc(e));
            }
            Err(e) => return Err(Failure::Usage(format!("a bench task failed: {e}"))),
        }
    }
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    times.sort();
    println!(
        "{} calls of {} in {:.3?} with {in_flight} in flight: {:.0} calls/s",
        times.len(),
        method.name,
        elapsed,
        times.len() as f64 / elapsed.as_secs_f64()
    );
    println!("{}", percentiles(&times));
    Ok(())
}
