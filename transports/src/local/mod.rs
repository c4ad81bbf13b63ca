//! `local://name`: a local socket known by a name rather than a path.
//!
//! | platform | mechanism | where the name lives |
//! |---|---|---|
//! | Linux, Android | Unix domain socket in the abstract namespace ([`abstract_ns`]) | nowhere on disk: never stale, gone when the listener closes |
//! | other Unix | Unix domain socket file `/tmp/<name>`, with the `unix://` module's mode, stale-file and cleanup handling | `/tmp` |
//! | Windows | named pipe `\\.\pipe\<name>` through `interprocess` (`ipc`) | the pipe namespace |
//!
//! The names are the ones `interprocess`'s `GenericNamespaced` gives, so a peer built on
//! `interprocess` reaches the same endpoint.
//!
//! **Why Linux does not go through `interprocess`.** It would work, but two things are awkward:
//! its tokio stream's `poll_shutdown` is a no-op, so closing our sending half would not send EOF
//! while the receiving half lives (the framing's `poll_close` promises EOF); and the abstract
//! namespace has no file permissions, so the owner-only default must be enforced by checking each
//! client's credentials, which wants the tokio `UnixStream` underneath. Binding the abstract
//! address directly gives us that stream, its real half-close, and the same accept/connect code
//! as `unix://`. Neither binding path ever displaces a live listener: an abstract `bind`
//! fails with `EADDRINUSE` while the name is taken, and `try_overwrite` is never used.
//!
//! On other Unix systems `interprocess` would also use `/tmp/<name>`, but it refuses a stale
//! file rather than reclaiming it, hence the reuse of the `unix://` code there.

use std::io;

use rpc_core::transport::{Connection, Listener};

use crate::options::TransportOptions;

#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) mod abstract_ns;
#[cfg(any(windows, test))]
mod ipc;

/// Connects to the local socket `name`.
pub(crate) async fn connect(name: &str, options: &TransportOptions) -> io::Result<Connection> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    return abstract_ns::connect(name, options).await;

    #[cfg(all(unix, not(any(target_os = "linux", target_os = "android"))))]
    return crate::unix::connect_as(&file_path(name), options, "local", format!("local://{name}")).await;

    #[cfg(windows)]
    return ipc::connect(name, options).await;

    #[cfg(not(any(unix, windows)))]
    return Err(unsupported(name, options));
}

/// Listens on the local socket `name`.
pub(crate) async fn listen(name: &str, options: &TransportOptions) -> io::Result<Box<dyn Listener>> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    return abstract_ns::listen(name, options).map(|l| Box::new(l) as _);

    #[cfg(all(unix, not(any(target_os = "linux", target_os = "android"))))]
    return crate::unix::listen_as(&file_path(name), options, "local", format!("local://{name}"))
        .await
        .map(|l| Box::new(l) as _);

    #[cfg(windows)]
    return ipc::listen(name, options).map(|l| Box::new(l) as _);

    #[cfg(not(any(unix, windows)))]
    return Err(unsupported(name, options));
}

/// Where `interprocess` puts a namespaced name on Unix systems without an abstract namespace.
#[cfg(all(unix, not(any(target_os = "linux", target_os = "android"))))]
fn file_path(name: &str) -> std::path::PathBuf {
    std::path::Path::new("/tmp").join(name)
}

#[cfg(not(any(unix, windows)))]
fn unsupported(_name: &str, _options: &TransportOptions) -> io::Error {
    io::Error::new(io::ErrorKind::Unsupported, "local:// is not supported on this platform")
}
