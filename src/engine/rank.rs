//! CLIP-as-service's rank maths: cosine with eps, fixed logit scale, per-query softmax, stable sort.

/// `np.exp(4.60517)`: the original's fixed logit scale (not read from the model).
pub(crate) const LOGIT_SCALE_LN: f64 = 4.60517;
const EPS: f64 = 1e-7;

/// One match after ranking.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RankedMatch {
    /// Position of the match in the input order.
    pub index: usize,
    /// Softmax over this query's matches of `logit_scale * cosine`.
    pub clip_score: f64,
    /// Cosine similarity, clipped to [-1, 1].
    pub clip_score_cosine: f64,
}

/// Cosine similarity as docarray computes it: `(q·c + eps) / (|q||c| + eps)`, clipped to [-1, 1].
pub(crate) fn cosine(q: &[f32], c: &[f32]) -> f64 {
    let (mut dot, mut qq, mut cc) = (0f64, 0f64, 0f64);
    for (a, b) in q.iter().zip(c) {
        let (a, b) = (f64::from(*a), f64::from(*b));
        dot += a * b;
        qq += a * a;
        cc += b * b;
    }
    ((dot + EPS) / (qq.sqrt() * cc.sqrt() + EPS)).clamp(-1.0, 1.0)
}

/// Ranks `matches` against `query`: scores every match and returns them best first.
/// Ties keep their input order (stable sort), as in the original.
pub(crate) fn rank(query: &[f32], matches: &[&[f32]]) -> Vec<RankedMatch> {
    let logit_scale = LOGIT_SCALE_LN.exp();
    let cosines: Vec<f64> = matches.iter().map(|m| cosine(query, m)).collect();
    let logits: Vec<f64> = cosines.iter().map(|c| logit_scale * c).collect();
    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let exps: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    let mut ranked: Vec<RankedMatch> = cosines
        .iter()
        .zip(&exps)
        .enumerate()
        .map(|(index, (cos, e))| RankedMatch {
            index,
            clip_score: e / sum,
            clip_score_cosine: *cos,
        })
        .collect();
    ranked.sort_by(|a, b| b.clip_score.total_cmp(&a.clip_score));
    ranked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_sums_to_one_and_orders_descending() {
        let q = [1.0f32, 0.0, 0.0];
        let a = [0.9f32, 0.1, 0.0];
        let b = [0.0f32, 1.0, 0.0];
        let c = [0.5f32, 0.5, 0.1];
        let r = rank(&q, &[&a, &b, &c]);
        let total: f64 = r.iter().map(|m| m.clip_score).sum();
        assert!((total - 1.0).abs() < 1e-12);
        assert_eq!(r.iter().map(|m| m.index).collect::<Vec<_>>(), vec![0, 2, 1]);
        assert!(r.windows(2).all(|w| w[0].clip_score >= w[1].clip_score));
    }

    #[test]
    fn ties_keep_input_order() {
        let q = [1.0f32, 2.0];
        let m = [0.5f32, 0.5];
        let r = rank(&q, &[&m, &m, &m]);
        assert_eq!(r.iter().map(|m| m.index).collect::<Vec<_>>(), vec![0, 1, 2]);
        assert!((r[0].clip_score - 1.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn cosine_is_clipped_and_handles_zero_vectors() {
        assert_eq!(cosine(&[1.0, 0.0], &[1.0, 0.0]), 1.0);
        // The eps in the numerator keeps opposite vectors just above -1, as in the original.
        let opposite = cosine(&[1.0, 0.0], &[-1.0, 0.0]);
        assert!(
            (opposite - (-1.0 + 1e-7) / (1.0 + 1e-7)).abs() < 1e-15,
            "{opposite}"
        );
        assert_eq!(cosine(&[3.0, 0.0], &[3.0, 0.0]), 1.0, "clipped at 1");
        // Zero vectors: (0 + eps) / (0 + eps) = 1, as the original's formula gives.
        assert_eq!(cosine(&[0.0, 0.0], &[0.0, 0.0]), 1.0);
    }
}
