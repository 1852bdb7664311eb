//! Documents in and results out, in the formats of the command line: JSON lines in
//! ([`input`]), JSON lines or a `.npy` matrix out ([`lines`], [`output`]). Shared by the
//! in-process commands and the `submit` client; it knows nothing of NATS.

pub(crate) mod input;
pub(crate) mod lines;
pub(crate) mod output;

pub use input::{read_docs, read_docs_from, InputDoc, JsonlError};
