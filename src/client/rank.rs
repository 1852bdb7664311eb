//! Rank: each root with its matches loaded, fitted under `max_payload` (largest blobs to the
//! Object Store first) and packed into requests; a root is never split from its matches.

use super::answers::{missing, ranked};
use super::{pack, Client, Options};
use crate::docio::InputDoc;
use crate::engine::Ranked;
use crate::error::{DocError, ErrorCode};
use crate::protocol::{JobKind, WireDoc};

impl Client {
    pub(super) async fn rank_chunk(
        &self,
        chunk: Vec<InputDoc>,
        opts: &Options,
    ) -> Vec<(String, Vec<String>, Result<Ranked, DocError>)> {
        let budget = pack::request_budget(self.max_payload);
        let mut out = Vec::with_capacity(chunk.len());
        // (slot in the chunk, root with matches, encoded size, matches that failed to load)
        type Prepared = (usize, WireDoc, usize, Vec<(usize, DocError)>);
        let mut prepared: Vec<Prepared> = Vec::new();
        for (slot, root) in chunk.into_iter().enumerate() {
            let match_ids: Vec<String> = root.matches.iter().map(|m| m.id.clone()).collect();
            let n_matches = root.matches.len();
            let mut docs = vec![root.doc];
            docs.extend(root.matches.into_iter().map(|m| m.doc));
            let mut loaded = self.load_all(docs).await.into_iter();
            let root_doc = loaded.next().unwrap_or_else(|| Err(missing()));
            let mut matches = Vec::new();
            let mut failed = Vec::new();
            for (j, m) in loaded.enumerate() {
                match m {
                    Ok(mut m) => {
                        m.id = Some(j.to_string());
                        matches.push(m);
                    }
                    Err(e) => failed.push((j, e)),
                }
            }
            let result = match root_doc {
                Err(e) => Err(e),
                Ok(_) if n_matches == 0 => Err(DocError::new(
                    ErrorCode::InvalidDocument,
                    "a rank document needs at least one match",
                )),
                Ok(_) if matches.is_empty() => {
                    Err(failed.first().map_or_else(missing, |(_, e)| {
                        DocError::new(
                            e.code,
                            format!(
                                "none of the {n_matches} matches could be loaded; the first: {}",
                                e.message
                            ),
                        )
                    }))
                }
                Ok(mut r) => {
                    r.matches = matches;
                    match self.fit_root(r, budget, opts).await {
                        Ok((r, size)) => {
                            prepared.push((slot, r, size, failed));
                            out.push((root.id, match_ids, Err(missing())));
                            continue;
                        }
                        Err(e) => Err(e),
                    }
                }
            };
            out.push((root.id, match_ids, result));
        }
        let mut rest = prepared;
        while !rest.is_empty() {
            let dim = self.dim_hint();
            let items: Vec<pack::Item> = rest
                .iter()
                .map(|(_, r, size, _)| pack::Item {
                    size: *size,
                    docs: 1 + r.matches.len(),
                    reply: pack::reply_estimate(dim, opts.dtype_bytes(), r.matches.len()),
                })
                .collect();
            let take = pack::first_group(&items, opts.batch_size, budget);
            let mut slots = Vec::with_capacity(take);
            let mut docs = Vec::with_capacity(take);
            for (slot, doc, _, failed) in rest.drain(..take) {
                slots.push((slot, failed));
                docs.push(doc);
            }
            let answers = self.call(JobKind::Rank, docs, opts).await;
            for ((slot, failed), answer) in slots.into_iter().zip(answers) {
                if let Some(entry) = out.get_mut(slot) {
                    entry.2 = answer.and_then(|d| ranked(d, failed));
                }
            }
        }
        out
    }

    /// Makes a rank root (with its matches) fit one request, uploading its largest blobs first.
    async fn fit_root(
        &self,
        mut root: WireDoc,
        budget: usize,
        opts: &Options,
    ) -> Result<(WireDoc, usize), DocError> {
        loop {
            let size = pack::encoded_len(&root)?;
            if pack::fits_alone(size, budget) {
                return Ok((root, size));
            }
            let blob_len = |d: &WireDoc| {
                if d.text.as_deref().is_none_or(str::is_empty) && d.tensor.is_none() {
                    d.blob.as_ref().map_or(0, Vec::len)
                } else {
                    0
                }
            };
            let root_len = blob_len(&root);
            let best = root
                .matches
                .iter()
                .enumerate()
                .map(|(i, m)| (blob_len(m), i))
                .max()
                .unwrap_or((0, 0));
            let target = if root_len >= best.0 {
                None
            } else {
                Some(best.1)
            };
            let doc = match target {
                None => &mut root,
                Some(i) => match root.matches.get_mut(i) {
                    Some(m) => m,
                    None => return Err(pack::too_large(size, budget, "rank document")),
                },
            };
            if blob_len(doc) == 0 {
                return Err(pack::too_large(
                    size,
                    budget,
                    "rank document with its matches",
                ));
            }
            if let Some(bytes) = doc.blob.take() {
                doc.object = Some(self.uploader.upload(&opts.object_bucket, &bytes).await?);
            }
        }
    }
}
