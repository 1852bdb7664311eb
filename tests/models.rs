//! Fetching models by name: `clip-worker models ...` and the start-up download of `encode`,
//! against a local HTTP server that serves the fixture model under the bucket's layout and
//! injects faults. A manifest gives the fixture files' md5 sums in place of the real ones.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use clip_worker::model::cache::md5_file;
use common::http::{Fault, FileServer};
use common::{fixture_image, fixture_model_dir, repo_root};
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const MODEL: &str = "ViT-B-32::openai";
const FOLDER: &str = "ViT-B-32-openai";
const TEXTUAL: &str = "ViT-B-32/textual.onnx";
const VISUAL: &str = "ViT-B-32/visual.onnx";

/// A cache folder, a manifest and a server holding the fixture model.
struct Setup {
    dir: tempfile::TempDir,
    server: FileServer,
}

impl Setup {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let server = FileServer::start();
        let fixture = fixture_model_dir();
        server.put(
            TEXTUAL,
            std::fs::read(fixture.join("textual.onnx")).unwrap(),
        );
        server.put(VISUAL, std::fs::read(fixture.join("visual.onnx")).unwrap());
        let s = Setup { dir, server };
        s.write_manifest(&[
            (TEXTUAL, md5_file(&fixture.join("textual.onnx")).unwrap()),
            (VISUAL, md5_file(&fixture.join("visual.onnx")).unwrap()),
        ]);
        s
    }

    fn write_manifest(&self, files: &[(&str, String)]) {
        let files: Vec<Value> = files
            .iter()
            .map(|(p, m)| serde_json::json!({"path": p, "md5": m}))
            .collect();
        let manifest = serde_json::json!({"models": [{"name": MODEL, "files": files}]});
        std::fs::write(self.manifest(), manifest.to_string()).unwrap();
    }

    fn cache(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    fn folder(&self) -> PathBuf {
        self.cache().join(FOLDER)
    }

    fn manifest(&self) -> PathBuf {
        self.dir.path().join("manifest.json")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_clip-worker"));
        cmd.args(args)
            .arg("--model-cache")
            .arg(self.cache())
            .arg("--model-url-base")
            .arg(&self.server.base)
            .arg("--model-manifest")
            .arg(self.manifest())
            .env("CLIP_WORKER_LOG", "clip_worker=info")
            .current_dir(repo_root());
        cmd
    }

    fn run(&self, args: &[&str]) -> (i32, String, String) {
        outcome(self.command(args).output().unwrap())
    }
}

fn outcome(out: Output) -> (i32, String, String) {
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn same_file(a: &Path, b: &Path) -> bool {
    std::fs::read(a).unwrap() == std::fs::read(b).unwrap()
}

fn list_json(s: &Setup) -> Vec<Value> {
    let (code, out, err) = s.run(&["models", "list", "--json"]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str::<Value>(&out)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// What `models list --json` says about the test model.
fn is_cached(s: &Setup) -> bool {
    let rows = list_json(s);
    let row = rows.iter().find(|r| r["name"] == MODEL).unwrap();
    row["cached"] == true
}

#[test]
fn download_list_path_and_verify() {
    let s = Setup::new();
    let listed = list_json(&s);
    assert_eq!(listed.len(), 38);
    let row = listed.iter().find(|r| r["name"] == MODEL).unwrap();
    assert_eq!(row["cached"], false);
    assert_eq!(row["dim"], 512);
    assert_eq!(row["image_size"], 224);
    assert_eq!(row["tokenizer"], "clip-bpe");
    let mclip = listed
        .iter()
        .find(|r| r["name"] == "M-CLIP/XLM-Roberta-Large-Vit-B-16Plus")
        .unwrap();
    assert_eq!(
        (&mclip["dim"], &mclip["image_size"], &mclip["tokenizer"]),
        (
            &Value::from(640),
            &Value::from(240),
            &Value::from("hugging-face")
        )
    );

    let (code, out, err) = s.run(&["models", "download", MODEL]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&s.folder().display().to_string()), "{out}");
    let fixture = fixture_model_dir();
    assert!(same_file(
        &s.folder().join("textual.onnx"),
        &fixture.join("textual.onnx")
    ));
    assert!(same_file(
        &s.folder().join("visual.onnx"),
        &fixture.join("visual.onnx")
    ));
    assert_eq!(s.server.requests().len(), 2, "{:?}", s.server.requests());
    assert!(
        err.contains("downloaded ViT-B-32::openai visual.onnx"),
        "{err}"
    );

    let row = list_json(&s)
        .into_iter()
        .find(|r| r["name"] == MODEL)
        .unwrap();
    assert_eq!(row["cached"], true);
    assert_eq!(row["path"], s.folder().display().to_string());
    // `models` alone is `models list`: a header and one line per model.
    let (code, out, _) = s.run(&["models"]);
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 39);
    assert!(out
        .lines()
        .any(|l| l.starts_with(MODEL) && l.contains("\tyes\t")));
    let (code, out, _) = s.run(&["models", "path", "ViT-L/14@336px"]);
    assert_eq!(code, 0);
    assert_eq!(
        out.trim(),
        s.cache().join("ViT-L-14@336px").display().to_string()
    );

    // A second download is a no-op; verify recomputes the md5 sums.
    let (code, _, err) = s.run(&["models", "download", MODEL]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(s.server.requests().len(), 2);
    let (code, out, err) = s.run(&["models", "verify"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(out.lines().all(|l| l.ends_with("\tok")), "{out}");

    // A damaged file fails verification, uncaches the model, and is fetched again.
    std::fs::write(s.folder().join("visual.onnx"), b"damaged").unwrap();
    let (code, out, err) = s.run(&["models", "verify", MODEL]);
    assert_ne!(code, 0);
    assert!(
        out.contains("visual.onnx\tmd5 mismatch: expected "),
        "{out}"
    );
    assert!(err.contains("verification failed"), "{err}");
    assert!(!is_cached(&s));
    let (code, _, err) = s.run(&["models", "download", MODEL]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(s.server.requests_for(VISUAL).len(), 2);
    assert_eq!(s.server.requests_for(TEXTUAL).len(), 1);
    assert!(same_file(
        &s.folder().join("visual.onnx"),
        &fixture.join("visual.onnx")
    ));
}

#[test]
fn unknown_names_suggest_the_closest() {
    let s = Setup::new();
    let (code, _, err) = s.run(&["models", "download", "ViT-B-32::laion2b_s34b_b79k"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("unknown model") && err.contains("`ViT-B-32::laion2b-s34b-b79k`"),
        "{err}"
    );
    let (code, _, err) = s.run(&["models", "path", "vit-b/32"]);
    assert_ne!(code, 0);
    assert!(err.contains("`ViT-B/32`"), "{err}");
    assert!(s.server.requests().is_empty());
}

#[test]
fn md5_mismatch_is_retried_then_reported() {
    let s = Setup::new();
    s.server.fault(VISUAL, Fault::Corrupt);
    let (code, _, err) = s.run(&["models", "download", MODEL]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(s.server.requests_for(VISUAL).len(), 2);
    assert!(err.contains("md5 mismatch"), "the retry is logged: {err}");

    // Files that never match: a clear error, and nothing left that passes for a model.
    let other = tempfile::tempdir().unwrap();
    let s = Setup {
        dir: other,
        server: s.server,
    };
    let wrong = "0123456789abcdef0123456789abcdef";
    let right = md5_file(&fixture_model_dir().join("textual.onnx")).unwrap();
    s.write_manifest(&[(TEXTUAL, right), (VISUAL, wrong.into())]);
    let before = s.server.requests_for(VISUAL).len();
    let (code, _, err) = s.run(&["models", "download", "--download-attempts", "2", MODEL]);
    assert_ne!(code, 0);
    assert_eq!(s.server.requests_for(VISUAL).len(), before + 2);
    let url = format!("{}{VISUAL}", s.server.base);
    assert!(err.contains(&url), "names the URL: {err}");
    assert!(
        err.contains("visual.onnx") && err.contains(&format!("expected {wrong}, got ")),
        "{err}"
    );
    assert!(err.contains("after 2 attempts"), "{err}");
    assert!(!s.folder().join("visual.onnx").exists());
    assert!(!s.folder().join("visual.onnx.part").exists());
    assert!(!is_cached(&s));
}

#[test]
fn partial_files_resume_and_transient_failures_are_retried() {
    let s = Setup::new();
    let visual = std::fs::read(fixture_model_dir().join("visual.onnx")).unwrap();
    let textual = std::fs::read(fixture_model_dir().join("textual.onnx")).unwrap();
    std::fs::create_dir_all(s.folder()).unwrap();
    // A partial file left by an interrupted download.
    std::fs::write(s.folder().join("textual.onnx.part"), &textual[..1000]).unwrap();
    // A server error, then a connection dropped mid-body.
    s.server.fault(VISUAL, Fault::Status(503));
    s.server.fault(VISUAL, Fault::DropAfter(200_000));
    let (code, _, err) = s.run(&["models", "download", MODEL]);
    assert_eq!(code, 0, "{err}");
    let t = s.server.requests_for(TEXTUAL);
    assert_eq!(t.len(), 1);
    assert_eq!((t[0].range_start, t[0].status), (Some(1000), 206));
    let v = s.server.requests_for(VISUAL);
    let got: Vec<_> = v.iter().map(|r| (r.range_start, r.status)).collect();
    assert_eq!(got, [(None, 503), (None, 200), (Some(200_000), 206)]);
    assert!(err.contains("HTTP 503"), "{err}");
    assert_eq!(
        std::fs::read(s.folder().join("visual.onnx")).unwrap(),
        visual
    );
    assert_eq!(
        std::fs::read(s.folder().join("textual.onnx")).unwrap(),
        textual
    );
    assert!(!s.folder().join("visual.onnx.part").exists());

    // Not found is not retried, and says which URL failed.
    let s = Setup::new();
    s.write_manifest(&[(
        "missing/textual.onnx",
        "0123456789abcdef0123456789abcdef".into(),
    )]);
    let (code, _, err) = s.run(&["models", "download", MODEL]);
    assert_ne!(code, 0);
    let url = format!("{}missing/textual.onnx", s.server.base);
    assert!(err.contains(&format!("GET {url}: HTTP 404")), "{err}");
    assert_eq!(s.server.requests().len(), 1);
}

#[test]
fn the_cache_follows_xdg_then_home() {
    let dir = tempfile::tempdir().unwrap();
    let path = |envs: &[(&str, &Path)]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_clip-worker"));
        cmd.args(["models", "path", "ViT-B/32"])
            .env_remove("CLIP_WORKER_MODEL_CACHE")
            .env_remove("XDG_CACHE_HOME");
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let (code, out, err) = outcome(cmd.output().unwrap());
        assert_eq!(code, 0, "{err}");
        PathBuf::from(out.trim())
    };
    let home = dir.path().join("home");
    let xdg = dir.path().join("xdg");
    assert_eq!(path(&[("HOME", &home)]), home.join(".cache/clip/ViT-B-32"));
    assert_eq!(
        path(&[("HOME", &home), ("XDG_CACHE_HOME", &xdg)]),
        xdg.join("clip/ViT-B-32")
    );
    assert_eq!(
        path(&[("XDG_CACHE_HOME", &xdg), ("CLIP_WORKER_MODEL_CACHE", &home)]),
        home.join("ViT-B-32")
    );
}

fn zip_bytes(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, data) in entries {
        w.start_file(*name, zip::write::SimpleFileOptions::default())
            .unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

#[test]
fn zip_archives_are_extracted_and_the_model_loads() {
    let s = Setup::new();
    let fixture = fixture_model_dir();
    let visual = std::fs::read(fixture.join("visual.onnx")).unwrap();
    let weights = vec![42u8; 70_000];
    let archive = zip_bytes(&[("visual.onnx", &visual), ("visual.onnx.data", &weights)]);
    s.server.put("ViT-B-32/visual.zip", archive.clone());
    let zip_path = s.dir.path().join("visual.zip");
    std::fs::write(&zip_path, &archive).unwrap();
    s.write_manifest(&[
        (TEXTUAL, md5_file(&fixture.join("textual.onnx")).unwrap()),
        ("ViT-B-32/visual.zip", md5_file(&zip_path).unwrap()),
    ]);
    // `encode` fetches the missing model at start-up, then encodes with the extracted graph.
    let png = fixture_image("png_rgb.png");
    let (code, out, err) = s.run(&["encode", png.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 1, "{out}");
    let line: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(line["embedding"].as_array().unwrap().len(), 32);
    assert_eq!(
        std::fs::read(s.folder().join("visual.onnx")).unwrap(),
        visual
    );
    assert_eq!(
        std::fs::read(s.folder().join("visual.onnx.data")).unwrap(),
        weights
    );
    assert!(
        s.folder().join("visual.zip").is_file(),
        "the archive is kept, as the original's cache"
    );
    let (code, out, _) = s.run(&["models", "verify", MODEL]);
    assert_eq!(code, 0, "{out}");

    // An archive whose entry escapes the folder is refused and leaves no model behind.
    let s = Setup::new();
    let evil = zip_bytes(&[("visual.onnx", b"g"), ("../../escaped", b"x")]);
    s.server.put("ViT-B-32/visual.zip", evil.clone());
    std::fs::write(&zip_path, &evil).unwrap();
    s.write_manifest(&[
        (TEXTUAL, md5_file(&fixture.join("textual.onnx")).unwrap()),
        ("ViT-B-32/visual.zip", md5_file(&zip_path).unwrap()),
    ]);
    let (code, _, err) = s.run(&["models", "download", MODEL]);
    assert_ne!(code, 0);
    assert!(err.contains("outside the model folder"), "{err}");
    assert!(!s.dir.path().join("escaped").exists());
    assert!(!s.cache().join("escaped").exists());
    assert!(!s.folder().join("visual.onnx").exists());
    assert!(!is_cached(&s));
}

#[test]
fn two_processes_download_the_same_model_once() {
    let s = Setup::new();
    // Slow bodies, so the second process starts while the first is still downloading.
    s.server.throttle(Duration::from_millis(10));
    let spawn = || {
        s.command(&["models", "download", MODEL])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (
        outcome(a.wait_with_output().unwrap()),
        outcome(b.wait_with_output().unwrap()),
    );
    assert_eq!(a.0, 0, "{}", a.2);
    assert_eq!(b.0, 0, "{}", b.2);
    assert_eq!(
        s.server.requests_for(TEXTUAL).len(),
        1,
        "{:?}",
        s.server.requests()
    );
    assert_eq!(
        s.server.requests_for(VISUAL).len(),
        1,
        "{:?}",
        s.server.requests()
    );
    let waited = format!("{}{}", a.2, b.2);
    assert!(
        waited.contains("waiting for it"),
        "one process waited: {waited}"
    );
    let (code, _, err) = s.run(&["models", "verify", MODEL]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn offline_uses_the_cache_and_never_downloads() {
    let s = Setup::new();
    let (code, _, err) = s.run(&["encode", "--offline", "hello"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("--offline") && err.contains("models download"),
        "{err}"
    );
    assert!(s.server.requests().is_empty());

    let (code, _, err) = s.run(&["models", "download", MODEL]);
    assert_eq!(code, 0, "{err}");
    let served = s.server.requests().len();
    let (code, out, err) = s.run(&["encode", "--offline", "--model", MODEL, "hello"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 1);
    let (code, _, err) = s.run(&["rank", "--offline", "--query", "hello", "a", "b"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(s.server.requests().len(), served);

    // A copied cache without this program's marker (e.g. the original's) is verified offline.
    std::fs::remove_file(s.folder().join(".clip-worker-complete.json")).unwrap();
    let (code, _, err) = s.run(&["encode", "--offline", "hello"]);
    assert_eq!(code, 0, "{err}");
    std::fs::remove_file(s.folder().join(".clip-worker-complete.json")).unwrap();
    std::fs::write(s.folder().join("textual.onnx"), b"damaged").unwrap();
    let (code, _, err) = s.run(&["encode", "--offline", "hello"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("textual.onnx") && err.contains("--offline"),
        "{err}"
    );
    assert_eq!(s.server.requests().len(), served);
}
