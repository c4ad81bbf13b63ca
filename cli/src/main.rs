//! `rpc`: explore, call, ping and benchmark a server of this framework from the shell, over
//! any transport, by address. Everything it knows of a server comes from the server's
//! reflection service (`rpc::reflection`); arguments and results are JSON, encoded by the
//! methods' schemas (`rpc::schema`, `rpc_cli::codec`).
//!
//! Exit codes: 0 success; 1 the method returned its application error (printed as JSON);
//! 2 bad usage (unknown method, an argument that does not fit its type); 3 an RPC failure
//! (connection, deadline, remote panic, ...), printed as JSON.

mod bench;
mod endpoints;

use std::io::BufRead;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{CommandFactory, Parser, Subcommand};
use rpc::reflection::{self, ServerDescription};
use rpc::schema::{MethodKind, MethodSchema, ServiceSchema};
use rpc::{CallOptions, Client, RpcError};
use rpc_cli::{codec, render};
use serde_json::{json, Value as Json};

/// Explore and call servers of the rpc framework from the shell.
///
/// ADDR is any transport address: tcp://127.0.0.1:12345, tls://host:4000?ca=server.pem,
/// unix:///tmp/app.sock, local://name, fifo:///tmp/app, shm://name, mq://name, spawn:./server ...
#[derive(Parser)]
#[command(name = "rpc", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the services of a server, their methods with signatures and docs.
    List {
        /// The server's address.
        addr: String,
        /// Also print the structs and enums the methods use.
        #[arg(long, short)]
        types: bool,
        /// Print the server's whole description (schemas included) as JSON instead.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        timeout: Timeout,
    },
    /// Call a method: arguments as JSON (one per argument, or one object by name), the result
    /// printed as JSON; a streaming result prints one JSON line per item, and a stream
    /// argument is read from standard input, one JSON value per line.
    ///
    /// Examples: `rpc call ADDR Calculator.add 1 2`, `rpc call ADDR Calculator.add '{"a":1,"b":2}'`.
    /// A word that is not JSON is taken as a string: `rpc call ADDR Greeter.greet Bob`.
    Call {
        /// The server's address.
        addr: String,
        /// `Service.method`.
        method: String,
        /// The arguments.
        args: Vec<String>,
        #[command(flatten)]
        timeout: Timeout,
    },
    /// Measure round trips to a server's engine: min/p50/p99/max over N pings.
    Ping {
        /// The server's address.
        addr: String,
        /// How many pings.
        #[arg(long, short = 'n', default_value_t = 100)]
        count: u64,
        #[command(flatten)]
        timeout: Timeout,
    },
    /// Call a method many times, K calls in flight, with a progress bar; prints calls/s and
    /// latency percentiles.
    Bench {
        /// The server's address.
        addr: String,
        /// `Service.method`.
        method: String,
        /// The arguments, as for `rpc call`.
        args: Vec<String>,
        /// How many calls in all.
        #[arg(long, default_value_t = 10_000)]
        calls: u64,
        /// How many calls at once.
        #[arg(long, default_value_t = 1)]
        in_flight: u64,
        #[command(flatten)]
        timeout: Timeout,
    },
    /// List this machine's endpoints of the framework (Unix socket files, connect FIFOs, mq
    /// connect queues, abstract local and shm names), each marked live or stale.
    Endpoints {
        /// The directory to look in for file endpoints (default: the system's temp directory).
        dir: Option<std::path::PathBuf>,
        /// Remove the stale ones (what a killed server left).
        #[arg(long)]
        remove_stale: bool,
    },
    /// Print a shell completion script (e.g. `rpc completions bash > /etc/bash_completion.d/rpc`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

#[derive(clap::Args, Clone, Copy)]
struct Timeout {
    /// The deadline of each call, in milliseconds.
    #[arg(long, default_value_t = 10_000, value_name = "MS")]
    timeout_ms: u64,
}

impl Timeout {
    fn options(self) -> CallOptions {
        CallOptions::new().timeout(Duration::from_millis(self.timeout_ms))
    }
}

/// How a command failed, which decides the exit code.
pub(crate) enum Failure {
    /// The method's application error, as JSON.
    App(Json),
    /// Bad usage.
    Usage(String),
    /// The call failed.
    Rpc(RpcError),
}

impl From<RpcError> for Failure {
    fn from(e: RpcError) -> Self {
        Failure::Rpc(e)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(3);
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::App(error)) => {
            println!("{}", json!({ "app_error": error }));
            ExitCode::from(1)
        }
        Err(Failure::Usage(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
        Err(Failure::Rpc(error)) => {
            println!("{}", rpc_error_json(&error));
            eprintln!("error: {error}");
            ExitCode::from(3)
        }
    }
}

/// `{"rpc_error": {"kind": "DeadlineExceeded", "message": "..."}}`.
fn rpc_error_json(error: &RpcError) -> Json {
    let debug = format!("{error:?}");
    let kind: String = debug.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
    json!({ "rpc_error": { "kind": kind, "message": error.to_string() } })
}

async fn run(command: Command) -> Result<(), Failure> {
    match command {
        Command::List { addr, types, json, timeout } => {
            let description = describe(&addr, timeout.options()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&description).expect("a description is JSON"));
            } else {
                print!("{}", render::server(&description, types));
            }
            Ok(())
        }
        Command::Call { addr, method, args, timeout } => call(&addr, &method, &args, timeout.options()).await,
        Command::Ping { addr, count, timeout } => ping(&addr, count.max(1), timeout.options()).await,
        Command::Bench { addr, method, args, calls, in_flight, timeout } => {
            let target = Target::resolve(&addr, &method, timeout.options()).await?;
            if target.method.kind != MethodKind::Unary {
                return Err(Failure::Usage(format!("`{method}` streams; `rpc bench` calls unary methods")));
            }
            let args =
                codec::encode_args(&target.schema, &target.method, &args).map_err(|e| Failure::Usage(e.to_string()))?;
            let client = target.connect(&addr).await?;
            bench::run(client, target.descriptor, args, calls.max(1), in_flight.max(1), timeout.options()).await
        }
        Command::Endpoints { dir, remove_stale } => endpoints::run(dir, remove_stale).await,
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "rpc", &mut std::io::stdout());
            Ok(())
        }
    }
}

/// Connects to the server's reflection service.
async fn reflection_client(addr: &str) -> Result<Client, Failure> {
    rpc::connect_service(addr, &reflection::DESCRIPTOR).await.map_err(|e| match e {
        RpcError::UnknownService { .. } => {
            Failure::Usage(format!("the server at {addr} does not answer reflection (turned off in its ServerOptions)"))
        }
        other => Failure::Rpc(other),
    })
}

async fn describe(addr: &str, options: CallOptions) -> Result<ServerDescription, Failure> {
    let client = reflection_client(addr).await?;
    Ok(reflection::describe(&client, &options).await?)
}

/// A method found in a server's description.
struct Target {
    schema: ServiceSchema,
    method: MethodSchema,
    descriptor: &'static rpc::MethodDescriptor,
    service: &'static rpc::ServiceDescriptor,
    options: CallOptions,
}

impl Target {
    async fn resolve(addr: &str, spec: &str, options: CallOptions) -> Result<Target, Failure> {
        let Some((service_name, method_name)) = spec.rsplit_once('.') else {
            return Err(Failure::Usage(format!("`{spec}` is not `Service.method`")));
        };
        let description = describe(addr, options.clone()).await?;
        let names = |it: &mut dyn Iterator<Item = &str>| it.collect::<Vec<_>>().join(", ");
        let Some(schema) = description.services.iter().find(|s| s.name == service_name) else {
            return Err(Failure::Usage(format!(
                "the server has no service `{service_name}`; it has {}",
                names(&mut description.services.iter().map(|s| s.name.as_str()))
            )));
        };
        let Some(method) = schema.method(method_name) else {
            return Err(Failure::Usage(format!(
                "`{service_name}` has no method `{method_name}`; it has {}",
                names(&mut schema.methods.iter().map(|m| m.name.as_str()))
            )));
        };
        // The hello names the one method to be called, with the server's own signature:
        // a descriptor made at run time lives as long as the process, which is one command.
        let descriptor: &'static rpc::MethodDescriptor = Box::leak(Box::new(rpc::MethodDescriptor {
            name: Box::leak(method.name.clone().into_boxed_str()),
            id: method.id,
            signature: Box::leak(method.signature.clone().into_boxed_str()),
        }));
        let service = Box::leak(Box::new(rpc::ServiceDescriptor {
            name: Box::leak(schema.name.clone().into_boxed_str()),
            methods: std::slice::from_ref(descriptor),
        }));
        Ok(Target { schema: schema.clone(), method: method.clone(), descriptor, service, options })
    }

    async fn connect(&self, addr: &str) -> Result<Client, Failure> {
        Ok(rpc::connect_service(addr, self.service).await?)
    }
}

async fn call(addr: &str, spec: &str, args: &[String], options: CallOptions) -> Result<(), Failure> {
    let target = Target::resolve(addr, spec, options).await?;
    let (schema, method) = (&target.schema, &target.method);
    let encoded = codec::encode_args(schema, method, args).map_err(|e| Failure::Usage(e.to_string()))?;
    let outgoing = match &method.stream_arg {
        Some(stream) => Some(read_stream_arg(schema, stream)?),
        None => None,
    };
    let client = target.connect(addr).await?;
    let decode_error = |e: String| Failure::Rpc(RpcError::Decode(format!("the answer of `{spec}`: {e}")));
    if method.kind == MethodKind::ServerStream {
        let mut items = client.call_streaming::<_, ()>(target.descriptor, &encoded, outgoing, &target.options).await?;
        while let Some(item) = items.next_encoded().await {
            let item = codec::decode(schema, &method.returns, &item?).map_err(decode_error)?;
            println!("{item}");
        }
        return Ok(());
    }
    let answer = client.call_encoded(target.descriptor, &encoded, outgoing, &target.options).await?;
    match &method.error {
        None => println!("{}", codec::decode(schema, &method.returns, &answer).map_err(decode_error)?),
        Some(error) => match codec::decode_fallible(schema, &method.returns, error, &answer).map_err(decode_error)? {
            Ok(value) => println!("{value}"),
            Err(app) => return Err(Failure::App(app)),
        },
    }
    Ok(())
}

/// The items of a stream argument: JSON values from standard input, one per line.
fn read_stream_arg(
    schema: &ServiceSchema,
    stream: &rpc::schema::Field,
) -> Result<rpc_core::stream::EncodedStream, Failure> {
    let mut items = Vec::new();
    for (n, line) in std::io::stdin().lock().lines().enumerate() {
        let line =
            line.map_err(|e| Failure::Usage(format!("reading the stream `{}` from standard input: {e}", stream.name)))?;
        if line.trim().is_empty() {
            continue;
        }
        let json: Json = serde_json::from_str(&line)
            .map_err(|e| Failure::Usage(format!("line {} of standard input is not JSON: {e}", n + 1)))?;
        let what = format!("item {} of the stream `{}`", items.len(), stream.name);
        items.push(codec::encode_value(schema, &stream.ty, &json, &what).map_err(|e| Failure::Usage(e.to_string()))?);
    }
    Ok(rpc_core::stream::EncodedStream::new(rpc::Stream::from_iter(items)))
}

async fn ping(addr: &str, count: u64, options: CallOptions) -> Result<(), Failure> {
    let client = reflection_client(addr).await?;
    let mut times = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let start = Instant::now();
        reflection::ping(&client, &options).await?;
        times.push(start.elapsed());
    }
    times.sort();
    println!("{count} pings to {addr} ({})", client.connection_info().peer);
    println!("{}", bench::percentiles(&times));
    Ok(())
}
