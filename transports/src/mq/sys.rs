//! Safe wrappers over the few POSIX message queue and pidfd calls `mq://` needs, so that the
//! rest of the module has no `unsafe`.
//!
//! On Linux a message queue descriptor (`mqd_t`) is a file descriptor: it is held as an
//! [`OwnedFd`] (closing it is `mq_close`), can be registered with the async runtime (the
//! kernel reports `EPOLLIN` while a message waits and `EPOLLOUT` while there is room), and
//! `fstat` tells its owner. Every queue here is opened with `O_NONBLOCK`: a full or empty queue
//! is `WouldBlock`, never a blocked runtime thread.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::OnceLock;

/// The shape of a queue: how many messages it holds and how large each may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Geometry {
    /// `mq_maxmsg`.
    pub(crate) max_msgs: usize,
    /// `mq_msgsize`.
    pub(crate) msg_size: usize,
}

/// The kernel's limits for queues created without `CAP_SYS_RESOURCE`, read from
/// `/proc/sys/fs/mqueue` once per process, when first needed (Linux's defaults when a file
/// cannot be read).
pub(crate) fn limits() -> Geometry {
    static LIMITS: OnceLock<Geometry> = OnceLock::new();
    *LIMITS.get_or_init(|| {
        let read = |file: &str, default: usize| {
            std::fs::read_to_string(format!("/proc/sys/fs/mqueue/{file}"))
                .ok()
                .and_then(|text| text.trim().parse().ok())
                .unwrap_or(default)
        };
        Geometry { max_msgs: read("msg_max", 10), msg_size: read("msgsize_max", 8192) }
    })
}

/// `RLIMIT_MSGQUEUE` (`ulimit -q`): the bytes of queues one user may have, as `(soft, hard)`.
pub(crate) fn budget() -> Option<(u64, u64)> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one `rlimit` into the valid, exclusively borrowed `limit`.
    if unsafe { libc::getrlimit(libc::RLIMIT_MSGQUEUE, &mut limit) } != 0 {
        return None;
    }
    Some((limit.rlim_cur, limit.rlim_max))
}

/// Which end of a queue a descriptor is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    Read,
    Write,
}

impl Access {
    fn flags(self) -> libc::c_int {
        let access = match self {
            Access::Read => libc::O_RDONLY,
            Access::Write => libc::O_WRONLY,
        };
        access | libc::O_NONBLOCK | libc::O_CLOEXEC
    }
}

/// A queue name (`/name`) as the C string the calls take.
pub(crate) fn name(name: &str) -> io::Result<CString> {
    CString::new(format!("/{name}"))
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "the queue name contains a NUL byte"))
}

/// Creates a queue that must not exist yet (`O_EXCL`) with exactly the permission bits `mode`,
/// and opens it for `access`.
pub(crate) fn create(name: &CStr, access: Access, mode: u32, geometry: Geometry) -> io::Result<OwnedFd> {
    // SAFETY: an all-zero `mq_attr` is a valid value (plain integers, private padding).
    let mut attr: libc::mq_attr = unsafe { std::mem::zeroed() };
    attr.mq_maxmsg = geometry.max_msgs as libc::c_long;
    attr.mq_msgsize = geometry.msg_size as libc::c_long;
    let flags = access.flags() | libc::O_CREAT | libc::O_EXCL;
    // SAFETY: `name` is NUL-terminated and outlives the call; with O_CREAT mq_open reads two
    // more arguments, the mode (passed as the promoted `c_uint` of a variadic `mode_t`) and a
    // pointer to an `mq_attr` that lives across the call. The returned descriptor is new and
    // owned by nobody else.
    let fd = unsafe { libc::mq_open(name.as_ptr(), flags, mode as libc::c_uint, &attr as *const libc::mq_attr) };
    let fd = owned(fd)?;
    // mq_open applies the umask, which can only take bits away; set exactly `mode`.
    // SAFETY: fchmod on a descriptor we own; it reads no memory of ours.
    if unsafe { libc::fchmod(fd.as_raw_fd(), mode as libc::mode_t) } != 0 {
        let err = io::Error::last_os_error();
        let _ = unlink(name);
        return Err(err);
    }
    Ok(fd)
}

/// Opens an existing queue.
pub(crate) fn open(name: &CStr, access: Access) -> io::Result<OwnedFd> {
    // SAFETY: `name` is NUL-terminated and outlives the call; without O_CREAT mq_open reads no
    // further arguments. The returned descriptor is new and owned by nobody else.
    owned(unsafe { libc::mq_open(name.as_ptr(), access.flags()) })
}

fn owned(fd: libc::mqd_t) -> io::Result<OwnedFd> {
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: on Linux an `mqd_t` is a file descriptor, just returned to us and open.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Removes a queue's name; the queue lives on while descriptors to it are open.
pub(crate) fn unlink(name: &CStr) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated and outlives the call.
    if unsafe { libc::mq_unlink(name.as_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `mq_getattr` of an open queue.
fn attributes(fd: BorrowedFd<'_>) -> io::Result<libc::mq_attr> {
    // SAFETY: an all-zero `mq_attr` is a valid value.
    let mut attr: libc::mq_attr = unsafe { std::mem::zeroed() };
    // SAFETY: mq_getattr writes one `mq_attr` into the exclusively borrowed `attr`; `fd` is an
    // open queue descriptor for the duration of the borrow.
    if unsafe { libc::mq_getattr(fd.as_raw_fd(), &mut attr) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(attr)
}

/// The geometry of an open queue.
pub(crate) fn geometry(fd: BorrowedFd<'_>) -> io::Result<Geometry> {
    let attr = attributes(fd)?;
    Ok(Geometry { max_msgs: attr.mq_maxmsg.max(0) as usize, msg_size: attr.mq_msgsize.max(0) as usize })
}

/// How many messages wait in an open queue now (`mq_curmsgs`).
pub(crate) fn queued(fd: BorrowedFd<'_>) -> io::Result<usize> {
    Ok(attributes(fd)?.mq_curmsgs.max(0) as usize)
}

/// The owner's uid of an open queue.
pub(crate) fn owner(fd: BorrowedFd<'_>) -> io::Result<u32> {
    // SAFETY: an all-zero `stat` is a valid value.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes one `stat` into the exclusively borrowed `stat`; `fd` is open.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut stat) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(stat.st_uid)
}

/// Our effective uid.
pub(crate) fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Sends one message without waiting (`WouldBlock` while the queue is full).
pub(crate) fn send(fd: BorrowedFd<'_>, message: &[u8]) -> io::Result<()> {
    // SAFETY: the pointer and length describe the borrowed `message`, which mq_send only reads;
    // `fd` is open for the duration of the borrow.
    if unsafe { libc::mq_send(fd.as_raw_fd(), message.as_ptr().cast(), message.len(), 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Receives one message into `buf` without waiting (`WouldBlock` while the queue is empty);
/// `buf` must hold at least the queue's `msg_size` bytes. Returns the message's length.
pub(crate) fn receive(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    let mut priority: libc::c_uint = 0;
    // SAFETY: mq_receive writes at most `buf.len()` bytes into the exclusively borrowed `buf`
    // and one `c_uint` into `priority`; `fd` is open for the duration of the borrow.
    let n = unsafe { libc::mq_receive(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), &mut priority) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Registers a queue with the runtime for `interest` (the crate's one registration, `watch`).
pub(crate) use crate::watch::watch as register;

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn a_queue_round_trips_a_message_and_reports_its_shape() {
        let name = name(&format!("rpc-sys-test-{}", std::process::id())).unwrap();
        let geometry = Geometry { max_msgs: 2, msg_size: 128 };
        let tx = create(&name, Access::Write, 0o600, geometry).unwrap();
        let rx = open(&name, Access::Read).unwrap();
        unlink(&name).unwrap();
        assert_eq!(open(&name, Access::Read).unwrap_err().kind(), io::ErrorKind::NotFound);
        assert_eq!(self::geometry(tx.as_fd()).unwrap(), geometry);
        assert_eq!(owner(rx.as_fd()).unwrap(), euid());
        let mut buf = [0u8; 128];
        assert_eq!(receive(rx.as_fd(), &mut buf).unwrap_err().kind(), io::ErrorKind::WouldBlock);
        send(tx.as_fd(), b"one").unwrap();
        assert_eq!(queued(rx.as_fd()).unwrap(), 1);
        send(tx.as_fd(), b"two").unwrap();
        assert_eq!(queued(tx.as_fd()).unwrap(), 2);
        assert_eq!(send(tx.as_fd(), b"three").unwrap_err().kind(), io::ErrorKind::WouldBlock, "full");
        for expected in [&b"one"[..], b"two"] {
            let n = receive(rx.as_fd(), &mut buf).unwrap();
            assert_eq!(&buf[..n], expected);
        }
    }

    #[test]
    fn limits_are_read() {
        let limits = limits();
        assert!(limits.max_msgs >= 1 && limits.msg_size >= 128, "{limits:?}");
    }
}
