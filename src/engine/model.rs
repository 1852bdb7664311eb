//! The two ONNX towers of a CLIP model and how a batch is fed to them.

use super::dispatch::{Lease, LeastBusy};
use super::runtime::{Device, Dtype, Runtime, RuntimeError, SessionConfig};
use super::tokenizer::TextTokenizer;
use half::f16;
use ort::session::Session;
use ort::value::{DynValue, Tensor, TensorElementType, ValueType};
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
    /// Every session set is gone (cannot happen once loaded; kept typed rather than panicking).
    #[error("no session to run on")]
    NoSession,
    /// The runtime bindings panicked; the batch fails, the tower thread lives on.
    #[error("inference panicked")]
    Panicked,
}

/// One device's pair of sessions.
struct SessionSet {
    device: Device,
    textual: Mutex<Session>,
    visual: Mutex<Session>,
}

/// The element types the graphs declare, fed and read as declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct GraphTypes {
    ids: TensorElementType,
    mask: TensorElementType,
    text_out: TensorElementType,
    pixels: TensorElementType,
    image_out: TensorElementType,
}

/// One loaded CLIP model: text and image towers with a fixed image size and output dimension,
/// on one or more devices (minibatches go to the least busy one).
pub struct ClipModel {
    sets: LeastBusy<SessionSet>,
    types: GraphTypes,
    pub image_size: u32,
    pub dim: usize,
    pub dtype: Dtype,
    pub tokenizer: Arc<TextTokenizer>,
}

const TEXT_INPUTS: [&str; 2] = ["input_ids", "attention_mask"];
const IMAGE_INPUT: &str = "pixel_values";
const INTEGER_TYPES: [TensorElementType; 2] = [TensorElementType::Int32, TensorElementType::Int64];
const FLOAT_TYPES: [TensorElementType; 2] =
    [TensorElementType::Float32, TensorElementType::Float16];

impl ClipModel {
    pub fn load(
        runtime: &Runtime,
        textual: &Path,
        visual: &Path,
        image_size: u32,
        tokenizer: Arc<TextTokenizer>,
        config: &SessionConfig,
    ) -> Result<Self, RuntimeError> {
        let mut devices = config.devices.devices().to_vec();
        if devices.is_empty() {
            devices.push(Device::Auto);
        }
        let mut sets = Vec::with_capacity(devices.len());
        for device in devices {
            // The original creates the visual session first; the order only matters for logs.
            let visual_session = runtime.session("visual", visual, device, config)?;
            let textual_session = runtime.session("textual", textual, device, config)?;
            sets.push(SessionSet {
                device: runtime.resolve_device(device)?,
                textual: Mutex::new(textual_session),
                visual: Mutex::new(visual_session),
            });
        }
        let (types, declared_dim) = match sets.first() {
            Some(set) => {
                let t = lock(&set.textual);
                let v = lock(&set.visual);
                let types = GraphTypes {
                    ids: input_type("textual", textual, &t, TEXT_INPUTS[0], &INTEGER_TYPES)?,
                    mask: input_type("textual", textual, &t, TEXT_INPUTS[1], &INTEGER_TYPES)?,
                    text_out: output_type("textual", textual, &t)?,
                    pixels: input_type("visual", visual, &v, IMAGE_INPUT, &FLOAT_TYPES)?,
                    image_out: output_type("visual", visual, &v)?,
                };
                (types, declared_dim(&t))
            }
            None => return Err(RuntimeError::NoDevice),
        };
        check_precision("textual", textual, types.text_out, None, config.dtype)?;
        check_precision(
            "visual",
            visual,
            types.image_out,
            Some(types.pixels),
            config.dtype,
        )?;
        let mut model = ClipModel {
            sets: LeastBusy::new(sets),
            types,
            image_size,
            dim: 0,
            dtype: config.dtype,
            tokenizer,
        };
        // The output dimension is read from the graph; a symbolic one is found with one tiny run.
        model.dim = match declared_dim {
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
        Ok(model)
    }

    /// The device of each session set, in `--device` order.
    pub fn devices(&self) -> Vec<Device> {
        self.sets.replicas().iter().map(|s| s.device).collect()
    }

    /// How many session sets run minibatches side by side.
    pub fn replicas(&self) -> usize {
        self.sets.len()
    }

    /// Minibatches run on each session set so far (both towers).
    pub fn dispatched(&self) -> Vec<u64> {
        self.sets.dispatched()
    }

    fn lease(&self) -> Result<Lease<'_, SessionSet>, InferenceError> {
        self.sets.acquire().ok_or(InferenceError::NoSession)
    }

    /// Runs the text tower on token id sequences (each already truncated to the context length).
    pub fn run_text(&self, batch: &[&[u32]]) -> Result<Vec<Vec<f32>>, InferenceError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let longest = batch.iter().map(|ids| ids.len()).max().unwrap_or(0);
        let (seq, pad) = self.tokenizer.padding(longest);
        let mut ids = vec![i64::from(pad); batch.len() * seq];
        let mut mask = vec![0i64; batch.len() * seq];
        for (row, tokens) in batch.iter().enumerate() {
            for (col, id) in tokens.iter().take(seq).enumerate() {
                ids[row * seq + col] = i64::from(*id);
                mask[row * seq + col] = 1;
            }
        }
        let shape = vec![batch.len() as i64, seq as i64];
        let ids = integer_tensor(self.types.ids, &shape, ids)?;
        let mask = integer_tensor(self.types.mask, &shape, mask)?;
        let set = self.lease()?;
        let mut session = lock(&set.textual);
        let outputs = session
            .run(ort::inputs![TEXT_INPUTS[0] => ids, TEXT_INPUTS[1] => mask])
            .map_err(ort_err(TEXTUAL))?;
        rows("textual", &outputs[0], self.types.text_out, batch.len())
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
        // Cast after normalisation, as the original does for fp16 (round to nearest even).
        let pixels = if self.types.pixels == TensorElementType::Float16 {
            let half: Vec<f16> = pixels.into_iter().map(f16::from_f32).collect();
            Tensor::from_array((shape, half))
                .map_err(ort_err(VISUAL))?
                .into_dyn()
        } else {
            Tensor::from_array((shape, pixels))
                .map_err(ort_err(VISUAL))?
                .into_dyn()
        };
        let set = self.lease()?;
        let mut session = lock(&set.visual);
        let outputs = session
            .run(ort::inputs![IMAGE_INPUT => pixels])
            .map_err(ort_err(VISUAL))?;
        rows("visual", &outputs[0], self.types.image_out, batch.len())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Token ids or mask as the integer type the graph declares.
fn integer_tensor(
    ty: TensorElementType,
    shape: &[i64],
    values: Vec<i64>,
) -> Result<DynValue, InferenceError> {
    let shape = shape.to_vec();
    Ok(if ty == TensorElementType::Int64 {
        Tensor::from_array((shape, values))
            .map_err(ort_err(TEXTUAL))?
            .into_dyn()
    } else {
        // Ids are below 2^31 (vocabulary indices), so the narrowing is exact.
        let narrow: Vec<i32> = values.into_iter().map(|v| v as i32).collect();
        Tensor::from_array((shape, narrow))
            .map_err(ort_err(TEXTUAL))?
            .into_dyn()
    })
}

fn declared_dim(session: &Session) -> Option<usize> {
    match session.outputs().first()?.dtype() {
        ValueType::Tensor { shape, .. } => {
            shape.last().copied().filter(|d| *d > 0).map(|d| d as usize)
        }
        _ => None,
    }
}

const TEXTUAL: &str = "textual";
const VISUAL: &str = "visual";

fn ort_err(tower: &'static str) -> impl Fn(ort::Error) -> InferenceError + Copy {
    move |source| InferenceError::Ort { tower, source }
}

/// Splits a `[B, D]` float output (float32, or float16 widened exactly) into rows.
fn rows(
    tower: &'static str,
    value: &DynValue,
    ty: TensorElementType,
    batch: usize,
) -> Result<Vec<Vec<f32>>, InferenceError> {
    let bad = |message: String| InferenceError::BadOutput { tower, message };
    let (dims, data): (Vec<i64>, Vec<f32>) = if ty == TensorElementType::Float16 {
        let (shape, data) = value
            .try_extract_tensor::<f16>()
            .map_err(|e| bad(format!("expected a float16 tensor: {e}")))?;
        (shape.to_vec(), data.iter().map(|h| h.to_f32()).collect())
    } else {
        let (shape, data) = value
            .try_extract_tensor::<f32>()
            .map_err(|e| bad(format!("expected a float32 tensor: {e}")))?;
        (shape.to_vec(), data.to_vec())
    };
    if dims.len() != 2 || dims[0] as usize != batch || dims[1] <= 0 {
        return Err(bad(format!("shape {dims:?}, expected [{batch}, D]")));
    }
    Ok(data.chunks(dims[1] as usize).map(<[f32]>::to_vec).collect())
}

/// The element type of a contract input, which must be one of `allowed`.
fn input_type(
    tower: &'static str,
    path: &Path,
    session: &Session,
    name: &str,
    allowed: &[TensorElementType],
) -> Result<TensorElementType, RuntimeError> {
    let fail = |message: String| RuntimeError::Contract {
        tower,
        path: path.to_path_buf(),
        message,
    };
    let Some(input) = session.inputs().iter().find(|i| i.name() == name) else {
        let have: Vec<&str> = session.inputs().iter().map(|i| i.name()).collect();
        return Err(fail(format!(
            "graph has no input `{name}` (inputs: {have:?})"
        )));
    };
    match input.dtype() {
        ValueType::Tensor { ty, .. } if allowed.contains(ty) => Ok(*ty),
        other => Err(fail(format!(
            "input `{name}` is {other:?}, expected one of {allowed:?}"
        ))),
    }
}

/// The element type of output 0, float32 or float16.
fn output_type(
    tower: &'static str,
    path: &Path,
    session: &Session,
) -> Result<TensorElementType, RuntimeError> {
    match session.outputs().first().map(|o| o.dtype()) {
        Some(ValueType::Tensor { ty, .. }) if FLOAT_TYPES.contains(ty) => Ok(*ty),
        other => Err(RuntimeError::Contract {
            tower,
            path: path.to_path_buf(),
            message: format!("output 0 is {other:?}, expected a float32 or float16 tensor"),
        }),
    }
}

/// The graph's precision must be the one asked for: serving fp32 graphs as "fp16" (or the
/// reverse) would silently change every embedding.
fn check_precision(
    tower: &'static str,
    path: &Path,
    output: TensorElementType,
    input: Option<TensorElementType>,
    wanted: Dtype,
) -> Result<(), RuntimeError> {
    let half = output == TensorElementType::Float16 || input == Some(TensorElementType::Float16);
    let found = if half { Dtype::Fp16 } else { Dtype::Fp32 };
    if found == wanted {
        return Ok(());
    }
    Err(RuntimeError::Precision {
        tower,
        path: path.to_path_buf(),
        found,
        wanted,
        hint: match wanted {
            Dtype::Fp16 => "make an fp16 model folder once with `scripts/convert_fp16.py SRC DST` and serve DST",
            Dtype::Fp32 => "pass --dtype fp16 to serve a float16 model folder",
        },
    })
}
