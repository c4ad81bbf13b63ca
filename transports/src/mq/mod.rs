//! `mq://name`: POSIX message queues (Linux). The listener owns a well-known *connect queue*
//! `/name`; each connection gets a *private pair* of queues, one per direction, which carry
//! the framed byte stream in messages (see [`conn`] for the message format and liveness).
//!
//! # The handshake
//!
//! 1. The listener holds the abstract Unix socket `rpc-mq/<name>` (listening) for as long as it
//!    lives. It is its lock: binding fails while a live listener holds the name, so a live server
//!    is never displaced, and the kernel releases it when the process dies, so a connect queue
//!    found while holding it is a dead server's and is replaced. It is also how a client learns
//!    who the server is: the client connects to it, reads the server's pid (`SO_PEERCRED`) and
//!    opens a pidfd on it; the listener accepts and drops these probes.
//! 2. The client creates its pair `/<name>.<token>.c2s` and `/<name>.<token>.s2c` with `O_EXCL`
//!    and mode 0600 (or [`TransportOptions::mode`]), where `<token>` holds its pid, a counter and
//!    a random number, opens its ends and sends one [`RECORD_LEN`]-byte *connect record* (magic,
//!    pid, token) into the connect queue. A message queue delivers whole messages, so records of
//!    concurrent clients never mix; the connect queue's depth is the listener's backlog (a client
//!    finding it full waits).
//! 3. The listener's `accept` opens both queues of the pair, checks they are owned by its own
//!    user (clients must run as the server's user), opens a pidfd on the client, and **unlinks
//!    both names**: from then on the queues live only in open descriptors, and the kernel frees
//!    them when both sides closed them, however they end. It sends [`conn::ACCEPT`] on `s2c`.
//!    Every descriptor the connection needs is taken before the names are removed, so a server
//!    out of descriptors keeps the request and retries it (the client waits), as a socket's
//!    backlog would.
//! 4. The client waits for `ACCEPT`, then unlinks the names too (harmlessly) and the connection
//!    is up. While it waits it also watches the server's pidfd and probes the lock every
//!    [`PROBE_INTERVAL`], so a server that dies or stops listening fails the connect instead of
//!    leaving it waiting; a listener that is dropped answers the records still queued with
//!    [`conn::REFUSE`].
//!
//! # Limits
//!
//! The kernel caps a queue's depth and message size (`/proc/sys/fs/mqueue/msg_max` and
//! `msgsize_max`, often 10 messages of 8 KiB for unprivileged users), the bytes of all queues of
//! one user (`RLIMIT_MSGQUEUE`, `ulimit -q`, often 800 KiB: that budget is shared by every queue
//! of the user, in every process), and the number of queues (`queues_max`, 256 by default). The
//! limits are read at run time and each private queue is created with the first of [`SHAPES`]
//! that fits them and the remaining budget (at least 2 messages: one is always kept free for the
//! connection's end, see [`conn`]); frames larger than one message span several. Errors name the
//! limit that was hit.
//!
//! # What can be left behind
//!
//! Nothing, once a connection is accepted. A client killed between creating its pair and the
//! server opening it leaves the pair until the server reads its record (the server then finds the
//! client dead and the queues are freed); if the server dies too before reading it, the two
//! names stay (each a few KiB of the user's budget) until removed (`rm /dev/mqueue/<name>.*`
//! where the mqueue file system is mounted). A SIGKILLed server leaves its connect queue, which
//! the next server on that name reclaims.

pub(crate) mod conn;
pub(crate) mod sys;

use std::ffi::CString;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::Duration;

use rpc_core::transport::{BoxFuture, Connection, ConnectionInfo, Listener};
use socket2::{Domain, SockAddr, Socket, Type};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::net::UnixListener;

use self::conn::{PeerExit, ACCEPT, REFUSE};
use self::sys::{Access, Geometry};
use crate::accept::PendingAccept;
use crate::local::abstract_ns::{abstract_addr, connect_once};
use crate::options::{Framing, TransportOptions};
use crate::rendezvous;
use crate::unix::{into_tokio_listener, retry_while_busy};
use rpc_core::transport::transient::is_exhaustion;

/// The size of a connect record, and the message size of the connect queue.
pub(crate) use crate::rendezvous::RECORD_LEN;
const MAGIC: &[u8; 8] = b"rpcmq001";
/// The depth of the connect queue (the listener's backlog), within `msg_max`.
const BACKLOG: usize = 10;
/// Pending probes of the lock socket.
const LOCK_BACKLOG: i32 = 128;
/// How often a connecting client checks that the listener still holds its lock.
const PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// How often a client draws a new token when a pair's name is taken.
const NAME_ATTEMPTS: u32 = 8;

/// Private queue shapes, best first: a queue is created with the first that fits the kernel's
/// limits and the user's remaining `RLIMIT_MSGQUEUE` budget (the later ones trade speed for
/// room). Frames use all of a queue's messages but one, which is kept for the connection's end
/// (see [`conn`]). The first costs about 8.5 KiB of the budget per queue, 17 KiB a connection,
/// so the usual 800 KiB budget (shared by all of the user's processes) holds about 45 connections; the
/// last under 1 KiB a queue. Larger messages move big frames faster (a 16 MiB echo took about
/// two thirds of the time with 8 × 8 KiB queues here) but would fit only a handful of
/// connections in that budget.
pub(crate) const SHAPES: &[Geometry] = &[
    Geometry { max_msgs: 4, msg_size: 2048 },
    Geometry { max_msgs: 2, msg_size: 1024 },
    Geometry { max_msgs: 2, msg_size: 256 },
];

fn peer_name(name: &str) -> String {
    format!("mq://{name}")
}

/// The abstract socket name that is the listener's lock.
fn lock_addr(name: &str) -> io::Result<SockAddr> {
    abstract_addr(&format!("rpc-mq/{name}"))
}

/// The names of the pair `token` names for the connect queue `name`: `(c2s, s2c)`.
fn pair_names(name: &str, token: &str) -> io::Result<(CString, CString)> {
    Ok((sys::name(&format!("{name}.{token}.c2s"))?, sys::name(&format!("{name}.{token}.s2c"))?))
}

/// A queue-creation error with the limit that was hit named.
fn creation_error(err: io::Error, what: &str) -> io::Error {
    let detail = match err.raw_os_error() {
        Some(libc::EMFILE) => {
            let budget = sys::budget().map_or_else(|| "unknown".to_owned(), |(soft, _)| format!("{soft} bytes"));
            format!(
                "the user's message queue budget (RLIMIT_MSGQUEUE, `ulimit -q`: {budget}) is used up by other \
                 queues, or this process has too many open files"
            )
        }
        Some(libc::ENOSPC) => {
            "the system-wide number of message queues (/proc/sys/fs/mqueue/queues_max) is reached".to_owned()
        }
        Some(libc::ENOMEM) => "out of memory for message queues".to_owned(),
        Some(libc::EINVAL) => {
            let limits = sys::limits();
            format!(
                "the kernel refused the queue's shape (limits: msg_max {}, msgsize_max {})",
                limits.max_msgs, limits.msg_size
            )
        }
        _ => crate::context::describe(&err),
    };
    io::Error::new(err.kind(), format!("cannot create {what}: {detail}"))
}

/// The shapes to try, fitted to the kernel's limits.
fn shapes() -> Vec<Geometry> {
    let limits = sys::limits();
    let mut shapes: Vec<Geometry> = SHAPES
        .iter()
        .map(|s| Geometry {
            // At least `MIN_MSGS`: a kernel that allows fewer refuses the shape, and the error
            // names its limit.
            max_msgs: s.max_msgs.min(limits.max_msgs).max(conn::MIN_MSGS),
            msg_size: s.msg_size.min(limits.msg_size).max(conn::MIN_MSG_SIZE),
        })
        .collect();
    shapes.dedup();
    shapes
}

/// Creates a private queue with the first shape the limits and budget allow.
fn create_private(name: &CString, access: Access, mode: u32) -> io::Result<OwnedFd> {
    let mut last = None;
    for shape in shapes() {
        match sys::create(name, access, mode, shape) {
            Ok(fd) => return Ok(fd),
            // Over budget (EMFILE, ENOMEM) or over a limit (EINVAL): a smaller shape may fit.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENOMEM | libc::EINVAL)) => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no queue shape to try")))
}

/// A client's private pair; both names are unlinked on drop (a missing name is fine: the server
/// unlinks them as soon as it opened them).
struct Pair {
    token: String,
    c2s: CString,
    s2c: CString,
}

impl Pair {
    /// Creates the pair and opens the client's ends: `(pair, to_server, from_server)`.
    fn create(name: &str, mode: u32) -> io::Result<(Pair, OwnedFd, OwnedFd)> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        for _ in 0..NAME_ATTEMPTS {
            let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let token = rendezvous::token(n, random);
            let (c2s, s2c) = pair_names(name, &token)?;
            let to_server = match create_private(&c2s, Access::Write, mode) {
                Ok(fd) => fd,
                // Someone holds this name (a hostile guess, or a leftover): draw another.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(creation_error(e, "the connection's message queues")),
            };
            let pair = Pair { token, c2s, s2c };
            let from_server = match create_private(&pair.s2c, Access::Read, mode) {
                Ok(fd) => fd,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(creation_error(e, "the connection's message queues")),
            };
            return Ok((pair, to_server, from_server));
        }
        Err(io::Error::new(io::ErrorKind::AlreadyExists, "the names of the connection's queues keep being taken"))
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        let _ = sys::unlink(&self.c2s);
        let _ = sys::unlink(&self.s2c);
    }
}

pub(crate) fn record(pid: u32, token: &str) -> [u8; RECORD_LEN] {
    rendezvous::encode(MAGIC, &pid.to_le_bytes(), token)
}

/// A connect request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Request {
    pub(crate) pid: u32,
    pub(crate) token: String,
}

/// The request in a well-formed record; `None` for anything else. The token becomes part of
/// queue names, so it must have exactly the form clients write: three groups of lowercase hex
/// digits joined by `-`, the first being the pid; the rest of the record is zero padding.
pub(crate) fn parse_record(record: &[u8]) -> Option<Request> {
    let (pid, token) = rendezvous::decode(record, MAGIC, 4)?;
    let pid = u32::from_le_bytes(pid.try_into().ok()?);
    let (token_pid, _) = token.split_once('-')?;
    (pid != 0 && u32::from_str_radix(token_pid, 16).ok() == Some(pid)).then(|| Request { pid, token: token.to_owned() })
}

/// Asks the lock who the listener is: its pid. `ConnectionRefused` when nobody listens.
async fn listener_pid(lock: &SockAddr) -> io::Result<u32> {
    let probe = retry_while_busy(|| connect_once(lock)).await.map_err(|e| match e.kind() {
        io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound => {
            io::Error::new(io::ErrorKind::ConnectionRefused, "no server is listening on this queue (is it running?)")
        }
        _ => e,
    })?;
    let pid = probe.peer_cred()?.pid().and_then(|pid| u32::try_from(pid).ok());
    pid.filter(|&pid| pid > 0)
        .ok_or_else(|| io::Error::new(io::ErrorKind::ConnectionRefused, "cannot tell which process listens"))
}

/// Resolves with an error once the listener `pid` is gone: its process exited, or its lock is
/// released or held by another process (a later server, which never saw our record).
async fn listener_gone(lock: &SockAddr, pid: u32, exit: &PeerExit) -> io::Error {
    let exited = std::future::poll_fn(|cx| if exit.poll_exited(cx) { Poll::Ready(()) } else { Poll::Pending });
    tokio::pin!(exited);
    loop {
        tokio::select! {
            () = &mut exited => {
                return io::Error::new(io::ErrorKind::ConnectionRefused, "the server exited before accepting this connection");
            }
            () = tokio::time::sleep(PROBE_INTERVAL) => {
                match connect_once(lock).await {
                    Ok(probe) if probe.peer_cred().ok().and_then(|c| c.pid()) == i32::try_from(pid).ok() => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    _ => {
                        return io::Error::new(
                            io::ErrorKind::ConnectionRefused,
                            "the server stopped listening before accepting this connection",
                        );
                    }
                }
            }
        }
    }
}

/// Runs `step` until it finishes or the listener is gone.
async fn unless_gone<T>(
    step: impl Future<Output = io::Result<T>>,
    lock: &SockAddr,
    pid: u32,
    exit: &PeerExit,
) -> io::Result<T> {
    tokio::select! {
        result = step => result,
        err = listener_gone(lock, pid, exit) => Err(err),
    }
}

/// Connects to the listener on the connect queue `name` (see the module docs).
pub(crate) async fn connect(name: &str, options: &TransportOptions) -> io::Result<Connection> {
    let lock = lock_addr(name)?;
    let server = listener_pid(&lock).await?;
    let exit = PeerExit::watch(server).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => io::Error::new(io::ErrorKind::ConnectionRefused, "the server exited"),
        _ => e,
    })?;
    let requests = sys::open(&sys::name(name)?, Access::Write).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => {
            io::Error::new(io::ErrorKind::ConnectionRefused, "the server holds the name but has no connect queue")
        }
        _ => e,
    })?;
    let requests = sys::register(requests, Interest::WRITABLE)?;
    let (pair, to_server, from_server) = Pair::create(name, options.permission_bits())?;
    let from_server = sys::register(from_server, Interest::READABLE)?;
    let record = record(std::process::id(), &pair.token);
    let send_record = async {
        loop {
            let mut guard = requests.writable().await?;
            match guard.try_io(|fd| sys::send(fd.get_ref().as_fd(), &record)) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    };
    unless_gone(send_record, &lock, server, &exit).await?;
    drop(requests);
    let answer = async {
        let mut message = vec![0u8; sys::geometry(from_server.get_ref().as_fd())?.msg_size];
        loop {
            let mut guard = from_server.readable().await?;
            match guard.try_io(|fd| sys::receive(fd.get_ref().as_fd(), &mut message)) {
                Ok(result) => return result.map(|n| message[..n].to_vec()),
                Err(_would_block) => continue,
            }
        }
    };
    let answer = unless_gone(answer, &lock, server, &exit).await?;
    match answer.as_slice() {
        [ACCEPT] => {}
        [REFUSE] => {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                "the server refused this connection (it stopped listening, or could not set the connection up)",
            ))
        }
        _ => return Err(io::Error::new(io::ErrorKind::InvalidData, "unexpected handshake message from the server")),
    }
    drop(pair);
    let framing = options.framing();
    let max_frame_len = framing.max_frame_len;
    let (sender, receiver) = conn::halves(from_server.into_inner(), to_server, exit.pair()?, server, framing)?;
    Ok(Connection {
        sender: Box::new(sender),
        receiver: Box::new(receiver),
        info: ConnectionInfo::new("mq", peer_name(name), max_frame_len),
    })
}

/// Takes the lock, replaces a stale connect queue and listens on `name` (see the module docs).
pub(crate) fn listen(name: &str, options: &TransportOptions) -> io::Result<MqListener> {
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    socket.bind(&lock_addr(name)?).map_err(|e| {
        if e.kind() == io::ErrorKind::AddrInUse {
            io::Error::new(e.kind(), "another server is already listening on this queue (it was left alone)")
        } else {
            e
        }
    })?;
    socket.listen(LOCK_BACKLOG)?;
    let lock = into_tokio_listener(socket)?;
    let queue_name = sys::name(name)?;
    // We hold the lock, so a queue with this name was left by a server that died.
    match sys::unlink(&queue_name) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!("cannot remove the stale connect queue: {}", crate::context::describe(&e)),
            ))
        }
    }
    let limits = sys::limits();
    let shape = Geometry { max_msgs: BACKLOG.min(limits.max_msgs), msg_size: RECORD_LEN };
    let requests = sys::create(&queue_name, Access::Read, options.permission_bits(), shape)
        .map_err(|e| creation_error(e, "the connect queue"))?;
    let requests = match sys::register(requests, Interest::READABLE) {
        Ok(requests) => requests,
        Err(e) => {
            let _ = sys::unlink(&queue_name);
            return Err(e);
        }
    };
    Ok(MqListener { requests, queue_name, name: name.to_owned(), lock, pending: None, framing: options.framing() })
}

/// A listener on a connect queue, which it removes when dropped.
#[derive(Debug)]
pub(crate) struct MqListener {
    requests: AsyncFd<OwnedFd>,
    queue_name: CString,
    name: String,
    /// Held for the listener's life (see the module docs).
    lock: UnixListener,
    /// A request read but not yet served because descriptors ran out: retried first. Kept here,
    /// not in the accept future, so dropping that future loses nothing.
    pending: Option<Request>,
    framing: Framing,
}

/// What woke the accept loop.
enum Event {
    Request(Option<Request>),
    Probe,
}

impl MqListener {
    /// Opens the pair a request names (no await: `accept` stays cancel-safe). A request is
    /// retried only if it failed before the names were removed; after that the client is
    /// refused.
    fn open_pair(&self, request: Request) -> PendingAccept<Request> {
        let (c2s, s2c) = match pair_names(&self.name, &request.token) {
            Ok(names) => names,
            Err(_) => return PendingAccept::Skip,
        };
        let opened = sys::open(&s2c, Access::Write).and_then(|to| Ok((to, sys::open(&c2s, Access::Read)?)));
        let (to_client, from_client) = match opened {
            Ok(opened) => opened,
            Err(e) if is_exhaustion(&e) => return PendingAccept::Retry(request, e),
            // NotFound: the client gave up and removed its pair.
            Err(_) => return PendingAccept::Skip,
        };
        let euid = sys::euid();
        let owned_by_us = |fd: &OwnedFd| sys::owner(fd.as_fd()).is_ok_and(|uid| uid == euid);
        if !owned_by_us(&to_client) || !owned_by_us(&from_client) {
            return PendingAccept::Skip;
        }
        // Every descriptor the connection needs is taken before the names are removed, so that
        // running out of them leaves the request as it was, to be retried.
        let exits = match PeerExit::watch(request.pid).and_then(PeerExit::pair) {
            Ok(exits) => Some(exits),
            Err(e) if is_exhaustion(&e) => return PendingAccept::Retry(request, e),
            // The client died: its pair is unlinked below and freed with our descriptors.
            Err(_) => None,
        };
        let answer = match to_client.try_clone() {
            Ok(answer) => answer,
            Err(e) => return PendingAccept::Retry(request, e),
        };
        // Both ends of both queues are open (the client opened its own before sending the
        // record), so the names can go: nothing is left behind however the connection ends.
        let _ = sys::unlink(&c2s);
        let _ = sys::unlink(&s2c);
        let Some(exits) = exits else { return PendingAccept::Skip };
        match conn::halves(from_client, to_client, exits, request.pid, self.framing) {
            // A fresh queue has room for the answer; failing to send it means the queue is not
            // a fresh pair (the halves then say CLOSE into it when dropped).
            Ok((sender, receiver)) if sys::send(answer.as_fd(), &[ACCEPT]).is_ok() => {
                PendingAccept::Accepted(Connection {
                    sender: Box::new(sender),
                    receiver: Box::new(receiver),
                    info: ConnectionInfo::new("mq", peer_name(&self.name), self.framing.max_frame_len),
                })
            }
            Ok(_) => PendingAccept::Skip,
            Err(e) => {
                // The names are gone, so the request cannot be retried: refuse it.
                let _ = sys::send(answer.as_fd(), &[REFUSE]);
                if is_exhaustion(&e) {
                    PendingAccept::Failed(e)
                } else {
                    PendingAccept::Skip
                }
            }
        }
    }

    /// Waits for the next request, accepting and dropping lock probes meanwhile.
    async fn next_event(&self) -> io::Result<Event> {
        tokio::select! {
            ready = self.requests.readable() => {
                let mut guard = ready?;
                let mut record = [0u8; RECORD_LEN];
                match guard.try_io(|fd| sys::receive(fd.get_ref().as_fd(), &mut record)) {
                    Ok(Ok(n)) => Ok(Event::Request(parse_record(&record[..n]))),
                    Ok(Err(e)) => Err(e),
                    Err(_would_block) => Ok(Event::Request(None)),
                }
            }
            probe = self.lock.accept() => {
                // A client asking who we are (or a stray connect): it learned it from connecting.
                drop(probe);
                Ok(Event::Probe)
            }
        }
    }
}

impl Listener for MqListener {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<Connection>> {
        // Cancel-safe: a record is taken from the queue and stored in `self.pending` without an
        // await in between, and `readable` and `UnixListener::accept` are cancel-safe.
        Box::pin(async move {
            loop {
                if let Some(request) = self.pending.take() {
                    if let Some(accepted) = self.open_pair(request).settle(&mut self.pending) {
                        return accepted;
                    }
                }
                if let Event::Request(Some(request)) = self.next_event().await? {
                    self.pending = Some(request);
                }
            }
        })
    }

    fn local_addr(&self) -> String {
        peer_name(&self.name)
    }
}

impl Drop for MqListener {
    /// Removes the connect queue, and refuses the requests still in it so that their clients
    /// fail at once instead of when they next probe the lock.
    fn drop(&mut self) {
        let _ = sys::unlink(&self.queue_name);
        let refuse = |request: &Request| {
            if let Ok((_, s2c)) = pair_names(&self.name, &request.token) {
                if let Ok(to_client) = sys::open(&s2c, Access::Write) {
                    let _ = sys::send(to_client.as_fd(), &[REFUSE]);
                }
            }
        };
        if let Some(request) = self.pending.take() {
            refuse(&request);
        }
        let mut record = [0u8; RECORD_LEN];
        while let Ok(n) = sys::receive(self.requests.get_ref().as_fd(), &mut record) {
            if let Some(request) = parse_record(&record[..n]) {
                refuse(&request);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use rpc_core::transport::{close, recv, send};

    fn unique(tag: &str) -> String {
        static N: AtomicU64 = AtomicU64::new(0);
        format!("rpc-mq-{tag}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
    }

    fn exists(name: &str) -> bool {
        sys::open(&sys::name(name).unwrap(), Access::Read).is_ok()
    }

    async fn pair(listener: &mut MqListener, name: &str) -> (Connection, Connection) {
        let options = TransportOptions::default();
        let (client, server) = tokio::join!(connect(name, &options), listener.accept());
        (client.unwrap(), server.unwrap())
    }

    #[test]
    fn records_round_trip_and_reject_bad_tokens() {
        let request = Request { pid: 0x1f, token: "1f-2-abc".into() };
        assert_eq!(parse_record(&record(0x1f, "1f-2-abc")), Some(request));
        assert_eq!(parse_record(&record(0x1f, "20-2-abc")), None, "the token names another pid");
        for bad in ["../etc", "", "1f-2", "1f-2-3-4", "1f--3", "1f-2-G", "1f-2-a/b"] {
            assert_eq!(parse_record(&record(0x1f, bad)), None, "{bad}");
        }
        let mut trailing = record(0x1f, "1f-2-3");
        trailing[RECORD_LEN - 1] = 1;
        assert_eq!(parse_record(&trailing), None);
        assert_eq!(parse_record(&record(0x1f, "1f-2-3")[..RECORD_LEN - 1]), None);
    }

    #[tokio::test]
    async fn frames_cross_split_and_whole_and_nothing_stays() {
        let name = unique("basic");
        let mut listener = listen(&name, &TransportOptions::default()).unwrap();
        assert!(exists(&name));
        let (mut client, mut server) = pair(&mut listener, &name).await;
        send(&mut *client.sender, Bytes::from_static(b"ping")).await.unwrap();
        assert_eq!(recv(&mut *server.receiver).await.unwrap().unwrap(), &b"ping"[..]);
        send(&mut *client.sender, Bytes::new()).await.unwrap();
        assert_eq!(recv(&mut *server.receiver).await.unwrap().unwrap(), &b""[..]);
        // Larger than one message, and larger than a queue's worth of messages.
        let big = Bytes::from((0..3u32 << 20).map(|i| i as u8).collect::<Vec<u8>>());
        let (sent, got) = tokio::join!(send(&mut *server.sender, big.clone()), recv(&mut *client.receiver));
        sent.unwrap();
        assert_eq!(got.unwrap().unwrap(), big);
        close(&mut *client.sender).await.unwrap();
        assert!(recv(&mut *server.receiver).await.unwrap().is_none(), "end of frames when the client closes");
        drop(server);
        assert!(recv(&mut *client.receiver).await.unwrap().is_none(), "end of frames when the server drops");
        drop(client);
        drop(listener);
        assert!(!exists(&name), "the connect queue is removed");
    }

    #[tokio::test]
    async fn oversized_frames_are_refused_on_both_sides() {
        let name = unique("big");
        let small = TransportOptions::default().max_frame_len(10_000);
        let mut listener = listen(&name, &small).unwrap();
        let defaults = TransportOptions::default();
        let (client, server) = tokio::join!(connect(&name, &defaults), listener.accept());
        let (client, mut server) = (client.unwrap(), server.unwrap());
        let err = server.sender.start_send(Bytes::from(vec![0u8; 10_001])).unwrap_err();
        assert!(matches!(rpc_core::error::RpcError::from(err), rpc_core::error::RpcError::FrameTooLarge { .. }));
        // The server stops reading at the first message, so the rest never leaves: send aside.
        let mut sender = client.sender;
        let sending = tokio::spawn(async move {
            let _ = send(&mut *sender, Bytes::from(vec![0u8; 20_000])).await;
        });
        let err = recv(&mut *server.receiver).await.unwrap_err();
        sending.abort();
        assert_eq!(
            rpc_core::error::RpcError::from(err),
            rpc_core::error::RpcError::FrameTooLarge { size: 20_000, max: 10_000 }
        );
    }

    #[tokio::test]
    async fn a_live_listener_is_kept_and_a_stale_queue_reclaimed() {
        let name = unique("stale");
        let listener = listen(&name, &TransportOptions::default()).unwrap();
        let err = listen(&name, &TransportOptions::default()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
        assert!(exists(&name), "the live listener's queue is left alone");
        drop(listener);
        // What a SIGKILLed server leaves: a connect queue and no lock.
        let stale =
            sys::create(&sys::name(&name).unwrap(), Access::Read, 0o600, Geometry { max_msgs: 1, msg_size: 64 });
        drop(stale.unwrap());
        let err = connect(&name, &TransportOptions::default()).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err}");
        let mut listener = listen(&name, &TransportOptions::default()).unwrap();
        let (mut client, mut server) = pair(&mut listener, &name).await;
        send(&mut *client.sender, Bytes::from_static(b"ok")).await.unwrap();
        assert_eq!(recv(&mut *server.receiver).await.unwrap().unwrap(), &b"ok"[..]);
        drop((client, server, listener));
        assert!(!exists(&name));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn many_clients_at_once() {
        let name = unique("many");
        let mut listener = listen(&name, &TransportOptions::default()).unwrap();
        let clients: Vec<_> = (0..24u8)
            .map(|i| {
                let name = name.clone();
                tokio::spawn(async move {
                    let mut conn = connect(&name, &TransportOptions::default()).await.unwrap();
                    send(&mut *conn.sender, Bytes::from(vec![i; 10_000])).await.unwrap();
                    recv(&mut *conn.receiver).await.unwrap().unwrap()
                })
            })
            .collect();
        for _ in 0..24 {
            let mut conn = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let frame = recv(&mut *conn.receiver).await.unwrap().unwrap();
                send(&mut *conn.sender, frame).await.unwrap();
            });
        }
        for (i, client) in clients.into_iter().enumerate() {
            assert_eq!(client.await.unwrap(), vec![i as u8; 10_000]);
        }
    }

    #[tokio::test]
    async fn a_client_is_refused_when_the_listener_goes_before_accepting() {
        let name = unique("unaccepted");
        let listener = listen(&name, &TransportOptions::default()).unwrap();
        let connecting = tokio::spawn({
            let name = name.clone();
            async move { connect(&name, &TransportOptions::default()).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(listener);
        let result = tokio::time::timeout(Duration::from_secs(10), connecting).await.expect("no hang").unwrap();
        assert_eq!(result.unwrap_err().kind(), io::ErrorKind::ConnectionRefused);
    }

    #[tokio::test]
    async fn hostile_messages_fail_the_connection_cleanly() {
        let name = unique("hostile");
        let mut listener = listen(&name, &TransportOptions::default()).unwrap();
        // Each case is a sequence of messages.
        let junk: [&[&[u8]]; 7] = [
            &[&[]],
            &[&[9]],
            &[&[conn::DATA]],
            &[&[conn::CLOSE, 0]],
            &[&[conn::ACCEPT]],
            // A whole frame, then a message of another kind.
            &[&[conn::DATA, 1, 0, 0, 0, 7], &[conn::REFUSE]],
            // Half a frame, then the end.
            &[&[conn::DATA, 4, 0, 0, 0, 1], &[conn::CLOSE]],
        ];
        for messages in junk {
            let (to_server, _from_server, _pair) = raw_client(&name);
            let mut server = listener.accept().await.unwrap();
            for message in messages {
                sys::send(to_server.as_fd(), message).unwrap();
            }
            // Valid frames before the bad message come out first; then the error.
            let mut got = Ok(None);
            for _ in 0..3 {
                got = tokio::time::timeout(Duration::from_secs(10), recv(&mut *server.receiver)).await.unwrap();
                if !matches!(got, Ok(Some(_))) {
                    break;
                }
            }
            assert!(got.is_err(), "{messages:?} -> {got:?}");
        }
        // A frame announced as 4 GiB is refused before anything is kept.
        let (to_server, _from_server, _pair) = raw_client(&name);
        let mut server = listener.accept().await.unwrap();
        sys::send(to_server.as_fd(), &[conn::DATA, 0, 0, 0, 0xf0, 1, 2, 3]).unwrap();
        let err = recv(&mut *server.receiver).await.unwrap_err();
        assert!(matches!(rpc_core::error::RpcError::from(err), rpc_core::error::RpcError::FrameTooLarge { .. }));
    }

    #[tokio::test]
    async fn frames_share_messages_and_span_them() {
        let name = unique("packed");
        let mut listener = listen(&name, &TransportOptions::default()).unwrap();
        let (to_server, _from_server, _pair) = raw_client(&name);
        let mut server = listener.accept().await.unwrap();
        // An empty frame, a whole frame, and the first piece of a third; then its rest, split
        // inside its length prefix and again inside its bytes.
        let mut packed = vec![conn::DATA, 0, 0, 0, 0, 2, 0, 0, 0, b'h', b'i', 3, 0];
        sys::send(to_server.as_fd(), &packed).unwrap();
        packed = vec![conn::DATA, 0, 0, b'a'];
        sys::send(to_server.as_fd(), &packed).unwrap();
        sys::send(to_server.as_fd(), &[conn::DATA, b'b', b'c']).unwrap();
        for expected in [&b""[..], b"hi", b"abc"] {
            assert_eq!(recv(&mut *server.receiver).await.unwrap().unwrap(), expected);
        }
        sys::send(to_server.as_fd(), &[conn::CLOSE]).unwrap();
        assert!(recv(&mut *server.receiver).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn many_small_frames_queued_at_once_all_arrive_in_order() {
        let name = unique("burst");
        let mut listener = listen(&name, &TransportOptions::default()).unwrap();
        let (mut client, mut server) = pair(&mut listener, &name).await;
        let frames: Vec<Bytes> =
            (0..2000u32).map(|i| Bytes::from(i.to_le_bytes().repeat(1 + i as usize % 700))).collect();
        let sending = async {
            for frame in &frames {
                std::future::poll_fn(|cx| client.sender.poll_ready(cx)).await.unwrap();
                client.sender.start_send(frame.clone()).unwrap();
            }
            std::future::poll_fn(|cx| client.sender.poll_flush(cx)).await.unwrap();
        };
        let receiving = async {
            for frame in &frames {
                assert_eq!(&recv(&mut *server.receiver).await.unwrap().unwrap(), frame);
            }
        };
        tokio::join!(sending, receiving);
    }

    /// A client that does the handshake by hand (no waiting for the answer): its raw ends.
    fn raw_client(name: &str) -> (OwnedFd, OwnedFd, Pair) {
        let (pair, to_server, from_server) = Pair::create(name, 0o600).unwrap();
        let requests = sys::open(&sys::name(name).unwrap(), Access::Write).unwrap();
        sys::send(requests.as_fd(), &record(std::process::id(), &pair.token)).unwrap();
        (to_server, from_server, pair)
    }
}
