//! Result lines: `{"id", "modality", "embedding"}` for encode, `{"id", "modality", "matches"}`
//! for rank, `{"id", "error": {"code", "message"}}` for a document that failed.

use crate::engine::{Embedded, Ranked};
use crate::error::DocError;
use serde::Serialize;
use serde_json::{json, Value};

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'a str,
    message: &'a str,
}

fn error_json(e: &DocError) -> Value {
    json!(ErrorBody {
        code: e.code.as_str(),
        message: &e.message
    })
}

/// `{"id", "modality", "embedding"}` or `{"id", "error"}`.
pub(crate) fn encode_line(id: &str, result: &Result<Embedded, DocError>) -> Value {
    match result {
        Ok(e) => json!({"id": id, "modality": e.modality.as_str(), "embedding": e.embedding}),
        Err(e) => json!({"id": id, "error": error_json(e)}),
    }
}

/// A ranked root: matches best first with both scores, then any matches that failed.
pub(crate) fn rank_line(
    id: &str,
    match_ids: &[String],
    result: &Result<Ranked, DocError>,
) -> Value {
    match result {
        Err(e) => json!({"id": id, "error": error_json(e)}),
        Ok(r) => {
            let mut matches: Vec<Value> = r
                .matches
                .iter()
                .map(|m| {
                    json!({
                        "id": match_ids.get(m.index).cloned().unwrap_or_else(|| m.index.to_string()),
                        "scores": {"clip_score": m.clip_score, "clip_score_cosine": m.clip_score_cosine},
                    })
                })
                .collect();
            matches.extend(r.failed.iter().map(|(i, e)| {
                json!({
                    "id": match_ids.get(*i).cloned().unwrap_or_else(|| i.to_string()),
                    "error": error_json(e),
                })
            }));
            json!({"id": id, "modality": r.root.modality.as_str(), "matches": matches})
        }
    }
}
