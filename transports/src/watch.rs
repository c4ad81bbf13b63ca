//! Registering an owned descriptor with the runtime, so a task can wait for it to become
//! readable (or report an error): the one place this crate makes the I/O-safety promise that
//! `AsyncFd::register_with_interest` asks for.

use std::os::fd::OwnedFd;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// Registers `fd` for `interest`. Must be called inside a runtime.
pub(crate) fn watch(fd: OwnedFd, interest: Interest) -> std::io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: `fd` is an `OwnedFd` moved into the `AsyncFd`: it stays open and names the same
    // file description until the `AsyncFd` is dropped, and `OwnedFd::as_raw_fd` always returns
    // that same descriptor.
    unsafe { AsyncFd::register_with_interest(fd, interest) }.map_err(|e| e.into_parts().1)
}
