//! clip-worker: CLIP embeddings and cross-modal ranking, numerically compatible with CLIP-as-service.
//!
//! Layers, from the inside out: [`preprocess`] (tokenizer, Pillow-exact images), [`engine`]
//! (ONNX Runtime sessions, minibatches, rank maths), [`model`] (names and model folders).

pub mod batch;
pub mod cli;
pub mod client;
pub mod engine;
pub mod error;
pub mod model;
pub mod preprocess;
pub mod protocol;
pub mod telemetry;
pub mod transport;
