//! End-to-end fidelity against references computed in Python the way CLIP-as-service runs the same
//! graphs (tests/fixtures/reference, made by scripts/make_fixtures.py): embeddings for texts,
//! images in many formats and pixel tensors, and rank scores and order.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use base64::Engine as _;
use clip_worker::engine::{Engine, EngineOptions, SessionConfig, TextLength, TextPath};
use clip_worker::error::ErrorCode;
use clip_worker::preprocess::input::{Document, PixelTensor};
use common::client::cosine;
use common::{fixture_image, fixture_model_dir, floats, json_file as json};
use serde_json::Value;

fn engine() -> Engine {
    engine_with(TextLength::default())
}

fn engine_with(text_length: TextLength) -> Engine {
    let mut o = EngineOptions::new("ViT-B-32::openai", fixture_model_dir());
    o.session = SessionConfig {
        intra_threads: 1,
        text_length,
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
    // The default path: the fixed-77 graph rewritten to run texts at their real length.
    assert_eq!(engine.model.text_path, TextPath::Dynamic);
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

/// Every text of the tokenizer corpus (lengths 2 to 77), run at its real length in minibatches
/// of 1, 8 and 32, in corpus order and sorted by length, gives the fixed-77 embedding bit for bit.
#[test]
fn texts_at_their_real_length_are_bit_identical_to_77() {
    let (dynamic, fixed) = (engine(), engine_with(TextLength::Fixed));
    assert_eq!(dynamic.model.text_path, TextPath::Dynamic);
    assert_eq!(fixed.model.text_path, TextPath::Fixed);
    let corpus: Vec<Value> =
        serde_json::from_str(include_str!("fixtures/text/tokens.json")).unwrap();
    let ids: Vec<Vec<u32>> = corpus
        .iter()
        .map(|row| {
            row["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect()
        })
        .collect();
    assert!(ids.iter().any(|t| t.len() == 77) && ids.iter().any(|t| t.len() <= 3));
    let mut sorted = ids.clone();
    sorted.sort_by_key(Vec::len);
    let mut checked = 0;
    for texts in [&ids, &sorted] {
        for batch in [1usize, 8, 32] {
            for chunk in texts.chunks(batch) {
                let refs: Vec<&[u32]> = chunk.iter().map(Vec::as_slice).collect();
                let want = fixed.model.run_text(&refs).unwrap();
                let got = dynamic.model.run_text(&refs).unwrap();
                for (w, g) in want.iter().zip(&got) {
                    let same = w.iter().zip(g).all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(
                        same && w.len() == g.len(),
                        "batch {batch}: embeddings differ"
                    );
                    checked += 1;
                }
            }
        }
    }
    assert_eq!(checked, 6 * corpus.len());
    // Minibatches run at their longest text's length, not 77.
    assert_eq!(dynamic.model.text_cost(12), 12);
    assert_eq!(fixed.model.text_cost(12), 77);
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
