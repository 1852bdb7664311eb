//! The bodies of the fuzz targets: arbitrary bytes in, no panic out, and the invariants each
//! stage promises checked on what comes back.
//!
//! `fuzz/` (cargo fuzz, nightly, libFuzzer) and the stable smoke test `tests/robustness.rs` both
//! call these functions, so a crash found by a campaign reproduces as a plain test on its input.
//! They are not used by the worker itself.

use crate::engine::tokenizer::TextTokenizer;
use crate::engine::{Prepared, Preprocessor};
use crate::error::ErrorCode;
use crate::model::spec::TokenizerKind;
use crate::preprocess::fetch::FetchPolicy;
use crate::preprocess::image::{self, ImageMode, RgbCrop};
use crate::preprocess::input::{Document, PixelTensor};
use crate::protocol::{self, IncomingDoc, Limits, Response};
use std::sync::{Arc, OnceLock};

/// A fuzz target body.
pub type Target = fn(&[u8]);

/// Every target, by the name of its `fuzz/fuzz_targets/*.rs` file and seed corpus folder.
pub const TARGETS: [(&str, Target); 4] = [
    ("request", request),
    ("jpeg", jpeg),
    ("avif", avif),
    ("image_pipeline", image_pipeline),
];

/// The pixel limit while fuzzing. The worker's default (Pillow's ~179 Mpx bomb threshold) lets a
/// 40-byte header ask for a decode that takes seconds; the guard itself is the same code at any
/// limit, and 4 Mpx keeps every input fast enough for a campaign.
pub const FUZZ_MAX_PIXELS: u64 = 1 << 22;

/// The model input size of the default model (ViT-B-32).
const PIPELINE_SIZE: u32 = 224;

/// A small crop for the decoder targets: the time goes into decoding, not resampling.
const DECODER_SIZE: u32 = 16;

/// The request decoder as the worker runs it: MessagePack → typed request, the request limits
/// (for both subjects), each document's limits and conversion to an engine document, and the
/// tokenizer on the texts that pass. A failed request must still encode as a response that
/// decodes again.
pub fn request(data: &[u8]) {
    let limits = Limits::default();
    let req = match protocol::decode_request(data) {
        Ok(req) => req,
        Err(e) => {
            assert_eq!(e.error.code, ErrorCode::BadRequest, "{e:?}");
            let response = Response::failure(e.id, "fuzz", e.error);
            let bytes = protocol::encode(&response).unwrap_or_default();
            let back = protocol::decode_response(&bytes);
            assert_eq!(
                back.as_ref().ok(),
                Some(&response),
                "failure reply round trip"
            );
            return;
        }
    };
    let _ = limits.check_request(&req, false);
    let rank_ok = limits.check_request(&req, true).is_ok();
    if !rank_ok {
        return;
    }
    for (i, doc) in req.docs.into_iter().enumerate() {
        let matches = match doc.matches {
            Ok(ref m) => m.len(),
            Err(_) => 0,
        };
        assert!(matches <= limits.max_matches);
        let IncomingDoc { id, doc, matches } = doc;
        check_doc(id, doc, i, &limits);
        for (j, m) in matches.into_iter().flatten().enumerate() {
            // The matches of a match are never read.
            assert!(matches!(&m.matches, Ok(v) if v.is_empty()));
            check_doc(m.id, m.doc, j, &limits);
        }
    }
}

fn check_doc(
    id: Option<String>,
    doc: Result<protocol::WireDoc, crate::error::DocError>,
    position: usize,
    limits: &Limits,
) {
    let Ok(doc) = doc else { return };
    if limits.check_doc(&doc).is_err() {
        return;
    }
    let id = id.unwrap_or_else(|| position.to_string());
    let Ok(document) = protocol::into_documents(doc, id) else {
        return;
    };
    if let Ok(crate::preprocess::input::Content::Text(text)) = document.content() {
        if let Ok(ids) = preprocessor().tokenize(text) {
            assert!(!ids.is_empty() && ids.len() <= 77, "{} tokens", ids.len());
        }
    }
}

/// JPEG through the public "decode these image bytes" entry point. Inputs that are not JPEG
/// (no SOI marker) are skipped so the campaign stays on the JPEG decoder.
pub fn jpeg(data: &[u8]) {
    if data.starts_with(b"\xFF\xD8\xFF") {
        decode_small(data);
    }
}

/// AVIF (and HEIF containers that list an AVIF brand) through the same entry point.
pub fn avif(data: &[u8]) {
    if data.get(4..8) == Some(b"ftyp") {
        decode_small(data);
    }
}

fn decode_small(data: &[u8]) {
    if let Ok(crop) = image::preprocess_bytes(data, DECODER_SIZE, FUZZ_MAX_PIXELS) {
        check_crop(&crop, DECODER_SIZE);
    }
}

fn check_crop(crop: &RgbCrop, size: u32) {
    assert_eq!(crop.size, size);
    assert_eq!(crop.data.len(), 3 * size as usize * size as usize);
}

/// The whole image path of the worker: a document with a blob (any format), or, when the input
/// starts with `t`, a pixel tensor whose shape is read from the next bytes; through
/// [`Preprocessor::prepare`] to the normalised CHW tensor the visual tower receives.
pub fn image_pipeline(data: &[u8]) {
    let doc = match data.split_first() {
        // No image format starts with `t`.
        Some((b't', rest)) => Document {
            tensor: Some(tensor_from(rest)),
            ..Document::default()
        },
        _ => Document::blob(data.to_vec()),
    };
    match preprocessor().prepare(&doc) {
        Ok(Prepared::Image(pixels)) => {
            let s = PIPELINE_SIZE as usize;
            assert_eq!(pixels.len(), 3 * s * s);
            // (0 - max mean) / min std .. (1 - min mean) / min std
            assert!(pixels.iter().all(|v| v.is_finite() && v.abs() < 2.2));
        }
        Ok(Prepared::Text(_)) => panic!("an image document prepared as text"),
        Err(e) => assert!(
            matches!(
                e.code,
                ErrorCode::ImageDecode
                    | ErrorCode::UnsupportedImage
                    | ErrorCode::TooLarge
                    | ErrorCode::InvalidDocument
                    | ErrorCode::EmptyDocument
            ),
            "{e:?}"
        ),
    }
}

/// Largest tensor the harness fills to its shape (a request's tensor is bounded by its bytes).
const MAX_TENSOR_BYTES: usize = 1 << 20;

/// A tensor from fuzz bytes: `rest[0]` picks the rank (0..=4) and whether the data length must
/// match the shape, the next bytes are the dimensions (at most 255 each), and the remainder is
/// repeated to fill the shape.
fn tensor_from(rest: &[u8]) -> PixelTensor {
    let Some((&head, rest)) = rest.split_first() else {
        return PixelTensor {
            shape: Vec::new(),
            data: Vec::new(),
        };
    };
    let rank = usize::from(head % 5);
    let (dims, pixels) = rest.split_at(rank.min(rest.len()));
    let shape: Vec<usize> = dims.iter().map(|&d| usize::from(d)).collect();
    // Filled only up to what a request may carry; larger shapes keep the bytes as given.
    let total = shape.iter().product::<usize>();
    let data = if head & 0x80 != 0 || total > MAX_TENSOR_BYTES {
        pixels.to_vec()
    } else if pixels.is_empty() {
        vec![0; total]
    } else {
        pixels.iter().copied().cycle().take(total).collect()
    };
    PixelTensor { shape, data }
}

/// The worker's preprocessing stage with the bundled CLIP tokenizer. Only blobs and tensors are
/// fed to it, never URIs, so the fetch policy is never used.
fn preprocessor() -> &'static Preprocessor {
    static PREPROCESSOR: OnceLock<Preprocessor> = OnceLock::new();
    PREPROCESSOR.get_or_init(|| {
        let tokenizer = match TextTokenizer::load(TokenizerKind::ClipBpe, None) {
            Ok(t) => t,
            Err(e) => panic!("the bundled CLIP tokenizer does not load: {e}"),
        };
        Preprocessor {
            tokenizer: Arc::new(tokenizer),
            image_size: PIPELINE_SIZE,
            max_pixels: FUZZ_MAX_PIXELS,
            fetch: FetchPolicy::default(),
            image_mode: ImageMode::Exact,
        }
    })
}
