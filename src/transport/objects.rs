//! Images stored in a NATS Object Store bucket, for documents larger than `max_payload`.

use crate::error::{DocError, ErrorCode};
use crate::protocol::ObjectRef;
use tokio::io::AsyncReadExt;

#[derive(Clone)]
pub(crate) struct ObjectFetcher {
    pub jetstream: async_nats::jetstream::Context,
}

impl ObjectFetcher {
    /// Reads the named object, refusing more than `max_bytes`.
    pub(crate) async fn fetch(
        &self,
        obj: &ObjectRef,
        max_bytes: usize,
    ) -> Result<Vec<u8>, DocError> {
        let not_found = |e: String| {
            DocError::new(
                ErrorCode::NotFound,
                format!("object `{}` in bucket `{}`: {e}", obj.name, obj.bucket),
            )
        };
        let store = self
            .jetstream
            .get_object_store(&obj.bucket)
            .await
            .map_err(|e| not_found(e.to_string()))?;
        let mut object = store
            .get(&obj.name)
            .await
            .map_err(|e| not_found(e.to_string()))?;
        if object.info.size > max_bytes {
            return Err(DocError::new(
                ErrorCode::TooLarge,
                format!(
                    "object of {} bytes exceeds {max_bytes} bytes",
                    object.info.size
                ),
            ));
        }
        let mut bytes = Vec::with_capacity(object.info.size);
        object.read_to_end(&mut bytes).await.map_err(|e| {
            DocError::new(
                ErrorCode::Fetch,
                format!("reading object `{}`: {e}", obj.name),
            )
        })?;
        Ok(bytes)
    }
}
