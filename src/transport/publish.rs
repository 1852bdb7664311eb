//! Publishing results: through JetStream (with a publish ack and de-duplication id) when the
//! subject belongs to a stream, else as a plain publish followed by a flush.

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::HeaderMap;
use bytes::Bytes;

#[derive(Clone)]
pub struct Publisher {
    pub client: async_nats::Client,
    pub jetstream: async_nats::jetstream::Context,
}

#[derive(Debug, thiserror::Error)]
#[error("publishing the result to `{subject}` failed: {message}")]
pub struct PublishFailed {
    pub subject: String,
    pub message: String,
}

impl Publisher {
    /// Publishes and returns once the result is safe: stored by JetStream, or flushed to the server.
    pub async fn publish(
        &self,
        subject: &str,
        headers: HeaderMap,
        payload: Bytes,
    ) -> Result<(), PublishFailed> {
        let fail = |message: String| PublishFailed {
            subject: subject.to_string(),
            message,
        };
        let ack = self
            .jetstream
            .publish_with_headers(subject.to_string(), headers.clone(), payload.clone())
            .await
            .map_err(|e| fail(e.to_string()))?;
        match ack.await {
            Ok(_) => Ok(()),
            // No stream listens on this subject: deliver it as a plain message.
            Err(e) if e.kind() == PublishErrorKind::StreamNotFound => {
                self.client
                    .publish_with_headers(subject.to_string(), headers, payload)
                    .await
                    .map_err(|e| fail(e.to_string()))?;
                self.client.flush().await.map_err(|e| fail(e.to_string()))
            }
            Err(e) => Err(fail(e.to_string())),
        }
    }
}
