//! Checks and allocations every decoder shares: the pixel-count guard, run on header sizes
//! before any pixel buffer exists, and fallible buffer allocation.

use super::ImageError;
use std::cell::RefCell;

/// Largest decoded image a preprocess thread keeps for the next one (48 MiB: a 16 Mpx RGB
/// photo): taking fresh pages from the kernel for every photo costs about a tenth of its
/// preprocessing, while this bounds what each thread holds on to.
const KEEP_BYTES: usize = 48 << 20;

thread_local! {
    static SPARE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

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

/// A buffer of `len` bytes for a decoder that writes every byte of it or fails: the
/// thread's spare buffer when it is large enough, else a new zeroed one. A reused buffer
/// still holds an earlier image's bytes until the decoder overwrites them, so a decoder that
/// can leave part of its output unwritten must use [`zeroed`] instead (libjpeg-turbo, the
/// one caller, writes every row of its output or reports an error, and the buffer of a
/// failed decode is dropped, not recycled).
pub(super) fn overwritten_bytes(len: usize) -> Result<Vec<u8>, ImageError> {
    let spare = SPARE.with(|s| std::mem::take(&mut *s.borrow_mut()));
    if spare.capacity() < len {
        return zeroed(len);
    }
    let mut v = spare;
    // Shrinking writes nothing; growing within the capacity zero-fills only the new part.
    v.resize(len, 0);
    Ok(v)
}

/// Hands a decoded image's buffer back for [`overwritten_bytes`] to reuse on this thread.
pub(super) fn recycle(buffer: Vec<u8>) {
    if buffer.capacity() > KEEP_BYTES {
        return;
    }
    SPARE.with(|s| {
        let mut spare = s.borrow_mut();
        if buffer.capacity() > spare.capacity() {
            *spare = buffer;
        }
    });
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
    fn a_recycled_buffer_is_reused_and_oversized_ones_are_not_kept() {
        recycle(vec![7u8; 1000]);
        let v = overwritten_bytes(600).unwrap();
        assert_eq!(
            (v.len(), v.capacity()),
            (600, 1000),
            "the spare buffer is reused"
        );
        // Larger than any spare: a new, zeroed buffer.
        let v = overwritten_bytes(2000).unwrap();
        assert_eq!(v, vec![0u8; 2000]);
        recycle(vec![1u8; KEEP_BYTES + 1]);
        assert!(overwritten_bytes(KEEP_BYTES + 1)
            .unwrap()
            .iter()
            .all(|&b| b == 0));
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
