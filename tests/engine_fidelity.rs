//! End-to-end fidelity against references computed in Python the way CLIP-as-service runs the same
//! graphs (tests/fixtures/reference, made by scripts/make_fixtures.py): embeddings for texts,
//! images in many formats and pixel tensors, and rank scores and order.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use base64::Engine as _;
use clip_worker::engine::{Engine, EngineOptions, SessionConfig};
use clip_worker::error::ErrorCode;
use clip_worker::preprocess::input::{Document, PixelTensor};
use common::client::cosine;
use common::{fixture_image, fixture_model_dir, floats, json_file as json};
use serde_json::Value;

fn engine() -> Engine {
    let mut o = EngineOptions::new("ViT-B-32::openai", fixture_model_dir());
    o.session = SessionConfig {
        intra_threads: 1,
        ..SessionConfig::default()
    };
    Engine::load(&o).expect("load the fixture model")
}

fn image_doc(file: &str) -> Document {
    Document::uri(fixture_image(file).to_str().unwrap())
}

#[test]
fn text_embeddings_match_the_reference() {
    let engine = engine();
    let refs = json("tests/fixtures/reference/embeddings.json");
    let entries = refs["text"].as_array().unwrap();
    let docs: Vec<Document> = entries
        .iter()
        .map(|e| Document::text(e["text"].as_str().unwrap()))
        .collect();
    let out = engine.encode(&docs);
    let mut worst = 1.0f64;
    for (e, r) in entries.iter().zip(&out) {
        let got = r
            .as_ref()
            .unwrap_or_else(|err| panic!("{:?}: {err}", e["text"]));
        assert_eq!(got.embedding.len(), refs["dim"].as_u64().unwrap() as usize);
        let c = cosine(&got.embedding, &floats(&e["embedding"]));
        worst = worst.min(c);
        assert!(c >= 0.99999, "text {:?}: cosine {c}", e["text"]);
    }
    eprintln!(
        "text embeddings: {} texts, worst cosine {worst:.9}",
        entries.len()
    );
}

#[test]
fn image_embeddings_match_the_reference() {
    let engine = engine();
    let refs = json("tests/fixtures/reference/embeddings.json");
    let entries = refs["image"].as_array().unwrap();
    let docs: Vec<Document> = entries
        .iter()
        .map(|e| image_doc(e["file"].as_str().unwrap()))
        .collect();
    let out = engine.encode(&docs);
    let (mut worst, mut compared) = (1.0f64, 0);
    for (e, r) in entries.iter().zip(&out) {
        let file = e["file"].as_str().unwrap();
        if e["expect"] == "unsupported" {
            let err = r.as_ref().expect_err(file);
            assert_eq!(err.code, ErrorCode::UnsupportedImage, "{file}");
            continue;
        }
        let got = r.as_ref().unwrap_or_else(|err| panic!("{file}: {err}"));
        let c = cosine(&got.embedding, &floats(&e["embedding"]));
        eprintln!("  {file:<32} cosine {c:.9}");
        worst = worst.min(c);
        compared += 1;
        assert!(c >= 0.9999, "{file}: cosine {c}");
    }
    eprintln!("image embeddings: {compared} images, worst cosine {worst:.9}");
}

#[test]
fn tensor_embeddings_match_the_reference() {
    let engine = engine();
    let refs = json("tests/fixtures/reference/embeddings.json");
    let images = json("tests/fixtures/images/reference.json");
    for e in refs["tensor"].as_array().unwrap() {
        let name = e["name"].as_str().unwrap();
        let case = images["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .expect(name);
        let data = base64::engine::general_purpose::STANDARD
            .decode(case["data_b64"].as_str().unwrap())
            .unwrap();
        let shape = case["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        let doc = Document {
            tensor: Some(PixelTensor { shape, data }),
            ..Default::default()
        };
        let got = engine
            .encode(&[doc])
            .remove(0)
            .unwrap_or_else(|err| panic!("{name}: {err}"));
        let c = cosine(&got.embedding, &floats(&e["embedding"]));
        assert!(c >= 0.9999, "{name}: cosine {c}");
    }
}

fn doc_of(spec: &Value) -> Document {
    match (spec.get("text"), spec.get("image")) {
        (Some(t), _) => Document::text(t.as_str().unwrap()),
        (_, Some(i)) => image_doc(i.as_str().unwrap()),
        _ => panic!("bad rank spec {spec}"),
    }
}

#[test]
fn rank_scores_and_order_match_the_reference() {
    let engine = engine();
    let refs = json("tests/fixtures/reference/rank.json");
    let mut worst = 0f64;
    for case in refs["cases"].as_array().unwrap() {
        for (qi, q) in case["queries"].as_array().unwrap().iter().enumerate() {
            let label = format!("{} #{qi}", case["name"].as_str().unwrap());
            let matches: Vec<Document> = q["matches"]
                .as_array()
                .unwrap()
                .iter()
                .map(doc_of)
                .collect();
            let ranked = engine
                .rank(&doc_of(&q["root"]), &matches)
                .unwrap_or_else(|e| panic!("{label}: {e}"));
            assert!(ranked.failed.is_empty(), "{label}: {:?}", ranked.failed);
            let order: Vec<usize> = ranked.matches.iter().map(|m| m.index).collect();
            let expected: Vec<usize> = q["expected_order"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as usize)
                .collect();
            assert_eq!(order, expected, "{label}: order");
            let scores = floats(&q["clip_score"]);
            let cosines = floats(&q["clip_score_cosine"]);
            for m in &ranked.matches {
                let ds = (m.clip_score - f64::from(scores[m.index])).abs();
                let dc = (m.clip_score_cosine - f64::from(cosines[m.index])).abs();
                worst = worst.max(ds).max(dc);
                assert!(
                    ds <= 1e-5,
                    "{label}: match {} clip_score {} vs {}",
                    m.index,
                    m.clip_score,
                    scores[m.index]
                );
                assert!(
                    dc <= 1e-5,
                    "{label}: match {} cosine {} vs {}",
                    m.index,
                    m.clip_score_cosine,
                    cosines[m.index]
                );
            }
            let total: f64 = ranked.matches.iter().map(|m| m.clip_score).sum();
            assert!(
                (total - 1.0).abs() < 1e-9,
                "{label}: softmax sums to {total}"
            );
        }
    }
    eprintln!("rank: worst absolute score difference {worst:.3e}");
}
