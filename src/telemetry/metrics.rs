//! The Prometheus series of one worker process, in one registry served on `/metrics`.
//!
//! Counters and histograms are updated where the work happens; gauges that describe a state
//! (queue depths, in-flight documents, the NATS connection) are sampled when scraped, by the
//! samplers registered with [`Metrics::on_scrape`].

use crate::error::ErrorCode;
use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

/// Seconds: from sub-millisecond GPU stages to multi-second CPU batches and slow fetches.
const DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Documents per minibatch.
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// How a request reached the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    /// NATS request/reply (the `$SRV` service).
    Service,
    /// A durable JetStream job.
    Jobs,
}

impl Transport {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Transport::Service => "service",
            Transport::Jobs => "jobs",
        }
    }
}

/// What the worker did with a JetStream delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JetStreamAck {
    Ack,
    Nak,
    Term,
    InProgress,
}

impl JetStreamAck {
    fn as_str(self) -> &'static str {
        match self {
            JetStreamAck::Ack => "ack",
            JetStreamAck::Nak => "nak",
            JetStreamAck::Term => "term",
            JetStreamAck::InProgress => "in_progress",
        }
    }
}

type Sampler = Box<dyn Fn(&Metrics) + Send + Sync>;

pub(crate) struct Metrics {
    registry: Registry,
    samplers: Mutex<Vec<Sampler>>,
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub documents: IntCounterVec,
    pub rejections: IntCounterVec,
    pub preprocess_duration: HistogramVec,
    pub queue_wait_duration: HistogramVec,
    pub inference_duration: HistogramVec,
    pub publish_duration: HistogramVec,
    pub batch_size: HistogramVec,
    pub inference_executions: IntCounterVec,
    pub inferences: IntCounterVec,
    pub queue_depth: IntGaugeVec,
    pub inflight_documents: IntGauge,
    pub expected_wait: GaugeVec,
    pub inflight_requests: IntGaugeVec,
    pub jetstream_deliveries: IntCounter,
    pub jetstream_redeliveries: IntCounter,
    pub jetstream_acks: IntCounterVec,
    pub nats_connected: IntGauge,
    pub nats_reconnects: IntCounter,
    pub ready: IntGauge,
    pub model_info: IntGaugeVec,
    pub text_length: IntGaugeVec,
    pub build_info: IntGaugeVec,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process-wide series.
pub(crate) fn metrics() -> &'static Metrics {
    &METRICS
}

/// Registers a collector; a name clash is a programming error caught by the unit tests, so it
/// is logged rather than allowed to take the worker down.
fn registered<C: prometheus::core::Collector + Clone + 'static>(registry: &Registry, c: C) -> C {
    if let Err(e) = registry.register(Box::new(c.clone())) {
        tracing::error!(error = %e, "metric not registered");
    }
    c
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    match IntCounterVec::new(Opts::new(name, help), labels) {
        Ok(c) => registered(r, c),
        Err(e) => unreachable_metric(name, e),
    }
}

fn histogram_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: &[f64],
) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
    match HistogramVec::new(opts, labels) {
        Ok(h) => registered(r, h),
        Err(e) => unreachable_metric(name, e),
    }
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    match IntGaugeVec::new(Opts::new(name, help), labels) {
        Ok(g) => registered(r, g),
        Err(e) => unreachable_metric(name, e),
    }
}

fn float_gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    match GaugeVec::new(Opts::new(name, help), labels) {
        Ok(g) => registered(r, g),
        Err(e) => unreachable_metric(name, e),
    }
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    match IntGauge::new(name, help) {
        Ok(g) => registered(r, g),
        Err(e) => unreachable_metric(name, e),
    }
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    match IntCounter::new(name, help) {
        Ok(c) => registered(r, c),
        Err(e) => unreachable_metric(name, e),
    }
}

/// Metric names and labels are constants checked by the unit tests; an invalid one is a bug.
fn unreachable_metric<T>(name: &str, e: prometheus::Error) -> T {
    panic!("invalid metric definition `{name}`: {e}")
}

impl Metrics {
    fn new() -> Self {
        let r = Registry::new();
        let m = Metrics {
            requests: counter_vec(
                &r,
                "clip_worker_requests_total",
                "Requests and jobs answered, by endpoint, transport and outcome (ok or the request-level error code).",
                &["endpoint", "transport", "outcome"],
            ),
            request_duration: histogram_vec(
                &r,
                "clip_worker_request_duration_seconds",
                "Time from receiving a request or job to its response being ready.",
                &["endpoint", "transport"],
                DURATION_BUCKETS,
            ),
            documents: counter_vec(
                &r,
                "clip_worker_documents_total",
                "Documents answered (rank matches included), by modality and outcome (ok or the error code).",
                &["modality", "outcome"],
            ),
            rejections: counter_vec(
                &r,
                "clip_worker_rejections_total",
                "Requests or documents refused, by reason.",
                &["reason"],
            ),
            preprocess_duration: histogram_vec(
                &r,
                "clip_worker_preprocess_duration_seconds",
                "Preparing one document: fetch, decode, resize and crop, or tokenize.",
                &["modality"],
                DURATION_BUCKETS,
            ),
            queue_wait_duration: histogram_vec(
                &r,
                "clip_worker_queue_wait_duration_seconds",
                "Time a prepared document waited for its minibatch to start.",
                &["modality"],
                DURATION_BUCKETS,
            ),
            inference_duration: histogram_vec(
                &r,
                "clip_worker_inference_duration_seconds",
                "One minibatch run of a tower's ONNX session.",
                &["modality"],
                DURATION_BUCKETS,
            ),
            publish_duration: histogram_vec(
                &r,
                "clip_worker_publish_duration_seconds",
                "Sending a reply or publishing a job result (until flushed or stored).",
                &["transport"],
                DURATION_BUCKETS,
            ),
            batch_size: histogram_vec(
                &r,
                "clip_worker_batch_size",
                "Documents per minibatch run.",
                &["modality"],
                BATCH_BUCKETS,
            ),
            inference_executions: counter_vec(
                &r,
                "clip_worker_inference_executions_total",
                "Minibatches run (ONNX session executions).",
                &["modality"],
            ),
            inferences: counter_vec(
                &r,
                "clip_worker_inferences_total",
                "Documents run through a tower; divided by executions: the mean batch size.",
                &["modality"],
            ),
            queue_depth: gauge_vec(
                &r,
                "clip_worker_queue_depth",
                "Documents waiting in a pipeline queue (preprocess, text, image).",
                &["queue"],
            ),
            inflight_documents: gauge(
                &r,
                "clip_worker_inflight_documents",
                "Documents admitted and not yet answered.",
            ),
            expected_wait: float_gauge_vec(
                &r,
                "clip_worker_expected_wait_seconds",
                "How long one more document would wait for its answer at recent speed, by modality.",
                &["modality"],
            ),
            inflight_requests: gauge_vec(
                &r,
                "clip_worker_inflight_requests",
                "Requests or jobs being processed, by transport.",
                &["transport"],
            ),
            jetstream_deliveries: counter(
                &r,
                "clip_worker_jetstream_deliveries_total",
                "Job messages delivered to this worker.",
            ),
            jetstream_redeliveries: counter(
                &r,
                "clip_worker_jetstream_redeliveries_total",
                "Job messages delivered more than once (delivery count above 1).",
            ),
            jetstream_acks: counter_vec(
                &r,
                "clip_worker_jetstream_acks_total",
                "Acknowledgements sent for jobs, by kind (ack, nak, term, in_progress).",
                &["kind"],
            ),
            nats_connected: gauge(
                &r,
                "clip_worker_nats_connected",
                "1 while the NATS connection is up, else 0.",
            ),
            nats_reconnects: counter(
                &r,
                "clip_worker_nats_reconnects_total",
                "Connections to NATS made after the first one.",
            ),
            ready: gauge(
                &r,
                "clip_worker_ready",
                "1 while /readyz answers 200, else 0.",
            ),
            model_info: gauge_vec(
                &r,
                "clip_worker_model_info",
                "The served model: always 1, described by its labels.",
                &["model", "device", "dtype", "dim", "image_size"],
            ),
            text_length: gauge_vec(
                &r,
                "clip_worker_text_length",
                "How the text tower is fed: 1 on the active path (dynamic: each minibatch at its real length; fixed: padded to the graph's length).",
                &["path"],
            ),
            build_info: gauge_vec(
                &r,
                "clip_worker_build_info",
                "This build: always 1, described by its labels.",
                &["version"],
            ),
            registry: r,
            samplers: Mutex::new(Vec::new()),
        };
        m.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        m
    }

    /// Adds a function that refreshes sampled gauges before each scrape.
    pub(crate) fn on_scrape(&self, sampler: impl Fn(&Metrics) + Send + Sync + 'static) {
        if let Ok(mut s) = self.samplers.lock() {
            s.push(Box::new(sampler));
        }
    }

    /// The text exposition format, samplers run first.
    pub(crate) fn render(&self) -> Vec<u8> {
        if let Ok(samplers) = self.samplers.lock() {
            for s in samplers.iter() {
                s(self);
            }
        }
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "encoding metrics failed");
        }
        out
    }

    pub(crate) fn set_model_info(
        &self,
        model: &str,
        device: &str,
        dtype: &str,
        dim: usize,
        size: u32,
    ) {
        let (dim, size) = (dim.to_string(), size.to_string());
        self.model_info
            .with_label_values(&[model, device, dtype, dim.as_str(), size.as_str()])
            .set(1);
    }

    /// The text tower's path (`dynamic` or `fixed`): 1 on it, 0 on the other.
    pub(crate) fn set_text_length(&self, path: &str) {
        for p in ["dynamic", "fixed"] {
            self.text_length
                .with_label_values(&[p])
                .set(i64::from(p == path));
        }
    }

    /// Marks a request as in flight until the returned guard is dropped.
    pub(crate) fn request_started(&self, transport: Transport) -> InflightGuard {
        let gauge = self
            .inflight_requests
            .with_label_values(&[transport.as_str()]);
        gauge.inc();
        InflightGuard(gauge)
    }

    /// Counts one answered request: its outcome, duration, documents and rejections.
    /// One answered request or job: `error` is its request-level error, if any.
    pub(crate) fn record_request(
        &self,
        endpoint: &str,
        transport: Transport,
        error: Option<ErrorCode>,
        took: Duration,
    ) {
        let outcome = error.map_or("ok", ErrorCode::as_str);
        self.requests
            .with_label_values(&[endpoint, transport.as_str(), outcome])
            .inc();
        self.request_duration
            .with_label_values(&[endpoint, transport.as_str()])
            .observe(took.as_secs_f64());
        if let Some(code) = error {
            self.reject(code);
        }
    }

    /// One answered document (`modality` is `unknown` when it failed before it was known).
    pub(crate) fn record_document(&self, modality: &str, error: Option<ErrorCode>) {
        let outcome = error.map_or("ok", ErrorCode::as_str);
        self.documents.with_label_values(&[modality, outcome]).inc();
        if let Some(code) = error {
            self.reject(code);
        }
    }

    fn reject(&self, code: ErrorCode) {
        if let Some(reason) = rejection_reason(code) {
            self.rejections.with_label_values(&[reason]).inc();
        }
    }

    pub(crate) fn record_publish(&self, transport: Transport, took: Duration) {
        self.publish_duration
            .with_label_values(&[transport.as_str()])
            .observe(took.as_secs_f64());
    }

    pub(crate) fn record_delivery(&self, delivered: i64) {
        self.jetstream_deliveries.inc();
        if delivered > 1 {
            self.jetstream_redeliveries.inc();
        }
    }

    pub(crate) fn record_ack(&self, kind: JetStreamAck) {
        self.jetstream_acks
            .with_label_values(&[kind.as_str()])
            .inc();
    }

    /// Sets a monotonic counter to an externally counted total (never backwards).
    pub(crate) fn catch_up(counter: &IntCounter, total: u64) {
        let seen = counter.get();
        if total > seen {
            counter.inc_by(total - seen);
        }
    }
}

/// Why a request or a document was refused, for errors that are refusals (not failures).
pub(crate) fn rejection_reason(code: ErrorCode) -> Option<&'static str> {
    match code {
        ErrorCode::Overloaded => Some("overloaded"),
        ErrorCode::ShuttingDown => Some("shutting_down"),
        ErrorCode::TooLarge => Some("too_large"),
        ErrorCode::BadRequest | ErrorCode::ModelMismatch => Some("bad_request"),
        ErrorCode::EmptyDocument
        | ErrorCode::InvalidDocument
        | ErrorCode::ImageDecode
        | ErrorCode::UnsupportedImage
        | ErrorCode::NotFound
        | ErrorCode::UriRefused => Some("bad_document"),
        // Timeout and Unavailable are the client's own codes; a worker never answers them.
        ErrorCode::Fetch
        | ErrorCode::Inference
        | ErrorCode::Internal
        | ErrorCode::Unknown
        | ErrorCode::Timeout
        | ErrorCode::Unavailable => None,
    }
}

/// Decrements the in-flight gauge when dropped.
pub(crate) struct InflightGuard(IntGauge);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every series, as documented in docs/operations.md.
    pub(crate) const ALL_SERIES: &[&str] = &[
        "clip_worker_requests_total",
        "clip_worker_request_duration_seconds",
        "clip_worker_documents_total",
        "clip_worker_rejections_total",
        "clip_worker_preprocess_duration_seconds",
        "clip_worker_queue_wait_duration_seconds",
        "clip_worker_inference_duration_seconds",
        "clip_worker_publish_duration_seconds",
        "clip_worker_batch_size",
        "clip_worker_inference_executions_total",
        "clip_worker_inferences_total",
        "clip_worker_queue_depth",
        "clip_worker_inflight_documents",
        "clip_worker_expected_wait_seconds",
        "clip_worker_inflight_requests",
        "clip_worker_jetstream_deliveries_total",
        "clip_worker_jetstream_redeliveries_total",
        "clip_worker_jetstream_acks_total",
        "clip_worker_nats_connected",
        "clip_worker_nats_reconnects_total",
        "clip_worker_ready",
        "clip_worker_model_info",
        "clip_worker_text_length",
        "clip_worker_build_info",
    ];

    #[test]
    fn every_series_is_registered_rendered_and_documented() {
        let m = metrics();
        m.record_request(
            "encode",
            Transport::Service,
            Some(ErrorCode::Overloaded),
            Duration::ZERO,
        );
        m.preprocess_duration
            .with_label_values(&["text"])
            .observe(0.001);
        m.queue_wait_duration
            .with_label_values(&["text"])
            .observe(0.001);
        m.inference_duration
            .with_label_values(&["text"])
            .observe(0.001);
        m.batch_size.with_label_values(&["text"]).observe(2.0);
        m.inference_executions.with_label_values(&["text"]).inc();
        m.inferences.with_label_values(&["text"]).inc_by(2);
        m.queue_depth.with_label_values(&["text"]).set(0);
        m.expected_wait.with_label_values(&["text"]).set(0.5);
        m.record_publish(Transport::Jobs, Duration::ZERO);
        m.record_delivery(2);
        m.record_ack(JetStreamAck::Nak);
        m.set_model_info("m", "cpu", "fp32", 4, 8);
        m.set_text_length("dynamic");
        m.documents.with_label_values(&["text", "ok"]).inc();
        drop(m.request_started(Transport::Jobs));
        let text = String::from_utf8(m.render()).unwrap_or_default();
        let docs = include_str!("../../docs/operations.md");
        for name in ALL_SERIES {
            assert!(
                text.contains(&format!("# TYPE {name} ")),
                "{name} missing from:\n{text}"
            );
            assert!(
                docs.contains(&format!("`{name}")),
                "{name} not in docs/operations.md"
            );
        }
        assert!(text.contains("clip_worker_rejections_total{reason=\"overloaded\"}"));
        assert!(text.contains("clip_worker_jetstream_acks_total{kind=\"nak\"}"));
    }

    #[test]
    fn counters_catch_up_but_never_go_back() {
        let c = IntCounter::new("x_total", "x").unwrap_or_else(|e| unreachable_metric("x", e));
        Metrics::catch_up(&c, 3);
        Metrics::catch_up(&c, 2);
        assert_eq!(c.get(), 3);
    }

    #[test]
    fn refusals_have_reasons_and_failures_do_not() {
        assert_eq!(
            rejection_reason(ErrorCode::ModelMismatch),
            Some("bad_request")
        );
        assert_eq!(
            rejection_reason(ErrorCode::ImageDecode),
            Some("bad_document")
        );
        assert_eq!(rejection_reason(ErrorCode::Inference), None);
    }
}
