//! M-CLIP end to end: a tiny XLM-R text tower with its Hugging Face tokenizer (tests/fixtures/mclip,
//! laid out as the original's extracted zips: graph + external weight file + tokenizer.json), encoded
//! and ranked in process, through the command line and over NATS, against references computed with
//! `transformers.AutoTokenizer` and onnxruntime the way the original's M-CLIP path runs
//! (tests/fixtures/reference/mclip.json, made by scripts/make_fixtures.py).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use clip_worker::engine::{Engine, EngineOptions, SessionConfig, TextPath};
use clip_worker::preprocess::input::Document;
use common::client::{self, cosine};
use common::{
    clip_worker, fixture_image, floats, json_file, mclip_model_dir, NatsServer, Worker, MCLIP_MODEL,
};
use serde_json::Value;

fn reference() -> Value {
    json_file("tests/fixtures/reference/mclip.json")
}

/// The input indices of a reference rank query, best first.
fn expected_order(query: &Value) -> Vec<usize> {
    query["expected_order"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn engine() -> Engine {
    let mut o = EngineOptions::new(MCLIP_MODEL, mclip_model_dir());
    o.session = SessionConfig {
        intra_threads: 1,
        ..SessionConfig::default()
    };
    Engine::load(&o).expect("load the M-CLIP fixture")
}

/// A rank reference document as a CLI argument (image paths are files, hence images).
fn cli_arg(spec: &Value) -> String {
    match (spec.get("text"), spec.get("image")) {
        (Some(t), _) => t.as_str().unwrap().to_string(),
        (_, Some(i)) => fixture_image(i.as_str().unwrap())
            .to_str()
            .unwrap()
            .to_string(),
        _ => panic!("bad rank spec {spec}"),
    }
}

#[test]
fn token_ids_and_embeddings_match_the_original_m_clip_path() {
    let engine = engine();
    let refs = reference();
    assert_eq!(engine.dim(), refs["dim"].as_u64().unwrap() as usize);
    let texts = refs["text"].as_array().unwrap();
    let mut worst = 0f32;
    for e in texts {
        let text = e["text"].as_str().unwrap();
        let ids: Vec<u32> = e["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(
            engine.model.tokenizer.encode(text).unwrap(),
            ids,
            "ids of {text:?}"
        );
        assert!(ids.len() <= 77 && ids[0] == 0 && ids[ids.len() - 1] == 2);
    }
    // One minibatch, padded to its longest item with <pad>, as the reference ran.
    let docs: Vec<Document> = texts
        .iter()
        .map(|e| Document::text(e["text"].as_str().unwrap()))
        .collect();
    for (e, got) in texts.iter().zip(engine.encode(&docs)) {
        let got = got.unwrap();
        let d = max_abs_diff(&got.embedding, &floats(&e["embedding"]));
        worst = worst.max(d);
        assert!(d <= 1e-5, "{:?}: max abs diff {d}", e["text"]);
    }
    let images = refs["image"].as_array().unwrap();
    let docs: Vec<Document> = images
        .iter()
        .map(|e| Document::uri(fixture_image(e["file"].as_str().unwrap()).to_str().unwrap()))
        .collect();
    for (e, got) in images.iter().zip(engine.encode(&docs)) {
        let d = max_abs_diff(&got.unwrap().embedding, &floats(&e["embedding"]));
        worst = worst.max(d);
        assert!(d <= 1e-5, "{:?}: max abs diff {d}", e["file"]);
    }
    eprintln!(
        "M-CLIP: {} texts, {} images, worst max abs diff {worst:.3e}",
        texts.len(),
        images.len()
    );
}

#[test]
fn a_text_embeds_the_same_alone_or_padded_in_a_batch() {
    // The tokenizer pads a batch to its longest item; the mask keeps padding out of the result.
    let engine = engine();
    // XLM-R attends in both directions: its graph is never rewritten.
    assert_eq!(engine.model.text_path, TextPath::Fixed);
    let refs = reference();
    let long = refs["text"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["ids"].as_array().unwrap().len() == 77)
        .expect("a truncated text in the corpus");
    let short = Document::text("ein Foto einer Katze");
    let alone = engine.encode(std::slice::from_ref(&short));
    let padded = engine.encode(&[short, Document::text(long["text"].as_str().unwrap())]);
    let (a, p) = (
        &alone[0].as_ref().unwrap().embedding,
        &padded[0].as_ref().unwrap().embedding,
    );
    assert!(max_abs_diff(a, p) <= 1e-5, "{a:?} vs {p:?}");
}

#[test]
fn command_line_encode_and_rank_match_the_reference() {
    let refs = reference();
    let model_dir = mclip_model_dir();
    let texts: Vec<&str> = refs["text"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["text"].as_str().unwrap())
        .collect();
    let mut args = vec![
        "encode",
        "--model",
        MCLIP_MODEL,
        "--model-dir",
        model_dir.to_str().unwrap(),
        "--device",
        "cpu",
        "--intra-threads",
        "1",
    ];
    // CLI arguments: a whitespace-only text is still text, as upstream.
    args.extend(texts.iter().copied());
    let (code, stdout, err) = clip_worker(&args);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), texts.len());
    for (line, e) in lines.iter().zip(refs["text"].as_array().unwrap()) {
        assert_eq!(line["modality"], "text", "{line}");
        let d = max_abs_diff(&floats(&line["embedding"]), &floats(&e["embedding"]));
        assert!(d <= 1e-5, "{:?}: {d}", e["text"]);
    }

    for case in refs["cases"].as_array().unwrap() {
        for q in case["queries"].as_array().unwrap() {
            let label = case["name"].as_str().unwrap();
            let root = cli_arg(&q["root"]);
            let matches: Vec<String> = q["matches"]
                .as_array()
                .unwrap()
                .iter()
                .map(cli_arg)
                .collect();
            let mut args = vec![
                "rank",
                "--model",
                MCLIP_MODEL,
                "--model-dir",
                model_dir.to_str().unwrap(),
                "--device",
                "cpu",
                "--query",
                &root,
            ];
            args.extend(matches.iter().map(String::as_str));
            let (code, stdout, err) = clip_worker(&args);
            assert_eq!(code, 0, "{label}: {err}");
            let line: Value = serde_json::from_str(stdout.trim()).unwrap();
            let got = line["matches"].as_array().unwrap();
            let order: Vec<usize> = got
                .iter()
                .map(|m| m["id"].as_str().unwrap().parse().unwrap())
                .collect();
            assert_eq!(order, expected_order(q), "{label}: order");
            let (scores, cosines) = (floats(&q["clip_score"]), floats(&q["clip_score_cosine"]));
            for (m, i) in got.iter().zip(&order) {
                let s = m["scores"]["clip_score"].as_f64().unwrap();
                let c = m["scores"]["clip_score_cosine"].as_f64().unwrap();
                assert!(
                    (s - f64::from(scores[*i])).abs() <= 1e-5,
                    "{label} #{i}: {s}"
                );
                assert!(
                    (c - f64::from(cosines[*i])).abs() <= 1e-5,
                    "{label} #{i}: {c}"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encode_and_rank_over_nats_match_the_reference() {
    let refs = reference();
    let nats = NatsServer::start();
    let _worker = Worker::start_with_model(
        &mclip_model_dir(),
        &nats.url,
        &["--mode", "service", "--model", MCLIP_MODEL],
    );
    let nc = client::connect(&nats.url).await;

    let entries = refs["text"].as_array().unwrap();
    let docs = entries
        .iter()
        .map(|e| client::text(e["text"].as_str().unwrap()))
        .collect();
    let (resp, _) = client::call(&nc, "clip.encode", &client::request(docs)).await;
    assert!(resp.error.is_none(), "{:?}", resp.error);
    assert_eq!(resp.model, MCLIP_MODEL);
    for (i, e) in entries.iter().enumerate() {
        let got = client::embedding(&resp, i);
        // Over NATS the minibatches form dynamically, so padding lengths may differ: the
        // embedding is the same up to float rounding.
        let c = cosine(&got, &floats(&e["embedding"]));
        assert!(c >= 0.99999, "{:?}: cosine {c}", e["text"]);
    }

    let case = refs["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "text_to_images")
        .unwrap();
    let q = &case["queries"][0];
    let mut root = client::text(q["root"]["text"].as_str().unwrap());
    root.matches = q["matches"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let bytes = common::read(&fixture_image(m["image"].as_str().unwrap()));
            client::with_id(client::image(bytes), &i.to_string())
        })
        .collect();
    let (ranked, _) = client::call(&nc, "clip.rank", &client::request(vec![root])).await;
    assert!(ranked.error.is_none(), "{:?}", ranked.error);
    let matches = ranked.docs[0].matches.as_ref().expect("matches");
    let order: Vec<usize> = matches.iter().map(|m| m.id.parse().unwrap()).collect();
    assert_eq!(order, expected_order(q));
    let scores = floats(&q["clip_score"]);
    for (m, i) in matches.iter().zip(&order) {
        let s = m.scores.as_ref().unwrap().clip_score;
        assert!((s - f64::from(scores[*i])).abs() <= 1e-5, "#{i}: {s}");
    }
}
