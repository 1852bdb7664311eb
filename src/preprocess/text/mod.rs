//! CLIP BPE text tokenizer, bit-identical to CLIP-as-service's `SimpleTokenizer`.
//!
//! Pipeline: [`clean_text`] (ftfy, HTML unescape, whitespace, lowercase), the CLIP
//! pre-tokenising regex, byte-to-unicode mapping, byte-level BPE, then
//! `[SOT] + tokens + [EOT]` truncated to [`CONTEXT_LENGTH`] with EOT kept last.

mod bpe;
mod clean;
mod ftfy;
mod ftfy_data;
mod html;
mod mojibake;

use regex::Regex;

pub(crate) use clean::clean_text;

/// CLIP's text context: at most 77 ids including SOT and EOT.
pub const CONTEXT_LENGTH: usize = 77;
/// `<|startoftext|>`.
pub const SOT_ID: u32 = 49406;
/// `<|endoftext|>`; also forced into the last slot when a text is truncated.
pub const EOT_ID: u32 = 49407;

/// CLIP's pre-tokenising pattern. Case-insensitivity (Python `re.IGNORECASE`) is confined to
/// the literal alternatives: on the classes, the `regex` crate would fold U+0345 (combining
/// ypogegrammeni) into `\p{L}`, while Python's `regex` module matches it with no alternative
/// at all, so it is excluded from the last class and silently skipped, as in Python.
const PATTERN: &str = r"(?i:<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d)|\p{L}+|\p{N}|[^\s\p{L}\p{N}\x{345}]+";

/// Why the tokenizer could not be built or could not encode a text.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// The embedded gzip vocabulary could not be decompressed.
    #[error("cannot decompress the embedded BPE vocabulary")]
    VocabDecompress(#[source] std::io::Error),
    /// The embedded vocabulary does not have CLIP's shape.
    #[error("malformed BPE vocabulary: {0}")]
    VocabFormat(String),
    /// The BPE model rejected the vocabulary or merges.
    #[error("cannot build the BPE model")]
    Model(#[source] tokenizers::Error),
    /// The pre-tokenising pattern did not compile.
    #[error("cannot compile the pre-tokenising pattern")]
    Pattern(#[from] regex::Error),
    /// The BPE model failed on a piece of text.
    #[error("BPE failed on {piece:?}")]
    Merge {
        /// The pre-tokenised piece, before byte mapping.
        piece: String,
        /// The underlying error.
        #[source]
        source: tokenizers::Error,
    },
}

/// The CLIP text tokenizer. Immutable after construction, so one instance can be shared
/// across threads. The vocabulary is boxed to keep the handle small in enums.
pub struct ClipTokenizer {
    bpe: Box<bpe::ClipBpe>,
    pattern: Regex,
}

impl std::fmt::Debug for ClipTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipTokenizer").finish_non_exhaustive()
    }
}

impl ClipTokenizer {
    /// Builds the tokenizer from the vocabulary embedded in the binary.
    pub fn new() -> Result<Self, TokenizerError> {
        Ok(Self {
            bpe: Box::new(bpe::ClipBpe::load()?),
            pattern: Regex::new(PATTERN)?,
        })
    }

    /// Encodes `text` as `[SOT] + tokens + [EOT]`, truncated to [`CONTEXT_LENGTH`] ids with EOT
    /// last. Not padded. Whitespace-only text gives `[SOT, EOT]`.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        let cleaned = clean_text(text);
        let mut ids = Vec::with_capacity(CONTEXT_LENGTH);
        ids.push(SOT_ID);
        for piece in self.pattern.find_iter(&cleaned) {
            // Everything past the context is dropped by truncation anyway.
            if ids.len() >= CONTEXT_LENGTH {
                break;
            }
            self.bpe.encode_piece(piece.as_str(), &mut ids)?;
        }
        ids.push(EOT_ID);
        if ids.len() > CONTEXT_LENGTH {
            ids.truncate(CONTEXT_LENGTH);
            if let Some(last) = ids.last_mut() {
                *last = EOT_ID;
            }
        }
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenizer_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<ClipTokenizer>();
    }
}
