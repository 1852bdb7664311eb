//! Precision and devices without a GPU: float16 graphs fed and read as they declare, `--dtype`
//! checked against the graphs, several session sets (`--device cpu,cpu`) sharing minibatches,
//! and CUDA / TensorRT requests that cannot be met failing loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use clip_worker::engine::{DeviceList, Dtype, Engine, EngineError, EngineOptions, SessionConfig};
use clip_worker::preprocess::input::Document;
use common::client::cosine;
use common::{
    clip_worker, fixture_image, fixture_model_dir, floats, json_file, mclip_fp16_model_dir,
    mclip_model_dir, repo_root, MCLIP_MODEL,
};
use serde_json::Value;
use std::process::Command;

fn options(dir: std::path::PathBuf, model: &str, devices: &str, dtype: Dtype) -> EngineOptions {
    let mut o = EngineOptions::new(model, dir);
    o.session = SessionConfig {
        devices: devices.parse::<DeviceList>().unwrap(),
        intra_threads: 1,
        dtype,
        ..SessionConfig::default()
    };
    o
}

fn mclip_reference() -> Value {
    json_file("tests/fixtures/reference/mclip.json")
}

#[test]
fn float16_graphs_match_the_python_float16_run() {
    let engine = Engine::load(&options(
        mclip_fp16_model_dir(),
        MCLIP_MODEL,
        "cpu",
        Dtype::Fp16,
    ))
    .expect("load the float16 folder");
    let refs = mclip_reference();
    let texts = refs["text"].as_array().unwrap();
    let images = refs["image"].as_array().unwrap();
    let mut docs: Vec<Document> = texts
        .iter()
        .map(|e| Document::text(e["text"].as_str().unwrap()))
        .collect();
    docs.extend(
        images
            .iter()
            .map(|e| Document::uri(fixture_image(e["file"].as_str().unwrap()).to_str().unwrap())),
    );
    let (mut worst_same, mut worst_vs_fp32) = (1f64, 1f64);
    for (e, got) in texts.iter().chain(images).zip(engine.encode(&docs)) {
        let got = got.unwrap().embedding;
        // Same graph, same float16 inputs: equal to the Python float16 run.
        let same = cosine(&got, &floats(&e["embedding_fp16"]));
        // The cost of float16 against the float32 graph.
        let vs_fp32 = cosine(&got, &floats(&e["embedding"]));
        worst_same = worst_same.min(same);
        worst_vs_fp32 = worst_vs_fp32.min(vs_fp32);
        assert!(same >= 0.9999, "{e}: float16 vs Python float16 {same}");
        assert!(vs_fp32 >= 0.99, "{e}: float16 vs float32 {vs_fp32}");
    }
    eprintln!(
        "float16: worst cosine vs Python float16 {worst_same:.6}, vs float32 {worst_vs_fp32:.6}"
    );
    // fp16 outputs are widened exactly: every value is representable in float16.
    let first = engine.encode(&docs[..1]).remove(0).unwrap().embedding;
    assert!(first.iter().all(|v| half::f16::from_f32(*v).to_f32() == *v));
}

#[test]
fn dtype_must_match_what_the_graphs_declare() {
    let err = Engine::load(&options(
        mclip_fp16_model_dir(),
        MCLIP_MODEL,
        "cpu",
        Dtype::Fp32,
    ))
    .err()
    .expect("fp16 graphs served as fp32");
    let msg = err.to_string();
    assert!(matches!(err, EngineError::Runtime(_)), "{msg}");
    assert!(
        msg.contains("fp16") && msg.contains("--dtype fp16"),
        "{msg}"
    );

    let (code, _, err) = clip_worker(&[
        "encode",
        "--device",
        "cpu",
        "--dtype",
        "fp16",
        "--model-dir",
        fixture_model_dir().to_str().unwrap(),
        "hi",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("convert_fp16.py"), "{err}");

    let (code, stdout, err) = clip_worker(&[
        "encode",
        "--model",
        MCLIP_MODEL,
        "--device",
        "cpu",
        "--model-dir",
        mclip_fp16_model_dir().to_str().unwrap(),
        "hola mundo",
    ]);
    assert_ne!(code, 0, "{stdout}");
    assert!(err.contains("--dtype fp16"), "{err}");

    // The environment twin selects fp16 as the flag does.
    let out = Command::new(env!("CARGO_BIN_EXE_clip-worker"))
        .args([
            "encode",
            "--model",
            MCLIP_MODEL,
            "--device",
            "cpu",
            "hola mundo",
        ])
        .arg("--model-dir")
        .arg(mclip_fp16_model_dir())
        .env("CLIP_WORKER_DTYPE", "fp16")
        .current_dir(repo_root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn two_session_sets_share_the_minibatches_and_agree_with_one() {
    let load = |devices: &str| {
        let mut o = options(
            fixture_model_dir(),
            "ViT-B-32::openai",
            devices,
            Dtype::Fp32,
        );
        o.minibatch_size = 4;
        Engine::load(&o).unwrap()
    };
    let (one, two) = (load("cpu"), load("cpu,cpu"));
    assert_eq!(two.model.replicas(), 2);
    let docs: Vec<Document> = (0..40)
        .map(|i| Document::text(format!("document number {i}")))
        .chain((0..8).map(|_| Document::uri(fixture_image("png_rgb.png").to_str().unwrap())))
        .collect();
    let a = one.encode(&docs);
    let b = two.encode(&docs);
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.as_ref().unwrap().embedding, y.as_ref().unwrap().embedding);
    }
    // 12 minibatches (10 text, 2 image), spread over both session sets.
    let dispatched = two.model.dispatched();
    assert_eq!(dispatched.iter().sum::<u64>(), 12, "{dispatched:?}");
    assert!(dispatched.iter().all(|n| *n >= 1), "{dispatched:?}");
}

#[test]
fn the_command_line_runs_on_two_session_sets() {
    let (code, stdout, err) = clip_worker(&[
        "encode",
        "--device",
        "cpu,cpu",
        "--minibatch-size",
        "1",
        "--model-dir",
        fixture_model_dir().to_str().unwrap(),
        "a photo of a cat",
        "a photo of a dog",
        fixture_image("png_rgb.png").to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(stdout.lines().count(), 3);
    let (code, _, _) = clip_worker(&[
        "encode",
        "--device",
        "cpu",
        "--model-dir",
        fixture_model_dir().to_str().unwrap(),
        "a photo of a cat",
    ]);
    assert_eq!(code, 0);
}

#[test]
fn unmet_gpu_requests_fail_clearly_instead_of_running_on_cpu() {
    let model = fixture_model_dir();
    let model = model.to_str().unwrap();
    for device in ["cuda:1", "cpu,cuda:1"] {
        let (code, stdout, err) =
            clip_worker(&["encode", "--device", device, "--model-dir", model, "hi"]);
        assert_ne!(code, 0, "{device}: {stdout}");
        assert!(
            err.contains("CUDA was requested (cuda:1)"),
            "{device}: {err}"
        );
        assert!(stdout.is_empty(), "{device}: nothing is encoded");
    }
    let (code, _, err) = clip_worker(&[
        "encode",
        "--device",
        "cpu",
        "--tensorrt",
        "--model-dir",
        model,
        "hi",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("TensorRT") && err.contains("cuda:N"), "{err}");
    let (code, _, err) = clip_worker(&["encode", "--device", "auto,cpu", "hi"]);
    assert_ne!(code, 0);
    assert!(err.contains("stands alone"), "{err}");
}

#[test]
fn the_m_clip_folder_loads_on_two_session_sets() {
    let engine = Engine::load(&options(
        mclip_model_dir(),
        MCLIP_MODEL,
        "cpu,cpu",
        Dtype::Fp32,
    ))
    .unwrap();
    let refs = mclip_reference();
    let e = &refs["text"][0];
    let got = engine.encode(&[Document::text(e["text"].as_str().unwrap())]);
    let c = cosine(
        &got[0].as_ref().unwrap().embedding,
        &floats(&e["embedding"]),
    );
    assert!(c >= 0.99999, "{c}");
}
