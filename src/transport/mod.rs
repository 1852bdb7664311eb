//! NATS transport: a request/reply service and a JetStream durable-job consumer, both feeding
//! the same [`handler::Handler`]. The transport knows nothing of ONNX.

pub mod connect;
pub(crate) mod handler;
pub(crate) mod jobs;
pub(crate) mod objects;
pub(crate) mod publish;
pub mod refusal;
pub(crate) mod service;
pub(crate) mod startup;

use crate::error::ErrorCode;

/// The numeric code sent in `Nats-Service-Error-Code` for a request-level error.
pub(crate) fn service_error_code(code: ErrorCode) -> u16 {
    match code {
        ErrorCode::BadRequest
        | ErrorCode::InvalidDocument
        | ErrorCode::EmptyDocument
        | ErrorCode::ImageDecode
        | ErrorCode::UnsupportedImage
        | ErrorCode::ModelMismatch => 400,
        ErrorCode::NotFound => 404,
        ErrorCode::UriRefused => 403,
        ErrorCode::TooLarge => 413,
        ErrorCode::Overloaded | ErrorCode::ShuttingDown | ErrorCode::Unavailable => 503,
        ErrorCode::Timeout => 504,
        ErrorCode::Fetch => 502,
        ErrorCode::Inference | ErrorCode::Internal | ErrorCode::Unknown => 500,
    }
}

/// Counts an answered request or job and each of its documents (matches included).
pub(crate) fn record_response(
    endpoint: &str,
    transport: crate::telemetry::Transport,
    response: &crate::protocol::Response,
    took: std::time::Duration,
) {
    let m = crate::telemetry::metrics();
    m.record_request(
        endpoint,
        transport,
        response.error.as_ref().map(|e| e.code),
        took,
    );
    let docs = response
        .docs
        .iter()
        .flat_map(|d| std::iter::once(d).chain(d.matches.iter().flatten()));
    for doc in docs {
        let modality = doc.modality.map_or("unknown", |m| m.as_str());
        m.record_document(modality, doc.error.as_ref().map(|e| e.code));
    }
}
