//! The address parser: maps a string such as `tcp://127.0.0.1:4000` to the mechanism it names.
//!
//! Parsing is separate from connecting so that a bad address fails fast, with a message listing
//! what this build supports, before any I/O. [`Address`]'s `Display` is its canonical spelling
//! and parses back to the same value.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use rpc_core::error::RpcError;

use crate::registry::{self, Scheme, REGISTRY};

/// A parsed transport address.
///
/// One variant per entry of the [registry]; `#[non_exhaustive]` because new
/// transports add variants.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Address {
    /// `tcp://host:port`: holds `host:port` as written, where `host` is a name, an IPv4 address
    /// or a bracketed IPv6 address (`[::1]:80`).
    Tcp(String),
    /// `tls://host:port?query`: TLS over TCP; `host_port` as for [`Address::Tcp`], `params` the
    /// query's files (see [`TlsOptions`](crate::TlsOptions) for their meaning).
    Tls {
        /// `host:port` as written.
        host_port: String,
        /// The query parameters.
        params: crate::TlsParams,
    },
    /// `local://name`: a local socket (abstract Unix socket on Linux, `/tmp/name` on other Unix
    /// systems, named pipe on Windows).
    Local(String),
    /// `unix:///abs/path.sock`: a Unix domain socket file. The path is absolute.
    Unix(PathBuf),
    /// `mem://name`: in-process channels.
    Mem(String),
    /// `fifo:///dir/name`: named FIFOs; the path (absolute) is the server's connect FIFO.
    Fifo(PathBuf),
    /// `shm://name`: shared-memory rings, set up through the local socket `name` (Linux).
    Shm(String),
    /// `spawn:/path/to/bin?arg1&arg2`: a child process started by the connecting side, spoken to
    /// over its stdin and stdout. `program` is an absolute path or a bare name looked up in
    /// `PATH`; the arguments are the `&`-separated query parts, percent-decoded (`%26` is `&`).
    Spawn {
        /// The program to start.
        program: PathBuf,
        /// Its arguments.
        args: Vec<String>,
    },
    /// `mq://name`: POSIX message queues (Linux); the server's connect queue is `/name`.
    Mq(String),
}

/// The schemes this build supports, in the order error messages list them: the available part
/// of the [registry](crate::registry::REGISTRY).
pub const SCHEMES: &[&str] = &AVAILABLE;

const AVAILABLE_LEN: usize = {
    let mut n = 0;
    let mut i = 0;
    while i < REGISTRY.len() {
        if REGISTRY[i].driver.is_some() {
            n += 1;
        }
        i += 1;
    }
    n
};

const AVAILABLE: [&str; AVAILABLE_LEN] = {
    let mut names = [""; AVAILABLE_LEN];
    let (mut i, mut n) = (0, 0);
    while i < REGISTRY.len() {
        if REGISTRY[i].driver.is_some() {
            names[n] = REGISTRY[i].name;
            n += 1;
        }
        i += 1;
    }
    names
};

/// Longest `local://` name. Abstract socket names may have 107 bytes and Windows pipe names
/// 256, but other Unix systems put the socket at `/tmp/<name>` and `sun_path` has 104 bytes
/// there; one limit everywhere keeps an address portable.
const MAX_LOCAL_NAME: usize = 96;

/// The size of `sockaddr_un::sun_path`, which includes the terminating NUL of a path.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) const SUN_PATH_LEN: usize = 108;
/// The size of `sockaddr_un::sun_path`, which includes the terminating NUL of a path.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) const SUN_PATH_LEN: usize = 104;

impl Address {
    /// Parses an address; see the [crate docs](crate) for the schemes.
    ///
    /// ```
    /// use rpc_transports::Address;
    /// assert_eq!(Address::parse("tcp://[::1]:80")?, Address::Tcp("[::1]:80".into()));
    /// assert!(Address::parse("tcp://localhost").is_err()); // no port
    /// # Ok::<(), rpc_core::error::RpcError>(())
    /// ```
    pub fn parse(s: &str) -> Result<Self, RpcError> {
        let Some((scheme, rest)) = s.split_once(':').filter(|(scheme, _)| is_scheme(scheme)) else {
            return Err(invalid(format!("missing scheme in `{s}`; {}", supported())));
        };
        let scheme = scheme.to_ascii_lowercase();
        let Some(entry) = registry::lookup(&scheme) else {
            return Err(invalid(format!("unknown scheme `{scheme}` in `{s}`; {}", supported())));
        };
        if !entry.is_available() {
            return Err(unsupported_here(entry));
        }
        let body = match entry.separator {
            "://" => rest.strip_prefix("//"),
            _ => Some(rest),
        };
        let Some(body) = body else {
            return Err(invalid(format!("`{s}` is malformed: expected {}", entry.form)));
        };
        (entry.parse)(s, body)
    }

    /// This address's entry in the [registry].
    pub fn registered(&self) -> &'static Scheme {
        registry::lookup(self.scheme()).expect("every Address variant is registered")
    }

    /// The scheme, e.g. `"tcp"`.
    pub fn scheme(&self) -> &'static str {
        match self {
            Address::Tcp(_) => "tcp",
            Address::Tls { .. } => "tls",
            Address::Local(_) => "local",
            Address::Unix(_) => "unix",
            Address::Mem(_) => "mem",
            Address::Fifo(_) => "fifo",
            Address::Shm(_) => "shm",
            Address::Spawn { .. } => "spawn",
            Address::Mq(_) => "mq",
        }
    }
}

impl FromStr for Address {
    type Err = RpcError;

    fn from_str(s: &str) -> Result<Self, RpcError> {
        Address::parse(s)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Tcp(host_port) => write!(f, "tcp://{host_port}"),
            Address::Tls { host_port, params } => {
                write!(f, "tls://{host_port}")?;
                for (i, (key, value)) in params.pairs().into_iter().enumerate() {
                    write!(f, "{}{key}={}", if i == 0 { "?" } else { "&" }, percent_encode(&value, true))?;
                }
                Ok(())
            }
            Address::Local(name) => write!(f, "local://{name}"),
            // The path is absolute, so this prints the three slashes of `unix:///path`.
            Address::Unix(path) => write!(f, "unix://{}", path.display()),
            Address::Mem(name) => write!(f, "mem://{name}"),
            Address::Fifo(path) => write!(f, "fifo://{}", path.display()),
            Address::Shm(name) => write!(f, "shm://{name}"),
            Address::Mq(name) => write!(f, "mq://{name}"),
            Address::Spawn { program, args } => {
                write!(f, "spawn:{}", percent_encode(&program.to_string_lossy(), false))?;
                for (i, arg) in args.iter().enumerate() {
                    f.write_str(if i == 0 { "?" } else { "&" })?;
                    f.write_str(&percent_encode(arg, true))?;
                }
                Ok(())
            }
        }
    }
}

/// The error for a scheme this build knows but the platform lacks.
pub(crate) fn unsupported_here(scheme: &Scheme) -> RpcError {
    invalid(format!(
        "`{}{}` addresses are not supported on this platform{}; {}",
        scheme.name,
        scheme.separator,
        scheme.why_not_here,
        supported()
    ))
}

fn invalid(message: String) -> RpcError {
    RpcError::Address(message)
}

/// "this build supports tcp://host:port, local://name, unix:///path, mem://name"
fn supported() -> String {
    let forms: Vec<&str> = registry::available().map(|s| s.form).collect();
    format!("this build supports {}", forms.join(", "))
}

/// The form of `scheme` for messages.
fn form(scheme: &str) -> &'static str {
    registry::lookup(scheme).map_or("scheme://...", |s| s.form)
}

/// RFC 3986: a letter, then letters, digits, `+`, `-`, `.`. Rejects `127.0.0.1` in
/// `127.0.0.1:80` so that a missing scheme is reported as such.
fn is_scheme(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

pub(crate) fn parse_tcp(s: &str, body: &str) -> Result<Address, RpcError> {
    if body.contains(['/', '?', '#']) {
        let expected = "expected tcp://host:port, e.g. tcp://127.0.0.1:4000 or tcp://[::1]:4000";
        return Err(invalid(format!("`{s}`: a tcp:// address has no path or query; {expected}")));
    }
    check_host_port(s, body, "tcp")?;
    Ok(Address::Tcp(body.to_owned()))
}

/// `tls://host:port` with an optional query of `key=value` parameters naming files.
pub(crate) fn parse_tls(s: &str, body: &str) -> Result<Address, RpcError> {
    let (host_port, query) = body.split_once('?').unwrap_or((body, ""));
    if host_port.contains(['/', '#']) {
        return Err(invalid(format!("`{s}`: a tls:// address has no path; expected tls://host:port[?ca=FILE&...]")));
    }
    check_host_port(s, host_port, "tls")?;
    let mut params = crate::TlsParams::default();
    for part in query.split('&').filter(|p| !p.is_empty()) {
        let Some((key, value)) = part.split_once('=') else {
            return Err(invalid(format!("`{s}`: `{part}` is not key=value")));
        };
        let value = percent_decode(value).ok_or_else(|| invalid(format!("`{s}`: bad %-escape in `{part}`")))?;
        if value.is_empty() {
            return Err(invalid(format!("`{s}`: `{key}` has no value")));
        }
        params.set(key, value).map_err(|e| invalid(format!("`{s}`: {e}")))?;
    }
    Ok(Address::Tls { host_port: host_port.to_owned(), params })
}

/// Checks the `host:port` of a network address of `scheme`.
fn check_host_port(s: &str, body: &str, scheme: &str) -> Result<(), RpcError> {
    let expected = format!("expected {scheme}://host:port, e.g. {scheme}://127.0.0.1:4000 or {scheme}://[::1]:4000");
    let (host, port) = if let Some(after_bracket) = body.strip_prefix('[') {
        let Some((ip, after)) = after_bracket.split_once(']') else {
            return Err(invalid(format!("`{s}`: unclosed `[` in the host; {expected}")));
        };
        if ip.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(invalid(format!("`{s}`: `[{ip}]` is not an IPv6 address; {expected}")));
        }
        let Some(port) = after.strip_prefix(':') else {
            return Err(invalid(format!("`{s}`: missing port; {expected}")));
        };
        (ip, port)
    } else {
        let Some((host, port)) = body.rsplit_once(':') else {
            return Err(invalid(format!("`{s}`: missing port; {expected}")));
        };
        if host.contains(':') {
            return Err(invalid(format!("`{s}`: an IPv6 host needs brackets, as in {scheme}://[::1]:4000")));
        }
        (host, port)
    };
    if host.is_empty() {
        return Err(invalid(format!("`{s}`: missing host; {expected}")));
    }
    if host.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid(format!("`{s}`: the host contains whitespace; {expected}")));
    }
    if port.is_empty() {
        return Err(invalid(format!("`{s}`: missing port; {expected}")));
    }
    if !port.bytes().all(|b| b.is_ascii_digit()) || port.parse::<u16>().is_err() {
        return Err(invalid(format!("`{s}`: `{port}` is not a port number (0-65535)")));
    }
    Ok(())
}

pub(crate) fn parse_name(s: &str, body: &str, scheme: &str) -> Result<String, RpcError> {
    if body.is_empty() {
        return Err(invalid(format!("`{s}`: empty name; expected {}", form(scheme))));
    }
    if body.chars().any(char::is_control) {
        return Err(invalid(format!("`{s}`: the name contains control characters")));
    }
    Ok(body.to_owned())
}

/// A `local://` or `shm://` name: both name a local socket.
pub(crate) fn parse_local_name(s: &str, body: &str, scheme: &str) -> Result<String, RpcError> {
    let name = parse_name(s, body, scheme)?;
    if name.len() > MAX_LOCAL_NAME {
        Err(invalid(format!("`{s}`: a {scheme}:// name may have at most {MAX_LOCAL_NAME} bytes")))
    } else if name == "." || name == ".." || name.contains(['/', '\\']) {
        Err(invalid(format!("`{s}`: a {scheme}:// name cannot be `.`, `..` or contain `/` or `\\`")))
    } else {
        Ok(name)
    }
}

/// `mq://name`: the name of the connect queue (`/name`) without its slash. Private queues are
/// named `/name.<token>.c2s` and the listener's lock is the abstract socket `rpc-mq/name`, so
/// the name is as short as a `local://` name, and has no `/` (queue names have one, leading).
pub(crate) fn parse_mq(s: &str, body: &str) -> Result<Address, RpcError> {
    let name = parse_name(s, body, "mq")?;
    if name.len() > MAX_LOCAL_NAME {
        return Err(invalid(format!("`{s}`: an mq:// name may have at most {MAX_LOCAL_NAME} bytes")));
    }
    if name == "." || name == ".." || name.contains(['/', '\0']) {
        return Err(invalid(format!("`{s}`: an mq:// name cannot be `.`, `..` or contain `/`")));
    }
    if name.contains(['?', '#']) {
        return Err(invalid(format!("`{s}`: an mq:// address has no query or fragment")));
    }
    Ok(Address::Mq(name))
}

pub(crate) fn parse_unix(s: &str, body: &str) -> Result<Address, RpcError> {
    if !body.starts_with('/') {
        return Err(invalid(format!(
            "`{s}`: the socket path must be absolute, as in unix:///tmp/x.sock (three slashes)"
        )));
    }
    if body.ends_with('/') {
        return Err(invalid(format!("`{s}`: the path names a directory, not a socket file")));
    }
    if body.contains('\0') {
        return Err(invalid(format!("`{s}`: the path contains a NUL byte")));
    }
    if body.len() >= SUN_PATH_LEN {
        return Err(invalid(format!(
            "`{s}`: the socket path has {} bytes; Unix socket paths must be shorter than {SUN_PATH_LEN} bytes",
            body.len()
        )));
    }
    Ok(Address::Unix(PathBuf::from(body)))
}

pub(crate) fn parse_fifo(s: &str, body: &str) -> Result<Address, RpcError> {
    if !body.starts_with('/') {
        return Err(invalid(format!("`{s}`: the FIFO path must be absolute, as in fifo:///tmp/calc (three slashes)")));
    }
    if body.ends_with('/') {
        return Err(invalid(format!("`{s}`: the path names a directory, not a FIFO")));
    }
    if body.contains('\0') {
        return Err(invalid(format!("`{s}`: the path contains a NUL byte")));
    }
    if body.contains(['?', '#']) {
        return Err(invalid(format!("`{s}`: a fifo:// address has no query or fragment")));
    }
    Ok(Address::Fifo(PathBuf::from(body)))
}

/// `spawn:/path?a&b`, also accepting `spawn:///path?...` (the `//` of an empty authority).
pub(crate) fn parse_spawn(s: &str, rest: &str) -> Result<Address, RpcError> {
    let expected = "expected spawn:/path/to/program?arg1&arg2";
    let rest = match rest.strip_prefix("//") {
        Some(after) if after.starts_with('/') => after,
        Some(_) => return Err(invalid(format!("`{s}` is malformed: {expected} (one slash, or three)"))),
        None => rest,
    };
    let (program, query) = match rest.split_once('?') {
        Some((program, query)) => (program, Some(query)),
        None => (rest, None),
    };
    let program = percent_decode(program).ok_or_else(|| invalid(format!("`{s}`: bad %-escape in the program")))?;
    if program.is_empty() {
        return Err(invalid(format!("`{s}`: no program; {expected}")));
    }
    if program.contains('\0') || program.ends_with('/') {
        return Err(invalid(format!("`{s}`: `{program}` is not a program path; {expected}")));
    }
    let args = match query {
        None => Vec::new(),
        Some(query) => query
            .split('&')
            .map(|arg| percent_decode(arg).filter(|a| !a.contains('\0')))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| invalid(format!("`{s}`: bad %-escape (or NUL) in an argument")))?,
    };
    Ok(Address::Spawn { program: PathBuf::from(program), args })
}

/// Decodes `%XX` escapes (so arguments can contain `&`, `?` or `%`); `None` for a bad escape
/// or a result that is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The inverse of [`percent_decode`] for the characters that have a meaning in a spawn address.
fn percent_encode(s: &str, in_query: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '%' | '?' => out.push_str(&format!("%{:02X}", c as u32)),
            '&' if in_query => out.push_str("%26"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(s: &str) -> String {
        match Address::parse(s) {
            Err(RpcError::Address(message)) => message,
            other => panic!("`{s}` should be refused, got {other:?}"),
        }
    }

    fn round_trips(s: &str) -> Address {
        let address = Address::parse(s).unwrap_or_else(|e| panic!("`{s}`: {e}"));
        assert_eq!(address.to_string(), s, "canonical form");
        assert_eq!(Address::parse(&address.to_string()).unwrap(), address, "round trip");
        address
    }

    #[test]
    fn tcp_addresses() {
        assert_eq!(round_trips("tcp://127.0.0.1:4000"), Address::Tcp("127.0.0.1:4000".into()));
        assert_eq!(round_trips("tcp://localhost:0"), Address::Tcp("localhost:0".into()));
        assert_eq!(round_trips("tcp://[::1]:80"), Address::Tcp("[::1]:80".into()));
        assert!(matches!(round_trips("tls://[::1]:80"), Address::Tls { host_port, .. } if host_port == "[::1]:80"));
        let Address::Tls { params, .. } = round_trips("tls://h:1?ca=/a%26b.pem&cert=/c&key=/k&name=calc.example")
        else {
            unreachable!()
        };
        assert_eq!(params.ca.as_deref(), Some(std::path::Path::new("/a&b.pem")));
        assert_eq!(params.name.as_deref(), Some("calc.example"));
        assert!(message("tls://h:1?color=red").contains("unknown parameter `color`"));
        assert!(message("tls://h:1?ca=/a&ca=/b").contains("`ca` given twice"));
        assert!(message("tls://h:1?ca").contains("not key=value"));
        assert!(message("tls://h:1?name=no%20way").contains("neither a DNS name"));
        assert!(message("tls://h").contains("missing port; expected tls://host:port"));
        assert_eq!(round_trips("tcp://example.com:65535").scheme(), "tcp");
    }

    #[test]
    fn tcp_errors() {
        assert!(message("tcp://127.0.0.1").contains("missing port"));
        assert!(message("tcp://127.0.0.1:").contains("missing port"));
        assert!(message("tcp://[::1]").contains("missing port"));
        assert!(message("tcp://:80").contains("missing host"));
        assert!(message("tcp://::1:80").contains("brackets"));
        assert!(message("tcp://[::1:80").contains("unclosed"));
        assert!(message("tcp://[nope]:80").contains("not an IPv6 address"));
        assert!(message("tcp://h:65536").contains("not a port number"));
        assert!(message("tcp://h:+80").contains("not a port number"));
        assert!(message("tcp://h:80/path").contains("no path"));
        assert!(message("tcp://bad host:80").contains("whitespace"));
        assert!(message("tcp:127.0.0.1:80").contains("expected tcp://host:port"));
    }

    #[test]
    fn local_and_mem_names() {
        assert_eq!(round_trips("local://calc"), Address::Local("calc".into()));
        assert_eq!(round_trips("mem://calc.v2"), Address::Mem("calc.v2".into()));
        assert!(message("local://").contains("empty name"));
        assert!(message("mem://").contains("empty name"));
        assert!(message("local://a/b").contains("cannot"));
        assert!(message("local://..").contains("cannot"));
        assert!(message("mem://a\nb").contains("control"));
        assert!(message(&format!("local://{}", "x".repeat(MAX_LOCAL_NAME + 1))).contains("at most"));
        round_trips(&format!("local://{}", "x".repeat(MAX_LOCAL_NAME)));
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[test]
    fn shm_names_follow_the_local_rules() {
        assert_eq!(round_trips("shm://calc"), Address::Shm("calc".into()));
        assert_eq!(Address::parse("SHM://calc").unwrap().scheme(), "shm");
        assert!(message("shm://").contains("empty name"));
        assert!(message("shm://a/b").contains("a shm:// name cannot"));
        assert!(message(&format!("shm://{}", "x".repeat(MAX_LOCAL_NAME + 1))).contains("at most"));
    }

    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    #[test]
    fn shm_is_refused_off_linux() {
        assert!(message("shm://calc").contains("`shm://` addresses are not supported on this platform"));
    }

    #[cfg(unix)]
    #[test]
    fn unix_paths() {
        assert_eq!(round_trips("unix:///tmp/x.sock"), Address::Unix("/tmp/x.sock".into()));
        assert!(message("unix://relative").contains("absolute"));
        assert!(message("unix://relative").contains("unix:///tmp/x.sock"));
        assert!(message("unix://").contains("absolute"));
        assert!(message("unix:///tmp/").contains("directory"));
        assert!(message(&format!("unix:///{}", "x".repeat(SUN_PATH_LEN))).contains("shorter than"));
    }

    #[cfg(not(unix))]
    #[test]
    fn unix_is_refused_off_unix() {
        assert!(message("unix:///tmp/x.sock").contains("not supported on this platform"));
    }

    #[test]
    fn scheme_is_case_insensitive_and_canonicalised() {
        assert_eq!(Address::parse("TCP://h:1").unwrap().to_string(), "tcp://h:1");
        assert_eq!(Address::parse("Mem://x").unwrap(), Address::Mem("x".into()));
    }

    #[test]
    fn unknown_scheme_lists_what_is_supported() {
        let m = message("foo://x");
        assert!(m.starts_with("unknown scheme `foo` in `foo://x`; this build supports tcp://host:port"), "{m}");
        for scheme in SCHEMES {
            assert!(m.contains(form(scheme)), "{m} lacks {scheme}");
        }
        #[cfg(target_os = "linux")]
        assert_eq!(
            m,
            "unknown scheme `foo` in `foo://x`; this build supports tcp://host:port, tls://host:port, local://name, shm://name, unix:///path, fifo:///path, spawn:/path/to/program?arg1&arg2, mq://name, mem://name"
        );
    }

    #[test]
    fn missing_scheme() {
        assert!(message("127.0.0.1:80").starts_with("missing scheme in `127.0.0.1:80`"));
        assert!(message("/tmp/x.sock").starts_with("missing scheme"));
        assert!(message("").starts_with("missing scheme"));
        // `localhost:80` looks like scheme `localhost`.
        assert!(message("localhost:80").contains("unknown scheme `localhost`"));
    }

    #[cfg(unix)]
    #[test]
    fn fifo_paths() {
        assert_eq!(round_trips("fifo:///tmp/calc"), Address::Fifo("/tmp/calc".into()));
        assert_eq!(Address::parse("FIFO:///tmp/calc").unwrap().scheme(), "fifo");
        assert!(message("fifo://relative").contains("absolute"));
        assert!(message("fifo:/tmp/x").contains("fifo:///path"));
        assert!(message("fifo:///tmp/").contains("directory"));
        assert!(message("fifo:///tmp/x?y").contains("no query"));
    }

    #[cfg(unix)]
    #[test]
    fn spawn_addresses() {
        assert_eq!(
            round_trips("spawn:/usr/bin/worker?--stdio&-v"),
            Address::Spawn { program: "/usr/bin/worker".into(), args: vec!["--stdio".into(), "-v".into()] }
        );
        assert_eq!(round_trips("spawn:worker"), Address::Spawn { program: "worker".into(), args: vec![] });
        assert_eq!(
            Address::parse("spawn:///bin/w?a%26b&100%25&").unwrap(),
            Address::Spawn { program: "/bin/w".into(), args: vec!["a&b".into(), "100%".into(), String::new()] }
        );
        assert_eq!(round_trips("spawn:/bin/w?a%26b&100%25"), Address::parse("spawn:/bin/w?a%26b&100%25").unwrap());
        assert!(message("spawn:").contains("no program"));
        assert!(message("spawn:?x").contains("no program"));
        assert!(message("spawn://host/x").contains("malformed"));
        assert!(message("spawn:/bin/w?%zz").contains("%-escape"));
        assert!(message("spawn:/bin/").contains("not a program path"));
    }

    #[cfg(not(unix))]
    #[test]
    fn pipes_are_refused_off_unix() {
        assert!(message("fifo:///tmp/x").contains("not supported on this platform"));
        assert!(message("spawn:/bin/x").contains("`spawn:` addresses are not supported on this platform"));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn mq_names() {
        assert_eq!(round_trips("mq://calc"), Address::Mq("calc".into()));
        assert_eq!(Address::parse("MQ://calc.v2").unwrap().scheme(), "mq");
        assert!(message("mq://").contains("empty name"));
        assert!(message("mq://a/b").contains("cannot"));
        assert!(message("mq://..").contains("cannot"));
        assert!(message("mq:///calc").contains("cannot"));
        assert!(message("mq://a?b").contains("no query"));
        assert!(message(&format!("mq://{}", "x".repeat(MAX_LOCAL_NAME + 1))).contains("at most"));
        round_trips(&format!("mq://{}", "x".repeat(MAX_LOCAL_NAME)));
    }

    #[cfg(not(target_os = "linux"))]
    #[test]
    fn mq_is_refused_off_linux() {
        let m = message("mq://calc");
        assert!(m.contains("not supported on this platform (POSIX message queues are Linux only)"), "{m}");
    }

    #[test]
    fn errors_display_as_invalid_address() {
        let err = Address::parse("foo://x").unwrap_err();
        assert!(err.to_string().starts_with("invalid address: unknown scheme `foo`"), "{err}");
    }
}
