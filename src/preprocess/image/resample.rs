//! Pillow's resamplers, bit-exact: the BICUBIC convolution resampler (`libImaging/Resample.c`)
//! and the affine nearest-neighbour scaler that `Image.resize` uses for `P` and `1` images
//! (`ImagingScaleAffine` in `libImaging/Geometry.c`).
//!
//! Only an output window is computed: Pillow's horizontal pass produces every output column from
//! its own coefficients and the vertical pass every output row from its own, so resampling just
//! the columns and rows of the centre crop gives exactly the pixels of the full resize.

use super::convolve::{transpose, weighted_rows, PRECISION_BITS};
use super::mode::{premultiply, unpremultiply, Mode, PilImage};

/// Keys cubic convolution kernel with `a = -0.5` (Pillow's `bicubic_filter`).
#[inline]
fn bicubic_filter(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Pillow's `BICUBIC` support radius.
const BICUBIC_SUPPORT: f64 = 2.0;

/// Convolution coefficients for a window of output positions along one axis
/// (Pillow's `precompute_coeffs`, restricted to `first..first+count`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Coeffs {
    /// Coefficients per output position (row stride `ksize`), normalised to sum 1.
    pub k: Vec<f64>,
    /// First source index per output position.
    pub xmin: Vec<usize>,
    /// Number of source pixels per output position.
    pub n: Vec<usize>,
    pub ksize: usize,
}

impl Coeffs {
    /// `in_size` source pixels resampled to `out_size`, for outputs `first..first+count`.
    pub(crate) fn new(in_size: usize, out_size: usize, first: usize, count: usize) -> Coeffs {
        // box = (0, 0, in_size, ...) is a float[4] in Pillow: `(double)(in1 - in0) / outSize`.
        let scale = f64::from(in_size as f32) / out_size as f64;
        let filterscale = if scale < 1.0 { 1.0 } else { scale };
        let support = BICUBIC_SUPPORT * filterscale;
        let ksize = (support.ceil() as usize) * 2 + 1;
        let ss = 1.0 / filterscale;

        let mut k = vec![0.0f64; count * ksize];
        let mut xmin_v = Vec::with_capacity(count);
        let mut n_v = Vec::with_capacity(count);
        for (i, kk) in k.chunks_exact_mut(ksize).enumerate() {
            let xx = first + i;
            let center = (xx as f64 + 0.5) * scale;
            // C `(int)` truncates toward zero.
            let xmin = ((center - support + 0.5) as i64).max(0);
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64);
            let n = (xmax - xmin).clamp(0, ksize as i64) as usize;
            let mut ww = 0.0;
            for (x, kv) in kk.iter_mut().take(n).enumerate() {
                let w = bicubic_filter(((x as i64 + xmin) as f64 - center + 0.5) * ss);
                *kv = w;
                ww += w;
            }
            if ww != 0.0 {
                for kv in kk.iter_mut().take(n) {
                    *kv /= ww;
                }
            }
            xmin_v.push(xmin as usize);
            n_v.push(n);
        }
        Coeffs {
            k,
            xmin: xmin_v,
            n: n_v,
            ksize,
        }
    }

    /// Pillow's `normalize_coeffs_8bpc`: 22-bit fixed point, rounded away from zero.
    pub(crate) fn fixed_point(&self) -> Vec<i32> {
        let one = f64::from(1u32 << PRECISION_BITS);
        self.k
            .iter()
            .map(|&v| {
                if v < 0.0 {
                    (-0.5 + v * one) as i32
                } else {
                    (0.5 + v * one) as i32
                }
            })
            .collect()
    }

    /// Source range used by the window: `(first, end)`.
    fn source_span(&self) -> (usize, usize) {
        let first = self.xmin.first().copied().unwrap_or(0);
        let end = self
            .xmin
            .iter()
            .zip(&self.n)
            .map(|(&x, &n)| x + n)
            .max()
            .unwrap_or(first);
        (first, end)
    }
}

/// Resize `image` to `new_w×new_h` the way Pillow's `Image.resize(..., BICUBIC)` does for its
/// mode, and return only the `s×s` window at (`left`, `top`), in the same mode.
pub(crate) fn resize_window(
    image: &PilImage,
    new_w: usize,
    new_h: usize,
    left: usize,
    top: usize,
    s: usize,
) -> PilImage {
    match image.mode {
        Mode::One | Mode::P | Mode::PRgb => nearest_window(image, new_w, new_h, left, top, s),
        Mode::I16 => {
            let mut out = image.blank_like(s, s);
            out.data16 = bicubic16_window::<u16>(image, new_w, new_h, left, top, s);
            out
        }
        Mode::I => {
            let mut out = image.blank_like(s, s);
            out.data16 = bicubic16_window::<i32>(image, new_w, new_h, left, top, s);
            out
        }
        Mode::La | Mode::Rgba => {
            // Resized as La / RGBa, then converted back.
            let ch = image.mode.channels();
            let mut out = image.blank_like(s, s);
            out.data = bicubic8_window(image, new_w, new_h, left, top, s, true);
            unpremultiply(&mut out.data, ch);
            out
        }
        Mode::L | Mode::Rgb | Mode::Cmyk => {
            let mut out = image.blank_like(s, s);
            out.data = bicubic8_window(image, new_w, new_h, left, top, s, false);
            out
        }
    }
}

/// The source columns and rows (`(first, end)` each) that [`resize_window`] reads to produce
/// the centre `s×s` crop of a `w×h` image in a convolution mode (every mode a JPEG decodes to).
pub(crate) fn source_window(w: usize, h: usize, s: usize) -> ((usize, usize), (usize, usize)) {
    let (new_w, new_h) = super::crop::resized_size(w, h, s);
    let left = super::crop::crop_offset(new_w, s);
    let top = super::crop::crop_offset(new_h, s);
    let plan = Plan::new(w, h, new_w, new_h, left, top, s);
    (plan.cols, plan.rows)
}

/// Pillow 13's pass order (`ImagingResampleInner`): the vertical pass runs first when the height
/// shrinks by more than twice as many pixels as the width. Pillow up to 11 always ran the
/// horizontal pass first; the two orders differ by at most one level on a few pixels.
pub(crate) fn horizontal_first(in_w: usize, in_h: usize, out_w: usize, out_h: usize) -> bool {
    let dy = in_h as i64 - out_h as i64;
    let dx = in_w as i64 - out_w as i64;
    !(dy > 0 && dy > dx * 2)
}

/// The source rows one window needs, as a view: `data` holds rows `row0..` of the source, each
/// `stride` samples long.
struct Rows<'a, T> {
    data: &'a [T],
    row0: usize,
    stride: usize,
}

impl<T> Rows<'_, T> {
    #[inline]
    fn row(&self, y: usize) -> &[T] {
        let start = (y - self.row0) * self.stride;
        &self.data[start..start + self.stride]
    }
}

/// The two-pass 8-bit convolution over the window; `premultiplied` premultiplies the source
/// (last channel = alpha) first, as Pillow's `RGBA → RGBa` / `LA → La` conversion does.
fn bicubic8_window(
    image: &PilImage,
    new_w: usize,
    new_h: usize,
    left: usize,
    top: usize,
    s: usize,
    premultiplied: bool,
) -> Vec<u8> {
    match image.mode.channels() {
        1 => bicubic8::<1>(image, new_w, new_h, left, top, s, premultiplied),
        2 => bicubic8::<2>(image, new_w, new_h, left, top, s, premultiplied),
        3 => bicubic8::<3>(image, new_w, new_h, left, top, s, premultiplied),
        _ => bicubic8::<4>(image, new_w, new_h, left, top, s, premultiplied),
    }
}

/// Coefficients and source spans of a window along both axes; `None` for an axis whose size does
/// not change (Pillow skips that pass).
struct Plan {
    horiz: Option<Coeffs>,
    vert: Option<Coeffs>,
    /// Source columns / rows the window reads.
    cols: (usize, usize),
    rows: (usize, usize),
    horizontal_first: bool,
}

impl Plan {
    fn new(
        w: usize,
        h: usize,
        new_w: usize,
        new_h: usize,
        left: usize,
        top: usize,
        s: usize,
    ) -> Plan {
        let horiz = (new_w != w).then(|| Coeffs::new(w, new_w, left, s));
        let vert = (new_h != h).then(|| Coeffs::new(h, new_h, top, s));
        let cols = horiz.as_ref().map_or((left, left + s), Coeffs::source_span);
        let rows = vert.as_ref().map_or((top, top + s), Coeffs::source_span);
        Plan {
            horiz,
            vert,
            cols,
            rows,
            horizontal_first: horizontal_first(w, h, new_w, new_h),
        }
    }
}

fn bicubic8<const C: usize>(
    image: &PilImage,
    new_w: usize,
    new_h: usize,
    left: usize,
    top: usize,
    s: usize,
    premultiplied: bool,
) -> Vec<u8> {
    let w = image.width;
    let plan = Plan::new(w, image.height, new_w, new_h, left, top, s);
    let (r0, r1) = plan.rows;
    let (c0, c1) = plan.cols;
    let stride = w * C;
    let premul;
    let src = if premultiplied {
        let mut copy = image.data[r0 * stride..r1 * stride].to_vec();
        premultiply(&mut copy, C);
        premul = copy;
        &premul[..]
    } else {
        &image.data[r0 * stride..r1 * stride]
    };
    let hk = plan.horiz.as_ref().map(|co| (co, co.fixed_point()));
    let vk = plan.vert.as_ref().map(|co| (co, co.fixed_point()));
    let row_len = s * C;

    if plan.horizontal_first {
        // Horizontal pass over the rows the vertical pass needs, then the vertical pass.
        let mid = match &hk {
            Some((co, k)) => horizontal::<C>(src, stride, r1 - r0, 0, co, k, s),
            None => copy_columns(src, stride, r1 - r0, left * C, row_len),
        };
        match &vk {
            Some((co, k)) => vertical(&mid, row_len, r0, co, k, row_len),
            None => mid,
        }
    } else {
        // Vertical pass over the columns the horizontal pass needs, then the horizontal pass.
        let width = (c1 - c0) * C;
        let cols = &src[c0 * C..];
        let mid = match &vk {
            Some((co, k)) => vertical(cols, stride, r0, co, k, width),
            None => copy_columns(cols, stride, s, 0, width),
        };
        match &hk {
            Some((co, k)) => horizontal::<C>(&mid, width, s, c0, co, k, s),
            None => copy_columns(&mid, width, s, (left - c0) * C, row_len),
        }
    }
}

/// `rows` rows of `len` samples from `src` (rows `stride` apart), starting `offset` samples in.
fn copy_columns(src: &[u8], stride: usize, rows: usize, offset: usize, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; rows * len];
    for (y, row) in out.chunks_exact_mut(len.max(1)).enumerate() {
        row.copy_from_slice(&src[y * stride + offset..y * stride + offset + len]);
    }
    out
}

/// Rows transposed together by the horizontal pass: enough samples per transposed row for the
/// vector kernel, few enough for the strip to stay in cache.
const STRIP_ROWS: usize = 32;

/// The horizontal 8-bit pass over `rows` rows of `src` (rows `stride` samples apart; sample 0
/// is source column `x0`), producing the window's `s` columns: `rows × s·C` samples.
///
/// Strips of rows are transposed so that each output column is a weighted sum of whole
/// (transposed) source columns, then transposed back.
fn horizontal<const C: usize>(
    src: &[u8],
    stride: usize,
    rows: usize,
    x0: usize,
    co: &Coeffs,
    k: &[i32],
    s: usize,
) -> Vec<u8> {
    let (c0, c1) = co.source_span();
    let cols = c1 - c0;
    let mut out = vec![0u8; rows * s * C];
    let mut columns = vec![0u8; cols * STRIP_ROWS * C];
    let mut out_columns = vec![0u8; s * STRIP_ROWS * C];
    for y0 in (0..rows).step_by(STRIP_ROWS) {
        let h = STRIP_ROWS.min(rows - y0);
        let len = h * C;
        let strip = &src[y0 * stride + (c0 - x0) * C..];
        transpose::<C>(strip, stride, h, cols, &mut columns);
        for (xx, column) in out_columns.chunks_exact_mut(len).take(s).enumerate() {
            let taps = &k[xx * co.ksize..xx * co.ksize + co.n[xx]];
            weighted_rows(&columns, len, co.xmin[xx] - c0, taps, column);
        }
        transpose::<C>(&out_columns, len, s, h, &mut out[y0 * s * C..]);
    }
    out
}

/// The vertical 8-bit pass: output row `i` is the weighted sum of source rows
/// `co.xmin[i]..+co.n[i]`, each `width` samples of `src` (rows `stride` apart, the first being
/// source row `y0`).
fn vertical(src: &[u8], stride: usize, y0: usize, co: &Coeffs, k: &[i32], width: usize) -> Vec<u8> {
    let mut out = vec![0u8; co.n.len() * width];
    for (i, out_row) in out.chunks_exact_mut(width.max(1)).enumerate() {
        let taps = &k[i * co.ksize..i * co.ksize + co.n[i]];
        weighted_rows(src, stride, co.xmin[i] - y0, taps, out_row);
    }
    out
}

/// Pillow 13's 16-bit store: `CLIP16(ROUND_UP(ss))`.
#[inline]
fn store16(ss: f64) -> u16 {
    round_up(ss).clamp(0, 65535) as u16
}

/// Pillow's `ROUND_UP`: round half away from zero, then truncate to `int`.
#[inline]
fn round_up(ss: f64) -> i32 {
    (if ss >= 0.0 { ss + 0.5 } else { ss - 0.5 }) as i32
}

/// A sample of the wide resamplers: `I;16` stores every pass clamped to 16 bits, `I` keeps
/// 32-bit integers (negative and above 65535 included) between the two passes.
trait WideSample: Copy + Default {
    fn store(ss: f64) -> Self;
    fn value(self) -> f64;
}

impl WideSample for u16 {
    fn store(ss: f64) -> Self {
        store16(ss)
    }
    fn value(self) -> f64 {
        f64::from(self)
    }
}

impl WideSample for i32 {
    fn store(ss: f64) -> Self {
        round_up(ss)
    }
    fn value(self) -> f64 {
        f64::from(self)
    }
}

/// One horizontal pass over a row: double coefficients and sums.
fn wide_horizontal<S: WideSample, T: WideSample>(row: &[S], out: &mut [T], co: &Coeffs, x0: usize) {
    for (xx, o) in out.iter_mut().enumerate() {
        let (xmin, n) = (co.xmin[xx] - x0, co.n[xx]);
        let k = &co.k[xx * co.ksize..xx * co.ksize + n];
        let mut ss = 0.0f64;
        for (&kv, &v) in k.iter().zip(&row[xmin..xmin + n]) {
            ss += v.value() * kv;
        }
        *o = T::store(ss);
    }
}

/// One vertical pass; same summation order as Pillow: per pixel, source rows in order, from 0.0.
fn wide_vertical<S: WideSample, T: WideSample>(
    src: &Rows<S>,
    co: &Coeffs,
    x0: usize,
    width: usize,
) -> Vec<T> {
    let mut out = vec![T::default(); co.n.len() * width];
    let mut acc = vec![0f64; width];
    for (i, out_row) in out.chunks_exact_mut(width).enumerate() {
        acc.fill(0.0);
        let k = &co.k[i * co.ksize..i * co.ksize + co.n[i]];
        for (j, &kv) in k.iter().enumerate() {
            let row = &src.row(co.xmin[i] + j)[x0..x0 + width];
            for (a, &v) in acc.iter_mut().zip(row) {
                *a += v.value() * kv;
            }
        }
        for (o, &a) in out_row.iter_mut().zip(&acc) {
            *o = T::store(a);
        }
    }
    out
}

/// The two-pass wide resampler (`I;16` with `T = u16`, `I` with `T = i32`): double coefficients
/// and sums, a `T` intermediate. The result is clamped to 0..=65535, which leaves what
/// `convert('RGB')` (clip to 0..=255) makes of it unchanged.
fn bicubic16_window<T: WideSample + Into<f64>>(
    image: &PilImage,
    new_w: usize,
    new_h: usize,
    left: usize,
    top: usize,
    s: usize,
) -> Vec<u16> {
    let w = image.width;
    let plan = Plan::new(w, image.height, new_w, new_h, left, top, s);
    let (r0, r1) = plan.rows;
    let src = Rows {
        data: &image.data16[r0 * w..r1 * w],
        row0: r0,
        stride: w,
    };
    let widen = |v: &[u16]| -> Vec<T> { v.iter().map(|&v| T::store(f64::from(v))).collect() };
    let out: Vec<T> = if plan.horizontal_first {
        let mut temp = vec![T::default(); (r1 - r0) * s];
        for (y, out_row) in (r0..r1).zip(temp.chunks_exact_mut(s)) {
            let row = src.row(y);
            match &plan.horiz {
                Some(co) => wide_horizontal(row, out_row, co, 0),
                None => out_row.copy_from_slice(&widen(&row[left..left + s])),
            }
        }
        let temp = Rows {
            data: &temp[..],
            row0: r0,
            stride: s,
        };
        match &plan.vert {
            Some(co) => wide_vertical(&temp, co, 0, s),
            None => temp.data.to_vec(),
        }
    } else {
        let (c0, c1) = plan.cols;
        let vert_out: Vec<T> = match &plan.vert {
            Some(co) => wide_vertical(&src, co, c0, c1 - c0),
            None => (top..top + s)
                .flat_map(|y| widen(&src.row(y)[c0..c1]))
                .collect(),
        };
        let mut out = vec![T::default(); s * s];
        for (row, out_row) in vert_out.chunks_exact(c1 - c0).zip(out.chunks_exact_mut(s)) {
            match &plan.horiz {
                Some(co) => wide_horizontal(row, out_row, co, c0),
                None => out_row.copy_from_slice(&row[left - c0..left - c0 + s]),
            }
        }
        out
    };
    out.into_iter().map(|v| store16(v.into())).collect()
}

/// `ImagingScaleAffine`'s source index for each output position in `first..first+count`:
/// `xo = a2 + a0*0.5`, accumulated with `xo += a0` from position 0; `None` outside the source.
fn nearest_map(in_size: usize, out_size: usize, first: usize, count: usize) -> Vec<Option<usize>> {
    let a0 = f64::from(in_size as f32) / out_size as f64;
    let mut xo = 0.0 + a0 * 0.5;
    let mut map = Vec::with_capacity(count);
    for x in 0..first + count {
        if x >= first {
            // COORD(v): v < 0 ? -1 : (int)v
            let valid = xo >= 0.0 && (xo as usize) < in_size;
            map.push(valid.then_some(xo as usize));
        }
        xo += a0;
    }
    map
}

/// Nearest-neighbour resize of a `1`/`P` image (any sample layout), window only. Pixels that
/// map outside the source stay zero, as with Pillow's `fill`.
fn nearest_window(
    image: &PilImage,
    new_w: usize,
    new_h: usize,
    left: usize,
    top: usize,
    s: usize,
) -> PilImage {
    let ch = image.mode.channels();
    let xmap = nearest_map(image.width, new_w, left, s);
    let ymap = nearest_map(image.height, new_h, top, s);
    let mut out = image.blank_like(s, s);
    for (out_row, yi) in out.data.chunks_exact_mut(s * ch).zip(&ymap) {
        let Some(yi) = *yi else { continue };
        let src = &image.data[yi * image.width * ch..(yi + 1) * image.width * ch];
        for (px, xi) in out_row.chunks_exact_mut(ch).zip(&xmap) {
            if let Some(xi) = *xi {
                px.copy_from_slice(&src[xi * ch..(xi + 1) * ch]);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference: resize the whole image, then crop, to check that the window path is the same.
    fn full_then_crop(
        image: &PilImage,
        new_w: usize,
        new_h: usize,
        left: usize,
        top: usize,
        s: usize,
    ) -> PilImage {
        let mut out = image.blank_like(s, s);
        let ch = image.mode.channels();
        // Compute each output pixel through a 1×1 window at its position.
        for y in 0..s {
            for x in 0..s {
                let px = resize_window_rect(image, new_w, new_h, left + x, top + y);
                if matches!(image.mode, Mode::I16 | Mode::I) {
                    out.data16[y * s + x] = px.data16[0];
                } else {
                    out.data[(y * s + x) * ch..(y * s + x + 1) * ch].copy_from_slice(&px.data);
                }
            }
        }
        out
    }

    fn resize_window_rect(
        image: &PilImage,
        new_w: usize,
        new_h: usize,
        x: usize,
        y: usize,
    ) -> PilImage {
        resize_window(image, new_w, new_h, x, y, 1)
    }

    fn test_image(mode: Mode, w: usize, h: usize) -> PilImage {
        let ch = mode.channels();
        let data: Vec<u8> = (0..w * h * ch)
            .map(|i| ((i * 37 + (i / 7) * 11) % 256) as u8)
            .collect();
        match mode {
            Mode::I16 | Mode::I => PilImage::new_wide(
                w,
                h,
                mode,
                (0..w * h).map(|i| (i * 997 % 65536) as u16).collect(),
            ),
            Mode::P => PilImage::new_p(
                w,
                h,
                data,
                &(0..=255u8)
                    .flat_map(|v| [v, 255 - v, v / 2])
                    .collect::<Vec<_>>(),
            ),
            _ => PilImage::new_u8(w, h, mode, data),
        }
    }

    #[test]
    fn bicubic_kernel_values() {
        assert_eq!(bicubic_filter(0.0), 1.0);
        assert_eq!(bicubic_filter(1.0), 0.0);
        assert_eq!(bicubic_filter(2.0), 0.0);
        assert_eq!(bicubic_filter(0.5), 0.5625);
        assert_eq!(bicubic_filter(-1.5), -0.0625);
    }

    #[test]
    fn coefficients_for_a_known_upscale() {
        // 4 → 8: output 0 centres at 0.25 in source coordinates; Pillow's rounded bounds keep
        // source pixels 0..2 (distances 0.25 and 1.25) and renormalise the two weights.
        let co = Coeffs::new(4, 8, 0, 8);
        assert_eq!(co.ksize, 5);
        assert_eq!((co.xmin[0], co.n[0]), (0, 2));
        let (w0, w1) = (0.8671875, -0.0703125);
        assert_eq!(&co.k[..2], &[w0 / (w0 + w1), w1 / (w0 + w1)]);
        let fixed = co.fixed_point();
        assert_eq!(&fixed[..2], &[4564390, -370086]);
        // Output 3 (centre 1.75) has four taps whose raw weights already sum to 1.
        assert_eq!((co.xmin[3], co.n[3]), (0, 4));
        assert_eq!(
            &co.k[15..19],
            &[-0.0703125, 0.8671875, 0.2265625, -0.0234375]
        );
        assert_eq!(&fixed[15..19], &[-294912, 3637248, 950272, -98304]);
        // A 2× downscale doubles the support: 9 coefficient slots.
        let down = Coeffs::new(100, 50, 0, 50);
        assert_eq!(down.ksize, 9);
        assert_eq!((down.xmin[10], down.n[10]), (17, 8));
        // Windowed coefficients are the same rows as the full table.
        let part = Coeffs::new(100, 50, 10, 5);
        assert_eq!(&part.k[..], &down.k[10 * 9..15 * 9]);
    }

    #[test]
    fn fixed_point_sums_stay_in_range() {
        // The i32 accumulator 2^21 + sum(255*|k|) must not overflow for any scale.
        for (inp, out) in [
            (1, 224),
            (3, 224),
            (224, 223),
            (1000, 224),
            (5000, 224),
            (100_000, 224),
        ] {
            let co = Coeffs::new(inp, out, 0, out);
            for i in 0..out {
                let k = &co.fixed_point()[i * co.ksize..i * co.ksize + co.n[i]];
                let abs: i64 = k.iter().map(|&v| i64::from(v).abs()).sum();
                assert!((1 << 21) + abs * 255 < i64::from(i32::MAX), "{inp}->{out}");
            }
        }
    }

    #[test]
    fn window_equals_full_resize_then_crop() {
        for mode in [
            Mode::L,
            Mode::La,
            Mode::Rgb,
            Mode::Rgba,
            Mode::Cmyk,
            Mode::I16,
            Mode::I,
            Mode::P,
            Mode::One,
        ] {
            for (w, h, nw, nh) in [
                (13, 9, 11, 7),
                (5, 6, 12, 14),
                (20, 7, 9, 16),
                (8, 8, 8, 12),
                (13, 40, 9, 20),
                (6, 30, 6, 11),
                (30, 6, 11, 6),
            ] {
                let img = test_image(mode, w, h);
                let s = nw.min(nh);
                let left = (nw - s) / 2;
                let top = (nh - s) / 2;
                let win = resize_window(&img, nw, nh, left, top, s);
                let reference = full_then_crop(&img, nw, nh, left, top, s);
                assert_eq!(win, reference, "{mode:?} {w}x{h} -> {nw}x{nh}");
            }
        }
    }

    #[test]
    fn identity_and_constant_images() {
        // A constant image stays constant under any resize (coefficients sum to ~1).
        let img = PilImage::new_u8(7, 5, Mode::Rgb, vec![200; 7 * 5 * 3]);
        let out = resize_window(&img, 30, 21, 4, 0, 21);
        assert!(out.data.iter().all(|&v| v == 200));
        // Fully transparent RGBA turns black; opaque keeps its colour.
        let mut rgba = vec![0u8; 6 * 4 * 4];
        for (i, px) in rgba.chunks_exact_mut(4).enumerate() {
            px.copy_from_slice(&[90, 180, 250, if i % 2 == 0 { 0 } else { 255 }]);
        }
        let img = PilImage::new_u8(6, 4, Mode::Rgba, rgba);
        let out = resize_window(&img, 3, 2, 0, 0, 2);
        assert!(out.data.chunks_exact(4).all(|p| p[3] > 0 && p[3] < 255));
        let all_clear = PilImage::new_u8(6, 4, Mode::Rgba, [90, 180, 250, 0].repeat(24));
        let out = resize_window(&all_clear, 12, 8, 2, 0, 8);
        assert!(out.data.iter().all(|&v| v == 0));
    }

    #[test]
    fn nearest_matches_pillow_affine() {
        // A 5×1 `P` image with pixels 0..5 resized to 8×1 gives 0 0 1 2 2 3 4 4 in Pillow 13
        // (xo = 0.3125 + k*0.625).
        let img = PilImage::new_p(5, 1, vec![0, 1, 2, 3, 4], &[]);
        let out = resize_window(&img, 8, 1, 3, 0, 1);
        assert_eq!(out.data, vec![2]);
        let map: Vec<usize> = nearest_map(5, 8, 0, 8).into_iter().flatten().collect();
        assert_eq!(map, vec![0, 0, 1, 2, 2, 3, 4, 4]);
        // Downscale 7 → 3: xo = 7/6, 7/2, 35/6.
        let map: Vec<usize> = nearest_map(7, 3, 0, 3).into_iter().flatten().collect();
        assert_eq!(map, vec![1, 3, 5]);
    }

    #[test]
    fn store16_rounds_and_clamps() {
        assert_eq!(store16(-3.0), 0);
        assert_eq!(store16(1234.4), 1234);
        assert_eq!(store16(1234.5), 1235);
        assert_eq!(store16(65535.2), 65535);
        assert_eq!(store16(65600.0), 65535);
    }

    #[test]
    fn pass_order_follows_pillow_13() {
        // Height shrinking by more than twice the width's shrink: vertical pass first.
        assert!(!horizontal_first(49, 364, 32, 237));
        assert!(horizontal_first(364, 49, 237, 32));
        assert!(horizontal_first(300, 200, 336, 224));
        // Upscaling never goes vertical-first.
        assert!(horizontal_first(10, 40, 224, 896));
        // Exactly twice is still horizontal first.
        assert!(horizontal_first(100, 200, 90, 180));
    }
}
