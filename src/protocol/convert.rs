//! Between wire documents and engine documents.

use super::{EmbeddingDtype, EmbeddingPayload, WireDoc};
use crate::error::{DocError, ErrorCode};
use crate::preprocess::input::{Document, PixelTensor};
use serde::{Deserialize, Serialize};

/// An object in a NATS Object Store bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRef {
    pub bucket: String,
    pub name: String,
}

/// The engine document for a wire document, or why it cannot be one. `id` is the response id
/// (the document's own, else its position). Object references must already be resolved to
/// `blob` by the transport (the engine never talks to NATS).
pub fn into_documents(doc: WireDoc, id: String) -> Result<Document, DocError> {
    let tensor = match doc.tensor {
        None => None,
        Some(t) => {
            if t.dtype != "uint8" {
                return Err(DocError::new(
                    ErrorCode::InvalidDocument,
                    format!(
                        "tensor dtype `{}` is not supported: send uint8 HWC pixels",
                        t.dtype
                    ),
                ));
            }
            Some(PixelTensor {
                shape: t.shape,
                data: t.data,
            })
        }
    };
    Ok(Document {
        id: Some(id),
        text: doc.text,
        blob: doc.blob,
        uri: doc.uri,
        tensor,
        mime_type: doc.mime_type,
    })
}

/// Packs an embedding as little-endian bytes, optionally L2-normalised and as f16.
pub fn embedding_payload(
    values: &[f32],
    normalize: bool,
    dtype: EmbeddingDtype,
) -> EmbeddingPayload {
    let scale = if normalize {
        let norm = values
            .iter()
            .map(|v| f64::from(*v).powi(2))
            .sum::<f64>()
            .sqrt();
        if norm > 0.0 {
            (1.0 / norm) as f32
        } else {
            1.0
        }
    } else {
        1.0
    };
    let data = match dtype {
        EmbeddingDtype::F32 => values
            .iter()
            .flat_map(|v| (v * scale).to_le_bytes())
            .collect(),
        EmbeddingDtype::F16 => values
            .iter()
            .flat_map(|v| half::f16::from_f32(v * scale).to_le_bytes())
            .collect(),
    };
    EmbeddingPayload {
        dtype,
        shape: vec![values.len()],
        data,
    }
}
