//! CLIP's byte-level BPE: GPT-2 byte-to-unicode mapping, the 49,408-entry vocabulary, and the
//! merge itself (delegated to `tokenizers`' BPE model with the `</w>` end-of-word suffix).

use std::collections::HashMap;
use std::io::Read;

use flate2::read::GzDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::Model;

use super::{TokenizerError, EOT_ID, SOT_ID};

/// OpenAI's CLIP merges file, the same bytes CLIP-as-service ships.
const VOCAB_GZ: &[u8] = include_bytes!("../../../assets/bpe_simple_vocab_16e6.txt.gz");
/// CLIP reads lines `[1 : 49152-256-2+1]`: the header is skipped and the vocabulary stops at
/// 49,152 entries before the two special tokens.
const MERGE_COUNT: usize = 49152 - 256 - 2;
/// 256 byte symbols, the same with `</w>`, the merges, and the two specials.
const VOCAB_SIZE: usize = 2 * 256 + MERGE_COUNT + 2;
const SOT: &str = "<|startoftext|>";
const EOT: &str = "<|endoftext|>";
const END_OF_WORD: &str = "</w>";

/// GPT-2's `bytes_to_unicode`: printable Latin-1 bytes map to themselves, the rest to
/// U+0100 onwards, in byte order. Returns the byte→char table and the vocabulary order
/// (printable bytes first), which fixes the ids of the 256 byte symbols.
fn bytes_to_unicode() -> ([char; 256], Vec<u8>) {
    let printable = |b: u8| (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
    let mut table = ['\0'; 256];
    let mut order: Vec<u8> = (0..=255u8).filter(|&b| printable(b)).collect();
    let mut next = 256u32;
    for b in 0..=255u8 {
        if printable(b) {
            table[usize::from(b)] = char::from(b);
        } else {
            table[usize::from(b)] = char::from_u32(next).unwrap_or('\u{FFFD}');
            next += 1;
            order.push(b);
        }
    }
    (table, order)
}

/// The BPE half of the tokenizer: maps one pre-tokenised piece to ids.
pub(super) struct ClipBpe {
    model: BPE,
    byte_encoder: [char; 256],
}

impl ClipBpe {
    /// Decompresses the embedded merges and builds the vocabulary in CLIP's order.
    pub(super) fn load() -> Result<Self, TokenizerError> {
        let mut text = String::new();
        GzDecoder::new(VOCAB_GZ)
            .read_to_string(&mut text)
            .map_err(TokenizerError::VocabDecompress)?;
        let lines: Vec<&str> = text.split('\n').skip(1).take(MERGE_COUNT).collect();
        if lines.len() != MERGE_COUNT {
            return Err(TokenizerError::VocabFormat(format!(
                "expected {MERGE_COUNT} merges, found {}",
                lines.len()
            )));
        }
        let mut merges = Vec::with_capacity(MERGE_COUNT);
        for (i, line) in lines.iter().enumerate() {
            let mut parts = line.split_whitespace();
            match (parts.next(), parts.next(), parts.next()) {
                (Some(a), Some(b), None) => merges.push((a.to_owned(), b.to_owned())),
                _ => {
                    return Err(TokenizerError::VocabFormat(format!(
                        "merge line {} is not a pair: {line:?}",
                        i + 1
                    )))
                }
            }
        }

        let (byte_encoder, order) = bytes_to_unicode();
        let mut tokens: Vec<String> = Vec::with_capacity(VOCAB_SIZE);
        tokens.extend(
            order
                .iter()
                .map(|&b| byte_encoder[usize::from(b)].to_string()),
        );
        tokens.extend(
            order
                .iter()
                .map(|&b| format!("{}{END_OF_WORD}", byte_encoder[usize::from(b)])),
        );
        tokens.extend(merges.iter().map(|(a, b)| format!("{a}{b}")));
        tokens.push(SOT.to_owned());
        tokens.push(EOT.to_owned());
        // Like Python's dict(zip(vocab, range(...))): a repeated string keeps its last id.
        let mut index: HashMap<String, u32> = HashMap::with_capacity(VOCAB_SIZE);
        for (id, token) in tokens.into_iter().enumerate() {
            let id = u32::try_from(id)
                .map_err(|_| TokenizerError::VocabFormat("vocabulary too large".into()))?;
            index.insert(token, id);
        }
        if index.get(SOT) != Some(&SOT_ID) || index.get(EOT) != Some(&EOT_ID) {
            return Err(TokenizerError::VocabFormat(
                "special tokens did not land on ids 49406/49407".into(),
            ));
        }
        let vocab: Vocab = index.into_iter().collect();
        let model = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .end_of_word_suffix(END_OF_WORD.to_owned())
            .build()
            .map_err(TokenizerError::Model)?;
        Ok(Self {
            model,
            byte_encoder,
        })
    }

    /// Appends the ids of one pre-tokenised piece. A piece that is exactly a special token
    /// maps to its id, as CLIP's pre-filled BPE cache does.
    pub(super) fn encode_piece(
        &self,
        piece: &str,
        out: &mut Vec<u32>,
    ) -> Result<(), TokenizerError> {
        let encoded: String = piece
            .bytes()
            .map(|b| self.byte_encoder[usize::from(b)])
            .collect();
        match encoded.as_str() {
            SOT => out.push(SOT_ID),
            EOT => out.push(EOT_ID),
            _ => {
                let tokens =
                    self.model
                        .tokenize(&encoded)
                        .map_err(|source| TokenizerError::Merge {
                            piece: piece.to_owned(),
                            source,
                        })?;
                out.extend(tokens.iter().map(|t| t.id));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_table_matches_gpt2() {
        let (table, order) = bytes_to_unicode();
        assert_eq!(order.len(), 256);
        assert_eq!(order[0], b'!');
        assert_eq!(table[usize::from(b' ')], '\u{120}');
        assert_eq!(table[0], '\u{100}');
        assert_eq!(table[0xAD], '\u{143}');
        assert_eq!(table[usize::from(b'a')], 'a');
    }
}
