//! Turning documents into model inputs: text → CLIP token ids, image bytes → pixel tensors.

pub(crate) mod fetch;
pub mod image;
pub mod input;
pub mod text;
