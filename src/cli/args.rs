//! Flags shared by every command that loads a model. Each flag has a `CLIP_WORKER_*` twin.

use crate::defaults;
use crate::engine::{DeviceList, Dtype, EngineOptions, SessionConfig};
use crate::model::DEFAULT_MODEL;
use crate::preprocess::image::DEFAULT_MAX_PIXELS;
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Clone, Args)]
pub struct EngineArgs {
    /// Model name (`name::pretrained`); decides the image size and the tokenizer.
    #[arg(long, env = "CLIP_WORKER_MODEL", default_value = DEFAULT_MODEL)]
    pub model: String,

    /// Folder with `textual.onnx` and `visual.onnx` [default: ~/.cache/clip/<model>, the
    /// original's cache layout].
    #[arg(long, env = "CLIP_WORKER_MODEL_DIR")]
    pub model_dir: Option<PathBuf>,

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
}

impl EngineArgs {
    /// The model folder: explicit, or the original's cache folder for this name.
    pub fn resolved_model_dir(&self) -> PathBuf {
        self.model_dir
            .clone()
            .unwrap_or_else(|| default_model_dir(&self.model))
    }

    pub fn options(&self) -> EngineOptions {
        let mut o = EngineOptions::new(self.model.clone(), self.resolved_model_dir());
        o.ort_lib = self.ort_lib.clone();
        o.session = SessionConfig {
            devices: self.device.clone(),
            intra_threads: self.intra_threads,
            inter_threads: self.inter_threads,
            tensorrt: self.tensorrt,
            tensorrt_cache: None,
            dtype: self.dtype,
        };
        o.minibatch_size = self.minibatch_size;
        o.num_worker_preprocess = self.num_worker_preprocess;
        o.max_pixels = self.max_image_pixels;
        o
    }
}

/// `~/.cache/clip/<name with "/" and "::" replaced by "-">`, as CLIP-as-service caches models.
pub fn default_model_dir(model: &str) -> PathBuf {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache/clip")
        .join(model.replace("::", "-").replace('/', "-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_folder_matches_the_original() {
        let d = default_model_dir("ViT-B-32::openai");
        assert!(
            d.ends_with(".cache/clip/ViT-B-32-openai"),
            "{}",
            d.display()
        );
        assert!(default_model_dir("ViT-L/14@336px").ends_with("ViT-L-14@336px"));
        assert!(default_model_dir("M-CLIP/LABSE-Vit-L-14").ends_with("M-CLIP-LABSE-Vit-L-14"));
    }
}
