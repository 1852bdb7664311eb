//! Publishing results: through JetStream (publish-ack, de-duplication by `Nats-Msg-Id`) when a
//! stream captures the subject, else as a plain publish followed by a flush.
//!
//! Which subjects belong to a stream is looked up once and cached for a while: a JetStream
//! publish to a plain inbox would wait for an ack that never comes (the subscriber is a
//! "responder" but not a stream).

use crate::error::BoxError;
use async_nats::HeaderMap;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a "stream or not" answer for a subject is trusted.
const STREAM_LOOKUP_TTL: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub(crate) struct Publisher {
    pub client: async_nats::Client,
    pub jetstream: async_nats::jetstream::Context,
    streams: Arc<Mutex<HashMap<String, (bool, Instant)>>>,
}

#[derive(Debug, thiserror::Error)]
#[error("publishing the result to `{subject}` failed")]
pub(crate) struct PublishFailed {
    pub subject: String,
    #[source]
    pub source: BoxError,
}

impl Publisher {
    pub(crate) fn new(
        client: async_nats::Client,
        jetstream: async_nats::jetstream::Context,
    ) -> Self {
        Publisher {
            client,
            jetstream,
            streams: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Publishes and returns once the result is safe: stored by JetStream, or flushed to the server.
    pub(crate) async fn publish(
        &self,
        subject: &str,
        headers: HeaderMap,
        payload: Bytes,
    ) -> Result<(), PublishFailed> {
        let fail = |source: BoxError| PublishFailed {
            subject: subject.to_string(),
            source,
        };
        if self.captured_by_stream(subject).await {
            let ack = self
                .jetstream
                .publish_with_headers(subject.to_string(), headers, payload)
                .await
                .map_err(|e| fail(e.into()))?;
            ack.await.map(|_| ()).map_err(|e| {
                self.forget(subject);
                fail(e.into())
            })
        } else {
            self.client
                .publish_with_headers(subject.to_string(), headers, payload)
                .await
                .map_err(|e| fail(e.into()))?;
            self.client.flush().await.map_err(|e| fail(e.into()))
        }
    }

    async fn captured_by_stream(&self, subject: &str) -> bool {
        if let Ok(cache) = self.streams.lock() {
            if let Some((captured, at)) = cache.get(subject) {
                if at.elapsed() < STREAM_LOOKUP_TTL {
                    return *captured;
                }
            }
        }
        let captured = self.jetstream.stream_by_subject(subject).await.is_ok();
        if let Ok(mut cache) = self.streams.lock() {
            if cache.len() > 10_000 {
                cache.clear(); // reply inboxes are unique: keep the cache from growing without end
            }
            cache.insert(subject.to_string(), (captured, Instant::now()));
        }
        captured
    }

    fn forget(&self, subject: &str) {
        if let Ok(mut cache) = self.streams.lock() {
            cache.remove(subject);
        }
    }
}
