//! The committed seed corpora of the fuzz targets (`fuzz/corpus/<target>/`), as `cargo test`
//! replays and checks them: written once here for every crate that has fuzz targets.

use std::path::{Path, PathBuf};

/// A harness: takes one input, panics on a broken invariant.
pub type Harness = fn(&[u8]);

/// A seed: its target, its name (the file is `seed-<name>`) and its bytes.
pub type Seed = (&'static str, &'static str, Vec<u8>);

/// The corpus directory of `target`, for a crate whose manifest is in `manifest_dir` (a member
/// of this workspace, beside `fuzz/`).
pub fn dir(manifest_dir: &str, target: &str) -> PathBuf {
    Path::new(manifest_dir).join("../fuzz/corpus").join(target)
}

/// Runs every file of every target's corpus (the seeds and whatever a fuzzing run added)
/// through its harness; each target must have at least `min_files`.
pub fn replay(manifest_dir: &str, targets: &[(&str, Harness)], min_files: usize) {
    for &(target, harness) in targets {
        let dir = dir(manifest_dir, target);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.unwrap().path())
            .collect();
        files.sort();
        assert!(files.len() >= min_files, "the {target} seed corpus has {} files", files.len());
        for file in files {
            // A failure names the file: `cargo fuzz run <target> <file>` reproduces it.
            eprintln!("{target}: {}", file.display());
            harness(&std::fs::read(&file).unwrap());
        }
    }
}

/// Writes the seeds into the corpus (after a change of the formats they encode).
pub fn write(manifest_dir: &str, seeds: &[Seed]) {
    for (target, name, bytes) in seeds {
        let dir = dir(manifest_dir, target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
    }
}

/// Runs each seed through its harness and checks that the committed file holds the same bytes;
/// `writer` names the test that rewrites them.
pub fn check(manifest_dir: &str, targets: &[(&str, Harness)], seeds: &[Seed], writer: &str) {
    for (target, name, bytes) in seeds {
        let harness = targets.iter().find(|(t, _)| t == target).unwrap_or_else(|| panic!("no target {target}")).1;
        harness(bytes);
        let path = dir(manifest_dir, target).join(format!("seed-{name}"));
        let committed = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e} ({writer})", path.display()));
        assert_eq!(&committed, bytes, "{} is stale: run {writer}", path.display());
    }
}
