//! The text side of a model: CLIP BPE (bundled) or a Hugging Face tokenizer (M-CLIP).

use crate::model::TokenizerKind;
use crate::preprocess::text::{ClipTokenizer, CONTEXT_LENGTH};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum TextTokenizerError {
    #[error("CLIP tokenizer")]
    Clip(#[from] crate::preprocess::text::TokenizerError),
    #[error("tokenizer `{path}`")]
    HuggingFace {
        path: String,
        #[source]
        source: tokenizers::Error,
    },
    #[error("this model needs a tokenizer.json in its model folder")]
    MissingFile,
    /// The Hugging Face tokenizer failed on one text.
    #[error("tokenizer failed on the text")]
    Encode(#[source] tokenizers::Error),
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
    pub(crate) fn load(
        kind: TokenizerKind,
        file: Option<&Path>,
    ) -> Result<Self, TextTokenizerError> {
        match (kind, file) {
            (TokenizerKind::ClipBpe, _) => Ok(TextTokenizer::Clip(ClipTokenizer::new()?)),
            (TokenizerKind::HuggingFace, Some(path)) => {
                let fail = |source| TextTokenizerError::HuggingFace {
                    path: path.display().to_string(),
                    source,
                };
                let mut tokenizer = tokenizers::Tokenizer::from_file(path).map_err(fail)?;
                tokenizer
                    .with_truncation(Some(tokenizers::TruncationParams {
                        max_length: CONTEXT_LENGTH,
                        ..Default::default()
                    }))
                    .map_err(fail)?;
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
            (TokenizerKind::HuggingFace, None) => Err(TextTokenizerError::MissingFile),
        }
    }

    /// Token ids for one text, truncated to the context length.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TextTokenizerError> {
        match self {
            TextTokenizer::Clip(t) => Ok(t.encode(text)?),
            TextTokenizer::HuggingFace { tokenizer, .. } => tokenizer
                .encode(text, true)
                .map(|enc| enc.get_ids().to_vec())
                .map_err(TextTokenizerError::Encode),
        }
    }

    /// Sequence length a batch is padded to, and the pad id.
    pub(crate) fn padding(&self, longest: usize) -> (usize, u32) {
        match self {
            TextTokenizer::Clip(_) => (CONTEXT_LENGTH, 0),
            TextTokenizer::HuggingFace { pad_id, .. } => {
                (longest.clamp(1, CONTEXT_LENGTH), *pad_id)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small Hugging Face tokenizer in the XLM-R layout (`<s>`=0, `<pad>`=1, `</s>`=2).
    const TOKENIZER_JSON: &str = r#"{
      "version": "1.0", "truncation": null, "padding": null,
      "added_tokens": [
        {"id": 0, "content": "<s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
        {"id": 1, "content": "<pad>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
        {"id": 2, "content": "</s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
        {"id": 3, "content": "<unk>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}
      ],
      "normalizer": null,
      "pre_tokenizer": {"type": "Whitespace"},
      "post_processor": {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "</s>", "type_id": 0}}],
        "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {
          "<s>": {"id": "<s>", "ids": [0], "tokens": ["<s>"]},
          "</s>": {"id": "</s>", "ids": [2], "tokens": ["</s>"]}
        }
      },
      "decoder": null,
      "model": {"type": "WordLevel", "vocab": {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "hello": 4, "world": 5}, "unk_token": "<unk>"}
    }"#;

    #[test]
    fn hugging_face_tokenizers_truncate_to_77_and_pad_to_the_longest_item() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        std::fs::write(&path, TOKENIZER_JSON).unwrap();
        let t = TextTokenizer::load(TokenizerKind::HuggingFace, Some(&path)).unwrap();
        assert_eq!(t.encode("hello world").unwrap(), vec![0, 4, 5, 2]);
        assert_eq!(t.encode("hello moon").unwrap(), vec![0, 4, 3, 2]);
        let long = t.encode(&"hello ".repeat(100)).unwrap();
        assert_eq!(long.len(), CONTEXT_LENGTH);
        assert_eq!((long[0], long[76]), (0, 2), "specials survive truncation");
        assert_eq!(
            t.padding(4),
            (4, 1),
            "pad to the batch's longest item with <pad>"
        );
        assert_eq!(t.padding(500), (CONTEXT_LENGTH, 1));
    }

    /// A LaBSE-style (BERT WordPiece) tokenizer: `[PAD]` is id 0, specials `[CLS]`/`[SEP]`.
    const WORDPIECE_JSON: &str = r###"{
      "version": "1.0", "truncation": null, "padding": null,
      "added_tokens": [
        {"id": 0, "content": "[PAD]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
        {"id": 1, "content": "[UNK]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
        {"id": 2, "content": "[CLS]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
        {"id": 3, "content": "[SEP]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}
      ],
      "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true, "strip_accents": null, "lowercase": true},
      "pre_tokenizer": {"type": "BertPreTokenizer"},
      "post_processor": {"type": "BertProcessing", "sep": ["[SEP]", 3], "cls": ["[CLS]", 2]},
      "decoder": null,
      "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##", "max_input_chars_per_word": 100,
                "vocab": {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "hello": 4, "world": 5, "##s": 6}}
    }"###;

    #[test]
    fn labse_style_tokenizers_pad_with_their_own_pad_id() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        std::fs::write(&path, WORDPIECE_JSON).unwrap();
        let t = TextTokenizer::load(TokenizerKind::HuggingFace, Some(&path)).unwrap();
        assert_eq!(t.encode("Hello Worlds").unwrap(), vec![2, 4, 5, 6, 3]);
        assert_eq!(t.encode("hello moon").unwrap(), vec![2, 4, 1, 3]);
        assert_eq!(t.padding(5), (5, 0), "[PAD] is id 0");
    }

    #[test]
    fn clip_tokenizer_pads_to_the_fixed_context() {
        let t = TextTokenizer::load(TokenizerKind::ClipBpe, None).unwrap();
        assert_eq!(t.padding(3), (CONTEXT_LENGTH, 0));
        assert!(TextTokenizer::load(TokenizerKind::HuggingFace, None).is_err());
    }
}
