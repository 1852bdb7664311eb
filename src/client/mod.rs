//! A client for running workers: encode and rank over request/reply, or as durable JetStream
//! jobs, with batches packed under the server's `max_payload`, large images sent through the
//! Object Store, and `overloaded` answers retried with backoff. Results come back in input order.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use clip_worker::client::{Client, Options};
//! use clip_worker::cli::jsonl::InputDoc;
//! use clip_worker::preprocess::input::Document;
//! use clip_worker::transport::connect::NatsArgs;
//!
//! let client = Client::connect(&NatsArgs::for_url("nats://127.0.0.1:4222"), "clip").await?;
//! let docs = vec![InputDoc { id: "0".into(), doc: Ok(Document::text("a photo of a cat")), matches: vec![] }];
//! for r in client.encode(docs, &Options::default()).await {
//!     println!("{:?}", r.map(|e| e.embedding.len()));
//! }
//! # Ok(()) }
//! ```

pub mod output;
pub mod pack;
pub mod upload;

use crate::cli::jsonl::InputDoc;
use crate::engine::{Embedded, Ranked, RankedMatch};
use crate::error::{DocError, ErrorCode};
use crate::preprocess::fetch::FetchPolicy;
use crate::protocol::{
    self, EmbeddingDtype, Params, Request, Response, ResultDoc, WireDoc, WireError,
    PROTOCOL_VERSION,
};
use crate::telemetry::trace;
use crate::transport::connect::{ConnectError, NatsArgs};
use crate::transport::handler::JobKind;
use crate::transport::{JOB_ID_HEADER, PROTOCOL_HEADER, REPLY_TO_HEADER};
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::{HeaderMap, RequestErrorKind};
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;
use tracing::Instrument;

/// How work is sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// Publish durable JetStream jobs instead of request/reply.
    pub durable: bool,
    /// Documents per request (rank: roots and their matches together; a root is never split).
    pub batch_size: usize,
    /// Requests (or jobs) in flight at once.
    pub concurrency: usize,
    /// How long to wait for one request's reply (or one job's result, from its publication).
    pub timeout: Duration,
    /// Ask for L2-normalised embeddings.
    pub normalize: bool,
    /// Ask for float16 embeddings on the wire (results are still returned as f32).
    pub dtype: EmbeddingDtype,
    /// Sent as `params.model`: the worker refuses the request if it serves another model.
    pub model: Option<String>,
    /// Object Store bucket for images larger than one message.
    pub object_bucket: String,
    /// Tries of a request answered `overloaded`/`shutting_down` or finding no worker.
    pub max_attempts: u32,
}

impl Options {
    /// Bytes of one embedding value on the wire.
    pub fn dtype_bytes(&self) -> usize {
        match self.dtype {
            EmbeddingDtype::F32 => 4,
            EmbeddingDtype::F16 => 2,
        }
    }
}

/// Embedding dimension assumed before the first reply (the largest CLIP models have 1280).
const DIM_GUESS: usize = 1280;

impl Default for Options {
    fn default() -> Self {
        Options {
            durable: false,
            batch_size: 32,
            concurrency: 4,
            timeout: Duration::from_secs(60),
            normalize: false,
            dtype: EmbeddingDtype::F32,
            model: None,
            object_bucket: "clip-uploads".into(),
            max_attempts: 6,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("no connection to NATS at {urls} within {waited:?}")]
    NotConnected { urls: String, waited: Duration },
    #[error("durable jobs: {0}")]
    Jobs(String),
}

/// Where durable-job results arrive: one inbox per client, subscribed before any job is published.
struct JobInbox {
    subject: String,
    pending: Arc<Mutex<HashMap<String, oneshot::Sender<async_nats::Message>>>>,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for JobInbox {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl JobInbox {
    fn register(&self, job_id: &str) -> oneshot::Receiver<async_nats::Message> {
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(job_id.to_string(), tx);
        rx
    }

    fn forget(&self, job_id: &str) {
        lock(&self.pending).remove(job_id);
    }
}

/// One attempt's failure: worth another try, or not.
enum Attempt {
    Retry(DocError),
    Fatal(DocError),
}

pub struct Client {
    nats: async_nats::Client,
    jetstream: async_nats::jetstream::Context,
    prefix: String,
    max_payload: usize,
    uploader: upload::Uploader,
    inbox: tokio::sync::OnceCell<JobInbox>,
    /// Unique to this client: prefixes request ids and job ids.
    token: String,
    seq: AtomicU64,
    fetch: FetchPolicy,
    /// Embedding dimension seen in replies (until then, a generous guess) to size replies.
    dim: AtomicUsize,
}

impl Client {
    /// Connects (waiting up to 10 s for the server) to the workers serving `prefix`.
    pub async fn connect(nats: &NatsArgs, prefix: &str) -> Result<Client, ClientError> {
        Self::connect_within(nats, prefix, Duration::from_secs(10)).await
    }

    pub async fn connect_within(
        nats: &NatsArgs,
        prefix: &str,
        wait: Duration,
    ) -> Result<Client, ClientError> {
        let client = nats.connect().await?;
        // The connection is made in the background: wait for the server's INFO (max_payload).
        let start = tokio::time::Instant::now();
        while client.try_server_info().is_none()
            || client.connection_state() != async_nats::connection::State::Connected
        {
            if start.elapsed() > wait {
                return Err(ClientError::NotConnected {
                    urls: nats.urls.join(","),
                    waited: wait,
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let info = client.server_info();
        let max_payload = if info.max_payload > 0 {
            info.max_payload
        } else {
            client.max_payload()
        };
        let jetstream = async_nats::jetstream::new(client.clone());
        let token = client
            .new_inbox()
            .rsplit('.')
            .next()
            .unwrap_or("client")
            .to_string();
        Ok(Client {
            uploader: upload::Uploader::new(jetstream.clone(), max_payload),
            nats: client,
            jetstream,
            prefix: prefix.to_string(),
            max_payload,
            inbox: tokio::sync::OnceCell::new(),
            token,
            seq: AtomicU64::new(0),
            fetch: FetchPolicy::default(),
            dim: AtomicUsize::new(DIM_GUESS),
        })
    }

    /// The server's `max_payload`: no request this client sends is larger.
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    pub fn nats(&self) -> &async_nats::Client {
        &self.nats
    }

    /// The request/reply subject for a kind of work.
    pub fn subject(&self, kind: JobKind) -> String {
        format!("{}.{}", self.prefix, kind.as_str())
    }

    /// The durable-job subject for a kind of work.
    pub fn jobs_subject(&self, kind: JobKind) -> String {
        format!("{}.jobs.{}", self.prefix, kind.as_str())
    }

    fn dim_hint(&self) -> usize {
        self.dim.load(Ordering::Relaxed)
    }

    fn learn_dim(&self, doc: &ResultDoc) {
        if let Some(e) = &doc.embedding {
            if let Some(&d) = e.shape.first() {
                self.dim.store(d.max(1), Ordering::Relaxed);
            }
        }
    }

    fn next_id(&self) -> String {
        format!(
            "{}-{}",
            self.token,
            self.seq.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// Checks that a JetStream stream captures the job subject (a worker created it).
    pub async fn check_jobs_stream(&self, kind: JobKind) -> Result<(), ClientError> {
        let subject = self.jobs_subject(kind);
        self.jetstream.stream_by_subject(subject.clone()).await.map(|_| ()).map_err(|e| {
            ClientError::Jobs(format!(
                "no JetStream stream captures `{subject}` ({e}): start a worker with `clip-worker serve` (mode both or jobs) and the same --prefix"
            ))
        })
    }

    /// Encodes documents; one result per document, in input order.
    pub async fn encode(
        &self,
        docs: Vec<InputDoc>,
        opts: &Options,
    ) -> Vec<Result<Embedded, DocError>> {
        let mut out = Vec::with_capacity(docs.len());
        let _ = self
            .encode_each(docs, opts, |_, r| {
                out.push(r);
                Ok::<(), std::convert::Infallible>(())
            })
            .await;
        out
    }

    /// Encodes documents, handing each result to `sink` in input order as soon as it and all
    /// before it are known. Only an error from `sink` stops early.
    pub async fn encode_each<E>(
        &self,
        docs: Vec<InputDoc>,
        opts: &Options,
        mut sink: impl FnMut(String, Result<Embedded, DocError>) -> Result<(), E>,
    ) -> Result<(), E> {
        let chunks = into_chunks(docs, opts.batch_size.max(1), |_| 1);
        let mut results = futures::stream::iter(chunks)
            .map(|chunk| self.encode_chunk(chunk, opts))
            .buffered(opts.concurrency.max(1));
        while let Some(chunk) = results.next().await {
            for (id, r) in chunk {
                sink(id, r)?;
            }
        }
        Ok(())
    }

    /// Ranks each root's matches against it; one result per root, in input order.
    pub async fn rank(
        &self,
        roots: Vec<InputDoc>,
        opts: &Options,
    ) -> Vec<Result<Ranked, DocError>> {
        let mut out = Vec::with_capacity(roots.len());
        let _ = self
            .rank_each(roots, opts, |_, _, r| {
                out.push(r);
                Ok::<(), std::convert::Infallible>(())
            })
            .await;
        out
    }

    /// Ranks, handing `(root id, match ids, result)` to `sink` in input order.
    pub async fn rank_each<E>(
        &self,
        roots: Vec<InputDoc>,
        opts: &Options,
        mut sink: impl FnMut(String, Vec<String>, Result<Ranked, DocError>) -> Result<(), E>,
    ) -> Result<(), E> {
        let chunks = into_chunks(roots, opts.batch_size.max(1), |r| 1 + r.matches.len());
        let mut results = futures::stream::iter(chunks)
            .map(|chunk| self.rank_chunk(chunk, opts))
            .buffered(opts.concurrency.max(1));
        while let Some(chunk) = results.next().await {
            for (id, match_ids, r) in chunk {
                sink(id, match_ids, r)?;
            }
        }
        Ok(())
    }

    /// Loads a chunk's documents off the async threads (files, URLs).
    async fn load_all(
        &self,
        docs: Vec<Result<crate::preprocess::input::Document, DocError>>,
    ) -> Vec<Result<WireDoc, DocError>> {
        let n = docs.len();
        let fetch = self.fetch.clone();
        tokio::task::spawn_blocking(move || {
            docs.into_iter()
                .map(|d| d.and_then(|d| pack::load(d, &fetch)))
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_else(|e| {
            vec![
                Err(DocError::new(
                    ErrorCode::Internal,
                    format!("loading inputs: {e}")
                ));
                n
            ]
        })
    }

    /// Makes a document fit in one request: an oversized blob goes to the Object Store.
    async fn fit(&self, mut doc: WireDoc, opts: &Options) -> Result<(WireDoc, usize), DocError> {
        let budget = pack::request_budget(self.max_payload);
        let size = pack::encoded_len(&doc)?;
        if pack::fits_alone(size, budget) {
            return Ok((doc, size));
        }
        match doc.blob.take() {
            Some(bytes)
                if doc.text.as_deref().is_none_or(str::is_empty) && doc.tensor.is_none() =>
            {
                doc.object = Some(self.uploader.upload(&opts.object_bucket, &bytes).await?);
                let size = pack::encoded_len(&doc)?;
                Ok((doc, size))
            }
            _ => Err(pack::too_large(size, budget, "document")),
        }
    }

    async fn encode_chunk(
        &self,
        chunk: Vec<InputDoc>,
        opts: &Options,
    ) -> Vec<(String, Result<Embedded, DocError>)> {
        let (ids, docs): (Vec<String>, Vec<_>) = chunk.into_iter().map(|d| (d.id, d.doc)).unzip();
        let loaded = self.load_all(docs).await;
        let mut results: Vec<Option<Result<Embedded, DocError>>> = Vec::with_capacity(loaded.len());
        let mut ready: Vec<(usize, WireDoc, usize)> = Vec::new();
        for (i, d) in loaded.into_iter().enumerate() {
            match d {
                Ok(d) => match self.fit(d, opts).await {
                    Ok((d, size)) => {
                        results.push(None);
                        ready.push((i, d, size));
                    }
                    Err(e) => results.push(Some(Err(e))),
                },
                Err(e) => results.push(Some(Err(e))),
            }
        }
        let budget = pack::request_budget(self.max_payload);
        // One request at a time, each packed with the reply size known so far.
        let mut rest = ready;
        while !rest.is_empty() {
            let reply = pack::reply_estimate(self.dim_hint(), opts.dtype_bytes(), 0);
            let items: Vec<pack::Item> = rest
                .iter()
                .map(|(_, _, size)| pack::Item {
                    size: *size,
                    docs: 1,
                    reply,
                })
                .collect();
            let take = first_group(&items, opts.batch_size, budget);
            let (slots, docs): (Vec<usize>, Vec<WireDoc>) =
                rest.drain(..take).map(|(i, d, _)| (i, d)).unzip();
            let answers = self.call(JobKind::Encode, docs, opts).await;
            for (slot, answer) in slots.into_iter().zip(answers) {
                if let Some(r) = results.get_mut(slot) {
                    *r = Some(answer.and_then(embedded));
                }
            }
        }
        ids.into_iter()
            .zip(results)
            .map(|(id, r)| (id, r.unwrap_or_else(|| Err(missing()))))
            .collect()
    }

    async fn rank_chunk(
        &self,
        chunk: Vec<InputDoc>,
        opts: &Options,
    ) -> Vec<(String, Vec<String>, Result<Ranked, DocError>)> {
        let budget = pack::request_budget(self.max_payload);
        let mut out = Vec::with_capacity(chunk.len());
        // (slot in the chunk, root with matches, encoded size, matches that failed to load)
        type Prepared = (usize, WireDoc, usize, Vec<(usize, DocError)>);
        let mut prepared: Vec<Prepared> = Vec::new();
        for (slot, root) in chunk.into_iter().enumerate() {
            let match_ids: Vec<String> = root.matches.iter().map(|m| m.id.clone()).collect();
            let n_matches = root.matches.len();
            let mut docs = vec![root.doc];
            docs.extend(root.matches.into_iter().map(|m| m.doc));
            let mut loaded = self.load_all(docs).await.into_iter();
            let root_doc = loaded.next().unwrap_or_else(|| Err(missing()));
            let mut matches = Vec::new();
            let mut failed = Vec::new();
            for (j, m) in loaded.enumerate() {
                match m {
                    Ok(mut m) => {
                        m.id = Some(j.to_string());
                        matches.push(m);
                    }
                    Err(e) => failed.push((j, e)),
                }
            }
            let result = match root_doc {
                Err(e) => Err(e),
                Ok(_) if n_matches == 0 => Err(DocError::new(
                    ErrorCode::InvalidDocument,
                    "a rank document needs at least one match",
                )),
                Ok(_) if matches.is_empty() => {
                    Err(failed.first().map_or_else(missing, |(_, e)| {
                        DocError::new(
                            e.code,
                            format!(
                                "none of the {n_matches} matches could be loaded; the first: {}",
                                e.message
                            ),
                        )
                    }))
                }
                Ok(mut r) => {
                    r.matches = matches;
                    match self.fit_root(r, budget, opts).await {
                        Ok((r, size)) => {
                            prepared.push((slot, r, size, failed));
                            out.push((root.id, match_ids, Err(missing())));
                            continue;
                        }
                        Err(e) => Err(e),
                    }
                }
            };
            out.push((root.id, match_ids, result));
        }
        let mut rest = prepared;
        while !rest.is_empty() {
            let dim = self.dim_hint();
            let items: Vec<pack::Item> = rest
                .iter()
                .map(|(_, r, size, _)| pack::Item {
                    size: *size,
                    docs: 1 + r.matches.len(),
                    reply: pack::reply_estimate(dim, opts.dtype_bytes(), r.matches.len()),
                })
                .collect();
            let take = first_group(&items, opts.batch_size, budget);
            let mut slots = Vec::with_capacity(take);
            let mut docs = Vec::with_capacity(take);
            for (slot, doc, _, failed) in rest.drain(..take) {
                slots.push((slot, failed));
                docs.push(doc);
            }
            let answers = self.call(JobKind::Rank, docs, opts).await;
            for ((slot, failed), answer) in slots.into_iter().zip(answers) {
                if let Some(entry) = out.get_mut(slot) {
                    entry.2 = answer.and_then(|d| ranked(d, failed));
                }
            }
        }
        out
    }

    /// Makes a rank root (with its matches) fit one request, uploading its largest blobs first.
    async fn fit_root(
        &self,
        mut root: WireDoc,
        budget: usize,
        opts: &Options,
    ) -> Result<(WireDoc, usize), DocError> {
        loop {
            let size = pack::encoded_len(&root)?;
            if pack::fits_alone(size, budget) {
                return Ok((root, size));
            }
            let blob_len = |d: &WireDoc| {
                if d.text.as_deref().is_none_or(str::is_empty) && d.tensor.is_none() {
                    d.blob.as_ref().map_or(0, Vec::len)
                } else {
                    0
                }
            };
            let root_len = blob_len(&root);
            let best = root
                .matches
                .iter()
                .enumerate()
                .map(|(i, m)| (blob_len(m), i))
                .max()
                .unwrap_or((0, 0));
            let target = if root_len >= best.0 {
                None
            } else {
                Some(best.1)
            };
            let doc = match target {
                None => &mut root,
                Some(i) => match root.matches.get_mut(i) {
                    Some(m) => m,
                    None => return Err(pack::too_large(size, budget, "rank document")),
                },
            };
            if blob_len(doc) == 0 {
                return Err(pack::too_large(
                    size,
                    budget,
                    "rank document with its matches",
                ));
            }
            if let Some(bytes) = doc.blob.take() {
                doc.object = Some(self.uploader.upload(&opts.object_bucket, &bytes).await?);
            }
        }
    }

    /// Sends documents as one request (split in two when the worker says it is too large) and
    /// returns one answer per document, in order. Documents answered `overloaded` or
    /// `shutting_down` on their own are sent again (bounded by `max_attempts`).
    pub fn call<'a>(
        &'a self,
        kind: JobKind,
        docs: Vec<WireDoc>,
        opts: &'a Options,
    ) -> BoxFuture<'a, Vec<Result<ResultDoc, DocError>>> {
        self.call_with(kind, docs, opts, opts.max_attempts.saturating_sub(1))
    }

    fn call_with<'a>(
        &'a self,
        kind: JobKind,
        mut docs: Vec<WireDoc>,
        opts: &'a Options,
        resends: u32,
    ) -> BoxFuture<'a, Vec<Result<ResultDoc, DocError>>> {
        async move {
            let n = docs.len();
            if n == 0 {
                return Vec::new();
            }
            for (i, d) in docs.iter_mut().enumerate() {
                d.id = Some(i.to_string());
            }
            let request = Request {
                id: Some(self.next_id()),
                docs,
                params: Some(Params {
                    normalize: opts.normalize.then_some(true),
                    embedding_dtype: (opts.dtype != EmbeddingDtype::F32).then_some(opts.dtype),
                    model: opts.model.clone(),
                }),
            };
            let response = self.exchange(kind, &request, opts).await;
            let mut docs = request.docs;
            match response {
                Err(e) => vec![Err(e); n],
                Ok(r) => match r.error {
                    Some(err) if err.code == ErrorCode::TooLarge && n > 1 => {
                        let second = docs.split_off(n / 2);
                        let mut out = self.call_with(kind, docs, opts, resends).await;
                        out.extend(self.call_with(kind, second, opts, resends).await);
                        out
                    }
                    Some(err) => vec![Err(doc_error(err)); n],
                    None => {
                        if let Some(d) = r.docs.iter().find(|d| d.embedding.is_some()) {
                            self.learn_dim(d);
                        }
                        let mut out = align(r.docs, n);
                        let again: Vec<usize> = (0..n)
                            .filter(|&i| out.get(i).is_some_and(failed_transiently))
                            .collect();
                        if resends > 0 && !again.is_empty() {
                            let round = opts.max_attempts.saturating_sub(resends).min(6);
                            tokio::time::sleep(Duration::from_millis(100u64 << round)).await;
                            let retry: Vec<WireDoc> = again
                                .iter()
                                .map(|&i| docs.get_mut(i).map(std::mem::take).unwrap_or_default())
                                .collect();
                            let redone = self.call_with(kind, retry, opts, resends - 1).await;
                            for (i, r) in again.into_iter().zip(redone) {
                                if let Some(slot) = out.get_mut(i) {
                                    *slot = r;
                                }
                            }
                        }
                        out
                    }
                },
            }
        }
        .boxed()
    }

    /// One request's exchange with retries of transient failures.
    pub async fn exchange(
        &self,
        kind: JobKind,
        request: &Request,
        opts: &Options,
    ) -> Result<Response, DocError> {
        let payload = bytes::Bytes::from(protocol::encode(request)?);
        let attempts = opts.max_attempts.max(1);
        let mut delay = Duration::from_millis(100);
        let mut attempt = 1;
        loop {
            let result = if opts.durable {
                self.job_once(kind, payload.clone(), opts).await
            } else {
                self.request_once(kind, payload.clone(), opts).await
            };
            // What to hand back if this was the last try.
            let last = match result {
                Ok(r) => match &r.error {
                    Some(e) if transient(e.code) => Ok(r),
                    _ => return Ok(r),
                },
                Err(Attempt::Fatal(e)) => return Err(e),
                Err(Attempt::Retry(e)) => Err(e),
            };
            if attempt >= attempts {
                return last;
            }
            let why = match &last {
                Ok(r) => r
                    .error
                    .as_ref()
                    .map(|e| e.message.clone())
                    .unwrap_or_default(),
                Err(e) => e.message.clone(),
            };
            tracing::debug!(attempt, reason = %why, "retrying a request");
            attempt += 1;
            // Exponential backoff with jitter from the clock, capped at 5 s.
            let jitter = u64::from(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.subsec_millis()),
            ) % 100;
            tokio::time::sleep(delay + Duration::from_millis(jitter)).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    async fn request_once(
        &self,
        kind: JobKind,
        payload: bytes::Bytes,
        opts: &Options,
    ) -> Result<Response, Attempt> {
        let subject = self.subject(kind);
        let mut headers = HeaderMap::new();
        headers.insert(PROTOCOL_HEADER, PROTOCOL_VERSION);
        // The request's producer span: the worker's spans continue its trace.
        let span = trace::send_span(&subject);
        trace::inject(&span, &mut headers, None);
        let request = async_nats::Request::new()
            .payload(payload)
            .headers(headers)
            .timeout(Some(opts.timeout));
        let sent = self
            .nats
            .send_request(subject.clone(), request)
            .instrument(span)
            .await;
        match sent {
            Ok(msg) => protocol::decode_response(&msg.payload).map_err(|e| {
                Attempt::Fatal(DocError::new(
                    ErrorCode::Internal,
                    format!("reply on `{subject}`: {}", e.message),
                ))
            }),
            Err(e) => Err(match e.kind() {
                RequestErrorKind::NoResponders => Attempt::Retry(DocError::new(
                    ErrorCode::Overloaded,
                    format!("no worker is listening on `{subject}`"),
                )),
                RequestErrorKind::TimedOut => Attempt::Fatal(DocError::new(
                    ErrorCode::Overloaded,
                    format!("no reply on `{subject}` within {:?}", opts.timeout),
                )),
                RequestErrorKind::MaxPayloadExceeded => return Ok(too_large_response(&e)),
                _ => Attempt::Retry(DocError::new(
                    ErrorCode::Internal,
                    format!("request on `{subject}`: {e}"),
                )),
            }),
        }
    }

    async fn job_inbox(&self) -> Result<&JobInbox, DocError> {
        self.inbox
            .get_or_try_init(|| async {
                let subject = self.nats.new_inbox();
                let mut sub = self.nats.subscribe(subject.clone()).await.map_err(|e| {
                    DocError::new(
                        ErrorCode::Internal,
                        format!("subscribing to the results inbox: {e}"),
                    )
                })?;
                // Make sure the server has the subscription before any job is published.
                self.nats
                    .flush()
                    .await
                    .map_err(|e| DocError::new(ErrorCode::Internal, format!("flushing: {e}")))?;
                let pending: Arc<Mutex<HashMap<String, oneshot::Sender<async_nats::Message>>>> =
                    Arc::default();
                let routes = pending.clone();
                let reader = tokio::spawn(async move {
                    while let Some(msg) = sub.next().await {
                        let id = msg
                            .headers
                            .as_ref()
                            .and_then(|h| h.get(JOB_ID_HEADER))
                            .map(|v| v.as_str().to_string());
                        let Some(id) = id else { continue };
                        // A job's result can arrive twice (redelivery): only the first is used.
                        if let Some(tx) = lock(&routes).remove(&id) {
                            let _ = tx.send(msg);
                        }
                    }
                });
                Ok(JobInbox {
                    subject,
                    pending,
                    reader,
                })
            })
            .await
    }

    async fn job_once(
        &self,
        kind: JobKind,
        payload: bytes::Bytes,
        opts: &Options,
    ) -> Result<Response, Attempt> {
        let inbox = self.job_inbox().await.map_err(Attempt::Fatal)?;
        let subject = self.jobs_subject(kind);
        let job_id = self.next_id();
        let mut headers = HeaderMap::new();
        headers.insert(REPLY_TO_HEADER, inbox.subject.as_str());
        headers.insert("Nats-Msg-Id", job_id.as_str());
        headers.insert(PROTOCOL_HEADER, PROTOCOL_VERSION);
        let span = trace::send_span(&subject);
        trace::inject(&span, &mut headers, None);
        let rx = inbox.register(&job_id);
        let published = async {
            match self
                .jetstream
                .publish_with_headers(subject.clone(), headers, payload)
                .await
            {
                Ok(ack) => ack.await,
                Err(e) => Err(e),
            }
        }
        .instrument(span)
        .await;
        if let Err(e) = published {
            inbox.forget(&job_id);
            return Err(match e.kind() {
                PublishErrorKind::StreamNotFound => Attempt::Fatal(DocError::new(
                    ErrorCode::Internal,
                    format!("no JetStream stream captures `{subject}`: is a worker serving durable jobs with this prefix?"),
                )),
                PublishErrorKind::MaxPayloadExceeded => return Ok(too_large_response(&e)),
                _ => Attempt::Retry(DocError::new(ErrorCode::Internal, format!("publishing a job to `{subject}`: {e}"))),
            });
        }
        match tokio::time::timeout(opts.timeout, rx).await {
            Ok(Ok(msg)) => protocol::decode_response(&msg.payload).map_err(|e| {
                Attempt::Fatal(DocError::new(
                    ErrorCode::Internal,
                    format!("result of job `{job_id}`: {}", e.message),
                ))
            }),
            Ok(Err(_)) => Err(Attempt::Fatal(DocError::new(
                ErrorCode::Internal,
                format!("the results inbox closed before job `{job_id}` was answered"),
            ))),
            Err(_) => {
                inbox.forget(&job_id);
                Err(Attempt::Fatal(DocError::new(
                    ErrorCode::Overloaded,
                    format!(
                        "no result for job `{job_id}` within {:?}; it stays queued in the stream",
                        opts.timeout
                    ),
                )))
            }
        }
    }
}

/// How many of `items` go in the next request (at least one).
fn first_group(items: &[pack::Item], batch_size: usize, budget: usize) -> usize {
    pack::pack(items, batch_size.max(1), budget)
        .first()
        .map_or(items.len(), |g| g.len().max(1))
        .min(items.len())
}

/// Groups items in order so that each group holds at most `max` units (an item over `max` alone).
fn into_chunks<T>(items: Vec<T>, max: usize, units: impl Fn(&T) -> usize) -> Vec<Vec<T>> {
    let mut chunks = Vec::new();
    let mut current = Vec::new();
    let mut used = 0;
    for item in items {
        let u = units(&item);
        if !current.is_empty() && used + u > max {
            chunks.push(std::mem::take(&mut current));
            used = 0;
        }
        used += u;
        current.push(item);
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    chunks
}

/// Errors worth another try: the worker was full or stopping.
fn transient(code: ErrorCode) -> bool {
    matches!(code, ErrorCode::Overloaded | ErrorCode::ShuttingDown)
}

fn failed_transiently(answer: &Result<ResultDoc, DocError>) -> bool {
    matches!(answer, Ok(d) if d.error.as_ref().is_some_and(|e| transient(e.code)))
}

fn missing() -> DocError {
    DocError::new(
        ErrorCode::Internal,
        "the response has no result for this document",
    )
}

fn doc_error(e: WireError) -> DocError {
    DocError::new(e.code, e.message)
}

fn too_large_response(e: &dyn std::fmt::Display) -> Response {
    Response::failure(None, "", DocError::new(ErrorCode::TooLarge, e.to_string()))
}

/// Places response documents by their id (the position we gave them).
fn align(docs: Vec<ResultDoc>, n: usize) -> Vec<Result<ResultDoc, DocError>> {
    let mut out: Vec<Option<ResultDoc>> = vec![None; n];
    for d in docs {
        if let Some(slot) = d.id.parse::<usize>().ok().and_then(|i| out.get_mut(i)) {
            if slot.is_none() {
                *slot = Some(d);
            }
        }
    }
    out.into_iter().map(|d| d.ok_or_else(missing)).collect()
}

fn embedded(doc: ResultDoc) -> Result<Embedded, DocError> {
    if let Some(e) = doc.error {
        return Err(doc_error(e));
    }
    match (doc.modality, doc.embedding) {
        (Some(modality), Some(e)) => Ok(Embedded {
            modality,
            embedding: e.to_f32(),
        }),
        _ => Err(DocError::new(
            ErrorCode::Internal,
            "the response document has no embedding",
        )),
    }
}

/// A rank root from its response document; `failed` are the matches that could not be loaded.
fn ranked(doc: ResultDoc, mut failed: Vec<(usize, DocError)>) -> Result<Ranked, DocError> {
    let matches = doc.matches.clone().unwrap_or_default();
    let root = embedded(ResultDoc {
        matches: None,
        ..doc
    })?;
    let mut scored = Vec::new();
    for m in matches {
        let Ok(index) = m.id.parse::<usize>() else {
            continue;
        };
        match (m.error, m.scores) {
            (Some(e), _) => failed.push((index, doc_error(e))),
            (None, Some(s)) => scored.push(RankedMatch {
                index,
                clip_score: s.clip_score,
                clip_score_cosine: s.clip_score_cosine,
            }),
            (None, None) => failed.push((index, missing())),
        }
    }
    failed.sort_by_key(|(i, _)| *i);
    Ok(Ranked {
        root,
        matches: scored,
        failed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_respect_units() {
        let c = into_chunks(vec![1, 1, 1, 5, 1], 3, |x| *x);
        assert_eq!(c, vec![vec![1, 1, 1], vec![5], vec![1]]);
        assert!(into_chunks(Vec::<usize>::new(), 3, |x| *x).is_empty());
    }

    #[test]
    fn responses_are_aligned_by_id() {
        let doc = |id: &str| ResultDoc {
            id: id.into(),
            modality: None,
            embedding: None,
            scores: None,
            matches: None,
            error: None,
        };
        let out = align(vec![doc("1"), doc("0"), doc("9"), doc("x")], 3);
        assert_eq!(out[0].as_ref().unwrap().id, "0");
        assert_eq!(out[1].as_ref().unwrap().id, "1");
        assert_eq!(out[2].as_ref().unwrap_err().code, ErrorCode::Internal);
    }
}
