//! The ONNX Runtime library: finding it, loading it once per process, and building sessions.
//!
//! `ort` is built with `load-dynamic`, so the shared library is found at run time: an explicit path
//! (`--ort-lib` / `ORT_DYLIB_PATH`), else the project's own Python environment (`.venv`, where the
//! bootstrap script installs the `onnxruntime` wheel), else the usual system library folders.

use ort::ep::{self, ExecutionProvider};
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::OnceLock;

/// Where inference runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Device {
    /// CUDA device 0 when ONNX Runtime offers the CUDA provider, else CPU.
    #[default]
    Auto,
    Cpu,
    /// A CUDA device by ordinal; fails at start-up if CUDA is unavailable.
    Cuda(i32),
}

impl FromStr for Device {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Device::Auto),
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse::<i32>().ok())
                .filter(|n| *n >= 0)
                .map(Device::Cuda)
                .ok_or_else(|| {
                    format!("invalid device `{other}`: expected auto, cpu, cuda or cuda:N")
                }),
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Auto => f.write_str("auto"),
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// One or more devices: `auto`, or a comma list such as `cuda:0,cuda:1` (one session set each).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceList(Vec<Device>);

impl DeviceList {
    pub(crate) fn one(device: Device) -> Self {
        DeviceList(vec![device])
    }

    pub(crate) fn devices(&self) -> &[Device] {
        &self.0
    }
}

impl Default for DeviceList {
    fn default() -> Self {
        DeviceList::one(Device::Auto)
    }
}

impl FromStr for DeviceList {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let devices = s
            .split(',')
            .map(|d| d.trim().parse::<Device>())
            .collect::<Result<Vec<_>, _>>()?;
        if devices.len() > 1 && devices.contains(&Device::Auto) {
            return Err(format!(
                "invalid device list `{s}`: `auto` stands alone; list concrete devices (cpu, cuda:N)"
            ));
        }
        Ok(DeviceList(devices))
    }
}

impl std::fmt::Display for DeviceList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self.0.iter().map(Device::to_string).collect();
        f.write_str(&names.join(","))
    }
}

/// The floating-point precision the graphs run in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Dtype {
    #[default]
    Fp32,
    /// Graphs converted to float16 (inputs and outputs included), as the original runs on GPU.
    Fp16,
}

impl FromStr for Dtype {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fp32" => Ok(Dtype::Fp32),
            "fp16" => Ok(Dtype::Fp16),
            other => Err(format!("invalid dtype `{other}`: expected fp32 or fp16")),
        }
    }
}

impl std::fmt::Display for Dtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Dtype::Fp32 => "fp32",
            Dtype::Fp16 => "fp16",
        })
    }
}

/// How texts are fed to the text tower.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TextLength {
    /// Rewrite a recognised fixed-length text graph to run each minibatch at its longest real
    /// length (bit-identical embeddings, checked at load); other graphs stay fixed.
    #[default]
    Dynamic,
    /// Serve the text graph as it is (CLIP graphs: every text padded to 77 tokens).
    Fixed,
}

impl FromStr for TextLength {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "dynamic" => Ok(TextLength::Dynamic),
            "fixed" => Ok(TextLength::Fixed),
            other => Err(format!(
                "invalid text length `{other}`: expected dynamic or fixed"
            )),
        }
    }
}

impl std::fmt::Display for TextLength {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TextLength::Dynamic => "dynamic",
            TextLength::Fixed => "fixed",
        })
    }
}

/// Session tuning shared by both towers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SessionConfig {
    /// One session set (textual + visual) per listed device.
    pub devices: DeviceList,
    /// Threads inside one operator (0: ONNX Runtime's default, one per physical core).
    pub intra_threads: usize,
    /// Threads across independent graph nodes (0: ONNX Runtime's default).
    pub inter_threads: usize,
    /// Use the TensorRT provider ahead of CUDA (GPU only).
    pub tensorrt: bool,
    /// Where TensorRT keeps its engine and timing caches (required with `tensorrt`).
    pub tensorrt_cache: Option<PathBuf>,
    /// The precision the graphs must declare.
    pub dtype: Dtype,
    /// Whether the text graph may be rewritten to run texts at their real length.
    pub text_length: TextLength,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("ONNX Runtime library not found (looked at: {looked}). Install it with `scripts/bootstrap.sh` (pip package `onnxruntime` 1.31 into ./.venv), or point ORT_DYLIB_PATH / --ort-lib at libonnxruntime.so")]
    LibraryNotFound { looked: String },
    #[error("failed to load ONNX Runtime from `{path}`")]
    LibraryLoad {
        path: PathBuf,
        #[source]
        source: crate::error::BoxError,
    },
    #[error("CUDA was requested ({device}) but the loaded ONNX Runtime has no CUDA execution provider (install `onnxruntime-gpu` and the CUDA libraries, or use --device cpu)")]
    CudaUnavailable { device: Device },
    #[error("failed to create the {tower} session from `{path}`")]
    Session {
        tower: &'static str,
        path: PathBuf,
        #[source]
        source: ort::Error,
    },
    /// The graph loaded but does not have the model folder's inputs.
    #[error("the {tower} graph `{path}` does not fit the model-folder contract: {message}")]
    Contract {
        tower: &'static str,
        path: PathBuf,
        message: String,
    },
    /// The output dimension is symbolic and the one-text probe run to learn it failed.
    #[error("cannot determine the output dimension of the textual graph")]
    DimensionProbe(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("TensorRT was requested on {device}; it needs a CUDA device (--device cuda:N)")]
    TensorRtNeedsCuda { device: Device },
    #[error("TensorRT needs a cache folder for its engines (set by the model folder)")]
    TensorRtCacheUnset,
    #[error("cannot create the TensorRT cache folder `{path}`")]
    TensorRtCache {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{path}` ({tower}) runs in {found}, but --dtype is {wanted}: {hint}")]
    Precision {
        tower: &'static str,
        path: PathBuf,
        found: Dtype,
        wanted: Dtype,
        hint: &'static str,
    },
    /// The device list was empty.
    #[error("no device to run on")]
    NoDevice,
    #[error("ONNX Runtime failed")]
    Ort(#[from] ort::Error),
}

/// The loaded library and its one environment (ONNX Runtime allows one per process).
pub struct Runtime {
    pub library: PathBuf,
    env: ort::environment::Environment,
}

static RUNTIME: OnceLock<Runtime> = OnceLock::new();

impl Runtime {
    /// Loads ONNX Runtime once; later calls return the same runtime (and ignore `explicit`).
    pub(crate) fn get_or_init(explicit: Option<&Path>) -> Result<&'static Runtime, RuntimeError> {
        if let Some(rt) = RUNTIME.get() {
            return Ok(rt);
        }
        let library = find_library(explicit)?;
        let load_failed = |source: crate::error::BoxError| RuntimeError::LibraryLoad {
            path: library.clone(),
            source,
        };
        let builder = ort::init_from(&library).map_err(|e| load_failed(e.into()))?;
        let env = builder
            .with_name("clip-worker")
            .with_telemetry(false)
            .build()
            .map_err(|e| load_failed(e.into()))?;
        // A racing initialiser loses harmlessly: both point at the same library.
        Ok(RUNTIME.get_or_init(|| Runtime { library, env }))
    }

    /// Whether the loaded library offers the CUDA execution provider.
    pub(crate) fn cuda_available(&self) -> bool {
        ep::CUDA::is_available().unwrap_or(false)
    }

    /// Resolves `auto` to a concrete device.
    pub(crate) fn resolve_device(&self, device: Device) -> Result<Device, RuntimeError> {
        match device {
            Device::Auto if self.cuda_available() => Ok(Device::Cuda(0)),
            Device::Auto => Ok(Device::Cpu),
            Device::Cuda(_) if !self.cuda_available() => {
                Err(RuntimeError::CudaUnavailable { device })
            }
            other => Ok(other),
        }
    }

    /// Builds one session on `device` with the original's settings: ORT_ENABLE_ALL, GPU provider
    /// first when asked. A provider that fails to register is an error, never a CPU fallback.
    pub(crate) fn session(
        &self,
        tower: &'static str,
        path: &Path,
        device: Device,
        config: &SessionConfig,
    ) -> Result<Session, RuntimeError> {
        self.session_from(tower, path, None, device, config)
    }

    /// As [`Runtime::session`], from model bytes in memory (`path` names them in errors).
    pub(crate) fn session_from_memory(
        &self,
        tower: &'static str,
        path: &Path,
        bytes: &[u8],
        device: Device,
        config: &SessionConfig,
    ) -> Result<Session, RuntimeError> {
        self.session_from(tower, path, Some(bytes), device, config)
    }

    fn session_from(
        &self,
        tower: &'static str,
        path: &Path,
        bytes: Option<&[u8]>,
        device: Device,
        config: &SessionConfig,
    ) -> Result<Session, RuntimeError> {
        let fail = |e: ort::Error| RuntimeError::Session {
            tower,
            path: path.to_path_buf(),
            source: e,
        };
        let device = self.resolve_device(device)?;
        let mut builder = Session::builder(&self.env)
            .map_err(fail)?
            .with_optimization_level(optimization_level(config.dtype))
            .map_err(|e| fail(e.into()))?;
        if config.intra_threads > 0 {
            builder = builder
                .with_intra_threads(config.intra_threads)
                .map_err(|e| fail(e.into()))?;
        }
        if config.inter_threads > 0 {
            builder = builder
                .with_inter_threads(config.inter_threads)
                .map_err(|e| fail(e.into()))?;
        }
        if let Device::Cuda(id) = device {
            let mut providers = Vec::new();
            if config.tensorrt {
                providers.push(tensorrt_provider(tower, id, config)?);
            }
            providers.push(
                ep::CUDA::default()
                    .with_device_id(id)
                    .build()
                    .error_on_failure(),
            );
            builder = builder
                .with_execution_providers(providers)
                .map_err(|e| fail(e.into()))?;
        } else if config.tensorrt {
            return Err(RuntimeError::TensorRtNeedsCuda { device });
        }
        match bytes {
            Some(bytes) => builder.commit_from_memory(bytes).map_err(fail),
            None => builder.commit_from_file(path).map_err(fail),
        }
    }
}

/// The original's ORT_ENABLE_ALL, except for float16 graphs: ONNX Runtime 1.31 and 1.32 crash
/// (segmentation fault, at session creation) applying the optimisations beyond the layout level to
/// converted CLIP image graphs, so those stop at ORT_ENABLE_LAYOUT, which includes every layout
/// optimisation.
fn optimization_level(dtype: Dtype) -> GraphOptimizationLevel {
    match dtype {
        Dtype::Fp32 => GraphOptimizationLevel::All,
        Dtype::Fp16 => GraphOptimizationLevel::Level3,
    }
}

/// TensorRT on one GPU, its engine and timing caches in the model's cache folder so a restart
/// does not rebuild the engines (minutes for large models).
fn tensorrt_provider(
    tower: &'static str,
    device_id: i32,
    config: &SessionConfig,
) -> Result<ep::ExecutionProviderDispatch, RuntimeError> {
    let cache = config
        .tensorrt_cache
        .as_deref()
        .ok_or(RuntimeError::TensorRtCacheUnset)?;
    std::fs::create_dir_all(cache).map_err(|source| RuntimeError::TensorRtCache {
        path: cache.to_path_buf(),
        source,
    })?;
    let cache = cache.display().to_string();
    Ok(ep::TensorRT::default()
        .with_device_id(device_id)
        .with_engine_cache(true)
        .with_engine_cache_path(&cache)
        .with_engine_cache_prefix(tower)
        .with_timing_cache(true)
        .with_timing_cache_path(&cache)
        .build()
        .error_on_failure())
}

/// Candidate library locations, in search order.
fn candidates(explicit: Option<&Path>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(p) = explicit {
        out.push(p.to_path_buf());
        return out;
    }
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        out.push(PathBuf::from(p));
        return out;
    }
    // The project's own virtual environment, looked for from the working directory and from the
    // executable upwards (so `target/release/clip-worker` finds the checkout's `.venv`).
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        roots.extend(cwd.ancestors().map(Path::to_path_buf));
    }
    if let Ok(exe) = std::env::current_exe() {
        roots.extend(exe.ancestors().skip(1).map(Path::to_path_buf));
    }
    for root in roots {
        out.extend(venv_libraries(&root.join(".venv")));
    }
    for dir in [
        "/usr/local/lib",
        "/usr/lib",
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/opt/onnxruntime/lib",
    ] {
        out.push(Path::new(dir).join("libonnxruntime.so"));
    }
    out
}

/// `libonnxruntime.so*` inside a Python virtual environment's `onnxruntime` package.
fn venv_libraries(venv: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(venv.join("lib")) else {
        return found;
    };
    for entry in entries.flatten() {
        let capi = entry.path().join("site-packages/onnxruntime/capi");
        let Ok(libs) = std::fs::read_dir(&capi) else {
            continue;
        };
        let mut libs: Vec<PathBuf> = libs
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("libonnxruntime.so"))
            })
            .collect();
        libs.sort();
        found.extend(libs);
    }
    found
}

fn find_library(explicit: Option<&Path>) -> Result<PathBuf, RuntimeError> {
    let candidates = candidates(explicit);
    if let Some(found) = candidates.iter().find(|p| p.is_file()) {
        return Ok(found.clone());
    }
    Err(RuntimeError::LibraryNotFound {
        looked: candidates
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_parsing() {
        assert_eq!("auto".parse::<Device>(), Ok(Device::Auto));
        assert_eq!("cpu".parse::<Device>(), Ok(Device::Cpu));
        assert_eq!("cuda".parse::<Device>(), Ok(Device::Cuda(0)));
        assert_eq!("cuda:3".parse::<Device>(), Ok(Device::Cuda(3)));
        assert!("cuda:-1".parse::<Device>().is_err());
        assert!("gpu".parse::<Device>().is_err());
        assert_eq!(Device::Cuda(2).to_string(), "cuda:2");
    }

    #[test]
    fn device_lists_and_dtypes() {
        let list: DeviceList = "cuda:0,cuda:1".parse().unwrap();
        assert_eq!(list.devices(), &[Device::Cuda(0), Device::Cuda(1)]);
        assert_eq!(list.to_string(), "cuda:0,cuda:1");
        let list: DeviceList = "cpu, cpu".parse().unwrap();
        assert_eq!(list.devices(), &[Device::Cpu, Device::Cpu]);
        assert_eq!("auto".parse::<DeviceList>(), Ok(DeviceList::default()));
        assert!("auto,cpu".parse::<DeviceList>().is_err());
        assert!("cuda:0,".parse::<DeviceList>().is_err());
        assert!("cuda:0,gpu".parse::<DeviceList>().is_err());
        assert_eq!("fp16".parse::<Dtype>(), Ok(Dtype::Fp16));
        assert_eq!("fp32".parse::<Dtype>(), Ok(Dtype::Fp32));
        assert!("bf16".parse::<Dtype>().is_err());
        assert_eq!(Dtype::Fp16.to_string(), "fp16");
        assert_eq!("fixed".parse::<TextLength>(), Ok(TextLength::Fixed));
        assert_eq!("dynamic".parse::<TextLength>(), Ok(TextLength::default()));
        assert!("auto".parse::<TextLength>().is_err());
        assert_eq!(TextLength::Fixed.to_string(), "fixed");
    }

    #[test]
    fn explicit_missing_library_says_what_to_do() {
        let err = find_library(Some(Path::new("/nonexistent/libonnxruntime.so"))).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("bootstrap"), "{msg}");
        assert!(msg.contains("ORT_DYLIB_PATH"), "{msg}");
    }
}
