//! `rpc endpoints`: the framework's endpoints on this machine, live or stale.
//!
//! What a listener leaves in the file system is what the transports' registry says
//! (`rpc::transports::registry::OnDisk`): a `unix://` socket file, a `fifo://` connect FIFO, an
//! `mq://` connect queue under `/dev/mqueue`. Each is probed the way a client would, with the
//! reflection service's hello: live if a server answers, stale if nothing listens (what a
//! killed server leaves until a server of the same name starts again). Abstract `local://` and
//! `shm://` names vanish with their process: those where one of our servers answers are listed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::Failure;

/// How long a probe may take before the endpoint counts as not answering.
const PROBE: Duration = Duration::from_millis(500);

/// One endpoint found.
struct Found {
    addr: String,
    /// The file to remove if stale (none for abstract names).
    file: Option<PathBuf>,
    state: State,
}

enum State {
    /// A server of this framework answered; its name.
    Live(String),
    /// Something accepted the connection but did not speak our hello.
    Foreign(String),
    /// Nothing listens.
    Stale(String),
    /// An abstract name (alive while its process is) where a server answered; its name.
    Abstract(String),
}

pub(crate) async fn run(dir: Option<PathBuf>, remove_stale: bool) -> Result<(), Failure> {
    let dir = dir.unwrap_or_else(std::env::temp_dir);
    let mut candidates = Vec::new();
    scan(&dir, 2, &mut candidates).map_err(|e| Failure::Usage(format!("cannot read {}: {e}", dir.display())))?;
    if let Ok(queues) = std::fs::read_dir("/dev/mqueue") {
        for entry in queues.flatten() {
            candidates.push((format!("mq://{}", entry.file_name().to_string_lossy()), Some(entry.path())));
        }
    }
    let mut found = Vec::new();
    for (addr, file) in candidates {
        let state = probe(&addr).await;
        found.push(Found { addr, file, state });
    }
    // Abstract names are anyone's: only those where one of our servers answers are listed.
    for name in abstract_names() {
        for scheme in ["local", "shm"] {
            let addr = format!("{scheme}://{name}");
            if let State::Live(server) = probe(&addr).await {
                found.push(Found { addr, file: None, state: State::Abstract(server) });
                break;
            }
        }
    }
    if found.is_empty() {
        println!("no endpoints in {} or /dev/mqueue", dir.display());
    }
    for f in &found {
        let (state, detail) = match &f.state {
            State::Live(name) => ("live", name.clone()),
            State::Foreign(why) => ("live", format!("not an rpc server? {why}")),
            State::Stale(why) => ("stale", why.clone()),
            State::Abstract(name) => ("live", format!("{name} (abstract name)")),
        };
        println!("{state:<6} {}  {detail}", f.addr);
    }
    if remove_stale {
        for f in &found {
            if let (State::Stale(_), Some(file)) = (&f.state, &f.file) {
                match std::fs::remove_file(file) {
                    Ok(()) => println!("removed {}", file.display()),
                    Err(e) => eprintln!("cannot remove {}: {e}", file.display()),
                }
            }
        }
    }
    Ok(())
}

/// Socket files and FIFOs under `dir`, `depth` levels down.
fn scan(dir: &Path, depth: u32, out: &mut Vec<(String, Option<PathBuf>)>) -> std::io::Result<()> {
    #[cfg(unix)]
    use std::os::unix::fs::FileTypeExt;
    for entry in std::fs::read_dir(dir)?.flatten() {
        let Ok(kind) = entry.file_type() else { continue };
        let path = entry.path();
        #[cfg(unix)]
        {
            if kind.is_socket() {
                out.push((format!("unix://{}", path.display()), Some(path)));
                continue;
            }
            // Only connect FIFOs: a connection's private pair (`<name>.<n>.c2s`/`.s2c`) lives
            // beside it only while it is being opened.
            if kind.is_fifo() && !path.to_string_lossy().ends_with("2s") && !path.to_string_lossy().ends_with("2c") {
                out.push((format!("fifo://{}", path.display()), Some(path)));
                continue;
            }
        }
        if kind.is_dir() && depth > 0 {
            let _ = scan(&path, depth - 1, out);
        }
    }
    Ok(())
}

async fn probe(addr: &str) -> State {
    let hello = rpc::connect_service(addr, &rpc::reflection::DESCRIPTOR);
    match tokio::time::timeout(PROBE, hello).await {
        Ok(Ok(client)) => {
            let options = rpc::CallOptions::new().timeout(PROBE);
            match rpc::reflection::describe(&client, &options).await {
                Ok(d) => State::Live(d.server_name),
                Err(_) => State::Live("an rpc server".to_owned()),
            }
        }
        Ok(Err(rpc::RpcError::UnknownService { .. })) => State::Live("an rpc server without reflection".to_owned()),
        Ok(Err(e @ rpc::RpcError::Disconnected { .. })) if connected_once(&e) => State::Foreign(e.to_string()),
        Ok(Err(e)) => State::Stale(e.to_string()),
        Err(_) => State::Foreign("no answer to the hello".to_owned()),
    }
}

/// Whether a failed hello got as far as a connection (so something listens).
fn connected_once(e: &rpc::RpcError) -> bool {
    let text = e.to_string();
    text.contains("hello") || text.contains("closed")
}

/// The abstract Unix socket names on this machine (Linux), as `/proc/net/unix` lists them.
fn abstract_names() -> Vec<String> {
    let Ok(table) = std::fs::read_to_string("/proc/net/unix") else { return Vec::new() };
    let mut names: Vec<String> = table
        .lines()
        .skip(1)
        .filter_map(|line| line.split_whitespace().nth(7))
        .filter_map(|path| path.strip_prefix('@'))
        .map(str::to_owned)
        .collect();
    names.sort();
    names.dedup();
    names
}
