//! Images too large for one message go to a NATS Object Store bucket, named by their SHA-256 so
//! that uploading the same image again is a no-op.

use crate::error::{DocError, ErrorCode};
use crate::protocol::ObjectRef;
use async_nats::jetstream::object_store::{self, ObjectMetadata, ObjectStore};
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::Mutex;

/// How long uploaded images are kept in a bucket this client creates.
pub const BUCKET_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// Object Store chunks are at most this big (the library's default), and never over the
/// server's `max_payload`.
const MAX_CHUNK: usize = 128 * 1024;

pub struct Uploader {
    jetstream: async_nats::jetstream::Context,
    chunk_size: usize,
    /// Open buckets; the lock also serialises uploads so one image is never written twice at once.
    stores: Mutex<HashMap<String, ObjectStore>>,
}

impl Uploader {
    pub fn new(jetstream: async_nats::jetstream::Context, max_payload: usize) -> Self {
        Uploader {
            jetstream,
            chunk_size: MAX_CHUNK.min(max_payload.saturating_sub(4096)).max(1024),
            stores: Mutex::new(HashMap::new()),
        }
    }

    /// Stores `bytes` in `bucket` (created if absent) unless an object of that content is already
    /// there, and returns the reference to send instead of the blob.
    pub async fn upload(&self, bucket: &str, bytes: &[u8]) -> Result<ObjectRef, DocError> {
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

/// `sha256-<hex>` of the content.
pub fn object_name(bytes: &[u8]) -> String {
    let digest = sha256(bytes);
    let mut s = String::with_capacity(7 + 64);
    s.push_str("sha256-");
    for b in digest {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

const K: [u32; 64] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
];

/// SHA-256 (FIPS 180-4); small enough to keep here rather than add a dependency.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let mut h: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ];
    let bit_len = (data.len() as u64).wrapping_mul(8);
    let mut tail = Vec::with_capacity(128);
    let full = data.len() - data.len() % 64;
    tail.extend_from_slice(&data[full..]);
    tail.push(0x80);
    while tail.len() % 64 != 56 {
        tail.push(0);
    }
    tail.extend_from_slice(&bit_len.to_be_bytes());
    for block in data[..full].chunks_exact(64).chain(tail.chunks_exact(64)) {
        let mut w = [0u32; 64];
        for (i, word) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16]
                .wrapping_add(s0)
                .wrapping_add(w[i - 7])
                .wrapping_add(s1);
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut hh] = h;
        for i in 0..64 {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let ch = (e & f) ^ (!e & g);
            let t1 = hh
                .wrapping_add(s1)
                .wrapping_add(ch)
                .wrapping_add(K[i])
                .wrapping_add(w[i]);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let maj = (a & b) ^ (a & c) ^ (b & c);
            let t2 = s0.wrapping_add(maj);
            hh = g;
            g = f;
            f = e;
            e = d.wrapping_add(t1);
            d = c;
            c = b;
            b = a;
            a = t1.wrapping_add(t2);
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e, f, g, hh]) {
            *x = x.wrapping_add(y);
        }
    }
    let mut out = [0u8; 32];
    for (chunk, word) in out.chunks_exact_mut(4).zip(h) {
        chunk.copy_from_slice(&word.to_be_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_matches_known_vectors() {
        assert_eq!(
            object_name(b""),
            "sha256-e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            object_name(b"abc"),
            "sha256-ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        // Two blocks, and a length that puts the padding in its own block.
        assert_eq!(
            object_name(b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "sha256-248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
        let million = vec![b'a'; 1_000_000];
        assert_eq!(
            object_name(&million),
            "sha256-cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"
        );
    }
}
