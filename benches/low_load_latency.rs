//! Latency at low load: one request of one document at a time through the in-process pipeline
//! (admission, preprocessing, minibatch forming, inference, reply), against the model time for
//! that document alone.
//!
//! ```text
//! cargo bench --bench low_load_latency -- [MODEL_DIR]
//! ```
//! MODEL_DIR is a CLIP BPE model folder; default: the tiny test model. Environment:
//! `BENCH_LATENCY_RUNS` (default 60), `BENCH_INTRA_THREADS` (default 0: ONNX Runtime's own).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use clip_worker::batch::{BatchConfig, Pipeline};
use clip_worker::engine::{Engine, EngineOptions, Prepared, SessionConfig};
use clip_worker::preprocess::input::Document;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Sorted milliseconds of `runs` calls of `f`, after three warm-up calls.
fn timed(runs: usize, mut f: impl FnMut()) -> Vec<f64> {
    for _ in 0..3 {
        f();
    }
    let mut t: Vec<f64> = (0..runs)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t
}

fn main() {
    let dir = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with("--"))
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/model"));
    let runs = env_num("BENCH_LATENCY_RUNS", 60) as usize;
    let mut opts = EngineOptions::new("ViT-B-32::openai", dir.clone());
    opts.session = SessionConfig {
        intra_threads: env_num("BENCH_INTRA_THREADS", 0) as usize,
        ..SessionConfig::default()
    };
    let engine = Engine::load(&opts).expect("load the model folder");
    let config = BatchConfig::default();
    println!(
        "model folder: {}; --max-batch-delay {:?}; {runs} runs each",
        dir.display(),
        config.max_batch_delay
    );
    let pipeline: Arc<Pipeline> =
        Pipeline::start(engine.model.clone(), engine.preprocessor.clone(), config).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let image = std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/images/jpeg_rgb_420.jpg"),
    )
    .unwrap();
    let docs = [
        (
            "text (12-word caption)",
            Document::text("a photo of a dog sitting on a red bench in the park"),
        ),
        ("image (JPEG)", Document::blob(image)),
    ];
    println!(
        "{:<24} {:>10} {:>9} {:>9} {:>9} {:>14}",
        "document", "model p50", "p50", "p90", "max", "p50 - model"
    );
    for (name, doc) in &docs {
        let prepared = engine.preprocessor.prepare(doc).unwrap();
        let model = timed(runs, || match &prepared {
            Prepared::Text(ids) => {
                engine.model.run_text(&[ids.as_slice()]).unwrap();
            }
            Prepared::Image(px) => {
                engine.model.run_images(&[px.as_slice()]).unwrap();
            }
        });
        let end_to_end = timed(runs, || {
            rt.block_on(async {
                let docs = vec![doc.clone()];
                let admission = pipeline.admit(&docs).await.unwrap();
                let out = pipeline.embed(docs, &admission).await;
                assert!(out[0].is_ok());
            })
        });
        let (m, p50) = (percentile(&model, 0.5), percentile(&end_to_end, 0.5));
        println!(
            "{name:<24} {m:>8.2}ms {p50:>7.2}ms {:>7.2}ms {:>7.2}ms {:>12.2}ms",
            percentile(&end_to_end, 0.9),
            percentile(&end_to_end, 1.0),
            p50 - m
        );
    }
    pipeline.shutdown();
}
