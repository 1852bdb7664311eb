//! Response documents mapped back to what the caller asked for: answers placed by position,
//! embeddings out of encode results, ranked matches out of rank results.

use crate::engine::{Embedded, Ranked, RankedMatch};
use crate::error::{DocError, ErrorCode};
use crate::protocol::{ResultDoc, WireError};

pub(super) fn missing() -> DocError {
    DocError::new(
        ErrorCode::Internal,
        "the response has no result for this document",
    )
}

pub(super) fn doc_error(e: WireError) -> DocError {
    DocError::new(e.code, e.message)
}

/// Places response documents by their id (the position we gave them).
pub(super) fn align(docs: Vec<ResultDoc>, n: usize) -> Vec<Result<ResultDoc, DocError>> {
    let mut out: Vec<Option<ResultDoc>> = vec![None; n];
    for d in docs {
        if let Some(slot) = d.id.parse::<usize>().ok().and_then(|i| out.get_mut(i)) {
            if slot.is_none() {
                *slot = Some(d);
            }
        }
    }
    out.into_iter().map(|d| d.ok_or_else(missing)).collect()
}

pub(super) fn embedded(doc: ResultDoc) -> Result<Embedded, DocError> {
    if let Some(e) = doc.error {
        return Err(doc_error(e));
    }
    match (doc.modality, doc.embedding) {
        (Some(modality), Some(e)) => Ok(Embedded {
            modality,
            embedding: e.to_f32(),
        }),
        _ => Err(DocError::new(
            ErrorCode::Internal,
            "the response document has no embedding",
        )),
    }
}

/// A rank root from its response document; `failed` are the matches that could not be loaded.
pub(super) fn ranked(
    doc: ResultDoc,
    mut failed: Vec<(usize, DocError)>,
) -> Result<Ranked, DocError> {
    let matches = doc.matches.clone().unwrap_or_default();
    let root = embedded(ResultDoc {
        matches: None,
        ..doc
    })?;
    let mut scored = Vec::new();
    for m in matches {
        let Ok(index) = m.id.parse::<usize>() else {
            continue;
        };
        match (m.error, m.scores) {
            (Some(e), _) => failed.push((index, doc_error(e))),
            (None, Some(s)) => scored.push(RankedMatch {
                index,
                clip_score: s.clip_score,
                clip_score_cosine: s.clip_score_cosine,
            }),
            (None, None) => failed.push((index, missing())),
        }
    }
    failed.sort_by_key(|(i, _)| *i);
    Ok(Ranked {
        root,
        matches: scored,
        failed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_aligned_by_id() {
        let doc = |id: &str| ResultDoc {
            id: id.into(),
            modality: None,
            embedding: None,
            scores: None,
            matches: None,
            error: None,
        };
        let out = align(vec![doc("1"), doc("0"), doc("9"), doc("x")], 3);
        assert_eq!(out[0].as_ref().unwrap().id, "0");
        assert_eq!(out[1].as_ref().unwrap().id, "1");
        assert_eq!(out[2].as_ref().unwrap_err().code, ErrorCode::Internal);
    }
}
