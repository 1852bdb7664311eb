//! Throughput figures for the CPU-bound stages and for dynamic batching, printed as a table.
//!
//! Run with `cargo bench --bench throughput` (after `scripts/bootstrap.sh`). Uses the bundled
//! tiny model, so inference is cheap and the figures isolate preprocessing and batching overhead;
//! see docs/benchmarks.md for how to read them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use clip_worker::batch::{BatchConfig, Pipeline};
use clip_worker::engine::{Engine, EngineOptions, SessionConfig};
use clip_worker::preprocess::image::{self, DEFAULT_MAX_PIXELS};
use clip_worker::preprocess::input::Document;
use clip_worker::preprocess::text::ClipTokenizer;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A photo-like test image: smooth gradients plus deterministic noise, JPEG quality 90.
fn jpeg(width: u32, height: u32) -> Vec<u8> {
    let mut state = 0x2545F491u32;
    let img = ::image::RgbImage::from_fn(width, height, |x, y| {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let n = state % 24;
        ::image::Rgb([
            ((x * 200 / width) + n) as u8,
            ((y * 180 / height) + n) as u8,
            (((x + y) * 120 / (width + height)) + n) as u8,
        ])
    });
    let mut out = Vec::new();
    let enc = ::image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90);
    img.write_with_encoder(enc).expect("encode jpeg");
    out
}

/// Runs `f` repeatedly for about `budget` and returns operations per second.
fn rate(budget: Duration, mut f: impl FnMut() -> usize) -> f64 {
    let _ = f(); // warm-up
    let start = Instant::now();
    let mut ops = 0;
    while start.elapsed() < budget {
        ops += f();
    }
    ops as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let budget = Duration::from_millis(
        std::env::var("BENCH_MILLIS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2000),
    );
    println!(
        "{:<58} {:>12}",
        "stage (one run, same inputs)", "per second"
    );

    let tok = ClipTokenizer::new().expect("tokenizer");
    let caption = "a photo of a television studio with three cameras and a bright stage";
    let r = rate(budget, || tok.encode(caption).map(|_| 1).unwrap_or(0));
    println!("{:<58} {r:>12.0}", "tokenize a 13-word caption (1 thread)");

    for (w, h) in [(640u32, 480u32), (1920, 1080)] {
        let bytes = jpeg(w, h);
        let r = rate(budget, || {
            image::preprocess_bytes(&bytes, 224, DEFAULT_MAX_PIXELS)
                .map(|_| 1)
                .unwrap_or(0)
        });
        println!(
            "{:<58} {r:>12.1}",
            format!("decode+resize+crop a {w}x{h} JPEG to 224 (1 thread)")
        );
    }

    let model_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/model");
    let mut opts = EngineOptions::new("ViT-B-32::openai", model_dir);
    opts.session = SessionConfig {
        intra_threads: 1,
        ..SessionConfig::default()
    };
    let engine = Engine::load(&opts).expect("load fixture model");
    let texts: Vec<Document> = (0..64)
        .map(|i| Document::text(format!("{caption} number {i}")))
        .collect();
    let prepared: Vec<Vec<u32>> = texts
        .iter()
        .map(|d| {
            tok.encode(d.text.as_deref().unwrap_or(""))
                .unwrap_or_default()
        })
        .collect();
    let mut per_batch = Vec::new();
    let minibatch = clip_worker::defaults::MINIBATCH_SIZE;
    for b in [1usize, 8, minibatch] {
        let r = rate(budget, || {
            let mut n = 0;
            for chunk in prepared.chunks(b) {
                let refs: Vec<&[u32]> = chunk.iter().map(|v| v.as_slice()).collect();
                n += engine.model.run_text(&refs).map(|o| o.len()).unwrap_or(0);
            }
            n
        });
        per_batch.push(r);
        println!(
            "{:<58} {r:>12.0}",
            format!("text tower, tiny model, minibatch {b}")
        );
    }
    println!(
        "{:<58} {:>11.1}x",
        format!("  minibatch {minibatch} vs 1"),
        per_batch[2] / per_batch[0]
    );

    // The batcher: 256 single-text requests at once vs one after another.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let pipeline = Pipeline::start(
        engine.model.clone(),
        engine.preprocessor.clone(),
        BatchConfig {
            num_worker_preprocess: 2,
            max_batch_delay: Duration::from_millis(2),
            ..BatchConfig::default()
        },
    )
    .expect("pipeline");
    let one = |p: std::sync::Arc<Pipeline>, i: usize| async move {
        let docs = vec![Document::text(format!("request {i}"))];
        let admission = p.admit(&docs).await.expect("admit");
        p.embed(docs, &admission).await.len()
    };
    let sequential = rt.block_on(async {
        let start = Instant::now();
        let mut n = 0;
        for i in 0..256 {
            n += one(pipeline.clone(), i).await;
        }
        n as f64 / start.elapsed().as_secs_f64()
    });
    let concurrent = rt.block_on(async {
        let start = Instant::now();
        let tasks: Vec<_> = (0..256)
            .map(|i| tokio::spawn(one(pipeline.clone(), i)))
            .collect();
        let mut n = 0;
        for t in tasks {
            n += t.await.unwrap_or(0);
        }
        n as f64 / start.elapsed().as_secs_f64()
    });
    let s = pipeline.stats.snapshot();
    println!(
        "{:<58} {sequential:>12.0}",
        "pipeline, 256 one-text requests one after another"
    );
    println!(
        "{:<58} {concurrent:>12.0}",
        "pipeline, 256 one-text requests concurrently"
    );
    println!(
        "{:<58} {:>11.1}x",
        "  concurrent vs sequential (dynamic batching)",
        concurrent / sequential
    );
    println!(
        "{:<58} {:>12.1}",
        "  mean text minibatch over both runs", s.text.mean_batch
    );
    pipeline.shutdown();
}
