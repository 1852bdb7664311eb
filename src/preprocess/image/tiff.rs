//! TIFF (first image), in the modes Pillow's `TiffImagePlugin` gives it.
//!
//! | photometric | samples × bits | extra samples | Pillow mode |
//! |---|---|---|---|
//! | min-is-white/black | 1 × 1, 1 × 8 | — | `1`, `L` (min-is-white inverted) |
//! | min-is-black | 1 × 16 | — | `I;16` |
//! | min-is-black | 2 × 8 | unspecified (0) / unassociated (2) | `L` (extra dropped) / `LA` |
//! | RGB | 3 × 8, 3 × 16 | — | `RGB` (16-bit: high bytes) |
//! | RGB | 4 × 8, 4 × 16 | none or unassociated (2) / unspecified (0) | `RGBA` / `RGB` (extra dropped) |
//! | palette | 1 × 1, 2, 4, 8 | — | `P` (colour map entries `v // 256`) |
//! | CMYK | 4 × 8, 4 × 16; 5 × 8 with one unspecified extra | — | `CMYK` (16-bit: high bytes) |
//!
//! Samples come from the `tiff` crate (all its compressions); the mode mapping follows Pillow's
//! `OPEN_INFO` table. Associated (premultiplied) alpha, signed or float samples, `FillOrder` 2,
//! YCbCr and Lab are refused as unsupported.

use std::io::Cursor;

use ::tiff::decoder::{Decoder, DecodingResult, Limits};
use ::tiff::tags::Tag;

use super::buffer::check_pixels;
use super::mode::{Mode, PilImage};
use super::ImageError;

fn tiff_err(e: ::tiff::TiffError) -> ImageError {
    match e {
        ::tiff::TiffError::UnsupportedError(u) => ImageError::Unsupported(format!("TIFF: {u}")),
        other => ImageError::Decode(format!("TIFF: {other}")),
    }
}

fn unsupported(what: impl std::fmt::Display) -> ImageError {
    ImageError::Unsupported(format!("TIFF: {what}"))
}

/// `PhotometricInterpretation` values.
const MIN_IS_WHITE: u16 = 0;
const MIN_IS_BLACK: u16 = 1;
const RGB: u16 = 2;
const PALETTE: u16 = 3;
const CMYK: u16 = 5;

fn open(bytes: &[u8]) -> Result<Decoder<Cursor<&[u8]>>, ImageError> {
    // The pixel limit is ours (checked from the header before decoding).
    Ok(Decoder::new(Cursor::new(bytes))
        .map_err(tiff_err)?
        .with_limits(Limits::unlimited()))
}

fn tag_u16s(dec: &mut Decoder<Cursor<&[u8]>>, tag: Tag) -> Result<Vec<u16>, ImageError> {
    match dec.find_tag(tag).map_err(tiff_err)? {
        Some(v) => v.into_u16_vec().map_err(tiff_err),
        None => Ok(Vec::new()),
    }
}

pub(super) fn decode(bytes: &[u8], max_pixels: u64) -> Result<PilImage, ImageError> {
    let mut dec = open(bytes)?;
    let (w, h) = dec.dimensions().map_err(tiff_err)?;
    let (w, h) = (w as usize, h as usize);
    check_pixels(w, h, max_pixels)?;
    let photometric = tag_u16s(&mut dec, Tag::PhotometricInterpretation)?;
    let extra = tag_u16s(&mut dec, Tag::ExtraSamples)?;
    let formats = tag_u16s(&mut dec, Tag::SampleFormat)?;
    if formats.iter().any(|&f| f != 1) {
        return Err(unsupported("signed or floating-point samples"));
    }
    if tag_u16s(&mut dec, Tag::FillOrder)?
        .first()
        .copied()
        .unwrap_or(1)
        != 1
    {
        return Err(unsupported("FillOrder 2 (bit-reversed bytes)"));
    }
    if photometric.first() == Some(&PALETTE) {
        return palette(bytes, w, h);
    }
    let spp = tag_u16s(&mut dec, Tag::SamplesPerPixel)?
        .first()
        .copied()
        .unwrap_or(1);
    let bits = tag_u16s(&mut dec, Tag::BitsPerSample)?;
    let depth = match bits.as_slice() {
        [] => 1,
        [first, rest @ ..] if rest.iter().all(|b| b == first) => *first,
        other => return Err(unsupported(format!("mixed sample sizes {other:?}"))),
    };
    let photometric = photometric.first().copied().unwrap_or(MIN_IS_WHITE);
    // Pillow's OPEN_INFO rows: (photometric, samples, bits, extra samples) → mode; `keep` is
    // how many leading samples of each pixel the mode keeps.
    let (mode, keep) = match (photometric, spp, depth, extra.as_slice()) {
        (MIN_IS_WHITE | MIN_IS_BLACK, 1, 1, _) => (Mode::One, 1),
        (MIN_IS_WHITE | MIN_IS_BLACK, 1, 8, _) => (Mode::L, 1),
        (MIN_IS_BLACK, 1, 16, _) => (Mode::I16, 1),
        (MIN_IS_BLACK, 2, 8, [0]) => (Mode::L, 1),
        (MIN_IS_BLACK, 2, 8, [2]) => (Mode::La, 2),
        (RGB, 3, 8 | 16, []) => (Mode::Rgb, 3),
        (RGB, 4, 8 | 16, [] | [2]) | (RGB, 4, 8, [999]) => (Mode::Rgba, 4),
        (RGB, 4, 8 | 16, [0]) => (Mode::Rgb, 3),
        (CMYK, 4, 8 | 16, []) => (Mode::Cmyk, 4),
        (CMYK, 5, 8, [0]) => (Mode::Cmyk, 4),
        (p, s, b, e) => {
            return Err(unsupported(format!(
                "photometric {p} with {s} samples of {b} bits, extra samples {e:?}"
            )))
        }
    };
    let samples = dec.read_image().map_err(tiff_err)?;
    let channels = usize::from(spp);
    // Single-channel grey: the `tiff` crate already inverts min-is-white samples, as Pillow's
    // `1;I` and `L;I` do.
    if channels == 1 {
        return grey(samples, w, h, mode);
    }
    // 16-bit samples keep their high byte (Pillow's `RGB;16L`/`RGB;16B` and friends).
    let bytes8: Vec<u8> = match samples {
        DecodingResult::U8(v) => v,
        DecodingResult::U16(v) => v.into_iter().map(|s| (s >> 8) as u8).collect(),
        _ => return Err(unsupported("sample type")),
    };
    // The `tiff` crate may already have dropped an unspecified extra sample.
    let stored = if bytes8.len() == w * h * keep {
        keep
    } else {
        channels
    };
    if bytes8.len() != w * h * stored {
        return Err(ImageError::Decode(format!(
            "TIFF: {} samples for {w}x{h} pixels of {channels}",
            bytes8.len()
        )));
    }
    let data = if keep == stored {
        bytes8
    } else {
        bytes8
            .chunks_exact(stored)
            .flat_map(|p| p[..keep].to_vec())
            .collect()
    };
    Ok(PilImage::new_u8(w, h, mode, data))
}

/// Single-channel grey: `1` (0/255), `L` or `I;16`.
fn grey(samples: DecodingResult, w: usize, h: usize, mode: Mode) -> Result<PilImage, ImageError> {
    let short = || ImageError::Decode("TIFF: unexpected sample count".to_owned());
    match (mode, samples) {
        (Mode::One, DecodingResult::U8(v)) => {
            let px = unpack_bits(&v, w, h, 1).ok_or_else(short)?;
            Ok(PilImage::new_u8(
                w,
                h,
                Mode::One,
                px.into_iter()
                    .map(|b| if b != 0 { 255 } else { 0 })
                    .collect(),
            ))
        }
        (Mode::L, DecodingResult::U8(v)) if v.len() == w * h => {
            Ok(PilImage::new_u8(w, h, Mode::L, v))
        }
        (Mode::I16, DecodingResult::U16(v)) if v.len() == w * h => Ok(PilImage::new_i16(w, h, v)),
        _ => Err(short()),
    }
}

/// Samples of `bits` bits (MSB first), rows padded to whole bytes, one byte each.
fn unpack_bits(data: &[u8], w: usize, h: usize, bits: usize) -> Option<Vec<u8>> {
    if bits == 8 {
        return (data.len() >= w * h).then(|| data[..w * h].to_vec());
    }
    let stride = (w * bits).div_ceil(8);
    let rows = data.get(..stride * h)?;
    let mask = ((1u16 << bits) - 1) as u8;
    let mut out = Vec::with_capacity(w * h);
    for row in rows.chunks_exact(stride) {
        for x in 0..w {
            let bit = x * bits;
            out.push((row[bit / 8] >> (8 - bits - bit % 8)) & mask);
        }
    }
    Some(out)
}

/// Offset of the `PhotometricInterpretation` value in the first IFD, when it is an inline SHORT.
fn photometric_value_offset(b: &[u8]) -> Option<(usize, bool)> {
    let le = b.get(..2)? == b"II";
    let u16_at = |o: usize| {
        b.get(o..o + 2).map(|s| {
            if le {
                u16::from_le_bytes([s[0], s[1]])
            } else {
                u16::from_be_bytes([s[0], s[1]])
            }
        })
    };
    let ifd = b.get(4..8).map(|s| {
        let a = [s[0], s[1], s[2], s[3]];
        (if le {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        }) as usize
    })?;
    let count = usize::from(u16_at(ifd)?);
    (0..count).find_map(|i| {
        let e = ifd + 2 + 12 * i;
        (u16_at(e)? == 262 && u16_at(e + 2)? == 3).then_some((e + 8, le))
    })
}

/// Palette images (`P;1` … `P`): the `tiff` crate has no palette colour type, so the indices are
/// decoded as min-is-black grey from a copy whose photometric tag says so; the palette is the
/// colour map's high bytes (reds, then greens, then blues).
fn palette(bytes: &[u8], w: usize, h: usize) -> Result<PilImage, ImageError> {
    let mut dec = open(bytes)?;
    let bits = tag_u16s(&mut dec, Tag::BitsPerSample)?;
    let spp = tag_u16s(&mut dec, Tag::SamplesPerPixel)?;
    let bits = match (bits.as_slice(), spp.first().copied().unwrap_or(1)) {
        ([b @ (1 | 2 | 4 | 8)], 1) => usize::from(*b),
        (b, s) => {
            return Err(unsupported(format!(
                "palette images with {s} samples of {b:?} bits"
            )))
        }
    };
    let map = tag_u16s(&mut dec, Tag::ColorMap)?;
    let n = map.len() / 3;
    let palette: Vec<u8> = (0..n.min(256))
        .flat_map(|i| [map[i] >> 8, map[n + i] >> 8, map[2 * n + i] >> 8].map(|v| v as u8))
        .collect();
    let (at, le) = photometric_value_offset(bytes)
        .ok_or_else(|| unsupported("palette image with an unusual photometric tag"))?;
    let mut copy = bytes.to_vec();
    let grey = if le { [1, 0] } else { [0, 1] };
    copy[at..at + 2].copy_from_slice(&grey);
    let mut dec = open(&copy)?;
    let indices = match dec.read_image().map_err(tiff_err)? {
        DecodingResult::U8(v) => unpack_bits(&v, w, h, bits),
        _ => None,
    }
    .ok_or_else(|| ImageError::Decode("TIFF: unexpected sample count".to_owned()))?;
    Ok(PilImage::new_p(w, h, indices, &palette))
}
