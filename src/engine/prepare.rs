//! The preprocessing stage: one document in, model-ready input out (CPU-bound, runs on a pool).

use super::tokenizer::TextTokenizer;
use crate::error::{DocError, ErrorChain, ErrorCode};
use crate::preprocess::fetch::FetchPolicy;
use crate::preprocess::image::{self, ImageError};
use crate::preprocess::input::{Content, Document, Modality};
use std::sync::Arc;

/// A document ready for its tower.
#[derive(Debug, Clone, PartialEq)]
pub enum Prepared {
    /// Token ids, sot..eot, not padded.
    Text(Vec<u32>),
    /// Normalised CHW pixels, `3 * S * S` values.
    Image(Vec<f32>),
}

impl Prepared {
    pub(crate) fn modality(&self) -> Modality {
        match self {
            Prepared::Text(_) => Modality::Text,
            Prepared::Image(_) => Modality::Image,
        }
    }
}

/// Everything preprocessing needs, cheap to share across threads.
#[derive(Clone)]
pub struct Preprocessor {
    pub tokenizer: Arc<TextTokenizer>,
    pub image_size: u32,
    pub max_pixels: u64,
    pub image_mode: image::ImageMode,
    pub fetch: FetchPolicy,
}

impl Preprocessor {
    pub fn prepare(&self, doc: &Document) -> Result<Prepared, DocError> {
        match doc.content()? {
            Content::Text(text) => self.tokenize(text).map(Prepared::Text),
            Content::Tensor(t) => {
                let crop =
                    image::preprocess_tensor(&t.data, &t.shape, self.image_size, self.max_pixels)
                        .map_err(image_error)?;
                Ok(Prepared::Image(self.normalize(&crop)))
            }
            Content::Blob(bytes) => self.image_bytes(bytes),
            Content::Uri(uri) => {
                let bytes = self.fetch.fetch(uri)?;
                self.image_bytes(&bytes)
            }
        }
    }

    pub(crate) fn tokenize(&self, text: &str) -> Result<Vec<u32>, DocError> {
        self.tokenizer.encode(text).map_err(|e| {
            DocError::new(
                ErrorCode::InvalidDocument,
                format!("cannot tokenize text: {}", ErrorChain(&e)),
            )
        })
    }

    fn image_bytes(&self, bytes: &[u8]) -> Result<Prepared, DocError> {
        let crop =
            image::preprocess_bytes_with(bytes, self.image_size, self.max_pixels, self.image_mode)
                .map_err(image_error)?;
        Ok(Prepared::Image(self.normalize(&crop)))
    }

    fn normalize(&self, crop: &image::RgbCrop) -> Vec<f32> {
        let s = crop.size as usize;
        let mut out = vec![0f32; 3 * s * s];
        image::normalize_into(crop, &mut out);
        out
    }
}

/// Maps image failures to the protocol's error codes.
pub(crate) fn image_error(e: ImageError) -> DocError {
    let code = match &e {
        ImageError::Decode(_) => ErrorCode::ImageDecode,
        ImageError::Unsupported(_) => ErrorCode::UnsupportedImage,
        ImageError::TooLarge { .. } => ErrorCode::TooLarge,
        ImageError::InvalidTensor(_) => ErrorCode::InvalidDocument,
    };
    DocError::new(code, e.to_string())
}
