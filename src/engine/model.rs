//! The two ONNX towers of a CLIP model and how a batch is fed to them.

use super::dispatch::{Lease, LeastBusy};
use super::runtime::{Device, Dtype, Runtime, RuntimeError, SessionConfig};
use super::text_length::{self, TextPath};
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
    /// Whether texts run at their real length or at the graph's fixed one.
    pub text_path: TextPath,
}

const TEXT_INPUTS: [&str; 2] = ["input_ids", "attention_mask"];
const IMAGE_INPUT: &str = "pixel_values";
const INTEGER_TYPES: [TensorElementType; 2] = [TensorElementType::Int32, TensorElementType::Int64];
const FLOAT_TYPES: [TensorElementType; 2] =
    [TensorElementType::Float32, TensorElementType::Float16];

impl ClipModel {
    pub(crate) fn load(
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
        let mut dynamic = match text_length::candidate(textual, config) {
            Ok(graph) => Some(graph),
            Err(reason) => {
                tracing::info!(path = %textual.display(), reason = %reason, "text tower: every text runs at the graph's fixed length");
                None
            }
        };
        let mut sets = Vec::with_capacity(devices.len());
        for (k, device) in devices.into_iter().enumerate() {
            // The original creates the visual session first; the order only matters for logs.
            let visual_session = runtime.session("visual", visual, device, config)?;
            let open_fixed = || runtime.session("textual", textual, device, config);
            let textual_session = match &dynamic {
                // The first device decides: the rewrite must reproduce the fixed graph exactly.
                Some(graph) if k == 0 => {
                    let mut fixed = open_fixed()?;
                    match self_test(
                        runtime, textual, graph, device, config, &mut fixed, &tokenizer,
                    ) {
                        Ok(session) => session,
                        Err(reason) => {
                            tracing::warn!(path = %textual.display(), reason = %reason, "text tower: the rewrite to real lengths failed its self-test; every text runs at the graph's fixed length");
                            dynamic = None;
                            fixed
                        }
                    }
                }
                Some(graph) => {
                    runtime.session_from_memory("textual", textual, &graph.bytes, device, config)?
                }
                None => open_fixed()?,
            };
            sets.push(SessionSet {
                device: runtime.resolve_device(device)?,
                textual: Mutex::new(textual_session),
                visual: Mutex::new(visual_session),
            });
        }
        let text_path = match &dynamic {
            Some(graph) => {
                tracing::info!(path = %textual.display(), masks = graph.masks, shape_values = graph.shape_values, "text tower: texts run at their real length (sequence axis rewritten, self-test bit-identical)");
                TextPath::Dynamic
            }
            None => TextPath::Fixed,
        };
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
            text_path,
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
    pub(crate) fn devices(&self) -> Vec<Device> {
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
        let (_, pad) = self.tokenizer.padding(longest);
        let seq = self.text_cost(longest);
        let set = self.lease()?;
        let mut session = lock(&set.textual);
        run_text_on(
            &mut session,
            self.types.ids,
            self.types.mask,
            self.types.text_out,
            batch,
            seq,
            pad,
        )
    }

    /// The sequence length a minibatch whose longest text has `tokens` tokens runs at: its own
    /// length when the graph was rewritten (or the tokenizer pads per batch), else the fixed one.
    pub fn text_cost(&self, tokens: usize) -> usize {
        match self.text_path {
            TextPath::Dynamic => tokens.clamp(1, crate::preprocess::text::CONTEXT_LENGTH),
            TextPath::Fixed => self.tokenizer.padding(tokens).0,
        }
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

/// Loads the rewritten graph and checks it against the fixed one on probe texts; the rewritten
/// session if every embedding is bit-identical.
fn self_test(
    runtime: &Runtime,
    textual: &Path,
    graph: &super::text_graph::DynamicGraph,
    device: Device,
    config: &SessionConfig,
    fixed: &mut Session,
    tokenizer: &TextTokenizer,
) -> Result<Session, String> {
    let ty = |name: &str, allowed: &[TensorElementType]| {
        input_type("textual", textual, fixed, name, allowed).map_err(|e| e.to_string())
    };
    let ids = ty(TEXT_INPUTS[0], &INTEGER_TYPES)?;
    let mask = ty(TEXT_INPUTS[1], &INTEGER_TYPES)?;
    let out = output_type("textual", textual, fixed).map_err(|e| e.to_string())?;
    let mut dynamic = runtime
        .session_from_memory("textual", textual, &graph.bytes, device, config)
        .map_err(|e| crate::error::ErrorChain(&e).to_string())?;
    let probes = text_length::PROBE_TEXTS
        .iter()
        .map(|t| tokenizer.encode(t))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let lengths: Vec<usize> = probes.iter().map(Vec::len).collect();
    let mut checked = 0usize;
    for batch in text_length::probe_batches(&lengths) {
        let items: Vec<&[u32]> = batch.iter().map(|i| probes[*i].as_slice()).collect();
        let longest = items.iter().map(|t| t.len()).max().unwrap_or(1);
        let (full, pad) = tokenizer.padding(longest);
        let run = |session: &mut Session, seq: usize| {
            run_text_on(session, ids, mask, out, &items, seq, pad)
                .map_err(|e| crate::error::ErrorChain(&e).to_string())
        };
        let want = run(fixed, full)?;
        let got = run(&mut dynamic, longest)?;
        if !text_length::identical(&want, &got) {
            return Err(format!(
                "probe minibatch {batch:?} (longest {longest} tokens) differs from the fixed graph"
            ));
        }
        checked += items.len();
    }
    tracing::debug!(embeddings = checked, "text graph self-test passed");
    Ok(dynamic)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs one text minibatch on `session`, padded (with `pad`, mask 0) or cut to `seq` tokens.
fn run_text_on(
    session: &mut Session,
    ids_type: TensorElementType,
    mask_type: TensorElementType,
    out_type: TensorElementType,
    batch: &[&[u32]],
    seq: usize,
    pad: u32,
) -> Result<Vec<Vec<f32>>, InferenceError> {
    let mut ids = vec![i64::from(pad); batch.len() * seq];
    let mut mask = vec![0i64; batch.len() * seq];
    for (row, tokens) in batch.iter().enumerate() {
        for (col, id) in tokens.iter().take(seq).enumerate() {
            ids[row * seq + col] = i64::from(*id);
            mask[row * seq + col] = 1;
        }
    }
    let shape = vec![batch.len() as i64, seq as i64];
    let ids = integer_tensor(ids_type, &shape, ids)?;
    let mask = integer_tensor(mask_type, &shape, mask)?;
    let outputs = session
        .run(ort::inputs![TEXT_INPUTS[0] => ids, TEXT_INPUTS[1] => mask])
        .map_err(ort_err(TEXTUAL))?;
    rows("textual", &outputs[0], out_type, batch.len())
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
