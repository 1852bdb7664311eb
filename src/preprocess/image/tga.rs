//! Targa (TGA), as Pillow's `TgaImagePlugin` opens it: uncompressed and RLE, colour-mapped,
//! grey, 16/24/32-bit colour, both vertical origins and the horizontal flip.
//!
//! | image type | depth | Pillow mode | samples |
//! |---|---|---|---|
//! | 1, 9 (colour-mapped) | 8 | `P` | palette entries of 16 (`BGRA;15Z`), 24 or 32 bits |
//! | 2, 10 (true colour) | 16 | `RGBA` | `v * 255 / 31` per 5-bit channel; alpha 255 where the top bit is 0 |
//! | 2, 10 | 24 | `RGB` | BGR |
//! | 2, 10 | 32 | `RGBA` | BGRA |
//! | 3, 11 (grey) | 8 | `L` | |
//! | 3, 11 | 16 | `LA` | |
//! | 3 | 1 | `1` | bit 1 is white |
//!
//! For `RGBA`, a version 2 footer whose extension area says "no alpha" (attributes type 0)
//! makes the image opaque, as in Pillow. RLE packets may continue a literal run onto the next
//! row (Pillow allows it) but not a repeated run (Pillow reports an overrun).

use super::buffer::{check_pixels, zeroed};
use super::mode::{Mode, PilImage};
use super::ImageError;

fn err(msg: impl std::fmt::Display) -> ImageError {
    ImageError::Decode(format!("TGA: {msg}"))
}

/// The 18-byte header fields Pillow reads.
struct Header {
    id_len: usize,
    colormap: bool,
    image_type: u8,
    map_start: usize,
    map_len: usize,
    map_depth: u8,
    width: usize,
    height: usize,
    depth: u8,
    flags: u8,
}

impl Header {
    fn parse(b: &[u8]) -> Option<Header> {
        let h = b.get(..18)?;
        let u16_at = |o: usize| usize::from(u16::from_le_bytes([h[o], h[o + 1]]));
        let header = Header {
            id_len: usize::from(h[0]),
            colormap: h[1] == 1,
            image_type: h[2],
            map_start: u16_at(3),
            map_len: u16_at(5),
            map_depth: h[7],
            width: u16_at(12),
            height: u16_at(14),
            depth: h[16],
            flags: h[17],
        };
        // Pillow's validation ("not a TGA file" / "unknown TGA mode").
        let valid = h[1] <= 1
            && header.width > 0
            && header.height > 0
            && matches!(header.depth, 1 | 8 | 16 | 24 | 32)
            && matches!(header.image_type, 1 | 2 | 3 | 9 | 10 | 11);
        valid.then_some(header)
    }
}

/// Whether the leading bytes pass Pillow's TGA header checks. TGA has no magic number; Pillow
/// tries it after the formats that have one, as `super::decode::sniff` does.
pub(super) fn looks_like_tga(b: &[u8]) -> bool {
    Header::parse(b).is_some_and(|h| !h.colormap || matches!(h.map_depth, 16 | 24 | 32))
}

/// How the pixel bytes of a row become Pillow samples.
#[derive(Clone, Copy, PartialEq)]
enum Raw {
    /// `1`: one bit per pixel, MSB first.
    Bits,
    /// `L`, `P`, `LA`: copied.
    Copy,
    /// `BGR`, `BGRA`: swapped to RGB(A).
    Bgr,
    /// `BGRA;15Z`: 5 bits per channel, inverted alpha bit.
    Bgra15z,
}

/// Pillow's `BGRA;15Z` unpacker for one little-endian 16-bit pixel.
fn bgra15z(p: [u8; 2]) -> [u8; 4] {
    let v = u32::from(u16::from_le_bytes(p));
    let c = |shift: u32| ((v >> shift) & 31) * 255 / 31;
    [
        c(10) as u8,
        c(5) as u8,
        c(0) as u8,
        if v >> 15 != 0 { 0 } else { 255 },
    ]
}

pub(super) fn decode(bytes: &[u8], max_pixels: u64) -> Result<PilImage, ImageError> {
    let h = Header::parse(bytes).ok_or_else(|| err("not a TGA file"))?;
    let (mode, raw) = match (h.image_type & 7, h.depth, h.colormap) {
        (1, 8, true) => (Mode::P, Raw::Copy),
        (2, 16, _) => (Mode::Rgba, Raw::Bgra15z),
        (2, 24, _) => (Mode::Rgb, Raw::Bgr),
        (2, 32, _) => (Mode::Rgba, Raw::Bgr),
        (3, 8, _) => (Mode::L, Raw::Copy),
        (3, 16, _) => (Mode::La, Raw::Copy),
        (3, 1, _) if h.image_type == 3 => (Mode::One, Raw::Bits),
        (t, d, _) => return Err(err(format!("cannot load image type {t} at {d} bits"))),
    };
    if h.colormap && mode != Mode::P {
        // Pillow applies the map to the image afterwards: true colour fails ("unrecognized
        // image mode"), grey images get an odd palette while keeping their grey mode.
        let msg = "a colour map on an image that is not colour-mapped";
        return Err(if matches!(mode, Mode::Rgb | Mode::Rgba) {
            err(msg)
        } else {
            ImageError::Unsupported(format!("TGA: {msg}"))
        });
    }
    let (w, ht) = (h.width, h.height);
    check_pixels(w, ht, max_pixels)?;
    let mut pos = 18 + h.id_len;
    let mut palette = Vec::new();
    if h.colormap {
        let entry = match h.map_depth {
            16 => 2,
            24 => 3,
            32 => 4,
            _ => return Err(err("unknown TGA map depth")),
        };
        let end = (pos + entry * h.map_len).min(bytes.len());
        let mut raw_map = vec![0u8; entry * h.map_start];
        raw_map.extend_from_slice(bytes.get(pos..end).unwrap_or_default());
        pos = end;
        // Pillow refuses palettes of more than 256 entries.
        if raw_map.len() / entry > 256 {
            return Err(err("palette with more than 256 entries"));
        }
        palette = raw_map
            .chunks_exact(entry)
            .flat_map(|e| match e {
                [b, g, r] | [b, g, r, _] => [*r, *g, *b],
                _ => {
                    let [r, g, b, _] = bgra15z([e[0], e[1]]);
                    [r, g, b]
                }
            })
            .collect();
    }
    let bits = usize::from(h.depth);
    let line = (w * bits).div_ceil(8);
    let data = bytes.get(pos..).unwrap_or_default();
    let rows = if h.image_type & 8 != 0 {
        rle_rows(data, line, ht, bits / 8)?
    } else {
        data.get(..line * ht)
            .ok_or_else(|| err("image file is truncated"))?
            .to_vec()
    };
    let channels = mode.channels();
    let mut pixels = zeroed::<u8>(w * ht * channels)?;
    let bottom_up = h.flags & 0x20 == 0;
    let flip = h.flags & 0x10 != 0;
    for (i, src) in rows.chunks_exact(line).enumerate() {
        let y = if bottom_up { ht - 1 - i } else { i };
        let dst = &mut pixels[y * w * channels..(y + 1) * w * channels];
        unpack_row(raw, src, dst, channels);
        if flip {
            flip_row(dst, channels);
        }
    }
    if mode == Mode::Rgba && footer_says_no_alpha(bytes)? {
        for p in pixels.chunks_exact_mut(4) {
            p[3] = 255;
        }
    }
    Ok(if mode == Mode::P {
        PilImage::new_p(w, ht, pixels, &palette)
    } else {
        PilImage::new_u8(w, ht, mode, pixels)
    })
}

fn unpack_row(raw: Raw, src: &[u8], dst: &mut [u8], channels: usize) {
    match raw {
        Raw::Copy => dst.copy_from_slice(&src[..dst.len()]),
        Raw::Bits => {
            for (x, d) in dst.iter_mut().enumerate() {
                *d = if src[x / 8] & (0x80 >> (x % 8)) != 0 {
                    255
                } else {
                    0
                };
            }
        }
        Raw::Bgr => {
            for (s, d) in src
                .chunks_exact(channels)
                .zip(dst.chunks_exact_mut(channels))
            {
                d.copy_from_slice(s);
                d.swap(0, 2);
            }
        }
        Raw::Bgra15z => {
            for (s, d) in src.chunks_exact(2).zip(dst.chunks_exact_mut(4)) {
                d.copy_from_slice(&bgra15z([s[0], s[1]]));
            }
        }
    }
}

fn flip_row(row: &mut [u8], channels: usize) {
    let n = row.len() / channels;
    for x in 0..n / 2 {
        for c in 0..channels {
            row.swap(x * channels + c, (n - 1 - x) * channels + c);
        }
    }
}

/// Pillow's `load_end` for `RGBA`: the last 26 bytes must exist (a shorter file is an error
/// there too); a version 2 footer pointing to an extension area whose attributes type (byte
/// 494) is 0 means "no alpha".
fn footer_says_no_alpha(b: &[u8]) -> Result<bool, ImageError> {
    let footer = b
        .len()
        .checked_sub(26)
        .map(|start| &b[start..])
        .ok_or_else(|| err("file too short for its footer"))?;
    if !footer.ends_with(b"TRUEVISION-XFILE.\0") {
        return Ok(false);
    }
    let ext = u32::from_le_bytes([footer[0], footer[1], footer[2], footer[3]]) as usize;
    Ok(ext != 0 && b.get(ext + 494) == Some(&0))
}

/// Pillow's `ImagingTgaRleDecode`: `height` rows of `line` bytes, pixels of `pixel` bytes.
fn rle_rows(data: &[u8], line: usize, height: usize, pixel: usize) -> Result<Vec<u8>, ImageError> {
    if pixel == 0 {
        return Err(err("run-length coded 1-bit images cannot be decoded"));
    }
    let total = line * height;
    // A packet of 2 bytes yields at most 128 pixels.
    if data.len().saturating_mul(64 * pixel) < total {
        return Err(err("image file is truncated"));
    }
    let mut out = zeroed::<u8>(total)?;
    let (mut filled, mut p) = (0usize, 0usize);
    while filled < total {
        let head = *data.get(p).ok_or_else(|| err("image file is truncated"))?;
        let n = pixel * (usize::from(head & 0x7f) + 1);
        let x = filled % line;
        if head & 0x80 != 0 {
            let value = data
                .get(p + 1..p + 1 + pixel)
                .ok_or_else(|| err("image file is truncated"))?;
            if x + n > line {
                return Err(err("run-length packet crosses a row"));
            }
            for d in out[filled..filled + n].chunks_exact_mut(pixel) {
                d.copy_from_slice(value);
            }
            p += 1 + pixel;
        } else {
            let lit = data
                .get(p + 1..p + 1 + n)
                .ok_or_else(|| err("image file is truncated"))?;
            // A literal packet continues onto the following rows; what is left after the last
            // row is dropped.
            let take = n.min(total - filled);
            out[filled..filled + take].copy_from_slice(&lit[..take]);
            p += 1 + n;
        }
        filled += n;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(image_type: u8, depth: u8, w: u16, h: u16, flags: u8) -> Vec<u8> {
        let mut b = vec![0u8; 18];
        b[2] = image_type;
        b[12..14].copy_from_slice(&w.to_le_bytes());
        b[14..16].copy_from_slice(&h.to_le_bytes());
        b[16] = depth;
        b[17] = flags;
        b
    }

    #[test]
    fn origins_and_flip() {
        // 2x2 grey, bottom-up: the first stored row is the bottom one.
        let mut b = header(3, 8, 2, 2, 0);
        b.extend_from_slice(&[1, 2, 3, 4]);
        assert_eq!(decode(&b, 100).unwrap().data, vec![3, 4, 1, 2]);
        b[17] = 0x20;
        assert_eq!(decode(&b, 100).unwrap().data, vec![1, 2, 3, 4]);
        b[17] = 0x30;
        assert_eq!(decode(&b, 100).unwrap().data, vec![2, 1, 4, 3]);
    }

    #[test]
    fn rle_literals_may_cross_rows_but_runs_may_not() {
        let mut b = header(11, 8, 2, 2, 0x20);
        b.extend_from_slice(&[0x02, 9, 8, 7, 0x80, 6]);
        assert_eq!(decode(&b, 100).unwrap().data, vec![9, 8, 7, 6]);
        let mut b = header(11, 8, 2, 2, 0x20);
        b.extend_from_slice(&[0x00, 9, 0x82, 6]);
        assert!(matches!(decode(&b, 100), Err(ImageError::Decode(_))));
        let mut b = header(11, 8, 2, 2, 0x20);
        b.extend_from_slice(&[0x00, 9]);
        assert!(matches!(decode(&b, 100), Err(ImageError::Decode(_))));
    }

    #[test]
    fn sixteen_bit_colour() {
        assert_eq!(bgra15z([0xff, 0x7f]), [255, 255, 255, 255]);
        assert_eq!(bgra15z([0x1f, 0x80]), [0, 0, 255, 0]);
        // 4 * 255 / 31 = 32 (integer division).
        assert_eq!(bgra15z([0x04, 0x00]), [0, 0, 32, 255]);
    }

    #[test]
    fn header_checks() {
        assert!(looks_like_tga(&header(2, 24, 1, 1, 0)));
        assert!(!looks_like_tga(&header(2, 24, 0, 1, 0)));
        assert!(!looks_like_tga(&header(4, 24, 1, 1, 0)));
        assert!(!looks_like_tga(&header(2, 12, 1, 1, 0)));
        assert!(!looks_like_tga(&header(2, 24, 1, 1, 0)[..17]));
        // A 1x1 RGBA file shorter than a footer is an error, as in Pillow.
        let mut b = header(2, 32, 1, 1, 0);
        b.extend_from_slice(&[1, 2, 3, 4]);
        assert!(matches!(decode(&b, 100), Err(ImageError::Decode(_))));
        assert!(matches!(
            decode(&header(2, 24, 300, 300, 0), 100),
            Err(ImageError::TooLarge { .. })
        ));
    }
}
