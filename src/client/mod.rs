//! A client for running workers: encode and rank over request/reply, or as durable JetStream
//! jobs, with batches packed under the server's `max_payload`, large images sent through the
//! Object Store, and transient failures retried under one policy. Results come back in input
//! order.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use clip_worker::client::{Client, Options};
//! use clip_worker::docio::InputDoc;
//! use clip_worker::preprocess::input::Document;
//! use clip_worker::transport::connect::NatsOptions;
//!
//! let client = Client::connect(&NatsOptions::for_url("nats://127.0.0.1:4222"), "clip").await?;
//! let docs = vec![InputDoc::new("0", Document::text("a photo of a cat"))];
//! for r in client.encode(docs, &Options::default()).await {
//!     println!("{:?}", r.map(|e| e.embedding.len()));
//! }
//! # Ok(()) }
//! ```

mod answers;
mod call;
mod encode;
mod error;
mod exchange;
mod inbox;
mod options;
pub(crate) mod pack;
mod rank;
pub(crate) mod retry;
pub mod upload;

pub use error::ClientError;
pub use options::Options;
pub use retry::RetryPolicy;

use crate::docio::InputDoc;
use crate::engine::{Embedded, Ranked};
use crate::error::{DocError, ErrorCode};
use crate::preprocess::fetch::FetchPolicy;
use crate::preprocess::input::Document;
use crate::protocol::{JobKind, ResultDoc, Subjects, WireDoc};
use crate::transport::connect::NatsOptions;
use futures::StreamExt;
use inbox::JobInbox;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// Embedding dimension assumed before the first reply (the largest CLIP models have 1280).
const DIM_GUESS: usize = 1280;

/// How long [`Client::connect`] waits for the server.
const CONNECT_WAIT: Duration = Duration::from_secs(10);

pub struct Client {
    nats: async_nats::Client,
    jetstream: async_nats::jetstream::Context,
    subjects: Subjects,
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
    pub async fn connect(nats: &NatsOptions, prefix: &str) -> Result<Client, ClientError> {
        Self::connect_within(nats, prefix, CONNECT_WAIT).await
    }

    pub async fn connect_within(
        nats: &NatsOptions,
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
            subjects: Subjects::new(prefix),
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
    pub(crate) fn subject(&self, kind: JobKind) -> String {
        self.subjects.request(kind)
    }

    /// The durable-job subject for a kind of work.
    pub(crate) fn jobs_subject(&self, kind: JobKind) -> String {
        self.subjects.job(kind)
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

    async fn job_inbox(&self) -> Result<&JobInbox, DocError> {
        self.inbox
            .get_or_try_init(|| JobInbox::open(&self.nats))
            .await
    }

    /// Checks that a JetStream stream captures the job subject (a worker created it).
    pub(crate) async fn check_jobs_stream(&self, kind: JobKind) -> Result<(), ClientError> {
        let subject = self.jobs_subject(kind);
        match self.jetstream.stream_by_subject(subject.clone()).await {
            Ok(_) => Ok(()),
            Err(source) => Err(ClientError::NoJobsStream { subject, source }),
        }
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
    pub(crate) async fn encode_each<E>(
        &self,
        docs: Vec<InputDoc>,
        opts: &Options,
        mut sink: impl FnMut(String, Result<Embedded, DocError>) -> Result<(), E>,
    ) -> Result<(), E> {
        let chunks = pack::into_chunks(docs, opts.batch_size.max(1), |_| 1);
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

    /// Ranks, handing `(root id, match ids, result)` to `sink` in input order.
    pub(crate) async fn rank_each<E>(
        &self,
        roots: Vec<InputDoc>,
        opts: &Options,
        mut sink: impl FnMut(String, Vec<String>, Result<Ranked, DocError>) -> Result<(), E>,
    ) -> Result<(), E> {
        let chunks = pack::into_chunks(roots, opts.batch_size.max(1), |r| 1 + r.matches.len());
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
        docs: Vec<Result<Document, DocError>>,
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
}
