//! Texts at their real length: a CLIP text graph exported with a fixed sequence length L (77)
//! is rewritten, at load time, to take `[batch, n]` inputs for any n ≤ L.
//!
//! CLIP's text tower is causal and pools at the end-of-text token, so the positions after it
//! cannot change the embedding; running only the first n positions gives the same numbers for a
//! fraction of the work. L is baked into the exported graph in three ways (the positional
//! table, one causal mask per block, shape values of the K/V reshapes); [`pattern`] finds them
//! and refuses anything else, [`rewrite`] edits the protobuf at the wire level so no field of
//! the model is lost.

mod onnx;
mod pattern;
mod rewrite;
mod wire;

pub(crate) use pattern::Refused;

/// A graph rewritten to a symbolic sequence axis.
#[derive(Debug, Clone)]
pub(crate) struct DynamicGraph {
    /// The rewritten model, to load from memory.
    pub bytes: Vec<u8>,
    /// The sequence length the original graph was fixed to.
    pub length: usize,
    /// Causal masks sliced (one per transformer block).
    pub masks: usize,
    /// Shape values replaced by the input's length.
    pub shape_values: usize,
}

/// Rewrites `model` (ONNX protobuf bytes) if, and only if, it is a recognised fixed-length
/// causal CLIP text graph.
pub(crate) fn make_dynamic(model: &[u8]) -> Result<DynamicGraph, Refused> {
    let parsed = onnx::Model::parse(model)?;
    let plan = pattern::analyse(&parsed)?;
    let bytes = rewrite::rewrite(&parsed, &plan)?;
    Ok(DynamicGraph {
        bytes,
        length: plan.length as usize,
        masks: plan.masks.len(),
        shape_values: plan.shape_values.len(),
    })
}

#[cfg(test)]
mod tests;
