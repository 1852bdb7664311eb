//! Images too large for one message go to a NATS Object Store bucket, named by their SHA-256 so
//! that uploading the same image again is a no-op.

use crate::error::{DocError, ErrorCode};
use crate::protocol::ObjectRef;
use async_nats::jetstream::object_store::{self, ObjectMetadata, ObjectStore};
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::Mutex;

/// How long uploaded images are kept in a bucket this client creates.
pub(crate) const BUCKET_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// Object Store chunks are at most this big (the library's default), and never over the
/// server's `max_payload`.
const MAX_CHUNK: usize = 128 * 1024;

pub(crate) struct Uploader {
    jetstream: async_nats::jetstream::Context,
    chunk_size: usize,
    /// Open buckets; the lock also serialises uploads so one image is never written twice at once.
    stores: Mutex<HashMap<String, ObjectStore>>,
}

impl Uploader {
    pub(crate) fn new(jetstream: async_nats::jetstream::Context, max_payload: usize) -> Self {
        Uploader {
            jetstream,
            chunk_size: MAX_CHUNK.min(max_payload.saturating_sub(4096)).max(1024),
            stores: Mutex::new(HashMap::new()),
        }
    }

    /// Stores `bytes` in `bucket` (created if absent) unless an object of that content is already
    /// there, and returns the reference to send instead of the blob.
    pub(crate) async fn upload(&self, bucket: &str, bytes: &[u8]) -> Result<ObjectRef, DocError> {
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            DocError::new(
                ErrorCode::Internal,
                format!(
                    "uploading an image of {} bytes to object store bucket `{bucket}`: {what}: {e}",
                    bytes.len()
                ),
            )
        };
        let name = object_name(bytes);
        let mut stores = self.stores.lock().await;
        let store = match stores.get(bucket) {
            Some(s) => s.clone(),
            None => {
                let s = self
                    .open_bucket(bucket)
                    .await
                    .map_err(|e| fail("opening the bucket", &e))?;
                stores.insert(bucket.to_string(), s.clone());
                s
            }
        };
        if let Ok(info) = store.info(&name).await {
            if info.size == bytes.len() && !info.deleted {
                return Ok(ObjectRef {
                    bucket: bucket.to_string(),
                    name,
                });
            }
        }
        let meta = ObjectMetadata {
            name: name.clone(),
            chunk_size: Some(self.chunk_size),
            ..Default::default()
        };
        let mut reader = bytes;
        store
            .put(meta, &mut reader)
            .await
            .map_err(|e| fail("put", &e))?;
        Ok(ObjectRef {
            bucket: bucket.to_string(),
            name,
        })
    }

    async fn open_bucket(&self, bucket: &str) -> Result<ObjectStore, String> {
        if let Ok(s) = self.jetstream.get_object_store(bucket).await {
            return Ok(s);
        }
        self.jetstream
            .create_object_store(object_store::Config {
                bucket: bucket.to_string(),
                description: Some(
                    "images sent by clip-worker clients (too large for one message)".into(),
                ),
                max_age: BUCKET_MAX_AGE,
                ..Default::default()
            })
            .await
            .map_err(|e| e.to_string())
    }
}

/// `sha256-<hex>` of the content: uploads of the same image are idempotent.
pub fn object_name(bytes: &[u8]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(bytes);
    let mut s = String::with_capacity(7 + 64);
    s.push_str("sha256-");
    for b in digest {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_are_named_by_content_hash() {
        assert_eq!(
            object_name(b"abc"),
            "sha256-ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_ne!(object_name(b"abc"), object_name(b"abd"));
    }
}
