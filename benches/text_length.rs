//! Texts at their real length against the fixed 77: model-only and pipeline throughput, and a
//! bit-identity sweep.
//!
//! ```text
//! cargo bench --bench text_length -- [MODEL_DIR]
//! ```
//! MODEL_DIR is a CLIP BPE model folder (`textual.onnx`, `visual.onnx`); default: the tiny test
//! model. Environment: `BENCH_MILLIS` (time per throughput figure, default 3000),
//! `BENCH_INTRA_THREADS` (ONNX Runtime threads, default 0: its own default), `BENCH_SKIP_IDENTITY=1`
//! (skip the bit-identity sweep). See docs/benchmarks.md.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use clip_worker::batch::{BatchConfig, Pipeline};
use clip_worker::engine::{Engine, EngineOptions, SessionConfig, TextLength, TextPath};
use clip_worker::preprocess::input::Document;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

const SOT: u32 = 49406;
const EOT: u32 = 49407;
const BATCH: usize = 32;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Deterministic pseudo-random numbers (xorshift).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// `n` token sequences of exactly `len` tokens (start, words, end), ids of ordinary words.
fn fixed_length_ids(len: usize, n: usize, rng: &mut Rng) -> Vec<Vec<u32>> {
    (0..n)
        .map(|_| {
            let mut ids = vec![SOT];
            ids.extend((0..len.saturating_sub(2)).map(|_| 320 + (rng.next() % 40000) as u32));
            ids.push(EOT);
            ids
        })
        .collect()
}

const WORDS: [&str; 48] = [
    "a", "the", "man", "woman", "dog", "cat", "red", "blue", "small", "large", "sitting",
    "standing", "on", "in", "next", "to", "with", "of", "table", "street", "car", "bus", "tree",
    "field", "grass", "snow", "water", "beach", "boat", "train", "plate", "food", "pizza", "child",
    "holding", "umbrella", "walking", "riding", "bike", "horse", "kitchen", "window", "building",
    "city", "night", "old", "white", "black",
];

/// A caption mix shaped like image-caption datasets: most captions 8 to 16 words, some longer,
/// a few paragraph-long (truncated to 77 tokens).
fn caption_mix(n: usize, rng: &mut Rng) -> Vec<String> {
    (0..n)
        .map(|_| {
            let r = rng.next() % 100;
            let words = match r {
                0..=69 => 6 + (rng.next() % 11) as usize,
                70..=89 => 17 + (rng.next() % 12) as usize,
                90..=97 => 29 + (rng.next() % 30) as usize,
                _ => 90,
            };
            (0..words)
                .map(|_| WORDS[(rng.next() % WORDS.len() as u64) as usize])
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

fn load(dir: &std::path::Path, mode: TextLength) -> Engine {
    let mut opts = EngineOptions::new("ViT-B-32::openai", dir.to_path_buf());
    opts.session = SessionConfig {
        intra_threads: env_num("BENCH_INTRA_THREADS", 0) as usize,
        text_length: mode,
        ..SessionConfig::default()
    };
    Engine::load(&opts).expect("load the model folder")
}

/// Texts per second running `corpus` in minibatches of `BATCH`, repeated for about `budget`.
fn model_rate(engine: &Engine, corpus: &[Vec<u32>], budget: Duration) -> f64 {
    let batches: Vec<Vec<&[u32]>> = corpus
        .chunks(BATCH)
        .map(|c| c.iter().map(Vec::as_slice).collect())
        .collect();
    engine.model.run_text(&batches[0]).unwrap(); // warm-up
    let start = Instant::now();
    let mut done = 0;
    'outer: loop {
        for b in &batches {
            engine.model.run_text(b).unwrap();
            done += b.len();
            if start.elapsed() >= budget {
                break 'outer;
            }
        }
    }
    done as f64 / start.elapsed().as_secs_f64()
}

fn pipeline(engine: &Engine, delay: Duration) -> Arc<Pipeline> {
    Pipeline::start(
        engine.model.clone(),
        engine.preprocessor.clone(),
        BatchConfig {
            max_batch_delay: delay,
            ..BatchConfig::default()
        },
    )
    .unwrap()
}

/// Texts per second embedding `texts` as one request through the pipeline (preprocessing,
/// minibatch forming and grouping, inference), repeated for about `budget`.
fn pipeline_rate(
    rt: &tokio::runtime::Runtime,
    p: &Arc<Pipeline>,
    texts: &[String],
    budget: Duration,
) -> f64 {
    let run = || {
        let docs: Vec<Document> = texts.iter().map(|t| Document::text(t.clone())).collect();
        rt.block_on(async {
            let admission = p.admit(&docs).await.unwrap();
            let out = p.embed(docs, &admission).await;
            assert!(out.iter().all(Result::is_ok));
        })
    };
    run();
    let start = Instant::now();
    let mut done = 0;
    while start.elapsed() < budget {
        run();
        done += texts.len();
    }
    done as f64 / start.elapsed().as_secs_f64()
}

/// Embeddings of `corpus` at minibatches of `batch`, in order.
fn embed_all(engine: &Engine, corpus: &[Vec<u32>], batch: usize) -> Vec<Vec<f32>> {
    corpus
        .chunks(batch)
        .flat_map(|c| {
            let refs: Vec<&[u32]> = c.iter().map(Vec::as_slice).collect();
            engine.model.run_text(&refs).unwrap()
        })
        .collect()
}

fn main() {
    let dir = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with("--"))
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/model"));
    let budget = Duration::from_millis(env_num("BENCH_MILLIS", 3000));
    let dynamic = load(&dir, TextLength::Dynamic);
    let fixed = load(&dir, TextLength::Fixed);
    println!("model folder: {}", dir.display());
    println!(
        "text path: dynamic engine -> {}, fixed engine -> {}",
        dynamic.model.text_path, fixed.model.text_path
    );
    if dynamic.model.text_path != TextPath::Dynamic {
        println!("the text graph was not rewritten: nothing to compare");
        return;
    }
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);

    println!("\n## Model only, minibatches of {BATCH} (texts/s)");
    println!(
        "{:<28} {:>10} {:>10} {:>8}",
        "tokens per text", "fixed 77", "dynamic", "ratio"
    );
    let fixed_rate = model_rate(&fixed, &fixed_length_ids(16, BATCH, &mut rng), budget);
    let mut length_sets = Vec::new();
    for len in [8usize, 12, 16, 20, 32, 77] {
        let corpus = fixed_length_ids(len, BATCH, &mut rng);
        let r = model_rate(&dynamic, &corpus, budget);
        println!(
            "{:<28} {fixed_rate:>10.1} {r:>10.1} {:>7.2}x",
            len,
            r / fixed_rate
        );
        length_sets.push(corpus);
    }

    let mix = caption_mix(256, &mut rng);
    let mix_ids: Vec<Vec<u32>> = mix
        .iter()
        .map(|t| dynamic.model.tokenizer.encode(t).unwrap())
        .collect();
    let mut lens: Vec<usize> = mix_ids.iter().map(Vec::len).collect();
    lens.sort_unstable();
    println!(
        "\n## Caption mix: {} captions, tokens min {} / median {} / mean {:.1} / p90 {} / max {}",
        mix.len(),
        lens[0],
        lens[lens.len() / 2],
        lens.iter().sum::<usize>() as f64 / lens.len() as f64,
        lens[lens.len() * 9 / 10],
        lens[lens.len() - 1]
    );
    let fixed_mix = model_rate(&fixed, &mix_ids, budget);
    let dynamic_mix = model_rate(&dynamic, &mix_ids, budget);
    println!("{:<52} {:>10}", "", "texts/s");
    println!(
        "{:<52} {fixed_mix:>10.1}",
        "model only, fixed 77, arrival order"
    );
    println!(
        "{:<52} {dynamic_mix:>10.1}  ({:.2}x)",
        "model only, dynamic, arrival order",
        dynamic_mix / fixed_mix
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let delay = BatchConfig::default().max_batch_delay;
    let (pf, pd) = (pipeline(&fixed, delay), pipeline(&dynamic, delay));
    let fixed_pipe = pipeline_rate(&rt, &pf, &mix, budget);
    let dynamic_pipe = pipeline_rate(&rt, &pd, &mix, budget);
    println!(
        "{:<52} {fixed_pipe:>10.1}",
        "pipeline, one request of 256, fixed 77"
    );
    println!(
        "{:<52} {dynamic_pipe:>10.1}  ({:.2}x)",
        "pipeline, one request of 256, dynamic + grouping",
        dynamic_pipe / fixed_pipe
    );

    if env_num("BENCH_SKIP_IDENTITY", 0) == 0 {
        let corpus: Vec<Vec<u32>> = length_sets.into_iter().flatten().chain(mix_ids).collect();
        let mut sorted = corpus.clone();
        sorted.sort_by_key(Vec::len);
        println!("\n## Bit-identical embeddings, dynamic against fixed 77");
        for (order, texts) in [("arrival order", &corpus), ("sorted by length", &sorted)] {
            for batch in [1usize, 8, 32] {
                let a = embed_all(&fixed, texts, batch);
                let b = embed_all(&dynamic, texts, batch);
                let same = a
                    .iter()
                    .zip(&b)
                    .filter(|(x, y)| {
                        x.iter()
                            .zip(y.iter())
                            .all(|(p, q)| p.to_bits() == q.to_bits())
                    })
                    .count();
                println!(
                    "{order:<18} batch {batch:>2}: {same} of {} identical",
                    texts.len()
                );
            }
        }
    }

    for p in [pf, pd] {
        p.shutdown();
    }
}
