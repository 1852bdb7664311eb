//! torchvision `ToTensor` + `Normalize(CLIP_MEAN, CLIP_STD)` in float32.

use super::{RgbCrop, CLIP_MEAN, CLIP_STD};

/// Write the normalised crop into `out` in CHW order: `out[c*S*S + y*S + x] =
/// (crop[y][x][c] / 255 - mean[c]) / std[c]`, every operation in f32 as torch does it.
///
/// `out` should hold exactly `3*S*S` values. If it is shorter, only as many values as fit are
/// written (channel-major order); if it is longer, the tail is left untouched. A crop whose data
/// is shorter than `S*S*3` is treated the same way. This never panics.
pub fn normalize_into(crop: &RgbCrop, out: &mut [f32]) {
    let plane = (crop.size as usize) * (crop.size as usize);
    let pixels = plane.min(crop.data.len() / 3);
    for c in 0..3 {
        let Some(dst) = out.get_mut(c * plane..) else {
            return;
        };
        let (mean, std) = (CLIP_MEAN[c], CLIP_STD[c]);
        for (o, px) in dst.iter_mut().take(pixels).zip(crop.data.chunks_exact(3)) {
            *o = (f32::from(px[c]) / 255.0 - mean) / std;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chw_layout_and_values() {
        let crop = RgbCrop {
            size: 2,
            data: vec![0, 128, 255, 10, 20, 30, 40, 50, 60, 255, 255, 255],
        };
        let mut out = vec![f32::NAN; 12];
        normalize_into(&crop, &mut out);
        let expect = |v: u8, c: usize| (f32::from(v) / 255.0 - CLIP_MEAN[c]) / CLIP_STD[c];
        assert_eq!(out[0], expect(0, 0));
        assert_eq!(out[1], expect(10, 0));
        assert_eq!(out[4], expect(128, 1));
        assert_eq!(out[8], expect(255, 2));
        assert_eq!(out[11], expect(255, 2));
        // Black is the documented transparent-corner value.
        assert!((out[0] - -1.792_263).abs() < 1e-6);
    }

    #[test]
    fn short_buffers_do_not_panic() {
        let crop = RgbCrop {
            size: 2,
            data: vec![7; 12],
        };
        let mut short = vec![0.0f32; 5];
        normalize_into(&crop, &mut short);
        assert!(short.iter().all(|&v| v != 0.0));
        let mut long = vec![0.0f32; 20];
        normalize_into(&crop, &mut long);
        assert!(long[12..].iter().all(|&v| v == 0.0));
        let bad = RgbCrop {
            size: 3,
            data: vec![7; 5],
        };
        let mut out = vec![0.0f32; 27];
        normalize_into(&bad, &mut out);
        assert_ne!(out[0], 0.0);
        assert_eq!(out[1], 0.0);
    }
}
