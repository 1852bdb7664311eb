//! Fetches run on the async runtime's blocking threads, a bounded number at once, never on the
//! CPU preprocess pool: a slow server can then delay only its own document.

use super::FetchPolicy;
use crate::error::{DocError, ErrorCode};
use std::sync::Arc;
use tokio::sync::Semaphore;

/// Fetches for `serve`: at most `limit` in flight; the rest wait for a slot.
#[derive(Debug, Clone)]
pub(crate) struct FetchWorkers {
    policy: FetchPolicy,
    slots: Arc<Semaphore>,
}

impl FetchWorkers {
    pub(crate) fn new(policy: FetchPolicy, limit: usize) -> Self {
        FetchWorkers {
            policy,
            slots: Arc::new(Semaphore::new(limit.max(1))),
        }
    }

    pub(crate) fn policy(&self) -> &FetchPolicy {
        &self.policy
    }

    /// The bytes behind `uri`. The slot is held by the blocking thread itself, so it is freed
    /// only when that thread is: the bound holds even for a fetch whose caller stopped waiting.
    pub(crate) async fn fetch(&self, uri: String) -> Result<Vec<u8>, DocError> {
        let slot = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| DocError::new(ErrorCode::ShuttingDown, "fetches are closed"))?;
        let policy = self.policy.clone();
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            policy.fetch(&uri)
        })
        .await
        .map_err(|e| DocError::new(ErrorCode::Internal, format!("fetch task failed: {e}")))?
    }
}
