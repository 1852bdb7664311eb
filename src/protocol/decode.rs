//! Reading a request off the wire.
//!
//! The payload is first read as a MessagePack value, then taken apart: the envelope (`id`, `docs`,
//! `params`) must be right or the whole request fails, while each document is converted on its
//! own, so a wrong type inside one document fails that document alone. Every message names the
//! field it is about (`docs[0].text: invalid type: ...`), and the request `id` is kept whenever
//! it could be read, so even a `bad_request` answer can be matched to its request.

use super::{Params, WireDoc};
use crate::error::{DocError, ErrorCode};
use rmpv::Value;
use serde::de::DeserializeOwned;

/// A request as read from the wire: its envelope, and each document read on its own.
#[derive(Debug)]
pub struct IncomingRequest {
    pub id: Option<String>,
    pub docs: Vec<IncomingDoc>,
    pub params: Params,
}

/// One document of a request.
#[derive(Debug)]
pub struct IncomingDoc {
    /// The document's `id`, when it is a string (kept even when the rest is unreadable).
    pub id: Option<String>,
    /// The document without its `matches`, or why it cannot be read.
    pub doc: Result<WireDoc, DocError>,
    /// Its `matches` (rank candidates), each read on its own; an error when `matches` is not an
    /// array. The matches of a match are never read.
    pub matches: Result<Vec<IncomingDoc>, DocError>,
}

impl IncomingDoc {
    /// How many matches were sent (0 when `matches` is unreadable).
    pub(crate) fn match_count(&self) -> usize {
        self.matches.as_ref().map_or(0, Vec::len)
    }
}

/// A request that fails as a whole, with its `id` when that could be read.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestError {
    pub id: Option<String>,
    pub error: DocError,
}

/// Reads a request payload.
pub fn decode_request(payload: &[u8]) -> Result<IncomingRequest, RequestError> {
    let bad = |id: Option<String>, message: String| RequestError {
        id,
        error: DocError::new(ErrorCode::BadRequest, message),
    };
    let value = rmpv::decode::read_value(&mut &payload[..]).map_err(|e| {
        bad(
            None,
            format!("payload is not a v1 MessagePack request: {e}"),
        )
    })?;
    let entries = match value {
        Value::Map(entries) => entries,
        other => {
            return Err(bad(
                None,
                format!(
                "payload is not a v1 MessagePack request: expected a map with field names, got {}",
                kind(&other)
            ),
            ))
        }
    };
    let mut fields = Fields::new(entries);
    // The id first, so every later error can echo it.
    let id: Option<String> = fields
        .take("id")
        .map(|v| convert(v, "id"))
        .transpose()
        .map_err(|m| bad(None, m))?
        .flatten();
    let params: Params = fields
        .take("params")
        .map(|v| convert::<Option<Params>>(v, "params"))
        .transpose()
        .map_err(|m| bad(id.clone(), m))?
        .flatten()
        .unwrap_or_default();
    let docs = match fields.take("docs") {
        None | Some(Value::Nil) => {
            return Err(bad(
                id,
                "docs: missing; send an array of documents (it may be empty)".into(),
            ))
        }
        Some(Value::Array(docs)) => docs,
        Some(other) => {
            return Err(bad(
                id,
                format!(
                    "docs: invalid type: {}, expected an array of documents",
                    kind(&other)
                ),
            ))
        }
    };
    let docs = docs
        .into_iter()
        .enumerate()
        .map(|(i, d)| read_doc(d, &format!("docs[{i}]"), true))
        .collect();
    Ok(IncomingRequest { id, docs, params })
}

/// Reads one document at `path`; with `with_matches`, its `matches` too.
fn read_doc(value: Value, path: &str, with_matches: bool) -> IncomingDoc {
    let invalid = |message: String| DocError::new(ErrorCode::InvalidDocument, message);
    let entries = match value {
        Value::Map(entries) => entries,
        other => {
            return IncomingDoc {
                id: None,
                doc: Err(invalid(format!(
                    "{path}: invalid type: {}, expected a document (a map)",
                    kind(&other)
                ))),
                matches: Ok(Vec::new()),
            }
        }
    };
    let mut fields = Fields::new(entries);
    let id = match fields.get("id") {
        Some(Value::String(s)) => s.as_str().map(str::to_string),
        _ => None,
    };
    let matches = match fields.take("matches") {
        Some(_) if !with_matches => Ok(Vec::new()),
        None | Some(Value::Nil) => Ok(Vec::new()),
        Some(Value::Array(ms)) => Ok(ms
            .into_iter()
            .enumerate()
            .map(|(j, m)| read_doc(m, &format!("{path}.matches[{j}]"), false))
            .collect()),
        Some(other) => Err(invalid(format!(
            "{path}.matches: invalid type: {}, expected an array of documents",
            kind(&other)
        ))),
    };
    let doc = match text_where_bytes_belong(&fields) {
        Some(field) => Err(invalid(format!(
            "{path}.{field}: got a string where bytes belong; send the raw bytes as MessagePack \
             bin (Python: `bytes`), not base64 or other text"
        ))),
        None => convert(fields.into_value(), path).map_err(invalid),
    };
    IncomingDoc { id, doc, matches }
}

/// The byte fields a client may fill with text by mistake (the CLI's JSON lines carry base64
/// there): serde would take the string's UTF-8 bytes as the image, failing later as an
/// undecodable image with no hint why.
fn text_where_bytes_belong(doc: &Fields) -> Option<&'static str> {
    if matches!(doc.get("blob"), Some(Value::String(_))) {
        return Some("blob");
    }
    match doc.get("tensor") {
        Some(Value::Map(tensor)) => tensor
            .iter()
            .any(|(k, v)| k.as_str() == Some("data") && v.is_str())
            .then_some("tensor.data"),
        _ => None,
    }
}

/// Converts a value to `T`, naming the field that is wrong: `<path>.<inner path>: <what>`.
fn convert<T: DeserializeOwned>(value: Value, path: &str) -> Result<T, String> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let inner = e.path().to_string();
        let at = if inner == "." {
            path.to_string()
        } else if inner.starts_with('[') {
            format!("{path}{inner}")
        } else {
            format!("{path}.{inner}")
        };
        // The bare serde message, without rmpv's "error while decoding value" prefix.
        let rmpv::ext::Error::Syntax(what) = e.into_inner();
        format!("{at}: {what}")
    })
}

/// What kind of MessagePack value this is, for messages.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Nil => "nil",
        Value::Boolean(_) => "a boolean",
        Value::Integer(_) => "an integer",
        Value::F32(_) | Value::F64(_) => "a float",
        Value::String(_) => "a string",
        Value::Binary(_) => "bin (bytes)",
        Value::Array(_) => "an array",
        Value::Map(_) => "a map",
        Value::Ext(..) => "an extension value",
    }
}

/// The entries of a MessagePack map, looked up by string key.
struct Fields(Vec<(Value, Value)>);

impl Fields {
    fn new(entries: Vec<(Value, Value)>) -> Self {
        Fields(entries)
    }

    fn position(&self, key: &str) -> Option<usize> {
        self.0.iter().position(|(k, _)| k.as_str() == Some(key))
    }

    fn get(&self, key: &str) -> Option<&Value> {
        self.position(key).map(|i| &self.0[i].1)
    }

    fn take(&mut self, key: &str) -> Option<Value> {
        self.position(key).map(|i| self.0.remove(i).1)
    }

    fn into_value(self) -> Value {
        Value::Map(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;

    fn pack<T: Serialize>(v: &T) -> Vec<u8> {
        rmp_serde::to_vec_named(v).unwrap()
    }

    fn map(entries: Vec<(&str, Value)>) -> Value {
        Value::Map(
            entries
                .into_iter()
                .map(|(k, v)| (Value::from(k), v))
                .collect(),
        )
    }

    fn raw(v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, v).unwrap();
        out
    }

    fn message(r: &Result<WireDoc, DocError>) -> (ErrorCode, String) {
        let e = r.as_ref().unwrap_err();
        (e.code, e.message.clone())
    }

    #[test]
    fn a_type_error_in_one_document_fails_that_document_and_names_the_field() {
        let payload = raw(&map(vec![
            ("id", Value::from("req-7")),
            (
                "docs",
                Value::Array(vec![
                    map(vec![("id", Value::from("a")), ("text", Value::from(42))]),
                    map(vec![("text", Value::from("fine"))]),
                    map(vec![(
                        "tensor",
                        map(vec![
                            (
                                "shape",
                                Value::Array(vec![Value::from(2), Value::from("x")]),
                            ),
                            ("data", Value::Binary(vec![0; 4])),
                        ]),
                    )]),
                    Value::from("not a map"),
                ]),
            ),
        ]));
        let req = decode_request(&payload).unwrap();
        assert_eq!(req.id.as_deref(), Some("req-7"));
        assert_eq!(req.docs.len(), 4);

        assert_eq!(req.docs[0].id.as_deref(), Some("a"), "the id survives");
        let (code, msg) = message(&req.docs[0].doc);
        assert_eq!(code, ErrorCode::InvalidDocument);
        assert_eq!(
            msg,
            "docs[0].text: invalid type: integer `42`, expected a string"
        );

        assert_eq!(
            req.docs[1].doc.as_ref().unwrap().text.as_deref(),
            Some("fine")
        );

        let (_, msg) = message(&req.docs[2].doc);
        assert!(
            msg.starts_with("docs[2].tensor.shape[1]: invalid type: string"),
            "{msg}"
        );

        let (code, msg) = message(&req.docs[3].doc);
        assert_eq!(code, ErrorCode::InvalidDocument);
        assert_eq!(
            msg,
            "docs[3]: invalid type: a string, expected a document (a map)"
        );
    }

    #[test]
    fn matches_are_read_one_by_one_with_their_own_paths() {
        let payload = raw(&map(vec![(
            "docs",
            Value::Array(vec![
                map(vec![
                    ("text", Value::from("query")),
                    (
                        "matches",
                        Value::Array(vec![
                            map(vec![("text", Value::from("ok"))]),
                            map(vec![("id", Value::from("m")), ("uri", Value::from(true))]),
                        ]),
                    ),
                ]),
                map(vec![
                    ("text", Value::from("q2")),
                    ("matches", Value::from(3)),
                ]),
            ]),
        )]));
        let req = decode_request(&payload).unwrap();
        let matches = req.docs[0].matches.as_ref().unwrap();
        assert_eq!(req.docs[0].match_count(), 2);
        assert!(matches[0].doc.is_ok());
        assert_eq!(matches[1].id.as_deref(), Some("m"));
        let (_, msg) = message(&matches[1].doc);
        assert_eq!(
            msg,
            "docs[0].matches[1].uri: invalid type: boolean `true`, expected a string"
        );
        assert!(req.docs[0].doc.as_ref().unwrap().matches.is_empty());

        let err = req.docs[1].matches.as_ref().unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidDocument);
        assert_eq!(
            err.message,
            "docs[1].matches: invalid type: an integer, expected an array of documents"
        );
        assert_eq!(req.docs[1].match_count(), 0);
        assert!(req.docs[1].doc.is_ok(), "encode ignores matches");
    }

    #[test]
    fn bytes_sent_as_text_get_a_hint() {
        let payload = raw(&map(vec![(
            "docs",
            Value::Array(vec![
                map(vec![("blob", Value::from("iVBORw0KGgo="))]),
                map(vec![(
                    "tensor",
                    map(vec![
                        ("shape", Value::Array(vec![Value::from(1), Value::from(1)])),
                        ("data", Value::from("AA==")),
                    ]),
                )]),
                map(vec![("blob", Value::Binary(vec![1, 2, 3]))]),
            ]),
        )]));
        let req = decode_request(&payload).unwrap();
        let (code, msg) = message(&req.docs[0].doc);
        assert_eq!(code, ErrorCode::InvalidDocument);
        assert!(
            msg.starts_with("docs[0].blob: got a string where bytes belong")
                && msg.contains("MessagePack bin"),
            "{msg}"
        );
        let (_, msg) = message(&req.docs[1].doc);
        assert!(
            msg.starts_with("docs[1].tensor.data: got a string"),
            "{msg}"
        );
        assert_eq!(
            req.docs[2].doc.as_ref().unwrap().blob.as_deref(),
            Some(&[1u8, 2, 3][..])
        );
    }

    #[test]
    fn envelope_errors_fail_the_request_and_echo_the_id_when_readable() {
        // No `docs` at all, or nil.
        for docs in [None, Some(Value::Nil)] {
            let mut entries = vec![("id", Value::from("r1"))];
            entries.extend(docs.map(|d| ("docs", d)));
            let e = decode_request(&raw(&map(entries))).unwrap_err();
            assert_eq!(e.id.as_deref(), Some("r1"));
            assert_eq!(e.error.code, ErrorCode::BadRequest);
            assert!(e.error.message.starts_with("docs: missing"), "{e:?}");
        }
        let e = decode_request(&raw(&map(vec![
            ("id", Value::from("r2")),
            ("docs", Value::from("x")),
        ])))
        .unwrap_err();
        assert_eq!(e.id.as_deref(), Some("r2"));
        assert_eq!(
            e.error.message,
            "docs: invalid type: a string, expected an array of documents"
        );

        let e = decode_request(&raw(&map(vec![
            ("id", Value::from("r3")),
            ("docs", Value::Array(vec![])),
            ("params", map(vec![("normalize", Value::from("yes"))])),
        ])))
        .unwrap_err();
        assert_eq!(e.id.as_deref(), Some("r3"));
        assert_eq!(e.error.code, ErrorCode::BadRequest);
        assert_eq!(
            e.error.message,
            "params.normalize: invalid type: string \"yes\", expected a boolean"
        );

        let e = decode_request(&raw(&map(vec![
            ("id", Value::from(5)),
            ("docs", Value::Array(vec![])),
        ])))
        .unwrap_err();
        assert_eq!(e.id, None, "an id that is not a string cannot be echoed");
        assert_eq!(
            e.error.message,
            "id: invalid type: integer `5`, expected a string"
        );

        let e = decode_request(&raw(&Value::Array(vec![]))).unwrap_err();
        assert_eq!(e.id, None);
        assert!(e
            .error
            .message
            .ends_with("expected a map with field names, got an array"));

        let e = decode_request(b"\xc1\xff").unwrap_err();
        assert_eq!(e.error.code, ErrorCode::BadRequest);
        assert!(e
            .error
            .message
            .starts_with("payload is not a v1 MessagePack request"));
    }

    #[test]
    fn params_and_an_empty_doc_list_read_as_before() {
        let req = super::super::Request {
            id: None,
            docs: Vec::new(),
            params: Some(Params {
                normalize: Some(true),
                embedding_dtype: Some(super::super::EmbeddingDtype::F16),
                model: Some("RN50::openai".into()),
            }),
        };
        let got = decode_request(&pack(&req)).unwrap();
        assert!(got.docs.is_empty());
        assert_eq!(got.params, req.params.unwrap());

        let e = decode_request(&raw(&map(vec![
            ("docs", Value::Array(vec![])),
            ("params", map(vec![("embedding_dtype", Value::from("f64"))])),
        ])))
        .unwrap_err();
        assert!(
            e.error.message.starts_with("params.embedding_dtype: "),
            "{e:?}"
        );
    }
}
