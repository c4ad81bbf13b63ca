//! `spawn:/path/to/program?arg1&arg2`: a service in a child process, spoken to over the child's
//! stdin and stdout (anonymous pipes), framed by the shared length prefix of
//! [`rpc_core::transport::stream`].
//!
//! * **Parent side**: [`crate::connect`] with a `spawn:` address, or [`connect_command`] with a
//!   [`Command`] you built (environment, working directory, ...), starts the child and returns
//!   the [`Connection`]; hand it to a generated client's `from_connection`. The child's stderr is
//!   inherited, so its logs appear with the parent's.
//! * **Child side**: [`stdio`] turns the process's own stdin/stdout into the [`Connection`]; the
//!   facade's `rpc::serve_stdio(server)` serves it until the parent goes away.
//!
//! # The one rule for the child: never print to stdout
//!
//! Stdout *is* the connection. [`stdio`] protects against accidents after it is called: it
//! moves the connection to fresh descriptors and points fd 1 at stderr (and fd 0 at
//! `/dev/null`), so a stray `println!` lands in the log instead of the stream. Anything written
//! to stdout *before* that (or by a child that does not use [`stdio`]) reaches the parent as
//! bytes that are not a frame; the parent then fails the connection with an error that says
//! so (`the child wrote something that is not a frame to its stdout ...`), never silently.
//!
//! # Lifetime: the parent owns the child
//!
//! A reaper task holds the child. When both halves of the [`Connection`] are dropped, the
//! child's stdin is closed (it sees EOF, which ends `serve_stdio`), and it gets [`GRACE`] to exit
//! before it is killed; either way it is waited for, so no zombie remains. If the child exits
//! first, the receiving half reports EOF as an `UnexpectedEof` error naming the exit status or
//! signal (`the child process (pid 4242) was killed by signal 9 (SIGKILL)`), which the client
//! engine turns into `RpcError::Disconnected` for every pending call at once. The receiving half
//! also watches the exit status while it waits for data, so a child that dies while something
//! it started (a grandchild) still holds its stdout fails the connection all the same, shortly
//! after the exit; a send that fails because the child is gone names the exit status too. The
//! grace-period kill (SIGKILL) reaches only the child itself, not its process group: anything
//! the child started must end on its own (e.g. when its inherited stdin reaches EOF). If the parent
//! dies, even by SIGKILL, the kernel closes its pipe ends, the child reads EOF on stdin and
//! `serve_stdio` returns. The reaper is a task of the runtime that connected: if that runtime
//! shuts down while a child is still running (in its grace period, say), the child is killed
//! and left to tokio's orphan reaping rather than left running.
//!
//! Both pipes are enlarged to 1 MiB where the OS allows (see `pipes`).

use std::future::Future;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::pin::Pin;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use rpc_core::error::RpcError;
use rpc_core::transport::stream::{StreamReceiver, StreamSender};
use rpc_core::transport::{Connection, ConnectionInfo, FrameReceiver, FrameSender};
use rpc_core::wire::{Encoded, FrameTooLarge};
use tokio::net::unix::pipe;
use tokio::process::{ChildStdin, ChildStdout, Command};
use tokio::sync::{oneshot, watch};

use crate::credentials;
use crate::options::TransportOptions;
use crate::pipes;
use crate::spin_read::{framed, SpinRead};

/// How long a child may take to exit after its connection was dropped before it is killed.
pub const GRACE: Duration = Duration::from_secs(5);
/// How long the receiving half waits, after EOF, for the exit status to name in its error (and
/// the sending half, after a broken pipe).
const STATUS_WAIT: Duration = Duration::from_secs(1);
/// How long the receiving half keeps reading, once the child has exited but its stdout is still
/// open (held by a grandchild, or EOF not yet seen), before it fails with the exit status: time
/// for frames the child wrote just before exiting to be delivered.
const EXIT_DRAIN: Duration = Duration::from_millis(100);

/// Starts `program` with `args` (the parsed `spawn:` address).
pub(crate) fn connect(program: &Path, args: &[String], options: &TransportOptions) -> io::Result<Connection> {
    let mut command = Command::new(program);
    command.args(args);
    spawn(command, options, GRACE)
}

/// Starts `command` with its stdin and stdout as the connection (its stderr as configured,
/// inherited by default) and returns the parent's side. Must be called within a tokio runtime
/// (outside one it returns an error).
///
/// ```no_run
/// # async fn run() -> Result<(), rpc_core::error::RpcError> {
/// let mut command = tokio::process::Command::new("/usr/local/bin/worker");
/// command.arg("--stdio").env("RUST_LOG", "info");
/// let conn = rpc_transports::spawn::connect_command(command)?;
/// // let calc = CalculatorClient::from_connection(conn).await?;
/// # Ok(()) }
/// ```
pub fn connect_command(command: Command) -> Result<Connection, RpcError> {
    connect_command_with(command, &TransportOptions::default())
}

/// [`connect_command`] with the given options (only `max_frame_len` and `spin` apply).
pub fn connect_command_with(command: Command, options: &TransportOptions) -> Result<Connection, RpcError> {
    let program = command.as_std().get_program().to_string_lossy().into_owned();
    spawn(command, options, GRACE).map_err(|e| {
        let message = format!("spawning {program}: {}", crate::context::describe(&e));
        RpcError::from(io::Error::new(e.kind(), message))
    })
}

fn spawn(mut command: Command, options: &TransportOptions, grace: Duration) -> io::Result<Connection> {
    // The reaper is a task, and tokio's process support needs a runtime: say so instead of
    // panicking.
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
        io::Error::other("a spawn: connection must be made within a tokio runtime (none is running here)")
    })?;
    command.stdin(Stdio::piped()).stdout(Stdio::piped());
    // If the reaper task is dropped with its runtime while waiting, the child is killed rather
    // than left running with nobody to reap it.
    command.kill_on_drop(true);
    let peer_program = command.as_std().get_program().to_string_lossy().into_owned();
    let peer_args: Vec<String> = command.as_std().get_args().map(|a| a.to_string_lossy().into_owned()).collect();
    let mut child = command.spawn()?;
    let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        return Err(io::Error::other("the child has no piped stdin/stdout"));
    };
    pipes::enlarge(stdin.as_fd());
    pipes::enlarge(stdout.as_fd());
    let pid = child.id().unwrap_or(0);

    let (exit_tx, exit_rx) = watch::channel::<Option<String>>(None);
    let (owner_tx, owner_rx) = oneshot::channel::<()>();
    runtime.spawn(async move {
        // Either the child exits on its own, or the connection is dropped (the oneshot's sender,
        // shared by both halves, goes away) and it gets GRACE to follow its closed stdin.
        let exited = tokio::select! {
            status = child.wait() => Some(status),
            _ = owner_rx => None,
        };
        let status = match exited {
            Some(status) => status,
            None => match tokio::time::timeout(grace, child.wait()).await {
                Ok(status) => status,
                Err(_) => {
                    let _ = child.start_kill();
                    child.wait().await
                }
            },
        };
        let _ = exit_tx.send(Some(describe_exit(pid, status)));
    });

    let mut peer = crate::address::Address::Spawn { program: peer_program.into(), args: peer_args }.to_string();
    peer.push_str(&format!(" (pid {pid})"));
    let max_frame_len = options.effective_max_frame_len();
    let (sender, receiver) = framed(stdout, |r| r.as_fd(), pipes::CloseOnShutdown::new(stdin), options.framing());
    let owner = Arc::new(owner_tx);
    Ok(Connection {
        sender: Box::new(ChildSender { inner: sender, exit: exit_rx.clone(), failing: None, _owner: owner.clone() }),
        receiver: Box::new(ChildReceiver {
            inner: receiver,
            exited: Some(wait_for_exit(exit_rx, None)),
            status: None,
            eof: false,
            deadline: None,
            failed: None,
            pid,
            _owner: owner,
        }),
        // The child runs as we do (we started it), and we know its pid.
        info: ConnectionInfo::new("spawn", peer, max_frame_len)
            .with_peer_credentials((pid != 0).then(|| credentials::same_user_as_us(pid))),
    })
}

/// "the child process (pid 42) exited with status 3" / "... was killed by signal 9 (SIGKILL)".
fn describe_exit(pid: u32, status: io::Result<ExitStatus>) -> String {
    let how = match status {
        Ok(status) => match (status.code(), status.signal()) {
            (Some(code), _) => format!("exited with status {code}"),
            (None, Some(signal)) => format!("was killed by signal {signal}{}", signal_name(signal)),
            (None, None) => format!("ended ({status})"),
        },
        Err(e) => format!("ended, but its exit status is unknown ({e})"),
    };
    format!("the child process (pid {pid}) {how}")
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGKILL => " (SIGKILL)",
        libc::SIGTERM => " (SIGTERM)",
        libc::SIGINT => " (SIGINT)",
        libc::SIGSEGV => " (SIGSEGV)",
        libc::SIGABRT => " (SIGABRT)",
        libc::SIGBUS => " (SIGBUS)",
        libc::SIGPIPE => " (SIGPIPE)",
        libc::SIGHUP => " (SIGHUP)",
        _ => "",
    }
}

/// Resolves with the exit description once the reaper publishes it (`None` if the reaper went
/// away without one, or `limit` passed first).
fn wait_for_exit(mut exit: watch::Receiver<Option<String>>, limit: Option<Duration>) -> ExitFuture {
    Box::pin(async move {
        let published = async move { exit.wait_for(Option::is_some).await.ok()?.clone() };
        match limit {
            Some(limit) => tokio::time::timeout(limit, published).await.ok()?,
            None => published.await,
        }
    })
}

type ExitFuture = Pin<Box<dyn Future<Output = Option<String>> + Send>>;

/// The parent's sending half; keeps the child alive with the receiving half. A write error is
/// reported with the child's exit status when it is known (after a broken pipe it waits up to
/// [`STATUS_WAIT`] for it).
struct ChildSender {
    inner: StreamSender<pipes::CloseOnShutdown<ChildStdin>>,
    exit: watch::Receiver<Option<String>>,
    /// A broken pipe, held back while the exit status is awaited.
    failing: Option<(io::Error, ExitFuture)>,
    _owner: Arc<oneshot::Sender<()>>,
}

impl ChildSender {
    /// Runs `op` on the inner sender, unless an error is held back, and explains its error.
    fn guarded(
        &mut self,
        cx: &mut Context<'_>,
        op: impl FnOnce(&mut StreamSender<pipes::CloseOnShutdown<ChildStdin>>, &mut Context<'_>) -> Poll<io::Result<()>>,
    ) -> Poll<io::Result<()>> {
        let (err, mut waiting) = match self.failing.take() {
            Some(failing) => failing,
            None => {
                let err = match ready!(op(&mut self.inner, cx)) {
                    Ok(()) => return Poll::Ready(Ok(())),
                    Err(err) => err,
                };
                if let Some(status) = self.exit.borrow().as_deref() {
                    return Poll::Ready(Err(with_status(err, status)));
                }
                if err.raw_os_error() != Some(libc::EPIPE) {
                    return Poll::Ready(Err(err));
                }
                // The child closed its stdin, most likely by exiting: give the reaper a moment.
                (err, wait_for_exit(self.exit.clone(), Some(STATUS_WAIT)))
            }
        };
        match waiting.as_mut().poll(cx) {
            Poll::Pending => {
                self.failing = Some((err, waiting));
                Poll::Pending
            }
            Poll::Ready(Some(status)) => Poll::Ready(Err(with_status(err, &status))),
            Poll::Ready(None) => Poll::Ready(Err(err)),
        }
    }
}

/// "the child process (pid 42) exited with status 3 (writing to its stdin failed: Broken pipe ...)".
fn with_status(err: io::Error, status: &str) -> io::Error {
    io::Error::new(err.kind(), format!("{status} (writing to its stdin failed: {err})"))
}

impl FrameSender for ChildSender {
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.guarded(cx, |inner, cx| inner.poll_ready(cx))
    }

    fn start_send(&mut self, frame: Bytes) -> io::Result<()> {
        // Only queues (or refuses an oversized frame); writing happens in the poll methods.
        self.inner.start_send(frame)
    }

    fn start_send_parts(&mut self, frame: Encoded) -> io::Result<()> {
        self.inner.start_send_parts(frame)
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.guarded(cx, |inner, cx| inner.poll_flush(cx))
    }

    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.guarded(cx, |inner, cx| inner.poll_close(cx))
    }
}

/// The parent's receiving half: turns the child's EOF, or its exit while its stdout is still
/// held open by someone else, into an error naming its exit status, and stray stdout text into an
/// error saying so. Once it has failed, it fails the same way on every later poll.
struct ChildReceiver {
    inner: StreamReceiver<SpinRead<ChildStdout>>,
    /// Resolves when the reaper publishes the exit status; `None` once it has resolved.
    exited: Option<ExitFuture>,
    /// The exit description, once published.
    status: Option<String>,
    /// The child's stdout reached EOF.
    eof: bool,
    /// After EOF: how long to wait for the status; after the exit with stdout still open: how
    /// long to keep reading.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The error returned, repeated on every later poll.
    failed: Option<(io::ErrorKind, String)>,
    pid: u32,
    _owner: Arc<oneshot::Sender<()>>,
}

impl ChildReceiver {
    fn fail(&mut self, err: io::Error) -> Poll<io::Result<Option<Bytes>>> {
        self.failed = Some((err.kind(), err.to_string()));
        Poll::Ready(Err(err))
    }

    /// Ready once `deadline` (started now with `limit` if unset) has passed.
    fn poll_deadline(&mut self, cx: &mut Context<'_>, limit: Duration) -> Poll<()> {
        self.deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit))).as_mut().poll(cx)
    }
}

impl FrameReceiver for ChildReceiver {
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Bytes>>> {
        if let Some((kind, message)) = &self.failed {
            return Poll::Ready(Err(io::Error::new(*kind, message.clone())));
        }
        if !self.eof {
            match self.inner.poll_recv(cx) {
                Poll::Ready(Ok(Some(frame))) => return Poll::Ready(Ok(Some(frame))),
                Poll::Ready(Ok(None)) => self.eof = true,
                Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => self.eof = true,
                Poll::Ready(Err(e)) => return self.fail(explain_bad_stream(e)),
                Poll::Pending => {}
            }
            if self.eof {
                // A drain deadline started before EOF no longer applies.
                self.deadline = None;
            }
        }
        if let Some(exited) = self.exited.as_mut() {
            if let Poll::Ready(status) = exited.as_mut().poll(cx) {
                self.exited = None;
                self.status = status;
            }
        }
        if let Some(status) = &self.status {
            // At EOF the status is the whole story. Before it, the child is gone but its stdout
            // is still open: read what it wrote before exiting, then give up on the rest.
            let message = status.clone();
            if !self.eof {
                ready!(self.poll_deadline(cx, EXIT_DRAIN));
            }
            return self.fail(io::Error::new(io::ErrorKind::UnexpectedEof, message));
        }
        if !self.eof {
            return Poll::Pending;
        }
        // EOF, no status yet: wait briefly for it (unless the reaper is gone for good).
        if self.exited.is_some() {
            ready!(self.poll_deadline(cx, STATUS_WAIT));
        }
        let message = format!("the child process (pid {}) closed its stdout but is still running", self.pid);
        self.fail(io::Error::new(io::ErrorKind::UnexpectedEof, message))
    }
}

/// A length prefix above the maximum from a child is almost always text: four ASCII bytes read
/// as a little-endian length are at least 512 MiB. Say so, with the bytes.
fn explain_bad_stream(err: io::Error) -> io::Error {
    let Some(too_large) = err.get_ref().and_then(|e| e.downcast_ref::<FrameTooLarge>()) else {
        return err;
    };
    let prefix = u32::try_from(too_large.size).map(u32::to_le_bytes).unwrap_or_default();
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "the child wrote something that is not a frame to its stdout (it starts with {:?}, read as a \
             {}-byte frame): a child serving over stdio must not print to stdout; log to stderr instead",
            String::from_utf8_lossy(&prefix),
            too_large.size
        ),
    )
}

/// The child's side: the process's own stdin and stdout as a [`Connection`] with default
/// options. Call it once, early, within a tokio runtime; the facade's `rpc::serve_stdio` wraps
/// it with a server.
///
/// It moves the connection to new file descriptors, then points fd 1 at stderr and fd 0 at
/// `/dev/null` (see the module docs for why). Errors if stdin or stdout is not a pipe (the
/// process was not started by a `spawn:` parent), if stderr is the same pipe as stdout (`2>&1`:
/// the logs would go into the connection), or if an earlier call succeeded.
pub fn stdio() -> Result<Connection, RpcError> {
    stdio_with(&TransportOptions::default())
}

/// [`stdio`] with the given options (only `max_frame_len` and `spin` apply).
pub fn stdio_with(options: &TransportOptions) -> Result<Connection, RpcError> {
    static TAKEN: AtomicBool = AtomicBool::new(false);
    if TAKEN.swap(true, Ordering::SeqCst) {
        return Err(RpcError::from(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "stdin/stdout were already taken as a connection by an earlier call",
        )));
    }
    let taken = take_stdio(options);
    if taken.is_err() {
        // Nothing was taken: a later call may try again.
        TAKEN.store(false, Ordering::SeqCst);
    }
    taken
}

fn take_stdio(options: &TransportOptions) -> Result<Connection, RpcError> {
    if stderr_is_stdout_pipe() {
        return Err(RpcError::from(io::Error::new(
            io::ErrorKind::InvalidInput,
            "stderr is the same pipe as stdout (started with 2>&1?): the process's logs would go into \
             the connection; give the child its own stderr",
        )));
    }
    let not_a_pipe = |what: &str, e: io::Error| {
        let message = if e.kind() == io::ErrorKind::InvalidInput {
            format!("{what} is not a pipe: serving over stdio is for a child started through a spawn: address")
        } else {
            format!("taking {what} as the connection: {}", crate::context::describe(&e))
        };
        RpcError::from(io::Error::new(e.kind(), message))
    };
    // Anything already buffered for stdout goes out before fd 1 changes meaning.
    let _ = io::stdout().flush();
    let input = io::stdin().as_fd().try_clone_to_owned().map_err(|e| not_a_pipe("stdin", e))?;
    let output = io::stdout().as_fd().try_clone_to_owned().map_err(|e| not_a_pipe("stdout", e))?;
    let receiver = pipe::Receiver::from_owned_fd(input).map_err(|e| not_a_pipe("stdin", e))?;
    let sender = pipe::Sender::from_owned_fd(output).map_err(|e| not_a_pipe("stdout", e))?;
    redirect_stdio().map_err(|e| not_a_pipe("stdout", e))?;
    pipes::enlarge(sender.as_fd());
    pipes::enlarge(receiver.as_fd());
    let max_frame_len = options.effective_max_frame_len();
    let (sender, receiver) = framed(receiver, |r| r.as_fd(), pipes::CloseOnShutdown::new(sender), options.framing());
    Ok(Connection {
        sender: Box::new(sender),
        receiver: Box::new(receiver),
        // The peer is the parent that started us (as whom it ran is not known for certain: a
        // set-user-id child runs as another user than its parent; our real ids are the parent's).
        info: ConnectionInfo::new("spawn", "stdio (the parent process)", max_frame_len)
            .with_peer_credentials(parent_credentials()),
    })
}

/// The parent's credentials, as a child sees them: its pid, and our *real* user and group, which
/// a child inherits from the parent that started it (the effective ones differ in a set-user-id
/// program).
fn parent_credentials() -> Option<rpc_core::transport::PeerCredentials> {
    // SAFETY: getppid, getuid and getgid take no arguments, touch no memory of ours and cannot
    // fail.
    let (ppid, uid, gid) = unsafe { (libc::getppid(), libc::getuid(), libc::getgid()) };
    let ppid = u32::try_from(ppid).ok().filter(|&pid| pid > 1)?;
    Some(rpc_core::transport::PeerCredentials::new(uid, gid, Some(ppid)))
}

/// Whether fds 1 and 2 are the same pipe (same device and inode). Unknown counts as no: the
/// checks that follow report a closed or unusual descriptor.
fn stderr_is_stdout_pipe() -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let metadata = |fd: std::os::fd::BorrowedFd<'_>| {
        fd.try_clone_to_owned().and_then(|fd| std::fs::File::from(fd).metadata()).ok()
    };
    match (metadata(io::stdout().as_fd()), metadata(io::stderr().as_fd())) {
        (Some(out), Some(err)) => out.file_type().is_fifo() && (out.dev(), out.ino()) == (err.dev(), err.ino()),
        _ => false,
    }
}

/// fd 1 := stderr, fd 0 := /dev/null, so that nothing else in the process can write into or
/// read from the connection through the standard descriptors.
fn redirect_stdio() -> io::Result<()> {
    let null = std::fs::File::open("/dev/null")?;
    // SAFETY: dup2 only manipulates the descriptor table. fds 0, 1 and 2 are the process's
    // standard descriptors, which std never closes; the connection uses its own duplicates, so
    // replacing 0 and 1 closes no descriptor anything of ours still relies on.
    let results = unsafe {
        [libc::dup2(libc::STDERR_FILENO, libc::STDOUT_FILENO), libc::dup2(null.as_raw_fd(), libc::STDIN_FILENO)]
    };
    if results.contains(&-1) {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rpc_core::transport::{recv, send};

    fn shell(script: &str) -> Command {
        let mut command = Command::new("/bin/sh");
        command.arg("-c").arg(script);
        command
    }

    #[tokio::test]
    async fn frames_cross_a_child_and_its_exit_is_reported() {
        // `cat` echoes our frames back unchanged: a perfect loopback child.
        let mut conn = connect_command(Command::new("cat")).unwrap();
        assert!(conn.info.peer.starts_with("spawn:cat (pid "), "{}", conn.info.peer);
        let big = Bytes::from(vec![3u8; 2 << 20]);
        let (sent, got) = tokio::join!(send(&mut *conn.sender, big.clone()), recv(&mut *conn.receiver));
        sent.unwrap();
        assert_eq!(got.unwrap().unwrap(), big);
        rpc_core::transport::close(&mut *conn.sender).await.unwrap();
        let err = recv(&mut *conn.receiver).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert!(err.to_string().ends_with("exited with status 0"), "{err}");
    }

    #[tokio::test]
    async fn a_killed_child_names_the_signal() {
        let mut conn = connect_command(shell("kill -9 $$")).unwrap();
        let err = recv(&mut *conn.receiver).await.unwrap_err();
        assert!(err.to_string().contains("was killed by signal 9 (SIGKILL)"), "{err}");
        assert!(matches!(RpcError::from(err), RpcError::Disconnected { .. }));
    }

    #[tokio::test]
    async fn a_dead_child_fails_the_connection_while_a_grandchild_holds_its_stdout() {
        // The background `sleep` inherits the child's stdout, so no EOF comes when it dies.
        let mut conn = connect_command(shell("sleep 8 & kill -9 $$")).unwrap();
        let started = std::time::Instant::now();
        let err = tokio::time::timeout(Duration::from_secs(2), recv(&mut *conn.receiver)).await.unwrap().unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert!(err.to_string().contains("was killed by signal 9 (SIGKILL)"), "{err}");
        // Polling again after the error repeats it (no panic from a completed future).
        let again = recv(&mut *conn.receiver).await.unwrap_err();
        assert_eq!((again.kind(), again.to_string()), (err.kind(), err.to_string()));
    }

    #[tokio::test]
    async fn the_receiver_repeats_its_error_when_polled_again() {
        let mut conn = connect_command(shell("exit 3")).unwrap();
        let first = recv(&mut *conn.receiver).await.unwrap_err();
        assert!(first.to_string().ends_with("exited with status 3"), "{first}");
        for _ in 0..3 {
            let again = recv(&mut *conn.receiver).await.unwrap_err();
            assert_eq!((again.kind(), again.to_string()), (first.kind(), first.to_string()));
        }
    }

    #[tokio::test]
    async fn a_send_to_a_dead_child_names_its_exit() {
        // Sending until it fails: the broken pipe may come before or after the status is known.
        let mut conn = connect_command(shell("exit 3")).unwrap();
        let err = loop {
            match send(&mut *conn.sender, Bytes::from_static(b"ping")).await {
                Ok(()) => tokio::time::sleep(Duration::from_millis(5)).await,
                Err(err) => break err,
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe, "{err}");
        assert!(err.to_string().contains("exited with status 3"), "{err}");

        // Status already published: the error names the signal at once.
        let mut conn = connect_command(shell("kill -9 $$")).unwrap();
        recv(&mut *conn.receiver).await.unwrap_err();
        let err = send(&mut *conn.sender, Bytes::from_static(b"ping")).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe, "{err}");
        assert!(err.to_string().contains("was killed by signal 9 (SIGKILL)"), "{err}");

        // A child that closed its stdin and exits a little later: the broken pipe waits for it.
        let mut conn = connect_command(shell("exec 0<&-; sleep 0.2; exit 4")).unwrap();
        let err = loop {
            match send(&mut *conn.sender, Bytes::from_static(b"ping")).await {
                Ok(()) => tokio::time::sleep(Duration::from_millis(5)).await,
                Err(err) => break err,
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe, "{err}");
        assert!(err.to_string().contains("exited with status 4"), "{err}");
    }

    /// Env var that turns [`stdio_child`] into the child of [`stdio_refuses_stderr_on_stdout_and_allows_a_retry`].
    const STDIO_CHILD: &str = "RPC_TRANSPORTS_SPAWN_STDIO_CHILD";

    /// Runs this test binary's [`stdio_child`] with stdin and stdout piped and stderr on stdout.
    #[test]
    fn stdio_refuses_stderr_on_stdout_and_allows_a_retry() {
        let exe = std::env::current_exe().unwrap();
        let output = std::process::Command::new("/bin/sh")
            .args(["-c", "exec \"$0\" \"$@\" 2>&1"])
            .arg(exe)
            .args(["--exact", "spawn::tests::stdio_child", "--nocapture", "--test-threads=1"])
            .env(STDIO_CHILD, "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{}: {text}", output.status);
        for which in ["first: ", "second: "] {
            let line = text.lines().find_map(|line| line.split_once(which)).map(|(_, error)| error);
            assert!(line.is_some_and(|e| e.contains("stderr is the same pipe as stdout")), "{text}");
        }
    }

    /// A no-op unless run as the child of the test above: there, `stdio` must refuse twice (the
    /// second refusal is not "already taken"), then succeed once stderr is not stdout, then
    /// refuse as already taken. Reports through its exit code (its stderr is gone by then).
    #[test]
    fn stdio_child() {
        if std::env::var_os(STDIO_CHILD).is_none() {
            return;
        }
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let _guard = runtime.enter();
        let first = stdio().map(drop).unwrap_err();
        eprintln!("first: {first}");
        let second = stdio().map(drop).unwrap_err();
        eprintln!("second: {second}");
        let null = std::fs::OpenOptions::new().write(true).open("/dev/null").unwrap();
        // SAFETY: dup2 only replaces fd 2, which nothing in this test relies on any more.
        assert_ne!(unsafe { libc::dup2(null.as_raw_fd(), libc::STDERR_FILENO) }, -1);
        let code = match stdio() {
            Ok(conn) => match stdio().map(drop) {
                Err(e) if e.to_string().contains("already taken") => {
                    drop(conn);
                    0
                }
                _ => 3,
            },
            Err(_) => 2,
        };
        std::process::exit(code);
    }

    #[test]
    fn connecting_outside_a_runtime_is_an_error_not_a_panic() {
        let err = connect_command(Command::new("cat")).unwrap_err();
        assert!(err.to_string().contains("within a tokio runtime"), "{err}");
    }

    #[tokio::test]
    async fn stray_stdout_text_is_a_clear_error() {
        let mut conn = connect_command(shell("echo hello from the child; sleep 5")).unwrap();
        let err = recv(&mut *conn.receiver).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let text = err.to_string();
        assert!(text.contains("not a frame to its stdout") && text.contains("\"hell\""), "{text}");
    }

    /// Waits until the child of `conn` is gone from the process table: exited *and* reaped.
    #[cfg(target_os = "linux")]
    async fn assert_reaped(pid: &str) {
        let proc_dir = format!("/proc/{pid}");
        for _ in 0..500 {
            if !Path::new(&proc_dir).exists() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("child {pid} still exists (running or a zombie)");
    }

    fn pid_of(conn: &Connection) -> String {
        conn.info.peer.rsplit_once("pid ").unwrap().1.trim_end_matches(')').to_owned()
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn dropping_the_connection_ends_and_reaps_the_child() {
        // `cat` exits at EOF on stdin, which dropping the sending half gives it.
        let conn = connect_command(Command::new("cat")).unwrap();
        let pid = pid_of(&conn);
        drop(conn);
        assert_reaped(&pid).await;
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_child_ignoring_eof_is_killed_after_the_grace_period() {
        let conn = spawn(shell("exec sleep 60"), &TransportOptions::default(), Duration::from_millis(100)).unwrap();
        let pid = pid_of(&conn);
        let started = std::time::Instant::now();
        drop(conn);
        assert_reaped(&pid).await;
        assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());
    }

    #[tokio::test]
    async fn a_missing_program_is_a_clear_error() {
        let err = connect_command(Command::new("/nonexistent/rpc-worker")).unwrap_err();
        assert!(err.to_string().contains("spawning /nonexistent/rpc-worker"), "{err}");
    }
}
