//! `clip-worker serve`: the NATS stream worker.

use super::args::EngineArgs;
use super::duration::{format_duration, parse_duration};
use super::nats::NatsArgs;
use super::shutdown::{start_watchdog, StopSignals, EXIT_GRACE};
use super::uri::UriArgs;
use crate::batch::{BatchConfig, Pipeline};
use crate::defaults;
use crate::engine::Engine;
use crate::preprocess::input::{Document, Modality, PixelTensor};
use crate::protocol::{Limits, Subjects};
use crate::telemetry::{self, metrics::Metrics, Health};
use crate::transport::handler::Handler;
use crate::transport::jobs::{self, JobsConfig};
use crate::transport::objects::ObjectFetcher;
use crate::transport::publish::Publisher;
use crate::transport::service::{self, ServiceConfig};
use crate::transport::startup;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Request/reply and durable jobs.
    Both,
    /// Request/reply only.
    Service,
    /// Durable jobs only.
    Jobs,
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    #[command(flatten)]
    pub nats: NatsArgs,

    /// Subject prefix: `<prefix>.encode`, `<prefix>.rank`, `<prefix>.jobs.{encode,rank}`.
    #[arg(long, env = "CLIP_WORKER_PREFIX", default_value = defaults::PREFIX)]
    pub prefix: String,
    /// What to serve.
    #[arg(long, env = "CLIP_WORKER_MODE", value_enum, default_value_t = Mode::Both)]
    pub mode: Mode,
    /// Service name for `$SRV` discovery.
    #[arg(long, env = "CLIP_WORKER_SERVICE_NAME", default_value = defaults::SERVICE_NAME)]
    pub service_name: String,
    /// Queue group shared by all workers for request/reply.
    #[arg(long, env = "CLIP_WORKER_QUEUE_GROUP", default_value = defaults::QUEUE_GROUP)]
    pub queue_group: String,

    /// Longest a minibatch waits to fill while more documents are on their way (a tower with
    /// nothing on the way runs what it has at once).
    #[arg(long, env = "CLIP_WORKER_MAX_BATCH_DELAY", default_value = format_duration(defaults::MAX_BATCH_DELAY), value_parser = parse_duration)]
    pub max_batch_delay: Duration,
    /// Documents admitted at once; beyond this request/reply answers `overloaded`.
    #[arg(long, env = "CLIP_WORKER_MAX_INFLIGHT_DOCS", default_value_t = defaults::MAX_INFLIGHT_DOCS)]
    pub max_inflight_docs: usize,
    /// Request/reply calls whose documents would wait longer than this (at the speed of the
    /// recent minibatches) are answered `overloaded` at once; `0` turns the check off.
    #[arg(long, env = "CLIP_WORKER_MAX_QUEUE_TIME", default_value = format_duration(defaults::MAX_QUEUE_TIME), value_parser = parse_duration)]
    pub max_queue_time: Duration,

    /// JetStream work-queue stream for durable jobs.
    #[arg(long, env = "CLIP_WORKER_STREAM", default_value = defaults::STREAM)]
    pub stream: String,
    /// Durable pull consumer shared by all workers.
    #[arg(long, env = "CLIP_WORKER_CONSUMER", default_value = defaults::CONSUMER)]
    pub consumer: String,
    /// Bind to an existing stream and consumer instead of creating them.
    #[arg(long, env = "CLIP_WORKER_BIND_EXISTING", default_value_t = false)]
    pub bind_existing: bool,
    /// Unacknowledged jobs the server hands out at once (consumer setting, all workers).
    #[arg(long, env = "CLIP_WORKER_MAX_ACK_PENDING", default_value_t = defaults::MAX_ACK_PENDING)]
    pub max_ack_pending: i64,
    /// Time before an unacknowledged job is redelivered (in-progress acks extend it).
    #[arg(long, env = "CLIP_WORKER_ACK_WAIT", default_value = format_duration(defaults::ACK_WAIT), value_parser = parse_duration)]
    pub ack_wait: Duration,
    /// Deliveries of a job before a transient failure is returned as its result.
    #[arg(long, env = "CLIP_WORKER_MAX_DELIVER", default_value_t = defaults::MAX_DELIVER)]
    pub max_deliver: i64,
    /// Delay before a job nak'ed for a transient failure is redelivered.
    #[arg(long, env = "CLIP_WORKER_NAK_DELAY", default_value = format_duration(defaults::NAK_DELAY), value_parser = parse_duration)]
    pub nak_delay: Duration,
    /// Jobs this worker processes at once.
    #[arg(long, env = "CLIP_WORKER_MAX_INFLIGHT_JOBS", default_value_t = defaults::MAX_INFLIGHT_JOBS)]
    pub max_inflight_jobs: usize,
    /// Result subject for jobs without a `Clip-Reply-To` header [default: <prefix>.results].
    #[arg(long, env = "CLIP_WORKER_RESULTS_SUBJECT")]
    pub results_subject: Option<String>,

    /// Documents per request (matches included).
    #[arg(long, env = "CLIP_WORKER_MAX_DOCS_PER_REQUEST", default_value_t = defaults::MAX_DOCS_PER_REQUEST)]
    pub max_docs_per_request: usize,
    /// Bytes of one document's blob or tensor (object-store images included).
    #[arg(long, env = "CLIP_WORKER_MAX_DOC_BYTES", default_value_t = defaults::MAX_DOC_BYTES)]
    pub max_doc_bytes: usize,
    #[command(flatten)]
    pub uri: UriArgs,

    /// On SIGTERM/SIGINT, time allowed to finish in-flight work before exiting.
    #[arg(long, env = "CLIP_WORKER_SHUTDOWN_TIMEOUT", default_value = format_duration(defaults::SHUTDOWN_TIMEOUT), value_parser = parse_duration)]
    pub shutdown_timeout: Duration,

    /// HTTP listener for /metrics, /healthz and /readyz (`off` disables it).
    #[arg(long, env = "CLIP_WORKER_METRICS_ADDR", default_value = "0.0.0.0:9090")]
    pub metrics_addr: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineError),
    #[error(transparent)]
    Models(#[from] crate::model::StoreError),
    #[error(transparent)]
    Connect(#[from] crate::transport::connect::ConnectError),
    #[error(transparent)]
    Service(#[from] crate::transport::service::ServiceError),
    #[error(transparent)]
    Jobs(#[from] crate::transport::jobs::JobsError),
    #[error(transparent)]
    Pipeline(#[from] crate::batch::StartError),
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
    #[error("cannot listen for stop signals")]
    Signals(#[source] std::io::Error),
    #[error("loading the model stopped unexpectedly")]
    LoadAborted(#[source] tokio::task::JoinError),
    #[error(transparent)]
    Metrics(#[from] crate::telemetry::http::ListenError),
    #[error(transparent)]
    LocalRoot(#[from] crate::preprocess::fetch::LocalRootError),
    #[error("the model failed its warm-up inference: {0}")]
    WarmUp(String),
}

pub(crate) fn serve(args: ServeArgs) -> Result<(), ServeError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("clip-worker-io")
        .build()
        .map_err(ServeError::Runtime)?;
    let result = runtime.block_on(serve_async(args));
    // Work still running past the shutdown deadline must not keep the process alive (well
    // within the watchdog's grace, so a clean stop is not mistaken for a stuck one).
    runtime.shutdown_timeout(EXIT_GRACE / 2);
    result
}

async fn serve_async(args: ServeArgs) -> Result<(), ServeError> {
    // From the first moment: a signal while the model loads or NATS is awaited stops the worker.
    let mut signals = StopSignals::install().map_err(ServeError::Signals)?;
    // Up first, so probes answer (not ready) while the model loads.
    let health = Arc::new(Health::default());
    if let Some(addr) = telemetry::http::listen_address(&args.metrics_addr) {
        let bound = telemetry::http::start(addr, health.clone()).await?;
        eprintln!("clip-worker metrics on http://{bound}/metrics");
    }
    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();
    let started = tokio::select! {
        started = start(&args, &health, &shutdown, &tasks) => started?,
        signal = signals.next() => {
            // Nothing was taken yet: no work to drain.
            tracing::info!(signal, "shutdown requested during start-up");
            eprintln!("clip-worker stopped");
            return Ok(());
        }
    };
    let Started {
        client,
        handler,
        pipeline,
        mut loops,
    } = started;
    health.set_subscribed();
    eprintln!(
        "clip-worker ready: model {} on {}",
        args.engine.model,
        args.nats.urls.join(",")
    );

    let mut failure = None;
    tokio::select! {
        signal = signals.next() => tracing::info!(signal, "shutdown requested"),
        Some(r) = loops.join_next() => {
            if let Ok(Err(e)) = r { failure = Some(e); }
        }
    }
    let deadline = tokio::time::Instant::now() + args.shutdown_timeout;
    signals.exit_on_second();
    start_watchdog(deadline.into_std());
    // Not ready from the first moment of the drain.
    health.set_draining();
    shutdown.cancel();
    while let Ok(Some(r)) = tokio::time::timeout_at(deadline, loops.join_next()).await {
        if let Ok(Err(e)) = r {
            failure.get_or_insert(e);
        }
    }
    tasks.close();
    let finished = tokio::time::timeout_at(deadline, tasks.wait())
        .await
        .is_ok();
    // Replies still buffered go out if the server takes them by the deadline; a client that is
    // reconnecting would otherwise hold the flush (and the process) forever.
    if tokio::time::timeout_at(deadline, client.flush())
        .await
        .is_err()
    {
        tracing::warn!("NATS did not take the last replies before the shutdown deadline");
    }
    drop(handler);
    if finished {
        // Nothing is in flight: the pipeline threads stop as soon as their queues are empty.
        let stopping = tokio::task::spawn_blocking(move || pipeline.shutdown());
        let _ = tokio::time::timeout_at(deadline, stopping).await;
    } else {
        // Past the deadline, stop here: unacknowledged jobs are redelivered to other workers,
        // and callers of unanswered requests time out and retry.
        tracing::warn!("shutdown deadline reached with work in flight; unacknowledged jobs will be redelivered");
    }
    eprintln!("clip-worker stopped");
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// What `start` leaves running once the worker is ready.
struct Started {
    client: async_nats::Client,
    handler: Arc<Handler>,
    pipeline: Arc<Pipeline>,
    loops: tokio::task::JoinSet<Result<(), ServeError>>,
}

/// Loads and warms up the model, then connects and sets up the endpoints and the job consumer,
/// retrying while NATS is away (see [`startup`]).
async fn start(
    args: &ServeArgs,
    health: &Health,
    shutdown: &CancellationToken,
    tasks: &TaskTracker,
) -> Result<Started, ServeError> {
    let fetches = args.uri.workers(args.max_doc_bytes as u64)?;
    let fetch = fetches.policy().clone();
    let engine_args = args.engine.clone();
    // Fetching a missing model (minutes for the large ones) and loading it both block.
    let engine = tokio::task::spawn_blocking(move || -> Result<Engine, ServeError> {
        let mut options = engine_args.options()?;
        options.fetch = fetch;
        Ok(Engine::load(&options)?)
    })
    .await
    .map_err(ServeError::LoadAborted)??;
    tracing::info!(model = %engine.spec.name, dim = engine.dim(), "model loaded");
    let device = engine
        .model
        .devices()
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    telemetry::metrics().set_model_info(
        engine.spec.name,
        &device,
        &engine.model.dtype.to_string(),
        engine.dim(),
        engine.spec.image_size,
    );
    telemetry::metrics().set_text_length(engine.model.text_path.as_str());
    telemetry::trace::set_model(engine.spec.name, &device);
    let pipeline = Pipeline::start(
        engine.model.clone(),
        engine.preprocessor.clone(),
        BatchConfig {
            minibatch_size: args.engine.minibatch_size,
            max_batch_delay: args.max_batch_delay,
            num_worker_preprocess: args.engine.num_worker_preprocess,
            max_inflight_docs: args.max_inflight_docs,
            max_queue_time: (!args.max_queue_time.is_zero()).then_some(args.max_queue_time),
            ..BatchConfig::default()
        },
    )?;
    watch_pipeline(health, &pipeline);
    warm_up(&pipeline).await?;
    health.set_model_warm();

    let client = startup::connect(&args.nats.options()).await?;
    watch_connection(health, &client);
    let js = async_nats::jetstream::new(client.clone());
    let handler = Arc::new(Handler {
        pipeline: pipeline.clone(),
        model: args.engine.model.clone(),
        limits: Limits {
            max_docs: args.max_docs_per_request,
            max_doc_bytes: args.max_doc_bytes,
            ..Limits::default()
        },
        objects: Some(ObjectFetcher {
            jetstream: js.clone(),
        }),
        fetches: Some(fetches),
        client: client.clone(),
    });

    let mut loops = tokio::task::JoinSet::new();
    if args.mode != Mode::Jobs {
        let cfg = ServiceConfig {
            name: args.service_name.clone(),
            prefix: args.prefix.clone(),
            queue_group: args.queue_group.clone(),
        };
        let endpoints = startup::retry("request/reply service", &client, || {
            service::start(&client, &handler, &cfg)
        })
        .await?;
        let (h, s, t) = (handler.clone(), shutdown.clone(), tasks.clone());
        loops.spawn(async move {
            service::run(endpoints, h, cfg, s, t).await;
            Ok(())
        });
    }
    if args.mode != Mode::Service {
        let cfg = JobsConfig {
            stream: args.stream.clone(),
            prefix: args.prefix.clone(),
            consumer: args.consumer.clone(),
            bind: args.bind_existing,
            max_ack_pending: args.max_ack_pending,
            ack_wait: args.ack_wait,
            max_deliver: args.max_deliver,
            nak_delay: args.nak_delay,
            max_inflight_jobs: args.max_inflight_jobs,
            default_reply_subject: args
                .results_subject
                .clone()
                .unwrap_or_else(|| Subjects::new(&args.prefix).results()),
        };
        let consumer =
            startup::retry("JetStream setup", &client, || jobs::consumer(&js, &cfg)).await?;
        let publisher = Publisher::new(client.clone(), js.clone());
        let (h, s, t) = (handler.clone(), shutdown.clone(), tasks.clone());
        loops.spawn(async move {
            jobs::run(consumer, h, publisher, cfg, s, t).await;
            Ok(())
        });
    }
    Ok(Started {
        client,
        handler,
        pipeline,
        loops,
    })
}

/// Liveness follows the pipeline threads; queue depths and in-flight documents are sampled
/// at each scrape. Weak references: the pipeline must stop when serve drops it.
fn watch_pipeline(health: &Health, pipeline: &Arc<Pipeline>) {
    let weak = Arc::downgrade(pipeline);
    health.set_pipeline_check(move || weak.upgrade().is_some_and(|p| p.threads_alive()));
    let weak = Arc::downgrade(pipeline);
    telemetry::metrics().on_scrape(move |m| {
        let Some(p) = weak.upgrade() else { return };
        let depths = p.queue_depths();
        for (queue, depth) in [
            ("preprocess", depths.preprocess),
            ("text", depths.text),
            ("image", depths.image),
        ] {
            m.queue_depth.with_label_values(&[queue]).set(depth as i64);
        }
        let admitted = p.config().max_inflight_docs.saturating_sub(p.available());
        m.inflight_documents.set(admitted as i64);
        for modality in [Modality::Text, Modality::Image] {
            // Unknown until a document has been through: reported as 0.
            let wait = p.expected_wait(modality).unwrap_or_default();
            m.expected_wait
                .with_label_values(&[modality.as_str()])
                .set(wait.as_secs_f64());
        }
    });
}

/// Readiness requires a live connection; its state and reconnects are sampled at each scrape.
fn watch_connection(health: &Health, client: &async_nats::Client) {
    use async_nats::connection::State;
    let c = client.clone();
    health.set_nats_check(move || c.connection_state() == State::Connected);
    let c = client.clone();
    telemetry::metrics().on_scrape(move |m| {
        m.nats_connected
            .set(i64::from(c.connection_state() == State::Connected));
        let connects = c.statistics().connects.load(Ordering::Relaxed);
        Metrics::catch_up(&m.nats_reconnects, connects.saturating_sub(1));
    });
}

/// One real inference on each tower before the worker calls itself ready: sessions allocate
/// and (on GPUs) compile kernels on their first run, which must not be paid by a caller.
async fn warm_up(pipeline: &Pipeline) -> Result<(), ServeError> {
    let docs = vec![
        Document::text("warm-up"),
        Document {
            tensor: Some(PixelTensor {
                shape: vec![8, 8, 3],
                data: vec![0; 8 * 8 * 3],
            }),
            ..Document::default()
        },
    ];
    let admission = pipeline
        .admit(&docs)
        .await
        .map_err(|e| ServeError::WarmUp(e.to_string()))?;
    for result in pipeline.embed(docs, &admission).await {
        result.map_err(|e| ServeError::WarmUp(e.to_string()))?;
    }
    tracing::info!("model warmed up");
    Ok(())
}
