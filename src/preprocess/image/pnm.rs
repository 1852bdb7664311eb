//! PBM, PGM and PPM (plain and raw), as Pillow's `PpmImagePlugin` opens them.
//!
//! | magic | maxval | Pillow mode | samples |
//! |---|---|---|---|
//! | `P1`, `P4` | — | `1` | bit 1 is black |
//! | `P2`, `P5` | 1..=255 | `L` | `round(v / maxval * 255)` (raw `P5` with 255: as stored) |
//! | `P2`, `P5` | 256..=65535 | `I` | `round(v / maxval * 65535)` (raw `P5` with 65535: as stored) |
//! | `P3`, `P6` | 1..=65535 | `RGB` | `round(v / maxval * 255)` (raw `P6` with 255: as stored) |
//!
//! `round` is Python's (half to even) on the float quotient. The plain (ASCII) parser follows
//! Pillow's block-wise tokeniser, including where it rejects values larger than `maxval`.
//! Pillow's float (`Pf`) and test-only (`P0CMYK`, `Py…`) variants are refused as unsupported.

use super::buffer::{check_pixels, zeroed};
use super::mode::{Mode, PilImage};
use super::ImageError;

/// Pillow's `ImageFile.SAFEBLOCK`: the plain decoder reads the data in blocks of this size.
const SAFEBLOCK: usize = 65536;
/// Pillow's longest accepted token (header and plain data).
const MAX_TOKEN: usize = 10;

fn err(msg: impl std::fmt::Display) -> ImageError {
    ImageError::Decode(format!("PNM: {msg}"))
}

/// Python's `bytes.isspace` set (also the header's whitespace).
fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r')
}

/// Python's `int(token)` for ASCII bytes: optional sign, digits with single underscores between
/// them.
fn parse_int(token: &[u8]) -> Option<i64> {
    let (neg, digits) = match token.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, token),
    };
    if digits.first().is_none_or(|c| !c.is_ascii_digit())
        || digits.last().is_none_or(|c| !c.is_ascii_digit())
        || digits.windows(2).any(|w| w == b"__")
    {
        return None;
    }
    let mut v: i64 = 0;
    for &c in digits {
        if c == b'_' {
            continue;
        }
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(i64::from(c - b'0'))?;
    }
    Some(if neg { -v } else { v })
}

/// The header reader: `_read_magic` and `_read_token`.
struct Header<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Header<'_> {
    fn next(&mut self) -> Option<u8> {
        let c = self.b.get(self.pos).copied();
        self.pos += usize::from(c.is_some());
        c
    }

    fn magic(&mut self) -> Vec<u8> {
        let mut magic = Vec::new();
        for _ in 0..6 {
            match self.next() {
                Some(c) if !is_space(c) => magic.push(c),
                _ => break,
            }
        }
        magic
    }

    fn token(&mut self) -> Result<i64, ImageError> {
        let mut token = Vec::new();
        while token.len() <= MAX_TOKEN {
            match self.next() {
                None => break,
                Some(c) if is_space(c) => {
                    if token.is_empty() {
                        continue;
                    }
                    break;
                }
                // A comment runs to CR, LF or the end of the file.
                Some(b'#') => while !matches!(self.next(), None | Some(b'\r' | b'\n')) {},
                Some(c) => token.push(c),
            }
        }
        if token.is_empty() {
            return Err(err("reached the end of the file while reading the header"));
        }
        if token.len() > MAX_TOKEN {
            return Err(err("token too long in the file header"));
        }
        parse_int(&token).ok_or_else(|| err("invalid number in the header"))
    }
}

/// Decode a PNM file into Pillow's mode.
pub(super) fn decode(bytes: &[u8], max_pixels: u64) -> Result<PilImage, ImageError> {
    let mut header = Header { b: bytes, pos: 0 };
    let magic = header.magic();
    let (mode, plain) = match magic.as_slice() {
        b"P1" => (Mode::One, true),
        b"P2" => (Mode::L, true),
        b"P3" => (Mode::Rgb, true),
        b"P4" => (Mode::One, false),
        b"P5" => (Mode::L, false),
        b"P6" => (Mode::Rgb, false),
        b"Pf" => return Err(ImageError::Unsupported("PNM: float (Pf) images".to_owned())),
        b"P0CMYK" | b"PyP" | b"PyRGBA" | b"PyCMYK" => {
            return Err(ImageError::Unsupported(
                "PNM: Pillow's test-only variants".to_owned(),
            ))
        }
        _ => return Err(err("not a PPM file")),
    };
    let width = header.token()?;
    let height = header.token()?;
    if width <= 0 || height <= 0 {
        return Err(err(format!("invalid size {width}x{height}")));
    }
    let (w, h) = (
        usize::try_from(width).map_err(err)?,
        usize::try_from(height).map_err(err)?,
    );
    check_pixels(w, h, max_pixels)?;
    if mode == Mode::One {
        let data = &bytes[header.pos..];
        let pixels = if plain {
            Plain::new(data).bitonal(w * h)?
        } else {
            raw_bits(data, w, h)?
        };
        return Ok(PilImage::new_u8(w, h, Mode::One, pixels));
    }
    let maxval = header.token()?;
    if !(1..65536).contains(&maxval) {
        return Err(err("maxval must be greater than 0 and less than 65536"));
    }
    let maxval = maxval as u32;
    let mode = if maxval > 255 && mode == Mode::L {
        Mode::I
    } else {
        mode
    };
    let data = &bytes[header.pos..];
    let values = w * h * mode.channels();
    let samples = if plain {
        Plain::new(data).values(values, maxval, out_max(mode))?
    } else if maxval == 255 || (maxval == 65535 && mode == Mode::I) {
        raw_samples(data, values, maxval)?
    } else {
        scaled_samples(data, values, maxval, out_max(mode))?
    };
    Ok(if mode == Mode::I {
        PilImage::new_wide(w, h, Mode::I, samples)
    } else {
        // Every sample is at most 255 here.
        let data = samples.into_iter().map(|v| v.min(255) as u8).collect();
        PilImage::new_u8(w, h, mode, data)
    })
}

fn out_max(mode: Mode) -> u32 {
    if mode == Mode::I {
        65535
    } else {
        255
    }
}

/// Pillow's `round(value / maxval * out_max)`, in doubles with ties to even.
fn rescale(value: u32, maxval: u32, out_max: u32) -> u16 {
    let v = (f64::from(value) / f64::from(maxval) * f64::from(out_max)).round_ties_even();
    v.min(f64::from(out_max)) as u16
}

fn truncated() -> ImageError {
    err("image file is truncated")
}

/// Raw `P4`: rows padded to whole bytes, bit 1 black (`1;I`).
fn raw_bits(data: &[u8], w: usize, h: usize) -> Result<Vec<u8>, ImageError> {
    let stride = w.div_ceil(8);
    let rows = data.get(..stride * h).ok_or_else(truncated)?;
    let mut out = zeroed::<u8>(w * h)?;
    for (row, dst) in rows.chunks_exact(stride).zip(out.chunks_exact_mut(w)) {
        for (x, d) in dst.iter_mut().enumerate() {
            *d = if row[x / 8] & (0x80 >> (x % 8)) != 0 {
                0
            } else {
                255
            };
        }
    }
    Ok(out)
}

/// Raw samples stored as Pillow keeps them: bytes for maxval 255, big-endian 16-bit for 65535.
fn raw_samples(data: &[u8], values: usize, maxval: u32) -> Result<Vec<u16>, ImageError> {
    if maxval == 255 {
        let d = data.get(..values).ok_or_else(truncated)?;
        Ok(d.iter().map(|&v| u16::from(v)).collect())
    } else {
        let d = data.get(..values * 2).ok_or_else(truncated)?;
        Ok(d.chunks_exact(2)
            .map(|p| u16::from_be_bytes([p[0], p[1]]))
            .collect())
    }
}

/// Pillow's `PpmDecoder`: binary samples of 1 byte (maxval < 256) or 2 big-endian bytes,
/// rescaled to the mode's range and clamped (values above maxval are not an error here).
fn scaled_samples(
    data: &[u8],
    values: usize,
    maxval: u32,
    out_max: u32,
) -> Result<Vec<u16>, ImageError> {
    let width = if maxval < 256 { 1 } else { 2 };
    let d = data.get(..values * width).ok_or_else(truncated)?;
    Ok(d.chunks_exact(width)
        .map(|p| {
            let v = if width == 1 {
                u32::from(p[0])
            } else {
                u32::from(u16::from_be_bytes([p[0], p[1]]))
            };
            rescale(v, maxval, out_max)
        })
        .collect())
}

/// Pillow's `PpmPlainDecoder`: the data is read in `SAFEBLOCK` blocks, comments are cut out of
/// each block (possibly spanning into the next ones), and tokens split by a block boundary are
/// stitched back together.
struct Plain<'a> {
    data: &'a [u8],
    pos: usize,
    comment_spans: bool,
}

impl<'a> Plain<'a> {
    fn new(data: &'a [u8]) -> Self {
        Plain {
            data,
            pos: 0,
            comment_spans: false,
        }
    }

    fn read_block(&mut self) -> Vec<u8> {
        let end = (self.pos + SAFEBLOCK).min(self.data.len());
        let block = self.data[self.pos..end].to_vec();
        self.pos = end;
        block
    }

    /// `_find_comment_end`, including its choice when one of the two line ends is at index 0.
    fn comment_end(block: &[u8], start: usize) -> Option<usize> {
        let find = |c: u8| -> i64 {
            block
                .get(start..)
                .and_then(|b| b.iter().position(|&x| x == c))
                .map_or(-1, |p| (p + start) as i64)
        };
        let (a, b) = (find(b'\n'), find(b'\r'));
        let end = if a * b > 0 { a.min(b) } else { a.max(b) };
        usize::try_from(end).ok()
    }

    fn ignore_comments(&mut self, mut block: Vec<u8>) -> Vec<u8> {
        if self.comment_spans {
            while !block.is_empty() {
                match Self::comment_end(&block, 0) {
                    Some(end) => {
                        block.drain(..=end);
                        break;
                    }
                    None => block = self.read_block(),
                }
            }
        }
        self.comment_spans = false;
        while let Some(start) = block.iter().position(|&c| c == b'#') {
            match Self::comment_end(&block, start) {
                Some(end) => {
                    block.drain(start..=end);
                }
                None => {
                    block.truncate(start);
                    self.comment_spans = true;
                    break;
                }
            }
        }
        block
    }

    /// `P1` data: one `0`/`1` character per pixel, whitespace optional; `1` is black.
    fn bitonal(mut self, total: usize) -> Result<Vec<u8>, ImageError> {
        // Each pixel needs at least one byte of input.
        if self.data.len() < total {
            return Err(err("not enough image data"));
        }
        let mut out = Vec::with_capacity(total);
        while out.len() != total {
            let block = self.read_block();
            if block.is_empty() {
                break;
            }
            let block = self.ignore_comments(block);
            let tokens: Vec<u8> = block.into_iter().filter(|&c| !is_space(c)).collect();
            if tokens.iter().any(|&c| c != b'0' && c != b'1') {
                return Err(err("invalid token for a bitmap"));
            }
            let take = (total - out.len()).min(tokens.len());
            out.extend(
                tokens[..take]
                    .iter()
                    .map(|&c| if c == b'1' { 0 } else { 255 }),
            );
        }
        if out.len() != total {
            return Err(err("not enough image data"));
        }
        Ok(out)
    }

    /// `P2`/`P3` data: decimal tokens up to `maxval`, rescaled.
    fn values(mut self, total: usize, maxval: u32, out_max: u32) -> Result<Vec<u16>, ImageError> {
        // Each value needs at least one byte of input.
        if self.data.len() < total {
            return Err(err("not enough image data"));
        }
        let mut out = Vec::with_capacity(total);
        let mut half: Vec<u8> = Vec::new();
        while out.len() != total {
            let mut block = self.read_block();
            if block.is_empty() {
                if half.is_empty() {
                    break;
                }
                block = b" ".to_vec();
            }
            let mut block = self.ignore_comments(block);
            if !half.is_empty() {
                half.append(&mut block);
                block = std::mem::take(&mut half);
            }
            let mut tokens: Vec<&[u8]> = block
                .split(|&c| is_space(c))
                .filter(|t| !t.is_empty())
                .collect();
            if block.last().is_some_and(|&c| !is_space(c)) {
                // The block may end inside a token: keep it for the next block.
                if let Some(t) = tokens.pop() {
                    if t.len() > MAX_TOKEN {
                        return Err(err("token too long in the data"));
                    }
                    half = t.to_vec();
                }
            }
            for token in tokens {
                if token.len() > MAX_TOKEN {
                    return Err(err("token too long in the data"));
                }
                let value = parse_int(token).ok_or_else(|| err("invalid number in the data"))?;
                if value < 0 {
                    return Err(err("negative sample value"));
                }
                if value > i64::from(maxval) {
                    return Err(err("sample value larger than maxval"));
                }
                out.push(rescale(value as u32, maxval, out_max));
                if out.len() == total {
                    break;
                }
            }
        }
        if out.len() != total {
            return Err(err("not enough image data"));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pixels(bytes: &[u8]) -> PilImage {
        decode(bytes, 1 << 20).unwrap()
    }

    #[test]
    fn plain_and_raw_agree() {
        let plain = pixels(b"P2\n# comment\n3 2\n# another\n4\n0 1 2\n3 4 0\n");
        let raw = pixels(b"P5 3 2 4\n\x00\x01\x02\x03\x04\x00");
        assert_eq!(plain, raw);
        assert_eq!(plain.mode, Mode::L);
        // round(v / 4 * 255): 0, 63.75 -> 64, 127.5 -> 128 (half to even), 191.25, 255.
        assert_eq!(plain.data, vec![0, 64, 128, 191, 255, 0]);
    }

    #[test]
    fn bitmaps_invert_bits() {
        let plain = pixels(b"P1\n3 2\n101\n0 1 0");
        let raw = pixels(b"P4\n3 2\n\xa0\x40");
        assert_eq!(plain, raw);
        assert_eq!(plain.data, vec![0, 255, 0, 255, 0, 255]);
    }

    #[test]
    fn sixteen_bit_grey_is_mode_i() {
        let img = pixels(b"P5 2 1 65535\n\x12\x34\xff\xff");
        assert_eq!(img.mode, Mode::I);
        assert_eq!(img.data16, vec![0x1234, 0xffff]);
        let img = pixels(b"P2 2 1 1000 1000 1");
        assert_eq!(img.data16, vec![65535, 66]);
        let rgb = pixels(b"P6 1 1 65535\n\xff\xff\x80\x00\x00\x00");
        assert_eq!(rgb.data, vec![255, 128, 0]);
    }

    #[test]
    fn tokens_split_across_blocks_are_stitched() {
        let mut file = b"P2 1 2 255\n".to_vec();
        file.resize(file.len() + SAFEBLOCK - 2, b' ');
        file.extend_from_slice(b"123 45");
        assert_eq!(pixels(&file).data, vec![123, 45]);
    }

    #[test]
    fn malformed_files_are_errors() {
        for bad in [
            &b"P2 1 1 0 0"[..],
            b"P2 1 1 255 256",
            b"P2 1 1 255 -1",
            b"P2 2 2 255 1 2 3",
            b"P5 2 2 255\n\x00",
            b"P1 2 1 12",
            b"P3 1 1",
            b"P6 0 1 255\n",
            b"P6 12345678901 1 255\n",
        ] {
            assert!(
                matches!(decode(bad, 1 << 20), Err(ImageError::Decode(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(matches!(
            decode(b"Pf 1 1 -1.0\n\0\0\0\0", 1 << 20),
            Err(ImageError::Unsupported(_))
        ));
        assert!(matches!(
            decode(b"P5 4000 4000 255\n", 1 << 20),
            Err(ImageError::TooLarge { .. })
        ));
    }
}
