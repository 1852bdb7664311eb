//! torchvision `Resize(S)` output size and `CenterCrop(S)` offsets.

use super::mode::{Mode, PilImage};

/// torchvision `_compute_resized_output_size` for an int size: the short side becomes `s`, the
/// long side `int(s*long/short)` (Python true division, then truncation). Returns `(w, h)`.
pub(crate) fn resized_size(width: usize, height: usize, s: usize) -> (usize, usize) {
    let (short, long) = if width <= height {
        (width, height)
    } else {
        (height, width)
    };
    // s*long is an exact integer in Python; both operands are exact in f64 for any real image,
    // and IEEE division is correctly rounded like Python's int/int.
    let new_long = ((s as u64).saturating_mul(long as u64) as f64 / short.max(1) as f64) as usize;
    if width <= height {
        (s, new_long)
    } else {
        (new_long, s)
    }
}

/// torchvision `CenterCrop`: `int(round((dim - s) / 2.0))` with Python's round-half-to-even.
/// `dim >= s` always holds after the resize.
pub(crate) fn crop_offset(dim: usize, s: usize) -> usize {
    let d = dim.saturating_sub(s);
    let half = d / 2;
    if d.is_multiple_of(2) || half.is_multiple_of(2) {
        half
    } else {
        half + 1
    }
}

/// Cut the `s×s` window at (`left`, `top`) out of an image (used when no resize is needed).
pub(crate) fn crop(image: &PilImage, left: usize, top: usize, s: usize) -> PilImage {
    let mut out = image.blank_like(s, s);
    if matches!(image.mode, Mode::I16 | Mode::I) {
        for (y, row) in out.data16.chunks_exact_mut(s).enumerate() {
            let start = (top + y) * image.width + left;
            row.copy_from_slice(&image.data16[start..start + s]);
        }
    } else {
        let ch = image.mode.channels();
        for (y, row) in out.data.chunks_exact_mut(s * ch).enumerate() {
            let start = ((top + y) * image.width + left) * ch;
            row.copy_from_slice(&image.data[start..start + s * ch]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_half_to_even_offsets() {
        // 411×336 at S=336 is a no-op resize; the crop offset is round(37.5) = 38.
        assert_eq!(resized_size(411, 336, 336), (411, 336));
        assert_eq!(crop_offset(411, 336), 38);
        // round(0.5) = 0, round(1.5) = 2, round(2.5) = 2, round(3.5) = 4.
        assert_eq!(crop_offset(225, 224), 0);
        assert_eq!(crop_offset(227, 224), 2);
        assert_eq!(crop_offset(229, 224), 2);
        assert_eq!(crop_offset(231, 224), 4);
        assert_eq!(crop_offset(224, 224), 0);
        assert_eq!(crop_offset(274, 224), 25);
    }

    #[test]
    fn output_sizes() {
        // The reference doc's golden 200×245 images.
        assert_eq!(resized_size(200, 245, 224), (224, 274));
        assert_eq!(resized_size(200, 245, 240), (240, 294));
        assert_eq!(resized_size(200, 245, 336), (336, 411));
        assert_eq!(crop_offset(274, 224), 25);
        assert_eq!(crop_offset(294, 240), 27);
        assert_eq!(crop_offset(411, 336), 38);
        // Square and wide.
        assert_eq!(resized_size(512, 512, 224), (224, 224));
        assert_eq!(resized_size(640, 427, 224), (335, 224));
        // Short side already S: unchanged.
        assert_eq!(resized_size(224, 300, 224), (224, 300));
        assert_eq!(resized_size(301, 224, 224), (301, 224));
    }

    #[test]
    fn crop_window() {
        let img = PilImage::new_u8(4, 3, Mode::L, (0..12).collect());
        let c = crop(&img, 1, 1, 2);
        assert_eq!(c.data, vec![5, 6, 9, 10]);
        let img16 = PilImage::new_i16(3, 3, (0..9).collect());
        assert_eq!(crop(&img16, 1, 0, 2).data16, vec![1, 2, 4, 5]);
    }
}
