//! Encode: a chunk of documents loaded, fitted under `max_payload`, packed into requests.

use super::answers::{embedded, missing};
use super::{pack, Client, Options};
use crate::docio::InputDoc;
use crate::engine::Embedded;
use crate::error::DocError;
use crate::protocol::{JobKind, WireDoc};

impl Client {
    /// Makes a document fit in one request: an oversized blob goes to the Object Store.
    async fn fit(&self, mut doc: WireDoc, opts: &Options) -> Result<(WireDoc, usize), DocError> {
        let budget = pack::request_budget(self.max_payload);
        let size = pack::encoded_len(&doc)?;
        if pack::fits_alone(size, budget) {
            return Ok((doc, size));
        }
        match doc.blob.take() {
            Some(bytes)
                if doc.text.as_deref().is_none_or(str::is_empty) && doc.tensor.is_none() =>
            {
                doc.object = Some(self.uploader.upload(&opts.object_bucket, &bytes).await?);
                let size = pack::encoded_len(&doc)?;
                Ok((doc, size))
            }
            _ => Err(pack::too_large(size, budget, "document")),
        }
    }

    pub(super) async fn encode_chunk(
        &self,
        chunk: Vec<InputDoc>,
        opts: &Options,
    ) -> Vec<(String, Result<Embedded, DocError>)> {
        let (ids, docs): (Vec<String>, Vec<_>) = chunk.into_iter().map(|d| (d.id, d.doc)).unzip();
        let loaded = self.load_all(docs).await;
        let mut results: Vec<Option<Result<Embedded, DocError>>> = Vec::with_capacity(loaded.len());
        let mut ready: Vec<(usize, WireDoc, usize)> = Vec::new();
        for (i, d) in loaded.into_iter().enumerate() {
            match d {
                Ok(d) => match self.fit(d, opts).await {
                    Ok((d, size)) => {
                        results.push(None);
                        ready.push((i, d, size));
                    }
                    Err(e) => results.push(Some(Err(e))),
                },
                Err(e) => results.push(Some(Err(e))),
            }
        }
        let budget = pack::request_budget(self.max_payload);
        // One request at a time, each packed with the reply size known so far.
        let mut rest = ready;
        while !rest.is_empty() {
            let reply = pack::reply_estimate(self.dim_hint(), opts.dtype_bytes(), 0);
            let items: Vec<pack::Item> = rest
                .iter()
                .map(|(_, _, size)| pack::Item {
                    size: *size,
                    docs: 1,
                    reply,
                })
                .collect();
            let take = pack::first_group(&items, opts.batch_size, budget);
            let (slots, docs): (Vec<usize>, Vec<WireDoc>) =
                rest.drain(..take).map(|(i, d, _)| (i, d)).unzip();
            let answers = self.call(JobKind::Encode, docs, opts).await;
            for (slot, answer) in slots.into_iter().zip(answers) {
                if let Some(r) = results.get_mut(slot) {
                    *r = Some(answer.and_then(embedded));
                }
            }
        }
        ids.into_iter()
            .zip(results)
            .map(|(id, r)| (id, r.unwrap_or_else(|| Err(missing()))))
            .collect()
    }
}
