//! Windows icons (ICO), as Pillow's `IcoImagePlugin` opens them.
//!
//! Pillow sorts the directory by colour depth (ascending), then, keeping that order among
//! equals, by area (descending), and loads the first entry: the largest icon and, among icons of
//! that size, the one with the *lowest* colour depth. A PNG frame opens as that PNG does (any
//! PNG mode). A bitmap frame (a DIB with doubled height) becomes `RGBA`: its colours, with alpha
//! from the AND mask (bit 1 transparent), or, when the directory entry says 32 bits per pixel,
//! from every fourth byte of the pixel data.

use super::buffer::{check_pixels, zeroed};
use super::mode::{Mode, PilImage};
use super::ImageError;

fn err(msg: impl std::fmt::Display) -> ImageError {
    ImageError::Decode(format!("ICO: {msg}"))
}

fn u16_at(b: &[u8], o: usize) -> Option<u16> {
    b.get(o..o + 2).map(|s| u16::from_le_bytes([s[0], s[1]]))
}

fn u32_at(b: &[u8], o: usize) -> Option<u32> {
    b.get(o..o + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// One directory entry, with the fields Pillow uses.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Entry {
    width: usize,
    height: usize,
    bpp: u16,
    size: usize,
    offset: usize,
    color_depth: u32,
}

/// Pillow's `color_depth`: `bpp or (nb_color != 0 and ceil(log(nb_color, 2))) or 256`.
fn color_depth(bpp: u16, nb_color: u8) -> u32 {
    if bpp != 0 {
        return u32::from(bpp);
    }
    if nb_color != 0 {
        let d = (f64::from(nb_color).ln() / 2f64.ln()).ceil() as u32;
        if d != 0 {
            return d;
        }
    }
    256
}

/// The directory, in the order Pillow sorts it.
fn directory(b: &[u8]) -> Result<Vec<Entry>, ImageError> {
    let count = u16_at(b, 4).ok_or_else(|| err("truncated header"))?;
    let mut entries = Vec::with_capacity(usize::from(count));
    for i in 0..usize::from(count) {
        let e = b
            .get(6 + 16 * i..6 + 16 * (i + 1))
            .ok_or_else(|| err("truncated directory"))?;
        let dim = |v: u8| if v == 0 { 256 } else { usize::from(v) };
        entries.push(Entry {
            width: dim(e[0]),
            height: dim(e[1]),
            bpp: u16::from_le_bytes([e[6], e[7]]),
            size: u32::from_le_bytes([e[8], e[9], e[10], e[11]]) as usize,
            offset: u32::from_le_bytes([e[12], e[13], e[14], e[15]]) as usize,
            color_depth: color_depth(u16::from_le_bytes([e[6], e[7]]), e[2]),
        });
    }
    // Two stable sorts, as in Pillow.
    entries.sort_by_key(|e| e.color_depth);
    entries.sort_by_key(|e| std::cmp::Reverse(e.width * e.height));
    Ok(entries)
}

pub(super) fn decode(bytes: &[u8], max_pixels: u64) -> Result<PilImage, ImageError> {
    let entries = directory(bytes)?;
    let entry = *entries.first().ok_or_else(|| err("no icon in the file"))?;
    let frame = bytes
        .get(entry.offset..)
        .ok_or_else(|| err("frame offset past the end of the file"))?;
    if frame.starts_with(b"\x89PNG\r\n\x1a\n") {
        return super::decode::png(frame, max_pixels);
    }
    bitmap_frame(bytes, entry, max_pixels)
}

/// The DIB header fields Pillow's `BmpImagePlugin._bitmap` reads.
struct Dib {
    header_size: usize,
    width: usize,
    /// The full (XOR + AND) height.
    height: usize,
    top_down: bool,
    bits: u16,
    colors: usize,
    palette_padding: usize,
}

fn dib_header(d: &[u8]) -> Result<Dib, ImageError> {
    let short = || err("truncated bitmap header");
    let header_size = u32_at(d, 0).ok_or_else(short)? as usize;
    let h = d.get(4..header_size.max(4)).ok_or_else(short)?;
    match header_size {
        12 => {
            let bits = u16_at(h, 6).ok_or_else(short)?;
            Ok(Dib {
                header_size,
                width: usize::from(u16_at(h, 0).ok_or_else(short)?),
                height: usize::from(u16_at(h, 2).ok_or_else(short)?),
                top_down: false,
                bits,
                colors: 1usize << bits.min(24),
                palette_padding: 3,
            })
        }
        40 | 52 | 56 | 64 | 108 | 124 => {
            let top_down = h[7] == 0xFF;
            let raw_h = u32_at(h, 4).ok_or_else(short)?;
            let width = u32_at(h, 0).ok_or_else(short)? as i32;
            let bits = u16_at(h, 10).ok_or_else(short)?;
            let compression = u32_at(h, 12).ok_or_else(short)?;
            if compression != 0 {
                return Err(ImageError::Unsupported(format!(
                    "ICO: bitmap frames with compression {compression}"
                )));
            }
            let colors = match u32_at(h, 28).ok_or_else(short)? {
                0 => 1usize << bits.min(24),
                n => n as usize,
            };
            if width <= 0 {
                return Err(err("bitmap width is not positive"));
            }
            Ok(Dib {
                header_size,
                width: width as usize,
                height: if top_down {
                    (1u64 << 32).wrapping_sub(u64::from(raw_h)) as usize
                } else {
                    raw_h as usize
                },
                top_down,
                bits,
                colors,
                palette_padding: 4,
            })
        }
        n => Err(err(format!("unsupported bitmap header size {n}"))),
    }
}

/// How the XOR bitmap's pixels are read (Pillow's mode and raw mode).
enum Pixels {
    /// Grey palette of at most two entries: raw mode `1`, one bit per pixel whatever `bits`.
    Bilevel,
    /// Grey palette: raw mode `L`, one byte per pixel whatever `bits`.
    Grey,
    /// Colour palette (`P;1`, `P;4`, `P`): RGB entries, missing ones black.
    Palette(Vec<[u8; 3]>),
    /// `BGR;15`, `BGR`, `BGRX`.
    Colour,
}

fn bitmap_frame(file: &[u8], entry: Entry, max_pixels: u64) -> Result<PilImage, ImageError> {
    let d = &file[entry.offset..];
    let dib = dib_header(d)?;
    if !matches!(dib.bits, 1 | 4 | 8 | 16 | 24 | 32) {
        return Err(err(format!("unsupported pixel depth {}", dib.bits)));
    }
    // Pillow checks the DIB's own (doubled) size, then halves the height.
    check_pixels(dib.width, dib.height, max_pixels)?;
    let (w, h) = (dib.width, dib.height / 2);
    check_pixels(w, h, max_pixels)?;
    let mut pos = dib.header_size;
    let pixels = if dib.bits <= 8 {
        if !(1..=65536).contains(&dib.colors) {
            return Err(err(format!("unsupported palette size {}", dib.colors)));
        }
        let pad = dib.palette_padding;
        let end = (pos + pad * dib.colors).min(d.len());
        let palette = &d[pos..end];
        pos = end;
        let grey = (0..dib.colors).all(|i| {
            let v = if dib.colors == 2 {
                [0u8, 255][i]
            } else {
                i as u8
            };
            palette.get(i * pad..i * pad + 3) == Some(&[v, v, v][..])
        });
        if grey && dib.colors <= 2 {
            Pixels::Bilevel
        } else if grey {
            Pixels::Grey
        } else if dib.colors > 256 {
            return Err(err("palette with more than 256 entries"));
        } else {
            Pixels::Palette(
                palette
                    .chunks_exact(pad)
                    .map(|e| [e[2], e[1], e[0]])
                    .collect(),
            )
        }
    } else {
        Pixels::Colour
    };
    let stride = ((dib.width * usize::from(dib.bits) + 31) >> 3) & !3;
    let needed = match pixels {
        Pixels::Bilevel => w.div_ceil(8),
        Pixels::Grey => w,
        _ => (w * usize::from(dib.bits)).div_ceil(8),
    };
    if needed > stride {
        return Err(err("bitmap rows shorter than their pixels"));
    }
    let data = d
        .get(pos..pos + stride * h)
        .ok_or_else(|| err("image file is truncated"))?;
    let mut rgba = zeroed::<u8>(w * h * 4)?;
    for (i, row) in data.chunks_exact(stride).enumerate() {
        let y = if dib.top_down { i } else { h - 1 - i };
        let out = &mut rgba[y * w * 4..(y + 1) * w * 4];
        for (x, px) in out.chunks_exact_mut(4).enumerate() {
            let rgb = match &pixels {
                Pixels::Bilevel => {
                    let v = if row[x / 8] & (0x80 >> (x % 8)) != 0 {
                        255
                    } else {
                        0
                    };
                    [v, v, v]
                }
                Pixels::Grey => [row[x], row[x], row[x]],
                Pixels::Palette(pal) => {
                    let bits = usize::from(dib.bits);
                    let bit = x * bits;
                    let idx = (row[bit / 8] >> (8 - bits - bit % 8)) & ((1u16 << bits) - 1) as u8;
                    pal.get(usize::from(idx)).copied().unwrap_or_default()
                }
                Pixels::Colour => colour(dib.bits, &row[x * usize::from(dib.bits) / 8..]),
            };
            px[..3].copy_from_slice(&rgb);
        }
    }
    if entry.bpp == 32 {
        // Pillow reads w*h*4 bytes from the start of the pixel data, bottom-up.
        let alpha = d
            .get(pos..pos + w * h * 4)
            .ok_or_else(|| err("alpha data is truncated"))?;
        for (i, row) in alpha.chunks_exact(w * 4).enumerate() {
            let y = h - 1 - i;
            for (x, p) in row.chunks_exact(4).enumerate() {
                rgba[(y * w + x) * 4 + 3] = p[3];
            }
        }
    } else {
        // The AND mask: rows padded to 32 bits, located from the directory's size field.
        let mask_stride = w.div_ceil(32) * 4;
        let total = mask_stride * h;
        let start = (entry.offset + entry.size)
            .checked_sub(total)
            .ok_or_else(|| err("AND mask before the start of the file"))?;
        let mask = file
            .get(start..start + total)
            .ok_or_else(|| err("AND mask is truncated"))?;
        for (i, row) in mask.chunks_exact(mask_stride).enumerate() {
            let y = h - 1 - i;
            for x in 0..w {
                let transparent = row[x / 8] & (0x80 >> (x % 8)) != 0;
                rgba[(y * w + x) * 4 + 3] = if transparent { 0 } else { 255 };
            }
        }
    }
    Ok(PilImage::new_u8(w, h, Mode::Rgba, rgba))
}

/// One 16/24/32-bit BMP pixel (`BGR;15`, `BGR`, `BGRX`) as RGB.
fn colour(bits: u16, p: &[u8]) -> [u8; 3] {
    if bits == 16 {
        let v = u32::from(u16::from_le_bytes([p[0], p[1]]));
        let c = |shift: u32| (((v >> shift) & 31) * 255 / 31) as u8;
        [c(10), c(5), c(0)]
    } else {
        [p[2], p[1], p[0]]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(w: u8, h: u8, nb_color: u8, bpp: u16, size: u32, offset: u32) -> Vec<u8> {
        let mut e = vec![w, h, nb_color, 0, 1, 0];
        e.extend_from_slice(&bpp.to_le_bytes());
        e.extend_from_slice(&size.to_le_bytes());
        e.extend_from_slice(&offset.to_le_bytes());
        e
    }

    #[test]
    fn pillow_picks_the_largest_then_the_lowest_depth() {
        let mut b = vec![0, 0, 1, 0, 4, 0];
        b.extend(entry(16, 16, 0, 32, 0, 0));
        b.extend(entry(32, 32, 0, 32, 0, 1));
        b.extend(entry(32, 32, 16, 0, 0, 2));
        b.extend(entry(0, 0, 0, 8, 0, 3));
        let dir = directory(&b).unwrap();
        assert_eq!(
            dir.iter().map(|e| e.offset).collect::<Vec<_>>(),
            vec![3, 2, 1, 0]
        );
        assert_eq!((dir[0].width, dir[0].height), (256, 256));
        assert_eq!(dir[1].color_depth, 4);
        assert_eq!(color_depth(0, 1), 256);
        assert_eq!(color_depth(0, 0), 256);
        assert_eq!(color_depth(0, 3), 2);
    }

    /// A 3x2 24-bit bitmap frame with an AND mask.
    fn bmp_icon() -> Vec<u8> {
        let mut dib = Vec::new();
        dib.extend_from_slice(&40u32.to_le_bytes());
        dib.extend_from_slice(&3i32.to_le_bytes());
        dib.extend_from_slice(&4i32.to_le_bytes());
        dib.extend_from_slice(&1u16.to_le_bytes());
        dib.extend_from_slice(&24u16.to_le_bytes());
        dib.extend_from_slice(&[0; 24]);
        // Bottom row first: 9 bytes of pixels + 3 of padding per row.
        dib.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 0, 0]);
        dib.extend_from_slice(&[10, 11, 12, 13, 14, 15, 16, 17, 18, 0, 0, 0]);
        // AND mask, bottom row first: the middle pixel of the bottom row is transparent.
        dib.extend_from_slice(&[0x40, 0, 0, 0, 0, 0, 0, 0]);
        let mut b = vec![0, 0, 1, 0, 1, 0];
        b.extend(entry(3, 2, 0, 24, dib.len() as u32, 22));
        b.extend(dib);
        b
    }

    #[test]
    fn bitmap_frames_take_alpha_from_the_and_mask() {
        let img = decode(&bmp_icon(), 1000).unwrap();
        assert_eq!((img.width, img.height, img.mode), (3, 2, Mode::Rgba));
        assert_eq!(
            img.data,
            vec![
                12, 11, 10, 255, 15, 14, 13, 255, 18, 17, 16, 255, //
                3, 2, 1, 255, 6, 5, 4, 0, 9, 8, 7, 255
            ]
        );
    }

    #[test]
    fn broken_icons_are_errors() {
        let good = bmp_icon();
        for cut in [5, 10, 21, 30, 70, good.len() - 1] {
            assert!(
                matches!(decode(&good[..cut], 1000), Err(ImageError::Decode(_))),
                "cut at {cut}"
            );
        }
        assert!(matches!(decode(&good, 5), Err(ImageError::TooLarge { .. })));
        assert!(matches!(
            decode(&[0, 0, 1, 0, 0, 0], 1000),
            Err(ImageError::Decode(_))
        ));
    }
}
