//! What to fetch for a model name: the built-in table (the original's bucket files and md5 sums),
//! optionally overridden or extended by a manifest file for private mirrors and fine-tuned models.

use super::spec::{self, ModelSpec, TokenizerKind, UnknownModel};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The original's public model bucket (`_S3_BUCKET_V2` + `onnx/`).
pub(crate) const DEFAULT_URL_BASE: &str =
    "https://clip-as-service.s3.us-east-2.amazonaws.com/models-436c69702d61732d53657276696365/onnx/";

/// One file a model needs, as published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RemoteFile {
    /// Path relative to the URL base (`ViT-B-32/textual.onnx`), or an absolute http(s) URL.
    pub path: String,
    /// Expected md5 (lower-case hex); `None` when none is published.
    pub md5: Option<String>,
    /// Where to fetch it when no mirror is configured, if not from the default bucket.
    pub default_url: Option<String>,
}

impl RemoteFile {
    /// The name the file takes in the cache folder: the last path segment, as the original does.
    pub(crate) fn file_name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or(&self.path)
    }

    /// Whether this is an archive to extract into the model folder.
    pub(crate) fn is_zip(&self) -> bool {
        self.file_name().to_ascii_lowercase().ends_with(".zip")
    }

    /// The URL to fetch, given the mirror (`None`: the original's bucket).
    pub(crate) fn url(&self, mirror: Option<&str>) -> String {
        if self.path.starts_with("http://") || self.path.starts_with("https://") {
            return self.path.clone();
        }
        match (mirror, &self.default_url) {
            (None, Some(url)) => url.clone(),
            (base, _) => format!(
                "{}/{}",
                base.unwrap_or(DEFAULT_URL_BASE).trim_end_matches('/'),
                self.path.trim_start_matches('/')
            ),
        }
    }
}

/// A model name resolved to its properties and files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ModelEntry {
    /// The name as users spell it.
    pub name: String,
    /// The built-in model it behaves like (image size, tokenizer, dimension).
    pub spec: &'static ModelSpec,
    /// Files to fetch, in order (textual first, as the original).
    pub files: Vec<RemoteFile>,
}

impl ModelEntry {
    /// Cache folder name: the original's `name` with `/` and `::` replaced by `-`.
    pub(crate) fn folder_name(&self) -> String {
        folder_name(&self.name)
    }
}

/// `ViT-B-32::openai` → `ViT-B-32-openai`, `ViT-B/32` → `ViT-B-32`.
pub(crate) fn folder_name(name: &str) -> String {
    name.replace("::", "-").replace('/', "-")
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    Unknown(#[from] UnknownModel),
    #[error("cannot read the model manifest `{path}`: {source}")]
    ReadManifest {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("model manifest `{path}` is not valid: {source}")]
    ParseManifest {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("model manifest `{path}`, model `{name}`: {reason}")]
    BadEntry {
        path: PathBuf,
        name: String,
        reason: String,
    },
}

/// The model manifest file (`--model-manifest`), JSON.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    models: Vec<ManifestModel>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestModel {
    name: String,
    /// Built-in model whose image size, tokenizer and dimension this one shares; defaults to
    /// `name` itself (an override of a built-in model's files).
    like: Option<String>,
    files: Vec<ManifestFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestFile {
    path: String,
    md5: Option<String>,
}

/// Every model name this process knows: the built-in table, then the manifest's additions.
#[derive(Debug, Clone)]
pub(crate) struct Registry {
    entries: Vec<ModelEntry>,
}

impl Registry {
    /// The built-in table only.
    pub(crate) fn builtin() -> Self {
        Registry {
            entries: spec::all().iter().map(builtin_entry).collect(),
        }
    }

    /// The built-in table with `manifest`'s entries replacing same-named ones and adding new ones.
    pub(crate) fn load(manifest: Option<&Path>) -> Result<Self, RegistryError> {
        let mut registry = Self::builtin();
        if let Some(path) = manifest {
            let text =
                std::fs::read_to_string(path).map_err(|source| RegistryError::ReadManifest {
                    path: path.to_path_buf(),
                    source,
                })?;
            let parsed: Manifest =
                serde_json::from_str(&text).map_err(|source| RegistryError::ParseManifest {
                    path: path.to_path_buf(),
                    source,
                })?;
            for m in parsed.models {
                let entry = manifest_entry(path, m)?;
                match registry.entries.iter_mut().find(|e| e.name == entry.name) {
                    Some(existing) => *existing = entry,
                    None => registry.entries.push(entry),
                }
            }
        }
        Ok(registry)
    }

    pub(crate) fn entries(&self) -> &[ModelEntry] {
        &self.entries
    }

    /// The entry for `name`, or an error naming the closest known names.
    pub(crate) fn resolve(&self, name: &str) -> Result<&ModelEntry, UnknownModel> {
        self.entries
            .iter()
            .find(|e| e.name == name)
            .ok_or_else(|| UnknownModel::among(name, self.entries.iter().map(|e| e.name.as_str())))
    }
}

fn builtin_entry(spec: &'static ModelSpec) -> ModelEntry {
    let mut files = vec![
        RemoteFile {
            path: spec.textual_file.to_string(),
            md5: Some(spec.textual_md5.to_string()),
            default_url: None,
        },
        RemoteFile {
            path: spec.visual_file.to_string(),
            md5: Some(spec.visual_md5.to_string()),
            default_url: None,
        },
    ];
    if spec.tokenizer == TokenizerKind::HuggingFace {
        // The bucket has no tokenizer; the original loads it from the Hugging Face repository
        // named like the model. No checksum is published for it.
        let folder = spec.textual_file.split('/').next().unwrap_or(spec.name);
        files.push(RemoteFile {
            path: format!("{folder}/{}", super::folder::TOKENIZER_FILE),
            md5: None,
            default_url: Some(format!(
                "https://huggingface.co/{}/resolve/main/{}",
                spec.name,
                super::folder::TOKENIZER_FILE
            )),
        });
    }
    ModelEntry {
        name: spec.name.to_string(),
        spec,
        files,
    }
}

fn manifest_entry(path: &Path, m: ManifestModel) -> Result<ModelEntry, RegistryError> {
    let bad = |reason: String| RegistryError::BadEntry {
        path: path.to_path_buf(),
        name: m.name.clone(),
        reason,
    };
    let like = m.like.as_deref().unwrap_or(&m.name);
    let spec = spec::lookup(like).map_err(|e| {
        bad(format!(
            "`like` must name a built-in model (needed for a new name): {e}"
        ))
    })?;
    if m.files.is_empty() {
        return Err(bad("`files` is empty".into()));
    }
    let mut files = Vec::with_capacity(m.files.len());
    for f in &m.files {
        let md5 = match &f.md5 {
            Some(h) if h.len() == 32 && h.bytes().all(|b| b.is_ascii_hexdigit()) => {
                Some(h.to_ascii_lowercase())
            }
            Some(h) => return Err(bad(format!("`{h}` is not an md5 (32 hex digits)"))),
            None => None,
        };
        let file = RemoteFile {
            path: f.path.clone(),
            md5,
            default_url: None,
        };
        let name = file.file_name();
        if name.is_empty() || name == "." || name == ".." || name.starts_with('.') {
            return Err(bad(format!("`{}` does not end in a file name", f.path)));
        }
        if files.iter().any(|o: &RemoteFile| o.file_name() == name) {
            return Err(bad(format!("two files are named `{name}`")));
        }
        files.push(file);
    }
    Ok(ModelEntry {
        name: m.name,
        spec,
        files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_entries_follow_the_bucket_layout() {
        let r = Registry::builtin();
        assert_eq!(r.entries().len(), 38);
        let e = r.resolve("ViT-B/32").unwrap();
        assert_eq!(e.folder_name(), "ViT-B-32");
        assert_eq!(folder_name("ViT-B-32::openai"), "ViT-B-32-openai");
        assert_eq!(folder_name("ViT-L/14@336px"), "ViT-L-14@336px");
        assert_eq!(
            e.files[0].url(None),
            format!("{DEFAULT_URL_BASE}ViT-B-32/textual.onnx")
        );
        assert_eq!(
            e.files[1].url(Some("http://mirror/clip/")),
            "http://mirror/clip/ViT-B-32/visual.onnx"
        );
        let h = r.resolve("ViT-H-14::laion2b-s32b-b79k").unwrap();
        assert!(h.files[1].is_zip());
        assert_eq!(h.files[1].file_name(), "visual.zip");
        let m = r.resolve("M-CLIP/XLM-Roberta-Large-Vit-B-32").unwrap();
        assert_eq!(m.folder_name(), "M-CLIP-XLM-Roberta-Large-Vit-B-32");
        assert_eq!(m.files.len(), 3);
        assert_eq!(
            m.files[2].url(None),
            "https://huggingface.co/M-CLIP/XLM-Roberta-Large-Vit-B-32/resolve/main/tokenizer.json"
        );
        assert_eq!(
            m.files[2].url(Some("http://mirror")),
            "http://mirror/M-CLIP-XLM-Roberta-Large-Vit-B-32/tokenizer.json"
        );
    }

    #[test]
    fn manifest_overrides_and_adds_names() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("models.json");
        std::fs::write(
            &path,
            r#"{"models": [
                {"name": "ViT-B-32::openai", "files": [
                    {"path": "mine/textual.onnx", "md5": "00112233445566778899AABBCCDDEEFF"},
                    {"path": "mine/visual.onnx"}]},
                {"name": "acme/clip-ft", "like": "RN50::openai", "files": [
                    {"path": "https://models.example/ft/textual.zip", "md5": "00112233445566778899aabbccddeeff"},
                    {"path": "ft/visual.onnx"}]}
            ]}"#,
        )
        .unwrap();
        let r = Registry::load(Some(&path)).unwrap();
        assert_eq!(r.entries().len(), 39);
        let e = r.resolve("ViT-B-32::openai").unwrap();
        assert_eq!(
            e.files[0].md5.as_deref(),
            Some("00112233445566778899aabbccddeeff")
        );
        assert_eq!(e.files[1].md5, None);
        let ft = r.resolve("acme/clip-ft").unwrap();
        assert_eq!(ft.spec.name, "RN50::openai");
        assert_eq!(ft.folder_name(), "acme-clip-ft");
        assert_eq!(
            ft.files[0].url(Some("http://mirror")),
            "https://models.example/ft/textual.zip"
        );
        let err = r.resolve("acme/clip-fr").unwrap_err();
        assert_eq!(err.closest[0], "acme/clip-ft");
    }

    #[test]
    fn bad_manifests_are_explained() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("models.json");
        for (text, needle) in [
            (
                r#"{"models": [{"name": "new", "files": [{"path": "a/textual.onnx"}]}]}"#,
                "like",
            ),
            (r#"{"models": [{"name": "RN50", "files": []}]}"#, "empty"),
            (
                r#"{"models": [{"name": "RN50", "files": [{"path": "a/x.onnx", "md5": "zz"}]}]}"#,
                "md5",
            ),
            (
                r#"{"models": [{"name": "RN50", "files": [{"path": "a/"}]}]}"#,
                "file name",
            ),
            (
                r#"{"models": [{"name": "RN50", "files": [{"path": "a/x"}, {"path": "b/x"}]}]}"#,
                "two files",
            ),
            (r#"{"modelz": []}"#, "not valid"),
        ] {
            std::fs::write(&path, text).unwrap();
            let err = Registry::load(Some(&path)).unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
        let err = Registry::load(Some(&dir.path().join("none.json"))).unwrap_err();
        assert!(matches!(err, RegistryError::ReadManifest { .. }));
    }
}
