//! `clip-worker submit`: send encode or rank work to running workers over NATS.

use super::duration::{format_duration, parse_duration};
use super::nats::NatsArgs;
use super::CliError;
use crate::client::{Client, Options};
use crate::defaults;
use crate::docio::output::{self, EncodeSink, JsonlEncode, NpyEncode};
use crate::docio::{self, InputDoc};
use crate::error::DocError;
use crate::preprocess::input::{document_from_cli_arg, uri_looks_like_image, Document};
use crate::protocol::{EmbeddingDtype, JobKind};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct SubmitArgs {
    #[command(subcommand)]
    pub job: SubmitJob,
}

#[derive(Debug, clap::Subcommand)]
pub enum SubmitJob {
    /// Encode sentences, image files, folders of images, http(s) URLs or data: URIs.
    Encode(SubmitEncodeArgs),
    /// Re-order candidates by CLIP score against a query.
    Rank(SubmitRankArgs),
}

#[derive(Debug, clap::Args)]
pub struct SubmitEncodeArgs {
    /// Sentences, image files, folders (searched recursively for images), http(s) URLs or data:
    /// URIs. Files and URLs are read here and sent as bytes.
    pub inputs: Vec<String>,
    /// JSON lines of documents: {"id","text"}, {"id","uri"}, {"id","blob": base64} ("-": stdin).
    #[arg(long)]
    pub input: Option<PathBuf>,
    #[command(flatten)]
    pub common: SubmitOptions,
}

#[derive(Debug, clap::Args)]
pub struct SubmitRankArgs {
    /// The query: a sentence, image path, URL or data: URI.
    #[arg(long)]
    pub query: Option<String>,
    /// Candidates to rank against the query (folders are searched for images).
    pub candidates: Vec<String>,
    /// JSON lines of documents that carry `matches` ("-": stdin).
    #[arg(long)]
    pub input: Option<PathBuf>,
    #[command(flatten)]
    pub common: SubmitOptions,
}

#[derive(Debug, Clone, clap::Args)]
pub struct SubmitOptions {
    #[command(flatten)]
    pub nats: NatsArgs,
    /// Subject prefix the workers serve: `<prefix>.encode|rank`, `<prefix>.jobs.encode|rank`.
    #[arg(long, env = "CLIP_WORKER_PREFIX", default_value = defaults::PREFIX)]
    pub prefix: String,
    /// Send durable JetStream jobs (kept in the stream until a worker answers) instead of
    /// request/reply.
    #[arg(long, env = "CLIP_WORKER_DURABLE", default_value_t = false)]
    pub durable: bool,
    /// Documents per request (rank: a query and its candidates together, never split).
    #[arg(long, env = "CLIP_WORKER_BATCH_SIZE", default_value_t = defaults::BATCH_SIZE)]
    pub batch_size: usize,
    /// Requests (or jobs) in flight at once.
    #[arg(long, env = "CLIP_WORKER_CONCURRENCY", default_value_t = defaults::CONCURRENCY)]
    pub concurrency: usize,
    /// Wait for one reply (or one job's result, from its publication) at most this long.
    #[arg(long, env = "CLIP_WORKER_TIMEOUT", default_value = format_duration(defaults::TIMEOUT), value_parser = parse_duration)]
    pub timeout: Duration,
    /// Ask for L2-normalised embeddings.
    #[arg(long, env = "CLIP_WORKER_NORMALIZE", default_value_t = false)]
    pub normalize: bool,
    /// Ask for float16 embeddings on the wire (half the reply size; written as float32).
    #[arg(long, env = "CLIP_WORKER_F16", default_value_t = false)]
    pub f16: bool,
    /// Model the workers must serve (sent as params.model; a worker serving another refuses).
    #[arg(long, env = "CLIP_WORKER_MODEL")]
    pub model: Option<String>,
    /// Object Store bucket for images too large for one message (created, with a 24 h max
    /// age, if absent).
    #[arg(
        long,
        env = "CLIP_WORKER_OBJECT_BUCKET",
        default_value = defaults::OBJECT_BUCKET
    )]
    pub object_bucket: String,
    /// Write results here instead of standard output: JSON lines, or a float32 [N, D] matrix
    /// when the name ends in `.npy` (encode only; rows of failed documents are NaN and the
    /// command then exits non-zero).
    #[arg(long)]
    pub output: Option<PathBuf>,
}

impl SubmitOptions {
    pub(crate) fn options(&self) -> Options {
        Options {
            durable: self.durable,
            batch_size: self.batch_size.max(1),
            concurrency: self.concurrency.max(1),
            timeout: self.timeout,
            normalize: self.normalize,
            dtype: if self.f16 {
                EmbeddingDtype::F16
            } else {
                EmbeddingDtype::F32
            },
            model: self.model.clone(),
            object_bucket: self.object_bucket.clone(),
            ..Options::default()
        }
    }

    fn is_npy(&self) -> bool {
        self.output
            .as_ref()
            .and_then(|p| p.extension())
            .is_some_and(|e| e.eq_ignore_ascii_case("npy"))
    }

    fn writer(&self) -> Result<Box<dyn Write>, CliError> {
        Ok(match &self.output {
            Some(p) => Box::new(std::io::BufWriter::new(std::fs::File::create(p)?)),
            None => Box::new(std::io::BufWriter::new(std::io::stdout())),
        })
    }

    async fn connect(&self, kind: JobKind) -> Result<Client, CliError> {
        let client = Client::connect(&self.nats.options(), &self.prefix).await?;
        if self.durable {
            client.check_jobs_stream(kind).await?;
        }
        Ok(client)
    }
}

pub(crate) fn run(args: SubmitArgs) -> Result<(), CliError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("clip-submit")
        .build()?;
    runtime.block_on(async move {
        match args.job {
            SubmitJob::Encode(a) => encode(a).await,
            SubmitJob::Rank(a) => rank(a).await,
        }
    })
}

/// Image files under `dir`, recursively, by extension, sorted.
pub(crate) fn images_in(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let path = entry.path();
            let kind = entry.file_type()?;
            if kind.is_dir() {
                todo.push(path);
            } else if (kind.is_file() || path.is_file())
                && uri_looks_like_image(&path.to_string_lossy())
            {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Documents for command-line arguments: a folder becomes its images (id: the path), anything
/// else one document (id: its position), classified like `clip-worker encode` does.
pub(crate) fn docs_from_args(args: &[String]) -> Result<Vec<InputDoc>, CliError> {
    let mut docs = Vec::new();
    for a in args {
        if Path::new(a).is_dir() {
            for p in images_in(Path::new(a))? {
                let id = p.to_string_lossy().to_string();
                docs.push(InputDoc::new(id.clone(), Document::uri(id)));
            }
        } else {
            docs.push(InputDoc::new(
                docs.len().to_string(),
                document_from_cli_arg(a),
            ));
        }
    }
    Ok(docs)
}

fn progress(len: usize, batch: usize) -> ProgressBar {
    if len <= batch || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len as u64);
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} ({eta} left)",
    ) {
        bar.set_style(style);
    }
    bar
}

/// Reports failed documents on stderr (the first few in full, then a count).
struct Failures {
    count: usize,
}

impl Failures {
    const SHOWN: usize = 10;

    fn note(&mut self, bar: &ProgressBar, id: &str, e: &DocError) {
        self.count += 1;
        if self.count <= Self::SHOWN {
            bar.suspend(|| eprintln!("document `{id}` failed: {e}"));
        }
    }

    fn summary(&self, total: usize, what: &str) {
        if self.count > Self::SHOWN {
            eprintln!("... and {} more", self.count - Self::SHOWN);
        }
        if self.count > 0 {
            eprintln!("{} of {total} {what} failed", self.count);
        }
    }
}

async fn encode(a: SubmitEncodeArgs) -> Result<(), CliError> {
    let mut docs = docs_from_args(&a.inputs)?;
    if let Some(path) = &a.input {
        let offset = docs.len();
        docs.extend(docio::read_docs_from(path, offset)?);
    }
    if docs.is_empty() {
        return Err(CliError::Usage(
            "nothing to encode: give INPUT arguments or --input".into(),
        ));
    }
    let total = docs.len();
    let opts = a.common.options();
    let client = a.common.connect(JobKind::Encode).await?;
    let npy = a.common.is_npy();
    let mut sink: Box<dyn EncodeSink> = if npy {
        Box::new(NpyEncode::new(a.common.writer()?, total))
    } else {
        Box::new(JsonlEncode(a.common.writer()?))
    };
    let bar = progress(total, opts.batch_size);
    let mut failures = Failures { count: 0 };
    client
        .encode_each(docs, &opts, |id, r| {
            if let Err(e) = &r {
                failures.note(&bar, &id, e);
            }
            bar.inc(1);
            sink.push(&id, &r)
        })
        .await?;
    sink.finish()?;
    bar.finish_and_clear();
    failures.summary(total, "documents");
    if npy && failures.count > 0 {
        return Err(CliError::Usage(format!(
            "{} of {total} documents failed; their rows in the .npy file are NaN",
            failures.count
        )));
    }
    Ok(())
}

async fn rank(a: SubmitRankArgs) -> Result<(), CliError> {
    if a.common.is_npy() {
        return Err(CliError::Usage(
            "rank results are JSON lines: --output cannot be a .npy file".into(),
        ));
    }
    let mut roots: Vec<InputDoc> = Vec::new();
    match (&a.query, a.candidates.is_empty()) {
        (Some(q), false) => {
            let mut query = InputDoc::new("query", document_from_cli_arg(q));
            query.matches = docs_from_args(&a.candidates)?;
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
        roots.extend(docio::read_docs_from(path, 0)?);
    }
    if roots.is_empty() {
        return Err(CliError::Usage(
            "nothing to rank: give --query with candidates, or --input".into(),
        ));
    }
    let total = roots.len();
    let opts = a.common.options();
    let client = a.common.connect(JobKind::Rank).await?;
    let mut out = a.common.writer()?;
    let bar = progress(total, 1);
    let mut failures = Failures { count: 0 };
    client
        .rank_each(roots, &opts, |id, match_ids, r| {
            if let Err(e) = &r {
                failures.note(&bar, &id, e);
            }
            bar.inc(1);
            output::write_rank_line(&mut out, &id, &match_ids, &r)
        })
        .await?;
    out.flush()?;
    bar.finish_and_clear();
    failures.summary(total, "queries");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_expand_to_sorted_images_with_path_ids() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("b/c")).unwrap();
        for f in ["b/c/z.png", "a.JPG", "notes.txt", "b/y.webp"] {
            std::fs::write(dir.path().join(f), b"x").unwrap();
        }
        let found = images_in(dir.path()).unwrap();
        let names: Vec<String> = found
            .iter()
            .map(|p| {
                p.strip_prefix(dir.path())
                    .unwrap()
                    .to_string_lossy()
                    .to_string()
            })
            .collect();
        assert_eq!(names, ["a.JPG", "b/c/z.png", "b/y.webp"]);

        let args = vec![
            "a sentence".to_string(),
            dir.path().to_string_lossy().to_string(),
            "another".into(),
        ];
        let docs = docs_from_args(&args).unwrap();
        assert_eq!(docs.len(), 5);
        assert_eq!(docs[0].id, "0");
        assert!(docs[1].id.ends_with("a.JPG"));
        assert_eq!(docs[4].id, "4");
        assert_eq!(
            docs[4].doc.as_ref().unwrap().text.as_deref(),
            Some("another")
        );
    }
}
