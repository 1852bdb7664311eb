//! The `clip-worker` command line: encode and rank in-process, list models.

pub(crate) mod args;
pub(crate) mod bench;
pub(crate) mod duration;
pub(crate) mod models;
pub(crate) mod nats;
pub(crate) mod serve;
pub(crate) mod shutdown;
pub(crate) mod submit;
pub(crate) mod uri;

use crate::client::ClientError;
use crate::docio::{self, lines, InputDoc};
use crate::engine::{Engine, EngineError};
use crate::error::DocError;
use crate::preprocess::input::{document_from_cli_arg, Document};
use args::EngineArgs;
use clap::{Parser, Subcommand};
use std::io::Write;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "clip-worker",
    version,
    about = "CLIP embeddings and cross-modal ranking, compatible with CLIP-as-service"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log line format on standard error: text, or JSON lines (with the trace id of the span).
    #[arg(
        long,
        global = true,
        env = "CLIP_WORKER_LOG_FORMAT",
        value_enum,
        default_value_t = crate::telemetry::LogFormat::Text
    )]
    pub log_format: crate::telemetry::LogFormat,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Encode sentences and images into embeddings (one JSON line per document).
    Encode(EncodeArgs),
    /// Re-order candidates by CLIP score against a query (one JSON line per query).
    Rank(RankArgs),
    /// Serve encode and rank over NATS: request/reply and durable JetStream jobs.
    Serve(Box<serve::ServeArgs>),
    /// Send encode or rank work to running workers over NATS (request/reply or durable jobs).
    Submit(Box<submit::SubmitArgs>),
    /// List, download, verify and locate models (`models` alone lists them).
    Models(models::ModelsArgs),
    /// Measure a running fleet through NATS, or the model, preprocessing or engine in process.
    Bench(Box<bench::BenchArgs>),
}

#[derive(Debug, clap::Args)]
pub struct EncodeArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Sentences, image paths, http(s) URLs or data: URIs.
    pub inputs: Vec<String>,
    /// JSON lines of documents: {"id","text"}, {"id","uri"}, {"id","blob": base64}.
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// Write JSON lines here instead of standard output.
    #[arg(long)]
    pub output: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct RankArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    /// The query: a sentence, image path, URL or data: URI.
    #[arg(long)]
    pub query: Option<String>,
    /// Candidates to rank against the query.
    pub candidates: Vec<String>,
    /// JSON lines of documents that carry `matches`.
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// Write JSON lines here instead of standard output.
    #[arg(long)]
    pub output: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Input(#[from] docio::JsonlError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Serve(serve::ServeError),
    #[error(transparent)]
    Models(#[from] crate::model::StoreError),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Bench(Box<crate::bench::BenchError>),
}

pub fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Encode(a) => encode(a),
        Command::Rank(a) => rank(a),
        Command::Serve(a) => serve::serve(*a).map_err(CliError::Serve),
        Command::Submit(a) => submit::run(*a),
        Command::Models(a) => models::run(a),
        Command::Bench(a) => bench::run(*a),
    }
}

fn load_inputs(args: &[String], file: &Option<PathBuf>) -> Result<Vec<InputDoc>, CliError> {
    let mut docs: Vec<InputDoc> = args
        .iter()
        .enumerate()
        .map(|(i, a)| InputDoc::new(i.to_string(), document_from_cli_arg(a)))
        .collect();
    if let Some(path) = file {
        let first = docs.len();
        docs.extend(docio::read_docs_from(path, first)?);
    }
    Ok(docs)
}

fn writer(path: &Option<PathBuf>) -> Result<Box<dyn Write>, CliError> {
    Ok(match path {
        Some(p) => Box::new(std::io::BufWriter::new(std::fs::File::create(p)?)),
        None => Box::new(std::io::BufWriter::new(std::io::stdout())),
    })
}

fn encode(a: EncodeArgs) -> Result<(), CliError> {
    let docs = load_inputs(&a.inputs, &a.input)?;
    if docs.is_empty() {
        return Err(CliError::Usage(
            "nothing to encode: give INPUT arguments or --input".into(),
        ));
    }
    let engine = Engine::load(&a.engine.options()?)?;
    let mut out = writer(&a.output)?;
    // Stream in slices so a large input file neither waits for the end nor holds every embedding.
    for slice in docs.chunks(engine.minibatch_size * 8) {
        let (valid, results) = encode_slice(&engine, slice);
        let mut results = results.into_iter();
        for (d, ok) in slice.iter().zip(valid) {
            let r = if ok {
                results.next().unwrap_or_else(|| Err(internal()))
            } else {
                Err(d.doc.clone().err().unwrap_or_else(internal))
            };
            writeln!(out, "{}", lines::encode_line(&d.id, &r))?;
        }
    }
    out.flush()?;
    log_dispatch(&engine);
    Ok(())
}

/// With several session sets, how the minibatches were spread over them.
fn log_dispatch(engine: &Engine) {
    let model = &engine.model;
    if model.replicas() > 1 {
        let spread: Vec<String> = model
            .devices()
            .iter()
            .zip(model.dispatched())
            .map(|(d, n)| format!("{d}={n}"))
            .collect();
        tracing::info!("minibatches per session set: {}", spread.join(" "));
    }
}

fn internal() -> DocError {
    DocError::new(crate::error::ErrorCode::Internal, "missing result")
}

fn encode_slice(
    engine: &Engine,
    slice: &[InputDoc],
) -> (Vec<bool>, Vec<Result<crate::engine::Embedded, DocError>>) {
    let valid: Vec<bool> = slice.iter().map(|d| d.doc.is_ok()).collect();
    let docs: Vec<Document> = slice
        .iter()
        .filter_map(|d| d.doc.as_ref().ok().cloned())
        .collect();
    (valid, engine.encode(&docs))
}

fn rank(a: RankArgs) -> Result<(), CliError> {
    let mut roots: Vec<InputDoc> = Vec::new();
    match (&a.query, a.candidates.is_empty()) {
        (Some(q), false) => {
            let mut query = InputDoc::new("query", document_from_cli_arg(q));
            query.matches = load_inputs(&a.candidates, &None)?;
            roots.push(query);
        }
        (Some(_), true) => {
            return Err(CliError::Usage(
                "--query needs at least one CANDIDATE".into(),
            ))
        }
        (None, false) => return Err(CliError::Usage("CANDIDATE arguments need --query".into())),
        (None, true) => {}
    }
    if let Some(path) = &a.input {
        roots.extend(load_inputs(&[], &Some(path.clone()))?);
    }
    if roots.is_empty() {
        return Err(CliError::Usage(
            "nothing to rank: give --query with candidates, or --input".into(),
        ));
    }
    let engine = Engine::load(&a.engine.options()?)?;
    let mut out = writer(&a.output)?;
    for root in &roots {
        let match_ids: Vec<String> = root.matches.iter().map(|m| m.id.clone()).collect();
        let result = match (&root.doc, root.matches.is_empty()) {
            (Err(e), _) => Err(e.clone()),
            (Ok(_), true) => Err(DocError::new(
                crate::error::ErrorCode::InvalidDocument,
                "a rank document needs at least one match",
            )),
            (Ok(doc), false) => rank_one(&engine, doc, &root.matches),
        };
        writeln!(out, "{}", lines::rank_line(&root.id, &match_ids, &result))?;
    }
    out.flush()?;
    log_dispatch(&engine);
    Ok(())
}

fn rank_one(
    engine: &Engine,
    root: &Document,
    matches: &[InputDoc],
) -> Result<crate::engine::Ranked, DocError> {
    // Matches that failed to parse keep their slot, so indices stay aligned with `matches`.
    let mut all = vec![Ok(root.clone())];
    all.extend(matches.iter().map(|m| m.doc.clone()));
    let valid: Vec<&Document> = all.iter().filter_map(|d| d.as_ref().ok()).collect();
    let docs: Vec<Document> = valid.into_iter().cloned().collect();
    let mut encoded = engine.encode(&docs).into_iter();
    let mut results = Vec::with_capacity(all.len());
    for d in &all {
        results.push(match d {
            Ok(_) => encoded.next().unwrap_or_else(|| Err(internal())),
            Err(e) => Err(e.clone()),
        });
    }
    let mut results = results.into_iter();
    let root = results.next().unwrap_or_else(|| Err(internal()))?;
    Ok(crate::engine::rank_embedded(root, results.collect()))
}
