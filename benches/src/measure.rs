//! The timed loops for a framework client (ours or tarpc, through [`Probe`]), and the counts
//! that decide how long they run.
//!
//! Latency is timed per call with [`Instant`] into a preallocated `Vec`; throughput is timed once
//! per run (calls are counted by each in-flight task in a local integer). Nothing in a timed loop
//! allocates or logs, apart from what the framework under test does itself.
//!
//! Streams (frameworks that have them, see [`Probe::small_items`]) are endless server streams
//! read for [`Config::stream_for`] and then dropped, which cancels them; the first item is read
//! before the clock starts, so the call's set-up round trip is not counted as streaming.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use crate::service::{BoxError, Items, Probe};

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
    /// How long each server stream is read.
    pub stream_for: Duration,
    /// Size of a streamed chunk (and of the raw one-way messages).
    pub chunk_size: usize,
    /// Timed one-way messages of `chunk_size` over the raw primitive.
    pub raw_chunks: usize,
    /// Timed `add` calls beside a saturating stream of chunks.
    pub beside_calls: usize,
    /// Untimed echoes before each payload size of the sweep ([`SWEEP_SIZES`]).
    pub sweep_warmup: [usize; SWEEP_SIZES.len()],
    /// Timed echoes at each payload size of the sweep: fewer at the large sizes, so each size
    /// costs about the same time.
    pub sweep_calls: [usize; SWEEP_SIZES.len()],
    /// The largest payload of the sweep (smaller than the largest of [`SWEEP_SIZES`] skips the
    /// sizes above it, for every side).
    pub sweep_max: usize,
    /// Timed copies of [`MEMCPY_SIZE`] bytes for the machine's memcpy rate.
    pub memcpy_copies: usize,
    /// Round trips of the cross-CPU probe ([`cross_cpu_round_trip_ns`]).
    pub probe_round_trips: usize,
}

impl Config {
    /// The sweep's sizes this configuration runs, with their index in [`SWEEP_SIZES`].
    pub fn sweep_sizes(&self) -> impl Iterator<Item = (usize, &usize)> + '_ {
        SWEEP_SIZES.iter().enumerate().filter(|&(_, &size)| size <= self.sweep_max)
    }
}

/// The payload sizes of the echo sweep, in bytes: 64 B, 4 KiB, 64 KiB, 1 MiB, 16 MiB.
pub const SWEEP_SIZES: [usize; 5] = [64, 4 << 10, 64 << 10, 1 << 20, 16 << 20];

/// The buffer size of the memcpy measurement (larger than the caches, like the bulk echoes).
pub const MEMCPY_SIZE: usize = 16 << 20;

impl Config {
    /// The measuring mode.
    pub fn full() -> Self {
        Self {
            warmup: 1_000,
            latency_calls: 10_000,
            pipelined_for: Duration::from_secs(1),
            bulk_size: 1 << 20,
            bulk_calls: 100,
            stream_for: Duration::from_secs(1),
            chunk_size: 64 << 10,
            raw_chunks: 2048,
            beside_calls: 2_000,
            sweep_warmup: [200, 200, 50, 5, 1],
            sweep_calls: [2_000, 2_000, 500, 100, 8],
            sweep_max: usize::MAX,
            memcpy_copies: 20,
            probe_round_trips: 20_000,
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
            stream_for: Duration::from_millis(20),
            chunk_size: 64 << 10,
            raw_chunks: 4,
            beside_calls: 10,
            // Up to 1 MiB: one 16 MiB echo per side would add about a second to --quick (half
            // of what it took before the sweep), and a 16 MiB frame is the conformance tests' job.
            sweep_warmup: [1, 1, 0, 0, 0],
            sweep_calls: [5, 5, 2, 1, 1],
            sweep_max: 1 << 20,
            memcpy_copies: 3,
            probe_round_trips: 1_000,
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
    /// 1 MiB results one at a time, MB/s of payload, if the framework has loans: `[made
    /// afresh for each call in a heap buffer, the same filled in a loan, made once in a heap
    /// buffer and sent again, made once in a loan and sent again]`.
    pub made_mb_s: Option<[f64; 4]>,
    /// The streaming figures, if the framework has streams.
    pub streams: Option<StreamResult>,
}

/// What the streaming runs measured over one connection.
#[derive(Clone, Copy, Debug)]
pub struct StreamResult {
    /// One server stream of 16-byte items, items/s received.
    pub small_items_s: f64,
    /// One server stream of [`Config::chunk_size`] chunks, MB/s of payload received.
    pub chunks_mb_s: f64,
    /// `add` round trips on the connection while a stream of chunks saturates it.
    pub beside: LatencyStats,
    /// What that stream moved meanwhile, MB/s: evidence that it did saturate the connection.
    pub beside_stream_mb_s: f64,
}

/// One payload size of the echo sweep.
#[derive(Clone, Copy, Debug)]
pub struct SweepPoint {
    /// Payload bytes of each echo (request and answer alike).
    pub size: usize,
    /// Timed echoes.
    pub calls: usize,
    /// Their round trips.
    pub latency: LatencyStats,
    /// MB/s of payload over the timed echoes, each echoed message counted once.
    pub mb_s: f64,
}

impl SweepPoint {
    /// The figures of `samples`, the round trips of consecutive echoes of `size` bytes.
    pub fn from_samples(size: usize, samples: &mut [Duration]) -> Self {
        let total: Duration = samples.iter().sum();
        let calls = samples.len();
        Self { size, calls, latency: LatencyStats::from_samples(samples), mb_s: mb_per_s(size, calls, total) }
    }
}

/// The payload sweep over `client`: for each of [`SWEEP_SIZES`] (up to [`Config::sweep_max`]),
/// warm-up echoes, then timed ones, each answer sent again (the loop allocates only what the
/// framework does).
pub async fn sweep<C: Probe>(client: &C, config: &Config) -> Result<Vec<SweepPoint>, BoxError> {
    let mut points = Vec::with_capacity(SWEEP_SIZES.len());
    for (i, &size) in config.sweep_sizes() {
        let expected = vec![0x5au8; size];
        let mut data = C::Payload::from(expected.clone());
        for _ in 0..config.sweep_warmup[i] {
            data = client.echo(data).await?;
        }
        let mut samples = Vec::with_capacity(config.sweep_calls[i]);
        for _ in 0..config.sweep_calls[i] {
            let start = Instant::now();
            data = client.echo(data).await?;
            samples.push(start.elapsed());
        }
        if data.as_ref() != expected.as_slice() {
            return Err(format!("the {size}-byte echo returned different bytes").into());
        }
        points.push(SweepPoint::from_samples(size, &mut samples));
    }
    Ok(points)
}

/// This machine's memcpy rate, MB/s: the median of `copies` copies of [`MEMCPY_SIZE`] bytes
/// between two buffers faulted in beforehand.
pub fn memcpy_mb_s(copies: usize) -> f64 {
    let src = vec![0x5au8; MEMCPY_SIZE];
    let mut dst = vec![0u8; MEMCPY_SIZE];
    dst.copy_from_slice(&src);
    let mut rates: Vec<f64> = (0..copies.max(1))
        .map(|_| {
            let start = Instant::now();
            dst.copy_from_slice(std::hint::black_box(&src));
            std::hint::black_box(&mut dst);
            mb_per_s(MEMCPY_SIZE, 1, start.elapsed())
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    rates[rates.len() / 2]
}

/// Round trips the cross-CPU probe times in batches of this many (one clock read a batch).
pub const PROBE_BATCH: usize = 100;

/// How long one cache line takes to go from this thread's CPU to `cpu` and back, ns: a thread
/// pinned to `cpu` (unpinned if `None`) and this one take turns bumping a shared counter,
/// spinning (after 256 spins a waiter yields its CPU between checks, so a pair on one CPU
/// still progresses), for `round_trips` round trips timed in batches; the median batch.
///
/// Every cross-CPU figure of a run rides on this: on the 2-vCPU VMs of 2026-12 it read 78–86 ns
/// in a full run whose raw shm ping-pong took 0.18–0.21 µs, 61–76 ns on a faster day (raw
/// ping-pong 0.15 µs), and 421 ns in one where that ping-pong took 0.76.
pub fn cross_cpu_round_trip_ns(cpu: Option<usize>, round_trips: usize) -> f64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    #[repr(align(128))]
    struct Line(AtomicU64);
    fn wait_for(line: &Line, value: u64) {
        let mut spins = 0u32;
        while line.0.load(Ordering::Acquire) != value {
            spins += 1;
            if spins < 256 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }
    let batches = (round_trips / PROBE_BATCH).max(1);
    let line = std::sync::Arc::new(Line(AtomicU64::new(0)));
    let peer = std::sync::Arc::clone(&line);
    let helper = std::thread::spawn(move || {
        if let Some(cpu) = cpu {
            // Unpinned if it cannot be (the figure is then labelled by the run's pinning).
            let _ = crate::pin::pin_to(cpu);
        }
        for i in 0..(batches * PROBE_BATCH) as u64 {
            wait_for(&peer, 2 * i + 1);
            peer.0.store(2 * i + 2, Ordering::Release);
        }
    });
    let mut times: Vec<f64> = (0..batches as u64)
        .map(|batch| {
            let start = Instant::now();
            for i in batch * PROBE_BATCH as u64..(batch + 1) * PROBE_BATCH as u64 {
                line.0.store(2 * i + 1, Ordering::Release);
                wait_for(&line, 2 * i + 2);
            }
            start.elapsed().as_secs_f64() * 1e9 / PROBE_BATCH as f64
        })
        .collect();
    helper.join().expect("the probe's helper thread does not panic");
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// In-flight depths of the single-connection pipelined runs.
pub const IN_FLIGHT: [usize; 3] = [1, 64, 1000];
/// Client connections of the multi-connection run.
pub const CONNECTIONS: usize = 4;
/// In-flight calls per connection in the multi-connection run.
pub const PER_CONNECTION: usize = 64;

/// Spawns a task of a measurement: on a current-thread runtime into the `LocalSet` the
/// measurement runs in (as the bench did before it had `--multi-thread`, so its figures stay
/// comparable), on a multi-thread one onto the runtime's workers.
pub fn spawn<F>(future: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    match tokio::runtime::Handle::current().runtime_flavor() {
        tokio::runtime::RuntimeFlavor::CurrentThread => tokio::task::spawn_local(future),
        _ => tokio::spawn(future),
    }
}

/// Runs every measurement against a server, opening connections with `connect`.
/// Runs in a `LocalSet` on a current-thread runtime ([`spawn`]): the client side is then one
/// thread for both frameworks.
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
    let streams = streams(&client, config).await?;
    // Last, so that the figures measured before these existed run as they did.
    let mut made_mb_s = Some([0.0; 4]);
    for (i, how) in [(false, false), (true, false), (false, true), (true, true)].into_iter().enumerate() {
        match (made(&client, config, how).await?, made_mb_s.as_mut()) {
            (Some(mb_s), Some(all)) => all[i] = mb_s,
            _ => made_mb_s = None,
        }
    }
    Ok(FrameworkResult { latency, pipelined, multi_conn, bulk_mb_s, made_mb_s, streams })
}

/// The streaming runs, or `None` if the client has no streams.
async fn streams<C: Probe>(client: &C, config: &Config) -> Result<Option<StreamResult>, BoxError> {
    let Some(items) = client.small_items().await? else { return Ok(None) };
    // Reading the clock every item would cost a tenth of a 200 ns item.
    let (count, _, elapsed) = read_for(items, config.stream_for, 256).await?;
    let small_items_s = count as f64 / elapsed.as_secs_f64();
    let chunks = client.chunks(config.chunk_size).await?.ok_or("small items but no chunks")?;
    let (_, bytes, elapsed) = read_for(chunks, config.stream_for, 1).await?;
    let chunks_mb_s = bytes as f64 / elapsed.as_secs_f64() / 1e6;
    let (beside, beside_stream_mb_s) = beside_stream(client, config).await?;
    Ok(Some(StreamResult { small_items_s, chunks_mb_s, beside, beside_stream_mb_s }))
}

/// Reads `items` for `duration` (looking at the clock every `check_every` items), then drops it:
/// `(items, payload bytes, elapsed)`.
async fn read_for(mut items: Items, duration: Duration, check_every: u64) -> Result<(u64, u64, Duration), BoxError> {
    items.next().await.ok_or("the stream ended at once")??;
    let start = Instant::now();
    let (mut count, mut bytes) = (0u64, 0u64);
    loop {
        for _ in 0..check_every {
            bytes += items.next().await.ok_or("the endless stream ended")?? as u64;
        }
        count += check_every;
        if start.elapsed() >= duration {
            return Ok((count, bytes, start.elapsed()));
        }
    }
}

/// `add` round trips while a task drains an endless stream of chunks on the same connection:
/// the latency stats, and the stream's MB/s over the timed calls.
async fn beside_stream<C: Probe>(client: &C, config: &Config) -> Result<(LatencyStats, f64), BoxError> {
    let mut chunks = client.chunks(config.chunk_size).await?.ok_or("small items but no chunks")?;
    let received = Arc::new(AtomicU64::new(0));
    let drain = spawn({
        let received = Arc::clone(&received);
        async move {
            while let Some(chunk) = chunks.next().await {
                received.fetch_add(chunk.map_err(|e| e.to_string())? as u64, Ordering::Relaxed);
            }
            Err::<(), _>("the endless stream ended".to_owned())
        }
    });
    // Let the stream fill its window and the connection before timing anything.
    while received.load(Ordering::Relaxed) < 4 * config.chunk_size as u64 && !drain.is_finished() {
        tokio::task::yield_now().await;
    }
    for i in 0..(config.warmup / 10) as i64 {
        client.add(i, 1).await?;
    }
    let mut samples = Vec::with_capacity(config.beside_calls);
    let (start, before) = (Instant::now(), received.load(Ordering::Relaxed));
    for i in 0..config.beside_calls as i64 {
        let started = Instant::now();
        let sum = client.add(i, 1).await?;
        samples.push(started.elapsed());
        if sum != i + 1 {
            return Err(format!("add({i}, 1) beside a stream returned {sum}").into());
        }
    }
    let stream_mb_s = (received.load(Ordering::Relaxed) - before) as f64 / start.elapsed().as_secs_f64() / 1e6;
    if drain.is_finished() {
        drain.await??;
    } else {
        drain.abort();
    }
    Ok((LatencyStats::from_samples(&mut samples), stream_mb_s))
}

/// The add round trip of the generated blocking client, from the calling (plain) thread.
pub fn blocking_latency(addr: &str, config: &Config) -> Result<LatencyStats, BoxError> {
    let client = crate::service::BenchBlockingClient::connect(addr)?;
    for i in 0..config.warmup as i64 {
        client.add(i, 1)?;
    }
    let mut samples = Vec::with_capacity(config.latency_calls);
    for i in 0..config.latency_calls as i64 {
        let start = Instant::now();
        let sum = client.add(i, 1)?;
        samples.push(start.elapsed());
        if sum != i + 1 {
            return Err(format!("add({i}, 1) returned {sum}").into());
        }
    }
    Ok(LatencyStats::from_samples(&mut samples))
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
            tasks.push(spawn(async move {
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
    let mut data = C::Payload::from(vec![0x5au8; config.bulk_size]);
    // Warm-up echo; afterwards each answer is sent again, so the loop allocates only what the
    // frameworks allocate themselves.
    data = client.echo(data).await?;
    let start = Instant::now();
    for _ in 0..config.bulk_calls {
        data = client.echo(data).await?;
    }
    let elapsed = start.elapsed();
    if data.as_ref().len() != config.bulk_size || data.as_ref().iter().any(|&b| b != 0x5a) {
        return Err("echo returned different bytes".into());
    }
    Ok(mb_per_s(config.bulk_size, config.bulk_calls, elapsed))
}

/// [`Config::bulk_size`] results made by the server one at a time as `how` (`(lend, keep)`,
/// see `Bench::make`) says, MB/s of payload; `None` if the framework has no loans.
async fn made<C: Probe>(client: &C, config: &Config, how: (bool, bool)) -> Result<Option<f64>, BoxError> {
    let len = config.bulk_size;
    // Warm-up call, as the echo's, and the one whose bytes are checked (as the echo checks only
    // its last answer).
    if client.make(len, how, true).await?.is_none() {
        return Ok(None);
    }
    let start = Instant::now();
    for _ in 0..config.bulk_calls {
        if client.make(len, how, false).await? != Some(len) {
            return Err(format!("a made result was not {len} bytes").into());
        }
    }
    Ok(Some(mb_per_s(len, config.bulk_calls, start.elapsed())))
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

    #[test]
    fn sweep_point_rate_counts_each_echo_once() {
        let mut samples = vec![Duration::from_millis(1); 4];
        let point = SweepPoint::from_samples(1_000_000, &mut samples);
        assert_eq!((point.size, point.calls), (1_000_000, 4));
        assert!((point.mb_s - 1000.0).abs() < 1e-6, "{}", point.mb_s);
        assert!(memcpy_mb_s(1) > 0.0);
        // Unpinned, and on whichever CPU the helper lands (one CPU included): it ends.
        assert!(cross_cpu_round_trip_ns(None, 300) > 0.0);
    }
}
