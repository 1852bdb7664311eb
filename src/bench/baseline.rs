//! In-process baselines over the same inputs as a NATS run: the model alone on ready inputs
//! (the ceiling a worker can reach), preprocessing alone on one thread (per core), and the
//! batching engine end to end without NATS (what the transport and the protocol add is the
//! difference to a NATS run).

use super::drive::{self, Plan};
use super::record::{Recorder, Summary};
use super::scrape::{Scrape, WorkerStats};
use super::{all_failed, BenchError, Pool, Report};
use crate::batch::{BatchConfig, Pipeline};
use crate::engine::{Engine, Prepared};
use crate::error::ErrorCode;
use crate::telemetry::metrics;
use std::sync::Arc;

/// Which part of the worker runs alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Baseline {
    /// The towers on ready token ids and pixel tensors, one minibatch of `batch_size` per call.
    Model,
    /// Decoding, resizing and tokenizing on one thread.
    Preprocess,
    /// The batching pipeline (preprocess pool, queues, tower threads) without NATS.
    Engine,
}

impl Baseline {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Baseline::Model => "model",
            Baseline::Preprocess => "preprocess",
            Baseline::Engine => "engine",
        }
    }
}

fn report(mode: Baseline, pool: &Pool, batch_size: usize, plan: &Plan, rec: &Recorder) -> Report {
    Report {
        mode: mode.as_str().into(),
        transport: None,
        workload: super::pool_workload(pool),
        inputs: pool.describe(),
        batch_size,
        concurrency: Some(match mode {
            Baseline::Engine => plan.concurrency,
            _ => 1,
        }),
        rate: None,
        threads: None,
        stream_max_messages: None,
        summary: Summary::of(&rec.samples(), &[]),
        worker: None,
    }
}

/// The towers alone: every document prepared once up front, then minibatches of `batch_size`
/// run one after another (texts, images, or alternating for a mixed pool).
pub(crate) fn model(
    engine: &Engine,
    pool: &Pool,
    batch_size: usize,
    plan: &Plan,
) -> Result<Report, BenchError> {
    let mut texts: Vec<Vec<u32>> = Vec::new();
    let mut images: Vec<Vec<f32>> = Vec::new();
    for doc in pool.docs() {
        match engine.preprocessor.prepare(doc) {
            Ok(Prepared::Text(ids)) => texts.push(ids),
            Ok(Prepared::Image(px)) => images.push(px),
            Err(e) => return Err(BenchError::Inputs(format!("preparing an input: {e}"))),
        }
    }
    let batch = batch_size.max(1);
    let take = |n: u64, len: usize| {
        (0..batch).map(move |i| (n as usize).wrapping_mul(batch).wrapping_add(i) % len.max(1))
    };
    let recorder = Recorder::new();
    drive::drive_blocking(plan, &recorder, |n| {
        let text_turn = match (texts.is_empty(), images.is_empty()) {
            (false, false) => n % 2 == 0,
            (empty_texts, _) => !empty_texts,
        };
        let ran = if text_turn {
            let refs: Vec<&[u32]> = take(n, texts.len())
                .filter_map(|i| texts.get(i).map(Vec::as_slice))
                .collect();
            engine.model.run_text(&refs).map(|o| o.len())
        } else {
            let refs: Vec<&[f32]> = take(n, images.len())
                .filter_map(|i| images.get(i).map(Vec::as_slice))
                .collect();
            engine.model.run_images(&refs).map(|o| o.len())
        };
        match ran {
            Ok(done) => vec![None; done],
            Err(_) => all_failed(batch, ErrorCode::Inference),
        }
    });
    Ok(report(Baseline::Model, pool, batch_size, plan, &recorder))
}

/// Preprocessing alone on the calling thread: `batch_size` documents per sample.
pub(crate) fn preprocess(
    engine: &Engine,
    pool: &Pool,
    batch_size: usize,
    plan: &Plan,
) -> Result<Report, BenchError> {
    let recorder = Recorder::new();
    drive::drive_blocking(plan, &recorder, |n| {
        pool.request(n, batch_size.max(1))
            .iter()
            .map(|d| engine.preprocessor.prepare(d).err().map(|e| e.code))
            .collect()
    });
    Ok(report(
        Baseline::Preprocess,
        pool,
        batch_size,
        plan,
        &recorder,
    ))
}

/// The batching pipeline without NATS: `plan.concurrency` callers, each sending requests of
/// `batch_size` documents and waiting for their embeddings.
pub(crate) async fn engine(
    engine: &Engine,
    config: BatchConfig,
    pool: Arc<Pool>,
    batch_size: usize,
    plan: &Plan,
) -> Result<Report, BenchError> {
    let pipeline = Pipeline::start(engine.model.clone(), engine.preprocessor.clone(), config)?;
    // The batcher reports to the process's metric registry, as in a worker.
    let before = Scrape::parse(&String::from_utf8_lossy(&metrics().render()));
    let recorder = Arc::new(Recorder::new());
    let send = {
        let (pipeline, pool) = (pipeline.clone(), pool.clone());
        move |n: u64| {
            let (pipeline, pool) = (pipeline.clone(), pool.clone());
            async move {
                let docs = pool.request(n, batch_size.max(1));
                match pipeline.try_admit(&docs) {
                    Ok(admission) => pipeline
                        .embed(docs, &admission)
                        .await
                        .into_iter()
                        .map(|r| r.err().map(|e| e.code))
                        .collect(),
                    Err(e) => all_failed(docs.len(), e.code),
                }
            }
        }
    };
    drive::drive(plan, recorder.clone(), send).await;
    let mut out = report(Baseline::Engine, &pool, batch_size, plan, &recorder);
    let after = Scrape::parse(&String::from_utf8_lossy(&metrics().render()));
    out.worker = Some(WorkerStats::between(&before, &after));
    pipeline.shutdown();
    Ok(out)
}
