//! `rpc-bench`: every transport against its raw OS primitive and against tarpc, in one run on
//! one machine, client and server in separate processes.
//!
//! ```text
//! cargo run --release -p rpc-bench                 # full mode, 3 repetitions
//! cargo run --release -p rpc-bench -- --reps 5 --pin --only tcp,unix
//! cargo run -p rpc-bench -- --quick                # every path, tiny counts (CI)
//! ```
//!
//! Options: `--quick`, `--reps N`, `--pin` (client and server on different CPUs), `--pin-same`
//! (both on one CPU), `--multi-thread` (every process on a multi-thread tokio runtime, as
//! `#[tokio::main]` gives; by default each runs a current-thread one), `--only a,b` (transport
//! names), `--json PATH` (default
//! `target/bench/results.json`), `--svg PATH` (default `target/bench/latency.svg`), `--sweep-svg
//! PATH` (the payload sweep's chart, default `target/bench/sweep.svg`).
//!
//! `rpc-bench --alternate BEFORE_BINARY [--pairs N] [--out DIR] [run options]` runs a build made
//! before a change and this one in turn and compares them; `rpc-bench --compare BEFORE.json...
//! -- AFTER.json...` compares runs made otherwise (`compare.rs`).
//!
//! Each server is this binary re-executed as
//! `rpc-bench --serve ours|raw|tarpc|tarpc-on-ours ADDR [--cpu N] [--multi-thread]` (a raw
//! server has no runtime, so it is never given the flag);
//! it prints `listening <addr>` and runs until its stdin closes, so a client that dies takes its
//! servers with it. Tables go to stdout, progress to stderr. The `spawn` row has no server
//! process of its own: each client connection starts this binary as its child, as
//! `rpc-bench --serve-stdio [--cpu N] [--multi-thread]` (ours, via the `spawn:` address) or
//! `rpc-bench --serve-stdio-raw [--cpu N]` (raw), serving over the child's stdin and stdout.
//!
//! The binary is `src/bin/rpc-bench.rs`; everything lives in this library so that the crate's
//! entry point is not `benches/src/main.rs`, which Cargo would also auto-discover as a bench
//! target of the root `rpc` package.
//!
//! Adding a transport is one entry in [`transports`]: its name, our address for it, the raw
//! primitive to compare with (an `Endpoint`, see `endpoint.rs`; a new kind of primitive adds a
//! variant there and a ping-pong in `raw.rs`), optionally a second raw column for a layer of the
//! transport's own (`ring`: the `shm` row's ring without the engine), tarpc's endpoint if tarpc
//! can run over the same primitive, and whether to run tarpc over our transport for it too
//! (`tarpc_on_ours`).
//!
//! Besides the fixed-size figures, every raw, ring and ours side runs a payload sweep (echoes of
//! 64 B to 16 MiB, see `measure::SWEEP_SIZES`), and each repetition measures this machine's
//! memcpy rate, which the `shm` 1 MiB echo is reported against. Ours also times 1 MiB results
//! the server makes (`Bench::make`), made afresh for each call and made once and sent again,
//! each in a heap buffer and in a loan of the connection (`CallContext::loan`: over `shm://`
//! a block of its slab, sent by reference from its second send on).

#[cfg(unix)]
mod compare;
#[cfg(unix)]
mod endpoint;
#[cfg(unix)]
mod frameworks;
#[cfg(unix)]
mod measure;
#[cfg(unix)]
mod pin;
#[cfg(unix)]
mod raw;
#[cfg(target_os = "linux")]
mod raw_shm;
#[cfg(target_os = "linux")]
mod raw_spin;
#[cfg(unix)]
mod raw_tls;
#[cfg(unix)]
mod report;
#[cfg(unix)]
mod service;

#[cfg(unix)]
mod run;

#[cfg(unix)]
pub use run::main;

#[cfg(unix)]
use endpoint::Endpoint;

/// The server's first line on stdout: the address it actually listens on.
#[cfg(unix)]
fn announce(addr: &dyn std::fmt::Display) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "listening {addr}");
    let _ = out.flush();
}

/// A raw server for a row: its endpoint for a server given a unique name, and how it is
/// described in the output.
#[cfg(unix)]
pub type Primitive = (fn(&str) -> Endpoint, &'static str);

/// One row of every table.
#[cfg(unix)]
pub struct Transport {
    /// The name in the tables and in `--only`.
    pub name: &'static str,
    /// Our address for a server given a unique name (a path stem or socket name).
    pub ours: fn(&str) -> String,
    /// The bare OS primitive ours is compared with, and how it is described in the output.
    pub raw: Primitive,
    /// A second raw column between the primitive and ours, if the transport has a layer of its
    /// own worth measuring without the engine (`shm`: our ring), and how it is described.
    pub ring: Option<Primitive>,
    /// tarpc over the same primitive, if tarpc has a transport for it.
    pub tarpc: Option<fn(&str) -> Endpoint>,
    /// Also measure tarpc's engine over *our* transport for this row's address
    /// (`rpc::tarpc`): against `ours` it shows the gain of our engine alone, against
    /// `tarpc` the gain of our transport. Rows whose server is a listener only (not `spawned`).
    pub tarpc_on_ours: bool,
    /// The client's connect starts the server as its child (`spawn:`), so the harness starts no
    /// server process; with pinning, `--cpu N` is appended to the child's arguments.
    pub spawned: bool,
}

/// Every transport the harness measures, in table order.
#[cfg(unix)]
pub fn transports() -> Vec<Transport> {
    fn sock_path(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("{name}.sock"))
    }
    fn spawn_ours(_: &str) -> String {
        // The `spawn:` form `rpc_transports::spawn` parses: program, then `?` and `&`-separated
        // arguments (this binary's path has no `?`, `&` or `%` to escape in practice).
        let exe = std::env::current_exe().expect("the path of the rpc-bench binary");
        format!("spawn:{}?--serve-stdio", exe.display())
    }
    fn local_raw(name: &str) -> Endpoint {
        // local:// is an abstract-namespace socket on Linux, a socket file elsewhere.
        if cfg!(target_os = "linux") {
            Endpoint::Abstract(name.to_owned())
        } else {
            Endpoint::Unix(std::path::PathBuf::from(format!("/tmp/{name}")))
        }
    }
    fn raw_tls_endpoint(name: &str) -> Endpoint {
        // The registry's throwaway certificate for tls://, as its address names it.
        let addr = rpc::transports::registry::lookup("tls")
            .and_then(|scheme| scheme.fresh_address(name))
            .expect("a tls:// address with a test certificate");
        match rpc::transports::Address::parse(&addr) {
            Ok(rpc::transports::Address::Tls {
                host_port,
                params: rpc::transports::TlsParams { cert: Some(cert), key: Some(key), .. },
            }) => Endpoint::Tls { addr: host_port, cert, key },
            other => panic!("fresh_address(tls) gave {addr:?}: {other:?}"),
        }
    }
    vec![
        Transport {
            name: "tcp",
            ours: |_| "tcp://127.0.0.1:0".to_owned(),
            raw: (|_| Endpoint::Tcp("127.0.0.1:0".to_owned()), "TCP over loopback, TCP_NODELAY"),
            ring: None,
            tarpc: Some(|_| Endpoint::Tcp("127.0.0.1:0".to_owned())),
            spawned: false,
            tarpc_on_ours: true,
        },
        Transport {
            name: "tls",
            // A throwaway self-signed certificate from the registry (feature `test-certificates`).
            ours: |name| {
                rpc::transports::registry::lookup("tls")
                    .and_then(|scheme| scheme.fresh_address(name))
                    .expect("a tls:// address with a test certificate")
            },
            raw: (
                raw_tls_endpoint,
                "a blocking rustls session (TLS 1.3, AES-128-GCM, as tls:// negotiates) over TCP on loopback, TCP_NODELAY",
            ),
            ring: None,
            tarpc: None,
            spawned: false,
            tarpc_on_ours: false,
        },
        Transport {
            name: "local",
            ours: |name| format!("local://{name}"),
            raw: (local_raw, "Unix stream socket, abstract namespace on Linux"),
            ring: None,
            tarpc: None,
            spawned: false,
            tarpc_on_ours: true,
        },
        #[cfg(target_os = "linux")]
        Transport {
            name: "shm",
            ours: |name| format!("shm://{name}"),
            raw: (
                |name| Endpoint::Spin(name.to_owned()),
                "two processes spinning on atomics in a shared memfd mapping, a mailbox per direction \
                 (no tokio, no ring, no framing; after 256 PAUSEs a waiter yields its CPU between checks)",
            ),
            ring: Some((
                |name| Endpoint::Shm(name.to_owned()),
                "our shm:// transport's frames (ring, framing, wake-ups) without the RPC engine",
            )),
            tarpc: None,
            tarpc_on_ours: true,
            spawned: false,
        },
        Transport {
            name: "unix",
            ours: |name| format!("unix://{}", sock_path(name).display()),
            raw: (|name| Endpoint::Unix(sock_path(name)), "Unix stream socket file"),
            ring: None,
            tarpc: Some(|name| Endpoint::Unix(sock_path(name))),
            spawned: false,
            tarpc_on_ours: true,
        },
        Transport {
            name: "fifo",
            ours: |name| format!("fifo://{}", std::env::temp_dir().join(name).display()),
            raw: (
                |name| Endpoint::Fifo(std::env::temp_dir().join(name)),
                "a pair of named FIFOs (mkfifo), one per direction",
            ),
            ring: None,
            tarpc: None,
            spawned: false,
            tarpc_on_ours: false,
        },
        Transport {
            name: "spawn",
            ours: spawn_ours,
            raw: (|_| Endpoint::Spawn(None), "the stdin/stdout pipes of a child process (this binary)"),
            ring: None,
            tarpc: None,
            spawned: true,
            tarpc_on_ours: false,
        },
        #[cfg(target_os = "linux")]
        Transport {
            name: "mq",
            ours: |name| format!("mq://{name}"),
            raw: (
                |name| Endpoint::Mq(name.to_owned()),
                "a pair of POSIX message queues, 4 messages of 2 KiB (the shape mq:// gives a connection)",
            ),
            ring: None,
            tarpc: None,
            spawned: false,
            tarpc_on_ours: true,
        },
    ]
}
