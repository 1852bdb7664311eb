//! The two ONNX towers of a CLIP model and how a batch is fed to them.

use super::runtime::{Runtime, RuntimeError, SessionConfig};
use super::tokenizer::TextTokenizer;
use ndarray::{Array2, Array4, Ix2};
use ort::session::Session;
use ort::value::{Tensor, TensorElementType, ValueType};
use std::path::Path;
use std::sync::{Arc, Mutex};

#[derive(Debug, thiserror::Error)]
pub enum InferenceError {
    #[error("ONNX Runtime failed on the {tower} graph")]
    Ort {
        tower: &'static str,
        #[source]
        source: ort::Error,
    },
    #[error("the {tower} graph got an input it cannot take: {message}")]
    BadInput {
        tower: &'static str,
        message: String,
    },
    #[error("the {tower} graph returned an unexpected output: {message}")]
    BadOutput {
        tower: &'static str,
        message: String,
    },
    #[error("the {tower} graph did not return a float32 tensor")]
    OutputType {
        tower: &'static str,
        #[source]
        source: ort::Error,
    },
    /// The batch tensor could not be shaped (a length check missed a case).
    #[error("cannot shape the {tower} batch tensor")]
    Shape {
        tower: &'static str,
        #[source]
        source: ndarray::ShapeError,
    },
    /// The runtime bindings panicked; the batch fails, the tower thread lives on.
    #[error("inference panicked")]
    Panicked,
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
        let visual_session = runtime.session(VISUAL, visual, config)?;
        let textual_session = runtime.session(TEXTUAL, textual, config)?;
        check_inputs(TEXTUAL, textual, &textual_session, &TEXT_INPUTS)?;
        check_inputs(VISUAL, visual, &visual_session, &[IMAGE_INPUT])?;
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
                let probe = model
                    .tokenizer
                    .encode("a")
                    .map_err(|e| RuntimeError::DimensionProbe(e.into()))?;
                let out = model
                    .run_text(&[probe.as_slice()])
                    .map_err(|e| RuntimeError::DimensionProbe(e.into()))?;
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
        let mut ids = Array2::from_elem((batch.len(), seq), pad as i32);
        let mut mask = Array2::<i32>::zeros((batch.len(), seq));
        for ((tokens, mut id_row), mut mask_row) in
            batch.iter().zip(ids.rows_mut()).zip(mask.rows_mut())
        {
            // Zipping with the row truncates to the sequence length.
            for ((id, slot), m) in tokens
                .iter()
                .zip(id_row.iter_mut())
                .zip(mask_row.iter_mut())
            {
                *slot = *id as i32;
                *m = 1;
            }
        }
        let failed = ort_err(TEXTUAL);
        let ids = Tensor::from_array(ids).map_err(failed)?;
        let mask = Tensor::from_array(mask).map_err(failed)?;
        let mut session = self
            .textual
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let outputs = session
            .run(ort::inputs![TEXT_INPUTS[0] => ids, TEXT_INPUTS[1] => mask])
            .map_err(failed)?;
        rows(TEXTUAL, &outputs[0], batch.len())
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
                return Err(InferenceError::BadInput {
                    tower: VISUAL,
                    message: format!("pixel tensor of {} values, expected {per}", item.len()),
                });
            }
            pixels.extend_from_slice(item);
        }
        // Takes the buffer as is (no copy); the lengths were checked above.
        let pixels = Array4::from_shape_vec((batch.len(), 3, s, s), pixels).map_err(|source| {
            InferenceError::Shape {
                tower: VISUAL,
                source,
            }
        })?;
        let failed = ort_err(VISUAL);
        let pixels = Tensor::from_array(pixels).map_err(failed)?;
        let mut session = self
            .visual
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let outputs = session
            .run(ort::inputs![IMAGE_INPUT => pixels])
            .map_err(failed)?;
        rows(VISUAL, &outputs[0], batch.len())
    }
}

const TEXTUAL: &str = "textual";
const VISUAL: &str = "visual";

fn ort_err(tower: &'static str) -> impl Fn(ort::Error) -> InferenceError + Copy {
    move |source| InferenceError::Ort { tower, source }
}

/// Splits a `[B, D]` float output into rows.
fn rows(
    tower: &'static str,
    value: &ort::value::DynValue,
    batch: usize,
) -> Result<Vec<Vec<f32>>, InferenceError> {
    let output = value
        .try_extract_array::<f32>()
        .map_err(|source| InferenceError::OutputType { tower, source })?;
    let shape = output.shape().to_vec();
    let bad_shape = || InferenceError::BadOutput {
        tower,
        message: format!("shape {shape:?}, expected [{batch}, D]"),
    };
    let output = output
        .into_dimensionality::<Ix2>()
        .map_err(|_| bad_shape())?;
    if output.nrows() != batch || output.ncols() == 0 {
        return Err(bad_shape());
    }
    Ok(output.rows().into_iter().map(|row| row.to_vec()).collect())
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
            return Err(RuntimeError::Contract {
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
                return Err(RuntimeError::Contract {
                    tower,
                    path: path.to_path_buf(),
                    message: format!("input `{name}` is {ty:?}, expected {expected:?}"),
                });
            }
        }
    }
    Ok(())
}
