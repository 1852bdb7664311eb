//! Local paths (and `file://` URIs): anywhere for the CLI, under one folder (or nowhere) for `serve`.

use super::{refused, too_large};
use crate::error::{DocError, ErrorCode};
use std::path::{Component, Path, PathBuf};

/// Which local files a document may name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LocalFiles {
    /// None: a remote caller must not read the worker's disk.
    Refused,
    /// Only files under this folder. Relative paths are taken relative to it.
    Under {
        /// The folder as configured (absolute paths are accepted under this spelling too).
        given: PathBuf,
        /// Its canonical form (no symlink, no `..`), which every file read must lie under.
        canonical: PathBuf,
    },
    /// Any file the process can read (the CLI, where the caller is the machine's user).
    Anywhere,
}

/// A `--allow-local-root` folder that is missing or unreadable.
#[derive(Debug, thiserror::Error)]
#[error("local root `{path}` cannot be used")]
pub struct LocalRootError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

impl LocalFiles {
    /// Files under `root`, which must be an existing folder.
    pub(crate) fn under(root: &Path) -> Result<LocalFiles, LocalRootError> {
        let error = |source| LocalRootError {
            path: root.to_path_buf(),
            source,
        };
        let canonical = root.canonicalize().map_err(error)?;
        if !canonical.is_dir() {
            return Err(error(std::io::Error::new(
                std::io::ErrorKind::NotADirectory,
                "not a directory",
            )));
        }
        Ok(LocalFiles::Under {
            given: std::path::absolute(root).map_err(error)?,
            canonical,
        })
    }

    /// Reads `uri` (a path or a `file://` URI) if this policy allows it, up to `max_bytes`.
    pub(super) fn read(&self, uri: &str, max_bytes: u64) -> Result<Vec<u8>, DocError> {
        let path = Path::new(uri.strip_prefix("file://").unwrap_or(uri));
        let path = match self {
            LocalFiles::Refused => {
                return Err(refused(format!(
                    "`{uri}` is a local path, and this worker reads no local files"
                )))
            }
            LocalFiles::Anywhere => path.to_path_buf(),
            LocalFiles::Under { given, canonical } => {
                // `<given>/x` is `<canonical>/x`: check the one spelling that has no symlink.
                let path = path.strip_prefix(given).unwrap_or(path);
                confine(canonical, path, uri)?
            }
        };
        let meta = std::fs::metadata(&path).map_err(|_| {
            DocError::new(
                ErrorCode::NotFound,
                format!("`{uri}` is not a URL or a valid local path"),
            )
        })?;
        if !meta.is_file() {
            return Err(DocError::new(
                ErrorCode::NotFound,
                format!("`{uri}` is not a regular file"),
            ));
        }
        if meta.len() > max_bytes {
            return Err(too_large(meta.len(), max_bytes));
        }
        std::fs::read(&path)
            .map_err(|e| DocError::new(ErrorCode::NotFound, format!("cannot read `{uri}`: {e}")))
    }
}

/// The canonical form of `path` (relative paths taken from `root`), if it lies under `root`.
/// `..` is refused outright; symlinks are resolved by canonicalising, so one pointing out of
/// the root is refused as well. The file opened is the canonical path that was checked.
fn confine(root: &Path, path: &Path, uri: &str) -> Result<PathBuf, DocError> {
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(refused(format!(
            "`{uri}` contains `..`; local paths must stay under the allowed root"
        )));
    }
    let joined = root.join(path);
    // Refused before touching the disk: whether a file outside exists is not the caller's to learn.
    if !joined.starts_with(root) {
        return Err(outside(uri));
    }
    let canonical = joined.canonicalize().map_err(|_| {
        DocError::new(
            ErrorCode::NotFound,
            format!("`{uri}` does not exist under the allowed local root"),
        )
    })?;
    if !canonical.starts_with(root) {
        return Err(outside(uri));
    }
    Ok(canonical)
}

fn outside(uri: &str) -> DocError {
    refused(format!("`{uri}` is outside the allowed local root"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_under_the_root_only() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret.bin"), b"secret").unwrap();
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("sub")).unwrap();
        std::fs::write(root.path().join("sub/ok.bin"), b"ok").unwrap();
        let policy = LocalFiles::under(root.path()).unwrap();
        let inside = root.path().join("sub/ok.bin");

        assert_eq!(policy.read(inside.to_str().unwrap(), 100).unwrap(), b"ok");
        assert_eq!(policy.read("sub/ok.bin", 100).unwrap(), b"ok");
        let file_uri = format!("file://{}", inside.display());
        assert_eq!(policy.read(&file_uri, 100).unwrap(), b"ok");
        assert_eq!(
            policy.read("sub/ok.bin", 1).unwrap_err().code,
            ErrorCode::TooLarge
        );
        assert_eq!(
            policy.read("sub/missing.bin", 100).unwrap_err().code,
            ErrorCode::NotFound
        );

        let secret = outside.path().join("secret.bin");
        let escapes = [
            secret.to_str().unwrap().to_string(),
            format!("file://{}", secret.display()),
            format!("{}/../{}", root.path().display(), "x"),
            "sub/../../etc/passwd".to_string(),
        ];
        for uri in &escapes {
            let err = policy.read(uri, 100).unwrap_err();
            assert_eq!(err.code, ErrorCode::UriRefused, "{uri}: {err}");
        }
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(&secret, root.path().join("link.bin")).unwrap();
            std::os::unix::fs::symlink(outside.path(), root.path().join("dir")).unwrap();
            for uri in ["link.bin", "dir/secret.bin"] {
                let err = policy.read(uri, 100).unwrap_err();
                assert_eq!(err.code, ErrorCode::UriRefused, "{uri}: {err}");
                assert!(err.message.contains("outside"), "{err}");
            }
        }
    }

    #[test]
    fn refused_and_anywhere() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x.bin");
        std::fs::write(&f, [7u8; 10]).unwrap();
        let uri = f.to_str().unwrap();
        assert_eq!(LocalFiles::Anywhere.read(uri, 100).unwrap(), vec![7u8; 10]);
        assert_eq!(
            LocalFiles::Refused.read(uri, 100).unwrap_err().code,
            ErrorCode::UriRefused
        );
        assert!(LocalFiles::under(&dir.path().join("missing")).is_err());
        assert!(LocalFiles::under(&f).is_err());
    }
}
