//! NATS transport: a request/reply service and a JetStream durable-job consumer, both feeding
//! the same [`handler::Handler`]. The transport knows nothing of ONNX.

pub mod connect;
pub mod handler;
pub mod jobs;
pub mod objects;
pub mod publish;
pub mod service;

use crate::error::ErrorCode;

/// Header naming where a durable job's result is published.
pub const REPLY_TO_HEADER: &str = "Clip-Reply-To";
/// Header carrying the job id on a result (the job's `Nats-Msg-Id`, else `stream:sequence`).
pub const JOB_ID_HEADER: &str = "Clip-Job-Id";
/// Header carrying the protocol version on every response.
pub const PROTOCOL_HEADER: &str = "Clip-Protocol";

/// The numeric code sent in `Nats-Service-Error-Code` for a request-level error.
pub fn service_error_code(code: ErrorCode) -> u16 {
    match code {
        ErrorCode::BadRequest
        | ErrorCode::InvalidDocument
        | ErrorCode::EmptyDocument
        | ErrorCode::ImageDecode
        | ErrorCode::UnsupportedImage
        | ErrorCode::ModelMismatch => 400,
        ErrorCode::NotFound => 404,
        ErrorCode::TooLarge => 413,
        ErrorCode::Overloaded | ErrorCode::ShuttingDown => 503,
        ErrorCode::Fetch => 502,
        ErrorCode::Inference | ErrorCode::Internal | ErrorCode::Unknown => 500,
    }
}
