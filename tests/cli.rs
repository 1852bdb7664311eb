//! The command line end to end: encode and rank with the fixture model, JSON lines in and out.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{clip_worker, fixture_image, fixture_model_dir, floats, repo_root};
use serde_json::Value;
use std::process::Command;

fn lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect()
}

#[test]
fn encode_arguments_and_json_lines_with_per_document_errors() {
    let dir = tempfile::tempdir().unwrap();
    let model = fixture_model_dir();
    let png = fixture_image("png_rgb.png");
    let input = dir.path().join("docs.jsonl");
    let blob = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        std::fs::read(&png).unwrap(),
    );
    std::fs::write(
        &input,
        format!(
            "{{\"id\":\"u\",\"uri\":\"{}\"}}\n{{\"id\":\"b\",\"blob\":\"{blob}\"}}\n{{\"id\":\"x\",\"blob\":\"@@@\"}}\n{{\"id\":\"e\"}}\n",
            png.display()
        ),
    )
    .unwrap();
    let out = dir.path().join("out.jsonl");
    let (code, _, err) = clip_worker(&[
        "encode",
        "--model-dir",
        model.to_str().unwrap(),
        "a photo of a cat",
        png.to_str().unwrap(),
        "/no/such/file.jpg",
        "--input",
        input.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let got = lines(&std::fs::read_to_string(&out).unwrap());
    let ids: Vec<&str> = got.iter().map(|l| l["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["0", "1", "2", "u", "b", "x", "e"]);
    assert_eq!(got[0]["modality"], "text");
    assert_eq!(got[1]["modality"], "image");
    let dim = got[0]["embedding"].as_array().unwrap().len();
    assert_eq!(dim, 32);
    assert_eq!(got[2]["error"]["code"], "not_found");
    // The same image by path, by uri and by blob gives the same embedding.
    assert_eq!(got[1]["embedding"], got[3]["embedding"]);
    assert_eq!(got[1]["embedding"], got[4]["embedding"]);
    assert_eq!(got[5]["error"]["code"], "invalid_document");
    assert_eq!(got[6]["error"]["code"], "empty_document");
}

#[test]
fn rank_query_against_candidates() {
    let model = fixture_model_dir();
    let png = fixture_image("png_rgb.png");
    let (code, stdout, err) = clip_worker(&[
        "rank",
        "--model-dir",
        model.to_str().unwrap(),
        "--query",
        png.to_str().unwrap(),
        "hello, world!",
        "goodbye, world!",
        "good!",
    ]);
    assert_eq!(code, 0, "{err}");
    let got = lines(&stdout);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["modality"], "image");
    let matches = got[0]["matches"].as_array().unwrap();
    let scores: Vec<f64> = matches
        .iter()
        .map(|m| m["scores"]["clip_score"].as_f64().unwrap())
        .collect();
    assert_eq!(scores.len(), 3);
    assert!(scores.windows(2).all(|w| w[0] >= w[1]));
    assert!((scores.iter().sum::<f64>() - 1.0).abs() < 1e-9);
    // Same order as the Python reference for this image and these texts (rank.json, image_to_texts).
    let order: Vec<&str> = matches.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(order, ["0", "2", "1"]);
}

#[test]
fn cuda_without_a_cuda_runtime_fails_loudly_and_bad_models_are_explained() {
    let model = fixture_model_dir();
    let (code, _, err) = clip_worker(&[
        "encode",
        "--device",
        "cuda",
        "--model-dir",
        model.to_str().unwrap(),
        "hi",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("CUDA was requested"), "{err}");

    let (code, _, err) = clip_worker(&["encode", "--model", "ViT-B-32::laion2b_s34b_b79k", "hi"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("unknown model") && err.contains("`ViT-B-32::laion2b-s34b-b79k`"),
        "{err}"
    );

    let empty = tempfile::tempdir().unwrap();
    let (code, _, err) = clip_worker(&[
        "encode",
        "--model-dir",
        empty.path().to_str().unwrap(),
        "hi",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("textual.onnx"), "{err}");

    let (code, _, err) = clip_worker(&[
        "encode",
        "--ort-lib",
        "/nonexistent/libonnxruntime.so",
        "--model-dir",
        model.to_str().unwrap(),
        "hi",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("ONNX Runtime library not found"), "{err}");
}

#[test]
fn rank_json_lines_with_matches() {
    let dir = tempfile::tempdir().unwrap();
    let model = fixture_model_dir();
    let png = fixture_image("png_rgb.png");
    let input = dir.path().join("rank.jsonl");
    std::fs::write(
        &input,
        format!(
            concat!(
                "{{\"id\":\"img\",\"uri\":\"{png}\",\"matches\":[{{\"id\":\"h\",\"text\":\"hello, world!\"}},",
                "{{\"id\":\"g\",\"text\":\"good!\"}},{{\"id\":\"broken\",\"blob\":\"@@\"}}]}}\n",
                "{{\"id\":\"alone\",\"text\":\"no matches\"}}\n"
            ),
            png = png.display()
        ),
    )
    .unwrap();
    let (code, stdout, err) = clip_worker(&[
        "rank",
        "--model-dir",
        model.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let got = lines(&stdout);
    assert_eq!(got.len(), 2);
    let ids: Vec<&str> = got[0]["matches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["h", "g", "broken"],
        "scored matches best first, then the failed one"
    );
    assert_eq!(got[0]["matches"][2]["error"]["code"], "invalid_document");
    assert_eq!(
        got[1]["error"]["code"], "invalid_document",
        "a root without matches"
    );
}

#[test]
fn nats_flags_that_only_work_together_are_refused_alone() {
    for (args, needs) in [
        (&["--nats-user", "bob"][..], "--nats-password"),
        (&["--nats-password", "secret"], "--nats-user"),
        (&["--nats-tls-cert", "client.pem"], "--nats-tls-key"),
        (&["--nats-tls-key", "client.key"], "--nats-tls-cert"),
    ] {
        for command in [&["submit", "encode", "hi"][..], &["serve"]] {
            let (code, _, err) = clip_worker(&[command, args].concat());
            assert_eq!(code, 2, "{command:?} {args:?} was accepted: {err}");
            assert!(err.contains(needs), "{command:?} {args:?}: {err}");
        }
    }
    // One way to authenticate at a time.
    let (code, _, err) = clip_worker(&[
        "submit",
        "encode",
        "hi",
        "--nats-token",
        "t",
        "--nats-creds",
        "user.creds",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cannot be used with"), "{err}");
    // Environment twins count as given.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_clip-worker"))
        .args(["submit", "encode", "hi"])
        .env("CLIP_WORKER_NATS_USER", "bob")
        .output()
        .expect("run clip-worker");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--nats-password"));
}

/// `--allow-local-root` must name an existing folder: `serve` says so at start-up instead of
/// refusing every local path later.
#[test]
fn serve_refuses_a_missing_local_root_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let model = fixture_model_dir();
    let (code, _, err) = clip_worker(&[
        "serve",
        "--model-dir",
        model.to_str().unwrap(),
        "--metrics-addr",
        "off",
        "--nats-url",
        "nats://127.0.0.1:1",
        "--allow-local-root",
        missing.to_str().unwrap(),
    ]);
    assert_ne!(code, 0);
    assert!(
        err.contains("local root") && err.contains("missing"),
        "{err}"
    );
}

/// `--image-mode` / `CLIP_WORKER_IMAGE_MODE`: exact unless fast is asked for.
#[test]
fn image_mode_is_exact_by_default_and_fast_on_request() {
    let dir = tempfile::tempdir().unwrap();
    // 640x480: fast mode decodes it at half size (240 rows >= 224).
    let jpeg = dir.path().join("photo.jpg");
    let img = image::RgbImage::from_fn(640, 480, |x, y| {
        let t = (x * 7 + y * 13) % 31;
        image::Rgb([
            (x / 3) as u8,
            (y / 2) as u8,
            ((x + y) % 200) as u8 + t as u8,
        ])
    });
    let mut bytes = Vec::new();
    img.write_with_encoder(image::codecs::jpeg::JpegEncoder::new_with_quality(
        &mut bytes, 90,
    ))
    .unwrap();
    std::fs::write(&jpeg, bytes).unwrap();
    let model = fixture_model_dir();
    let embed = |extra: &[&str], env: Option<&str>| -> Vec<f32> {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_clip-worker"));
        cmd.args(["encode", "--model-dir", model.to_str().unwrap()])
            .arg(&jpeg)
            .args(extra)
            .current_dir(repo_root())
            .env_remove("CLIP_WORKER_IMAGE_MODE");
        if let Some(mode) = env {
            cmd.env("CLIP_WORKER_IMAGE_MODE", mode);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        floats(&lines(&String::from_utf8_lossy(&out.stdout))[0]["embedding"])
    };
    let default = embed(&[], None);
    let exact = embed(&["--image-mode", "exact"], None);
    let fast = embed(&["--image-mode", "fast"], None);
    assert_eq!(default, exact);
    assert_eq!(fast, embed(&[], Some("fast")));
    assert_ne!(
        fast, exact,
        "fast mode must decode this JPEG at a reduced scale"
    );
    let dot: f32 = fast.iter().zip(&exact).map(|(a, b)| a * b).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!(dot / (norm(&fast) * norm(&exact)) > 0.99);

    let (code, _, err) = clip_worker(&["encode", "--image-mode", "turbo", "a cat"]);
    assert_ne!(code, 0);
    assert!(err.contains("exact or fast"), "{err}");
}
