//! OpenTelemetry trace export, configured only by the standard `OTEL_*` environment variables.
//!
//! Nothing is set up unless an OTLP endpoint is named (`OTEL_EXPORTER_OTLP_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) and `OTEL_SDK_DISABLED` is not `true`: without them no
//! layer is installed and spans cost what a disabled `tracing` span costs.
//!
//! Export is OTLP/HTTP protobuf from the SDK's batch thread. The HTTP client is `ureq` (already
//! used for fetching URIs): a plain blocking client on that dedicated thread needs no async
//! runtime and never blocks the worker's own.

use bytes::Bytes;
use opentelemetry_http::{HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{SpanExporter, WithHttpConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use std::io::Read;
use std::time::Duration;

/// Largest collector response read (they are tiny; this only bounds a misbehaving peer).
const MAX_RESPONSE_BYTES: u64 = 4 * 1024 * 1024;
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
#[error("OpenTelemetry trace export: {0}")]
pub struct OtelError(String);

fn env_set(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.trim().is_empty())
}

fn env_is(name: &str, value: &str) -> bool {
    std::env::var(name).is_ok_and(|v| v.trim().eq_ignore_ascii_case(value))
}

/// Whether the environment asks for trace export.
pub(crate) fn requested() -> bool {
    if env_is("OTEL_SDK_DISABLED", "true") || env_is("OTEL_TRACES_EXPORTER", "none") {
        return false;
    }
    env_set("OTEL_EXPORTER_OTLP_ENDPOINT") || env_set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
}

/// Builds the tracer provider from the environment; `None` when export is not requested.
pub(crate) fn provider_from_env(
    default_service: &str,
) -> Result<Option<SdkTracerProvider>, OtelError> {
    if !requested() {
        return Ok(None);
    }
    let exporter = SpanExporter::builder()
        .with_http()
        .with_http_client(UreqClient::new(export_timeout()))
        .build()
        .map_err(|e| OtelError(format!("{e} (this build exports OTLP over HTTP: set OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf or leave it unset)")))?;
    let mut resource = Resource::builder();
    let named = env_set("OTEL_SERVICE_NAME")
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|a| a.contains("service.name="));
    if !named {
        resource = resource.with_service_name(default_service.to_string());
    }
    resource = resource.with_attribute(opentelemetry::KeyValue::new(
        "service.version",
        env!("CARGO_PKG_VERSION"),
    ));
    // The sampler comes from OTEL_TRACES_SAMPLER[_ARG], batching from OTEL_BSP_*, both read by
    // the SDK's defaults.
    Ok(Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build(),
    ))
}

/// `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT`, else `OTEL_EXPORTER_OTLP_TIMEOUT` (milliseconds).
fn export_timeout() -> Duration {
    [
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
        "OTEL_EXPORTER_OTLP_TIMEOUT",
    ]
    .iter()
    .find_map(|name| std::env::var(name).ok()?.trim().parse::<u64>().ok())
    .map(Duration::from_millis)
    .unwrap_or(DEFAULT_TIMEOUT)
}

/// The OTLP exporter's HTTP client.
#[derive(Debug)]
struct UreqClient {
    agent: ureq::Agent,
}

impl UreqClient {
    fn new(timeout: Duration) -> Self {
        UreqClient {
            agent: ureq::AgentBuilder::new().timeout(timeout).build(),
        }
    }

    fn send(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let (parts, body) = request.into_parts();
        let mut call = self
            .agent
            .request(parts.method.as_str(), &parts.uri.to_string());
        for (name, value) in &parts.headers {
            if let Ok(v) = value.to_str() {
                call = call.set(name.as_str(), v);
            }
        }
        let reply = match call.send_bytes(&body) {
            Ok(r) => r,
            // A status error still is a response: the exporter decides what it means.
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => return Err(Box::new(e)),
        };
        let status = reply.status();
        let mut bytes = Vec::new();
        reply
            .into_reader()
            .take(MAX_RESPONSE_BYTES)
            .read_to_end(&mut bytes)?;
        Ok(Response::builder()
            .status(status)
            .body(Bytes::from(bytes))?)
    }
}

#[async_trait::async_trait]
impl HttpClient for UreqClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        // Runs on the SDK's batch-export thread, where blocking is expected.
        self.send(request)
    }
}
