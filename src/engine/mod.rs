//! The in-process CLIP engine: load a model, preprocess documents, run minibatches, rank.
//!
//! The engine knows nothing of NATS or MessagePack; the CLI and the worker both drive it.

pub(crate) mod dispatch;
pub(crate) mod model;
pub(crate) mod prepare;
pub(crate) mod rank;
pub(crate) mod runtime;
pub(crate) mod text_graph;
mod text_length;
pub(crate) mod tokenizer;

use crate::error::{DocError, ErrorChain, ErrorCode};
use crate::model::{ModelFiles, ModelFolderError, ModelSpec, UnknownModel};
use crate::preprocess::fetch::FetchPolicy;
use crate::preprocess::image::{ImageMode, DEFAULT_MAX_PIXELS};
use crate::preprocess::input::{Document, Modality};
pub(crate) use model::{ClipModel, InferenceError};
pub use prepare::{Prepared, Preprocessor};
pub(crate) use rank::RankedMatch;
pub use runtime::{Device, DeviceList, Dtype, Runtime, RuntimeError, SessionConfig, TextLength};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
pub use text_length::TextPath;

/// Folder, inside the model folder, holding TensorRT's engine and timing caches.
pub(crate) const TENSORRT_CACHE_DIR: &str = "tensorrt";

/// How to build an [`Engine`].
#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub model_name: String,
    pub model_dir: PathBuf,
    pub ort_lib: Option<PathBuf>,
    pub session: SessionConfig,
    pub minibatch_size: usize,
    pub num_worker_preprocess: usize,
    pub max_pixels: u64,
    /// Exact (Pillow bit for bit) or fast (DCT-scaled JPEG decoding) image preprocessing.
    pub image_mode: ImageMode,
    pub fetch: FetchPolicy,
}

impl EngineOptions {
    pub fn new(model_name: impl Into<String>, model_dir: impl Into<PathBuf>) -> Self {
        EngineOptions {
            model_name: model_name.into(),
            model_dir: model_dir.into(),
            ort_lib: None,
            session: SessionConfig::default(),
            minibatch_size: crate::defaults::MINIBATCH_SIZE,
            num_worker_preprocess: crate::defaults::NUM_WORKER_PREPROCESS,
            max_pixels: DEFAULT_MAX_PIXELS,
            image_mode: ImageMode::Exact,
            fetch: FetchPolicy::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    UnknownModel(#[from] UnknownModel),
    #[error(transparent)]
    Folder(#[from] ModelFolderError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Tokenizer(#[from] tokenizer::TextTokenizerError),
}

/// One document's embedding.
#[derive(Debug, Clone, PartialEq)]
pub struct Embedded {
    pub modality: Modality,
    pub embedding: Vec<f32>,
}

/// A ranked root: its own embedding and its matches, scored matches first (best first), then the
/// matches that could not be encoded, in input order.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranked {
    pub root: Embedded,
    pub matches: Vec<RankedMatch>,
    pub failed: Vec<(usize, DocError)>,
}

pub struct Engine {
    pub spec: &'static ModelSpec,
    pub model: Arc<ClipModel>,
    pub preprocessor: Preprocessor,
    pub minibatch_size: usize,
    pub num_worker_preprocess: usize,
}

impl Engine {
    pub fn load(options: &EngineOptions) -> Result<Engine, EngineError> {
        let spec = crate::model::lookup(&options.model_name)?;
        let files = ModelFiles::from_folder(&options.model_dir, spec)?;
        let runtime = Runtime::get_or_init(options.ort_lib.as_deref())?;
        // Built once (the CLIP vocabulary takes ~0.2 s) and shared by the model and the preprocess pool.
        let text_tokenizer = Arc::new(tokenizer::TextTokenizer::load(
            spec.tokenizer,
            files.tokenizer.as_deref(),
        )?);
        let mut session = options.session.clone();
        if session.tensorrt_cache.is_none() {
            // TensorRT engines are built per model: keep them beside its graphs.
            session.tensorrt_cache = Some(options.model_dir.join(TENSORRT_CACHE_DIR));
        }
        let model = ClipModel::load(
            runtime,
            &files.textual,
            &files.visual,
            spec.image_size,
            text_tokenizer.clone(),
            &session,
        )?;
        let model = Arc::new(model);
        tracing::info!(
            model = spec.name,
            devices = %device_names(&model.devices()),
            dtype = %model.dtype,
            dim = model.dim,
            text_length = %model.text_path,
            "model loaded, one session set per device"
        );
        let preprocessor = Preprocessor {
            tokenizer: text_tokenizer,
            image_size: spec.image_size,
            max_pixels: options.max_pixels,
            image_mode: options.image_mode,
            fetch: options.fetch.clone(),
        };
        Ok(Engine {
            spec,
            model,
            preprocessor,
            minibatch_size: options.minibatch_size.max(1),
            num_worker_preprocess: options.num_worker_preprocess.max(1),
        })
    }

    /// Output dimension of both towers.
    pub fn dim(&self) -> usize {
        self.model.dim
    }

    /// Preprocesses documents on a pool of threads, keeping input order.
    pub(crate) fn prepare_all(&self, docs: &[Document]) -> Vec<Result<Prepared, DocError>> {
        let next = AtomicUsize::new(0);
        let workers = self.num_worker_preprocess.min(docs.len()).max(1);
        let mut results: Vec<Option<Result<Prepared, DocError>>> = vec![None; docs.len()];
        let chunks: Vec<Vec<(usize, Result<Prepared, DocError>)>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..workers)
                .map(|_| {
                    scope.spawn(|| {
                        let mut mine = Vec::new();
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            let Some(doc) = docs.get(i) else { break };
                            mine.push((i, self.preprocessor.prepare(doc)));
                        }
                        mine
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| vec![]))
                .collect()
        });
        for (i, r) in chunks.into_iter().flatten() {
            results[i] = Some(r);
        }
        results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(DocError::new(
                        ErrorCode::Internal,
                        "preprocessing thread failed",
                    ))
                })
            })
            .collect()
    }

    /// Runs prepared inputs through the towers in minibatches; errors stay with their documents.
    pub(crate) fn embed_prepared(
        &self,
        prepared: Vec<Result<Prepared, DocError>>,
    ) -> Vec<Result<Embedded, DocError>> {
        let mut out: Vec<Result<Embedded, DocError>> = Vec::with_capacity(prepared.len());
        let mut texts: Vec<(usize, Vec<u32>)> = Vec::new();
        let mut images: Vec<(usize, Vec<f32>)> = Vec::new();
        for (i, p) in prepared.into_iter().enumerate() {
            match p {
                Ok(Prepared::Text(ids)) => texts.push((i, ids)),
                Ok(Prepared::Image(px)) => images.push((i, px)),
                Err(e) => {
                    out.push(Err(e));
                    continue;
                }
            }
            out.push(Err(DocError::new(ErrorCode::Internal, "not encoded")));
        }
        // Texts of similar length share a minibatch (each runs at its longest text's length when
        // the graph allows it); results go back to their documents' places.
        texts.sort_by_key(|(_, ids)| self.model.text_cost(ids.len()));
        // Images first, then texts, in minibatches: the original's order. With several session
        // sets (devices), as many minibatches run at once, each on the least busy set.
        let units: Vec<Unit<'_>> = images
            .chunks(self.minibatch_size)
            .map(Unit::Images)
            .chain(texts.chunks(self.minibatch_size).map(Unit::Texts))
            .collect();
        let next = AtomicUsize::new(0);
        let workers = self.model.replicas().min(units.len()).max(1);
        let done: Vec<Vec<(usize, Result<Embedded, DocError>)>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..workers)
                .map(|_| {
                    scope.spawn(|| {
                        let mut mine = Vec::new();
                        while let Some(unit) = units.get(next.fetch_add(1, Ordering::Relaxed)) {
                            mine.extend(unit.run(&self.model));
                        }
                        mine
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_default())
                .collect()
        });
        for (i, r) in done.into_iter().flatten() {
            out[i] = r;
        }
        out
    }

    /// Encodes documents: one result per document, in order.
    pub fn encode(&self, docs: &[Document]) -> Vec<Result<Embedded, DocError>> {
        self.embed_prepared(self.prepare_all(docs))
    }

    /// Ranks each root's matches by CLIP score.
    pub fn rank(&self, root: &Document, matches: &[Document]) -> Result<Ranked, DocError> {
        let mut all = Vec::with_capacity(matches.len() + 1);
        all.push(root.clone());
        all.extend_from_slice(matches);
        let mut encoded = self.encode(&all).into_iter();
        let root = encoded
            .next()
            .unwrap_or_else(|| Err(DocError::new(ErrorCode::Internal, "root not encoded")))?;
        Ok(rank_embedded(root, encoded.collect()))
    }
}

/// `cuda:0,cuda:1`: the devices of the session sets, in order.
pub(crate) fn device_names(devices: &[Device]) -> String {
    let names: Vec<String> = devices.iter().map(Device::to_string).collect();
    names.join(",")
}

/// Scores encoded matches against an encoded root.
pub(crate) fn rank_embedded(root: Embedded, matches: Vec<Result<Embedded, DocError>>) -> Ranked {
    let mut ok: Vec<(usize, Vec<f32>)> = Vec::new();
    let mut failed = Vec::new();
    for (i, m) in matches.into_iter().enumerate() {
        match m {
            Ok(e) => ok.push((i, e.embedding)),
            Err(e) => failed.push((i, e)),
        }
    }
    let refs: Vec<&[f32]> = ok.iter().map(|(_, e)| e.as_slice()).collect();
    let ranked = rank::rank(&root.embedding, &refs)
        .into_iter()
        .map(|m| RankedMatch {
            index: ok[m.index].0,
            ..m
        })
        .collect();
    Ranked {
        root,
        matches: ranked,
        failed,
    }
}

/// One minibatch of the in-process path.
enum Unit<'a> {
    Images(&'a [(usize, Vec<f32>)]),
    Texts(&'a [(usize, Vec<u32>)]),
}

impl Unit<'_> {
    /// Runs the minibatch; one result per document, with its index.
    fn run(&self, model: &ClipModel) -> Vec<(usize, Result<Embedded, DocError>)> {
        match self {
            Unit::Images(chunk) => {
                let batch: Vec<&[f32]> = chunk.iter().map(|(_, p)| p.as_slice()).collect();
                scatter(
                    chunk.iter().map(|(i, _)| *i),
                    model.run_images(&batch),
                    Modality::Image,
                )
            }
            Unit::Texts(chunk) => {
                let batch: Vec<&[u32]> = chunk.iter().map(|(_, p)| p.as_slice()).collect();
                scatter(
                    chunk.iter().map(|(i, _)| *i),
                    model.run_text(&batch),
                    Modality::Text,
                )
            }
        }
    }
}

fn scatter(
    indices: impl Iterator<Item = usize>,
    result: Result<Vec<Vec<f32>>, InferenceError>,
    modality: Modality,
) -> Vec<(usize, Result<Embedded, DocError>)> {
    match result {
        Ok(rows) => indices
            .zip(rows)
            .map(|(i, embedding)| {
                (
                    i,
                    Ok(Embedded {
                        modality,
                        embedding,
                    }),
                )
            })
            .collect(),
        Err(e) => {
            let err = DocError::new(ErrorCode::Inference, ErrorChain(&e).to_string());
            indices.map(|i| (i, Err(err.clone()))).collect()
        }
    }
}
