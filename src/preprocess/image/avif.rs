//! AVIF decoding as Pillow 13's AVIF plugin does it.
//!
//! Pillow (`_avif.c`) decodes with libavif + dav1d and converts with `avifImageYUVToRGB` into
//! 8-bit `RGB`, or `RGBA` when the file has an alpha item (`L` for monochrome 4:0:0 without
//! alpha), with libavif's default settings (automatic chroma upsampling, alpha not
//! premultiplied). Pillow's wheels build libavif with libyuv, so the conversion is libyuv's
//! fixed-point one (checked bit for bit against Pillow 13.0 / libavif 1.4.2 / libyuv 1924 on
//! 4:2:0, 4:2:2, 4:4:4 and 4:0:0, full and limited range, with and without alpha, odd sizes):
//!
//! - AV1 decoding is normative; `rav1d` (the Rust port of dav1d; the `re_rav1d` release, which
//!   fixes a panic on corrupt frames that the C API would turn into an abort) yields dav1d's
//!   samples. The container is parsed by `avif-parse`; the colour description comes from the AV1
//!   sequence header (Pillow's encoder writes the same values into the `colr` box);
//! - the matrix is libyuv's `YuvConstants` for the stream's matrix coefficients and range
//!   (BT.601/470BG/unspecified, BT.709, BT.2020 NCL, chroma-derived NCL by primaries), with
//!   libyuv's 6-bit coefficients;
//! - 4:2:0 and 4:2:2 chroma is upsampled with libyuv's bilinear "Filter" row functions
//!   (`ScaleRowUp2_Linear`/`ScaleRowUp2_Bilinear` with their edge rules);
//! - the alpha plane is copied (expanded from limited range when flagged so).
//!
//! Streams libyuv cannot convert (high bit depth, identity/YCgCo/other matrices) are reported as
//! [`ImageError::Unsupported`]; malformed containers or AV1 data as [`ImageError::Decode`].
//!
//! rav1d is called through its dav1d C API, the only unsafe code in the crate: every unsafe
//! block states why it is sound.

#![allow(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

use std::ffi::c_int;
use std::io::Cursor;
use std::mem::MaybeUninit;
use std::ptr::NonNull;

use rav1d::include::dav1d::data::Dav1dData;
use rav1d::include::dav1d::dav1d::{Dav1dContext, Dav1dSettings};
use rav1d::include::dav1d::headers::{
    DAV1D_PIXEL_LAYOUT_I400, DAV1D_PIXEL_LAYOUT_I420, DAV1D_PIXEL_LAYOUT_I422,
    DAV1D_PIXEL_LAYOUT_I444,
};
use rav1d::include::dav1d::picture::Dav1dPicture;
use rav1d::src::lib::{
    dav1d_close, dav1d_data_create, dav1d_data_unref, dav1d_default_settings, dav1d_get_picture,
    dav1d_open, dav1d_picture_unref, dav1d_send_data,
};

use super::buffer::{check_pixels, zeroed};
use super::mode::{Mode, PilImage};
use super::ImageError;

fn err(msg: impl std::fmt::Display) -> ImageError {
    ImageError::Decode(format!("AVIF: {msg}"))
}

/// Chroma layout of a decoded AV1 frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    I400,
    I420,
    I422,
    I444,
}

/// One decoded 8-bit AV1 frame, planes copied out of the decoder.
struct Frame {
    width: usize,
    height: usize,
    layout: Layout,
    /// Y, U, V (U and V empty for 4:0:0), each tightly packed.
    planes: [Vec<u8>; 3],
    /// Chroma plane width (0 for 4:0:0).
    chroma_width: usize,
    /// CICP colour primaries, matrix coefficients, and full range.
    primaries: u32,
    matrix: u32,
    full_range: bool,
}

/// Decode frame 0 of an AVIF into Pillow's mode (`RGB`, or `RGBA` with an alpha item).
pub(crate) fn decode(bytes: &[u8], max_pixels: u64) -> Result<PilImage, ImageError> {
    let avif = avif_parse::read_avif(&mut Cursor::new(bytes)).map_err(|e| err(format!("{e:?}")))?;
    let meta = avif
        .primary_item_metadata()
        .map_err(|e| err(format!("{e:?}")))?;
    if meta.bit_depth != 8 {
        return Err(ImageError::Unsupported(format!(
            "AVIF with {}-bit samples cannot be decoded by this build",
            meta.bit_depth
        )));
    }
    check_pixels(
        meta.max_frame_width.get() as usize,
        meta.max_frame_height.get() as usize,
        max_pixels,
    )?;
    if let Some(alpha) = avif
        .alpha_item_metadata()
        .map_err(|e| err(format!("{e:?}")))?
    {
        if alpha.bit_depth != 8 {
            return Err(ImageError::Unsupported(format!(
                "AVIF with a {}-bit alpha plane cannot be decoded by this build",
                alpha.bit_depth
            )));
        }
    }
    let colour = decode_av1(&avif.primary_item, max_pixels)?;
    check_pixels(colour.width, colour.height, max_pixels)?;
    let alpha = match &avif.alpha_item {
        Some(item) => {
            let a = decode_av1(item, max_pixels)?;
            if (a.width, a.height) != (colour.width, colour.height) {
                return Err(err(format!(
                    "alpha plane is {}x{} but the image is {}x{}",
                    a.width, a.height, colour.width, colour.height
                )));
            }
            Some(a)
        }
        None => None,
    };
    if colour.layout == Layout::I400 && alpha.is_none() {
        // Pillow opens monochrome AVIFs without alpha as `L`: the luma plane, expanded to full
        // range when it is limited range (libavif's grey conversion).
        let [y, _, _] = colour.planes;
        let data = if colour.full_range {
            y
        } else {
            y.into_iter().map(limited_to_full_y).collect()
        };
        return Ok(PilImage::new_u8(colour.width, colour.height, Mode::L, data));
    }
    let constants = yuv_constants(&colour)?;
    let channels = if alpha.is_some() { 4 } else { 3 };
    let mut out = zeroed::<u8>(colour.width * colour.height * channels)?;
    yuv_to_rgb(&colour, &constants, &mut out, channels);
    if let Some(a) = alpha {
        let y = &a.planes[0];
        for (px, &v) in out.chunks_exact_mut(4).zip(y.iter()) {
            px[3] = if a.full_range {
                v
            } else {
                limited_to_full_y(v)
            };
        }
    }
    let mode = if channels == 4 { Mode::Rgba } else { Mode::Rgb };
    Ok(PilImage::new_u8(colour.width, colour.height, mode, out))
}

/// libavif's `avifLimitedToFullY` for 8 bits: `((v - 16) * 255 + 219/2) / 219`, clamped.
fn limited_to_full_y(v: u8) -> u8 {
    let v = (i32::from(v) - 16) * 255;
    let v = (v + 109) / 219;
    v.clamp(0, 255) as u8
}

/// Owns a dav1d context; closes it on drop.
struct Context(Option<Dav1dContext>);

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: the context came from `dav1d_open` and is closed only here.
        unsafe { dav1d_close(Some(NonNull::from(&mut self.0))) };
    }
}

/// Owns a dav1d picture; unrefs it on drop.
struct Picture(Dav1dPicture);

impl Drop for Picture {
    fn drop(&mut self) {
        // SAFETY: the picture is default-initialised or filled by `dav1d_get_picture`.
        unsafe { dav1d_picture_unref(Some(NonNull::from(&mut self.0))) };
    }
}

/// Owns dav1d input data; unrefs it on drop.
struct Data(Dav1dData);

impl Drop for Data {
    fn drop(&mut self) {
        // SAFETY: the data is default-initialised or from `dav1d_data_create`.
        unsafe { dav1d_data_unref(Some(NonNull::from(&mut self.0))) };
    }
}

const EAGAIN: c_int = -11;

/// Decode one AV1 still (an AVIF item's OBUs) with rav1d and copy its 8-bit planes out.
fn decode_av1(obus: &[u8], max_pixels: u64) -> Result<Frame, ImageError> {
    if obus.is_empty() {
        return Err(err("empty AV1 item"));
    }
    let mut settings = MaybeUninit::<Dav1dSettings>::uninit();
    // SAFETY: `settings` is valid to write to; `dav1d_default_settings` initialises it fully.
    let mut settings = unsafe {
        dav1d_default_settings(NonNull::new_unchecked(settings.as_mut_ptr()));
        settings.assume_init()
    };
    settings.n_threads = 1;
    settings.max_frame_delay = 1;
    settings.frame_size_limit = u32::try_from(max_pixels).unwrap_or(u32::MAX);
    let mut ctx = Context(None);
    // SAFETY: both pointers are valid for the duration of the call.
    let r = unsafe {
        dav1d_open(
            Some(NonNull::from(&mut ctx.0)),
            Some(NonNull::from(&mut settings)),
        )
    };
    if r.0 != 0 || ctx.0.is_none() {
        return Err(err(format!("cannot create the AV1 decoder ({})", r.0)));
    }
    let mut data = Data(Dav1dData::default());
    // SAFETY: `data.0` is valid to write to; on success it owns a buffer of `obus.len()` bytes.
    let buf = unsafe { dav1d_data_create(Some(NonNull::from(&mut data.0)), obus.len()) };
    if buf.is_null() {
        return Err(err("cannot allocate the AV1 input buffer"));
    }
    // SAFETY: `buf` points to `obus.len()` writable bytes owned by `data`.
    unsafe { std::ptr::copy_nonoverlapping(obus.as_ptr(), buf, obus.len()) };

    let mut pic = Picture(Dav1dPicture::default());
    let mut got = false;
    // Feed everything, then drain: a still image yields one picture.
    for _ in 0..64 {
        if data.0.sz > 0 {
            // SAFETY: `ctx.0` is an open context and `data.0` valid input.
            let r = unsafe { dav1d_send_data(ctx.0, Some(NonNull::from(&mut data.0))) };
            if r.0 != 0 && r.0 != EAGAIN {
                return Err(err(format!("AV1 data rejected ({})", r.0)));
            }
        }
        // SAFETY: `ctx.0` is an open context and `pic.0` valid to write to.
        let r = unsafe { dav1d_get_picture(ctx.0, Some(NonNull::from(&mut pic.0))) };
        if r.0 == 0 {
            got = true;
            break;
        }
        if r.0 != EAGAIN {
            return Err(err(format!("AV1 decoding failed ({})", r.0)));
        }
        if data.0.sz == 0 {
            // Everything was sent; one more round lets the decoder drain.
            // SAFETY: `ctx.0` is an open context and `pic.0` valid to write to.
            let r = unsafe { dav1d_get_picture(ctx.0, Some(NonNull::from(&mut pic.0))) };
            if r.0 == 0 {
                got = true;
            }
            break;
        }
    }
    if !got {
        return Err(err("the AV1 item holds no complete frame"));
    }
    copy_frame(&pic.0)
}

fn copy_frame(pic: &Dav1dPicture) -> Result<Frame, ImageError> {
    let p = &pic.p;
    if p.bpc != 8 {
        return Err(ImageError::Unsupported(format!(
            "AVIF with {}-bit samples cannot be decoded by this build",
            p.bpc
        )));
    }
    let (width, height) = (
        usize::try_from(p.w).map_err(|_| err("bad frame width"))?,
        usize::try_from(p.h).map_err(|_| err("bad frame height"))?,
    );
    if width == 0 || height == 0 {
        return Err(err("empty frame"));
    }
    let layout = match p.layout {
        DAV1D_PIXEL_LAYOUT_I400 => Layout::I400,
        DAV1D_PIXEL_LAYOUT_I420 => Layout::I420,
        DAV1D_PIXEL_LAYOUT_I422 => Layout::I422,
        DAV1D_PIXEL_LAYOUT_I444 => Layout::I444,
        other => return Err(err(format!("unknown pixel layout {other}"))),
    };
    let seq = pic
        .seq_hdr
        .ok_or_else(|| err("frame without a sequence header"))?;
    // SAFETY: the sequence header is kept alive by the picture's reference.
    let seq = unsafe { seq.as_ref() };
    let (primaries, matrix, full_range) = (seq.pri, seq.mtrx, seq.color_range != 0);
    let (cw, ch) = match layout {
        Layout::I400 => (0, 0),
        Layout::I420 => (width.div_ceil(2), height.div_ceil(2)),
        Layout::I422 => (width.div_ceil(2), height),
        Layout::I444 => (width, height),
    };
    let plane = |idx: usize, w: usize, h: usize, stride: isize| -> Result<Vec<u8>, ImageError> {
        if w == 0 {
            return Ok(Vec::new());
        }
        let base = pic.data[idx].ok_or_else(|| err("frame without pixel data"))?;
        let stride = usize::try_from(stride).map_err(|_| err("negative stride"))?;
        if stride < w {
            return Err(err("stride shorter than the plane width"));
        }
        let mut out = zeroed::<u8>(w * h)?;
        for (row, dst) in out.chunks_exact_mut(w).enumerate() {
            // SAFETY: dav1d guarantees `h` rows of `stride` bytes, each at least `w` samples.
            let src = unsafe {
                std::slice::from_raw_parts(base.as_ptr().cast::<u8>().add(row * stride), w)
            };
            dst.copy_from_slice(src);
        }
        Ok(out)
    };
    let y = plane(0, width, height, pic.stride[0])?;
    let u = plane(1, cw, ch, pic.stride[1])?;
    let v = plane(2, cw, ch, pic.stride[1])?;
    Ok(Frame {
        width,
        height,
        layout,
        planes: [y, u, v],
        chroma_width: cw,
        primaries,
        matrix,
        full_range,
    })
}

/// libyuv `YuvConstants`, as the C reference uses them.
#[derive(Clone, Copy, Debug)]
struct Constants {
    ub: i32,
    ug: i32,
    vg: i32,
    vr: i32,
    yg: i32,
    yb: i32,
}

const fn consts(ub: i32, ug: i32, vg: i32, vr: i32, yg: i32, yb: i32) -> Constants {
    Constants {
        ub,
        ug,
        vg,
        vr,
        yg,
        yb,
    }
}

// libyuv row_common.cc (built without LIBYUV_UNLIMITED_DATA: limited-range UB is capped at 128).
const I601: Constants = consts(128, 25, 52, 102, 18997, -1160);
const JPEG: Constants = consts(113, 22, 46, 90, 16320, 32);
const H709: Constants = consts(128, 14, 34, 115, 18997, -1160);
const F709: Constants = consts(119, 12, 30, 101, 16320, 32);
const BT2020: Constants = consts(128, 12, 42, 107, 19003, -1160);
const V2020: Constants = consts(120, 11, 37, 94, 16320, 32);

/// libavif's choice of libyuv constants (`avifImageYUVToRGBLibYUV`).
fn yuv_constants(f: &Frame) -> Result<Constants, ImageError> {
    // CICP matrix coefficients: 1 BT.709, 2 unspecified, 5 BT.470BG, 6 BT.601, 9 BT.2020 NCL,
    // 12 chroma-derived NCL (by colour primaries: 1/2 BT.709, 5/6 BT.601, 9 BT.2020).
    let family = match f.matrix {
        1 => Some(709),
        2 | 5 | 6 => Some(601),
        9 => Some(2020),
        12 => match f.primaries {
            1 | 2 => Some(709),
            5 | 6 => Some(601),
            9 => Some(2020),
            _ => None,
        },
        _ => None,
    };
    let c = match (family, f.full_range) {
        (Some(601), false) => I601,
        (Some(601), true) => JPEG,
        (Some(709), false) => H709,
        (Some(709), true) => F709,
        (Some(2020), false) => BT2020,
        (Some(2020), true) => V2020,
        _ => {
            return Err(ImageError::Unsupported(format!(
                "AVIF with matrix coefficients {} cannot be decoded by this build",
                f.matrix
            )))
        }
    };
    Ok(c)
}

/// libyuv `YuvPixel` (C reference; the SIMD rows are bit-exact with it).
#[inline]
fn yuv_pixel(y: u8, u: u8, v: u8, c: &Constants) -> [u8; 3] {
    let y1 = ((u32::from(y) * 0x0101 * c.yg as u32) >> 16) as i32 + c.yb;
    let ui = i32::from(u) - 128;
    let vi = i32::from(v) - 128;
    let b = y1 + ui * c.ub;
    let g = y1 - (ui * c.ug + vi * c.vg);
    let r = y1 + vi * c.vr;
    let clamp = |x: i32| (x >> 6).clamp(0, 255) as u8;
    [clamp(r), clamp(g), clamp(b)]
}

/// libyuv `ScaleRowUp2_Linear_Any_C`: horizontal 2x upsampling of one chroma row to `dst.len()`.
fn up2_linear(src: &[u8], dst: &mut [u8]) {
    let w = dst.len();
    if w == 0 {
        return;
    }
    let s = |i: usize| u32::from(src[i.min(src.len() - 1)]);
    dst[0] = src[0];
    let work = (w - 1) & !1;
    for x in 0..work / 2 {
        dst[2 * x + 1] = ((s(x) * 3 + s(x + 1) + 2) >> 2) as u8;
        dst[2 * x + 2] = ((s(x) + s(x + 1) * 3 + 2) >> 2) as u8;
    }
    dst[w - 1] = src[(w - 1) / 2];
}

/// libyuv `ScaleRowUp2_Bilinear_Any_C`: two output rows from chroma rows `a` and `b`.
fn up2_bilinear(a: &[u8], b: &[u8], da: &mut [u8], db: &mut [u8]) {
    let w = da.len();
    if w == 0 {
        return;
    }
    let sa = |i: usize| u32::from(a[i.min(a.len() - 1)]);
    let sb = |i: usize| u32::from(b[i.min(b.len() - 1)]);
    da[0] = ((3 * sa(0) + sb(0) + 2) >> 2) as u8;
    db[0] = ((sa(0) + 3 * sb(0) + 2) >> 2) as u8;
    let work = (w - 1) & !1;
    for x in 0..work / 2 {
        let (s0, s1, t0, t1) = (sa(x), sa(x + 1), sb(x), sb(x + 1));
        da[2 * x + 1] = ((s0 * 9 + s1 * 3 + t0 * 3 + t1 + 8) >> 4) as u8;
        da[2 * x + 2] = ((s0 * 3 + s1 * 9 + t0 + t1 * 3 + 8) >> 4) as u8;
        db[2 * x + 1] = ((s0 * 3 + s1 + t0 * 9 + t1 * 3 + 8) >> 4) as u8;
        db[2 * x + 2] = ((s0 + s1 * 3 + t0 * 3 + t1 * 9 + 8) >> 4) as u8;
    }
    let l = (w - 1) / 2;
    da[w - 1] = ((3 * sa(l) + sb(l) + 2) >> 2) as u8;
    db[w - 1] = ((sa(l) + 3 * sb(l) + 2) >> 2) as u8;
}

/// Convert one luma row with full-width chroma rows into `out` (`channels` = 3 or 4).
fn convert_row(y: &[u8], u: &[u8], v: &[u8], c: &Constants, out: &mut [u8], channels: usize) {
    for (((px, &yy), &uu), &vv) in out.chunks_exact_mut(channels).zip(y).zip(u).zip(v) {
        px[..3].copy_from_slice(&yuv_pixel(yy, uu, vv, c));
        if channels == 4 {
            px[3] = 255;
        }
    }
}

/// libavif + libyuv `I4xxTo{RGB24,ARGB}Matrix[Filter]` with the bilinear filter.
fn yuv_to_rgb(f: &Frame, c: &Constants, out: &mut [u8], channels: usize) {
    let (w, h, cw) = (f.width, f.height, f.chroma_width);
    let [yp, up, vp] = &f.planes;
    let row_out = w * channels;
    let yrow = |r: usize| &yp[r * w..(r + 1) * w];
    let grey = vec![128u8; w];
    match f.layout {
        Layout::I400 => {
            for (r, o) in out.chunks_exact_mut(row_out).enumerate() {
                convert_row(yrow(r), &grey, &grey, c, o, channels);
            }
        }
        Layout::I444 => {
            for (r, o) in out.chunks_exact_mut(row_out).enumerate() {
                let cr = r * cw..(r + 1) * cw;
                convert_row(yrow(r), &up[cr.clone()], &vp[cr], c, o, channels);
            }
        }
        Layout::I422 => {
            let (mut tu, mut tv) = (vec![0u8; w], vec![0u8; w]);
            for (r, o) in out.chunks_exact_mut(row_out).enumerate() {
                let cr = r * cw..(r + 1) * cw;
                up2_linear(&up[cr.clone()], &mut tu);
                up2_linear(&vp[cr], &mut tv);
                convert_row(yrow(r), &tu, &tv, c, o, channels);
            }
        }
        Layout::I420 => {
            let crow = |r: usize| r * cw..(r + 1) * cw;
            let (mut u1, mut u2, mut v1, mut v2) =
                (vec![0u8; w], vec![0u8; w], vec![0u8; w], vec![0u8; w]);
            let mut rows = out.chunks_exact_mut(row_out);
            // First row: horizontal-only from chroma row 0.
            up2_linear(&up[crow(0)], &mut u1);
            up2_linear(&vp[crow(0)], &mut v1);
            if let Some(o) = rows.next() {
                convert_row(yrow(0), &u1, &v1, c, o, channels);
            }
            let mut crow_i = 0;
            let mut y = 1;
            while y + 1 < h {
                up2_bilinear(&up[crow(crow_i)], &up[crow(crow_i + 1)], &mut u1, &mut u2);
                up2_bilinear(&vp[crow(crow_i)], &vp[crow(crow_i + 1)], &mut v1, &mut v2);
                if let Some(o) = rows.next() {
                    convert_row(yrow(y), &u1, &v1, c, o, channels);
                }
                if let Some(o) = rows.next() {
                    convert_row(yrow(y + 1), &u2, &v2, c, o, channels);
                }
                crow_i += 1;
                y += 2;
            }
            if y < h {
                // Even height: the last row is horizontal-only from the last chroma row.
                up2_linear(&up[crow(crow_i)], &mut u1);
                up2_linear(&vp[crow(crow_i)], &mut v1);
                if let Some(o) = rows.next() {
                    convert_row(yrow(y), &u1, &v1, c, o, channels);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> Vec<u8> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/images/avif_rgb.avif"
        );
        std::fs::read(path).unwrap_or_default()
    }

    #[test]
    fn decodes_the_fixture_as_rgb() {
        let im = decode(&fixture(), u64::MAX).map_err(|e| e.to_string());
        let im = im.as_ref().map(|im| (im.width, im.height, im.mode));
        assert_eq!(im, Ok((200, 140, Mode::Rgb)));
    }

    #[test]
    fn pixel_limit_is_checked_before_decoding() {
        assert!(matches!(
            decode(&fixture(), 1000),
            Err(ImageError::TooLarge { .. })
        ));
    }

    #[test]
    fn truncated_or_garbage_input_is_a_decode_error() {
        let good = fixture();
        for len in (0..good.len()).step_by(97) {
            match decode(&good[..len], u64::MAX) {
                Err(ImageError::Decode(_)) => {}
                other => panic!("{len}: {:?}", other.map(|im| (im.width, im.height))),
            }
        }
        // A valid `ftyp` followed by garbage.
        let mut bad = good[..32].to_vec();
        bad.extend(std::iter::repeat_n(0x5a, 500));
        assert!(matches!(decode(&bad, u64::MAX), Err(ImageError::Decode(_))));
    }

    #[test]
    fn libyuv_edge_rules() {
        // Odd widths: the last output sample repeats the last chroma sample.
        let mut d = [0u8; 5];
        up2_linear(&[0, 100, 200], &mut d);
        assert_eq!(d, [0, 25, 75, 125, 200]);
        let mut d = [0u8; 4];
        up2_linear(&[0, 100], &mut d);
        assert_eq!(d, [0, 25, 75, 100]);
        assert_eq!(limited_to_full_y(16), 0);
        assert_eq!(limited_to_full_y(235), 255);
        assert_eq!(limited_to_full_y(255), 255);
        assert_eq!(yuv_pixel(128, 128, 128, &JPEG), [128, 128, 128]);
        assert_eq!(yuv_pixel(235, 128, 128, &I601), [255, 255, 255]);
    }
}
