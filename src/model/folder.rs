//! The model-folder contract, compatible with CLIP-as-service's custom `model_path`:
//! a directory holding `textual.onnx` and `visual.onnx` (and `tokenizer.json` for M-CLIP).

use super::spec::{ModelSpec, TokenizerKind};
use std::path::{Path, PathBuf};

pub(crate) const TEXTUAL_FILE: &str = "textual.onnx";
pub(crate) const VISUAL_FILE: &str = "visual.onnx";
pub(crate) const TOKENIZER_FILE: &str = "tokenizer.json";

#[derive(Debug, thiserror::Error)]
pub enum ModelFolderError {
    #[error("model folder `{0}` does not exist or is not a directory; it should be a folder containing both `textual.onnx` and `visual.onnx`")]
    NotADirectory(PathBuf),
    #[error("model folder `{folder}` does not contain `{file}` (it needs both `textual.onnx` and `visual.onnx`{extra})")]
    MissingFile {
        folder: PathBuf,
        file: &'static str,
        extra: &'static str,
    },
}

/// The files of one model, checked to exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ModelFiles {
    pub textual: PathBuf,
    pub visual: PathBuf,
    /// Present for models whose tokenizer is not the bundled CLIP BPE.
    pub tokenizer: Option<PathBuf>,
}

impl ModelFiles {
    /// Checks `folder` against the contract for `spec`.
    pub(crate) fn from_folder(folder: &Path, spec: &ModelSpec) -> Result<Self, ModelFolderError> {
        if !folder.is_dir() {
            return Err(ModelFolderError::NotADirectory(folder.to_path_buf()));
        }
        let need = |file: &'static str, extra: &'static str| {
            let path = folder.join(file);
            if path.is_file() {
                Ok(path)
            } else {
                Err(ModelFolderError::MissingFile {
                    folder: folder.to_path_buf(),
                    file,
                    extra,
                })
            }
        };
        let textual = need(TEXTUAL_FILE, "")?;
        let visual = need(VISUAL_FILE, "")?;
        let tokenizer = match spec.tokenizer {
            TokenizerKind::ClipBpe => None,
            TokenizerKind::HuggingFace => Some(need(
                TOKENIZER_FILE,
                ", and M-CLIP models also `tokenizer.json` from their Hugging Face repository",
            )?),
        };
        Ok(ModelFiles {
            textual,
            visual,
            tokenizer,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::spec::lookup;

    #[test]
    fn missing_folder_and_files_are_reported() {
        let spec = lookup("ViT-B-32::openai").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let err = ModelFiles::from_folder(&dir.path().join("nope"), spec).unwrap_err();
        assert!(matches!(err, ModelFolderError::NotADirectory(_)));
        std::fs::write(dir.path().join(TEXTUAL_FILE), b"x").unwrap();
        let err = ModelFiles::from_folder(dir.path(), spec).unwrap_err();
        assert!(err.to_string().contains("visual.onnx"), "{err}");
        std::fs::write(dir.path().join(VISUAL_FILE), b"x").unwrap();
        let files = ModelFiles::from_folder(dir.path(), spec).unwrap();
        assert!(files.tokenizer.is_none());
        let mclip = lookup("M-CLIP/LABSE-Vit-L-14").unwrap();
        let err = ModelFiles::from_folder(dir.path(), mclip).unwrap_err();
        assert!(err.to_string().contains("tokenizer.json"), "{err}");
    }
}
