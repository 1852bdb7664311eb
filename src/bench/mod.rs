//! `clip-worker bench`: load generation and measurement. Drives running workers through NATS
//! (request/reply or durable jobs) with generated captions and photo-like JPEGs, or runs the
//! same inputs in process (model only, preprocessing only, the batching engine without NATS),
//! and reports throughput, latency percentiles, and, from the worker's `/metrics`, the
//! minibatch sizes and where the time went.

pub(crate) mod baseline;
pub(crate) mod drive;
pub(crate) mod inputs;
pub(crate) mod record;
pub(crate) mod report;
pub(crate) mod scrape;

pub(crate) use drive::Plan;
pub(crate) use inputs::{ImageSize, Pool, Workload};
pub(crate) use report::Report;

use crate::client::{Client, ClientError, Options, RetryPolicy};
use crate::docio::InputDoc;
use crate::error::ErrorCode;
use crate::protocol::JobKind;
use crate::transport::connect::NatsOptions;
use record::{Recorder, Summary};
use scrape::{Scrape, WorkerStats};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineError),
    #[error(transparent)]
    Pipeline(#[from] crate::batch::StartError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("inputs: {0}")]
    Inputs(String),
    #[error("worker metrics: {0}")]
    Metrics(String),
}

/// How to reach the workers and what to ask of them.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub nats: NatsOptions,
    pub prefix: String,
    /// Durable JetStream jobs instead of request/reply.
    pub durable: bool,
    pub timeout: Duration,
    /// A worker's `/metrics` URL: scraped before and after the run.
    pub metrics_url: Option<String>,
}

/// Drives running workers: each request is `batch_size` documents from the pool, sent through
/// the client library (packing and uploads included) and tried once, so an `overloaded` answer
/// is counted, not retried.
pub(crate) async fn run_nats(
    target: &Target,
    pool: Arc<Pool>,
    batch_size: usize,
    plan: &Plan,
) -> Result<Report, BenchError> {
    let client = Arc::new(Client::connect(&target.nats, &target.prefix).await?);
    if target.durable {
        client.check_jobs_stream(JobKind::Encode).await?;
    }
    let before = scrape(target.metrics_url.as_deref()).await?;
    let options = Arc::new(Options {
        durable: target.durable,
        batch_size: batch_size.max(1),
        concurrency: 1,
        timeout: target.timeout,
        retry: RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        },
        ..Options::default()
    });
    let recorder = Arc::new(Recorder::new());
    let sampler = target
        .durable
        .then(|| spawn_stream_sampler(client.clone(), recorder.clone()));
    let send = {
        let (client, pool, options) = (client.clone(), pool.clone(), options.clone());
        move |n: u64| {
            let (client, pool, options) = (client.clone(), pool.clone(), options.clone());
            async move {
                let docs: Vec<InputDoc> = pool
                    .request(n, options.batch_size)
                    .into_iter()
                    .enumerate()
                    .map(|(i, d)| InputDoc::new(i.to_string(), d))
                    .collect();
                client
                    .encode(docs, &options)
                    .await
                    .into_iter()
                    .map(|r| r.err().map(|e| e.code))
                    .collect()
            }
        }
    };
    drive::drive(plan, recorder.clone(), send).await;
    if let Some(s) = sampler {
        s.abort();
    }
    let worker = match (before, scrape(target.metrics_url.as_deref()).await?) {
        (Some(b), Some(a)) => Some(WorkerStats::between(&b, &a)),
        _ => None,
    };
    let summary = Summary::of(&recorder.samples(), &recorder.stream_samples());
    Ok(Report {
        mode: "nats".into(),
        transport: Some(if target.durable { "jobs" } else { "request" }.into()),
        workload: pool_workload(&pool),
        inputs: pool.describe(),
        batch_size,
        concurrency: plan.rate.is_none().then_some(plan.concurrency),
        rate: plan.rate,
        threads: None,
        stream_max_messages: target.durable.then(|| {
            recorder
                .stream_samples()
                .iter()
                .map(|(_, m)| *m)
                .max()
                .unwrap_or(0)
        }),
        summary,
        worker,
    })
}

fn pool_workload(pool: &Pool) -> Workload {
    let s = pool.describe();
    match (s.texts > 0, s.images > 0) {
        (true, true) => Workload::Mixed,
        (false, _) => Workload::Image,
        (true, false) => Workload::Text,
    }
}

async fn scrape(url: Option<&str>) -> Result<Option<Scrape>, BenchError> {
    let Some(url) = url.map(str::to_string) else {
        return Ok(None);
    };
    tokio::task::spawn_blocking(move || Scrape::fetch(&url))
        .await
        .map_err(|e| BenchError::Metrics(e.to_string()))?
        .map(Some)
        .map_err(BenchError::Metrics)
}

/// Samples the jobs stream's message count (jobs not yet acknowledged) twice a second.
fn spawn_stream_sampler(
    client: Arc<Client>,
    recorder: Arc<Recorder>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let js = async_nats::jetstream::new(client.nats().clone());
        let subject = client.jobs_subject(JobKind::Encode);
        let Ok(name) = js.stream_by_subject(subject).await else {
            return;
        };
        let Ok(mut stream) = js.get_stream(name).await else {
            return;
        };
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tick.tick().await;
            if let Ok(info) = stream.info().await {
                recorder.note_stream(info.state.messages);
            }
        }
    })
}

/// Request outcome for documents that all failed with `code`.
fn all_failed(n: usize, code: ErrorCode) -> Vec<Option<ErrorCode>> {
    vec![Some(code); n]
}
