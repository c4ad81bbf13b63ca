//! The registry of schemes: one [`Scheme`] per transport, holding everything the rest of the
//! crate, the docs and the tests need to know about it.
//!
//! The address parser ([`Address::parse`]), the list of schemes an error names, [`SCHEMES`],
//! connecting and listening ([`Address::connect`], [`Address::listen`]), the docs tables (a unit
//! test checks them against this list) and the test fixtures (fresh addresses, what a killed
//! server leaves on disk, raw byte streams) all read [`REGISTRY`]. Adding a transport is its
//! module plus one entry here.
//!
//! [`SCHEMES`]: crate::SCHEMES

use std::io;
use std::path::{Path, PathBuf};

use rpc_core::error::RpcError;
use rpc_core::transport::{BoxFuture, Connection, Listener};

use crate::address::{self, Address};
use crate::options::TransportOptions;
#[allow(unused_imports)] // each platform uses some
use crate::{local, mem, tcp, tls};

/// One transport: its address form, where it runs, its facts, and (where this build has it)
/// how to parse, connect and listen.
#[derive(Debug)]
#[non_exhaustive]
pub struct Scheme {
    /// The scheme, e.g. `"tcp"`.
    pub name: &'static str,
    /// What follows the name: `"://"`, or `":"` for `spawn:`.
    pub separator: &'static str,
    /// The address form error messages show, e.g. `tcp://host:port`.
    pub form: &'static str,
    /// Where the transport exists.
    pub platforms: Platforms,
    /// Who can connect to a listener.
    pub reach: Reach,
    /// Whether a handler learns the calling process's uid, gid and pid
    /// (`CallContext::peer_credentials`).
    pub peer_credentials: bool,
    /// Whether a listener needs credentials of its own (a certificate and key) and a client
    /// needs to be told what to trust. [`Scheme::fresh_address`] then returns an address that
    /// names throwaway ones (with the `test-certificates` feature; `None` without it).
    pub needs_credentials: bool,
    /// Descriptors a server holds per accepted connection, once set up.
    pub descriptors_per_connection: usize,
    /// Descriptors a server needs at once while it sets a connection up (at least
    /// `descriptors_per_connection`).
    pub descriptors_during_setup: usize,
    /// What a listener leaves in the file system (or the queue namespace) if it is killed.
    pub on_disk: OnDisk,
    /// Whether a listener's address takes plain bytes, without a handshake of the transport's
    /// own, over a stream [`raw_stream`] opens (for tests that send hostile bytes).
    pub raw_stream: bool,
    /// Said after "not supported on this platform" where the reason is not obvious.
    pub(crate) why_not_here: &'static str,
    /// [`Scheme::fresh_address`]: given the temporary directory and the caller's unique part.
    pub(crate) fresh: fn(temp: &Path, unique: &str) -> Option<String>,
    /// Parses what follows `name` and `separator`.
    pub(crate) parse: fn(whole: &str, body: &str) -> Result<Address, RpcError>,
    /// `None` where this build lacks the transport.
    pub(crate) driver: Option<Driver>,
}

/// The platforms a transport exists on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Platforms {
    /// Everywhere.
    All,
    /// Unix and Windows.
    UnixAndWindows,
    /// Unix systems.
    Unix,
    /// Linux (and Android).
    Linux,
    /// Linux only.
    LinuxOnly,
}

impl Platforms {
    /// How the crate docs' table names them.
    pub fn as_str(self) -> &'static str {
        match self {
            Platforms::All => "all",
            Platforms::UnixAndWindows => "Unix, Windows",
            Platforms::Unix => "Unix",
            Platforms::Linux | Platforms::LinuxOnly => "Linux",
        }
    }
}

/// Who can connect to a listener of a transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reach {
    /// Any host.
    AnyHost,
    /// Processes on the same machine.
    SameMachine,
    /// Only the parent that started the child (there is no listener to connect to).
    ParentAndChild,
    /// Only the listener's own process.
    SameProcess,
}

/// What a killed listener leaves behind, for the next listener on the address to reclaim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum OnDisk {
    /// Nothing (sockets, abstract names, memory, pipes).
    Nothing,
    /// The socket file at the address's path. While it starts, a listener binds a temporary
    /// name `.rpc<pid>-<n>.tmp` in the same directory (see [`temp_name_owner`]).
    SocketFile,
    /// The connect FIFO at the address's path; each connection's private FIFO pair lives next to
    /// it until both sides opened it.
    ConnectFifo,
    /// The connect queue `/name` in the POSIX message queue namespace.
    ConnectQueue,
}

/// A scheme's connect: the address is always of the scheme's own variant.
pub(crate) type ConnectFn = for<'a> fn(&'a Address, &'a TransportOptions) -> BoxFuture<'a, io::Result<Connection>>;
/// A scheme's listen.
pub(crate) type ListenFn =
    for<'a> fn(&'a Address, &'a TransportOptions) -> BoxFuture<'a, io::Result<Box<dyn Listener>>>;

/// How this build connects and listens for one scheme.
#[derive(Clone, Copy)]
pub(crate) struct Driver {
    pub(crate) connect: ConnectFn,
    /// `None` for a scheme that is only connected to (`spawn:`).
    pub(crate) listen: Option<ListenFn>,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver").field("listens", &self.listen.is_some()).finish()
    }
}

/// Every scheme some build of this crate knows, in the order error messages and docs list them.
pub const REGISTRY: &[Scheme] = &[TCP, TLS, LOCAL, SHM, UNIX, FIFO, SPAWN, MQ, MEM];

/// The scheme named `name` (lower case), whether or not this build has it.
pub fn lookup(name: &str) -> Option<&'static Scheme> {
    REGISTRY.iter().find(|scheme| scheme.name == name)
}

/// The schemes this build has, in registry order.
pub fn available() -> impl Iterator<Item = &'static Scheme> {
    REGISTRY.iter().filter(|scheme| scheme.is_available())
}

impl Scheme {
    /// Whether this build (this platform) has the transport.
    pub fn is_available(&self) -> bool {
        self.driver.is_some()
    }

    /// Whether one can listen on an address of this scheme (all but `spawn:`).
    pub fn listens(&self) -> bool {
        self.reach != Reach::ParentAndChild
    }

    /// A fresh address to listen on whose name contains `unique` (which must be unique to the
    /// caller, e.g. a process id and a counter): for tests and tools. `tcp://` picks a free port;
    /// `unix://` is a socket file in the temporary directory; `fifo://` gets a directory of its
    /// own in the temporary directory, created here, that [`remove_endpoint`] removes. `tls://`
    /// (with the `test-certificates` feature) gets a throwaway self-signed certificate for
    /// `localhost` and `127.0.0.1` in a directory of its own, which the address names as the
    /// listener's certificate and the clients' root and [`remove_endpoint`] removes; without
    /// the feature `None`. `None` for `spawn:`, which names a program to start.
    pub fn fresh_address(&self, unique: &str) -> Option<String> {
        (self.fresh)(&std::env::temp_dir(), unique)
    }
}

/// [`Scheme::fresh_address`] of `tls://`: a throwaway certificate in a directory of its own.
#[cfg(feature = "test-certificates")]
fn fresh_tls(temp: &Path, unique: &str) -> Option<String> {
    let dir = tls::test_certificates::write_self_signed(temp, unique).ok()?;
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let params =
        crate::TlsParams { ca: Some(cert.clone()), cert: Some(cert), key: Some(key), client_ca: None, name: None };
    Some(Address::Tls { host_port: "127.0.0.1:0".to_owned(), params }.to_string())
}

/// [`Scheme::fresh_address`] of `tls://` without the `test-certificates` feature: none.
#[cfg(not(feature = "test-certificates"))]
fn fresh_tls(_temp: &Path, _unique: &str) -> Option<String> {
    None
}

/// [`Scheme::fresh_address`] of `fifo://`: a directory of its own, which marks it as made here.
fn fresh_fifo(temp: &Path, unique: &str) -> Option<String> {
    let dir = temp.join(format!("{unique}{FRESH_FIFO_DIR}"));
    std::fs::create_dir_all(&dir).ok()?;
    Some(format!("fifo://{}", dir.join("calc").display()))
}

/// The files a killed listener at `addr` leaves behind and cannot remove (the next listener on
/// the address reclaims them): a `unix://` socket file, a `fifo://` connect FIFO, an `mq://`
/// connect queue as `/dev/mqueue` lists it where the mqueue file system is mounted there.
pub fn endpoint_files(addr: &Address) -> Vec<PathBuf> {
    match addr {
        Address::Unix(path) | Address::Fifo(path) => vec![path.clone()],
        Address::Mq(name) => vec![Path::new("/dev/mqueue").join(name)],
        _ => Vec::new(),
    }
}

/// The directory in which a listener at `addr` creates files of its own, and whether it is
/// private to the address (a `fifo://` address made by [`Scheme::fresh_address`]: everything new
/// in it is the listener's) or shared (a `unix://` socket's directory, or that of any other
/// `fifo://` address: only the listener's own names are).
pub fn endpoint_dir(addr: &Address) -> Option<(PathBuf, bool)> {
    match addr {
        Address::Unix(path) => Some((path.parent()?.to_owned(), false)),
        Address::Fifo(path) => match fresh_fifo_dir(path) {
            Some(dir) => Some((dir.to_owned(), true)),
            None => Some((path.parent()?.to_owned(), false)),
        },
        _ => None,
    }
}

/// How the name of the directory [`Scheme::fresh_address`] makes for a `fifo://` address ends:
/// only such a directory is ever removed whole by [`remove_endpoint`].
const FRESH_FIFO_DIR: &str = ".rpc-fresh-fifo";

/// The directory of the connect FIFO at `path` if [`Scheme::fresh_address`] made it for that
/// address alone.
fn fresh_fifo_dir(path: &Path) -> Option<&Path> {
    path.parent().filter(|dir| dir.file_name().is_some_and(|name| name.to_string_lossy().ends_with(FRESH_FIFO_DIR)))
}

/// Removes what a killed listener at `addr` left behind: its socket file, its connect queue, its
/// connect FIFO, and the FIFO's directory if [`Scheme::fresh_address`] made it (a directory of
/// the caller's, such as the temporary directory itself, is never removed). For tests: it
/// removes without checking that nobody uses it.
pub fn remove_endpoint(addr: &Address) {
    match addr {
        Address::Unix(path) => {
            let _ = std::fs::remove_file(path);
        }
        Address::Fifo(path) => {
            let _ = std::fs::remove_file(path);
            if let Some(dir) = fresh_fifo_dir(path) {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
        #[cfg(feature = "test-certificates")]
        Address::Tls { params, .. } => {
            // Only a directory fresh_address made.
            let dir = params.cert.as_deref().and_then(Path::parent);
            if let Some(dir) = dir.filter(|d| {
                d.file_name().is_some_and(|n| n.to_string_lossy().ends_with(tls::test_certificates::DIR_SUFFIX))
            }) {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
        #[cfg(target_os = "linux")]
        Address::Mq(name) => {
            if let Ok(name) = crate::mq::sys::name(name) {
                let _ = crate::mq::sys::unlink(&name);
            }
        }
        _ => {}
    }
}

/// The pid of the process that created `file_name` if it is a temporary name a `unix://`
/// listener binds before it links the socket file into place (`.rpc<pid>-<n>.tmp`).
pub fn temp_name_owner(file_name: &str) -> Option<u32> {
    #[cfg(unix)]
    return crate::endpoint::temp_name_owner(file_name, crate::unix::TEMP_KIND);
    #[cfg(not(unix))]
    return {
        let _ = file_name;
        None
    };
}

/// A byte stream, for [`raw_stream`].
pub trait RawIo: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> RawIo for T {}

/// A plain byte stream to a listener at `addr` (no framing, no hello), for tests that send
/// hostile bytes. `None` where the transport has no such stream ([`Scheme::raw_stream`]).
pub async fn raw_stream(addr: &Address) -> Option<io::Result<Box<dyn RawIo>>> {
    match addr {
        Address::Tcp(host_port) => {
            Some(tokio::net::TcpStream::connect(host_port.as_str()).await.map(|s| Box::new(s) as _))
        }
        #[cfg(unix)]
        Address::Unix(path) => Some(tokio::net::UnixStream::connect(path).await.map(|s| Box::new(s) as _)),
        #[cfg(target_os = "linux")]
        Address::Local(name) => Some(abstract_stream(name).map(|s| Box::new(s) as _)),
        _ => None,
    }
}

/// On Linux `local://name` is the abstract Unix socket address "\0name".
#[cfg(target_os = "linux")]
fn abstract_stream(name: &str) -> io::Result<tokio::net::UnixStream> {
    use std::os::linux::net::SocketAddrExt;
    let sockaddr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
    let stream = std::os::unix::net::UnixStream::connect_addr(&sockaddr)?;
    stream.set_nonblocking(true)?;
    tokio::net::UnixStream::from_std(stream)
}

/// `connect` and `listen` for a scheme, from the module's functions: `$variant` is the
/// [`Address`] variant, `$bind` its fields, `$connect` / `$listen` expressions over them.
macro_rules! driver {
    ($variant:ident $bind:tt, connect: $connect:expr, listen: $listen:expr $(,)?) => {{
        fn connect<'a>(addr: &'a Address, options: &'a TransportOptions) -> BoxFuture<'a, io::Result<Connection>> {
            let Address::$variant $bind = addr else { unreachable!("a {addr} address in the wrong driver") };
            Box::pin($connect(options))
        }
        fn listen<'a>(
            addr: &'a Address,
            options: &'a TransportOptions,
        ) -> BoxFuture<'a, io::Result<Box<dyn Listener>>> {
            let Address::$variant $bind = addr else { unreachable!("a {addr} address in the wrong driver") };
            Box::pin($listen(options))
        }
        Some(Driver { connect, listen: Some(listen) })
    }};
}

/// `async move { ... }` of a module's connect or listen, boxing the listener.
macro_rules! boxed {
    ($e:expr) => {
        async move { $e.await.map(|l| Box::new(l) as Box<dyn Listener>) }
    };
}

/// A synchronous call as a future.
macro_rules! now {
    ($e:expr) => {
        std::future::ready($e)
    };
}

const TCP: Scheme = Scheme {
    name: "tcp",
    separator: "://",
    form: "tcp://host:port",
    platforms: Platforms::All,
    reach: Reach::AnyHost,
    peer_credentials: false,
    needs_credentials: false,
    descriptors_per_connection: 1,
    descriptors_during_setup: 1,
    on_disk: OnDisk::Nothing,
    raw_stream: true,
    why_not_here: "",
    fresh: |_, _| Some("tcp://127.0.0.1:0".to_owned()),
    parse: address::parse_tcp,
    driver: driver!(Tcp(host_port),
        connect: |o| tcp::connect(host_port, o),
        listen: |o| boxed!(tcp::listen(host_port, o))),
};

// Not `raw_stream`: its bytes are TLS records; plain bytes end in a failed handshake, which only
// that connection sees (tests/tls.rs speaks plain TCP to it).
const TLS: Scheme = Scheme {
    name: "tls",
    separator: "://",
    form: "tls://host:port",
    platforms: Platforms::All,
    reach: Reach::AnyHost,
    peer_credentials: false,
    needs_credentials: true,
    descriptors_per_connection: 1,
    descriptors_during_setup: 1,
    on_disk: OnDisk::Nothing,
    raw_stream: false,
    why_not_here: "",
    fresh: fresh_tls,
    parse: address::parse_tls,
    driver: driver!(Tls { host_port, params },
        connect: |o| tls::connect(host_port, params, o),
        listen: |o| boxed!(tls::listen(host_port, params, o))),
};

const LOCAL: Scheme = Scheme {
    name: "local",
    separator: "://",
    form: "local://name",
    platforms: Platforms::UnixAndWindows,
    reach: Reach::SameMachine,
    peer_credentials: cfg!(unix),
    needs_credentials: false,
    descriptors_per_connection: 1,
    descriptors_during_setup: 1,
    on_disk: if cfg!(any(target_os = "linux", target_os = "android", windows)) {
        OnDisk::Nothing
    } else {
        OnDisk::SocketFile
    },
    raw_stream: cfg!(target_os = "linux"),
    why_not_here: "",
    fresh: |_, unique| Some(format!("local://{unique}")),
    parse: |s, body| address::parse_local_name(s, body, "local").map(Address::Local),
    driver: driver!(Local(name),
        connect: |o| local::connect(name, o),
        listen: |o| local::listen(name, o)),
};

const SHM: Scheme = Scheme {
    name: "shm",
    separator: "://",
    form: "shm://name",
    platforms: Platforms::Linux,
    reach: Reach::SameMachine,
    peer_credentials: true,
    needs_credentials: false,
    descriptors_per_connection: 4,
    descriptors_during_setup: 6,
    on_disk: OnDisk::Nothing,
    raw_stream: false,
    why_not_here: "",
    fresh: |_, unique| Some(format!("shm://{unique}")),
    parse: |s, body| address::parse_local_name(s, body, "shm").map(Address::Shm),
    #[cfg(any(target_os = "linux", target_os = "android"))]
    driver: driver!(Shm(name),
        connect: |o| crate::shm::connect(name, o),
        listen: |o| boxed!(now!(crate::shm::listen(name, o)))),
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    driver: None,
};

const UNIX: Scheme = Scheme {
    name: "unix",
    separator: "://",
    form: "unix:///path",
    platforms: Platforms::Unix,
    reach: Reach::SameMachine,
    peer_credentials: true,
    needs_credentials: false,
    descriptors_per_connection: 1,
    descriptors_during_setup: 1,
    on_disk: OnDisk::SocketFile,
    raw_stream: true,
    why_not_here: "",
    fresh: |temp, unique| Some(format!("unix://{}", temp.join(format!("{unique}.sock")).display())),
    parse: address::parse_unix,
    #[cfg(unix)]
    driver: driver!(Unix(path),
        connect: |o| crate::unix::connect(path, o),
        listen: |o| boxed!(crate::unix::listen(path, o))),
    #[cfg(not(unix))]
    driver: None,
};

const FIFO: Scheme = Scheme {
    name: "fifo",
    separator: "://",
    form: "fifo:///path",
    platforms: Platforms::Unix,
    reach: Reach::SameMachine,
    peer_credentials: false,
    needs_credentials: false,
    descriptors_per_connection: 2,
    descriptors_during_setup: 2,
    on_disk: OnDisk::ConnectFifo,
    raw_stream: false,
    why_not_here: "",
    fresh: fresh_fifo,
    parse: address::parse_fifo,
    #[cfg(unix)]
    driver: driver!(Fifo(path),
        connect: |o| crate::fifo::connect(path, o),
        listen: |o| boxed!(crate::fifo::listen(path, o))),
    #[cfg(not(unix))]
    driver: None,
};

const SPAWN: Scheme = Scheme {
    name: "spawn",
    separator: ":",
    form: "spawn:/path/to/program?arg1&arg2",
    platforms: Platforms::Unix,
    reach: Reach::ParentAndChild,
    peer_credentials: true,
    needs_credentials: false,
    descriptors_per_connection: 2,
    descriptors_during_setup: 2,
    on_disk: OnDisk::Nothing,
    raw_stream: false,
    why_not_here: "",
    fresh: |_, _| None,
    parse: address::parse_spawn,
    #[cfg(unix)]
    driver: {
        fn connect<'a>(addr: &'a Address, options: &'a TransportOptions) -> BoxFuture<'a, io::Result<Connection>> {
            let Address::Spawn { program, args } = addr else { unreachable!("a {addr} address in the wrong driver") };
            Box::pin(now!(crate::spawn::connect(program, args, options)))
        }
        Some(Driver { connect, listen: None })
    },
    #[cfg(not(unix))]
    driver: None,
};

const MQ: Scheme = Scheme {
    name: "mq",
    separator: "://",
    form: "mq://name",
    platforms: Platforms::LinuxOnly,
    reach: Reach::SameMachine,
    peer_credentials: false,
    needs_credentials: false,
    descriptors_per_connection: 4,
    descriptors_during_setup: 5,
    on_disk: OnDisk::ConnectQueue,
    raw_stream: false,
    why_not_here: " (POSIX message queues are Linux only)",
    fresh: |_, unique| Some(format!("mq://{unique}")),
    parse: address::parse_mq,
    #[cfg(target_os = "linux")]
    driver: driver!(Mq(name),
        connect: |o| crate::mq::connect(name, o),
        listen: |o| boxed!(now!(crate::mq::listen(name, o)))),
    #[cfg(not(target_os = "linux"))]
    driver: None,
};

const MEM: Scheme = Scheme {
    name: "mem",
    separator: "://",
    form: "mem://name",
    platforms: Platforms::All,
    reach: Reach::SameProcess,
    peer_credentials: true,
    needs_credentials: false,
    descriptors_per_connection: 0,
    descriptors_during_setup: 0,
    on_disk: OnDisk::Nothing,
    raw_stream: false,
    why_not_here: "",
    fresh: |_, unique| Some(format!("mem://{unique}")),
    parse: |s, body| address::parse_name(s, body, "mem").map(Address::Mem),
    driver: driver!(Mem(name),
        connect: |o| now!(mem::connect(name, o)),
        listen: |o| boxed!(now!(mem::listen(name, o)))),
};

#[cfg(test)]
mod tests {
    #[test]
    fn removing_a_fifo_endpoint_keeps_a_directory_it_did_not_make() {
        let shared = std::env::temp_dir().join(format!("rpc-registry-shared-{}", std::process::id()));
        std::fs::create_dir_all(&shared).unwrap();
        let other = shared.join("someone-elses-file");
        std::fs::write(&other, b"keep").unwrap();
        let fifo = shared.join("calc");
        std::fs::write(&fifo, b"").unwrap();
        assert_eq!(super::endpoint_dir(&Address::Fifo(fifo.clone())), Some((shared.clone(), false)));
        super::remove_endpoint(&Address::Fifo(fifo.clone()));
        assert!(!fifo.exists(), "the connect FIFO is removed");
        assert!(other.exists(), "the rest of a directory the caller owns stays");
        std::fs::remove_dir_all(&shared).unwrap();

        // A directory fresh_address made goes whole.
        let addr = super::lookup("fifo").unwrap().fresh_address(&format!("rpc-registry-{}", std::process::id()));
        let addr = Address::parse(&addr.unwrap()).unwrap();
        let Address::Fifo(path) = &addr else { panic!("{addr:?}") };
        let dir = path.parent().unwrap().to_owned();
        assert!(dir.is_dir());
        assert_eq!(super::endpoint_dir(&addr), Some((dir.clone(), true)));
        super::remove_endpoint(&addr);
        assert!(!dir.exists());
    }

    use super::*;

    /// The rows of the first markdown table in `text` after `heading` whose first cell is an
    /// address in backquotes: (scheme, cells).
    fn table_rows<'t>(text: &'t str, heading: &str) -> Vec<(String, Vec<&'t str>)> {
        let start = text.find(heading).unwrap_or_else(|| panic!("no `{heading}`"));
        text[start..]
            .lines()
            .skip_while(|line| !line.trim_start_matches("//! ").starts_with('|'))
            .take_while(|line| line.trim_start_matches("//! ").starts_with('|'))
            .filter_map(|line| {
                let cells: Vec<&str> =
                    line.trim_start_matches("//! ").split(" | ").map(|c| c.trim_matches(['|', ' '])).collect();
                let address = cells[0].strip_prefix('`')?;
                let scheme = address.split(':').next()?;
                Some((scheme.to_owned(), cells))
            })
            .collect()
    }

    fn registry_names() -> Vec<String> {
        REGISTRY.iter().map(|s| s.name.to_owned()).collect()
    }

    #[test]
    fn names_are_unique_and_lower_case() {
        for (i, scheme) in REGISTRY.iter().enumerate() {
            assert_eq!(scheme.name, scheme.name.to_ascii_lowercase());
            assert!(scheme.form.starts_with(&format!("{}{}", scheme.name, scheme.separator)), "{}", scheme.form);
            assert!(REGISTRY[..i].iter().all(|other| other.name != scheme.name), "{} twice", scheme.name);
            assert!(scheme.descriptors_during_setup >= scheme.descriptors_per_connection, "{}", scheme.name);
            assert_eq!(lookup(scheme.name).map(|s| s.name), Some(scheme.name));
        }
    }

    #[test]
    fn schemes_is_the_available_part_of_the_registry() {
        assert_eq!(crate::SCHEMES, available().map(|s| s.name).collect::<Vec<_>>());
    }

    #[test]
    fn the_crate_docs_table_lists_the_registry() {
        let docs = include_str!("lib.rs");
        let rows = table_rows(docs, "| address | mechanism | who can connect | platforms |");
        assert_eq!(rows.iter().map(|(s, _)| s.clone()).collect::<Vec<_>>(), registry_names(), "crate docs table");
        for ((name, cells), scheme) in rows.iter().zip(REGISTRY) {
            assert_eq!(cells.last().copied(), Some(scheme.platforms.as_str()), "platforms of {name} in the crate docs");
        }
    }

    #[test]
    fn the_readme_table_lists_the_registry() {
        let readme = include_str!("../../README.md");
        let rows = table_rows(readme, "## Transports");
        assert_eq!(rows.iter().map(|(s, _)| s.clone()).collect::<Vec<_>>(), registry_names(), "README table");
    }

    #[test]
    fn the_facade_docs_name_every_scheme() {
        let facade = include_str!("../../src/lib.rs");
        let names = registry_names().join(", ");
        assert!(facade.contains(&format!("({names})")), "src/lib.rs should list ({names})");
    }

    #[test]
    fn temp_names() {
        assert_eq!(temp_name_owner(".rpc123-4.tmp"), Some(123));
        assert_eq!(temp_name_owner(".rpc123.tmp"), None);
        assert_eq!(temp_name_owner("x.sock"), None);
    }
}
