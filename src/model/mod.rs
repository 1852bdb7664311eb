//! Models: the name table (image size, tokenizer), the model-folder contract, and the cache that
//! fetches models by name (verified, resumable downloads from the original's bucket or a mirror).

pub mod cache;
pub(crate) mod download;
pub(crate) mod folder;
pub(crate) mod progress;
pub(crate) mod registry;
pub(crate) mod spec;
pub(crate) mod store;
pub(crate) mod unzip;

pub(crate) use folder::{ModelFiles, ModelFolderError};
pub(crate) use registry::{ModelEntry, Registry, RegistryError};
pub(crate) use spec::{lookup, ModelSpec, TokenizerKind, UnknownModel, DEFAULT_MODEL};
pub(crate) use store::{ModelStore, StoreError};
