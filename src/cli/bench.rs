//! `clip-worker bench`: load a running fleet through NATS, or run the same inputs in process
//! (model only, preprocessing only, the engine without NATS), and report what was measured.

use super::args::EngineArgs;
use super::duration::{format_duration, parse_duration};
use super::nats::NatsArgs;
use super::CliError;
use crate::batch::BatchConfig;
use crate::bench::baseline;
use crate::bench::{self, BenchError, ImageSize, Plan, Pool, Report, Target, Workload};
use crate::defaults;
use crate::engine::Engine;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Default run length.
const DURATION: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum InProcess {
    /// The towers alone on ready inputs, one minibatch of --batch-size per call (the ceiling).
    Model,
    /// Decoding, resizing and tokenizing alone, on one thread (per core).
    Preprocess,
    /// The batching engine end to end without NATS, at --concurrency.
    Engine,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WorkloadArg {
    Text,
    Image,
    Mixed,
}

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Run in this process instead of through NATS: model, preprocess or engine (the model
    /// flags below then apply).
    #[arg(long, env = "CLIP_WORKER_BENCH_IN_PROCESS", value_enum)]
    pub in_process: Option<InProcess>,
    /// Documents to send: captions, images, or both alternating.
    #[arg(
        long,
        env = "CLIP_WORKER_BENCH_WORKLOAD",
        value_enum,
        default_value = "mixed"
    )]
    pub workload: WorkloadArg,
    /// Sizes of the generated photo-like JPEGs (quality 85), comma-separated.
    #[arg(
        long,
        env = "CLIP_WORKER_BENCH_IMAGE_SIZES",
        value_delimiter = ',',
        default_value = "640x480,1920x1080"
    )]
    pub image_sizes: Vec<ImageSize>,
    /// Send the images in this folder (searched recursively) instead of generated ones.
    #[arg(long, env = "CLIP_WORKER_BENCH_IMAGE_DIR")]
    pub image_dir: Option<PathBuf>,
    /// Documents per request.
    #[arg(long, env = "CLIP_WORKER_BATCH_SIZE", default_value_t = defaults::BATCH_SIZE)]
    pub batch_size: usize,
    /// Requests (or jobs) in flight at once.
    #[arg(long, env = "CLIP_WORKER_CONCURRENCY", default_value_t = defaults::CONCURRENCY)]
    pub concurrency: usize,
    /// Start this many requests per second, however many are unanswered (fixed arrival rate,
    /// instead of --concurrency).
    #[arg(long, env = "CLIP_WORKER_BENCH_RATE")]
    pub rate: Option<f64>,
    /// How long to send for.
    #[arg(long, env = "CLIP_WORKER_BENCH_DURATION", default_value = format_duration(DURATION), value_parser = parse_duration)]
    pub duration: Duration,
    /// Send this many requests instead (--duration is then ignored).
    #[arg(long, env = "CLIP_WORKER_BENCH_COUNT")]
    pub count: Option<u64>,
    /// A worker's /metrics URL, scraped before and after the run for its minibatch sizes and
    /// the time spent in each stage.
    #[arg(long, env = "CLIP_WORKER_BENCH_METRICS_URL")]
    pub metrics_url: Option<String>,
    /// Print the report as JSON instead of a table.
    #[arg(long, env = "CLIP_WORKER_BENCH_JSON", default_value_t = false)]
    pub json: bool,
    /// Write the inputs (texts.txt, images/) to this folder and exit, for other clients to send
    /// the same documents.
    #[arg(long, env = "CLIP_WORKER_BENCH_SAVE_INPUTS")]
    pub save_inputs: Option<PathBuf>,
    /// No progress line on standard error.
    #[arg(long, env = "CLIP_WORKER_BENCH_QUIET", default_value_t = false)]
    pub quiet: bool,
    #[command(flatten)]
    pub nats: NatsArgs,
    /// Subject prefix the workers serve.
    #[arg(long, env = "CLIP_WORKER_PREFIX", default_value = defaults::PREFIX)]
    pub prefix: String,
    /// Send durable JetStream jobs instead of request/reply.
    #[arg(long, env = "CLIP_WORKER_DURABLE", default_value_t = false)]
    pub durable: bool,
    /// Wait for one reply (or one job's result, from its publication) at most this long.
    #[arg(long, env = "CLIP_WORKER_TIMEOUT", default_value = format_duration(defaults::TIMEOUT), value_parser = parse_duration)]
    pub timeout: Duration,
    /// --in-process engine: longest a minibatch waits to fill once its first document is ready.
    #[arg(long, env = "CLIP_WORKER_MAX_BATCH_DELAY", default_value = format_duration(defaults::MAX_BATCH_DELAY), value_parser = parse_duration)]
    pub max_batch_delay: Duration,
    #[command(flatten)]
    pub engine: EngineArgs,
}

impl BenchArgs {
    fn plan(&self) -> Plan {
        Plan {
            concurrency: self.concurrency.max(1),
            rate: self.rate.filter(|r| *r > 0.0),
            duration: self.duration,
            count: self.count,
            progress: !self.quiet,
        }
    }

    fn pool(&self) -> Result<Pool, CliError> {
        let workload = match self.workload {
            WorkloadArg::Text => Workload::Text,
            WorkloadArg::Image => Workload::Image,
            WorkloadArg::Mixed => Workload::Mixed,
        };
        let files = match &self.image_dir {
            Some(dir) => Some(super::submit::images_in(dir)?),
            None => None,
        };
        Pool::build(workload, &self.image_sizes, files.as_deref()).map_err(bench_error)
    }
}

fn bench_error(e: BenchError) -> CliError {
    CliError::Bench(Box::new(e))
}

pub(crate) fn run(args: BenchArgs) -> Result<(), CliError> {
    if args.rate.is_some()
        && matches!(
            args.in_process,
            Some(InProcess::Model | InProcess::Preprocess)
        )
    {
        return Err(CliError::Usage(
            "--rate applies to NATS runs and --in-process engine only".into(),
        ));
    }
    let pool = Arc::new(args.pool()?);
    if let Some(dir) = &args.save_inputs {
        return pool.save(dir).map_err(bench_error);
    }
    let plan = args.plan();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("clip-bench")
        .build()?;
    let report = match args.in_process {
        None => {
            let target = Target {
                nats: args.nats.options(),
                prefix: args.prefix.clone(),
                durable: args.durable,
                timeout: args.timeout,
                metrics_url: args.metrics_url.clone(),
            };
            runtime
                .block_on(bench::run_nats(&target, pool, args.batch_size, &plan))
                .map_err(bench_error)?
        }
        Some(kind) => in_process(&args, kind, pool, &plan, &runtime)?,
    };
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.table());
    }
    Ok(())
}

fn in_process(
    args: &BenchArgs,
    kind: InProcess,
    pool: Arc<Pool>,
    plan: &Plan,
    runtime: &tokio::runtime::Runtime,
) -> Result<Report, CliError> {
    let options = args.engine.options()?;
    let engine = Engine::load(&options)?;
    let threads = format!(
        "intra-op {}, inter-op {}, preprocess {}",
        describe(options.session.intra_threads),
        describe(options.session.inter_threads),
        match kind {
            InProcess::Engine => engine.num_worker_preprocess,
            _ => 1,
        }
    );
    let mut report = match kind {
        InProcess::Model => baseline::model(&engine, &pool, args.batch_size, plan),
        InProcess::Preprocess => baseline::preprocess(&engine, &pool, args.batch_size, plan),
        InProcess::Engine => {
            let config = BatchConfig {
                minibatch_size: engine.minibatch_size,
                max_batch_delay: args.max_batch_delay,
                num_worker_preprocess: engine.num_worker_preprocess,
                ..BatchConfig::default()
            };
            runtime.block_on(baseline::engine(
                &engine,
                config,
                pool,
                args.batch_size,
                plan,
            ))
        }
    }
    .map_err(bench_error)?;
    report.threads = Some(threads);
    Ok(report)
}

fn describe(threads: usize) -> String {
    match threads {
        0 => "ONNX Runtime's default".into(),
        n => n.to_string(),
    }
}
