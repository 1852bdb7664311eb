//! Client-side loading (files, URLs and data: URIs become `blob`), and packing documents into
//! requests that stay under the server's `max_payload`.

use crate::error::{DocError, ErrorCode};
use crate::preprocess::fetch::FetchPolicy;
use crate::preprocess::input::{Content, Document};
use crate::protocol::{self, WireDoc, WireTensor};
use std::ops::Range;

/// Bytes kept free in every message for headers (`Clip-Reply-To`, `Nats-Msg-Id`, ...).
pub(crate) const HEADER_ROOM: usize = 1024;
/// Bytes of a request beyond its documents: the map, its request id, `params`, the array header.
pub(crate) const REQUEST_OVERHEAD: usize = 256;

/// The largest request payload to send when the server accepts `max_payload` bytes.
pub(crate) fn request_budget(max_payload: usize) -> usize {
    max_payload
        .saturating_sub(HEADER_ROOM)
        .max(REQUEST_OVERHEAD + 1)
}

/// Whether a document of `size` encoded bytes fits in a request on its own.
pub(crate) fn fits_alone(size: usize, budget: usize) -> bool {
    size.saturating_add(REQUEST_OVERHEAD) <= budget
}

/// Loads what the client can load, like the original client: text and tensors as they are,
/// images named by a path, an http(s) URL or a data: URI read here and sent as `blob`.
pub(crate) fn load(doc: Document, fetch: &FetchPolicy) -> Result<WireDoc, DocError> {
    enum Pick {
        Text,
        Tensor,
        Blob,
        Uri,
    }
    let pick = match doc.content()? {
        Content::Text(_) => Pick::Text,
        Content::Tensor(_) => Pick::Tensor,
        Content::Blob(_) => Pick::Blob,
        Content::Uri(_) => Pick::Uri,
    };
    let mut out = WireDoc::default();
    match pick {
        Pick::Text => out.text = doc.text,
        Pick::Tensor => {
            out.tensor = doc.tensor.map(|t| WireTensor {
                dtype: "uint8".into(),
                shape: t.shape,
                data: t.data,
            })
        }
        Pick::Blob => {
            out.blob = doc.blob;
            out.mime_type = doc.mime_type;
        }
        Pick::Uri => {
            let uri = doc.uri.unwrap_or_default();
            out.blob = Some(fetch.fetch(&uri)?);
            out.mime_type = doc.mime_type;
        }
    }
    Ok(out)
}

/// Encoded size of a document as it will be sent (maps with field names).
pub(crate) fn encoded_len(doc: &WireDoc) -> Result<usize, DocError> {
    protocol::encode(doc).map(|b| b.len())
}

/// The error for a document that cannot be sent at all.
pub(crate) fn too_large(size: usize, budget: usize, what: &str) -> DocError {
    DocError::new(
        ErrorCode::TooLarge,
        format!("{what} of {size} encoded bytes does not fit in a {budget}-byte request and cannot go through the object store"),
    )
}

/// One unit of packing: a document (encode) or a root with its matches (rank).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Item {
    /// Encoded request bytes.
    pub size: usize,
    /// Documents, matches included.
    pub docs: usize,
    /// Estimated reply bytes (the worker refuses a reply over `max_payload`).
    pub reply: usize,
}

/// Estimated reply bytes for one document carrying an embedding of `dim` values of
/// `value_bytes` each, plus `matches` scored matches.
pub(crate) fn reply_estimate(dim: usize, value_bytes: usize, matches: usize) -> usize {
    96 + dim * value_bytes + matches * 112
}

/// Splits items into consecutive groups of at most `max_docs` documents whose request sizes and
/// estimated reply sizes each add up, with the request overhead, to at most `budget`. An item
/// alone always makes a group, even if it breaks a limit (the caller checked it fits).
pub(crate) fn pack(items: &[Item], max_docs: usize, budget: usize) -> Vec<Range<usize>> {
    let mut groups = Vec::new();
    let mut start = 0;
    let (mut bytes, mut reply, mut docs) = (REQUEST_OVERHEAD, REQUEST_OVERHEAD, 0usize);
    for (i, item) in items.iter().enumerate() {
        let over = bytes.saturating_add(item.size) > budget
            || reply.saturating_add(item.reply) > budget
            || docs + item.docs > max_docs.max(1);
        if i > start && over {
            groups.push(start..i);
            start = i;
            bytes = REQUEST_OVERHEAD;
            reply = REQUEST_OVERHEAD;
            docs = 0;
        }
        bytes = bytes.saturating_add(item.size);
        reply = reply.saturating_add(item.reply);
        docs += item.docs;
    }
    if start < items.len() {
        groups.push(start..items.len());
    }
    groups
}

/// How many of `items` go in the next request (at least one).
pub(crate) fn first_group(items: &[Item], batch_size: usize, budget: usize) -> usize {
    pack(items, batch_size.max(1), budget)
        .first()
        .map_or(items.len(), |g| g.len().max(1))
        .min(items.len())
}

/// Groups items in order so that each group holds at most `max` units (an item over `max` alone).
pub(crate) fn into_chunks<T>(
    items: Vec<T>,
    max: usize,
    units: impl Fn(&T) -> usize,
) -> Vec<Vec<T>> {
    let mut chunks = Vec::new();
    let mut current = Vec::new();
    let mut used = 0;
    for item in items {
        let u = units(&item);
        if !current.is_empty() && used + u > max {
            chunks.push(std::mem::take(&mut current));
            used = 0;
        }
        used += u;
        current.push(item);
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_respect_units() {
        let c = into_chunks(vec![1, 1, 1, 5, 1], 3, |x| *x);
        assert_eq!(c, vec![vec![1, 1, 1], vec![5], vec![1]]);
        assert!(into_chunks(Vec::<usize>::new(), 3, |x| *x).is_empty());
    }

    #[test]
    fn packs_by_count_and_size_in_order() {
        let item = |size, docs| Item {
            size,
            docs,
            reply: 0,
        };
        let items = vec![item(10, 1); 5];
        assert_eq!(pack(&items, 2, 10_000), vec![0..2, 2..4, 4..5]);
        let items = [item(400, 1), item(400, 1), item(900, 1), item(10, 1)];
        assert_eq!(pack(&items, 32, 256 + 900), vec![0..2, 2..3, 3..4]);
        // An item over the budget still forms its own group.
        assert_eq!(
            pack(&[item(5000, 1), item(1, 1)], 32, 1000),
            vec![0..1, 1..2]
        );
        // Rank roots count their matches.
        assert_eq!(
            pack(&[item(1, 3), item(1, 3), item(1, 1)], 4, 10_000),
            vec![0..1, 1..3]
        );
        assert!(pack(&[], 4, 100).is_empty());
        // Replies count too: small requests with large replies are split.
        let big_reply = Item {
            size: 10,
            docs: 1,
            reply: 400,
        };
        assert_eq!(pack(&[big_reply; 3], 32, 256 + 800), vec![0..2, 2..3]);
    }

    #[test]
    fn loads_text_blob_and_data_uris() {
        let fetch = FetchPolicy::default();
        let d = load(Document::text("hi"), &fetch).unwrap();
        assert_eq!(d.text.as_deref(), Some("hi"));
        let d = load(Document::uri("data:image/png;base64,AAEC"), &fetch).unwrap();
        assert_eq!(d.blob.as_deref(), Some(&[0u8, 1, 2][..]));
        assert!(d.uri.is_none());
        let e = load(Document::uri("/definitely/not/here.png"), &fetch).unwrap_err();
        assert_eq!(e.code, ErrorCode::NotFound);
        assert_eq!(
            load(Document::default(), &fetch).unwrap_err().code,
            ErrorCode::EmptyDocument
        );
    }
}
