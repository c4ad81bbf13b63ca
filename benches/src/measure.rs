//! The timed loops for a framework client (ours or tarpc, through [`Probe`]), and the counts
//! that decide how long they run.
//!
//! Latency is timed per call with [`Instant`] into a preallocated `Vec`; throughput is timed once
//! per run (calls are counted by each in-flight task in a local integer). Nothing in a timed loop
//! allocates or logs, apart from what the framework under test does itself.

use std::future::Future;
use std::time::{Duration, Instant};

use serde_bytes::ByteBuf;

use crate::service::{BoxError, Probe};

/// How much each run does.
#[derive(Clone, Debug)]
pub struct Config {
    /// Untimed round trips before the latency loop (connection set-up, caches, branch predictors).
    pub warmup: usize,
    /// Timed round trips for median and p99.
    pub latency_calls: usize,
    /// How long each pipelined run lasts.
    pub pipelined_for: Duration,
    /// Size of the bulk echo.
    pub bulk_size: usize,
    /// Timed bulk echoes.
    pub bulk_calls: usize,
}

impl Config {
    /// The measuring mode.
    pub fn full() -> Self {
        Self {
            warmup: 1_000,
            latency_calls: 10_000,
            pipelined_for: Duration::from_secs(1),
            bulk_size: 1 << 20,
            bulk_calls: 100,
        }
    }

    /// `--quick`: every path once with tiny counts, for CI (debug builds included).
    pub fn quick() -> Self {
        Self {
            warmup: 10,
            latency_calls: 50,
            pipelined_for: Duration::from_millis(20),
            bulk_size: 1 << 20,
            bulk_calls: 2,
        }
    }
}

/// Median and p99 of one latency run, in µs.
#[derive(Clone, Copy, Debug)]
pub struct LatencyStats {
    /// The median round trip.
    pub median_us: f64,
    /// The 99th percentile round trip.
    pub p99_us: f64,
}

impl LatencyStats {
    /// Sorts `samples` and picks the median and p99.
    pub fn from_samples(samples: &mut [Duration]) -> Self {
        assert!(!samples.is_empty(), "no latency samples");
        samples.sort_unstable();
        let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e6;
        Self { median_us: at(0.5), p99_us: at(0.99) }
    }
}

/// Payload megabytes (10^6 bytes) per second, each echoed message counted once.
pub fn mb_per_s(size: usize, calls: usize, elapsed: Duration) -> f64 {
    (size * calls) as f64 / elapsed.as_secs_f64() / 1e6
}

/// Everything measured for one framework over one transport in one repetition.
#[derive(Clone, Debug)]
pub struct FrameworkResult {
    /// `add` one call at a time.
    pub latency: LatencyStats,
    /// Calls/s with 1, 64 and 1000 calls in flight on one connection.
    pub pipelined: [f64; 3],
    /// Calls/s with [`CONNECTIONS`] connections × 64 in flight.
    pub multi_conn: f64,
    /// 1 MiB echoes one at a time, MB/s of payload.
    pub bulk_mb_s: f64,
}

/// In-flight depths of the single-connection pipelined runs.
pub const IN_FLIGHT: [usize; 3] = [1, 64, 1000];
/// Client connections of the multi-connection run.
pub const CONNECTIONS: usize = 4;
/// In-flight calls per connection in the multi-connection run.
pub const PER_CONNECTION: usize = 64;

/// Runs every measurement against a server, opening connections with `connect`.
/// Must run inside a [`tokio::task::LocalSet`]: the pipelined tasks are spawned locally, so the
/// client side is a single thread for both frameworks.
pub async fn run<C, F, Fut>(connect: F, config: &Config) -> Result<FrameworkResult, BoxError>
where
    C: Probe,
    F: Fn() -> Fut,
    Fut: Future<Output = Result<C, BoxError>>,
{
    let client = connect().await?;
    let latency = latency(&client, config).await?;
    let mut pipelined = [0.0; 3];
    for (slot, &depth) in pipelined.iter_mut().zip(&IN_FLIGHT) {
        *slot = throughput(std::slice::from_ref(&client), depth, config.pipelined_for).await?;
    }
    let mut clients = vec![client.clone()];
    for _ in 1..CONNECTIONS {
        clients.push(connect().await?);
    }
    let multi_conn = throughput(&clients, PER_CONNECTION, config.pipelined_for).await?;
    drop(clients);
    let bulk_mb_s = bulk(&client, config).await?;
    Ok(FrameworkResult { latency, pipelined, multi_conn, bulk_mb_s })
}

async fn latency<C: Probe>(client: &C, config: &Config) -> Result<LatencyStats, BoxError> {
    for i in 0..config.warmup as i64 {
        client.add(i, 1).await?;
    }
    let mut samples = Vec::with_capacity(config.latency_calls);
    for i in 0..config.latency_calls as i64 {
        let start = Instant::now();
        let sum = client.add(i, 1).await?;
        samples.push(start.elapsed());
        if sum != i + 1 {
            return Err(format!("add({i}, 1) returned {sum}").into());
        }
    }
    Ok(LatencyStats::from_samples(&mut samples))
}

/// Calls/s with `depth` tasks per client, each calling `add` back to back until `duration` is up.
/// Each task makes at least one call, so a slow (debug) build still exercises every path.
async fn throughput<C: Probe>(clients: &[C], depth: usize, duration: Duration) -> Result<f64, BoxError> {
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::with_capacity(clients.len() * depth);
    for client in clients {
        for w in 0..depth as i64 {
            let client = client.clone();
            tasks.push(tokio::task::spawn_local(async move {
                let mut calls = 0u64;
                loop {
                    let sum = client.add(w, 1).await.map_err(|e| e.to_string())?;
                    if sum != w + 1 {
                        return Err(format!("add({w}, 1) returned {sum}"));
                    }
                    calls += 1;
                    if Instant::now() >= deadline {
                        return Ok(calls);
                    }
                }
            }));
        }
    }
    let mut total = 0;
    for task in tasks {
        total += task.await??;
    }
    Ok(total as f64 / start.elapsed().as_secs_f64())
}

async fn bulk<C: Probe>(client: &C, config: &Config) -> Result<f64, BoxError> {
    let mut data = ByteBuf::from(vec![0x5au8; config.bulk_size]);
    // Warm-up echo; afterwards each answer is sent again, so the loop allocates only what the
    // frameworks allocate themselves.
    data = client.echo(data).await?;
    let start = Instant::now();
    for _ in 0..config.bulk_calls {
        data = client.echo(data).await?;
    }
    let elapsed = start.elapsed();
    if data.len() != config.bulk_size || data.iter().any(|&b| b != 0x5a) {
        return Err("echo returned different bytes".into());
    }
    Ok(mb_per_s(config.bulk_size, config.bulk_calls, elapsed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_p99() {
        let mut samples: Vec<Duration> = (1..=100).rev().map(Duration::from_micros).collect();
        let stats = LatencyStats::from_samples(&mut samples);
        assert_eq!(stats.median_us.round(), 51.0);
        assert_eq!(stats.p99_us.round(), 99.0);
    }
}
