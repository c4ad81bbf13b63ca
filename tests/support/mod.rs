//! What the conformance, hostile-input, access and load tests share: a `rpc-test-server` process to talk to
//! (and what /proc says about it), unique addresses, and a raw byte stream to a server's address.
//!
//! (The conformance suite has a richer server handle of its own, with in-process and `spawn:`
//! modes and kill/terminate; these tests only need a server process that is gone at the end.)

#![allow(dead_code)] // each test file uses a part

use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A name unique to this process and call.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("{prefix}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// A fresh address of each listening kind these tests use, by transport name.
pub fn fresh_addr(transport: &str) -> String {
    match transport {
        "tcp" => "tcp://127.0.0.1:0".to_owned(),
        "local" => format!("local://{}", unique("rpc-hostile")),
        "shm" => format!("shm://{}", unique("rpc-hostile")),
        "mq" => format!("mq://{}", unique("rpc-hostile")),
        "unix" => format!("unix://{}", std::env::temp_dir().join(format!("{}.sock", unique("rpc-hostile"))).display()),
        "fifo" => {
            let dir = std::env::temp_dir().join(unique("rpc-hostile-fifo"));
            std::fs::create_dir_all(&dir).unwrap();
            format!("fifo://{}", dir.join("calc").display())
        }
        other => panic!("no address for {other}"),
    }
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
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of stat(5), in clock ticks; 3 and 4 are the
        // state and ppid, so after the ")" they are at indices 11 and 12.
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        // SAFETY: sysconf only reads its argument.
        let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        Duration::from_millis(ticks * 1000 / per_second)
    }

    /// Whether the process is still running (it must survive whatever a client sends).
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }
}

/// Starts `rpc-test-server ARGS...` (killed when dropped) and returns it with the first line it
/// prints (trimmed): how it says it is ready.
pub async fn start_helper(args: &[&str]) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rpc-test-server"))
        .args(args)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start rpc-test-server");
    let mut line = String::new();
    let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
    tokio::time::timeout(Duration::from_secs(30), stdout.read_line(&mut line))
        .await
        .expect("rpc-test-server ready in time")
        .unwrap();
    assert!(!line.is_empty(), "rpc-test-server {args:?} exited before it was ready (its stderr is above)");
    (child, line.trim().to_owned())
}

/// [`start_helper`] for a server: the child and the address it announced (`listening ADDR`).
pub async fn start_server_helper(args: &[&str]) -> (Child, String) {
    let (child, line) = start_helper(args).await;
    let addr = line.strip_prefix("listening ").unwrap_or_else(|| panic!("bad ready line {line:?}")).to_owned();
    (child, addr)
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        remove_endpoint(&self.addr);
    }
}

/// The files a killed server at `addr` cannot remove (the next server on the address would
/// reclaim them): a `unix://` socket file, a `fifo://` connect FIFO, an `mq://` connect queue
/// (as `/dev/mqueue` lists it where the mqueue file system is mounted there).
pub fn endpoint_files(addr: &str) -> Vec<std::path::PathBuf> {
    let mut files: Vec<std::path::PathBuf> =
        ["unix://", "fifo://"].iter().filter_map(|scheme| addr.strip_prefix(scheme)).map(Into::into).collect();
    if let Some(name) = addr.strip_prefix("mq://") {
        files.push(std::path::Path::new("/dev/mqueue").join(name));
    }
    files
}

/// Removes what a killed server at `addr` leaves behind: its socket file, its connect queue,
/// the directory of its connect FIFO (every `fifo://` address of these tests has its own).
pub fn remove_endpoint(addr: &str) {
    if let Some(path) = addr.strip_prefix("unix://") {
        let _ = std::fs::remove_file(path);
    }
    if let Some(dir) = addr.strip_prefix("fifo://").and_then(|path| std::path::Path::new(path).parent()) {
        let _ = std::fs::remove_dir_all(dir);
    }
    #[cfg(target_os = "linux")]
    if let Some(name) = addr.strip_prefix("mq://") {
        let name = std::ffi::CString::new(format!("/{name}")).unwrap();
        // SAFETY: mq_unlink reads the NUL-terminated name, which outlives the call.
        unsafe { libc::mq_unlink(name.as_ptr()) };
    }
}

/// Open descriptors of process `pid`, from /proc/PID/fd.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

/// Resident memory of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

pub type RawStream = Box<dyn RawIo>;
pub trait RawIo: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> RawIo for T {}

/// A plain byte stream to a tcp://, unix:// or (Linux) local:// server: no framing, no hello.
pub async fn raw_stream(addr: &str) -> RawStream {
    if let Some(hostport) = addr.strip_prefix("tcp://") {
        return Box::new(tokio::net::TcpStream::connect(hostport).await.unwrap());
    }
    #[cfg(unix)]
    if let Some(path) = addr.strip_prefix("unix://") {
        return Box::new(tokio::net::UnixStream::connect(path).await.unwrap());
    }
    #[cfg(target_os = "linux")]
    if let Some(name) = addr.strip_prefix("local://") {
        // On Linux `local://name` is the abstract Unix socket address "\0name".
        use std::os::linux::net::SocketAddrExt;
        let sockaddr = std::os::unix::net::SocketAddr::from_abstract_name(name).unwrap();
        let std_stream = std::os::unix::net::UnixStream::connect_addr(&sockaddr).unwrap();
        std_stream.set_nonblocking(true).unwrap();
        return Box::new(tokio::net::UnixStream::from_std(std_stream).unwrap());
    }
    panic!("no raw byte stream for {addr}")
}
