//! Models: the name table (image size, tokenizer), the model-folder contract, and the cache that
//! fetches models by name (verified, resumable downloads from the original's bucket or a mirror).

pub mod cache;
pub mod download;
pub mod folder;
pub mod progress;
pub mod registry;
pub mod spec;
pub mod store;
pub mod unzip;

pub use folder::{ModelFiles, ModelFolderError};
pub use registry::{ModelEntry, Registry, RegistryError};
pub use spec::{lookup, ModelSpec, TokenizerKind, UnknownModel, DEFAULT_MODEL};
pub use store::{ModelStore, StoreError};
