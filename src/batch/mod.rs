//! Dynamic minibatching: documents from many messages are preprocessed on a thread pool and
//! coalesced into per-modality minibatches (bounded by size and by wait) for the ONNX sessions.
//!
//! ```text
//!  embed(docs) ──► prep queue ──► N preprocess threads ──► text queue ──► text tower thread
//!   (admitted)       (bounded)                         └─► image queue ─► image tower thread
//!        ◄──────────────── one-shot reply per document ◄────────────────────────┘
//! ```
//! Admission is a semaphore over in-flight documents, so every queue behind it is bounded;
//! request/reply admission also refuses work that would wait longer than `max_queue_time`
//! (see [`load`]).

mod load;
mod stats;
mod tower;

pub(crate) use stats::BatchStats;

use crate::defaults;
use crate::engine::{ClipModel, Embedded, InferenceError, Prepared, Preprocessor};
use crate::error::{DocError, ErrorCode};
use crate::preprocess::input::{Document, Modality};
use futures::stream::{self, StreamExt};
use load::{DocCounts, Load};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};
use tower::TowerJob;

/// Batching knobs (see `clip-worker serve --help`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchConfig {
    /// Largest minibatch fed to a tower.
    pub minibatch_size: usize,
    /// Longest a minibatch waits to fill up while more documents are on their way (counted from
    /// its oldest document's arrival); with none on the way a tower runs what it has at once.
    pub max_batch_delay: Duration,
    /// Threads that decode, resize and tokenize.
    pub num_worker_preprocess: usize,
    /// Documents admitted at once (queued, preprocessing or in a batch); more is `overloaded`.
    pub max_inflight_docs: usize,
    /// Longest expected wait a request/reply call is admitted into (at the speed of the
    /// recent minibatches); beyond it the call is answered `overloaded`. `None`: no limit.
    pub max_queue_time: Option<Duration>,
    /// Minibatch-sized chunks of one request allowed in flight at once, so a large request
    /// interleaves with small ones instead of starving them.
    pub chunks_per_request: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            minibatch_size: defaults::MINIBATCH_SIZE,
            max_batch_delay: defaults::MAX_BATCH_DELAY,
            num_worker_preprocess: defaults::NUM_WORKER_PREPROCESS,
            max_inflight_docs: defaults::MAX_INFLIGHT_DOCS,
            max_queue_time: Some(defaults::MAX_QUEUE_TIME),
            chunks_per_request: defaults::CHUNKS_PER_REQUEST,
        }
    }
}

struct PrepJob {
    doc: Document,
    reply: oneshot::Sender<Result<Embedded, DocError>>,
    span: tracing::Span,
    /// The tower's count of documents on their way, released once this one is queued or failed.
    arriving: Option<Arc<AtomicUsize>>,
}

/// Per tower: documents admitted whose preprocessing has not finished (the tower waits for
/// them to fill a minibatch; with none on the way it runs what it has).
#[derive(Default)]
struct Arriving {
    text: Arc<AtomicUsize>,
    image: Arc<AtomicUsize>,
}

/// Queue lengths at one instant (see [`Pipeline::queue_depths`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QueueDepths {
    pub preprocess: usize,
    pub text: usize,
    pub image: usize,
}

/// Permission to put documents into the pipeline; released when dropped.
pub struct Admission {
    _permit: OwnedSemaphorePermit,
    load: Arc<Load>,
    counts: DocCounts,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.load.remove(self.counts);
    }
}

/// The running batcher: preprocess pool and one inference thread per tower.
pub struct Pipeline {
    prep_tx: crossbeam_channel::Sender<PrepJob>,
    /// Read-only handles on the tower queues, to report their depth.
    text_queue: crossbeam_channel::Receiver<TowerJob<Vec<u32>>>,
    image_queue: crossbeam_channel::Receiver<TowerJob<Vec<f32>>>,
    inflight: Arc<Semaphore>,
    arriving: Arriving,
    load: Arc<Load>,
    config: BatchConfig,
    pub stats: Arc<BatchStats>,
    threads: std::sync::Mutex<Vec<std::thread::JoinHandle<()>>>,
}

/// The pipeline could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The operating system refused a thread (preprocess pool or tower).
    #[error("cannot start the `{name}` thread")]
    Spawn {
        name: String,
        #[source]
        source: std::io::Error,
    },
}

/// Turns one document into its tower's input (the preprocess pool runs it).
type PrepareFn = dyn Fn(&Document) -> Result<Prepared, DocError> + Send + Sync;

/// The sequence length a text of these token ids runs at (minibatches group similar ones).
type TextCostFn = dyn Fn(&[u32]) -> usize + Send + Sync;

impl PrepJob {
    /// No longer on its way to a tower (queued there, failed, or dropped).
    fn arrived(&self) {
        if let Some(a) = &self.arriving {
            a.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Pipeline {
    /// Starts the preprocess pool and the two tower threads for `model`.
    pub fn start(
        model: Arc<ClipModel>,
        preprocessor: Preprocessor,
        config: BatchConfig,
    ) -> Result<Arc<Self>, StartError> {
        let text_model = model.clone();
        let cost_model = model.clone();
        let replicas = model.replicas();
        Self::start_with(
            Arc::new(move |doc: &Document| preprocessor.prepare(doc)),
            move |batch: &[&[u32]]| text_model.run_text(batch),
            move |batch: &[&[f32]]| model.run_images(batch),
            Arc::new(move |ids: &[u32]| cost_model.text_cost(ids.len())),
            replicas,
            config,
        )
    }

    /// Starts the pipeline around any preprocessing and tower functions (a fake model in tests).
    fn start_with<T, I>(
        prepare: Arc<PrepareFn>,
        run_text: T,
        run_images: I,
        text_cost: Arc<TextCostFn>,
        replicas: usize,
        config: BatchConfig,
    ) -> Result<Arc<Self>, StartError>
    where
        T: Fn(&[&[u32]]) -> Result<Vec<Vec<f32>>, InferenceError> + Clone + Send + 'static,
        I: Fn(&[&[f32]]) -> Result<Vec<Vec<f32>>, InferenceError> + Clone + Send + 'static,
    {
        let size = config.minibatch_size.max(1);
        let config = BatchConfig {
            minibatch_size: size,
            num_worker_preprocess: config.num_worker_preprocess.max(1),
            max_inflight_docs: config.max_inflight_docs.max(size),
            chunks_per_request: config.chunks_per_request.max(1),
            ..config
        };
        // Declared before the queues so that, should a start fail, the queues close first and
        // the threads already started see them closed and can be joined.
        let mut threads = Threads::default();
        let stats = Arc::new(BatchStats::default());
        let arriving = Arriving::default();
        let load = Arc::new(Load::new(config.num_worker_preprocess, replicas));
        let (prep_tx, prep_rx) = crossbeam_channel::bounded::<PrepJob>(config.max_inflight_docs);
        let (text_tx, text_rx) = crossbeam_channel::bounded::<TowerJob<Vec<u32>>>(2 * size);
        let (image_tx, image_rx) = crossbeam_channel::bounded::<TowerJob<Vec<f32>>>(2 * size);
        for i in 0..config.num_worker_preprocess {
            let (rx, text_tx, image_tx, prepare, load) = (
                prep_rx.clone(),
                text_tx.clone(),
                image_tx.clone(),
                prepare.clone(),
                load.clone(),
            );
            threads.spawn(format!("preprocess-{i}"), move || {
                preprocess_loop(rx, &*prepare, &load, text_tx, image_tx)
            })?;
        }
        drop((prep_rx, text_tx, image_tx));
        // One inference thread per tower and session set: with several devices, that many
        // minibatches of a tower run at once, each on the least busy set.
        for replica in 0..replicas.max(1) {
            let text = tower::Tower {
                modality: Modality::Text,
                config: config.clone(),
                stats: stats.text.clone(),
                arriving: arriving.text.clone(),
                load: load.clone(),
            };
            let (rx, run, cost) = (text_rx.clone(), run_text.clone(), text_cost.clone());
            threads.spawn(format!("tower-text-{replica}"), move || {
                text.run(
                    rx,
                    |batch: &[&Vec<u32>]| {
                        let refs: Vec<&[u32]> = batch.iter().map(|v| v.as_slice()).collect();
                        run(&refs)
                    },
                    |ids: &Vec<u32>| cost(ids),
                )
            })?;
            let image = tower::Tower {
                modality: Modality::Image,
                config: config.clone(),
                stats: stats.image.clone(),
                arriving: arriving.image.clone(),
                load: load.clone(),
            };
            let (rx, run) = (image_rx.clone(), run_images.clone());
            threads.spawn(format!("tower-image-{replica}"), move || {
                image.run(
                    rx,
                    |batch: &[&Vec<f32>]| {
                        let refs: Vec<&[f32]> = batch.iter().map(|v| v.as_slice()).collect();
                        run(&refs)
                    },
                    |_: &Vec<f32>| 1,
                )
            })?;
        }
        let (text_queue, image_queue) = (text_rx, image_rx);
        Ok(Arc::new(Pipeline {
            prep_tx,
            text_queue,
            image_queue,
            inflight: Arc::new(Semaphore::new(config.max_inflight_docs)),
            arriving,
            load,
            config,
            stats,
            threads: std::sync::Mutex::new(threads.into_handles()),
        }))
    }

    pub(crate) fn config(&self) -> &BatchConfig {
        &self.config
    }

    /// Admits `docs` now, or says `overloaded` (request/reply answers at once): when the
    /// in-flight limit is reached, or when they would wait longer than `max_queue_time`.
    pub(crate) fn try_admit(&self, docs: &[Document]) -> Result<Admission, DocError> {
        let n = self.permits(docs.len())?;
        let counts = DocCounts::of(docs);
        if let Some(limit) = self.config.max_queue_time {
            if let Some((modality, wait)) =
                self.load
                    .over_limit(counts, limit, self.config.minibatch_size)
            {
                return Err(DocError::new(
                    ErrorCode::Overloaded,
                    format!(
                        "{} documents would wait about {:.1} s here, over the {:.1} s limit; retry later or elsewhere",
                        modality.as_str(),
                        wait.as_secs_f64(),
                        limit.as_secs_f64()
                    ),
                ));
            }
        }
        let permit = self
            .inflight
            .clone()
            .try_acquire_many_owned(n)
            .map_err(|_| {
                DocError::new(ErrorCode::Overloaded, "worker is at capacity; retry later")
            })?;
        Ok(self.admission(permit, counts))
    }

    /// Waits until `docs` can be admitted (durable jobs wait instead of failing).
    pub async fn admit(&self, docs: &[Document]) -> Result<Admission, DocError> {
        let n = self.permits(docs.len())?;
        let permit = self
            .inflight
            .clone()
            .acquire_many_owned(n)
            .await
            .map_err(|_| DocError::new(ErrorCode::ShuttingDown, "worker is shutting down"))?;
        Ok(self.admission(permit, DocCounts::of(docs)))
    }

    fn admission(&self, permit: OwnedSemaphorePermit, counts: DocCounts) -> Admission {
        self.load.add(counts);
        Admission {
            _permit: permit,
            load: self.load.clone(),
            counts,
        }
    }

    /// How long one more document of `modality` would wait for its answer, at the speed of
    /// the recent documents (`None` until one has been through).
    pub(crate) fn expected_wait(&self, modality: Modality) -> Option<Duration> {
        self.load.expected_wait(modality, 1)
    }

    /// Documents that can be admitted right now.
    pub(crate) fn available(&self) -> usize {
        self.inflight.available_permits()
    }

    /// Documents waiting to be preprocessed, and prepared documents waiting for the text and
    /// image towers.
    pub(crate) fn queue_depths(&self) -> QueueDepths {
        QueueDepths {
            preprocess: self.prep_tx.len(),
            text: self.text_queue.len(),
            image: self.image_queue.len(),
        }
    }

    /// Whether every preprocess and inference thread is still running.
    pub(crate) fn threads_alive(&self) -> bool {
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
                let arriving = doc.content().ok().map(|c| match c.modality() {
                    Modality::Text => self.arriving.text.clone(),
                    Modality::Image => self.arriving.image.clone(),
                });
                if let Some(a) = &arriving {
                    a.fetch_add(1, Ordering::AcqRel);
                }
                let job = PrepJob {
                    doc,
                    reply,
                    span: tracing::Span::current(),
                    arriving,
                };
                // Admission bounds the queue, so this never blocks the async runtime.
                match self.prep_tx.try_send(job) {
                    Ok(()) => Some(rx),
                    Err(e) => {
                        e.into_inner().arrived();
                        None
                    }
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

/// The threads started so far; if a later one cannot start, dropping this closes their
/// queues (the senders went out of scope with the failed start) and joins them.
#[derive(Default)]
struct Threads(Vec<std::thread::JoinHandle<()>>);

impl Threads {
    fn spawn(
        &mut self,
        name: String,
        body: impl FnOnce() + Send + 'static,
    ) -> Result<(), StartError> {
        self.spawn_with(std::thread::Builder::new(), name, body)
    }

    fn spawn_with(
        &mut self,
        builder: std::thread::Builder,
        name: String,
        body: impl FnOnce() + Send + 'static,
    ) -> Result<(), StartError> {
        let handle = builder
            .name(name.clone())
            .spawn(body)
            .map_err(|source| StartError::Spawn { name, source })?;
        self.0.push(handle);
        Ok(())
    }

    fn into_handles(mut self) -> Vec<std::thread::JoinHandle<()>> {
        std::mem::take(&mut self.0)
    }
}

impl Drop for Threads {
    fn drop(&mut self) {
        for t in self.0.drain(..) {
            let _ = t.join();
        }
    }
}

fn preprocess_loop(
    rx: crossbeam_channel::Receiver<PrepJob>,
    prepare: &PrepareFn,
    load: &Load,
    text_tx: crossbeam_channel::Sender<TowerJob<Vec<u32>>>,
    image_tx: crossbeam_channel::Sender<TowerJob<Vec<f32>>>,
) {
    while let Ok(mut job) = rx.recv() {
        let arriving = job.arriving.take();
        let _enter = job.span.enter();
        let started = std::time::Instant::now();
        let prepared = {
            let _s = tracing::debug_span!("preprocess").entered();
            // A decoder bug must cost one document, not a pool thread.
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| prepare(&job.doc)))
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
        let took = started.elapsed();
        crate::telemetry::metrics()
            .preprocess_duration
            .with_label_values(&[prepared_modality(&prepared, &job.doc)])
            .observe(took.as_secs_f64());
        if let Ok(p) = &prepared {
            load.prepared(p.modality(), took);
        }
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
        // After the send: a tower that sees nothing on its way finds this one in its queue.
        if let Some(a) = arriving {
            a.fetch_sub(1, Ordering::AcqRel);
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    const SMALL: u32 = 1000;

    #[test]
    fn a_thread_that_cannot_start_fails_start_up_and_the_others_are_joined() {
        let (tx, rx) = crossbeam_channel::bounded::<()>(0);
        let mut threads = Threads::default();
        threads
            .spawn(
                "waits-for-its-queue".into(),
                move || while rx.recv().is_ok() {},
            )
            .unwrap();
        // No address space has room for this stack, so the operating system refuses the thread.
        let refused = threads.spawn_with(
            std::thread::Builder::new().stack_size(1 << 47),
            "too-big".into(),
            || {},
        );
        assert!(
            matches!(&refused, Err(StartError::Spawn { name, .. }) if name == "too-big"),
            "{refused:?}"
        );
        // As in a failed start: the queue closes first, then dropping joins the running thread.
        drop(tx);
        drop(threads);
    }

    /// A pipeline with a fake text tower and no image tower (one replica, token count as the
    /// length), and a one-thread runtime to drive it.
    fn text_pipeline(
        prepare: impl Fn(&Document) -> Result<Prepared, DocError> + Send + Sync + 'static,
        run_text: impl Fn(&[&[u32]]) -> Result<Vec<Vec<f32>>, InferenceError> + Clone + Send + 'static,
        config: BatchConfig,
    ) -> (Arc<Pipeline>, tokio::runtime::Runtime) {
        let no_images = |_: &[&[f32]]| -> Result<Vec<Vec<f32>>, InferenceError> {
            unreachable!("no image in this test")
        };
        let pipeline = Pipeline::start_with(
            Arc::new(prepare),
            run_text,
            no_images,
            Arc::new(|ids: &[u32]| ids.len()),
            1,
            config,
        )
        .unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        (pipeline, runtime)
    }

    /// A large request must not hold a small one back for longer than its in-flight chunks.
    #[test]
    fn a_small_request_overtakes_a_large_one() {
        let size = 4;
        let batches: Arc<Mutex<Vec<Vec<u32>>>> = Arc::default();
        let (started_tx, started_rx) = crossbeam_channel::unbounded();
        let (release_tx, release_rx) = crossbeam_channel::unbounded::<()>();
        let (prepared_tx, prepared_rx) = crossbeam_channel::unbounded();
        // Fake preprocessing: the text is the token id.
        let prepare = move |doc: &Document| {
            let id = doc
                .text
                .as_deref()
                .and_then(|t| t.parse().ok())
                .unwrap_or(0);
            let _ = prepared_tx.send(id);
            Ok(Prepared::Text(vec![id]))
        };
        let recorded = batches.clone();
        // Fake text tower: records each batch and holds the first one until released.
        let run_text = move |batch: &[&[u32]]| {
            let ids: Vec<u32> = batch.iter().map(|t| t[0]).collect();
            let first = {
                let mut all = recorded.lock().unwrap();
                all.push(ids.clone());
                all.len() == 1
            };
            if first {
                started_tx.send(()).unwrap();
                release_rx.recv().unwrap();
            }
            Ok(ids.iter().map(|&id| vec![id as f32]).collect())
        };
        let config = BatchConfig {
            minibatch_size: size,
            max_batch_delay: Duration::ZERO,
            num_worker_preprocess: 1,
            chunks_per_request: 2,
            ..BatchConfig::default()
        };
        let (pipeline, runtime) = text_pipeline(prepare, run_text, config);
        let embed = |texts: Vec<u32>| {
            let p = pipeline.clone();
            runtime.spawn(async move {
                let docs: Vec<Document> = texts
                    .iter()
                    .map(|t| Document::text(t.to_string()))
                    .collect();
                let admission = p.admit(&docs).await.unwrap();
                p.embed(docs, &admission).await
            })
        };
        let large = embed((0..40).collect());
        let patience = Duration::from_secs(30);
        started_rx.recv_timeout(patience).unwrap();
        let small = embed(vec![SMALL]);
        while prepared_rx.recv_timeout(patience).unwrap() != SMALL {}
        release_tx.send(()).unwrap();

        let small = runtime.block_on(small).unwrap();
        let large = runtime.block_on(large).unwrap();
        assert_eq!(small.len(), 1);
        assert_eq!(small[0].as_ref().unwrap().embedding, vec![SMALL as f32]);
        for (i, r) in large.iter().enumerate() {
            assert_eq!(r.as_ref().unwrap().embedding, vec![i as f32]);
        }
        let batches = batches.lock().unwrap().clone();
        assert!(batches.iter().all(|b| b.len() <= size), "{batches:?}");
        let ahead: usize = batches
            .iter()
            .take_while(|b| !b.contains(&SMALL))
            .map(Vec::len)
            .sum();
        // At most the large request's in-flight chunks ran first, not all 40 documents.
        assert!(
            ahead <= 2 * size,
            "{ahead} documents ran first: {batches:?}"
        );
        drop(runtime);
        pipeline.shutdown();
    }

    /// Request/reply admission refuses what would wait past `max_queue_time` at the speed the
    /// tower has shown, durable-job admission waits instead, and both admit again once the
    /// backlog is gone.
    #[test]
    fn admission_refuses_what_would_wait_too_long() {
        const HELD: u32 = 999;
        let (started_tx, started_rx) = crossbeam_channel::unbounded();
        let (release_tx, release_rx) = crossbeam_channel::unbounded::<()>();
        // Fake tower: 50 ms a minibatch; the one holding HELD waits to be released.
        let run_text = move |batch: &[&[u32]]| {
            std::thread::sleep(Duration::from_millis(50));
            if batch.iter().any(|t| t[0] == HELD) {
                started_tx.send(()).unwrap();
                release_rx.recv().unwrap();
            }
            Ok(batch.iter().map(|t| vec![t[0] as f32]).collect())
        };
        let prepare = |doc: &Document| {
            let id = doc
                .text
                .as_deref()
                .and_then(|t| t.parse().ok())
                .unwrap_or(0);
            Ok(Prepared::Text(vec![id]))
        };
        let config = BatchConfig {
            minibatch_size: 2,
            max_batch_delay: Duration::ZERO,
            num_worker_preprocess: 1,
            max_queue_time: Some(Duration::from_millis(500)),
            ..BatchConfig::default()
        };
        let (p, runtime) = text_pipeline(prepare, run_text, config);
        let texts = |ids: std::ops::Range<u32>| -> Vec<Document> {
            ids.map(|i| Document::text(i.to_string())).collect()
        };
        let embed = |p: Arc<Pipeline>, docs: Vec<Document>| async move {
            let admission = p.try_admit(&docs)?;
            Ok::<_, DocError>(p.embed(docs, &admission).await)
        };
        // An idle worker admits a large request; it teaches the cost (25 to 50 ms a document
        // at minibatches of 2 or less).
        runtime.block_on(embed(p.clone(), texts(0..3))).unwrap();
        // One minibatch is always admitted; this one stays in the tower until released.
        let held = runtime.spawn(embed(p.clone(), texts(HELD..HELD + 2)));
        started_rx.recv_timeout(Duration::from_secs(30)).unwrap();

        // 2 in flight + 20 more, at 25 ms or more each: over 500 ms.
        let refused = p.try_admit(&texts(0..20)).err().unwrap();
        assert_eq!(refused.code, ErrorCode::Overloaded);
        assert!(
            refused.message.contains("would wait"),
            "{}",
            refused.message
        );
        // 2 in flight + 2 more: well under 500 ms.
        drop(p.try_admit(&texts(0..2)).unwrap());
        // Durable jobs wait for room instead of being refused.
        drop(runtime.block_on(p.admit(&texts(0..20))).unwrap());

        release_tx.send(()).unwrap();
        let held = runtime.block_on(held).unwrap().unwrap();
        assert_eq!(held.len(), 2);
        assert!(held.iter().all(Result::is_ok));
        // The backlog is gone: admitted again (nothing in flight: any size).
        assert_eq!(p.load.backlog(Modality::Text), 0);
        drop(p.try_admit(&texts(0..20)).unwrap());
        drop(runtime);
        p.shutdown();
    }

    /// What a fake document is: its content decides what the fake preprocessing does with it.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Kind {
        Text,
        Image,
        /// Fails in preprocessing (as an undecodable image would).
        Broken,
    }

    fn kind() -> impl proptest::strategy::Strategy<Value = Kind> {
        use proptest::prelude::*;
        prop_oneof![Just(Kind::Text), Just(Kind::Image), Just(Kind::Broken)]
    }

    /// Fake preprocessing: `t:ID` → text tokens `[ID]`, `i:ID` → pixels `[ID]`, `e:ID` → error.
    fn fake_prepare(doc: &Document) -> Result<Prepared, DocError> {
        let text = doc.text.as_deref().unwrap_or_default();
        let id: u32 = text
            .get(2..)
            .and_then(|n| n.parse().ok())
            .unwrap_or(u32::MAX);
        match text.get(..2) {
            Some("t:") => Ok(Prepared::Text(vec![id])),
            Some("i:") => Ok(Prepared::Image(vec![id as f32])),
            _ => Err(DocError::new(ErrorCode::InvalidDocument, text)),
        }
    }

    fn fake_doc(kind: Kind, id: u32) -> Document {
        let prefix = match kind {
            Kind::Text => "t",
            Kind::Image => "i",
            Kind::Broken => "e",
        };
        Document::text(format!("{prefix}:{id}"))
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 40,
            failure_persistence: None,
            ..proptest::prelude::ProptestConfig::default()
        })]

        /// Every document of every request gets exactly one answer, its own, in its request's
        /// order; whatever the minibatch size, delay, pool size, replicas, and however the
        /// requests and the towers' work interleave.
        #[test]
        fn every_document_is_answered_once_in_order(
            requests in proptest::collection::vec(
                (proptest::collection::vec(kind(), 0..12), 0u64..400), 1..6),
            minibatch_size in 1usize..6,
            delay_us in 0u64..2000,
            preprocess_threads in 1usize..4,
            chunks_per_request in 1usize..4,
            replicas in 1usize..3,
            tower_us in 0u64..300,
        ) {
            // The ids every tower saw, and the largest minibatch.
            let seen: Arc<Mutex<Vec<u32>>> = Arc::default();
            let largest = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let tower = |seen: Arc<Mutex<Vec<u32>>>, largest: Arc<std::sync::atomic::AtomicUsize>| {
                move |ids: Vec<u32>| -> Result<Vec<Vec<f32>>, InferenceError> {
                    largest.fetch_max(ids.len(), std::sync::atomic::Ordering::SeqCst);
                    std::thread::sleep(Duration::from_micros(tower_us));
                    seen.lock().unwrap().extend(&ids);
                    Ok(ids.iter().map(|&id| vec![id as f32]).collect())
                }
            };
            let (text, image) = (
                tower(seen.clone(), largest.clone()),
                tower(seen.clone(), largest.clone()),
            );
            let config = BatchConfig {
                minibatch_size,
                max_batch_delay: Duration::from_micros(delay_us),
                num_worker_preprocess: preprocess_threads,
                chunks_per_request,
                ..BatchConfig::default()
            };
            let pipeline = Pipeline::start_with(
                Arc::new(fake_prepare),
                move |b: &[&[u32]]| text(b.iter().map(|t| t[0]).collect()),
                move |b: &[&[f32]]| image(b.iter().map(|p| p[0] as u32).collect()),
                Arc::new(|ids: &[u32]| ids.len()),
                replicas,
                config,
            )
            .unwrap();
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            // Ids are unique across all requests.
            let mut next_id = 0u32;
            let sent: Vec<Vec<(Kind, u32)>> = requests
                .iter()
                .map(|(kinds, _)| {
                    kinds
                        .iter()
                        .map(|&k| {
                            next_id += 1;
                            (k, next_id)
                        })
                        .collect()
                })
                .collect();
            let tasks: Vec<_> = sent
                .iter()
                .zip(&requests)
                .map(|(docs, (_, start_us))| {
                    let p = pipeline.clone();
                    let docs: Vec<Document> = docs.iter().map(|&(k, id)| fake_doc(k, id)).collect();
                    let start = Duration::from_micros(*start_us);
                    runtime.spawn(async move {
                        tokio::time::sleep(start).await;
                        let admission = p.admit(&docs).await.unwrap();
                        p.embed(docs, &admission).await
                    })
                })
                .collect();
            for (task, docs) in tasks.into_iter().zip(&sent) {
                let answers = runtime.block_on(task).unwrap();
                proptest::prop_assert_eq!(answers.len(), docs.len());
                for (answer, &(kind, id)) in answers.iter().zip(docs) {
                    match (kind, answer) {
                        (Kind::Text | Kind::Image, Ok(e)) => {
                            let modality = if kind == Kind::Text { Modality::Text } else { Modality::Image };
                            proptest::prop_assert_eq!(e.modality, modality);
                            proptest::prop_assert_eq!(&e.embedding, &vec![id as f32]);
                        }
                        (Kind::Broken, Err(e)) => {
                            proptest::prop_assert_eq!(e.code, ErrorCode::InvalidDocument);
                            proptest::prop_assert_eq!(&e.message, &format!("e:{id}"));
                        }
                        _ => proptest::prop_assert!(false, "document {id} ({kind:?}) got {answer:?}"),
                    }
                }
            }
            drop(runtime);
            pipeline.shutdown();
            // Each valid document went through a tower exactly once.
            let mut seen = seen.lock().unwrap().clone();
            seen.sort_unstable();
            let valid: Vec<u32> = sent
                .iter()
                .flatten()
                .filter(|(k, _)| *k != Kind::Broken)
                .map(|&(_, id)| id)
                .collect();
            proptest::prop_assert_eq!(seen, valid);
            proptest::prop_assert!(largest.load(std::sync::atomic::Ordering::SeqCst) <= minibatch_size);
        }
    }
}
