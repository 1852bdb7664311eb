//! The 8-bit fixed-point convolution kernels behind Pillow's bicubic resampler, written so that
//! the compiler vectorises them (no intrinsics). On x86-64 the same code is also compiled for
//! AVX2 and chosen at run time when the CPU has it (twice the vector width of the baseline's
//! SSE2); the arithmetic is the same integer arithmetic, so both give Pillow's bytes.
//!
//! Pillow computes each output sample as `clip8((1 << 21) + Σ sample·coefficient)` with 22-bit
//! integer coefficients. Integer sums do not depend on their order, so any loop order gives
//! Pillow's bytes. Here every pass is the same operation: an output row is the weighted sum of
//! a few whole input rows, one coefficient per input row ([`weighted_rows`]). The vertical pass
//! has that shape already; the horizontal pass gets it by transposing strips of the image, so
//! that source columns become contiguous rows ([`transpose`]).

/// Pillow's `PRECISION_BITS` (32 - 8 - 2).
pub(super) const PRECISION_BITS: u32 = 22;

/// Pillow's `clip8`: `ss >> PRECISION_BITS` clamped to 0..=255.
#[inline]
pub(super) fn clip8(ss: i32) -> u8 {
    (ss >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Bits of a coefficient's low part (see [`split`]).
const LOW_BITS: u32 = 11;

/// `k = kh·2^LOW_BITS + kl` with `0 <= kl < 2^LOW_BITS`; both parts fit in an `i16` for any
/// coefficient of magnitude below 2^26 (Pillow's are below 2^23), so the compiler may multiply
/// them as 16-bit values.
#[inline]
fn split(k: i32) -> (i32, i32) {
    (
        i32::from((k >> LOW_BITS) as i16),
        i32::from((k & ((1 << LOW_BITS) - 1)) as i16),
    )
}

/// Samples accumulated side by side; the accumulators stay in vector registers while the
/// coefficients are walked (16 fill four SSE2 registers, 32 four AVX2 ones).
const LANES: usize = 16;
#[cfg(target_arch = "x86_64")]
const LANES_AVX2: usize = 32;

/// `out[i] = clip8(2^21 + Σ_j k[j] · src[(first + j)·stride + i])` for every `i < out.len()`:
/// input row `first + j` of `src` (rows `stride` samples apart) weighted by `k[j]`.
///
/// Callers guarantee that the rows exist (`(first + k.len() - 1)·stride + out.len() <=
/// src.len()`); the slice indexing checks it once per block of lanes.
#[allow(unsafe_code)]
pub(super) fn weighted_rows(src: &[u8], stride: usize, first: usize, k: &[i32], out: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above), which is all a function compiled
        // with `target_feature(enable = "avx2")` requires; its body is safe code.
        unsafe { weighted_rows_avx2(src, stride, first, k, out) };
        return;
    }
    weighted_rows_lanes::<LANES>(src, stride, first, k, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn weighted_rows_avx2(src: &[u8], stride: usize, first: usize, k: &[i32], out: &mut [u8]) {
    weighted_rows_lanes::<LANES_AVX2>(src, stride, first, k, out);
}

#[inline(always)]
fn weighted_rows_lanes<const L: usize>(
    src: &[u8],
    stride: usize,
    first: usize,
    k: &[i32],
    out: &mut [u8],
) {
    let width = out.len();
    let mut blocks = out.chunks_exact_mut(L);
    let mut x0 = 0;
    for block in &mut blocks {
        // Each coefficient is split into a high and a low part that fit in 16 bits, so that
        // the products are 16-bit multiplies (`pmaddwd`) instead of emulated 32-bit ones;
        // `(hi << LOW_BITS) + lo` is the same integer sum.
        let mut hi = [0i32; L];
        let mut lo = [1i32 << (PRECISION_BITS - 1); L];
        for (j, &kv) in k.iter().enumerate() {
            let (kh, kl) = split(kv);
            let start = (first + j) * stride + x0;
            for ((h, l), &v) in hi.iter_mut().zip(&mut lo).zip(&src[start..start + L]) {
                *h += i32::from(v) * kh;
                *l += i32::from(v) * kl;
            }
        }
        for ((o, &h), &l) in block.iter_mut().zip(&hi).zip(&lo) {
            *o = clip8((h << LOW_BITS).wrapping_add(l));
        }
        x0 += L;
    }
    for (i, o) in blocks.into_remainder().iter_mut().enumerate() {
        let x = x0 + i;
        let mut acc = 1i32 << (PRECISION_BITS - 1);
        for (j, &kv) in k.iter().enumerate() {
            acc += i32::from(src[(first + j) * stride + x]) * kv;
        }
        *o = clip8(acc);
    }
    debug_assert_eq!(x0 + width % L, width);
}

/// Pixels per side of the square blocks the transpose moves at once.
const BLOCK: usize = 8;

/// Transpose a `rows × cols` grid of `C`-byte pixels: `dst` (`cols` rows of `rows` pixels)
/// gets `dst[x][y] = src[y][x]`, where `src` row `y` starts at `y·src_stride` bytes and its
/// pixel `x` at `x·C` bytes after that.
///
/// Whole blocks of `BLOCK × BLOCK` pixels go through two small arrays: `BLOCK` row copies
/// in, a fixed shuffle the compiler unrolls, `BLOCK` row copies out (a quarter faster than
/// moving pixels one by one with their own bounds checks); the ragged edges go pixel by pixel.
pub(super) fn transpose<const C: usize>(
    src: &[u8],
    src_stride: usize,
    rows: usize,
    cols: usize,
    dst: &mut [u8],
) {
    let dst_stride = rows * C;
    let (full_rows, full_cols) = (rows / BLOCK * BLOCK, cols / BLOCK * BLOCK);
    let span = BLOCK * C;
    for y0 in (0..full_rows).step_by(BLOCK) {
        for x0 in (0..full_cols).step_by(BLOCK) {
            let mut block = [[0u8; 4 * BLOCK]; BLOCK];
            for (r, row) in block.iter_mut().enumerate() {
                let at = (y0 + r) * src_stride + x0 * C;
                row[..span].copy_from_slice(&src[at..at + span]);
            }
            let mut turned = [[0u8; 4 * BLOCK]; BLOCK];
            for (x, out) in turned.iter_mut().enumerate() {
                for (r, row) in block.iter().enumerate() {
                    out[r * C..r * C + C].copy_from_slice(&row[x * C..x * C + C]);
                }
            }
            for (x, out) in turned.iter().enumerate() {
                let at = (x0 + x) * dst_stride + y0 * C;
                dst[at..at + span].copy_from_slice(&out[..span]);
            }
        }
    }
    let pixel = |dst: &mut [u8], y: usize, x: usize| {
        let (from, to) = (y * src_stride + x * C, x * dst_stride + y * C);
        dst[to..to + C].copy_from_slice(&src[from..from + C]);
    };
    for y in 0..full_rows {
        for x in full_cols..cols {
            pixel(dst, y, x);
        }
    }
    for y in full_rows..rows {
        for x in 0..cols {
            pixel(dst, y, x);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_rows_matches_the_scalar_sum() {
        let stride = 37;
        let src: Vec<u8> = (0..stride * 6).map(|i| (i * 29 % 256) as u8).collect();
        let k = [-300_000, 2_500_000, 2_300_000, -320_000];
        for width in [0, 5, 16, 33, 37] {
            let mut out = vec![0u8; width];
            weighted_rows(&src, stride, 1, &k, &mut out);
            let mut narrow = vec![0u8; width];
            weighted_rows_lanes::<LANES>(&src, stride, 1, &k, &mut narrow);
            assert_eq!(
                out, narrow,
                "width {width}: dispatched and baseline kernels differ"
            );
            for (x, &o) in out.iter().enumerate() {
                let sum: i32 = k
                    .iter()
                    .enumerate()
                    .map(|(j, &kv)| i32::from(src[(1 + j) * stride + x]) * kv)
                    .sum();
                assert_eq!(o, clip8((1 << 21) + sum), "width {width}, x {x}");
            }
        }
    }

    fn check_transpose<const C: usize>(rows: usize, cols: usize) {
        let stride = cols * C + 4;
        let src: Vec<u8> = (0..rows * stride).map(|i| (i % 251) as u8).collect();
        let mut dst = vec![0u8; rows * cols * C];
        transpose::<C>(&src, stride, rows, cols, &mut dst);
        for y in 0..rows {
            for x in 0..cols {
                let d = x * rows * C + y * C;
                assert_eq!(
                    dst[d..d + C],
                    src[y * stride + x * C..y * stride + x * C + C],
                    "C {C}, {rows}x{cols}, pixel ({y}, {x})"
                );
            }
        }
    }

    #[test]
    fn transpose_moves_whole_pixels() {
        for (rows, cols) in [(19, 35), (32, 16), (8, 8), (7, 3), (1, 1), (0, 5), (40, 0)] {
            check_transpose::<1>(rows, cols);
            check_transpose::<2>(rows, cols);
            check_transpose::<3>(rows, cols);
            check_transpose::<4>(rows, cols);
        }
    }
}
