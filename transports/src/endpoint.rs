//! Publishing an endpoint in the file system (a `unix://` socket file, a `fifo://` connect
//! FIFO): created under a temporary name, given its permissions, made live, and only then
//! hard-linked to the final path, so no client ever finds it half set up; a stale file at the
//! path (a crashed server's) is reclaimed, a live one is never displaced (`link(2)` fails where
//! `rename(2)` would replace); a listener removes its file on drop only while it is still the
//! file it created.

use std::fs;
use std::future::Future;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// How often publishing goes back to linking after removing a stale file.
const RECLAIM_ATTEMPTS: u32 = 3;

/// A file's identity: device and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    pub(crate) fn of(metadata: &fs::Metadata) -> Self {
        FileId { dev: metadata.dev(), ino: metadata.ino() }
    }

    /// The identity of whatever is at `path` now, without following symlinks.
    pub(crate) fn at(path: &Path) -> io::Result<Self> {
        fs::symlink_metadata(path).map(|m| Self::of(&m))
    }
}

/// The directory part of an endpoint's path.
pub(crate) fn directory_of(path: &Path) -> io::Result<&Path> {
    path.parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path has no directory part"))
}

/// Links the endpoint set up at `temp` to `path`. While a file is in the way,
/// `reclaim_if_stale` decides: `Ok` if it was stale and is gone (then linking is tried again),
/// an error (returned) if it must be left alone.
pub(crate) async fn link_into_place<F, Fut>(temp: &Path, path: &Path, mut reclaim_if_stale: F) -> io::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = io::Result<()>>,
{
    for _ in 0..RECLAIM_ATTEMPTS {
        match fs::hard_link(temp, path) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => reclaim_if_stale().await?,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        "the path keeps being recreated by another process while we reclaim it",
    ))
}

/// Removes the stale endpoint at `path` that a probe found dead, but only if it is still the
/// file that was probed (`id`): a server that reclaimed the path meanwhile keeps its new file.
pub(crate) fn remove_stale(path: &Path, id: FileId, what: &str) -> io::Result<()> {
    if FileId::at(path).ok() != Some(id) {
        return Ok(());
    }
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(io::Error::new(e.kind(), format!("cannot remove the stale {what}: {}", crate::context::describe(&e))))
        }
        _ => Ok(()),
    }
}

/// Removes `path` if it still is the file `id` (never a file put there since).
pub(crate) fn remove_if_ours(path: &Path, id: FileId) {
    if FileId::at(path).ok() == Some(id) {
        // Nothing useful to do about a failure here (this runs on drop and on error paths).
        let _ = fs::remove_file(path);
    }
}

/// A unique temporary name `.<kind><pid>-<n>.tmp` next to the final path (hard links cannot
/// cross file systems), removed on drop once something was created under it. A name can be
/// taken only by a file a crashed process left behind (the names hold our pid and a counter).
pub(crate) struct TempName {
    pub(crate) path: PathBuf,
    created: bool,
}

impl TempName {
    /// A fresh name in `dir`; `kind` is short, because Unix socket paths are limited to ~100
    /// bytes.
    pub(crate) fn new(dir: &Path, kind: &str) -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        TempName { path: dir.join(format!(".{kind}{}-{n}.tmp", std::process::id())), created: false }
    }

    /// Something now exists under the name: remove it on drop.
    pub(crate) fn created(mut self) -> Self {
        self.created = true;
        self
    }
}

impl Drop for TempName {
    fn drop(&mut self) {
        if self.created {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// The pid in a [`TempName`] of `kind`, if `file_name` is one.
pub(crate) fn temp_name_owner(file_name: &str, kind: &str) -> Option<u32> {
    let rest = file_name.strip_prefix('.')?.strip_prefix(kind)?.strip_suffix(".tmp")?;
    let (pid, n) = rest.split_once('-')?;
    n.parse::<u64>().ok()?;
    pid.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_name_their_creator() {
        let name = TempName::new(Path::new("/tmp"), "rpc");
        let file_name = name.path.file_name().unwrap().to_str().unwrap();
        assert_eq!(temp_name_owner(file_name, "rpc"), Some(std::process::id()));
        assert_eq!(temp_name_owner(file_name, "rpcfifo"), None);
        assert_eq!(temp_name_owner(".rpc12.tmp", "rpc"), None);
    }
}
