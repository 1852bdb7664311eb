//! The two ONNX towers of a CLIP model and how a batch is fed to them.

use super::runtime::{Runtime, RuntimeError, SessionConfig};
use super::tokenizer::TextTokenizer;
use ort::session::Session;
use ort::value::{Tensor, TensorElementType, ValueType};
use std::path::Path;
use std::sync::{Arc, Mutex};

#[derive(Debug, thiserror::Error)]
pub enum InferenceError {
    #[error("{0}")]
    Ort(String),
    #[error("the {tower} graph returned an unexpected output: {message}")]
    BadOutput {
        tower: &'static str,
        message: String,
    },
}

/// One loaded CLIP model: text and image towers with a fixed image size and output dimension.
pub struct ClipModel {
    textual: Mutex<Session>,
    visual: Mutex<Session>,
    pub image_size: u32,
    pub dim: usize,
    pub tokenizer: Arc<TextTokenizer>,
}

const TEXT_INPUTS: [&str; 2] = ["input_ids", "attention_mask"];
const IMAGE_INPUT: &str = "pixel_values";

impl ClipModel {
    pub fn load(
        runtime: &Runtime,
        textual: &Path,
        visual: &Path,
        image_size: u32,
        tokenizer: Arc<TextTokenizer>,
        config: &SessionConfig,
    ) -> Result<Self, RuntimeError> {
        // The original creates the visual session first; the order only matters for logs.
        let visual_session = runtime.session("visual", visual, config)?;
        let textual_session = runtime.session("textual", textual, config)?;
        check_inputs("textual", textual, &textual_session, &TEXT_INPUTS)?;
        check_inputs("visual", visual, &visual_session, &[IMAGE_INPUT])?;
        let model = ClipModel {
            textual: Mutex::new(textual_session),
            visual: Mutex::new(visual_session),
            image_size,
            dim: 0,
            tokenizer,
        };
        // The output dimension is read from the graph; a symbolic one is found with one tiny run.
        let declared = model.declared_dim();
        let dim = match declared {
            Some(d) => d,
            None => {
                let probe = model.tokenizer.encode("a").map_err(RuntimeError::Ort)?;
                let out = model
                    .run_text(&[probe.as_slice()])
                    .map_err(|e| RuntimeError::Ort(e.to_string()))?;
                out.first().map(Vec::len).unwrap_or(0)
            }
        };
        Ok(ClipModel { dim, ..model })
    }

    fn declared_dim(&self) -> Option<usize> {
        let session = self
            .textual
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match session.outputs().first()?.dtype() {
            ValueType::Tensor { shape, .. } => {
                shape.last().copied().filter(|d| *d > 0).map(|d| d as usize)
            }
            _ => None,
        }
    }

    /// Runs the text tower on token id sequences (each already truncated to the context length).
    pub fn run_text(&self, batch: &[&[u32]]) -> Result<Vec<Vec<f32>>, InferenceError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let longest = batch.iter().map(|ids| ids.len()).max().unwrap_or(0);
        let (seq, pad) = self.tokenizer.padding(longest);
        let mut ids = vec![pad as i32; batch.len() * seq];
        let mut mask = vec![0i32; batch.len() * seq];
        for (row, tokens) in batch.iter().enumerate() {
            for (col, id) in tokens.iter().take(seq).enumerate() {
                ids[row * seq + col] = *id as i32;
                mask[row * seq + col] = 1;
            }
        }
        let shape = vec![batch.len() as i64, seq as i64];
        let ids = Tensor::from_array((shape.clone(), ids)).map_err(ort_err)?;
        let mask = Tensor::from_array((shape, mask)).map_err(ort_err)?;
        let mut session = self
            .textual
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let outputs = session
            .run(ort::inputs![TEXT_INPUTS[0] => ids, TEXT_INPUTS[1] => mask])
            .map_err(ort_err)?;
        rows("textual", &outputs[0], batch.len())
    }

    /// Runs the image tower on normalised CHW pixel tensors of `image_size`².
    pub fn run_images(&self, batch: &[&[f32]]) -> Result<Vec<Vec<f32>>, InferenceError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let s = self.image_size as usize;
        let per = 3 * s * s;
        let mut pixels = Vec::with_capacity(batch.len() * per);
        for item in batch {
            if item.len() != per {
                return Err(InferenceError::BadOutput {
                    tower: "visual",
                    message: format!("pixel tensor of {} values, expected {per}", item.len()),
                });
            }
            pixels.extend_from_slice(item);
        }
        let shape = vec![batch.len() as i64, 3, s as i64, s as i64];
        let pixels = Tensor::from_array((shape, pixels)).map_err(ort_err)?;
        let mut session = self
            .visual
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let outputs = session
            .run(ort::inputs![IMAGE_INPUT => pixels])
            .map_err(ort_err)?;
        rows("visual", &outputs[0], batch.len())
    }
}

fn ort_err(e: ort::Error) -> InferenceError {
    InferenceError::Ort(e.to_string())
}

/// Splits a `[B, D]` float output into rows.
fn rows(
    tower: &'static str,
    value: &ort::value::DynValue,
    batch: usize,
) -> Result<Vec<Vec<f32>>, InferenceError> {
    let (shape, data) =
        value
            .try_extract_tensor::<f32>()
            .map_err(|e| InferenceError::BadOutput {
                tower,
                message: format!("expected a float32 tensor: {e}"),
            })?;
    let dims: Vec<i64> = shape.iter().copied().collect();
    if dims.len() != 2 || dims[0] as usize != batch || dims[1] <= 0 {
        return Err(InferenceError::BadOutput {
            tower,
            message: format!("shape {dims:?}, expected [{batch}, D]"),
        });
    }
    Ok(data.chunks(dims[1] as usize).map(<[f32]>::to_vec).collect())
}

/// The graph must take the contract's inputs (names and element types).
fn check_inputs(
    tower: &'static str,
    path: &Path,
    session: &Session,
    names: &[&str],
) -> Result<(), RuntimeError> {
    for name in names {
        let Some(input) = session.inputs().iter().find(|i| i.name() == *name) else {
            let have: Vec<&str> = session.inputs().iter().map(|i| i.name()).collect();
            return Err(RuntimeError::Session {
                tower,
                path: path.to_path_buf(),
                message: format!("graph has no input `{name}` (inputs: {have:?})"),
            });
        };
        let expected = if *name == IMAGE_INPUT {
            TensorElementType::Float32
        } else {
            TensorElementType::Int32
        };
        if let ValueType::Tensor { ty, .. } = input.dtype() {
            if *ty != expected {
                return Err(RuntimeError::Session {
                    tower,
                    path: path.to_path_buf(),
                    message: format!("input `{name}` is {ty:?}, expected {expected:?}"),
                });
            }
        }
    }
    Ok(())
}
