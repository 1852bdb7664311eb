//! Spans for NATS messages and minibatches, and W3C trace context carried in NATS headers.
//!
//! Span shapes follow the OpenTelemetry messaging conventions: a consumer span `process
//! <subject>` per incoming message (parent: the publisher's `traceparent`), child spans for
//! preprocessing each document and for publishing the reply, and one `inference <modality>` span
//! per minibatch that links to the span of every message whose documents it carried.
//!
//! Without trace export (see [`super::otel`]) the spans stay plain `tracing` spans, the
//! incoming `traceparent`/`tracestate` are passed through to the reply unchanged and the trace
//! id is still recorded for the logs.

use async_nats::HeaderMap;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use tracing::field::Empty;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

pub(crate) const TRACEPARENT: &str = "traceparent";
pub(crate) const TRACESTATE: &str = "tracestate";

static EXPORTING: AtomicBool = AtomicBool::new(false);
static MODEL: OnceLock<(String, String)> = OnceLock::new();

/// Called once the OpenTelemetry layer is installed.
pub(super) fn set_exporting() {
    EXPORTING.store(true, Ordering::SeqCst);
}

/// Whether spans are exported (an OpenTelemetry layer is installed).
pub(crate) fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// The model and device named on every batch span.
pub(crate) fn set_model(model: &str, device: &str) {
    let _ = MODEL.set((model.to_string(), device.to_string()));
}

/// What is known about an incoming message when its processing starts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Incoming<'a> {
    pub subject: &'a str,
    /// The queue group (request/reply) or durable consumer (jobs) it was delivered through.
    pub consumer_group: &'a str,
    pub message_id: Option<&'a str>,
    pub body_size: usize,
    /// JetStream delivery count (jobs only).
    pub delivery_count: Option<i64>,
    pub headers: Option<&'a HeaderMap>,
}

/// The consumer span for one incoming message, continuing the publisher's trace.
pub(crate) fn process_span(m: &Incoming<'_>) -> Span {
    let span = tracing::info_span!(
        target: "clip_worker::messaging",
        "process",
        otel.name = %format_args!("process {}", m.subject),
        otel.kind = "consumer",
        trace_id = Empty,
    );
    if span.is_disabled() {
        return span;
    }
    if exporting() {
        if let Some(h) = m.headers {
            let parent = TraceContextPropagator::new().extract(&Carrier(h));
            if parent.span().span_context().is_valid() {
                let _ = span.set_parent(parent);
            }
        }
        span.set_attribute("messaging.system", "nats");
        span.set_attribute("messaging.operation.name", "process");
        span.set_attribute("messaging.operation.type", "process");
        span.set_attribute("messaging.destination.name", m.subject.to_string());
        span.set_attribute(
            "messaging.consumer.group.name",
            m.consumer_group.to_string(),
        );
        span.set_attribute("messaging.message.body.size", m.body_size as i64);
        if let Some(id) = m.message_id {
            span.set_attribute("messaging.message.id", id.to_string());
        }
        if let Some(n) = m.delivery_count {
            span.set_attribute("messaging.nats.message.delivery_count", n);
        }
        let trace_id = span.context().span().span_context().trace_id();
        span.record("trace_id", tracing::field::display(trace_id));
    } else if let Some(id) = m.headers.and_then(incoming_trace_id) {
        span.record("trace_id", id);
    }
    span
}

/// The worker's producer span for a reply or a job result (a child of the current span).
/// Named without the subject: reply inboxes are unique, span names must not be.
pub(crate) fn publish_span(destination: &str) -> Span {
    let span = tracing::info_span!(
        target: "clip_worker::messaging",
        "publish",
        otel.name = "publish",
        otel.kind = "producer",
    );
    producer_attributes(&span, "publish", destination);
    span
}

/// A client's producer span for a request or a job, `send <subject>`.
pub(crate) fn send_span(destination: &str) -> Span {
    let span = tracing::info_span!(
        target: "clip_worker::messaging",
        "send",
        otel.name = %format_args!("send {destination}"),
        otel.kind = "producer",
    );
    producer_attributes(&span, "send", destination);
    span
}

fn producer_attributes(span: &Span, operation: &'static str, destination: &str) {
    if exporting() && !span.is_disabled() {
        span.set_attribute("messaging.system", "nats");
        span.set_attribute("messaging.operation.name", operation);
        span.set_attribute("messaging.operation.type", "send");
        span.set_attribute("messaging.destination.name", destination.to_string());
    }
}

/// One minibatch run: a child of the first message's span, linked to every message's span.
pub(crate) fn batch_span<'a>(
    modality: &'static str,
    messages: impl Iterator<Item = &'a Span> + Clone,
    size: usize,
) -> Span {
    let first = messages.clone().next();
    let span = tracing::info_span!(
        target: "clip_worker::batch",
        parent: first.and_then(Span::id),
        "inference",
        otel.name = %format_args!("inference {modality}"),
        batch_size = size,
        modality,
    );
    if !exporting() || span.is_disabled() {
        return span;
    }
    let mut linked = HashSet::new();
    for message in messages {
        let context = message.context().span().span_context().clone();
        if context.is_valid() && linked.insert(context.span_id()) {
            span.add_link(context);
        }
    }
    let (model, device) = MODEL.get().cloned().unwrap_or_default();
    span.set_attribute("clip_worker.batch.size", size as i64);
    span.set_attribute("clip_worker.modality", modality);
    span.set_attribute("clip_worker.model", model);
    span.set_attribute("clip_worker.device", device);
    span.set_attribute("messaging.batch.message_count", linked.len() as i64);
    span
}

/// Puts the trace context of `span` into outgoing headers; without export, passes the
/// incoming `traceparent`/`tracestate` through unchanged.
pub(crate) fn inject(span: &Span, headers: &mut HeaderMap, incoming: Option<&HeaderMap>) {
    if exporting() {
        let context = span.context();
        if context.span().span_context().is_valid() {
            TraceContextPropagator::new().inject_context(&context, &mut Carrier(headers));
            return;
        }
    }
    if let Some(incoming) = incoming {
        for name in [TRACEPARENT, TRACESTATE] {
            if let Some(value) = incoming.get(name) {
                set_header(headers, name, value.as_str());
            }
        }
    }
}

/// The trace id of an incoming `traceparent` (`00-<trace id>-<span id>-<flags>`), if well formed.
fn incoming_trace_id(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(TRACEPARENT)?.as_str();
    let id = value.split('-').nth(1)?;
    let valid = id.len() == 32
        && id.bytes().all(|b| b.is_ascii_hexdigit())
        && id.bytes().any(|b| b != b'0');
    valid.then_some(id)
}

/// Inserts a header only if NATS can carry it (the client panics on control characters).
fn set_header(headers: &mut HeaderMap, name: &str, value: &str) {
    let name_ok = !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b':');
    let value_ok = value.bytes().all(|b| b != b'\r' && b != b'\n');
    if name_ok && value_ok {
        headers.insert(name, value);
    }
}

/// NATS headers as an OpenTelemetry propagation carrier.
struct Carrier<H>(H);

impl Extractor for Carrier<&HeaderMap> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|v| v.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_ref()).collect()
    }
}

impl Injector for Carrier<&mut HeaderMap> {
    fn set(&mut self, key: &str, value: String) {
        set_header(self.0, key, &value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_context_is_passed_through_without_export() {
        let mut incoming = HeaderMap::new();
        let parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        incoming.insert(TRACEPARENT, parent);
        incoming.insert(TRACESTATE, "k=v");
        let mut out = HeaderMap::new();
        inject(&Span::none(), &mut out, Some(&incoming));
        assert_eq!(out.get(TRACEPARENT).map(|v| v.as_str()), Some(parent));
        assert_eq!(out.get(TRACESTATE).map(|v| v.as_str()), Some("k=v"));
        assert_eq!(
            incoming_trace_id(&incoming),
            Some("0af7651916cd43dd8448eb211c80319c")
        );
    }

    #[test]
    fn malformed_trace_context_is_ignored() {
        let mut h = HeaderMap::new();
        h.insert(
            TRACEPARENT,
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
        );
        assert_eq!(incoming_trace_id(&h), None);
        h.insert(TRACEPARENT, "garbage");
        assert_eq!(incoming_trace_id(&h), None);
        let mut out = HeaderMap::new();
        set_header(&mut out, "bad:name", "v");
        set_header(&mut out, "tracestate", "a\r\nb");
        assert!(out.is_empty());
    }
}
