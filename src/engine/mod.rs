//! The in-process CLIP engine: load a model, preprocess documents, run minibatches, rank.
//!
//! The engine knows nothing of NATS or MessagePack; the CLI and the worker both drive it.

pub mod model;
pub mod prepare;
pub mod rank;
pub mod runtime;
pub mod tokenizer;

use crate::error::{DocError, ErrorChain, ErrorCode};
use crate::model::{ModelFiles, ModelFolderError, ModelSpec, UnknownModel};
use crate::preprocess::fetch::FetchPolicy;
use crate::preprocess::image::DEFAULT_MAX_PIXELS;
use crate::preprocess::input::{Document, Modality};
pub use model::{ClipModel, InferenceError};
pub use prepare::{Prepared, Preprocessor};
pub use rank::RankedMatch;
pub use runtime::{Device, Runtime, RuntimeError, SessionConfig};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

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
        let model = ClipModel::load(
            runtime,
            &files.textual,
            &files.visual,
            spec.image_size,
            text_tokenizer.clone(),
            &options.session,
        )?;
        let model = Arc::new(model);
        let preprocessor = Preprocessor {
            tokenizer: text_tokenizer,
            image_size: spec.image_size,
            max_pixels: options.max_pixels,
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
    pub fn prepare_all(&self, docs: &[Document]) -> Vec<Result<Prepared, DocError>> {
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
    pub fn embed_prepared(
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
        // Images first, then texts, in minibatches: the original's order.
        for chunk in images.chunks(self.minibatch_size) {
            let batch: Vec<&[f32]> = chunk.iter().map(|(_, p)| p.as_slice()).collect();
            let result = self.model.run_images(&batch);
            scatter(
                &mut out,
                chunk.iter().map(|(i, _)| *i),
                result,
                Modality::Image,
            );
        }
        for chunk in texts.chunks(self.minibatch_size) {
            let batch: Vec<&[u32]> = chunk.iter().map(|(_, p)| p.as_slice()).collect();
            let result = self.model.run_text(&batch);
            scatter(
                &mut out,
                chunk.iter().map(|(i, _)| *i),
                result,
                Modality::Text,
            );
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

/// Scores encoded matches against an encoded root.
pub fn rank_embedded(root: Embedded, matches: Vec<Result<Embedded, DocError>>) -> Ranked {
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

fn scatter(
    out: &mut [Result<Embedded, DocError>],
    indices: impl Iterator<Item = usize>,
    result: Result<Vec<Vec<f32>>, InferenceError>,
    modality: Modality,
) {
    match result {
        Ok(rows) => {
            for (i, embedding) in indices.zip(rows) {
                out[i] = Ok(Embedded {
                    modality,
                    embedding,
                });
            }
        }
        Err(e) => {
            let err = DocError::new(ErrorCode::Inference, ErrorChain(&e).to_string());
            for i in indices {
                out[i] = Err(err.clone());
            }
        }
    }
}
