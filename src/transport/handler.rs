//! One request in, one response out: shared by request/reply and durable jobs.

use super::objects::ObjectFetcher;
use crate::batch::{Admission, Pipeline};
use crate::engine::{rank_embedded, Embedded};
use crate::error::{DocError, ErrorCode};
use crate::preprocess::fetch::{needs_io, FetchWorkers};
use crate::preprocess::input::{Content, Document};
use crate::protocol::{
    self, embedding_payload, into_documents, EmbeddingDtype, IncomingDoc, IncomingRequest, JobKind,
    Limits, Response, ResultDoc, Scores, WireDoc,
};
use futures::StreamExt;
use std::sync::Arc;

/// Bytes kept free for reply headers (protocol, job id, service error) under `max_payload`.
const REPLY_HEADER_ROOM: usize = 1024;

/// Documents of one request loaded (object store, URIs) at once.
const LOADS_PER_REQUEST: usize = 64;

/// How a request waits for capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AdmissionMode {
    /// Answer `overloaded` at once when the worker is full (interactive calls).
    Reject,
    /// Wait for room (durable jobs: the consumer already limits what it pulls).
    Wait,
}

pub(crate) struct Handler {
    pub pipeline: Arc<Pipeline>,
    pub model: String,
    pub limits: Limits,
    pub objects: Option<ObjectFetcher>,
    /// Loads the URIs of documents off the preprocess pool; without it the pool loads them.
    pub fetches: Option<FetchWorkers>,
    /// The connection replies go out on; its server's `max_payload` bounds a reply.
    pub client: async_nats::Client,
}

/// A document slot: where its result goes, and its input if it passed the early checks.
struct Slot {
    id: String,
    doc: Result<Document, DocError>,
}

/// A document still to be loaded (with its position), or one that already failed.
enum Pending {
    Load(IncomingDoc, usize),
    Failed(Slot),
}

impl Handler {
    /// Largest reply body that fits the connected server's `max_payload`, leaving room for
    /// headers. Read per reply: the limit is only known once the server's INFO has arrived, and
    /// a reconnect may land on a server with another limit.
    pub(crate) fn reply_limit(&self) -> usize {
        let max_payload = match self.client.server_info().max_payload {
            0 => 1024 * 1024, // not known yet: the server default
            n => n,
        };
        max_payload.saturating_sub(REPLY_HEADER_ROOM)
    }

    /// Handles one payload. Request-level failures come back as a response with `error` set.
    pub(crate) async fn handle(
        &self,
        kind: JobKind,
        payload: &[u8],
        mode: AdmissionMode,
    ) -> Response {
        let req = match protocol::decode_request(payload) {
            Ok(r) => r,
            Err(e) => return Response::failure(e.id, &self.model, e.error),
        };
        let id = req.id.clone();
        match self.handle_request(kind, req, mode).await {
            Ok(r) => r,
            Err(e) => Response::failure(id, &self.model, e),
        }
    }

    async fn handle_request(
        &self,
        kind: JobKind,
        req: IncomingRequest,
        mode: AdmissionMode,
    ) -> Result<Response, DocError> {
        let params = &req.params;
        if let Some(m) = params.model.as_deref() {
            if m != self.model {
                return Err(DocError::new(
                    ErrorCode::ModelMismatch,
                    format!("this worker serves `{}`, not `{m}`", self.model),
                ));
            }
        }
        self.limits.check_request(&req, kind == JobKind::Rank)?;
        let normalize = params.normalize.unwrap_or(false);
        let dtype = params.embedding_dtype.unwrap_or_default();

        // Flatten roots and matches into one list of slots, remembering the shape.
        let mut pending: Vec<Pending> = Vec::new();
        let mut shape: Vec<(usize, usize)> = Vec::new(); // (root slot, number of matches)
        for (i, mut doc) in req.docs.into_iter().enumerate() {
            let matches = std::mem::replace(&mut doc.matches, Ok(Vec::new()));
            let root = pending.len();
            if kind == JobKind::Encode {
                pending.push(Pending::Load(doc, i));
                continue;
            }
            match matches {
                Ok(matches) => {
                    pending.push(Pending::Load(doc, i));
                    shape.push((root, matches.len()));
                    pending.extend(
                        matches
                            .into_iter()
                            .enumerate()
                            .map(|(j, m)| Pending::Load(m, j)),
                    );
                }
                // Unreadable `matches`: the query fails without being embedded.
                Err(e) => {
                    pending.push(Pending::Failed(Slot {
                        id: doc.id.unwrap_or_else(|| i.to_string()),
                        doc: Err(e),
                    }));
                    shape.push((root, 0));
                }
            }
        }
        // Loads (objects, URIs) overlap, a bounded number at once, in order.
        let slots: Vec<Slot> = futures::stream::iter(pending)
            .map(|p| async move {
                match p {
                    Pending::Load(doc, position) => self.slot(doc, position).await,
                    Pending::Failed(failed) => failed,
                }
            })
            .buffered(LOADS_PER_REQUEST)
            .collect()
            .await;

        let valid: Vec<Document> = slots
            .iter()
            .filter_map(|s| s.doc.as_ref().ok().cloned())
            .collect();
        let admission: Admission = match mode {
            AdmissionMode::Reject => self.pipeline.try_admit(&valid)?,
            AdmissionMode::Wait => self.pipeline.admit(&valid).await?,
        };
        let mut embedded = self.pipeline.embed(valid, &admission).await.into_iter();
        drop(admission);
        let results: Vec<(String, Result<Embedded, DocError>)> = slots
            .into_iter()
            .map(|s| {
                let r = match s.doc {
                    Ok(_) => embedded.next().unwrap_or_else(|| {
                        Err(DocError::new(ErrorCode::Internal, "missing result"))
                    }),
                    Err(e) => Err(e),
                };
                (s.id, r)
            })
            .collect();

        let docs = match kind {
            JobKind::Encode => results
                .into_iter()
                .map(|(id, r)| encoded_doc(id, r, normalize, dtype))
                .collect(),
            JobKind::Rank => ranked_docs(results, &shape, normalize, dtype),
        };
        Ok(Response {
            id: req.id,
            model: self.model.clone(),
            docs,
            error: None,
        })
    }

    async fn slot(&self, incoming: IncomingDoc, position: usize) -> Slot {
        let id = incoming.id.unwrap_or_else(|| position.to_string());
        let doc = match incoming.doc {
            Err(e) => Err(e),
            Ok(doc) => self.load_uri(self.resolve(doc, &id).await).await,
        };
        Slot { id, doc }
    }

    /// Limits, then object references, then the engine document.
    async fn resolve(&self, mut doc: WireDoc, id: &str) -> Result<Document, DocError> {
        match self.limits.check_doc(&doc) {
            Err(e) => Err(e),
            Ok(()) => match doc.object.take() {
                Some(obj) if doc.text.as_deref().is_none_or(str::is_empty) => match &self.objects {
                    Some(f) => f.fetch(&obj, self.limits.max_doc_bytes).await.map(|bytes| {
                        doc.blob = Some(bytes);
                        doc
                    }),
                    None => Err(DocError::new(
                        ErrorCode::InvalidDocument,
                        "object store references are not enabled",
                    )),
                },
                _ => Ok(doc),
            }
            .and_then(|d| into_documents(d, id.to_string())),
        }
    }

    /// A document whose content is a URI needing I/O gets its bytes here, on the fetch workers.
    async fn load_uri(&self, doc: Result<Document, DocError>) -> Result<Document, DocError> {
        let mut doc = doc?;
        let Some(fetches) = &self.fetches else {
            return Ok(doc);
        };
        let uri = match doc.content()? {
            Content::Uri(uri) if needs_io(uri) => uri.to_string(),
            _ => return Ok(doc),
        };
        let bytes = fetches.fetch(uri.clone()).await?;
        if bytes.is_empty() {
            return Err(DocError::new(
                ErrorCode::ImageDecode,
                format!("`{uri}` has no content"),
            ));
        }
        doc.blob = Some(bytes);
        doc.uri = None;
        Ok(doc)
    }
}

fn encoded_doc(
    id: String,
    r: Result<Embedded, DocError>,
    normalize: bool,
    dtype: EmbeddingDtype,
) -> ResultDoc {
    match r {
        Ok(e) => ResultDoc {
            id,
            modality: Some(e.modality),
            embedding: Some(embedding_payload(&e.embedding, normalize, dtype)),
            scores: None,
            matches: None,
            error: None,
        },
        Err(e) => ResultDoc::failed(id, &e),
    }
}

fn ranked_docs(
    results: Vec<(String, Result<Embedded, DocError>)>,
    shape: &[(usize, usize)],
    normalize: bool,
    dtype: EmbeddingDtype,
) -> Vec<ResultDoc> {
    let mut results = results.into_iter();
    let mut out = Vec::with_capacity(shape.len());
    for &(_, n) in shape {
        let Some((root_id, root)) = results.next() else {
            break;
        };
        let matches: Vec<(String, Result<Embedded, DocError>)> = results.by_ref().take(n).collect();
        let root = match root {
            Ok(r) => r,
            Err(e) => {
                out.push(ResultDoc::failed(root_id, &e));
                continue;
            }
        };
        if n == 0 {
            out.push(ResultDoc::failed(
                root_id,
                &DocError::new(
                    ErrorCode::InvalidDocument,
                    "a rank document needs at least one match",
                ),
            ));
            continue;
        }
        let ids: Vec<String> = matches.iter().map(|(id, _)| id.clone()).collect();
        let modalities: Vec<_> = matches
            .iter()
            .map(|(_, r)| r.as_ref().ok().map(|e| e.modality))
            .collect();
        let ranked = rank_embedded(root, matches.into_iter().map(|(_, r)| r).collect());
        let mut docs: Vec<ResultDoc> = ranked
            .matches
            .iter()
            .map(|m| ResultDoc {
                id: ids[m.index].clone(),
                modality: modalities[m.index],
                embedding: None,
                scores: Some(Scores {
                    clip_score: m.clip_score,
                    clip_score_cosine: m.clip_score_cosine,
                }),
                matches: None,
                error: None,
            })
            .collect();
        docs.extend(
            ranked
                .failed
                .iter()
                .map(|(i, e)| ResultDoc::failed(ids[*i].clone(), e)),
        );
        out.push(ResultDoc {
            id: root_id,
            modality: Some(ranked.root.modality),
            embedding: Some(embedding_payload(&ranked.root.embedding, normalize, dtype)),
            scores: None,
            matches: Some(docs),
            error: None,
        });
    }
    out
}
