//! What the conformance, hostile-input, access and load tests share: a `rpc-test-server` process to talk to
//! (and what /proc says about it), unique addresses, and a raw byte stream to a server's address.
//!
//! (The conformance suite has a richer server handle of its own, with in-process and `spawn:`
//! modes and kill/terminate; these tests only need a server process that is gone at the end.)

#![allow(dead_code)] // each test file uses a part

use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use rpc::transports::registry;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A name unique to this process and call.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("{prefix}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// The registry's entry for `transport` (which must be registered).
pub fn scheme(transport: &str) -> &'static registry::Scheme {
    registry::lookup(transport).unwrap_or_else(|| panic!("no transport {transport} in the registry"))
}

/// A fresh address of each listening kind these tests use, by transport name.
pub fn fresh_addr(transport: &str) -> String {
    scheme(transport).fresh_address(&unique("rpc-hostile")).unwrap_or_else(|| panic!("no address for {transport}"))
}

/// `addr` parsed.
fn parsed(addr: &str) -> rpc::transports::Address {
    addr.parse().unwrap_or_else(|e| panic!("{addr}: {e}"))
}

/// A `rpc-test-server` process, killed (and its endpoint removed) on drop.
pub struct ServerProcess {
    pub addr: String,
    child: Child,
}

impl ServerProcess {
    /// Starts `rpc-test-server [options...] addr` and waits until it listens.
    pub async fn start(addr: &str, options: &[&str]) -> ServerProcess {
        let mut args = options.to_vec();
        args.push(addr);
        let (child, addr) = start_server_helper(&args).await;
        ServerProcess { addr, child }
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// Its resident memory, in KiB.
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.pid())
    }

    /// How many descriptors it has open (/proc/PID/fd).
    pub fn open_fds(&self) -> usize {
        open_fds(self.pid())
    }

    /// CPU time (user + system) it has used so far.
    pub fn cpu_time(&self) -> Duration {
        cpu_time(self.pid())
    }

    /// Whether the process is still running (it must survive whatever a client sends).
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }
}

/// Starts `rpc-test-server ARGS...` (killed when dropped) and returns it with the first line it
/// prints (trimmed): how it says it is ready.
pub async fn start_helper(args: &[&str]) -> (Child, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_rpc-test-server"));
    command.args(args);
    spawn_ready(command).await
}

/// [`start_helper`] for a server: the child and the address it announced (`listening ADDR`).
pub async fn start_server_helper(args: &[&str]) -> (Child, String) {
    let (child, line) = start_helper(args).await;
    (child, announced_addr(&line))
}

/// Spawns `command` (killed when dropped) and returns it with the first line it prints
/// (trimmed): how a helper process says it is ready.
pub async fn spawn_ready(mut command: Command) -> (Child, String) {
    let mut child =
        command.stdout(Stdio::piped()).kill_on_drop(true).spawn().unwrap_or_else(|e| panic!("{command:?}: {e}"));
    let mut line = String::new();
    let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
    tokio::time::timeout(Duration::from_secs(30), stdout.read_line(&mut line))
        .await
        .unwrap_or_else(|_| panic!("{command:?} not ready in 30 s"))
        .unwrap();
    assert!(!line.is_empty(), "{command:?} exited before it was ready (its stderr is above)");
    (child, line.trim().to_owned())
}

/// The address in a server's ready line, `listening ADDR`.
pub fn announced_addr(line: &str) -> String {
    line.strip_prefix("listening ").unwrap_or_else(|| panic!("bad ready line {line:?}")).to_owned()
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        remove_endpoint(&self.addr);
    }
}

/// The files a killed server at `addr` cannot remove (the next server on the address would
/// reclaim them): what the registry says its transport leaves on disk.
pub fn endpoint_files(addr: &str) -> Vec<std::path::PathBuf> {
    addr.parse().map(|addr| registry::endpoint_files(&addr)).unwrap_or_default()
}

/// Removes what a killed server at `addr` leaves behind (see [`registry::remove_endpoint`]).
pub fn remove_endpoint(addr: &str) {
    if let Ok(addr) = addr.parse() {
        registry::remove_endpoint(&addr);
    }
}

/// Open descriptors of process `pid`, from /proc/PID/fd.
/// CPU time (user + system) process `pid` has used so far, in whole clock ticks.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat(5), in clock ticks; 3 and 4 are the
    // state and ppid, so after the ")" they are at indices 11 and 12.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf only reads its argument.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis(ticks * 1000 / per_second)
}

pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

/// Resident memory of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

pub type RawStream = Box<dyn registry::RawIo>;

/// A plain byte stream to a server whose transport has one ([`registry::Scheme::raw_stream`]):
/// no framing, no hello.
pub async fn raw_stream(addr: &str) -> RawStream {
    match registry::raw_stream(&parsed(addr)).await {
        Some(stream) => stream.unwrap_or_else(|e| panic!("raw stream to {addr}: {e}")),
        None => panic!("no raw byte stream for {addr}"),
    }
}
