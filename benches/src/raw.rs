//! The limit: a blocking ping-pong over the bare OS primitive (a socket, a pair of named FIFOs,
//! or a child's stdin/stdout pipes; for `tls`, a rustls session over TCP, see `raw_tls.rs`), no
//! framework, no async runtime.
//!
//! On connect the client sends the message size as 8 little-endian bytes; from then on the
//! server reads exactly that many bytes and writes them back, until the client hangs up. The
//! client times each 16-byte round trip (latency) and a run of 1 MiB echoes (bulk), with the
//! buffers allocated before the timed loops.
//!
//! A size with the [`ONE_WAY`] bit set asks for one-way bulk instead (the limit of a server
//! stream of chunks): the client then sends a count as 8 little-endian bytes, the server writes
//! that many messages of the size back to back, and waits for the next count. The client times
//! reading them; nothing is echoed, so this rate is one-way, not derived from the echo.
//!
//! FIFOs serve one connection at a time: server and client both open `c2s` first, then `s2c`
//! (so neither open can wait for the other forever), and a client hangs up by closing `c2s` and
//! reading `s2c` to EOF, so the server has closed both before the next client opens them. Pipes
//! (FIFOs and a spawned child's stdio) are enlarged to 1 MiB where the OS allows, as ours are.
//!
//! Message queues (Linux) are used like the FIFO pair: the server creates `/<name>.c2s` and
//! `/<name>.s2c` with the shape `mq://` gives a connection (`mq::MQ_SHAPE`), serves one client at
//! a time, and bytes travel in messages of at most the message size; a client hangs up with an
//! empty message.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Instant;

use crate::endpoint::{fifo_path, Endpoint};
use crate::measure::{Config, LatencyStats, SweepPoint, SWEEP_SIZES};

/// The bit of the size announcement that asks for one-way bulk (see the module documentation).
pub const ONE_WAY: u64 = 1 << 63;

/// Runs the raw echo server on `endpoint` until the process is told to stop; prints the
/// `listening` line first. One thread per connection.
pub fn serve(endpoint: &Endpoint) -> io::Result<()> {
    match endpoint {
        Endpoint::Tcp(addr) => {
            let listener = TcpListener::bind(addr)?;
            crate::announce(&Endpoint::Tcp(listener.local_addr()?.to_string()));
            for stream in listener.incoming() {
                let stream = stream?;
                // As our tcp:// transport does: without it, Nagle + delayed ACK add ~40 ms.
                stream.set_nodelay(true)?;
                std::thread::spawn(move || echo_loop(stream));
            }
        }
        Endpoint::Tls { addr, cert, key } => crate::raw_tls::serve(addr, cert, key)?,
        Endpoint::Unix(path) => {
            let listener = UnixListener::bind(path)?;
            crate::announce(endpoint);
            serve_unix(listener)?;
        }
        Endpoint::Abstract(name) => {
            let listener = bind_abstract(name)?;
            crate::announce(endpoint);
            serve_unix(listener)?;
        }
        Endpoint::Fifo(stem) => {
            let (c2s, s2c) = (fifo_path(stem, "c2s"), fifo_path(stem, "s2c"));
            mkfifo(&c2s)?;
            mkfifo(&s2c)?;
            crate::announce(endpoint);
            loop {
                // The client opens in the same order; both opens block until it has.
                let r = File::open(&c2s)?;
                let w = OpenOptions::new().write(true).open(&s2c)?;
                grow_pipe(&r);
                // Fields drop in order: c2s is closed before s2c, whose EOF tells the client.
                echo_loop(Duplex { r, w })?;
            }
        }
        #[cfg(target_os = "linux")]
        Endpoint::Shm(name) => crate::raw_shm::serve(name, || crate::announce(endpoint))?,
        #[cfg(target_os = "linux")]
        Endpoint::Spin(name) => {
            let listener = bind_abstract(name)?;
            crate::announce(endpoint);
            crate::raw_spin::serve(listener)?;
        }
        #[cfg(not(target_os = "linux"))]
        Endpoint::Shm(_) | Endpoint::Spin(_) => {
            return Err(io::Error::new(io::ErrorKind::Unsupported, "shared memory is Linux only here"))
        }
        Endpoint::Spawn(_) => {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "spawn: has no listener; see serve_stdio"))
        }
        #[cfg(target_os = "linux")]
        Endpoint::Mq(name) => {
            let (r, w) = (mq::create(&format!("/{name}.c2s"))?, mq::create(&format!("/{name}.s2c"))?);
            crate::announce(endpoint);
            let mut duplex = mq::Duplex::new(r, w)?;
            loop {
                echo_loop(&mut duplex)?;
            }
        }
        #[cfg(not(target_os = "linux"))]
        Endpoint::Mq(_) => return Err(no_mq()),
    }
    Ok(())
}

/// The child side of [`Endpoint::Spawn`]: echoes over this process's stdin and stdout until
/// stdin reaches EOF. Unbuffered: the descriptors themselves, not `std::io::Stdout`.
pub fn serve_stdio() -> io::Result<()> {
    use std::os::fd::AsFd;
    let r = File::from(io::stdin().as_fd().try_clone_to_owned()?);
    let w = File::from(io::stdout().as_fd().try_clone_to_owned()?);
    echo_loop(Duplex { r, w })
}

fn mkfifo(path: &Path) -> io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: `c` is a valid NUL-terminated path.
    if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Enlarges a pipe's buffer to 1 MiB where the OS allows (as our fifo:// and spawn: do);
/// failure just leaves the default.
fn grow_pipe(fd: &impl AsRawFd) {
    #[cfg(target_os = "linux")]
    // SAFETY: F_SETPIPE_SZ on a descriptor we own; an error is harmless.
    unsafe {
        libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = fd;
}

/// A read half and a write half used as one stream.
struct Duplex<R, W> {
    r: R,
    w: W,
}

impl<R: Read, W> Read for Duplex<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.r.read(buf)
    }
}

impl<R, W: Write> Write for Duplex<R, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.w.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }
}

/// The client end of a FIFO pair; on drop it hangs up as the module documentation describes.
struct FifoClient {
    w: Option<File>,
    r: File,
}

impl FifoClient {
    fn connect(stem: &Path) -> io::Result<Self> {
        let w = OpenOptions::new().write(true).open(fifo_path(stem, "c2s"))?;
        let r = File::open(fifo_path(stem, "s2c"))?;
        grow_pipe(&r);
        Ok(Self { w: Some(w), r })
    }
}

impl Read for FifoClient {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.r.read(buf)
    }
}

impl Write for FifoClient {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.w.as_mut().ok_or(io::ErrorKind::BrokenPipe)?.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for FifoClient {
    fn drop(&mut self) {
        drop(self.w.take());
        let _ = io::copy(&mut self.r, &mut io::sink());
    }
}

/// A child running `rpc-bench --serve-stdio-raw`; on drop its stdin is closed and it is waited for.
struct SpawnClient {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: ChildStdout,
}

impl SpawnClient {
    fn connect(cpu: Option<usize>) -> io::Result<Self> {
        let mut command = Command::new(std::env::current_exe()?);
        command.arg("--serve-stdio-raw").stdin(Stdio::piped()).stdout(Stdio::piped());
        if let Some(cpu) = cpu {
            command.args(["--cpu", &cpu.to_string()]);
        }
        let mut child = command.spawn()?;
        let (stdin, stdout) = (child.stdin.take(), child.stdout.take());
        let (Some(stdin), Some(stdout)) = (stdin, stdout) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::other("spawned child has no stdio pipes"));
        };
        grow_pipe(&stdin);
        grow_pipe(&stdout);
        Ok(Self { child, stdin: Some(stdin), stdout })
    }
}

impl Read for SpawnClient {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stdout.read(buf)
    }
}

impl Write for SpawnClient {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stdin.as_mut().ok_or(io::ErrorKind::BrokenPipe)?.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for SpawnClient {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

fn serve_unix(listener: UnixListener) -> io::Result<()> {
    for stream in listener.incoming() {
        let stream = stream?;
        std::thread::spawn(move || echo_loop(stream));
    }
    Ok(())
}

#[cfg(target_os = "linux")]
fn bind_abstract(name: &str) -> io::Result<UnixListener> {
    use std::os::linux::net::SocketAddrExt;
    UnixListener::bind_addr(&std::os::unix::net::SocketAddr::from_abstract_name(name)?)
}

#[cfg(not(target_os = "linux"))]
fn bind_abstract(_: &str) -> io::Result<UnixListener> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "abstract Unix sockets are Linux-only"))
}

#[cfg(target_os = "linux")]
pub(crate) fn connect_abstract(name: &str) -> io::Result<UnixStream> {
    use std::os::linux::net::SocketAddrExt;
    UnixStream::connect_addr(&std::os::unix::net::SocketAddr::from_abstract_name(name)?)
}

#[cfg(not(target_os = "linux"))]
#[allow(dead_code)]
pub(crate) fn connect_abstract(_: &str) -> io::Result<UnixStream> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "abstract Unix sockets are Linux-only"))
}

/// Unlinks a message queue left by a raw or `mq://` server (Linux; nothing elsewhere).
pub fn unlink_queue(name: &str) {
    #[cfg(target_os = "linux")]
    if let Ok(name) = CString::new(name) {
        // SAFETY: mq_unlink reads the NUL-terminated name, which outlives the call.
        unsafe { libc::mq_unlink(name.as_ptr()) };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = name;
}

#[cfg(not(target_os = "linux"))]
fn no_mq() -> io::Error {
    io::Error::new(io::ErrorKind::Unsupported, "POSIX message queues are Linux-only here")
}

/// The raw message-queue ping-pong: blocking `mq_send` / `mq_receive` as byte streams.
#[cfg(target_os = "linux")]
mod mq {
    use std::ffi::CString;
    use std::io::{self, Read, Write};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    /// The shape `mq://` gives a connection's queues when the user's budget allows: depth 4,
    /// messages of 2 KiB.
    pub const MQ_SHAPE: (usize, usize) = (4, 2048);

    fn name(name: &str) -> io::Result<CString> {
        CString::new(name).map_err(io::Error::other)
    }

    fn owned(fd: libc::mqd_t) -> io::Result<OwnedFd> {
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: on Linux an mqd_t is a file descriptor, just returned to us.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// Creates the queue `name` (read-write, mode 0600, [`MQ_SHAPE`]).
    pub fn create(queue: &str) -> io::Result<OwnedFd> {
        let c = name(queue)?;
        // SAFETY: an all-zero mq_attr is valid (integers and padding).
        let mut attr: libc::mq_attr = unsafe { std::mem::zeroed() };
        attr.mq_maxmsg = MQ_SHAPE.0 as libc::c_long;
        attr.mq_msgsize = MQ_SHAPE.1 as libc::c_long;
        let flags = libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC;
        // SAFETY: with O_CREAT mq_open reads a mode (as the promoted c_uint) and a pointer to an
        // mq_attr that outlives the call; `c` is NUL-terminated.
        owned(unsafe { libc::mq_open(c.as_ptr(), flags, 0o600 as libc::c_uint, &attr as *const libc::mq_attr) })
    }

    fn open(queue: &str) -> io::Result<OwnedFd> {
        let c = name(queue)?;
        // SAFETY: without O_CREAT mq_open reads only the NUL-terminated name.
        owned(unsafe { libc::mq_open(c.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) })
    }

    /// One queue to read from and one to write to, as a byte stream.
    pub struct Duplex {
        r: OwnedFd,
        w: OwnedFd,
        msg_size: usize,
        /// The message being read, and how much of it was taken.
        buf: Vec<u8>,
        at: usize,
        len: usize,
    }

    impl Duplex {
        pub fn new(r: OwnedFd, w: OwnedFd) -> io::Result<Self> {
            // SAFETY: an all-zero mq_attr is valid.
            let mut attr: libc::mq_attr = unsafe { std::mem::zeroed() };
            // SAFETY: mq_getattr writes one mq_attr into `attr`; `r` is an open queue.
            if unsafe { libc::mq_getattr(r.as_raw_fd(), &mut attr) } != 0 {
                return Err(io::Error::last_os_error());
            }
            let msg_size = attr.mq_msgsize as usize;
            Ok(Self { r, w, msg_size, buf: vec![0; msg_size], at: 0, len: 0 })
        }

        fn send(&self, bytes: &[u8]) -> io::Result<()> {
            // SAFETY: pointer and length describe `bytes`, which mq_send only reads.
            if unsafe { libc::mq_send(self.w.as_raw_fd(), bytes.as_ptr().cast(), bytes.len(), 0) } != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        }
    }

    impl Read for Duplex {
        /// Reads from the current message; an empty message is the peer hanging up (EOF).
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            if self.at == self.len {
                let mut priority = 0;
                // SAFETY: mq_receive writes at most `buf.len()` (the message size) bytes into
                // `buf` and one c_uint into `priority`.
                let n = unsafe {
                    libc::mq_receive(self.r.as_raw_fd(), self.buf.as_mut_ptr().cast(), self.buf.len(), &mut priority)
                };
                if n < 0 {
                    return Err(io::Error::last_os_error());
                }
                (self.at, self.len) = (0, n as usize);
            }
            let n = out.len().min(self.len - self.at);
            out[..n].copy_from_slice(&self.buf[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    impl Write for Duplex {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            let n = bytes.len().min(self.msg_size);
            self.send(&bytes[..n])?;
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// The client of a raw queue pair; on drop it hangs up with an empty message.
    pub struct Client(Duplex);

    impl Client {
        pub fn connect(name: &str) -> io::Result<Self> {
            let w = open(&format!("/{name}.c2s"))?;
            let r = open(&format!("/{name}.s2c"))?;
            Ok(Self(Duplex::new(r, w)?))
        }
    }

    impl Read for Client {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            self.0.read(out)
        }
    }

    impl Write for Client {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.write(bytes)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Drop for Client {
        fn drop(&mut self) {
            let _ = self.0.send(&[]);
        }
    }
}

/// The raw server's side of a connection: reads the size announcement, then echoes messages of
/// that size (or sends one-way bulk, see [`ONE_WAY`]) until the client hangs up.
pub(crate) fn echo_loop<S: Read + Write>(mut stream: S) -> io::Result<()> {
    let mut size = [0u8; 8];
    stream.read_exact(&mut size)?;
    let size = u64::from_le_bytes(size);
    if size & ONE_WAY != 0 {
        return send_loop(stream, (size & !ONE_WAY) as usize);
    }
    let mut buf = vec![0u8; size as usize];
    loop {
        match stream.read_exact(&mut buf) {
            Ok(()) => stream.write_all(&buf)?,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

/// One-way bulk: for each count the client sends, that many messages of `size` bytes.
fn send_loop<S: Read + Write>(mut stream: S, size: usize) -> io::Result<()> {
    let buf = vec![0x5au8; size];
    let mut count = [0u8; 8];
    loop {
        match stream.read_exact(&mut count) {
            Ok(()) => {
                for _ in 0..u64::from_le_bytes(count) {
                    stream.write_all(&buf)?;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

/// A connected raw client stream of whichever kind.
trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

/// Connects and sends the size announcement `header` (a size, possibly with [`ONE_WAY`]).
fn connect(endpoint: &Endpoint, header: u64) -> io::Result<Box<dyn Stream>> {
    let mut stream: Box<dyn Stream> = match endpoint {
        Endpoint::Tcp(addr) => {
            let s = TcpStream::connect(addr)?;
            s.set_nodelay(true)?;
            Box::new(s)
        }
        Endpoint::Tls { addr, cert, .. } => Box::new(crate::raw_tls::connect(addr, cert)?),
        Endpoint::Unix(path) => Box::new(UnixStream::connect(path)?),
        Endpoint::Abstract(name) => Box::new(connect_abstract(name)?),
        Endpoint::Fifo(stem) => Box::new(FifoClient::connect(stem)?),
        Endpoint::Spawn(cpu) => Box::new(SpawnClient::connect(*cpu)?),
        #[cfg(target_os = "linux")]
        Endpoint::Shm(name) => Box::new(crate::raw_shm::Client::connect(name)?),
        // The mapping is sized from the announcement, which it then carries like any message.
        #[cfg(target_os = "linux")]
        Endpoint::Spin(name) => Box::new(crate::raw_spin::Spin::connect(name, header)?),
        #[cfg(not(target_os = "linux"))]
        Endpoint::Shm(_) | Endpoint::Spin(_) => {
            return Err(io::Error::new(io::ErrorKind::Unsupported, "shared memory is Linux only here"))
        }
        #[cfg(target_os = "linux")]
        Endpoint::Mq(name) => Box::new(mq::Client::connect(name)?),
        #[cfg(not(target_os = "linux"))]
        Endpoint::Mq(_) => return Err(no_mq()),
    };
    stream.write_all(&header.to_le_bytes())?;
    Ok(stream)
}

/// What one raw run measured.
pub struct RawResult {
    /// Round trips of 16 bytes.
    pub latency: LatencyStats,
    /// 1 MiB echoes, MB/s of payload.
    pub bulk_mb_s: f64,
    /// One-way messages of [`Config::chunk_size`] from the server, MB/s of payload.
    pub one_way_mb_s: f64,
    /// Echoes at each of [`SWEEP_SIZES`].
    pub sweep: Vec<SweepPoint>,
}

/// Measures 16-byte round trips, then 1 MiB echoes, then one-way bulk in chunks, then the
/// payload sweep (a connection per size, up to [`Config::sweep_max`]), against a raw server at
/// `endpoint`.
pub fn measure(endpoint: &Endpoint, config: &Config) -> io::Result<RawResult> {
    let mut stream = connect(endpoint, 16)?;
    let mut buf = [7u8; 16];
    for _ in 0..config.warmup {
        stream.write_all(&buf)?;
        stream.read_exact(&mut buf)?;
    }
    let mut samples = Vec::with_capacity(config.latency_calls);
    for _ in 0..config.latency_calls {
        let start = Instant::now();
        stream.write_all(&buf)?;
        stream.read_exact(&mut buf)?;
        samples.push(start.elapsed());
    }
    drop(stream);
    let latency = LatencyStats::from_samples(&mut samples);

    let mut stream = connect(endpoint, config.bulk_size as u64)?;
    let out = vec![0x5au8; config.bulk_size];
    let mut back = vec![0u8; config.bulk_size];
    // One warm-up echo: the first grows the socket buffers.
    stream.write_all(&out)?;
    stream.read_exact(&mut back)?;
    let start = Instant::now();
    for _ in 0..config.bulk_calls {
        // The server reads the whole message before it answers, so writing all of it before
        // reading cannot deadlock.
        stream.write_all(&out)?;
        stream.read_exact(&mut back)?;
    }
    let bulk_mb_s = crate::measure::mb_per_s(config.bulk_size, config.bulk_calls, start.elapsed());
    if back != out {
        return Err(io::Error::other("raw echo returned different bytes"));
    }
    drop(stream);

    let mut stream = connect(endpoint, ONE_WAY | config.chunk_size as u64)?;
    let mut chunk = vec![0u8; config.chunk_size];
    let mut one_way = |count: usize| -> io::Result<()> {
        stream.write_all(&(count as u64).to_le_bytes())?;
        for _ in 0..count {
            stream.read_exact(&mut chunk)?;
        }
        Ok(())
    };
    // Warm-up: the first messages grow the socket buffers.
    one_way(16)?;
    let start = Instant::now();
    one_way(config.raw_chunks)?;
    let one_way_mb_s = crate::measure::mb_per_s(config.chunk_size, config.raw_chunks, start.elapsed());
    if chunk.iter().any(|&b| b != 0x5a) {
        return Err(io::Error::other("raw one-way bulk returned different bytes"));
    }
    drop(stream);

    let mut sweep = Vec::with_capacity(SWEEP_SIZES.len());
    for (i, &size) in config.sweep_sizes() {
        let mut stream = connect(endpoint, size as u64)?;
        let out = vec![0x5au8; size];
        let mut back = vec![0u8; size];
        for _ in 0..config.sweep_warmup[i] {
            stream.write_all(&out)?;
            stream.read_exact(&mut back)?;
        }
        let mut samples = Vec::with_capacity(config.sweep_calls[i]);
        for _ in 0..config.sweep_calls[i] {
            let start = Instant::now();
            stream.write_all(&out)?;
            stream.read_exact(&mut back)?;
            samples.push(start.elapsed());
        }
        if back != out {
            return Err(io::Error::other(format!("raw {size}-byte echo returned different bytes")));
        }
        sweep.push(SweepPoint::from_samples(size, &mut samples));
    }
    Ok(RawResult { latency, bulk_mb_s, one_way_mb_s, sweep })
}
