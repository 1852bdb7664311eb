//! Request limits, checked once where a request is decoded so later stages can trust it.

use super::{IncomingRequest, WireDoc};
use crate::defaults;
use crate::error::{DocError, ErrorCode};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Documents per request, matches included.
    pub max_docs: usize,
    /// Matches under one rank root.
    pub max_matches: usize,
    /// Characters of one text.
    pub max_text_chars: usize,
    /// Bytes of one blob or tensor.
    pub max_doc_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_docs: defaults::MAX_DOCS_PER_REQUEST,
            max_matches: defaults::MAX_MATCHES,
            max_text_chars: defaults::MAX_TEXT_CHARS,
            max_doc_bytes: defaults::MAX_DOC_BYTES,
        }
    }
}

impl Limits {
    /// Whole-request limits: a violation fails the request.
    pub(crate) fn check_request(&self, req: &IncomingRequest, rank: bool) -> Result<(), DocError> {
        let total: usize = req.docs.iter().map(|d| 1 + d.match_count()).sum();
        if total > self.max_docs {
            return Err(DocError::new(
                ErrorCode::TooLarge,
                format!(
                    "request has {total} documents; the limit is {}",
                    self.max_docs
                ),
            ));
        }
        if rank {
            if let Some(d) = req.docs.iter().find(|d| d.match_count() > self.max_matches) {
                return Err(DocError::new(
                    ErrorCode::TooLarge,
                    format!(
                        "a rank document has {} matches; the limit is {}",
                        d.match_count(),
                        self.max_matches
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Per-document limits: a violation fails that document alone.
    pub(crate) fn check_doc(&self, doc: &WireDoc) -> Result<(), DocError> {
        if let Some(t) = &doc.text {
            if t.chars().count() > self.max_text_chars {
                return Err(DocError::new(
                    ErrorCode::TooLarge,
                    format!("text exceeds {} characters", self.max_text_chars),
                ));
            }
        }
        let bytes =
            doc.blob.as_ref().map_or(0, Vec::len) + doc.tensor.as_ref().map_or(0, |t| t.data.len());
        if bytes > self.max_doc_bytes {
            return Err(DocError::new(
                ErrorCode::TooLarge,
                format!(
                    "document content of {bytes} bytes exceeds {} bytes",
                    self.max_doc_bytes
                ),
            ));
        }
        Ok(())
    }
}
