//! Flags shared by every command that loads a model. Each flag has a `CLIP_WORKER_*` twin.

use crate::defaults;
use crate::engine::{DeviceList, Dtype, EngineOptions, SessionConfig, TextLength};
use crate::model::cache::{self, ModelCache};
use crate::model::download::DownloadOptions;
use crate::model::{ModelStore, Registry, RegistryError, StoreError, DEFAULT_MODEL};
use crate::preprocess::image::{ImageMode, DEFAULT_MAX_PIXELS};
use clap::Args;
use std::path::PathBuf;

/// Where models are cached and fetched from; shared by the commands that load a model and by
/// `clip-worker models`.
#[derive(Debug, Clone, Args)]
pub struct ModelStoreArgs {
    /// Model cache, one folder per model in CLIP-as-service's layout [default:
    /// $XDG_CACHE_HOME/clip, else ~/.cache/clip].
    #[arg(long, env = "CLIP_WORKER_MODEL_CACHE")]
    pub model_cache: Option<PathBuf>,

    /// Base URL of the model bucket or of a mirror with its layout (<base>/<folder>/<file>)
    /// [default: CLIP-as-service's public bucket].
    #[arg(long, env = "CLIP_WORKER_MODEL_URL_BASE")]
    pub model_url_base: Option<String>,

    /// JSON file that adds model names or replaces the files and md5 sums of known ones (private
    /// mirrors, fine-tuned models); see docs/operations.md.
    #[arg(long, env = "CLIP_WORKER_MODEL_MANIFEST")]
    pub model_manifest: Option<PathBuf>,

    /// Tries per file before a download fails, with exponential backoff between them.
    #[arg(long, env = "CLIP_WORKER_DOWNLOAD_ATTEMPTS", default_value_t = 5)]
    pub download_attempts: u32,
}

impl ModelStoreArgs {
    pub(crate) fn registry(&self) -> Result<Registry, RegistryError> {
        Registry::load(self.model_manifest.as_deref())
    }

    pub(crate) fn open(&self) -> Result<ModelStore, RegistryError> {
        Ok(ModelStore::new(
            self.registry()?,
            ModelCache::new(self.model_cache.clone().unwrap_or_else(cache::default_root)),
            self.model_url_base.clone(),
            DownloadOptions {
                attempts: self.download_attempts,
                ..DownloadOptions::default()
            },
        ))
    }
}

#[derive(Debug, Clone, Args)]
pub struct EngineArgs {
    /// Model name (`name::pretrained`); decides the image size and the tokenizer.
    #[arg(long, env = "CLIP_WORKER_MODEL", default_value = DEFAULT_MODEL)]
    pub model: String,

    /// Folder with `textual.onnx` and `visual.onnx`, used as is (no download) [default: the
    /// model's folder in the model cache, fetched if missing].
    #[arg(long, env = "CLIP_WORKER_MODEL_DIR")]
    pub model_dir: Option<PathBuf>,

    /// Never download: use the model cache (or --model-dir) as it is.
    #[arg(long, env = "CLIP_WORKER_OFFLINE", default_value_t = false)]
    pub offline: bool,

    #[command(flatten)]
    pub store: ModelStoreArgs,

    /// Where inference runs: auto, cpu, cuda or cuda:N, or a comma list (cuda:0,cuda:1) for one
    /// session set per device, minibatches going to the least busy (never a silent CPU fallback).
    #[arg(long, env = "CLIP_WORKER_DEVICE", default_value = "auto")]
    pub device: DeviceList,

    /// Precision of the model folder's graphs: fp32, or fp16 for a folder converted with
    /// scripts/convert_fp16.py (checked against what the graphs declare).
    #[arg(long, env = "CLIP_WORKER_DTYPE", default_value = "fp32")]
    pub dtype: Dtype,

    /// Put the TensorRT execution provider ahead of CUDA (engine and timing caches in
    /// `<model folder>/tensorrt`).
    #[arg(long, env = "CLIP_WORKER_TENSORRT", default_value_t = false)]
    pub tensorrt: bool,

    /// How texts are fed: dynamic runs each minibatch at its longest text's real length (the
    /// text graph rewritten at load, bit-identical, else it falls back to fixed); fixed pads
    /// every text to the graph's length (77).
    #[arg(long, env = "CLIP_WORKER_TEXT_LENGTH", default_value = "dynamic")]
    pub text_length: TextLength,

    /// Path to libonnxruntime.so [default: ORT_DYLIB_PATH, then ./.venv, then system folders].
    #[arg(long, env = "CLIP_WORKER_ORT_LIB")]
    pub ort_lib: Option<PathBuf>,

    /// Threads inside one ONNX operator (0: ONNX Runtime's default).
    #[arg(long, env = "CLIP_WORKER_INTRA_THREADS", default_value_t = 0)]
    pub intra_threads: usize,

    /// Threads across independent ONNX graph nodes (0: ONNX Runtime's default).
    #[arg(long, env = "CLIP_WORKER_INTER_THREADS", default_value_t = 0)]
    pub inter_threads: usize,

    /// Largest minibatch fed to a tower.
    #[arg(long, env = "CLIP_WORKER_MINIBATCH_SIZE", default_value_t = defaults::MINIBATCH_SIZE)]
    pub minibatch_size: usize,

    /// Threads that decode, resize and tokenize.
    #[arg(
        long,
        env = "CLIP_WORKER_NUM_WORKER_PREPROCESS",
        default_value_t = defaults::NUM_WORKER_PREPROCESS
    )]
    pub num_worker_preprocess: usize,

    /// Largest image accepted, in pixels (decompression-bomb guard).
    #[arg(long, env = "CLIP_WORKER_MAX_IMAGE_PIXELS", default_value_t = DEFAULT_MAX_PIXELS)]
    pub max_image_pixels: u64,

    /// Image preprocessing: exact (bit-identical to CLIP-as-service's Pillow pipeline) or fast
    /// (JPEGs decoded at a reduced DCT scale, then resized exactly; not bit-identical).
    #[arg(long, env = "CLIP_WORKER_IMAGE_MODE", default_value = "exact")]
    pub image_mode: ImageMode,
}

impl EngineArgs {
    /// Engine options for the model: `--model-dir` as given, else the model's cache folder,
    /// downloaded first when missing (unless `--offline`). Blocks for the whole download.
    pub(crate) fn options(&self) -> Result<EngineOptions, StoreError> {
        let store = self.store.open()?;
        let entry = store
            .registry
            .resolve(&self.model)
            .map_err(RegistryError::from)?;
        let model_dir = match &self.model_dir {
            Some(dir) => dir.clone(),
            None => store.ensure(entry, self.offline)?,
        };
        // A manifest name loads as the built-in model it is declared `like`.
        let mut o = EngineOptions::new(entry.spec.name, model_dir);
        o.ort_lib = self.ort_lib.clone();
        o.session = SessionConfig {
            devices: self.device.clone(),
            intra_threads: self.intra_threads,
            inter_threads: self.inter_threads,
            tensorrt: self.tensorrt,
            tensorrt_cache: None,
            dtype: self.dtype,
            text_length: self.text_length,
        };
        o.minibatch_size = self.minibatch_size;
        o.num_worker_preprocess = self.num_worker_preprocess;
        o.max_pixels = self.max_image_pixels;
        o.image_mode = self.image_mode;
        Ok(o)
    }
}
