//! The command line, the server mode, and the loop over repetitions × transports × sides.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use crate::endpoint::Endpoint;
use crate::frameworks::{self, OURS_ENCODING, TARPC_ENCODING, TARPC_ON_OURS_ENCODING};
use crate::measure::{self, Config, FrameworkResult, SweepPoint, MEMCPY_SIZE, SWEEP_SIZES};
use crate::report::{fmt_size, Metric, Results, Side};
use crate::service::BoxError;
use crate::{pin, raw, transports};

const USAGE: &str =
    "usage: rpc-bench [--quick] [--reps N] [--pin | --pin-same] [--multi-thread] [--only tcp,unix,...] [--json PATH] [--svg PATH] [--sweep-svg PATH]
       rpc-bench --alternate BEFORE_BINARY [--pairs N] [--out DIR] [run options]
       rpc-bench --compare BEFORE.json... -- AFTER.json...";

/// The flag that gives every process of a run (client, servers, spawned children) a multi-thread
/// tokio runtime, `#[tokio::main]`'s default, instead of a current-thread one.
const MULTI_THREAD: &str = "--multi-thread";

struct Args {
    quick: bool,
    reps: Option<usize>,
    pin: bool,
    pin_same: bool,
    multi_thread: bool,
    only: Option<Vec<String>>,
    json: PathBuf,
    svg: PathBuf,
    sweep_svg: PathBuf,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, BoxError> {
    let mut parsed = Args {
        quick: false,
        reps: None,
        pin: false,
        pin_same: false,
        multi_thread: false,
        only: None,
        json: "target/bench/results.json".into(),
        svg: "target/bench/latency.svg".into(),
        sweep_svg: "target/bench/sweep.svg".into(),
    };
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value\n{USAGE}"));
        match arg.as_str() {
            "--quick" => parsed.quick = true,
            "--pin" => parsed.pin = true,
            "--pin-same" => parsed.pin_same = true,
            MULTI_THREAD => parsed.multi_thread = true,
            "--reps" => parsed.reps = Some(value()?.parse().map_err(|e| format!("--reps: {e}"))?),
            "--only" => parsed.only = Some(value()?.split(',').map(str::to_owned).collect()),
            "--json" => parsed.json = value()?.into(),
            "--svg" => parsed.svg = value()?.into(),
            "--sweep-svg" => parsed.sweep_svg = value()?.into(),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ => return Err(format!("unknown argument {arg:?}\n{USAGE}").into()),
        }
    }
    if parsed.pin && parsed.pin_same {
        return Err("--pin and --pin-same exclude each other".into());
    }
    if parsed.reps == Some(0) {
        return Err("--reps must be at least 1".into());
    }
    Ok(parsed)
}

/// Entry point of both modes.
pub fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--serve") => return serve(&args[1..]),
        Some(mode @ ("--serve-stdio" | "--serve-stdio-raw")) => return serve_stdio(mode, &args[1..]),
        Some("--compare") => return crate::compare::run(&args[1..]),
        Some("--alternate") => return crate::compare::alternate(&args[1..]),
        _ => {}
    }
    client(parse_args(args.into_iter())?)
}

/// The tokio runtime of every process of a run (see [`MULTI_THREAD`]).
fn runtime(multi_thread: bool) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = if multi_thread {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    builder.enable_all().build()
}

/// Runs a measurement on `runtime` and waits for it. A current-thread runtime runs it in a
/// `LocalSet` on this thread ([`measure::spawn`] keeps its tasks there). A multi-thread one runs
/// it as a task, on a worker, as an async program's code runs, not on the thread that waits
/// (every wake-up of which would be a cross-thread one).
fn run_on<T: Send + 'static>(
    runtime: &tokio::runtime::Runtime,
    future: impl std::future::Future<Output = Result<T, BoxError>> + Send + 'static,
) -> Result<T, BoxError> {
    match runtime.handle().runtime_flavor() {
        tokio::runtime::RuntimeFlavor::CurrentThread => {
            runtime.block_on(tokio::task::LocalSet::new().run_until(future))
        }
        _ => runtime.block_on(runtime.spawn(future))?,
    }
}

/// Takes [`MULTI_THREAD`] out of a child's arguments: whether it was there.
fn take_multi_thread(args: &[String]) -> (Vec<String>, bool) {
    let rest: Vec<String> = args.iter().filter(|a| *a != MULTI_THREAD).cloned().collect();
    let multi_thread = rest.len() != args.len();
    (rest, multi_thread)
}

/// `--serve KIND TARGET [--cpu N] [--multi-thread]`: runs one server until stdin closes.
fn serve(args: &[String]) -> Result<(), BoxError> {
    let (args, multi_thread) = take_multi_thread(args);
    let (kind, target, cpu) = match &args[..] {
        [kind, target] => (kind, target, None),
        [kind, target, flag, cpu] if flag == "--cpu" => (kind, target, Some(cpu.parse::<usize>()?)),
        _ => {
            return Err("usage: rpc-bench --serve ours|raw|tarpc|tarpc-on-ours TARGET [--cpu N] [--multi-thread]".into())
        }
    };
    if let Some(cpu) = cpu {
        pin::pin_to(cpu)?;
    }
    // The parent holds our stdin; EOF means it is done with us (or died).
    std::thread::spawn(|| {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        std::process::exit(0);
    });
    match kind.as_str() {
        "raw" => Ok(raw::serve(&Endpoint::parse(target)?)?),
        "ours" | "tarpc" | "tarpc-on-ours" => {
            let runtime = runtime(multi_thread)?;
            match kind.as_str() {
                "ours" => runtime.block_on(frameworks::serve_ours(target)),
                "tarpc" => runtime.block_on(frameworks::serve_tarpc(&Endpoint::parse(target)?)),
                _ => runtime.block_on(frameworks::serve_tarpc_on_ours(target)),
            }
        }
        _ => Err(format!("unknown server kind {kind:?}").into()),
    }
}

/// `--serve-stdio [--cpu N] [--multi-thread]` (ours) or `--serve-stdio-raw [--cpu N]` (raw):
/// the child of a `spawn` row's client, serving over stdin and stdout until stdin reaches EOF.
/// Nothing else may be written to stdout.
fn serve_stdio(mode: &str, args: &[String]) -> Result<(), BoxError> {
    let (args, multi_thread) = take_multi_thread(args);
    match &args[..] {
        [] => {}
        [flag, cpu] if flag == "--cpu" => pin::pin_to(cpu.parse()?)?,
        _ => return Err(format!("usage: rpc-bench {mode} [--cpu N] [--multi-thread]").into()),
    }
    if mode == "--serve-stdio-raw" {
        return Ok(raw::serve_stdio()?);
    }
    runtime(multi_thread)?.block_on(frameworks::serve_ours_stdio())
}

/// How every server of a run is started.
#[derive(Clone, Copy)]
struct Sides {
    /// The CPU servers are pinned to.
    server_cpu: Option<usize>,
    /// [`MULTI_THREAD`].
    multi_thread: bool,
}

impl Sides {
    /// The arguments a server child gets after its mode and target: its CPU, and its runtime
    /// unless it has none (`with_runtime` false: a raw server).
    fn args(&self, with_runtime: bool) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(cpu) = self.server_cpu {
            args.extend(["--cpu".to_owned(), cpu.to_string()]);
        }
        if self.multi_thread && with_runtime {
            args.push(MULTI_THREAD.to_owned());
        }
        args
    }
}

/// A server child process, stopped (and what it leaves behind removed) on [`stop`](Self::stop)
/// or drop.
struct ServerProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    addr: String,
    files: Vec<PathBuf>,
    /// Message queues to unlink once the server is gone (names with their leading `/`).
    queues: Vec<String>,
    /// What the registry made for the server's address, removed once the server is gone (a
    /// field, so it drops after [`Drop::drop`] has stopped the server).
    made: RegistryMade,
}

impl ServerProcess {
    fn start(kind: &str, target: &str, sides: Sides, files: Vec<PathBuf>) -> Result<Self, BoxError> {
        let mut command = Command::new(std::env::current_exe()?);
        command
            .args(["--serve", kind, target])
            .args(sides.args(kind != "raw"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        let mut child = command.spawn()?;
        let stdin = child.stdin.take();
        let mut line = String::new();
        BufReader::new(child.stdout.take().ok_or("no stdout")?).read_line(&mut line)?;
        let mut server =
            Self { child, stdin, addr: String::new(), files, queues: Vec::new(), made: RegistryMade(None) };
        match line.trim().strip_prefix("listening ") {
            Some(addr) => server.addr = addr.to_owned(),
            None => return Err(format!("{kind} server on {target} did not start: {line:?}").into()),
        }
        Ok(server)
    }

    /// Also unlinks these message queues when the server is gone.
    fn with_queues(mut self, queues: Vec<String>) -> Self {
        self.queues = queues;
        self
    }

    /// Also has the registry remove what it made for the address when the server is gone.
    /// Made before the server starts, so that it is removed even if the start fails.
    fn removing(mut self, made: RegistryMade) -> Self {
        self.made = made;
        self
    }

    fn stop(mut self) -> Result<(), BoxError> {
        drop(self.stdin.take());
        let status = self.child.wait()?;
        if !status.success() {
            return Err(format!("server {} exited with {status}", self.addr).into());
        }
        Ok(())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            drop(self.stdin.take());
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        for file in &self.files {
            let _ = std::fs::remove_file(file);
        }
        for queue in &self.queues {
            raw::unlink_queue(queue);
        }
    }
}

/// A name no other server of this run, or of a concurrent run, uses.
fn unique_name() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!("rpc-bench-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name").map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned()))
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    format!("{cpus} CPUs available, {model}, {} {}", std::env::consts::OS, std::env::consts::ARCH)
}

fn client(args: Args) -> Result<(), BoxError> {
    let started = Instant::now();
    let config = if args.quick { Config::quick() } else { Config::full() };
    let reps = args.reps.unwrap_or(if args.quick { 1 } else { 3 });
    let mut selected = transports();
    if let Some(only) = &args.only {
        if let Some(bad) = only.iter().find(|n| !selected.iter().any(|t| t.name == n.as_str())) {
            let known: Vec<_> = selected.iter().map(|t| t.name).collect();
            return Err(format!("--only: unknown transport {bad:?} (known: {})", known.join(", ")).into());
        }
        selected.retain(|t| only.iter().any(|n| n == t.name));
    }

    // Before pinning, which narrows what this process may use.
    let machine = machine();
    // Pin before the runtime exists, so its thread inherits the client CPU.
    // The servers' CPU, and where the cross-CPU probe's helper runs if that is not the client's.
    let mut probe_cpu = None;
    let (pinning, server_cpu) = if args.pin || args.pin_same {
        let cpus = pin::allowed_cpus();
        let server = if args.pin_same { cpus.first() } else { cpus.get(1) };
        match (cpus.first(), server) {
            (Some(&client), Some(&server)) => {
                pin::pin_to(client)?;
                if server != client {
                    probe_cpu = Some(server);
                }
                let mut pinning = format!("client on CPU {client}, servers on CPU {server}");
                if selected.iter().any(|t| t.spawned) {
                    pinning += &format!(" (spawn: each child started with --cpu {server})");
                }
                (pinning, Some(server))
            }
            _ => (format!("requested but not possible ({} CPU(s) allowed); not pinned", cpus.len()), None),
        }
    } else {
        (
            "none: the scheduler places client and server, so runs mix same-CPU and cross-CPU round trips \
             and ratios between sides measured minutes apart can be meaningless; use --pin (different CPUs) \
             or --pin-same (one CPU); spawn's children inherit the client's (unpinned) affinity"
                .to_owned(),
            None,
        )
    };

    let mut results = Results::new(selected.iter().map(|t| t.name).collect(), reps, args.quick, pinning, machine);
    results.notes.push(("ours".into(), OURS_ENCODING.into()));
    results.notes.push(("tarpc".into(), TARPC_ENCODING.into()));
    if selected.iter().any(|t| t.tarpc_on_ours) {
        results.notes.push(("tarpc-on-ours".into(), TARPC_ON_OURS_ENCODING.into()));
    }
    for t in &selected {
        results.notes.push((format!("raw {}", t.name), format!("{}, blocking 16-byte ping-pong", t.raw.1)));
        if let Some((_, ring)) = t.ring {
            results.notes.push((format!("ring {}", t.name), format!("{ring}, blocking 16-byte ping-pong")));
        }
    }
    results.notes.push((
        "counts".into(),
        format!(
            "{} warm-up + {} timed round trips; pipelined runs {} ms each; {} × {} KiB echoes; both frameworks on {} tokio runtimes",
            config.warmup,
            config.latency_calls,
            config.pipelined_for.as_millis(),
            config.bulk_calls,
            config.bulk_size >> 10,
            if args.multi_thread {
                "multi-thread (--multi-thread: a worker per CPU, every process; the client's measurements run as tasks on its workers)"
            } else {
                "current-thread"
            }
        ),
    ));
    results.notes.push((
        "streams".into(),
        format!(
            "ours only (tarpc has no streams): one endless server stream per figure on the benchmark connection, read for {} ms after its first item, then dropped; \
             {} add calls timed while a spawned task drains an endless stream of {} KiB chunks on the same connection; \
             raw one-way: {} × {} KiB messages written back to back by the raw server, read by the client",
            config.stream_for.as_millis(),
            config.beside_calls,
            config.chunk_size >> 10,
            config.raw_chunks,
            config.chunk_size >> 10
        ),
    ));
    let sweep_counts: Vec<String> = config
        .sweep_sizes()
        .map(|(i, &size)| format!("{} {}+{}", fmt_size(size), config.sweep_warmup[i], config.sweep_calls[i]))
        .collect();
    results.notes.push((
        "sweep".into(),
        format!(
            "echo(rpc::Bytes) for ours, the raw echo for raw and ring; ours on one connection, raw and ring on one per size; \
             warm-up + timed echoes per size: {}{}; every frame fits the default max_frame_len (32 MiB), so no limit is raised",
            sweep_counts.join(", "),
            if config.sweep_max < SWEEP_SIZES[SWEEP_SIZES.len() - 1] { " (--quick stops at 1 MiB)" } else { "" }
        ),
    ));
    results.notes.push((
        "cross-CPU".into(),
        if probe_cpu.is_some() {
            format!(
                "each repetition starts with {} round trips of one cache line between a thread on the client's CPU and one on the servers' \
                 (spinning on a shared counter, medians of batches of {}): what every cross-CPU figure rides on; compare runs only at like values",
                config.probe_round_trips,
                measure::PROBE_BATCH
            )
        } else {
            "not measured: client and servers are not pinned to two different CPUs (--pin)".to_owned()
        },
    ));
    results.notes.push((
        "memcpy".into(),
        format!(
            "the client copies a {} buffer into another {} times per repetition (both faulted in first), on the client's CPU; the median copy is the repetition's figure",
            fmt_size(MEMCPY_SIZE),
            config.memcpy_copies
        ),
    ));
    eprintln!("rpc-bench: {} repetition(s) over {:?}; {}", reps, results.transports, results.pinning);

    let runtime = runtime(args.multi_thread)?;
    let sides = Sides { server_cpu, multi_thread: args.multi_thread };
    for rep in 1..=reps {
        let memcpy = measure::memcpy_mb_s(config.memcpy_copies);
        eprintln!("[{rep}/{reps}] memcpy of {}: {memcpy:.0} MB/s", fmt_size(MEMCPY_SIZE));
        results.push_memcpy(memcpy);
        if let Some(cpu) = probe_cpu {
            let probe = measure::cross_cpu_round_trip_ns(Some(cpu), config.probe_round_trips);
            eprintln!("[{rep}/{reps}] cross-CPU round trip: {probe:.0} ns");
            results.push_cross_cpu(probe);
        }
        for t in &selected {
            let tag = format!("[{rep}/{reps}] {:<6}", t.name);

            let mut endpoint = (t.raw.0)(&unique_name());
            // What the registry made for it (the tls row's certificate).
            let made = RegistryMade(endpoint.registry_address());
            // A spawned row has no server process: the client's connect starts the child.
            let server = if t.spawned {
                if let Endpoint::Spawn(cpu) = &mut endpoint {
                    *cpu = sides.server_cpu;
                }
                None
            } else {
                Some(
                    ServerProcess::start("raw", &endpoint.to_string(), sides, endpoint.files())?
                        .with_queues(endpoint.queues())
                        .removing(made),
                )
            };
            let endpoint = match &server {
                Some(server) => Endpoint::parse(&server.addr)?,
                None => endpoint,
            };
            let r = raw::measure(&endpoint, &config).map_err(|e| format!("{tag} raw: {e}"))?;
            server.map(ServerProcess::stop).transpose()?;
            record_raw(&mut results, &tag, t.name, Side::Raw, &r);

            if let Some((ring, _)) = t.ring {
                let endpoint = ring(&unique_name());
                let server = ServerProcess::start("raw", &endpoint.to_string(), sides, endpoint.files())?
                    .with_queues(endpoint.queues());
                let r = raw::measure(&Endpoint::parse(&server.addr)?, &config)
                    .map_err(|e| format!("{tag} ring (no engine): {e}"))?;
                server.stop()?;
                record_raw(&mut results, &tag, t.name, Side::Ring, &r);
            }

            let mut addr = (t.ours)(&unique_name());
            let server = if t.spawned {
                for arg in sides.args(true) {
                    addr += &format!("&{arg}");
                }
                None
            } else {
                let made = RegistryMade::of(&addr);
                Some(ServerProcess::start("ours", &addr, sides, Vec::new())?.removing(made))
            };
            let addr = server.as_ref().map_or(addr, |s| s.addr.clone());
            let r = run_on(&runtime, {
                let (addr, config) = (addr.clone(), config.clone());
                async move { measure::run(|| frameworks::connect_ours(&addr), &config).await }
            })
            .map_err(|e| format!("{tag} ours: {e}"))?;
            // On a connection of its own, so the sweep starts without the streams' leftovers.
            let sweep = run_on(&runtime, {
                let (addr, config) = (addr.clone(), config.clone());
                async move { measure::sweep(&frameworks::connect_ours(&addr).await?, &config).await }
            })
            .map_err(|e| format!("{tag} ours sweep: {e}"))?;
            // The blocking client from this (plain) thread, against the same server.
            let blocking =
                measure::blocking_latency(&addr, &config).map_err(|e| format!("{tag} ours blocking: {e}"))?;
            eprintln!("{tag} ours blocking : add {:.1} µs median, {:.1} µs p99", blocking.median_us, blocking.p99_us);
            results.push(t.name, Metric::LatencyMedian, Side::Blocking, blocking.median_us);
            results.push(t.name, Metric::LatencyP99, Side::Blocking, blocking.p99_us);
            server.map(ServerProcess::stop).transpose()?;
            record(&mut results, &tag, t.name, Side::Ours, &r);
            record_sweep(&mut results, &tag, t.name, Side::Ours, &sweep);

            if let Some(tarpc) = t.tarpc {
                let endpoint = tarpc(&unique_name());
                let server = ServerProcess::start("tarpc", &endpoint.to_string(), sides, endpoint.files())?;
                let endpoint = Endpoint::parse(&server.addr)?;
                let r = run_on(&runtime, {
                    let config = config.clone();
                    async move { measure::run(|| frameworks::connect_tarpc(&endpoint), &config).await }
                })
                .map_err(|e| format!("{tag} tarpc: {e}"))?;
                server.stop()?;
                record(&mut results, &tag, t.name, Side::Tarpc, &r);
            }

            if t.tarpc_on_ours {
                if t.spawned {
                    return Err(format!("{}: tarpc_on_ours is for rows with a listening server", t.name).into());
                }
                let addr = (t.ours)(&unique_name());
                let made = RegistryMade::of(&addr);
                let server = ServerProcess::start("tarpc-on-ours", &addr, sides, Vec::new())?.removing(made);
                let r = run_on(&runtime, {
                    let (addr, config) = (server.addr.clone(), config.clone());
                    async move { measure::run(|| frameworks::connect_tarpc_on_ours(&addr), &config).await }
                })
                .map_err(|e| format!("{tag} tarpc-on-ours: {e}"))?;
                server.stop()?;
                record(&mut results, &tag, t.name, Side::TarpcOnOurs, &r);
            }
        }
    }
    results.elapsed_s = started.elapsed().as_secs_f64();

    print!("{}", results.tables());
    write_file(&args.json, serde_json::to_string_pretty(&results.json())? + "\n")?;
    write_file(&args.svg, results.svg())?;
    write_file(&args.sweep_svg, results.sweep_svg())?;
    eprintln!("rpc-bench: wrote {}, {} and {}", args.json.display(), args.svg.display(), args.sweep_svg.display());
    Ok(())
}

/// What the registry made for an address (the socket file, connect FIFO or queue a killed
/// listener leaves, a fresh FIFO directory, the tls row's throwaway certificate), removed on
/// drop by `registry::remove_endpoint`: our servers are stopped by exiting, so their listeners
/// are never dropped.
struct RegistryMade(Option<rpc::transports::Address>);

impl RegistryMade {
    /// For one of our addresses (nothing if it does not parse).
    fn of(addr: &str) -> Self {
        Self(rpc::transports::Address::parse(addr).ok())
    }
}

impl Drop for RegistryMade {
    fn drop(&mut self) {
        if let Some(addr) = &self.0 {
            rpc::transports::registry::remove_endpoint(addr);
        }
    }
}

/// Records a raw side (the primitive, or the ring without the engine).
fn record_raw(results: &mut Results, tag: &str, transport: &'static str, side: Side, r: &raw::RawResult) {
    let name = if side == Side::Ring { "ring (no engine)" } else { "raw" };
    eprintln!(
        "{tag} {name:<13} : round trip {:.2} µs median, {:.2} µs p99; 1 MiB echo {:.0} MB/s; one-way 64 KiB {:.0} MB/s",
        r.latency.median_us, r.latency.p99_us, r.bulk_mb_s, r.one_way_mb_s
    );
    results.push(transport, Metric::LatencyMedian, side, r.latency.median_us);
    results.push(transport, Metric::LatencyP99, side, r.latency.p99_us);
    results.push(transport, Metric::Bulk, side, r.bulk_mb_s);
    results.push(transport, Metric::StreamChunks, side, r.one_way_mb_s);
    record_sweep(results, tag, transport, side, &r.sweep);
}

fn record_sweep(results: &mut Results, tag: &str, transport: &'static str, side: Side, sweep: &[SweepPoint]) {
    let name = match side {
        Side::Ours => "ours",
        Side::Ring => "ring (no engine)",
        _ => "raw",
    };
    let points: Vec<String> = sweep
        .iter()
        .map(|p| format!("{} {:.1} µs/{:.0} MB/s", fmt_size(p.size), p.latency.median_us, p.mb_s))
        .collect();
    eprintln!("{tag} {name:<13} : sweep (median, MB/s) {}", points.join("; "));
    results.push_sweep(transport, side, sweep);
}

fn record(results: &mut Results, tag: &str, transport: &'static str, side: Side, r: &FrameworkResult) {
    let name = match side {
        Side::Ours => "ours         ",
        Side::TarpcOnOurs => "tarpc-on-ours",
        _ => "tarpc        ",
    };
    eprintln!(
        "{tag} {name} : add {:.1} µs median, {:.1} µs p99; k calls/s at 1/64/1000 in flight {:.1}/{:.1}/{:.1}, {}×{} {:.1}; 1 MiB echo {:.0} MB/s",
        r.latency.median_us,
        r.latency.p99_us,
        r.pipelined[0] / 1e3,
        r.pipelined[1] / 1e3,
        r.pipelined[2] / 1e3,
        measure::CONNECTIONS,
        measure::PER_CONNECTION,
        r.multi_conn / 1e3,
        r.bulk_mb_s
    );
    results.push(transport, Metric::LatencyMedian, side, r.latency.median_us);
    results.push(transport, Metric::LatencyP99, side, r.latency.p99_us);
    results.push(transport, Metric::InFlight1, side, r.pipelined[0] / 1e3);
    results.push(transport, Metric::InFlight64, side, r.pipelined[1] / 1e3);
    results.push(transport, Metric::InFlight1000, side, r.pipelined[2] / 1e3);
    results.push(transport, Metric::MultiConn, side, r.multi_conn / 1e3);
    results.push(transport, Metric::Bulk, side, r.bulk_mb_s);
    if let Some([heap, lent, kept, kept_lent]) = r.made_mb_s {
        eprintln!(
            "{tag} {name} : 1 MiB result made per call {heap:.0} MB/s in the heap, {lent:.0} MB/s in a loan; made once and sent again {kept:.0} MB/s in the heap, {kept_lent:.0} MB/s in a loan"
        );
        results.push(transport, Metric::Made, side, heap);
        results.push(transport, Metric::MadeLent, side, lent);
        results.push(transport, Metric::Kept, side, kept);
        results.push(transport, Metric::KeptLent, side, kept_lent);
    }
    if let Some(s) = &r.streams {
        eprintln!(
            "{tag} {name} : stream of 16-byte items {:.2} M items/s; of 64 KiB chunks {:.0} MB/s; add beside a saturating stream {:.1} µs median, {:.1} µs p99 (the stream meanwhile {:.0} MB/s)",
            s.small_items_s / 1e6,
            s.chunks_mb_s,
            s.beside.median_us,
            s.beside.p99_us,
            s.beside_stream_mb_s
        );
        results.push(transport, Metric::StreamSmall, side, s.small_items_s / 1e6);
        results.push(transport, Metric::StreamChunks, side, s.chunks_mb_s);
        results.push(transport, Metric::BesideStreamMedian, side, s.beside.median_us);
        results.push(transport, Metric::BesideStreamP99, side, s.beside.p99_us);
    }
}

fn write_file(path: &Path, contents: String) -> Result<(), BoxError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, contents).map_err(|e| format!("writing {}: {e}", path.display()).into())
}
