//! The process's `tracing` subscriber: logs on standard error (text or JSON lines, filtered by
//! `CLIP_WORKER_LOG`), plus the OpenTelemetry layer when trace export is configured.

use super::otel::{self, OtelError};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::{filter_fn, EnvFilter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, with the current span's fields (its `trace_id` included).
    Json,
}

/// Keeps trace export running; dropping it flushes the spans not yet exported.
#[must_use = "dropping the guard stops trace export"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            if let Err(e) = p.shutdown() {
                eprintln!("warning: flushing traces at exit failed: {e}");
            }
        }
    }
}

/// Installs the subscriber. `service` names this process in exported traces; `None` never
/// exports (commands that do no NATS work).
pub fn init(format: LogFormat, service: Option<&str>) -> Result<TelemetryGuard, OtelError> {
    let filter = EnvFilter::try_from_env("CLIP_WORKER_LOG")
        // Model download progress is worth seeing by default (it can take minutes).
        .unwrap_or_else(|_| EnvFilter::new("warn,clip_worker::model=info"));
    let logs = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .boxed(),
    }
    .with_filter(filter);

    let provider = match service {
        Some(name) => otel::provider_from_env(name)?,
        None => None,
    };
    let traces = provider.as_ref().map(|p| {
        // The crate's spans (preprocess is a debug span) and its events from info up.
        let ours = filter_fn(|meta| {
            meta.target().starts_with("clip_worker")
                && (meta.is_span() || *meta.level() <= tracing::Level::INFO)
        });
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("clip-worker"))
            .with_filter(ours)
    });
    let exporting = traces.is_some();
    // A subscriber already installed (tests calling `init` twice) keeps the first one.
    let _ = tracing_subscriber::registry()
        .with(logs)
        .with(traces)
        .try_init();
    if exporting {
        super::trace::set_exporting();
    }
    Ok(TelemetryGuard { provider })
}
