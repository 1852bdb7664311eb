//! clip-worker: CLIP embeddings and cross-modal ranking, numerically compatible with CLIP-as-service.
//!
//! Layers, from the inside out; each uses only the layers before it:
//!
//! - [`error`] (stable error codes) and [`defaults`] (every default setting): used by all.
//! - [`model`]: the model names (image size, tokenizer, files) and the model-folder contract.
//! - [`preprocess`]: documents, the CLIP tokenizer and Pillow-exact image decoding and resizing.
//! - [`engine`]: ONNX Runtime sessions, the two towers, one document to model input, rank maths.
//! - [`batch`]: dynamic minibatching across requests (preprocess pool, one thread per tower).
//! - [`protocol`]: the wire protocol v1 (MessagePack types, limits, subjects, headers).
//! - [`docio`]: documents in and results out as JSON lines or `.npy` (the command line's formats).
//! - [`transport`]: the NATS worker (request/reply service, JetStream jobs) around [`batch`].
//! - [`client`]: the NATS client of running workers (packing, uploads, retries).
//! - [`bench`]: load generation and measurement (through NATS, or in process).
//! - [`cli`]: the `clip-worker` commands, their flags and environment twins.
//!
//! [`fuzzing`] holds the fuzz-target bodies shared by `fuzz/` and the test suite.

pub mod batch;
pub mod bench;
pub mod cli;
pub mod client;
pub mod defaults;
pub mod docio;
pub mod engine;
pub mod error;
pub mod fuzzing;
pub mod model;
pub mod preprocess;
pub mod protocol;
pub mod telemetry;
pub mod transport;
