//! Input documents: JSON lines `{"id", "text"}`, `{"id", "uri"}`, `{"id", "blob": base64}`,
//! `{"id", "tensor": {"shape", "data": base64}}`, optionally with `"matches": [...]` for rank.

use crate::error::DocError;
use crate::preprocess::input::{Document, PixelTensor};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::Value;
use std::io::BufRead;

#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct JsonDoc {
    pub id: Option<Value>,
    pub text: Option<String>,
    pub uri: Option<String>,
    pub blob: Option<String>,
    pub tensor: Option<JsonTensor>,
    pub mime_type: Option<String>,
    #[serde(default)]
    pub matches: Vec<JsonDoc>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct JsonTensor {
    pub shape: Vec<usize>,
    pub data: String,
}

#[derive(Debug, thiserror::Error)]
pub enum JsonlError {
    #[error("line {line}: {message}")]
    Line { line: usize, message: String },
    #[error("reading input: {0}")]
    Io(#[from] std::io::Error),
}

/// A parsed input line: the document (or a per-document error) and its matches.
pub struct InputDoc {
    pub id: String,
    pub doc: Result<Document, DocError>,
    pub matches: Vec<InputDoc>,
}

impl InputDoc {
    /// A document without matches, carrying `id` (also as the document's own id).
    pub fn new(id: impl Into<String>, mut doc: Document) -> Self {
        let id = id.into();
        doc.id = Some(id.clone());
        InputDoc {
            id,
            doc: Ok(doc),
            matches: Vec::new(),
        }
    }
}

fn id_string(id: &Option<Value>, position: usize) -> String {
    match id {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => position.to_string(),
    }
}

impl JsonDoc {
    /// Converts to an engine document; bad base64 is an error for this document only.
    pub(crate) fn into_input(self, position: usize) -> InputDoc {
        let id = id_string(&self.id, position);
        let matches = self
            .matches
            .into_iter()
            .enumerate()
            .map(|(i, m)| m.into_input(i))
            .collect();
        let decode = |s: &str, what: &str| {
            base64::engine::general_purpose::STANDARD
                .decode(s.trim())
                .map_err(|e| {
                    DocError::new(
                        crate::error::ErrorCode::InvalidDocument,
                        format!("bad base64 in `{what}`: {e}"),
                    )
                })
        };
        let doc = (|| {
            let blob = self
                .blob
                .as_deref()
                .map(|b| decode(b, "blob"))
                .transpose()?;
            let tensor = match self.tensor {
                Some(t) => Some(PixelTensor {
                    shape: t.shape,
                    data: decode(&t.data, "tensor.data")?,
                }),
                None => None,
            };
            Ok(Document {
                id: Some(id.clone()),
                text: self.text,
                blob,
                uri: self.uri,
                tensor,
                mime_type: self.mime_type,
            })
        })();
        InputDoc { id, doc, matches }
    }
}

/// Reads JSON lines from a file, or from standard input for `-`. Documents without an id get
/// their position, counted from `first_position` (the number of documents given before them).
pub fn read_docs_from(
    path: &std::path::Path,
    first_position: usize,
) -> Result<Vec<InputDoc>, JsonlError> {
    let reader: Box<dyn BufRead> = if path.as_os_str() == "-" {
        Box::new(std::io::BufReader::new(std::io::stdin()))
    } else {
        Box::new(std::io::BufReader::new(std::fs::File::open(path)?))
    };
    read_docs(reader, first_position)
}

/// Reads JSON lines, skipping blank ones. A line that is not JSON fails the whole input, since
/// its id cannot be known.
pub fn read_docs(reader: impl BufRead, first_position: usize) -> Result<Vec<InputDoc>, JsonlError> {
    let mut out = Vec::new();
    for (n, line) in reader.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let doc: JsonDoc = serde_json::from_str(&line).map_err(|e| JsonlError::Line {
            line: n + 1,
            message: e.to_string(),
        })?;
        let position = first_position + out.len();
        out.push(doc.into_input(position));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_become_documents_with_default_ids() {
        let input =
            "{\"text\":\"hi\"}\n\n{\"id\":\"b\",\"blob\":\"AAEC\"}\n{\"id\":7,\"blob\":\"***\"}\n";
        let docs = read_docs(input.as_bytes(), 0).unwrap();
        assert_eq!(docs.len(), 3);
        assert_eq!(docs[0].id, "0");
        assert_eq!(
            docs[1].doc.as_ref().unwrap().blob.as_deref(),
            Some(&[0u8, 1, 2][..])
        );
        assert_eq!(docs[2].id, "7");
        assert!(docs[2].doc.is_err());
        assert!(read_docs("{not json".as_bytes(), 0).is_err());
        // After two command-line documents, default ids continue at 2; explicit ids are kept.
        let docs = read_docs(
            "{\"text\":\"a\"}\n{\"id\":0,\"text\":\"b\"}\n".as_bytes(),
            2,
        )
        .unwrap();
        assert_eq!((docs[0].id.as_str(), docs[1].id.as_str()), ("2", "0"));
    }
}
