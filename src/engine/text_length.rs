//! Choosing how the text tower is fed: at each minibatch's real length (the graph rewritten by
//! [`super::text_graph`]) or at the graph's fixed length, and the load-time self-test that
//! keeps the rewrite honest.

use super::runtime::{SessionConfig, TextLength};
use super::text_graph::{self, DynamicGraph};
use crate::preprocess::text::CONTEXT_LENGTH;
use std::path::Path;

/// The path the text tower takes (reported in logs and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextPath {
    /// Each minibatch runs at its longest text's real length.
    Dynamic,
    /// Every minibatch is padded as the graph and tokenizer require (77 for CLIP graphs).
    Fixed,
}

impl TextPath {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            TextPath::Dynamic => "dynamic",
            TextPath::Fixed => "fixed",
        }
    }
}

impl std::fmt::Display for TextPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The rewritten text graph to try, or why the graph is served as it is.
pub(super) fn candidate(textual: &Path, config: &SessionConfig) -> Result<DynamicGraph, String> {
    if config.text_length == TextLength::Fixed {
        return Err("--text-length fixed".into());
    }
    if config.tensorrt {
        return Err("TensorRT engines are built for fixed shapes".into());
    }
    let bytes = std::fs::read(textual).map_err(|e| format!("cannot read the graph: {e}"))?;
    let dynamic = text_graph::make_dynamic(&bytes).map_err(|e| e.to_string())?;
    if dynamic.length != CONTEXT_LENGTH {
        return Err(format!(
            "the graph's sequence length is {}, not the tokenizer's {CONTEXT_LENGTH}",
            dynamic.length
        ));
    }
    Ok(dynamic)
}

/// Texts of many lengths (one past the context, truncated) that the self-test encodes both ways.
pub(super) const PROBE_TEXTS: [&str; 6] = [
    "a",
    "a photo of a cat",
    "a diagram",
    "two dogs playing in the snow next to a red wooden fence on a cold winter morning",
    "Ünïcödé, punctuation!? and numbers 1234567890 — mixed in one caption",
    "a very long caption that goes on and on about everything in the picture, the sky, the \
     trees, the people walking their dogs along the river, the boats, the bridges, the old \
     houses with their red roofs and white windows, the market stalls, the smell of bread, \
     the noise of the traffic and the bells of the church at noon on a sunny day in spring",
];

/// The minibatches the self-test runs: every probe alone, all together, the short ones together.
pub(super) fn probe_batches(lengths: &[usize]) -> Vec<Vec<usize>> {
    let mut batches: Vec<Vec<usize>> = (0..lengths.len()).map(|i| vec![i]).collect();
    batches.push((0..lengths.len()).collect());
    let longest = lengths.iter().copied().max().unwrap_or(0);
    let short: Vec<usize> = (0..lengths.len())
        .filter(|i| lengths[*i] < longest)
        .collect();
    if short.len() > 1 {
        batches.push(short);
    }
    batches
}

/// Whether two sets of embeddings are bit for bit the same.
pub(super) fn identical(a: &[Vec<f32>], b: &[Vec<f32>]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_cover_single_texts_a_full_batch_and_a_short_batch() {
        let batches = probe_batches(&[3, 9, 77, 5]);
        assert_eq!(
            batches,
            vec![
                vec![0],
                vec![1],
                vec![2],
                vec![3],
                vec![0, 1, 2, 3],
                vec![0, 1, 3]
            ]
        );
    }

    #[test]
    fn identical_compares_bits() {
        assert!(identical(&[vec![1.0, -0.0]], &[vec![1.0, -0.0]]));
        assert!(
            !identical(&[vec![0.0]], &[vec![-0.0]]),
            "signed zero differs"
        );
        assert!(!identical(&[vec![1.0]], &[vec![1.0], vec![1.0]]));
        assert!(!identical(
            &[vec![1.0]],
            &[vec![f32::from_bits(1.0f32.to_bits() + 1)]]
        ));
    }

    #[test]
    fn fixed_mode_and_tensorrt_keep_the_graph_as_it_is() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/model/textual.onnx");
        let mut config = SessionConfig::default();
        assert_eq!(candidate(&path, &config).unwrap().length, 77);
        config.text_length = TextLength::Fixed;
        assert!(candidate(&path, &config).unwrap_err().contains("fixed"));
        config.text_length = TextLength::Dynamic;
        config.tensorrt = true;
        assert!(candidate(&path, &config).unwrap_err().contains("TensorRT"));
    }
}
