//! Durable jobs from a JetStream work-queue stream, shared by all workers through one durable
//! pull consumer. A job is acked only after its result is safely published; transient failures
//! are nak'ed with a delay; a job that can never succeed gets an error result and is terminated.

use super::handler::{AdmissionMode, Handler};
use super::publish::Publisher;
use super::service::encode_reply;
use super::startup::Transient;
use crate::error::{BoxError, ErrorChain, ErrorCode};
use crate::protocol::{headers, JobKind, Response, Subjects};
use crate::telemetry::{metrics, trace, JetStreamAck, Transport};
use async_nats::jetstream::{self, consumer, stream, AckKind};
use futures::StreamExt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

#[derive(Debug, Clone)]
pub(crate) struct JobsConfig {
    pub stream: String,
    /// Jobs arrive on `<prefix>.jobs.encode` and `<prefix>.jobs.rank`.
    pub prefix: String,
    /// Durable consumer name shared by all workers.
    pub consumer: String,
    /// Bind to an existing stream and consumer instead of creating them.
    pub bind: bool,
    /// Unacknowledged jobs the server lets the consumer hold (all workers together).
    pub max_ack_pending: i64,
    /// How long the server waits for an ack before redelivering.
    pub ack_wait: Duration,
    /// Deliveries before a job that keeps failing transiently is answered with its error.
    pub max_deliver: i64,
    /// Delay before a nak'ed job is redelivered.
    pub nak_delay: Duration,
    /// Jobs this worker processes at once.
    pub max_inflight_jobs: usize,
    /// Where results go when a job has no `Clip-Reply-To` header.
    pub default_reply_subject: String,
}

impl JobsConfig {
    pub(crate) fn subjects(&self) -> Vec<String> {
        Subjects::new(&self.prefix).jobs()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("JetStream setup: {what}")]
pub struct JobsError {
    /// What was being set up (the stream or the consumer, by name).
    what: String,
    /// Whether trying again may succeed (see [`Transient`]).
    transient: bool,
    #[source]
    source: BoxError,
}

impl Transient for JobsError {
    fn is_transient(&self) -> bool {
        self.transient
    }
}

/// Whether the server's JetStream answer describes a passing state (no quorum or leader yet,
/// a cluster still forming) rather than a configuration that needs an operator.
fn transient_api_error(error: &jetstream::Error) -> bool {
    use jetstream::ErrorCode as C;
    matches!(
        error.error_code(),
        C::CLUSTER_NOT_AVAILABLE
            | C::CLUSTER_NOT_ACTIVE
            | C::CLUSTER_NOT_ASSIGNED
            | C::CLUSTER_NOT_LEADER
            | C::CLUSTER_INCOMPLETE
            | C::CLUSTER_NO_PEERS
            | C::INSUFFICIENT_RESOURCES
            | C::RAFT_GENERAL
    )
}

fn stream_lookup_transient(e: &jetstream::context::GetStreamError) -> bool {
    use jetstream::context::GetStreamErrorKind as K;
    match e.kind() {
        K::Request => true,
        K::JetStream(api) => transient_api_error(&api),
        _ => false,
    }
}

fn stream_create_transient(e: &jetstream::context::CreateStreamError) -> bool {
    use jetstream::context::CreateStreamErrorKind as K;
    match e.kind() {
        K::TimedOut | K::JetStreamUnavailable | K::Response | K::NotFound => true,
        K::JetStream(api) => transient_api_error(&api),
        _ => false,
    }
}

fn consumer_transient(e: &jetstream::stream::ConsumerError) -> bool {
    use jetstream::stream::ConsumerErrorKind as K;
    match e.kind() {
        K::TimedOut | K::Request | K::Other => true,
        K::JetStream(api) => transient_api_error(&api),
        _ => false,
    }
}

fn consumer_lookup_transient(e: &async_nats::Error) -> bool {
    use jetstream::context::{ConsumerInfoError, ConsumerInfoErrorKind as K};
    match e.downcast_ref::<ConsumerInfoError>().map(|e| e.kind()) {
        Some(K::Request | K::TimedOut | K::NoResponders | K::Offline) => true,
        Some(K::JetStream(api)) => transient_api_error(&api),
        _ => false,
    }
}

/// Creates (or binds to) the stream and the durable consumer.
pub(crate) async fn consumer(
    js: &jetstream::Context,
    cfg: &JobsConfig,
) -> Result<consumer::PullConsumer, JobsError> {
    let stream_err = |transient: bool, source: BoxError| JobsError {
        what: format!("stream `{}`", cfg.stream),
        transient,
        source,
    };
    let consumer_err = |e: jetstream::stream::ConsumerError| JobsError {
        what: format!(
            "durable consumer `{}` on stream `{}`",
            cfg.consumer, cfg.stream
        ),
        transient: consumer_transient(&e),
        source: e.into(),
    };
    let stream = if cfg.bind {
        js.get_stream(&cfg.stream)
            .await
            .map_err(|e| stream_err(stream_lookup_transient(&e), e.into()))?
    } else {
        js.get_or_create_stream(stream::Config {
            name: cfg.stream.clone(),
            subjects: cfg.subjects(),
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .map_err(|e| stream_err(stream_create_transient(&e), e.into()))?
    };
    if cfg.bind {
        stream
            .get_consumer::<consumer::pull::Config>(&cfg.consumer)
            .await
            .map_err(|e| JobsError {
                what: format!(
                    "durable consumer `{}` on stream `{}`",
                    cfg.consumer, cfg.stream
                ),
                transient: consumer_lookup_transient(&e),
                source: e,
            })
    } else {
        stream
            .get_or_create_consumer(
                &cfg.consumer,
                consumer::pull::Config {
                    durable_name: Some(cfg.consumer.clone()),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: cfg.ack_wait,
                    max_deliver: cfg.max_deliver,
                    max_ack_pending: cfg.max_ack_pending,
                    ..Default::default()
                },
            )
            .await
            .map_err(consumer_err)
    }
}

/// Pulls and processes jobs until `shutdown` fires; jobs in progress finish on `tasks`.
pub(crate) async fn run(
    consumer: consumer::PullConsumer,
    handler: Arc<Handler>,
    publisher: Publisher,
    cfg: JobsConfig,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    let slots = Arc::new(Semaphore::new(cfg.max_inflight_jobs.max(1)));
    let cfg = Arc::new(cfg);
    tracing::info!(stream = %cfg.stream, consumer = %cfg.consumer, "durable job consumer ready");
    'pull: while !shutdown.is_cancelled() {
        // Pull only as many jobs as there is room for: the rest stay in the stream for others.
        let first = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = shutdown.cancelled() => break,
        };
        let want = 1 + slots.available_permits();
        let batch = consumer
            .batch()
            .max_messages(want)
            .expires(Duration::from_secs(1))
            .messages()
            .await;
        let mut batch = match batch {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %ErrorChain(&e), "pulling jobs failed; retrying");
                drop(first);
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let mut permit = Some(first);
        loop {
            let next = tokio::select! {
                m = batch.next() => m,
                _ = shutdown.cancelled() => {
                    // Hand back anything that still arrives for this pull, for another worker.
                    while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_millis(200), batch.next()).await {
                        metrics().record_ack(JetStreamAck::Nak);
                        let _ = m.ack_with(AckKind::Nak(None)).await;
                    }
                    break 'pull;
                }
            };
            let Some(message) = next else { break };
            let message = match message {
                Ok(m) => m,
                Err(e) => {
                    tracing::debug!(error = %ErrorChain(&*e), "pull batch ended");
                    break;
                }
            };
            let slot = match permit.take() {
                Some(p) => p,
                None => match slots.clone().acquire_owned().await {
                    Ok(p) => p,
                    Err(_) => break 'pull,
                },
            };
            let (handler, publisher, cfg) = (handler.clone(), publisher.clone(), cfg.clone());
            tasks.spawn(async move {
                process(message, &handler, &publisher, &cfg).await;
                drop(slot);
            });
        }
    }
}

/// What to do with a job once its response is known.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Publish the result, then ack.
    Deliver,
    /// Publish the (error) result, then terminate: retrying cannot help.
    DeliverAndTerminate,
    /// Put it back for a later attempt.
    Retry,
}

fn classify(response: &Response, delivered: i64, max_deliver: i64) -> Outcome {
    let last_try = max_deliver > 0 && delivered >= max_deliver;
    if let Some(err) = &response.error {
        return match err.code {
            ErrorCode::Overloaded | ErrorCode::ShuttingDown | ErrorCode::Internal if !last_try => {
                Outcome::Retry
            }
            _ => Outcome::DeliverAndTerminate,
        };
    }
    let transient = response.docs.iter().any(|d| {
        let own = d.error.as_ref().map(|e| e.code);
        let in_matches = d
            .matches
            .iter()
            .flatten()
            .filter_map(|m| m.error.as_ref().map(|e| e.code));
        own.into_iter().chain(in_matches).any(|c| {
            matches!(
                c,
                ErrorCode::Inference | ErrorCode::ShuttingDown | ErrorCode::Overloaded
            )
        })
    });
    if transient && !last_try {
        Outcome::Retry
    } else {
        Outcome::Deliver
    }
}

/// A header of a job, as text.
fn header(
    message: &jetstream::Message,
    name: impl async_nats::header::IntoHeaderName,
) -> Option<String> {
    message
        .headers
        .as_ref()
        .and_then(|h| h.get(name))
        .map(|v| v.as_str().to_string())
}

async fn process(
    message: jetstream::Message,
    handler: &Handler,
    publisher: &Publisher,
    cfg: &JobsConfig,
) {
    let (stream_seq, delivered) = match message.info() {
        Ok(info) => (info.stream_sequence, info.delivered),
        Err(_) => (0, 1),
    };
    metrics().record_delivery(delivered);
    let reply_to =
        header(&message, headers::REPLY_TO).unwrap_or_else(|| cfg.default_reply_subject.clone());
    let job_id = header(&message, headers::MESSAGE_ID)
        .unwrap_or_else(|| format!("{}:{stream_seq}", cfg.stream));
    let span = trace::process_span(&trace::Incoming {
        subject: message.subject.as_str(),
        consumer_group: &cfg.consumer,
        message_id: Some(&job_id),
        body_size: message.payload.len(),
        delivery_count: Some(delivered),
        headers: message.headers.as_ref(),
    });
    let job = Job {
        id: job_id,
        reply_to,
        delivered,
    };
    answer(&message, job, handler, publisher, cfg)
        .instrument(span)
        .await
}

/// A delivered job, as its headers and delivery info describe it.
struct Job {
    id: String,
    reply_to: String,
    delivered: i64,
}

async fn answer(
    message: &jetstream::Message,
    job: Job,
    handler: &Handler,
    publisher: &Publisher,
    cfg: &JobsConfig,
) {
    let Job {
        id: job_id,
        reply_to,
        delivered,
    } = job;
    let subject = message.subject.as_str();
    let kind = JobKind::of_subject(subject);
    tracing::info!(job = %job_id, subject, delivered, "job received");

    // Keep the job ours while it runs: tell the server we are still working on it.
    let heartbeat = {
        let m = message.clone();
        let every = (cfg.ack_wait / 3).max(Duration::from_millis(200));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if m.ack_with(AckKind::Progress).await.is_err() {
                    break;
                }
                metrics().record_ack(JetStreamAck::InProgress);
            }
        })
    };
    let started = Instant::now();
    let inflight = metrics().request_started(Transport::Jobs);
    let endpoint = kind.map_or("unknown", |k| k.as_str());
    let response = match kind {
        Some(kind) => handler.handle(kind, &message.payload, AdmissionMode::Wait).await,
        // A stream bound with wider subjects can hold jobs no worker knows: answer, don't retry.
        None => Response::failure(
            None,
            &handler.model,
            crate::error::DocError::new(
                ErrorCode::BadRequest,
                format!("`{subject}` is not a job subject: use `<prefix>.jobs.encode` or `<prefix>.jobs.rank`"),
            ),
        ),
    };
    heartbeat.abort();
    super::record_response(endpoint, Transport::Jobs, &response, started.elapsed());
    drop(inflight);

    let outcome = classify(&response, delivered, cfg.max_deliver);
    if outcome == Outcome::Retry {
        tracing::info!(job = %job_id, delivered, "transient failure; job will be redelivered");
        metrics().record_ack(JetStreamAck::Nak);
        let _ = message.ack_with(AckKind::Nak(Some(cfg.nak_delay))).await;
        return;
    }
    let (payload, mut reply_headers) =
        encode_reply(&response, &handler.model, handler.reply_limit());
    reply_headers.insert(headers::JOB_ID, job_id.as_str());
    // Publishing with the job's id lets a results stream drop the duplicate of a redelivered job.
    reply_headers.insert(headers::MESSAGE_ID, job_id.as_str());
    let publish = trace::publish_span(&reply_to);
    trace::inject(&publish, &mut reply_headers, message.headers.as_ref());
    let publishing = Instant::now();
    let published = publisher
        .publish(&reply_to, reply_headers, payload.into())
        .instrument(publish)
        .await;
    metrics().record_publish(Transport::Jobs, publishing.elapsed());
    if let Err(e) = published {
        tracing::warn!(job = %job_id, error = %ErrorChain(&e), "result not published; job will be redelivered");
        metrics().record_ack(JetStreamAck::Nak);
        let _ = message.ack_with(AckKind::Nak(Some(cfg.nak_delay))).await;
        return;
    }
    let acked = match outcome {
        Outcome::DeliverAndTerminate => {
            metrics().record_ack(JetStreamAck::Term);
            message.ack_with(AckKind::Term).await
        }
        _ => {
            metrics().record_ack(JetStreamAck::Ack);
            message.double_ack().await
        }
    };
    if let Err(e) = acked {
        tracing::warn!(job = %job_id, error = %ErrorChain(&*e), "ack failed after the result was published");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::DocError;
    use crate::protocol::{ResultDoc, WireError};

    fn response(doc_error: Option<ErrorCode>, error: Option<ErrorCode>) -> Response {
        Response {
            id: None,
            model: "m".into(),
            docs: vec![ResultDoc {
                id: "0".into(),
                modality: None,
                embedding: None,
                scores: None,
                matches: None,
                error: doc_error.map(|code| WireError {
                    code,
                    message: String::new(),
                }),
            }],
            error: error.map(|code| DocError::new(code, "x").into()),
        }
    }

    #[test]
    fn outcomes() {
        assert_eq!(classify(&response(None, None), 1, 5), Outcome::Deliver);
        assert_eq!(
            classify(&response(Some(ErrorCode::ImageDecode), None), 1, 5),
            Outcome::Deliver
        );
        assert_eq!(
            classify(&response(Some(ErrorCode::Inference), None), 1, 5),
            Outcome::Retry
        );
        assert_eq!(
            classify(&response(Some(ErrorCode::Inference), None), 5, 5),
            Outcome::Deliver
        );
        assert_eq!(
            classify(&response(None, Some(ErrorCode::BadRequest)), 1, 5),
            Outcome::DeliverAndTerminate
        );
        assert_eq!(
            classify(&response(None, Some(ErrorCode::ShuttingDown)), 1, 5),
            Outcome::Retry
        );
        assert_eq!(
            classify(&response(None, Some(ErrorCode::Internal)), 5, 5),
            Outcome::DeliverAndTerminate
        );
    }
}
