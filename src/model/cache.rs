//! The model cache on disk: `<root>/<name with "/" and "::" as "-">/`, as the original lays it out,
//! plus a completion marker and a lock file that only this program writes.
//!
//! A folder counts as complete only when its marker lists exactly the files (and md5 sums) the
//! registry expects: the marker is written last, after every file was verified and every archive
//! extracted, so a crash at any point leaves a folder that is finished on the next start.

use super::registry::ModelEntry;
use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Written last into a model folder once all of its files are verified.
pub(crate) const MARKER_FILE: &str = ".clip-worker-complete.json";
/// Held (advisory lock) by the process that downloads into a model folder.
pub(crate) const LOCK_FILE: &str = ".clip-worker.lock";

/// `$XDG_CACHE_HOME/clip`, else `~/.cache/clip` (the original's location).
pub(crate) fn default_root() -> PathBuf {
    if let Some(xdg) = std::env::var_os("XDG_CACHE_HOME").map(PathBuf::from) {
        if xdg.is_absolute() {
            return xdg.join("clip");
        }
    }
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".cache/clip")
}

/// What the marker records: each fetched file with its md5, and the files archives produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Marker {
    pub name: String,
    pub files: Vec<MarkedFile>,
    pub extracted: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MarkedFile {
    pub file: String,
    pub md5: Option<String>,
}

/// How much of a model is on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CacheState {
    /// The marker matches the registry and every file it names is present.
    Complete,
    /// The folder exists but is not (or no longer) known to be complete.
    Incomplete,
    Missing,
}

impl CacheState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            CacheState::Complete => "yes",
            CacheState::Incomplete => "incomplete",
            CacheState::Missing => "no",
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct ModelCache {
    pub root: PathBuf,
}

impl ModelCache {
    pub(crate) fn new(root: PathBuf) -> Self {
        ModelCache { root }
    }

    pub(crate) fn folder(&self, entry: &ModelEntry) -> PathBuf {
        self.root.join(entry.folder_name())
    }

    pub(crate) fn state(&self, entry: &ModelEntry) -> CacheState {
        let folder = self.folder(entry);
        if !folder.is_dir() {
            return CacheState::Missing;
        }
        match read_marker(&folder) {
            Some(m) if marker_is_current(&m, entry, &folder) => CacheState::Complete,
            _ => CacheState::Incomplete,
        }
    }
}

/// The marker `entry` would have once complete (`extracted`: files its archives produced).
pub(crate) fn expected_marker(entry: &ModelEntry, extracted: Vec<String>) -> Marker {
    Marker {
        name: entry.name.clone(),
        files: entry
            .files
            .iter()
            .map(|f| MarkedFile {
                file: f.file_name().to_string(),
                md5: f.md5.clone(),
            })
            .collect(),
        extracted,
    }
}

fn marker_is_current(m: &Marker, entry: &ModelEntry, folder: &Path) -> bool {
    *m == expected_marker(entry, m.extracted.clone())
        && m.files
            .iter()
            .map(|f| &f.file)
            .chain(&m.extracted)
            .all(|f| folder.join(f).is_file())
}

pub(crate) fn read_marker(folder: &Path) -> Option<Marker> {
    let text = std::fs::read_to_string(folder.join(MARKER_FILE)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Writes the marker through a temporary file and a rename, so it is whole or absent.
pub(crate) fn write_marker(folder: &Path, marker: &Marker) -> std::io::Result<()> {
    let tmp = folder.join(format!("{MARKER_FILE}.{}.tmp", std::process::id()));
    let text = serde_json::to_vec_pretty(marker).map_err(std::io::Error::other)?;
    {
        let mut f = File::create(&tmp)?;
        f.write_all(&text)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, folder.join(MARKER_FILE))
}

pub(crate) fn remove_marker(folder: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(folder.join(MARKER_FILE)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// An exclusive advisory lock on a model folder, released when dropped (or when the process
/// dies, so a crashed holder never blocks the others).
#[derive(Debug)]
pub(crate) struct FolderLock {
    _file: File,
}

impl FolderLock {
    /// Takes the lock, calling `on_wait` once if another process holds it, then blocking.
    pub(crate) fn acquire(folder: &Path, on_wait: impl FnOnce()) -> std::io::Result<Self> {
        std::fs::create_dir_all(folder)?;
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(folder.join(LOCK_FILE))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                on_wait();
                file.lock()?;
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        }
        Ok(FolderLock { _file: file })
    }
}

/// md5 of a whole file, lower-case hex.
pub fn md5_file(path: &Path) -> std::io::Result<String> {
    let mut hasher = Md5::new();
    hash_reader(&mut File::open(path)?, &mut hasher)?;
    Ok(hex(&hasher.finalize()))
}

/// Feeds everything `reader` yields to `hasher`; returns the byte count.
pub(crate) fn hash_reader(reader: &mut impl Read, hasher: &mut Md5) -> std::io::Result<u64> {
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            return Ok(total);
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::registry::Registry;

    #[test]
    fn md5_matches_known_vectors() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, b"The quick brown fox jumps over the lazy dog").unwrap();
        assert_eq!(md5_file(&f).unwrap(), "9e107d9d372bb6826bd81d3542a419d6");
        std::fs::write(&f, b"").unwrap();
        assert_eq!(md5_file(&f).unwrap(), "d41d8cd98f00b204e9800998ecf8427e");
    }

    #[test]
    fn a_folder_is_complete_only_with_a_current_marker_and_its_files() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ModelCache::new(dir.path().to_path_buf());
        let registry = Registry::builtin();
        let entry = registry.resolve("ViT-B-32::openai").unwrap();
        assert_eq!(cache.state(entry), CacheState::Missing);
        let folder = cache.folder(entry);
        assert!(folder.ends_with("ViT-B-32-openai"));
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join("textual.onnx"), b"t").unwrap();
        std::fs::write(folder.join("visual.onnx"), b"v").unwrap();
        assert_eq!(cache.state(entry), CacheState::Incomplete);
        write_marker(&folder, &expected_marker(entry, vec![])).unwrap();
        assert_eq!(cache.state(entry), CacheState::Complete);
        // Another model's marker, or a marker naming a missing file, does not count.
        let other = registry.resolve("ViT-B/32").unwrap();
        write_marker(&folder, &expected_marker(other, vec![])).unwrap();
        assert_eq!(cache.state(entry), CacheState::Incomplete);
        write_marker(&folder, &expected_marker(entry, vec!["w.bin".into()])).unwrap();
        assert_eq!(cache.state(entry), CacheState::Incomplete);
        remove_marker(&folder).unwrap();
        remove_marker(&folder).unwrap();
        assert_eq!(cache.state(entry), CacheState::Incomplete);
    }

    #[test]
    fn the_lock_is_exclusive_between_handles() {
        let dir = tempfile::tempdir().unwrap();
        let held = FolderLock::acquire(dir.path(), || {}).unwrap();
        let file = File::options()
            .write(true)
            .open(dir.path().join(LOCK_FILE))
            .unwrap();
        assert!(matches!(
            file.try_lock(),
            Err(std::fs::TryLockError::WouldBlock)
        ));
        drop(held);
        assert!(file.try_lock().is_ok());
    }
}
