//! NATS transport: a request/reply service and a JetStream durable-job consumer, both feeding
//! the same [`handler::Handler`]. The transport knows nothing of ONNX.

pub mod connect;
pub mod handler;
pub mod jobs;
pub mod objects;
pub mod publish;
pub mod service;

use crate::error::ErrorCode;

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
        ErrorCode::Overloaded | ErrorCode::ShuttingDown | ErrorCode::Unavailable => 503,
        ErrorCode::Timeout => 504,
        ErrorCode::Fetch => 502,
        ErrorCode::Inference | ErrorCode::Internal | ErrorCode::Unknown => 500,
    }
}
