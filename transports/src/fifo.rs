//! `fifo:///dir/name`: named FIFOs (`mkfifo`). The listener owns a well-known *connect FIFO* at
//! the path; each connection gets a *private pair* of FIFOs next to it, one per direction, and
//! both sides frame their bytes with the shared length prefix of
//! [`rpc_core::transport::stream`].
//!
//! # The handshake, and why it is ordered this way
//!
//! Opening a FIFO blocks until the other end is opened, unless it is opened with `O_NONBLOCK`;
//! then opening the *read* end always succeeds at once, and opening the *write* end fails with
//! `ENXIO` while nobody has the read end open. Every open here is non-blocking (nothing ever
//! blocks a runtime thread), so the order of opens is what makes the handshake work:
//!
//! 1. The client creates the pair `.<name>.<token>.c2s` and `.<name>.<token>.s2c` (mode 0600, or
//!    [`TransportOptions::mode`]) in the connect FIFO's directory, where `<token>` holds its pid, a
//!    counter and the time, so names are unique. Both sides resolve symlinks in the directory part
//!    of the path (the client also in the FIFO's own name), so a client that reaches the FIFO
//!    through an alias still puts the pair where the server looks for it. It opens `s2c` for
//!    reading, and `c2s` for writing, which needs a reader: it first opens a *placeholder* read end
//!    of `c2s` itself, which it keeps until the server has its own (so its early writes neither
//!    fail with `EPIPE` nor get lost: they wait in the pipe, like bytes a socket sends before the
//!    server accepts).
//! 2. The client writes one *connect record* into the connect FIFO: [`RECORD_LEN`] bytes naming the
//!    token, and `connect` returns. Many clients write into the same FIFO, and `write(2)` of at
//!    most `PIPE_BUF` bytes (at least 512 by POSIX, 4096 on Linux) to a pipe is atomic, so records
//!    from concurrent clients never interleave: each record is exactly [`RECORD_LEN`] (64) bytes,
//!    written with one `write`. The record carries a magic prefix, the token in the exact form
//!    clients write, and zero padding, so a stray writer cannot desynchronise the stream for long
//!    (the reader slides forward to the next magic) nor make a piece of garbage swallow the start
//!    of the next real record. The client keeps its write end of the connect FIFO until the
//!    acknowledgement: should the server exit without reading the record, that end reports an error
//!    (no reader left) and the connection fails with `ConnectionRefused`.
//! 3. The server's `accept` opens `c2s` for reading, then `s2c` for writing (it succeeds: the
//!    client has the read end; `ENXIO` means the client is gone, and the record is dropped). In
//!    this order a failure of the second open leaves the client undisturbed (see `open_pair`). Any
//!    process that can write the connect FIFO can name any token, so both opens refuse symlinks
//!    (`O_NOFOLLOW`), and each opened file must be a FIFO owned by the server's effective user
//!    (clients must run as that user), with one name, distinct from the other and from the connect
//!    FIFO; anything else drops the record and is left untouched (only files so verified are ever
//!    unlinked, and only while their names still lead to them). Running out of descriptors is not
//!    the client's fault: the record is kept and `accept` fails, to be retried. Now all four ends
//!    are open, so it **unlinks both FIFOs** at once: from here on the connection lives only in
//!    open file descriptors, and a SIGKILL of either side leaves nothing on disk. It writes one
//!    acknowledgement byte into `s2c`.
//! 4. The client's receiving half reads that byte first, then drops its placeholder read end (and
//!    unlinks the pair too, harmlessly). A client whose connection is dropped before the
//!    acknowledgement (the server never accepted) unlinks the pair itself.
//!
//! Only one process writes into each private FIFO, and the shared framing writes whole frames
//! in order, so frames larger than `PIPE_BUF` (not atomic) cannot interleave with anything.
//!
//! # Liveness and cleanup
//!
//! EOF on a private FIFO means the peer closed or died. The listener keeps a write end of its
//! own connect FIFO open, so its reads never see EOF between clients, and so that "someone has
//! the read end open" means "a server is alive": a `listen` that finds a FIFO at its path probes
//! it with a non-blocking open for writing. `ENXIO` means nobody reads it: a crashed server's
//! file, which is unlinked (if it is still the file probed) and replaced; success means a live
//! server, which is never displaced (`AddrInUse`). Like `unix://`, the connect FIFO is created
//! under a temporary name, chmod-ed and opened, and only then hard-linked to the final path, so
//! it is never visible with looser permissions, and is live the moment it appears. The listener
//! removes it when dropped, if it is still its own file.
//!
//! One window remains: a client killed after creating its pair but before the server accepted
//! leaves the pair behind (two empty FIFOs). Their names start with the client's pid, so
//! `listen` sweeps the pairs of processes that no longer exist from the directory.

use std::ffi::CString;
use std::fs;
use std::future::Future;
use std::io;
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use rpc_core::transport::stream::framed;
use rpc_core::transport::{BoxFuture, Connection, ConnectionInfo, Listener};
use tokio::io::{AsyncRead, Interest, ReadBuf};
use tokio::net::unix::pipe;

use crate::accept::PendingAccept;
use crate::context::describe;
use crate::endpoint::{self, remove_if_ours, remove_stale, FileId, TempName};
use crate::options::{Framing, TransportOptions};
use crate::pipes;
use crate::rendezvous::{self, RECORD_LEN};
use crate::spin_read::SpinRead;
use rpc_core::transport::transient::is_exhaustion;

const MAGIC: &[u8; 8] = b"rpcfifo1";
/// The byte the server writes into `s2c` once it holds both ends of the pair.
const ACK: u8 = 0x06;
// `write(2)` atomicity is what keeps concurrent clients' records apart.
const _: () = assert!(RECORD_LEN <= 512, "records must fit the POSIX minimum PIPE_BUF");

fn peer_name(path: &Path) -> String {
    format!("fifo://{}", path.display())
}

/// Connects to the server whose connect FIFO is at `path` (see the module docs).
pub(crate) async fn connect(path: &Path, options: &TransportOptions) -> io::Result<Connection> {
    let no_fifo = |e: io::Error| {
        if e.kind() == io::ErrorKind::NotFound {
            io::Error::new(io::ErrorKind::NotFound, "no connect FIFO at this path (is the server running?)")
        } else {
            e
        }
    };
    let metadata = fs::metadata(path).map_err(no_fifo)?;
    // The pair goes next to the connect FIFO's real file, which is where the server looks for
    // it, not next to a symlink or through a symlinked directory.
    let real_path = fs::canonicalize(path).map_err(no_fifo)?;
    if !metadata.file_type().is_fifo() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "the file at this path is not a FIFO"));
    }
    let control = match pipe::OpenOptions::new().open_sender(&real_path) {
        Ok(control) => control,
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                "no server is listening (the FIFO is left over from a server that exited)",
            ));
        }
        Err(e) => return Err(e),
    };
    let pair = Pair::create(&real_path, options.permission_bits())?;
    let from_server = pipe::OpenOptions::new().open_receiver(&pair.s2c)?;
    let placeholder = open_nonblocking(&pair.c2s, false)?;
    let to_server = pipe::OpenOptions::new().open_sender(&pair.c2s)?;
    write_record(&control, &record(&pair.token)).await?;
    let server_gone = server_gone(control);
    pipes::enlarge(to_server.as_fd());
    pipes::enlarge(from_server.as_fd());
    let framing = options.framing();
    let max_frame_len = framing.max_frame_len;
    let from_server = SpinRead::new(from_server, |r| r.as_fd(), framing.spin);
    let from_server = AckFirst { inner: from_server, pending: Some((placeholder, pair)), server_gone };
    let (sender, receiver) = framed(from_server, pipes::CloseOnShutdown::new(to_server), max_frame_len);
    Ok(Connection {
        sender: Box::new(sender),
        receiver: Box::new(receiver),
        // A FIFO cannot tell who opened its other end: no peer credentials.
        info: ConnectionInfo::new("fifo", peer_name(path), max_frame_len),
    })
}

/// Writes one record with a single `write(2)`: atomic because it is at most `PIPE_BUF` bytes,
/// and a non-blocking write of that size writes everything or nothing.
async fn write_record(control: &pipe::Sender, record: &[u8; RECORD_LEN]) -> io::Result<()> {
    loop {
        control.writable().await?;
        match control.try_write(record) {
            Ok(n) if n == RECORD_LEN => return Ok(()),
            Ok(_) => return Err(io::Error::new(io::ErrorKind::WriteZero, "short write of a connect record")),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                return Err(io::Error::new(io::ErrorKind::ConnectionRefused, "the server stopped listening"));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Resolves once nobody has the connect FIFO's read end open any more: the write end `control`
/// then reports `EPOLLERR`. A client keeps it until the acknowledgement, so that a server that
/// exits (or is killed) with its record unread fails the connection instead of leaving it
/// waiting forever. `None` if the descriptor cannot be watched (then nothing is watched).
fn server_gone(control: pipe::Sender) -> Option<Pin<Box<dyn Future<Output = ()> + Send>>> {
    let fd = control.into_nonblocking_fd().ok()?;
    let fd = crate::watch::watch(fd, Interest::ERROR).ok()?;
    Some(Box::pin(async move {
        let _ = fd.ready(Interest::ERROR).await;
    }))
}

pub(crate) fn record(token: &str) -> [u8; RECORD_LEN] {
    rendezvous::encode(MAGIC, &[], token)
}

/// The token of a well-formed record at the start of `record`; `None` for anything else (see
/// [`rendezvous`] for the form it must have).
pub(crate) fn parse_record(record: &[u8]) -> Option<String> {
    rendezvous::decode(record.get(..RECORD_LEN)?, MAGIC, 0).map(|(_, token)| token.to_owned())
}

/// A connection's private FIFO pair; both names are unlinked on drop (a missing file is fine:
/// either side may have unlinked it first).
struct Pair {
    token: String,
    c2s: PathBuf,
    s2c: PathBuf,
}

/// The names of the pair `token` names next to the connect FIFO at `control`: `(c2s, s2c)`.
fn pair_names(control: &Path, token: &str) -> io::Result<(PathBuf, PathBuf)> {
    let dir = control.parent().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no directory"))?;
    let name = control.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    Ok((dir.join(format!(".{name}.{token}.c2s")), dir.join(format!(".{name}.{token}.s2c"))))
}

impl Pair {
    fn paths(control: &Path, token: String) -> io::Result<Pair> {
        let (c2s, s2c) = pair_names(control, &token)?;
        Ok(Pair { c2s, s2c, token })
    }

    fn create(control: &Path, mode: u32) -> io::Result<Pair> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_nanos();
        let pair = Pair::paths(control, rendezvous::token(n, nanos.into()))?;
        mkfifo(&pair.c2s, mode)?;
        mkfifo(&pair.s2c, mode)?;
        Ok(pair)
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.c2s);
        let _ = fs::remove_file(&self.s2c);
    }
}

/// Creates a FIFO with exactly `mode` (mkfifo applies the umask; a umask can only take bits
/// away, so the file is never looser than `mode`, and chmod then sets it exactly).
fn mkfifo(path: &Path, mode: u32) -> io::Result<()> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "the path contains a NUL byte"))?;
    // SAFETY: `c_path` is a valid NUL-terminated string that outlives the call; mkfifo reads it
    // and nothing else of ours.
    if unsafe { libc::mkfifo(c_path.as_ptr(), mode as libc::mode_t) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if let Err(e) = fs::set_permissions(path, fs::Permissions::from_mode(mode)) {
        let _ = fs::remove_file(path);
        return Err(e);
    }
    Ok(())
}

/// Creates the connect FIFO at `path` (see the module docs) and listens on it.
pub(crate) async fn listen(path: &Path, options: &TransportOptions) -> io::Result<FifoListener> {
    let dir = path
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path has no directory part"))?;
    if !dir.is_dir() {
        return Err(io::Error::new(io::ErrorKind::NotFound, format!("the directory {} does not exist", dir.display())));
    }
    // Clients put their pairs next to the connect FIFO's real file (they canonicalize the path),
    // so the listener works in the directory's real path too.
    let addr = peer_name(path);
    let file_name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path has no file name part"))?;
    let dir = &fs::canonicalize(dir)?;
    let real_path = dir.join(file_name);
    let path = real_path.as_path();
    sweep_dead_pairs(path);
    let temp = TempName::new(dir, "rpcfifo");
    mkfifo(&temp.path, options.permission_bits())?;
    let temp = temp.created();
    let id = FileId::at(&temp.path)?;
    let reader = pipe::OpenOptions::new().open_receiver(&temp.path)?;
    // Our own write end: reads never hit EOF between clients, and probes see a live reader.
    let keepalive = pipe::OpenOptions::new().open_sender(&temp.path)?;
    endpoint::link_into_place(&temp.path, path, || std::future::ready(reclaim_if_stale(path))).await?;
    Ok(FifoListener {
        reader,
        _keepalive: keepalive,
        buf: Vec::with_capacity(4 * RECORD_LEN),
        pending: None,
        path: path.to_owned(),
        id,
        addr,
        framing: options.framing(),
    })
}

/// Removes the private FIFOs of clients of `control` that died during their handshake: pairs
/// whose token's pid names no process. A pid that exists (even if reused) keeps its files.
fn sweep_dead_pairs(control: &Path) {
    let (Some(dir), Some(name)) = (control.parent(), control.file_name()) else { return };
    let prefix = format!(".{}.", name.to_string_lossy());
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let file_name = file_name.to_string_lossy();
        let Some(rest) = file_name.strip_prefix(&prefix) else { continue };
        let Some(token) = rest.strip_suffix(".c2s").or_else(|| rest.strip_suffix(".s2c")) else { continue };
        let Some(pid) = token.split('-').next().and_then(|pid| i32::from_str_radix(pid, 16).ok()) else { continue };
        if pid <= 0 || !entry.file_type().is_ok_and(|t| t.is_fifo()) {
            continue;
        }
        // SAFETY: kill(2) with signal 0 sends nothing; it only checks whether `pid` exists.
        let gone =
            unsafe { libc::kill(pid, 0) } == -1 && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if gone {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Opens a FIFO without blocking (`ENXIO` for writing while it has no reader), refusing anything
/// that is not a FIFO with `InvalidInput`.
fn open_nonblocking(path: &Path, write: bool) -> io::Result<fs::File> {
    let file = fs::OpenOptions::new().read(!write).write(write).custom_flags(libc::O_NONBLOCK).open(path)?;
    if !file.metadata()?.file_type().is_fifo() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a FIFO"));
    }
    Ok(file)
}

/// Decides what to do about an existing file at `path`: `Ok` if it was a stale FIFO and is gone
/// (or vanished by itself), an error if it must be left alone.
fn reclaim_if_stale(path: &Path) -> io::Result<()> {
    let metadata = match fs::symlink_metadata(path) {
        Ok(metadata) => metadata,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !metadata.file_type().is_fifo() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "a file that is not a FIFO exists at this path (it was left alone)",
        ));
    }
    // A non-blocking open for writing succeeds only while some process has the read end open:
    // a live listener always has.
    let probe = fs::OpenOptions::new().write(true).custom_flags(libc::O_NONBLOCK).open(path);
    match probe {
        Ok(_probe) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "another server is already listening there (its FIFO was left alone)",
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => remove_stale(path, FileId::of(&metadata), "FIFO"),
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("a FIFO exists at this path and probing it failed: {} (it was left alone)", describe(&e)),
        )),
    }
}

/// A listener on a connect FIFO, which it removes when dropped.
#[derive(Debug)]
pub(crate) struct FifoListener {
    reader: pipe::Receiver,
    _keepalive: pipe::Sender,
    /// Bytes read from the connect FIFO that do not make a whole record yet, or records not yet
    /// taken: kept here, not in the accept future, so dropping that future loses nothing.
    buf: Vec<u8>,
    /// The token of a record taken but not yet served because descriptors ran out: retried
    /// first (see [`PendingAccept`]).
    pending: Option<String>,
    path: PathBuf,
    id: FileId,
    addr: String,
    framing: Framing,
}

impl FifoListener {
    /// Takes the token of the well-formed record at the start of `buf`, sliding past garbage.
    fn take_record(&mut self) -> Option<String> {
        while self.buf.len() >= RECORD_LEN {
            if let Some(token) = parse_record(&self.buf[..RECORD_LEN]) {
                self.buf.drain(..RECORD_LEN);
                return Some(token);
            }
            // Not a record at this offset: resynchronise at the next possible magic.
            let skip = self.buf[1..].iter().position(|&b| b == MAGIC[0]).map_or(self.buf.len(), |p| p + 1);
            self.buf.drain(..skip);
        }
        None
    }

    /// Opens one end of a pair a record names, refusing anything but a FIFO a client of ours
    /// made for us: symlinks are not followed (`ELOOP`), and the opened file must be a FIFO owned
    /// by our effective user, with a single name, and not our own connect FIFO. A refusal is
    /// `InvalidInput`.
    fn open_verified(&self, path: &Path, write: bool) -> io::Result<(fs::File, FileId)> {
        let file = fs::OpenOptions::new()
            .read(!write)
            .write(write)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(path)?;
        let metadata = file.metadata()?;
        let id = FileId::of(&metadata);
        let euid = rustix::process::geteuid().as_raw();
        if !metadata.file_type().is_fifo() || metadata.uid() != euid || metadata.nlink() != 1 || id == self.id {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a private FIFO of a client of this server"));
        }
        Ok((file, id))
    }

    /// Removes the names of a pair whose client is gone, each only if it verifiably is a FIFO
    /// of such a pair (opening a FIFO's read end without blocking always succeeds).
    fn remove_abandoned(&self, c2s: &Path, s2c: &Path) {
        for path in [c2s, s2c] {
            if let Ok((_file, id)) = self.open_verified(path, false) {
                remove_if_ours(path, id);
            }
        }
    }

    /// Opens the pair a record names (no await: accept stays cancel-safe). `Skip` when the
    /// client is already gone or the names are not a pair a client made; only verified FIFOs
    /// are removed. `Retry` for resource exhaustion (`EMFILE`, `ENFILE`, `ENOMEM`): nothing
    /// the client sees has changed, so its record is retried by the next accept.
    fn open_pair(&self, token: String) -> PendingAccept<String> {
        let (c2s, s2c) = match pair_names(&self.path, &token) {
            Ok(names) => names,
            Err(e) => return PendingAccept::Failed(e),
        };
        // Opened with std, not tokio, so that the acknowledgement can be written at once: a tokio
        // pipe only writes after its reactor reported it writable.
        // c2s first: at the descriptor limit the second open may fail, and the first is then
        // closed again to retry later. Closing our read end of c2s is invisible to the client (it
        // holds a placeholder read end, and the pipe keeps what it wrote), while closing the only
        // write end of s2c would be EOF to it: it would give up on a connection we mean to accept.
        let (from_client, c2s_id) = match self.open_verified(&c2s, false) {
            Ok(opened) => opened,
            Err(e) if is_exhaustion(&e) => return PendingAccept::Retry(token, e),
            // NotFound: the client removed the pair; ELOOP (a symlink), InvalidInput (failed
            // verification) and anything else: not a pair of ours, so nothing is touched.
            Err(_) => return PendingAccept::Skip,
        };
        // Registered now, while failing is still invisible to the client.
        let from_client = match pipe::Receiver::from_file(from_client) {
            Ok(receiver) => receiver,
            Err(e) if is_exhaustion(&e) => return PendingAccept::Retry(token, e),
            Err(_) => return PendingAccept::Skip,
        };
        let (mut to_client, s2c_id) = match self.open_verified(&s2c, true) {
            Ok((_, s2c_id)) if s2c_id == c2s_id => return PendingAccept::Skip,
            Ok(opened) => opened,
            Err(e) if is_exhaustion(&e) => return PendingAccept::Retry(token, e),
            // ENXIO: the client's read end is closed (it died or gave up).
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
                drop(from_client);
                self.remove_abandoned(&c2s, &s2c);
                return PendingAccept::Skip;
            }
            // Not a FIFO of a client's pair: only the verified c2s goes.
            Err(_) => {
                remove_if_ours(&c2s, c2s_id);
                return PendingAccept::Skip;
            }
        };
        // All four ends are open (the client opened its two before sending the record), so the
        // names can go; only the files verified above are removed.
        remove_if_ours(&c2s, c2s_id);
        remove_if_ours(&s2c, s2c_id);
        pipes::enlarge(to_client.as_fd());
        pipes::enlarge(from_client.as_fd());
        // A fresh pipe has room for a byte, so this never waits; failure means the client is
        // gone (EPIPE).
        if !matches!(to_client.write(&[ACK]), Ok(1)) {
            return PendingAccept::Skip;
        }
        let to_client = match pipe::Sender::from_file(to_client) {
            Ok(sender) => sender,
            Err(e) if is_exhaustion(&e) => return PendingAccept::Retry(token, e),
            Err(_) => return PendingAccept::Skip,
        };
        let to_client = pipes::CloseOnShutdown::new(to_client);
        let (sender, receiver) = crate::spin_read::framed(from_client, |r| r.as_fd(), to_client, self.framing);
        PendingAccept::Accepted(Connection {
            sender: Box::new(sender),
            receiver: Box::new(receiver),
            info: ConnectionInfo::new("fifo", self.addr.clone(), self.framing.max_frame_len),
        })
    }
}

impl Listener for FifoListener {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<Connection>> {
        Box::pin(async move {
            loop {
                while let Some(token) = self.pending.take().or_else(|| self.take_record()) {
                    if let Some(accepted) = self.open_pair(token).settle(&mut self.pending) {
                        return accepted;
                    }
                }
                self.reader.readable().await?;
                let mut chunk = [0u8; 16 * RECORD_LEN];
                match self.reader.try_read(&mut chunk) {
                    Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
        })
    }

    fn local_addr(&self) -> String {
        self.addr.clone()
    }
}

impl Drop for FifoListener {
    fn drop(&mut self) {
        remove_if_ours(&self.path, self.id);
    }
}

/// The client's read end of `s2c`: consumes the server's acknowledgement byte before any frame,
/// then lets go of the placeholder read end of `c2s` and of the pair's names.
struct AckFirst {
    inner: SpinRead<pipe::Receiver>,
    /// Until the acknowledgement: the placeholder reader and the names (unlinked on drop).
    pending: Option<(fs::File, Pair)>,
    /// Until the acknowledgement: resolves if the server stops reading its connect FIFO.
    server_gone: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl AsyncRead for AckFirst {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.pending.is_some() {
            let mut byte = [0u8; 1];
            let mut ack = ReadBuf::new(&mut byte);
            if Pin::new(&mut self.inner).poll_read(cx, &mut ack)?.is_pending() {
                // No acknowledgement yet: fail if the server can no longer read our record.
                let gone = self.server_gone.as_mut().is_some_and(|gone| gone.as_mut().poll(cx).is_ready());
                if gone {
                    self.pending = None;
                    self.server_gone = None;
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::ConnectionRefused,
                        "the fifo:// server stopped listening before accepting this connection",
                    )));
                }
                return Poll::Pending;
            }
            let got = ack.filled().first().copied();
            self.pending = None;
            self.server_gone = None;
            match got {
                Some(ACK) => {}
                // EOF: the server took the connection and closed it at once.
                None => return Poll::Ready(Ok(())),
                Some(_) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "unexpected handshake byte from the fifo:// server",
                    )))
                }
            }
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rpc_core::transport::{recv, send};

    static DEFAULTS: std::sync::LazyLock<TransportOptions> = std::sync::LazyLock::new(TransportOptions::default);

    fn temp_dir(tag: &str) -> PathBuf {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "rpc-fifo-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> =
            fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    }

    #[test]
    fn records_round_trip_and_reject_bad_tokens() {
        assert_eq!(parse_record(&record("1f-2-abc")).as_deref(), Some("1f-2-abc"));
        assert_eq!(parse_record(&record("../etc")), None);
        assert_eq!(parse_record(&record("")), None);
        let mut bad = record("x");
        bad[0] = b'X';
        assert_eq!(parse_record(&bad), None);
    }

    #[tokio::test]
    async fn frames_cross_and_nothing_stays_on_disk() {
        let dir = temp_dir("basic");
        let path = dir.join("calc");
        let mut listener = listen(&path, &TransportOptions::default()).await.unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let (client, server) = tokio::join!(connect(&path, &DEFAULTS), listener.accept());
        let (mut client, mut server) = (client.unwrap(), server.unwrap());
        send(&mut *client.sender, bytes::Bytes::from_static(b"ping")).await.unwrap();
        assert_eq!(recv(&mut *server.receiver).await.unwrap().unwrap(), &b"ping"[..]);
        let big = bytes::Bytes::from(vec![9u8; 3 << 20]);
        let (sent, got) = tokio::join!(send(&mut *server.sender, big.clone()), recv(&mut *client.receiver));
        sent.unwrap();
        assert_eq!(got.unwrap().unwrap(), big);
        assert_eq!(entries(&dir), ["calc"], "only the connect FIFO remains while connected");
        rpc_core::transport::close(&mut *client.sender).await.unwrap();
        assert!(recv(&mut *server.receiver).await.unwrap().is_none(), "EOF when the client closes");
        rpc_core::transport::close(&mut *server.sender).await.unwrap();
        assert!(recv(&mut *client.receiver).await.unwrap().is_none(), "EOF when the server closes");
        drop(server);
        drop(client);
        drop(listener);
        assert!(entries(&dir).is_empty());
        fs::remove_dir(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_live_listener_is_kept_and_a_stale_fifo_reclaimed() {
        let dir = temp_dir("stale");
        let path = dir.join("calc");
        let listener = listen(&path, &TransportOptions::default()).await.unwrap();
        let err = listen(&path, &TransportOptions::default()).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
        drop(listener);
        // What a SIGKILLed server leaves: a FIFO nobody reads.
        mkfifo(&path, 0o600).unwrap();
        let err = connect(&path, &TransportOptions::default()).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err}");
        let listener = listen(&path, &TransportOptions::default()).await.unwrap();
        drop(listener);
        // Anything that is not a FIFO is never touched.
        fs::write(&path, b"data").unwrap();
        assert_eq!(listen(&path, &TransportOptions::default()).await.unwrap_err().kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&path).unwrap(), b"data");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn many_clients_at_once() {
        let dir = temp_dir("many");
        let path = dir.join("calc");
        let mut listener = listen(&path, &TransportOptions::default()).await.unwrap();
        let clients: Vec<_> = (0..32u8)
            .map(|i| {
                let path = path.clone();
                tokio::spawn(async move {
                    let mut conn = connect(&path, &TransportOptions::default()).await.unwrap();
                    send(&mut *conn.sender, bytes::Bytes::from(vec![i])).await.unwrap();
                    recv(&mut *conn.receiver).await.unwrap().unwrap()
                })
            })
            .collect();
        for _ in 0..32 {
            let mut conn = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let frame = recv(&mut *conn.receiver).await.unwrap().unwrap();
                send(&mut *conn.sender, frame).await.unwrap();
            });
        }
        for (i, client) in clients.into_iter().enumerate() {
            assert_eq!(client.await.unwrap(), vec![i as u8]);
        }
        drop(listener);
        assert!(entries(&dir).is_empty(), "{:?}", entries(&dir));
        fs::remove_dir(&dir).unwrap();
    }

    #[tokio::test]
    async fn garbage_in_the_connect_fifo_is_skipped() {
        let dir = temp_dir("garbage");
        let path = dir.join("calc");
        let mut listener = listen(&path, &TransportOptions::default()).await.unwrap();
        let mut junk = open_nonblocking(&path, true).unwrap();
        junk.write_all(b"r junk rpcfifo\x01?not a token at all").unwrap();
        let mut bad_token = record("x");
        bad_token[MAGIC.len() + 1] = b'/';
        junk.write_all(&bad_token).unwrap();
        // A record whose pair does not exist: the client is "gone".
        junk.write_all(&record("dead-1-1")).unwrap();
        let (client, server) = tokio::join!(connect(&path, &DEFAULTS), listener.accept());
        let (mut client, mut server) = (client.unwrap(), server.unwrap());
        send(&mut *client.sender, bytes::Bytes::from_static(b"ok")).await.unwrap();
        assert_eq!(recv(&mut *server.receiver).await.unwrap().unwrap(), &b"ok"[..]);
        drop((client, server, listener, junk));
        fs::remove_dir_all(&dir).unwrap();
    }

    /// Accepts with a deadline: a test that breaks the handshake fails instead of hanging.
    async fn accept_real_client(listener: &mut FifoListener, path: &Path) -> (Connection, Connection) {
        let handshake = async {
            let (client, server) = tokio::join!(connect(path, &DEFAULTS), listener.accept());
            let (mut client, mut server) = (client.unwrap(), server.unwrap());
            send(&mut *client.sender, bytes::Bytes::from_static(b"ok")).await.unwrap();
            assert_eq!(recv(&mut *server.receiver).await.unwrap().unwrap(), &b"ok"[..]);
            (client, server)
        };
        tokio::time::timeout(std::time::Duration::from_secs(10), handshake).await.expect("the real client connects")
    }

    #[test]
    fn records_need_the_client_token_form_and_zero_padding() {
        assert_eq!(parse_record(&record("0-0-0")).as_deref(), Some("0-0-0"));
        for bad in ["abc", "1-2", "1-2-3-4", "1--3", "-1-2", "1-2-", "1-2-g", "1-2-A"] {
            assert_eq!(parse_record(&record(bad)), None, "{bad}");
        }
        let mut trailing = record("1-2-3");
        trailing[RECORD_LEN - 1] = b'x';
        assert_eq!(parse_record(&trailing), None);
        // A stray short write followed by a real record must not parse as a record.
        let mut stray = b"rpcfifo1\x05".to_vec();
        stray.extend_from_slice(&record("1-2-3"));
        assert_eq!(parse_record(&stray[..RECORD_LEN]), None);
    }

    #[tokio::test]
    async fn a_stray_short_write_does_not_swallow_the_next_record() {
        let dir = temp_dir("stray");
        let path = dir.join("calc");
        let mut listener = listen(&path, &DEFAULTS).await.unwrap();
        let mut junk = open_nonblocking(&path, true).unwrap();
        junk.write_all(b"rpcfifo1\x05").unwrap();
        let (client, server) = accept_real_client(&mut listener, &path).await;
        drop((client, server, listener, junk));
        assert!(entries(&dir).is_empty(), "{:?}", entries(&dir));
        fs::remove_dir(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_symlink_named_like_a_pair_is_not_followed() {
        let dir = temp_dir("symlink");
        let elsewhere = temp_dir("symlink-target");
        let path = dir.join("calc");
        let mut listener = listen(&path, &DEFAULTS).await.unwrap();
        // FIFOs elsewhere, with a reader on the one the server would write to: were the
        // symlinks followed, the write end would open and the acknowledgement would arrive.
        let (target_c2s, target_s2c) = (elsewhere.join("c2s"), elsewhere.join("s2c"));
        mkfifo(&target_c2s, 0o600).unwrap();
        mkfifo(&target_s2c, 0o600).unwrap();
        let mut watcher = open_nonblocking(&target_s2c, false).unwrap();
        let (c2s, s2c) = pair_names(&path, "1-2-3").unwrap();
        std::os::unix::fs::symlink(&target_c2s, &c2s).unwrap();
        std::os::unix::fs::symlink(&target_s2c, &s2c).unwrap();
        let mut control = open_nonblocking(&path, true).unwrap();
        control.write_all(&record("1-2-3")).unwrap();
        let (client, server) = accept_real_client(&mut listener, &path).await;
        let mut byte = [0u8; 1];
        let read = std::io::Read::read(&mut watcher, &mut byte);
        // EOF (no writer) or nothing to read: either way, nothing was written through the link.
        assert!(matches!(&read, Ok(0)) || matches!(&read, Err(e) if e.kind() == io::ErrorKind::WouldBlock), "{read:?}");
        for link in [&c2s, &s2c] {
            assert!(fs::symlink_metadata(link).unwrap().file_type().is_symlink(), "{} kept", link.display());
        }
        assert!(fs::metadata(&target_c2s).unwrap().file_type().is_fifo());
        assert!(fs::metadata(&target_s2c).unwrap().file_type().is_fifo());
        drop((client, server, listener, control, watcher));
        fs::remove_dir_all(&dir).unwrap();
        fs::remove_dir_all(&elsewhere).unwrap();
    }

    #[tokio::test]
    async fn files_that_are_not_a_clients_pair_are_left_alone() {
        let dir = temp_dir("regular");
        let path = dir.join("calc");
        let mut listener = listen(&path, &DEFAULTS).await.unwrap();
        let mut control = open_nonblocking(&path, true).unwrap();
        // Regular files named like a pair.
        let (c2s, s2c) = pair_names(&path, "1-2-4").unwrap();
        fs::write(&c2s, b"c2s data").unwrap();
        fs::write(&s2c, b"s2c data").unwrap();
        control.write_all(&record("1-2-4")).unwrap();
        // A FIFO with a second name (a hard link elsewhere in the directory).
        let (linked_c2s, linked_s2c) = pair_names(&path, "1-2-5").unwrap();
        mkfifo(&linked_c2s, 0o600).unwrap();
        mkfifo(&linked_s2c, 0o600).unwrap();
        fs::hard_link(&linked_s2c, dir.join("other-name")).unwrap();
        let _reader = open_nonblocking(&linked_s2c, false).unwrap();
        control.write_all(&record("1-2-5")).unwrap();
        let (client, server) = accept_real_client(&mut listener, &path).await;
        assert_eq!(fs::read(&c2s).unwrap(), b"c2s data");
        assert_eq!(fs::read(&s2c).unwrap(), b"s2c data");
        assert!(linked_s2c.exists(), "a FIFO with two names is refused and kept");
        drop((client, server, listener, control));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn symlinked_directories_reach_the_same_listener() {
        let base = temp_dir("alias");
        let real = base.join("real");
        fs::create_dir(&real).unwrap();
        let alias = base.join("alias");
        std::os::unix::fs::symlink(&real, &alias).unwrap();
        // Listening through the real path, connecting through the alias, and the other way.
        for (listen_dir, connect_dir) in [(&real, &alias), (&alias, &real)] {
            let mut listener = listen(&listen_dir.join("calc"), &DEFAULTS).await.unwrap();
            let (client, server) = accept_real_client(&mut listener, &connect_dir.join("calc")).await;
            drop((client, server, listener));
            assert!(entries(&real).is_empty(), "{:?}", entries(&real));
        }
        // And through a symlink to the connect FIFO itself.
        let mut listener = listen(&real.join("calc"), &DEFAULTS).await.unwrap();
        std::os::unix::fs::symlink(real.join("calc"), base.join("calc-link")).unwrap();
        let (client, server) = accept_real_client(&mut listener, &base.join("calc-link")).await;
        drop((client, server, listener));
        fs::remove_dir_all(&base).unwrap();
    }

    #[tokio::test]
    async fn a_client_fails_when_the_server_exits_without_accepting() {
        let dir = temp_dir("unaccepted");
        let path = dir.join("calc");
        let listener = listen(&path, &DEFAULTS).await.unwrap();
        let mut client = connect(&path, &DEFAULTS).await.unwrap();
        // What a killed server does: its ends of the connect FIFO close, its record unread.
        drop(listener);
        let got = tokio::time::timeout(std::time::Duration::from_secs(10), recv(&mut *client.receiver))
            .await
            .expect("the client notices instead of waiting forever");
        assert_eq!(got.unwrap_err().kind(), io::ErrorKind::ConnectionRefused);
        drop(client);
        assert!(entries(&dir).is_empty(), "{:?}", entries(&dir));
        fs::remove_dir(&dir).unwrap();
    }

    #[tokio::test]
    async fn listen_sweeps_pairs_of_dead_clients() {
        let dir = temp_dir("sweep");
        let path = dir.join("calc");
        // pid 0x7ffffffe does not exist (above Linux's pid_max); our own pid does.
        let dead = Pair::paths(&path, "7ffffffe-0-0".into()).unwrap();
        let alive = Pair::paths(&path, format!("{:x}-0-0", std::process::id())).unwrap();
        for p in [&dead.c2s, &dead.s2c, &alive.c2s, &alive.s2c] {
            mkfifo(p, 0o600).unwrap();
        }
        let listener = listen(&path, &TransportOptions::default()).await.unwrap();
        let names = entries(&dir);
        assert_eq!(names.len(), 3, "{names:?}");
        assert!(!dead.c2s.exists() && !dead.s2c.exists() && alive.c2s.exists() && alive.s2c.exists());
        drop((listener, dead, alive));
        assert!(entries(&dir).is_empty());
        fs::remove_dir(&dir).unwrap();
    }

    #[tokio::test]
    async fn missing_directory_and_missing_server_are_clear() {
        let err = listen(Path::new("/nonexistent-rpc-dir/x"), &TransportOptions::default()).await.unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
        let err = connect(Path::new("/nonexistent-rpc-dir/x"), &TransportOptions::default()).await.unwrap_err();
        assert!(err.to_string().contains("is the server running"), "{err}");
    }
}
