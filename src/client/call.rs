//! Documents in, one answer per document out: requests split when the worker finds them too
//! large, and transient failures tried again under the one [`RetryPolicy`](super::RetryPolicy).

use super::answers::{align, doc_error, missing};
use super::retry::{gave_up, transient};
use super::{Client, Options};
use crate::error::{DocError, ErrorCode};
use crate::protocol::{self, EmbeddingDtype, JobKind, Params, Request, ResultDoc, WireDoc};

/// Documents still to send together.
struct Pending {
    /// Positions in the caller's list.
    slots: Vec<usize>,
    /// Tries so far.
    tries: u32,
    /// The id to send under: kept when the previous try may have reached the server (a job
    /// published again under its id is dropped as a duplicate by JetStream).
    id: Option<String>,
}

impl Client {
    /// Sends documents and returns one answer per document, in order. A request the worker
    /// finds too large is split in two (that is not a retry); documents that fail transiently,
    /// the whole request or on their own, are sent again, each at most `max_attempts` times.
    pub(crate) async fn call(
        &self,
        kind: JobKind,
        mut docs: Vec<WireDoc>,
        opts: &Options,
    ) -> Vec<Result<ResultDoc, DocError>> {
        let params = Params {
            normalize: opts.normalize.then_some(true),
            embedding_dtype: (opts.dtype != EmbeddingDtype::F32).then_some(opts.dtype),
            model: opts.model.clone(),
        };
        let mut answers: Vec<Option<Result<ResultDoc, DocError>>> = vec![None; docs.len()];
        let mut todo = vec![Pending {
            slots: (0..docs.len()).collect(),
            tries: 0,
            id: None,
        }];
        while let Some(Pending {
            mut slots,
            tries,
            id,
        }) = todo.pop()
        {
            if slots.is_empty() {
                continue;
            }
            if tries > 0 {
                tokio::time::sleep(opts.retry.backoff(tries)).await;
            }
            // Each document goes out under its position in this request.
            let batch: Vec<WireDoc> = slots
                .iter()
                .enumerate()
                .map(|(pos, &slot)| {
                    let mut d = docs.get_mut(slot).map(std::mem::take).unwrap_or_default();
                    d.id = Some(pos.to_string());
                    d
                })
                .collect();
            let request = Request {
                id: Some(id.unwrap_or_else(|| self.next_id())),
                docs: batch,
                params: Some(params.clone()),
            };
            let request_id = request.id.clone().unwrap_or_default();
            let outcome = match protocol::encode(&request) {
                Ok(payload) => {
                    self.send_once(kind, &request_id, payload.into(), opts)
                        .await
                }
                Err(error) => Err(super::exchange::Failure {
                    error,
                    retry: false,
                }),
            };
            for (&slot, d) in slots.iter().zip(request.docs) {
                if let Some(place) = docs.get_mut(slot) {
                    *place = d;
                }
            }
            let tried = tries + 1;
            let mut settle = |slots: &[usize], answer: Result<ResultDoc, DocError>| {
                for &slot in slots {
                    if let Some(a) = answers.get_mut(slot) {
                        *a = Some(answer.clone());
                    }
                }
            };
            let response = match outcome {
                Err(f) if f.retry && opts.retry.allows_another(tried) => {
                    tracing::debug!(tries = tried, reason = %f.error, "trying a request again");
                    todo.push(Pending {
                        slots,
                        tries: tried,
                        id: Some(request_id),
                    });
                    continue;
                }
                Err(f) => {
                    settle(&slots, Err(gave_up(f.error, tried)));
                    continue;
                }
                Ok(r) => r,
            };
            if let Some(err) = response.error {
                if err.code == ErrorCode::TooLarge && slots.len() > 1 {
                    let second = slots.split_off(slots.len() / 2);
                    for half in [second, slots] {
                        todo.push(Pending {
                            slots: half,
                            tries,
                            id: None,
                        });
                    }
                } else if transient(err.code) && opts.retry.allows_another(tried) {
                    tracing::debug!(tries = tried, reason = %err.message, "trying a request again");
                    todo.push(Pending {
                        slots,
                        tries: tried,
                        id: None,
                    });
                } else {
                    settle(&slots, Err(gave_up(doc_error(err), tried)));
                }
                continue;
            }
            if let Some(d) = response.docs.iter().find(|d| d.embedding.is_some()) {
                self.learn_dim(d);
            }
            let mut again = Vec::new();
            for (slot, answer) in slots.iter().zip(align(response.docs, slots.len())) {
                let code = match &answer {
                    Ok(d) => d.error.as_ref().map(|e| e.code),
                    Err(_) => None,
                };
                match code {
                    Some(c) if transient(c) && opts.retry.allows_another(tried) => {
                        again.push(*slot)
                    }
                    Some(c) if transient(c) && tried > 1 => {
                        settle(&[*slot], answer.map(|d| note_tries(d, tried)))
                    }
                    _ => settle(&[*slot], answer),
                }
            }
            if !again.is_empty() {
                todo.push(Pending {
                    slots: again,
                    tries: tried,
                    id: None,
                });
            }
        }
        answers
            .into_iter()
            .map(|a| a.unwrap_or_else(|| Err(missing())))
            .collect()
    }
}

/// A document's own error, saying how often it was tried.
fn note_tries(mut doc: ResultDoc, tries: u32) -> ResultDoc {
    if let Some(e) = doc.error.take() {
        let e = gave_up(doc_error(e), tries);
        doc.error = Some(e.into());
    }
    doc
}
