//! Checks and allocations every decoder shares: the pixel-count guard, run on header sizes
//! before any pixel buffer exists, and fallible buffer allocation.

use super::ImageError;

/// Pillow's decompression-bomb check (`pixels > 2 * MAX_IMAGE_PIXELS` is an error), plus a
/// zero-size check.
pub(super) fn check_pixels(width: usize, height: usize, max_pixels: u64) -> Result<(), ImageError> {
    if width == 0 || height == 0 {
        return Err(ImageError::Decode(format!(
            "image has zero size ({width}x{height})"
        )));
    }
    let (w, h) = (width as u64, height as u64);
    if w.saturating_mul(h) > max_pixels {
        return Err(ImageError::TooLarge {
            width: w,
            height: h,
            max_pixels,
        });
    }
    Ok(())
}

/// A buffer of `len` copies of `value`; a failed allocation is an error instead of an abort.
pub(super) fn filled<T: Clone>(len: usize, value: T) -> Result<Vec<T>, ImageError> {
    let mut v = Vec::new();
    v.try_reserve_exact(len)
        .map_err(|_| ImageError::Decode(format!("cannot allocate {len} samples")))?;
    v.resize(len, value);
    Ok(v)
}

/// A zeroed buffer of `len` values (see [`filled`]).
pub(super) fn zeroed<T: Clone + Default>(len: usize) -> Result<Vec<T>, ImageError> {
    filled(len, T::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pixel_guard_rejects_empty_and_oversized_images() {
        assert!(check_pixels(3, 4, 12).is_ok());
        assert!(matches!(check_pixels(0, 4, 12), Err(ImageError::Decode(_))));
        assert!(matches!(
            check_pixels(4, 4, 12),
            Err(ImageError::TooLarge {
                width: 4,
                height: 4,
                max_pixels: 12
            })
        ));
        assert!(matches!(
            check_pixels(usize::MAX, usize::MAX, u64::MAX - 1),
            Err(ImageError::TooLarge { .. })
        ));
    }

    #[test]
    fn impossible_allocations_are_errors() {
        assert!(matches!(
            zeroed::<u64>(usize::MAX / 2),
            Err(ImageError::Decode(_))
        ));
        assert_eq!(filled(3, 7u8).ok(), Some(vec![7, 7, 7]));
    }
}
