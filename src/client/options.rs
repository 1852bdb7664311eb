//! How the client sends work.

use super::retry::RetryPolicy;
use crate::defaults;
use crate::protocol::EmbeddingDtype;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// Publish durable JetStream jobs instead of request/reply.
    pub durable: bool,
    /// Documents per request (rank: roots and their matches together; a root is never split).
    pub batch_size: usize,
    /// Requests (or jobs) in flight at once.
    pub concurrency: usize,
    /// How long to wait for one request's reply (or one job's result, from its publication).
    pub timeout: Duration,
    /// Ask for L2-normalised embeddings.
    pub normalize: bool,
    /// Ask for float16 embeddings on the wire (results are still returned as f32).
    pub dtype: EmbeddingDtype,
    /// Sent as `params.model`: the worker refuses the request if it serves another model.
    pub model: Option<String>,
    /// Object Store bucket for images larger than one message.
    pub object_bucket: String,
    /// When and how often a transient failure is tried again.
    pub retry: RetryPolicy,
}

impl Options {
    /// Bytes of one embedding value on the wire.
    pub(crate) fn dtype_bytes(&self) -> usize {
        match self.dtype {
            EmbeddingDtype::F32 => 4,
            EmbeddingDtype::F16 => 2,
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            durable: false,
            batch_size: defaults::BATCH_SIZE,
            concurrency: defaults::CONCURRENCY,
            timeout: defaults::TIMEOUT,
            normalize: false,
            dtype: EmbeddingDtype::F32,
            model: None,
            object_bucket: defaults::OBJECT_BUCKET.into(),
            retry: RetryPolicy::default(),
        }
    }
}
