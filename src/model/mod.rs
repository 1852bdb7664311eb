//! Models: the name table (image size, tokenizer) and the model-folder contract.

pub mod folder;
pub mod spec;

pub use folder::{ModelFiles, ModelFolderError};
pub use spec::{lookup, ModelSpec, TokenizerKind, UnknownModel, DEFAULT_MODEL};
