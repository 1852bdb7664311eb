//! Error codes shared by the engine, the CLI output and the wire protocol.
//!
//! Codes are stable strings (snake_case) because clients match on them.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A stable, machine-readable error code.
///
/// Decoding is lenient: a code this build does not know (added by a newer worker under the
/// additive v1 rules) becomes [`ErrorCode::Unknown`] instead of failing the whole response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", from = "String")]
pub enum ErrorCode {
    /// The document has no text, blob, uri or tensor.
    EmptyDocument,
    /// The document is malformed (bad tensor shape, conflicting fields, bad base64...).
    InvalidDocument,
    /// The bytes could not be decoded as an image.
    ImageDecode,
    /// The bytes are an image in a format this build cannot decode (e.g. arithmetic-coded JPEG, 10-bit AVIF).
    UnsupportedImage,
    /// A local path named by the document does not exist or cannot be read.
    NotFound,
    /// A remote URI could not be fetched.
    Fetch,
    /// The worker's URI policy forbids this URI (a local path, or an address that is not public).
    UriRefused,
    /// The input exceeds a configured limit.
    TooLarge,
    /// ONNX Runtime failed while running the batch.
    Inference,
    /// The request named a model other than the one served.
    ModelMismatch,
    /// The request itself is malformed.
    BadRequest,
    /// The worker cannot take more work right now; retry later.
    Overloaded,
    /// The worker is shutting down.
    ShuttingDown,
    /// A bug or an unexpected condition.
    Internal,
    /// Client side: no reply (or job result) arrived within the client's timeout.
    Timeout,
    /// Client side: no worker could be reached (none listening, no jobs stream, NATS unreachable).
    Unavailable,
    /// A code from a newer protocol revision (only produced when decoding).
    Unknown,
}

impl From<String> for ErrorCode {
    fn from(code: String) -> Self {
        ALL_CODES
            .iter()
            .copied()
            .find(|c| c.as_str() == code)
            .unwrap_or(ErrorCode::Unknown)
    }
}

/// Every code, in documentation order.
pub const ALL_CODES: [ErrorCode; 17] = [
    ErrorCode::EmptyDocument,
    ErrorCode::InvalidDocument,
    ErrorCode::ImageDecode,
    ErrorCode::UnsupportedImage,
    ErrorCode::NotFound,
    ErrorCode::Fetch,
    ErrorCode::UriRefused,
    ErrorCode::TooLarge,
    ErrorCode::Inference,
    ErrorCode::ModelMismatch,
    ErrorCode::BadRequest,
    ErrorCode::Overloaded,
    ErrorCode::ShuttingDown,
    ErrorCode::Internal,
    ErrorCode::Timeout,
    ErrorCode::Unavailable,
    ErrorCode::Unknown,
];

impl ErrorCode {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ErrorCode::EmptyDocument => "empty_document",
            ErrorCode::InvalidDocument => "invalid_document",
            ErrorCode::ImageDecode => "image_decode",
            ErrorCode::UnsupportedImage => "unsupported_image",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Fetch => "fetch",
            ErrorCode::UriRefused => "uri_refused",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::Inference => "inference",
            ErrorCode::ModelMismatch => "model_mismatch",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::Internal => "internal",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Unknown => "unknown",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error attached to one document (or one request): a code and a human message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct DocError {
    pub code: ErrorCode,
    pub message: String,
}

impl DocError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        DocError {
            code,
            message: message.into(),
        }
    }
}

/// Any error kept as the source of another one, whatever its type.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Displays an error followed by its sources, `outer: inner: root`, so a log line or a
/// document's error message carries the whole cause, not only the outermost context.
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(e) = source {
            write!(f, ": {e}")?;
            source = e.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn chain_shows_every_source() {
        let e = Outer(std::io::Error::other("root cause"));
        assert_eq!(ErrorChain(&e).to_string(), "outer: root cause");
        let plain = std::io::Error::other("alone");
        assert_eq!(ErrorChain(&plain).to_string(), "alone");
    }

    #[test]
    fn codes_round_trip_and_unknown_codes_decode_leniently() {
        for code in ALL_CODES {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert_eq!(serde_json::from_str::<ErrorCode>(&json).unwrap(), code);
        }
        let future: ErrorCode = serde_json::from_str("\"quota_exceeded\"").unwrap();
        assert_eq!(future, ErrorCode::Unknown);
    }
}
