//! Making a named model present in the cache: check, lock, download, verify, extract, mark.
//!
//! Several processes sharing one cache (a Kubernetes volume) download a model once: the first
//! takes the folder's lock and fills it; the others wait on the lock, then find the completion
//! marker and use the folder as is.

use super::cache::{self, CacheState, FolderLock, ModelCache};
use super::download::{DownloadError, DownloadOptions, Downloader};
use super::registry::{ModelEntry, Registry, RegistryError, RemoteFile};
use super::unzip::{self, UnzipError};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Download(#[from] DownloadError),
    #[error(transparent)]
    Unzip(#[from] UnzipError),
    #[error("model `{name}` is not complete in the cache (`{}` is missing or does not match its md5) and downloads are off (--offline); run `clip-worker models download {name}` where this cache can reach the model bucket or a mirror, or copy the folder `{}` from a machine that has it", .file.display(), .folder.display())]
    Offline {
        name: String,
        folder: PathBuf,
        file: PathBuf,
    },
    #[error("model cache `{}`: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Where models come from and where they go.
pub(crate) struct ModelStore {
    pub registry: Registry,
    pub cache: ModelCache,
    /// Base URL of a mirror of the bucket; `None`: the original's public bucket.
    pub mirror: Option<String>,
    downloader: Downloader,
}

/// One file's verification result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FileCheck {
    Ok,
    /// No md5 is published for this file; it is present.
    Unchecked,
    Missing,
    Mismatch {
        expected: String,
        actual: String,
    },
}

impl ModelStore {
    pub(crate) fn new(
        registry: Registry,
        cache: ModelCache,
        mirror: Option<String>,
        download: DownloadOptions,
    ) -> Self {
        ModelStore {
            registry,
            cache,
            mirror,
            downloader: Downloader::new(download),
        }
    }

    /// The model folder for `entry`, downloading what is missing unless `offline`.
    pub(crate) fn ensure(&self, entry: &ModelEntry, offline: bool) -> Result<PathBuf, StoreError> {
        let folder = self.cache.folder(entry);
        if self.cache.state(entry) == CacheState::Complete {
            return Ok(folder);
        }
        if offline && !folder.is_dir() {
            return Err(StoreError::Offline {
                name: entry.name.clone(),
                file: folder.join(entry.files[0].file_name()),
                folder,
            });
        }
        let _lock = FolderLock::acquire(&folder, || {
            tracing::info!(
                "another process is preparing {} in {}; waiting for it",
                entry.name,
                folder.display()
            )
        })
        .map_err(|source| io_error(&folder, source))?;
        // The lock holder may have finished it while we waited.
        if self.cache.state(entry) == CacheState::Complete {
            return Ok(folder);
        }
        self.fill(entry, &folder, !offline)?;
        Ok(folder)
    }

    /// Verifies, fetches (when allowed) and extracts every file, then writes the marker.
    fn fill(&self, entry: &ModelEntry, folder: &Path, download: bool) -> Result<(), StoreError> {
        cache::remove_marker(folder).map_err(|e| io_error(folder, e))?;
        for file in &entry.files {
            let target = folder.join(file.file_name());
            match check_file(file, &target).map_err(|e| io_error(&target, e))? {
                FileCheck::Ok | FileCheck::Unchecked => continue,
                FileCheck::Missing => {}
                FileCheck::Mismatch { expected, actual } => {
                    tracing::warn!("{} has md5 {actual}, expected {expected}", target.display())
                }
            }
            if !download {
                return Err(StoreError::Offline {
                    name: entry.name.clone(),
                    folder: folder.to_path_buf(),
                    file: target,
                });
            }
            let url = file.url(self.mirror.as_deref());
            let label = format!("{} {}", entry.name, file.file_name());
            self.downloader
                .fetch(&url, &target, file.md5.as_deref(), &label)?;
        }
        let mut extracted = Vec::new();
        for file in entry.files.iter().filter(|f| f.is_zip()) {
            let name = file.file_name();
            let graph = format!("{}.onnx", &name[..name.len() - ".zip".len()]);
            extracted.extend(unzip::extract(
                &folder.join(name),
                folder,
                &graph,
                unzip::MAX_EXTRACTED_BYTES,
            )?);
        }
        cache::write_marker(folder, &cache::expected_marker(entry, extracted))
            .map_err(|e| io_error(folder, e))
    }

    /// Checks each cached file of `entry` against its md5. When all pass, the folder is completed
    /// (archives extracted, marker written); when one fails, its marker is removed so the next
    /// start fetches the file again.
    pub(crate) fn verify(
        &self,
        entry: &ModelEntry,
    ) -> Result<Vec<(String, FileCheck)>, StoreError> {
        let folder = self.cache.folder(entry);
        let mut report = Vec::new();
        for file in &entry.files {
            let target = folder.join(file.file_name());
            let check = check_file(file, &target).map_err(|e| io_error(&target, e))?;
            report.push((file.file_name().to_string(), check));
        }
        let good = report
            .iter()
            .all(|(_, c)| matches!(c, FileCheck::Ok | FileCheck::Unchecked));
        if good {
            if self.cache.state(entry) != CacheState::Complete {
                let _lock = FolderLock::acquire(&folder, || {})
                    .map_err(|source| io_error(&folder, source))?;
                self.fill(entry, &folder, false)?;
            }
        } else if folder.is_dir() {
            cache::remove_marker(&folder).map_err(|e| io_error(&folder, e))?;
        }
        Ok(report)
    }
}

fn check_file(file: &RemoteFile, target: &Path) -> std::io::Result<FileCheck> {
    if !target.is_file() {
        return Ok(FileCheck::Missing);
    }
    let Some(expected) = &file.md5 else {
        return Ok(FileCheck::Unchecked);
    };
    let actual = cache::md5_file(target)?;
    Ok(if actual.eq_ignore_ascii_case(expected) {
        FileCheck::Ok
    } else {
        FileCheck::Mismatch {
            expected: expected.clone(),
            actual,
        }
    })
}

fn io_error(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}
