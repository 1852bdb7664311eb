//! Extracting a model archive (`visual.zip`, `textual.zip`: a graph with its external weight
//! files) into the model folder, safely and atomically.
//!
//! Safely: no entry may leave the folder (absolute paths, `..`, symlinks are refused), and each
//! entry must inflate to exactly its declared size, with a cap on the total. Atomically: the
//! archive is extracted into a temporary folder next to its destination and the files are renamed
//! into place, the graph last; the caller writes the completion marker only after that.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

/// Largest total an archive may inflate to (the largest published model is about 5 GB).
pub(crate) const MAX_EXTRACTED_BYTES: u64 = 64 << 30;

#[derive(Debug, thiserror::Error)]
pub enum UnzipError {
    #[error("cannot read archive `{path}`: {source}")]
    Archive {
        path: PathBuf,
        #[source]
        source: zip::result::ZipError,
    },
    #[error("archive `{path}`: entry `{entry}` would be written outside the model folder")]
    Escape { path: PathBuf, entry: String },
    #[error(
        "archive `{path}`: entry `{entry}` is a symbolic link, which model archives never need"
    )]
    Symlink { path: PathBuf, entry: String },
    #[error(
        "archive `{path}`: entry `{entry}` inflated to {actual} bytes, not the declared {declared}"
    )]
    SizeMismatch {
        path: PathBuf,
        entry: String,
        declared: u64,
        actual: u64,
    },
    #[error("archive `{path}` inflates to more than {limit} bytes")]
    TooLarge { path: PathBuf, limit: u64 },
    #[error("archive `{path}` does not contain `{graph}` at its top level")]
    MissingGraph { path: PathBuf, graph: String },
    #[error("extracting `{path}`: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Extracts `archive` into `folder`; `graph` (e.g. `visual.onnx`) must be among its top-level
/// files. Returns the extracted files, relative to `folder`, with `/` separators.
pub(crate) fn extract(
    archive: &Path,
    folder: &Path,
    graph: &str,
    limit: u64,
) -> Result<Vec<String>, UnzipError> {
    let io_err = |source| UnzipError::Io {
        path: archive.to_path_buf(),
        source,
    };
    let stem = archive
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let staging = folder.join(format!(".extract-{stem}-{}", std::process::id()));
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(io_err)?;
    }
    std::fs::create_dir_all(&staging).map_err(io_err)?;
    let result = extract_into(archive, &staging, graph, limit).and_then(|mut files| {
        // The graph goes last: it is what the folder check looks for first.
        files.sort_by_key(|f| f == graph);
        for f in &files {
            let to = folder.join(f);
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent).map_err(io_err)?;
            }
            std::fs::rename(staging.join(f), &to).map_err(io_err)?;
        }
        Ok(files)
    });
    let _ = std::fs::remove_dir_all(&staging);
    result
}

fn extract_into(
    archive: &Path,
    staging: &Path,
    graph: &str,
    limit: u64,
) -> Result<Vec<String>, UnzipError> {
    let zip_err = |source| UnzipError::Archive {
        path: archive.to_path_buf(),
        source,
    };
    let io_err = |source| UnzipError::Io {
        path: archive.to_path_buf(),
        source,
    };
    let file = File::open(archive).map_err(io_err)?;
    let mut zip = zip::ZipArchive::new(io::BufReader::new(file)).map_err(zip_err)?;
    let mut total = 0u64;
    let mut files = Vec::new();
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).map_err(zip_err)?;
        let raw = entry.name().map(|n| n.into_owned()).unwrap_or_default();
        if entry.is_symlink() {
            return Err(UnzipError::Symlink {
                path: archive.to_path_buf(),
                entry: raw,
            });
        }
        let relative = entry
            .enclosed_name()
            .filter(|p| is_plain_relative(p))
            .ok_or_else(|| UnzipError::Escape {
                path: archive.to_path_buf(),
                entry: raw.clone(),
            })?;
        if entry.is_dir() {
            continue;
        }
        let declared = entry.size();
        total = total.saturating_add(declared);
        if total > limit {
            return Err(UnzipError::TooLarge {
                path: archive.to_path_buf(),
                limit,
            });
        }
        let to = staging.join(&relative);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(io_err)?;
        }
        let mut out = File::create(&to).map_err(io_err)?;
        let actual = io::copy(&mut (&mut entry).take(declared + 1), &mut out).map_err(io_err)?;
        if actual != declared {
            return Err(UnzipError::SizeMismatch {
                path: archive.to_path_buf(),
                entry: raw,
                declared,
                actual,
            });
        }
        out.sync_all().map_err(io_err)?;
        let parts: Vec<String> = relative
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        files.push(parts.join("/"));
    }
    if !files.iter().any(|f| f == graph) {
        return Err(UnzipError::MissingGraph {
            path: archive.to_path_buf(),
            graph: graph.to_string(),
        });
    }
    Ok(files)
}

/// Only plain names: no root, no `..`, no `.`, no drive prefix.
fn is_plain_relative(p: &Path) -> bool {
    p.components().count() > 0 && p.components().all(|c| matches!(c, Component::Normal(_)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use zip::write::SimpleFileOptions;

    fn make_zip(path: &Path, entries: &[(&str, &[u8])]) {
        let mut w = zip::ZipWriter::new(File::create(path).unwrap());
        for (name, data) in entries {
            w.start_file(*name, SimpleFileOptions::default()).unwrap();
            w.write_all(data).unwrap();
        }
        w.finish().unwrap();
    }

    #[test]
    fn extracts_graph_and_weights_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let zip = dir.path().join("visual.zip");
        make_zip(
            &zip,
            &[("visual.onnx", b"graph"), ("weights/w0.bin", &[7u8; 5000])],
        );
        let mut files = extract(&zip, dir.path(), "visual.onnx", MAX_EXTRACTED_BYTES).unwrap();
        files.sort();
        assert_eq!(files, ["visual.onnx", "weights/w0.bin"]);
        assert_eq!(
            std::fs::read(dir.path().join("visual.onnx")).unwrap(),
            b"graph"
        );
        assert_eq!(
            std::fs::read(dir.path().join("weights/w0.bin")).unwrap(),
            vec![7u8; 5000]
        );
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(".extract"))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn refuses_escapes_missing_graphs_and_oversized_archives() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("model");
        std::fs::create_dir(&folder).unwrap();
        let zip = dir.path().join("visual.zip");
        make_zip(&zip, &[("visual.onnx", b"g"), ("../evil", b"x")]);
        let err = extract(&zip, &folder, "visual.onnx", MAX_EXTRACTED_BYTES).unwrap_err();
        assert!(matches!(err, UnzipError::Escape { .. }), "{err}");
        assert!(!dir.path().join("evil").exists());
        assert!(
            !folder.join("visual.onnx").exists(),
            "nothing lands on failure"
        );

        make_zip(&zip, &[("textual.onnx", b"g")]);
        let err = extract(&zip, &folder, "visual.onnx", MAX_EXTRACTED_BYTES).unwrap_err();
        assert!(err.to_string().contains("visual.onnx"), "{err}");

        make_zip(&zip, &[("visual.onnx", &[0u8; 100])]);
        let err = extract(&zip, &folder, "visual.onnx", 99).unwrap_err();
        assert!(matches!(err, UnzipError::TooLarge { .. }), "{err}");

        std::fs::write(&zip, b"not a zip").unwrap();
        let err = extract(&zip, &folder, "visual.onnx", MAX_EXTRACTED_BYTES).unwrap_err();
        assert!(matches!(err, UnzipError::Archive { .. }), "{err}");
    }

    #[test]
    fn refuses_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let zip = dir.path().join("visual.zip");
        let mut w = zip::ZipWriter::new(File::create(&zip).unwrap());
        w.add_symlink("visual.onnx", "/etc/passwd", SimpleFileOptions::default())
            .unwrap();
        w.finish().unwrap();
        let err = extract(&zip, dir.path(), "visual.onnx", MAX_EXTRACTED_BYTES).unwrap_err();
        assert!(matches!(err, UnzipError::Symlink { .. }), "{err}");
    }
}
