//! Dynamic minibatching: documents from many messages are preprocessed on a thread pool and
//! coalesced into per-modality minibatches (bounded by size and by wait) for the ONNX sessions.
//!
//! ```text
//!  embed(docs) ──► prep queue ──► N preprocess threads ──► text queue ──► text tower thread
//!   (admitted)       (bounded)                         └─► image queue ─► image tower thread
//!        ◄──────────────── one-shot reply per document ◄────────────────────────┘
//! ```
//! Admission is a semaphore over in-flight documents, so every queue behind it is bounded.

mod stats;
mod tower;

pub use stats::{BatchStats, TowerStats};

use crate::engine::{ClipModel, Embedded, Prepared, Preprocessor};
use crate::error::{DocError, ErrorCode};
use crate::preprocess::input::{Document, Modality};
use futures::stream::{self, StreamExt};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};
use tower::TowerJob;

/// Batching knobs (see `clip-worker serve --help`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchConfig {
    /// Largest minibatch fed to a tower.
    pub minibatch_size: usize,
    /// Longest a minibatch waits to fill up once its first document is ready.
    pub max_batch_delay: Duration,
    /// Threads that decode, resize and tokenize.
    pub num_worker_preprocess: usize,
    /// Documents admitted at once (queued, preprocessing or in a batch); more is `overloaded`.
    pub max_inflight_docs: usize,
    /// Minibatch-sized chunks of one request allowed in flight at once, so a large request
    /// interleaves with small ones instead of starving them.
    pub chunks_per_request: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            minibatch_size: 32,
            max_batch_delay: Duration::from_millis(5),
            num_worker_preprocess: 4,
            max_inflight_docs: 2048,
            chunks_per_request: 2,
        }
    }
}

struct PrepJob {
    doc: Document,
    reply: oneshot::Sender<Result<Embedded, DocError>>,
    span: tracing::Span,
}

/// Queue lengths at one instant (see [`Pipeline::queue_depths`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueDepths {
    pub preprocess: usize,
    pub text: usize,
    pub image: usize,
}

/// Permission to put documents into the pipeline; released when dropped.
pub struct Admission {
    _permit: OwnedSemaphorePermit,
}

/// The running batcher: preprocess pool and one inference thread per tower.
pub struct Pipeline {
    prep_tx: crossbeam_channel::Sender<PrepJob>,
    /// Read-only handles on the tower queues, to report their depth.
    text_queue: crossbeam_channel::Receiver<TowerJob<Vec<u32>>>,
    image_queue: crossbeam_channel::Receiver<TowerJob<Vec<f32>>>,
    inflight: Arc<Semaphore>,
    config: BatchConfig,
    pub stats: Arc<BatchStats>,
    threads: std::sync::Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl Pipeline {
    pub fn start(
        model: Arc<ClipModel>,
        preprocessor: Preprocessor,
        config: BatchConfig,
    ) -> Arc<Self> {
        let size = config.minibatch_size.max(1);
        let config = BatchConfig {
            minibatch_size: size,
            num_worker_preprocess: config.num_worker_preprocess.max(1),
            max_inflight_docs: config.max_inflight_docs.max(size),
            chunks_per_request: config.chunks_per_request.max(1),
            ..config
        };
        let stats = Arc::new(BatchStats::default());
        let (prep_tx, prep_rx) = crossbeam_channel::bounded::<PrepJob>(config.max_inflight_docs);
        let (text_tx, text_rx) = crossbeam_channel::bounded::<TowerJob<Vec<u32>>>(2 * size);
        let (image_tx, image_rx) = crossbeam_channel::bounded::<TowerJob<Vec<f32>>>(2 * size);
        let mut threads = Vec::new();
        for i in 0..config.num_worker_preprocess {
            let (rx, text_tx, image_tx, pre) = (
                prep_rx.clone(),
                text_tx.clone(),
                image_tx.clone(),
                preprocessor.clone(),
            );
            let spawned = std::thread::Builder::new()
                .name(format!("preprocess-{i}"))
                .spawn(move || preprocess_loop(rx, pre, text_tx, image_tx));
            if let Ok(h) = spawned {
                threads.push(h);
            }
        }
        drop((text_tx, image_tx));
        let text_model = model.clone();
        let (text_queue, image_queue) = (text_rx.clone(), image_rx.clone());
        threads.extend(tower::spawn(
            "tower-text",
            text_rx,
            Modality::Text,
            config.clone(),
            stats.text.clone(),
            move |batch: &[&Vec<u32>]| {
                let refs: Vec<&[u32]> = batch.iter().map(|v| v.as_slice()).collect();
                text_model.run_text(&refs)
            },
        ));
        threads.extend(tower::spawn(
            "tower-image",
            image_rx,
            Modality::Image,
            config.clone(),
            stats.image.clone(),
            move |batch: &[&Vec<f32>]| {
                let refs: Vec<&[f32]> = batch.iter().map(|v| v.as_slice()).collect();
                model.run_images(&refs)
            },
        ));
        Arc::new(Pipeline {
            prep_tx,
            text_queue,
            image_queue,
            inflight: Arc::new(Semaphore::new(config.max_inflight_docs)),
            config,
            stats,
            threads: std::sync::Mutex::new(threads),
        })
    }

    pub fn config(&self) -> &BatchConfig {
        &self.config
    }

    /// Admits `docs` documents now, or says `overloaded` (request/reply answers at once).
    pub fn try_admit(&self, docs: usize) -> Result<Admission, DocError> {
        let n = self.permits(docs)?;
        self.inflight
            .clone()
            .try_acquire_many_owned(n)
            .map(|p| Admission { _permit: p })
            .map_err(|_| DocError::new(ErrorCode::Overloaded, "worker is at capacity; retry later"))
    }

    /// Waits until `docs` documents can be admitted (durable jobs wait instead of failing).
    pub async fn admit(&self, docs: usize) -> Result<Admission, DocError> {
        let n = self.permits(docs)?;
        self.inflight
            .clone()
            .acquire_many_owned(n)
            .await
            .map(|p| Admission { _permit: p })
            .map_err(|_| DocError::new(ErrorCode::ShuttingDown, "worker is shutting down"))
    }

    /// Documents that can be admitted right now.
    pub fn available(&self) -> usize {
        self.inflight.available_permits()
    }

    /// Documents waiting to be preprocessed, and prepared documents waiting for the text and
    /// image towers.
    pub fn queue_depths(&self) -> QueueDepths {
        QueueDepths {
            preprocess: self.prep_tx.len(),
            text: self.text_queue.len(),
            image: self.image_queue.len(),
        }
    }

    /// Whether every preprocess and inference thread is still running.
    pub fn threads_alive(&self) -> bool {
        match self.threads.lock() {
            Ok(t) => !t.is_empty() && t.iter().all(|h| !h.is_finished()),
            Err(_) => false,
        }
    }

    fn permits(&self, docs: usize) -> Result<u32, DocError> {
        if docs > self.config.max_inflight_docs {
            return Err(DocError::new(
                ErrorCode::TooLarge,
                format!(
                    "{docs} documents exceed this worker's in-flight limit of {}",
                    self.config.max_inflight_docs
                ),
            ));
        }
        Ok(docs.max(1) as u32)
    }

    /// Embeds admitted documents; one result per document, in order.
    pub async fn embed(
        &self,
        docs: Vec<Document>,
        _admission: &Admission,
    ) -> Vec<Result<Embedded, DocError>> {
        let size = self.config.minibatch_size;
        let mut chunks: Vec<Vec<Document>> = Vec::new();
        let mut docs = docs.into_iter().peekable();
        while docs.peek().is_some() {
            chunks.push(docs.by_ref().take(size).collect());
        }
        stream::iter(chunks)
            .map(|chunk| self.embed_chunk(chunk))
            .buffered(self.config.chunks_per_request)
            .flat_map(stream::iter)
            .collect()
            .await
    }

    async fn embed_chunk(&self, docs: Vec<Document>) -> Vec<Result<Embedded, DocError>> {
        let receivers: Vec<_> = docs
            .into_iter()
            .map(|doc| {
                let (reply, rx) = oneshot::channel();
                let job = PrepJob {
                    doc,
                    reply,
                    span: tracing::Span::current(),
                };
                // Admission bounds the queue, so this never blocks the async runtime.
                match self.prep_tx.try_send(job) {
                    Ok(()) => Some(rx),
                    Err(_) => None,
                }
            })
            .collect();
        let mut out = Vec::with_capacity(receivers.len());
        for rx in receivers {
            out.push(match rx {
                Some(rx) => rx.await.unwrap_or_else(|_| {
                    Err(DocError::new(
                        ErrorCode::Internal,
                        "pipeline dropped the document",
                    ))
                }),
                None => Err(DocError::new(
                    ErrorCode::Overloaded,
                    "preprocess queue is full",
                )),
            });
        }
        out
    }

    /// Stops the threads once every queued document is done. Call after the last `embed`.
    pub fn shutdown(self: Arc<Self>) {
        let threads = match self.threads.lock() {
            Ok(mut t) => std::mem::take(&mut *t),
            Err(_) => Vec::new(),
        };
        drop(self);
        for t in threads {
            let _ = t.join();
        }
    }
}

fn preprocess_loop(
    rx: crossbeam_channel::Receiver<PrepJob>,
    pre: Preprocessor,
    text_tx: crossbeam_channel::Sender<TowerJob<Vec<u32>>>,
    image_tx: crossbeam_channel::Sender<TowerJob<Vec<f32>>>,
) {
    while let Ok(job) = rx.recv() {
        let _enter = job.span.enter();
        let started = std::time::Instant::now();
        let prepared = {
            let _s = tracing::debug_span!("preprocess").entered();
            // A decoder bug must cost one document, not a pool thread.
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| pre.prepare(&job.doc)))
                .unwrap_or_else(|_| {
                    tracing::error!(
                        "preprocessing panicked; the document fails with an internal error"
                    );
                    Err(DocError::new(
                        ErrorCode::Internal,
                        "preprocessing failed unexpectedly",
                    ))
                })
        };
        crate::telemetry::metrics()
            .preprocess_duration
            .with_label_values(&[prepared_modality(&prepared, &job.doc)])
            .observe(started.elapsed().as_secs_f64());
        let span = job.span.clone();
        let enqueued = std::time::Instant::now();
        let sent = match prepared {
            Ok(Prepared::Text(ids)) => text_tx
                .send(TowerJob {
                    input: ids,
                    reply: job.reply,
                    span,
                    enqueued,
                })
                .map_err(|e| e.0.reply),
            Ok(Prepared::Image(px)) => image_tx
                .send(TowerJob {
                    input: px,
                    reply: job.reply,
                    span,
                    enqueued,
                })
                .map_err(|e| e.0.reply),
            Err(e) => {
                let _ = job.reply.send(Err(e));
                Ok(())
            }
        };
        if let Err(reply) = sent {
            let _ = reply.send(Err(DocError::new(
                ErrorCode::ShuttingDown,
                "inference thread stopped",
            )));
        }
    }
}

/// The tower a document went to, or would have gone to had it been prepared.
fn prepared_modality(prepared: &Result<Prepared, DocError>, doc: &Document) -> &'static str {
    match prepared {
        Ok(p) => p.modality().as_str(),
        Err(_) => doc.content().map_or("unknown", |c| c.modality().as_str()),
    }
}
