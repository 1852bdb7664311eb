//! Wire protocol v1: MessagePack (rmp-serde, maps with field names) request and response types.
//!
//! Field names follow CLIP-as-service's Document. Unknown fields are ignored so clients may send
//! more than we read; `docs/protocol.md` is the reference for client authors.

mod convert;
mod decode;
pub(crate) mod headers;
mod limits;
mod subjects;

pub use convert::{embedding_payload, into_documents, ObjectRef};
pub use decode::{decode_request, IncomingDoc, IncomingRequest, RequestError};
pub(crate) use limits::Limits;
pub(crate) use subjects::{JobKind, Subjects};

use crate::error::{DocError, ErrorCode};
use serde::{Deserialize, Serialize};

/// Version of this schema, sent in the `Clip-Protocol` header and in service metadata.
pub(crate) const PROTOCOL_VERSION: &str = "1";

/// A pixel tensor on the wire: uint8, `[H, W, C]` or `[H, W]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireTensor {
    #[serde(default = "uint8")]
    pub dtype: String,
    pub shape: Vec<usize>,
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

fn uint8() -> String {
    "uint8".into()
}

/// A document in a request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WireDoc {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "serde_bytes")]
    pub blob: Option<Vec<u8>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tensor: Option<WireTensor>,
    /// An image stored in a NATS Object Store bucket (for images over `max_payload`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<ObjectRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<WireDoc>,
}

/// How embeddings are returned. Read from a plain string (`"f16"`), whatever the decoder's idea
/// of an enum is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum EmbeddingDtype {
    #[default]
    F32,
    F16,
}

impl TryFrom<String> for EmbeddingDtype {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "f32" => Ok(EmbeddingDtype::F32),
            "f16" => Ok(EmbeddingDtype::F16),
            other => Err(format!(
                "unknown embedding dtype `{other}`: send \"f32\" or \"f16\""
            )),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Params {
    /// L2-normalise embeddings (default false: raw embeddings, as the original).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normalize: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding_dtype: Option<EmbeddingDtype>,
    /// If given, must name the served model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Request {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default)]
    pub docs: Vec<WireDoc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<Params>,
}

/// An embedding: little-endian `dtype` values of `shape` (`[D]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingPayload {
    pub dtype: EmbeddingDtype,
    pub shape: Vec<usize>,
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

impl EmbeddingPayload {
    /// Decodes the payload back to f32 values (for clients and tests).
    pub fn to_f32(&self) -> Vec<f32> {
        match self.dtype {
            EmbeddingDtype::F32 => self
                .data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            EmbeddingDtype::F16 => self
                .data
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireError {
    pub code: ErrorCode,
    pub message: String,
}

impl From<DocError> for WireError {
    fn from(e: DocError) -> Self {
        WireError {
            code: e.code,
            message: e.message,
        }
    }
}

impl From<&DocError> for WireError {
    fn from(e: &DocError) -> Self {
        e.clone().into()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    pub clip_score: f64,
    pub clip_score_cosine: f64,
}

/// A document in a response: identity and results, never the content that was sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultDoc {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modality: Option<crate::preprocess::input::Modality>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding: Option<EmbeddingPayload>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scores: Option<Scores>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matches: Option<Vec<ResultDoc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<WireError>,
}

impl ResultDoc {
    pub(crate) fn failed(id: String, error: &DocError) -> Self {
        ResultDoc {
            id,
            modality: None,
            embedding: None,
            scores: None,
            matches: None,
            error: Some(error.into()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    #[serde(default)]
    pub id: Option<String>,
    pub model: String,
    #[serde(default)]
    pub docs: Vec<ResultDoc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<WireError>,
}

impl Response {
    /// A request-level failure: no documents, `error` set.
    pub fn failure(id: Option<String>, model: &str, error: DocError) -> Self {
        Response {
            id,
            model: model.to_string(),
            docs: Vec::new(),
            error: Some(error.into()),
        }
    }
}

/// Encodes a message (maps with field names, so any MessagePack client can read it).
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, DocError> {
    rmp_serde::to_vec_named(value)
        .map_err(|e| DocError::new(ErrorCode::Internal, format!("cannot encode message: {e}")))
}

/// Decodes a response (for clients and tests).
pub fn decode_response(payload: &[u8]) -> Result<Response, DocError> {
    rmp_serde::from_slice(payload)
        .map_err(|e| DocError::new(ErrorCode::BadRequest, format!("not a v1 response: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trip_and_unknown_fields_are_ignored() {
        let docs = vec![
            WireDoc {
                id: Some("t".into()),
                text: Some("hello".into()),
                ..Default::default()
            },
            WireDoc {
                blob: Some(vec![1, 2, 3]),
                matches: vec![WireDoc {
                    uri: Some("data:,x".into()),
                    ..Default::default()
                }],
                ..Default::default()
            },
        ];
        let req = Request {
            id: Some("r1".into()),
            docs: docs.clone(),
            params: Some(Params {
                normalize: Some(true),
                ..Default::default()
            }),
        };
        let got = decode_request(&encode(&req).unwrap()).unwrap();
        assert_eq!(got.id.as_deref(), Some("r1"));
        assert_eq!(Some(got.params), req.params);
        let read: Vec<WireDoc> = got
            .docs
            .into_iter()
            .map(|d| {
                let mut doc = d.doc.unwrap();
                doc.matches = d
                    .matches
                    .unwrap()
                    .into_iter()
                    .map(|m| m.doc.unwrap())
                    .collect();
                doc
            })
            .collect();
        assert_eq!(read, docs);

        #[derive(Serialize)]
        struct Extra<'a> {
            docs: Vec<std::collections::BTreeMap<&'a str, &'a str>>,
            future_field: u32,
        }
        let extra = Extra {
            docs: vec![[("text", "hi"), ("tags", "x")].into_iter().collect()],
            future_field: 3,
        };
        let decoded = decode_request(&rmp_serde::to_vec_named(&extra).unwrap()).unwrap();
        let doc = decoded.docs[0].doc.as_ref().unwrap();
        assert_eq!(doc.text.as_deref(), Some("hi"));
    }

    #[test]
    fn embedding_payload_round_trips() {
        let v = [0.5f32, -1.25, 3.0];
        let p = embedding_payload(&v, false, EmbeddingDtype::F32);
        assert_eq!(p.to_f32(), v);
        assert_eq!(p.shape, vec![3]);
        let p = embedding_payload(&v, false, EmbeddingDtype::F16);
        assert_eq!(p.data.len(), 6);
        assert_eq!(p.to_f32(), v);
        let n = embedding_payload(&[3.0, 4.0], true, EmbeddingDtype::F32).to_f32();
        assert!((n[0] - 0.6).abs() < 1e-7 && (n[1] - 0.8).abs() < 1e-7);
    }
}
