//! The text side of a model: CLIP BPE (bundled) or a Hugging Face tokenizer (M-CLIP).

use crate::model::TokenizerKind;
use crate::preprocess::text::{ClipTokenizer, CONTEXT_LENGTH};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum TextTokenizerError {
    #[error("CLIP tokenizer: {0}")]
    Clip(#[from] crate::preprocess::text::TokenizerError),
    #[error("tokenizer `{path}`: {message}")]
    HuggingFace { path: String, message: String },
}

/// Turns text into token ids and knows how a batch of them is padded.
pub enum TextTokenizer {
    /// Fixed context of 77, zero padding.
    Clip(ClipTokenizer),
    /// Truncated to 77 with the tokenizer's own specials; a batch is padded to its longest item.
    HuggingFace {
        tokenizer: Box<tokenizers::Tokenizer>,
        pad_id: u32,
    },
}

impl TextTokenizer {
    pub fn load(kind: TokenizerKind, file: Option<&Path>) -> Result<Self, TextTokenizerError> {
        match (kind, file) {
            (TokenizerKind::ClipBpe, _) => Ok(TextTokenizer::Clip(ClipTokenizer::new()?)),
            (TokenizerKind::HuggingFace, Some(path)) => {
                let fail = |message: String| TextTokenizerError::HuggingFace {
                    path: path.display().to_string(),
                    message,
                };
                let mut tokenizer =
                    tokenizers::Tokenizer::from_file(path).map_err(|e| fail(e.to_string()))?;
                tokenizer
                    .with_truncation(Some(tokenizers::TruncationParams {
                        max_length: CONTEXT_LENGTH,
                        ..Default::default()
                    }))
                    .map_err(|e| fail(e.to_string()))?;
                tokenizer.with_padding(None);
                let pad_id = tokenizer
                    .token_to_id("<pad>")
                    .or_else(|| tokenizer.token_to_id("[PAD]"))
                    .unwrap_or(0);
                Ok(TextTokenizer::HuggingFace {
                    tokenizer: Box::new(tokenizer),
                    pad_id,
                })
            }
            (TokenizerKind::HuggingFace, None) => Err(TextTokenizerError::HuggingFace {
                path: String::new(),
                message: "this model needs a tokenizer.json in its model folder".into(),
            }),
        }
    }

    /// Token ids for one text, truncated to the context length.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, String> {
        match self {
            TextTokenizer::Clip(t) => t.encode(text).map_err(|e| e.to_string()),
            TextTokenizer::HuggingFace { tokenizer, .. } => tokenizer
                .encode(text, true)
                .map(|enc| enc.get_ids().to_vec())
                .map_err(|e| e.to_string()),
        }
    }

    /// Sequence length a batch is padded to, and the pad id.
    pub fn padding(&self, longest: usize) -> (usize, u32) {
        match self {
            TextTokenizer::Clip(_) => (CONTEXT_LENGTH, 0),
            TextTokenizer::HuggingFace { pad_id, .. } => {
                (longest.clamp(1, CONTEXT_LENGTH), *pad_id)
            }
        }
    }
}
