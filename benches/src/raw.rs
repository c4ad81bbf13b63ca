//! The limit: a blocking ping-pong over the bare OS socket, no framework, no async runtime.
//!
//! On connect the client sends the message size as 8 little-endian bytes; from then on the
//! server reads exactly that many bytes and writes them back, until the client hangs up. The
//! client times each 16-byte round trip (latency) and a run of 1 MiB echoes (bulk), with the
//! buffers allocated before the timed loops.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::Instant;

use crate::endpoint::Endpoint;
use crate::measure::{Config, LatencyStats};

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
    }
    Ok(())
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
fn connect_abstract(name: &str) -> io::Result<UnixStream> {
    use std::os::linux::net::SocketAddrExt;
    UnixStream::connect_addr(&std::os::unix::net::SocketAddr::from_abstract_name(name)?)
}

#[cfg(not(target_os = "linux"))]
fn connect_abstract(_: &str) -> io::Result<UnixStream> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "abstract Unix sockets are Linux-only"))
}

fn echo_loop<S: Read + Write>(mut stream: S) -> io::Result<()> {
    let mut size = [0u8; 8];
    stream.read_exact(&mut size)?;
    let mut buf = vec![0u8; u64::from_le_bytes(size) as usize];
    loop {
        match stream.read_exact(&mut buf) {
            Ok(()) => stream.write_all(&buf)?,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

/// A connected raw client stream of whichever kind.
trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

fn connect(endpoint: &Endpoint, size: usize) -> io::Result<Box<dyn Stream>> {
    let mut stream: Box<dyn Stream> = match endpoint {
        Endpoint::Tcp(addr) => {
            let s = TcpStream::connect(addr)?;
            s.set_nodelay(true)?;
            Box::new(s)
        }
        Endpoint::Unix(path) => Box::new(UnixStream::connect(path)?),
        Endpoint::Abstract(name) => Box::new(connect_abstract(name)?),
    };
    stream.write_all(&(size as u64).to_le_bytes())?;
    Ok(stream)
}

/// What one raw run measured.
pub struct RawResult {
    /// Round trips of 16 bytes.
    pub latency: LatencyStats,
    /// 1 MiB echoes, MB/s of payload.
    pub bulk_mb_s: f64,
}

/// Measures 16-byte round trips, then 1 MiB echoes, against a raw server at `endpoint`.
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

    let mut stream = connect(endpoint, config.bulk_size)?;
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
    Ok(RawResult { latency, bulk_mb_s })
}
