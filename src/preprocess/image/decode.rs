//! Format sniffing and decoders that reproduce what `PIL.Image.open(...)` yields for frame 0:
//! the same Pillow mode and the same samples.
//!
//! | format | decoder | Pillow modes |
//! |---|---|---|
//! | JPEG | `super::jpeg` (libjpeg-turbo) | `L`, `RGB`, `CMYK` (Pillow's `CMYK;I`) |
//! | PNG | png (raw samples) | `1`, `L`, `LA`, `P`, `RGB`, `RGBA`, `I;16` |
//! | GIF | gif (indices) | `P`, or `L` for an identity grey palette |
//! | BMP | image | `RGB`, `RGBA`, `P`, or `L`/`1` for a grey palette |
//! | TIFF | `super::tiff` (tiff crate, Pillow's mode table) | `1`, `L`, `LA`, `P`, `RGB`, `RGBA`, `CMYK`, `I;16` |
//! | WebP | image | `RGB`, `RGBA` |
//! | AVIF | `super::avif` (rav1d + libyuv arithmetic, 8-bit) | `RGB`, `RGBA`, `L` (4:0:0) |
//! | ICO | `super::ico` (PNG frames via `png`) | PNG modes, or `RGBA` for bitmap frames |
//! | PNM | `super::pnm` | `1`, `L`, `I` (16-bit grey), `RGB` |
//! | TGA | `super::tga` | `1`, `L`, `LA`, `P`, `RGB`, `RGBA` |
//!
//! HEIF/HEIC, JPEG 2000, JPEG XL and a few other formats Pillow may open are recognised and
//! reported as [`ImageError::Unsupported`] (as are 10/12-bit AVIFs). Every decoder checks
//! `width*height` against `max_pixels` from the header, before allocating pixel buffers.

use std::io::Cursor;
use std::panic::{catch_unwind, AssertUnwindSafe};

use image::ImageDecoder;

use super::buffer::{check_pixels, zeroed};
use super::mode::{Mode, PilImage};
use super::ImageError;

/// The container format, from magic bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    Jpeg,
    Png,
    Gif,
    Bmp,
    Tiff,
    WebP,
    Avif,
    Ico,
    Pnm,
    Tga,
    /// Recognised but not decodable here; the name of the format.
    Unsupported(&'static str),
    Unknown,
}

/// Identify the format from its leading bytes.
pub(crate) fn sniff(b: &[u8]) -> Format {
    let at = |off: usize, magic: &[u8]| b.get(off..off + magic.len()) == Some(magic);
    if at(0, b"\xFF\xD8\xFF") {
        Format::Jpeg
    } else if at(0, b"\x89PNG\r\n\x1a\n") {
        Format::Png
    } else if at(0, b"GIF87a") || at(0, b"GIF89a") {
        Format::Gif
    } else if at(0, b"BM") {
        Format::Bmp
    } else if at(0, b"II*\0") || at(0, b"MM\0*") {
        Format::Tiff
    } else if at(0, b"II+\0") || at(0, b"MM\0+") {
        Format::Unsupported("BigTIFF")
    } else if at(0, b"RIFF") && at(8, b"WEBP") {
        Format::WebP
    } else if at(4, b"ftyp") {
        match b.get(8..12) {
            Some(b"avif" | b"avis") => Format::Avif,
            Some(b"heic" | b"heix" | b"hevc" | b"hevx" | b"heim" | b"heis") => {
                Format::Unsupported("HEIF/HEIC")
            }
            // Generic HEIF container brands: AVIF when an AVIF brand is listed as compatible.
            Some(b"mif1" | b"msf1") => {
                let compat = b.get(16..b.len().min(64)).unwrap_or_default();
                if compat.chunks_exact(4).any(|c| c == b"avif" || c == b"avis") {
                    Format::Avif
                } else {
                    Format::Unsupported("HEIF")
                }
            }
            Some(b"jp2 ") => Format::Unsupported("JPEG 2000"),
            _ => Format::Unknown,
        }
    } else if at(0, b"\0\0\0\x0CjP  \r\n\x87\n") || at(0, b"\xFF\x4F\xFF\x51") {
        Format::Unsupported("JPEG 2000")
    } else if at(0, b"\xFF\x0A") || at(0, b"\0\0\0\x0CJXL \r\n\x87\n") {
        Format::Unsupported("JPEG XL")
    } else if at(0, b"\0\0\x01\0") {
        Format::Ico
    } else if at(0, b"8BPS") {
        Format::Unsupported("PSD")
    } else if b.len() >= 2 && b[0] == b'P' && b"0123456fy".contains(&b[1]) {
        // Pillow's PPM plugin test (its float and test-only variants are refused later).
        Format::Pnm
    } else if super::tga::looks_like_tga(b) {
        // No magic number: Pillow tries TGA after the formats that have one.
        Format::Tga
    } else {
        Format::Unknown
    }
}

/// Decode frame 0 of an encoded image into its Pillow mode.
pub(crate) fn decode(bytes: &[u8], max_pixels: u64) -> Result<PilImage, ImageError> {
    let run = |f: fn(&[u8], u64) -> Result<PilImage, ImageError>| -> Result<PilImage, ImageError> {
        // The decoders are fuzzed crates, but a panic on hostile input must never escape.
        catch_unwind(AssertUnwindSafe(|| f(bytes, max_pixels))).unwrap_or_else(|_| {
            Err(ImageError::Decode(
                "the decoder panicked on malformed data".to_owned(),
            ))
        })
    };
    match sniff(bytes) {
        Format::Jpeg => run(super::jpeg::decode),
        Format::Png => run(png),
        Format::Gif => run(gif),
        Format::Bmp => run(bmp),
        Format::Tiff => run(super::tiff::decode),
        Format::WebP => run(webp),
        Format::Avif => run(super::avif::decode),
        Format::Ico => run(super::ico::decode),
        Format::Pnm => run(super::pnm::decode),
        Format::Tga => run(super::tga::decode),
        Format::Unsupported(name) => Err(ImageError::Unsupported(format!(
            "{name} images cannot be decoded by this build"
        ))),
        Format::Unknown => Err(ImageError::Decode("unrecognised image format".to_owned())),
    }
}

fn decode_err(format: &str) -> impl Fn(String) -> ImageError + '_ {
    move |e| ImageError::Decode(format!("{format}: {e}"))
}

// ---------------------------------------------------------------------------------------------
// PNG

pub(super) fn png(bytes: &[u8], max_pixels: u64) -> Result<PilImage, ImageError> {
    use png::{BitDepth, ColorType};
    let err = decode_err("PNG");
    // The pixel limit below is ours; the crate's byte limit would refuse large valid images.
    let limits = png::Limits { bytes: usize::MAX };
    let mut dec = png::Decoder::new_with_limits(Cursor::new(bytes), limits);
    dec.set_transformations(png::Transformations::IDENTITY);
    let header = dec.read_header_info().map_err(|e| err(e.to_string()))?;
    let (w, h) = (header.width as usize, header.height as usize);
    check_pixels(w, h, max_pixels)?;
    let mut reader = dec.read_info().map_err(|e| err(e.to_string()))?;
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| err("image too large for this platform".to_owned()))?;
    let mut buf = zeroed::<u8>(size)?;
    let out = reader
        .next_frame(&mut buf)
        .map_err(|e| err(e.to_string()))?;
    let (ct, depth) = (out.color_type, out.bit_depth);
    let (w, h, line) = (out.width as usize, out.height as usize, out.line_size);
    let rows = || buf.chunks_exact(line).take(h);
    let bits = depth as u8;

    // Unpack 1/2/4-bit samples (MSB first) to one byte per pixel, times `scale`.
    let unpack = |scale: u8| -> Vec<u8> {
        let mask = (1u16 << bits) - 1;
        let mut v = Vec::with_capacity(w * h);
        for row in rows() {
            for x in 0..w {
                let bit = x * usize::from(bits);
                let shift = 8 - usize::from(bits) - bit % 8;
                let s = (u16::from(row[bit / 8]) >> shift) & mask;
                v.push((s as u8).wrapping_mul(scale));
            }
        }
        v
    };
    // 8-bit samples, or the high byte of 16-bit big-endian samples (Pillow's "RGB;16B" etc.).
    let high_bytes = |samples: usize| -> Vec<u8> {
        let mut v = Vec::with_capacity(w * h * samples);
        for row in rows() {
            if depth == BitDepth::Sixteen {
                v.extend(row[..w * samples * 2].chunks_exact(2).map(|p| p[0]));
            } else {
                v.extend_from_slice(&row[..w * samples]);
            }
        }
        v
    };

    let image = match (ct, depth) {
        (ColorType::Grayscale, BitDepth::One) => PilImage::new_u8(w, h, Mode::One, unpack(255)),
        (ColorType::Grayscale, BitDepth::Two) => PilImage::new_u8(w, h, Mode::L, unpack(85)),
        (ColorType::Grayscale, BitDepth::Four) => PilImage::new_u8(w, h, Mode::L, unpack(17)),
        (ColorType::Grayscale, BitDepth::Eight) => PilImage::new_u8(w, h, Mode::L, high_bytes(1)),
        (ColorType::Grayscale, BitDepth::Sixteen) => {
            let mut v = Vec::with_capacity(w * h);
            for row in rows() {
                v.extend(
                    row[..w * 2]
                        .chunks_exact(2)
                        .map(|p| u16::from_be_bytes([p[0], p[1]])),
                );
            }
            PilImage::new_i16(w, h, v)
        }
        (ColorType::Rgb, _) => PilImage::new_u8(w, h, Mode::Rgb, high_bytes(3)),
        (ColorType::Indexed, _) => {
            let indices = if depth == BitDepth::Eight {
                high_bytes(1)
            } else {
                unpack(1)
            };
            let palette = reader.info().palette.as_deref().unwrap_or_default();
            PilImage::new_p(w, h, indices, palette)
        }
        (ColorType::GrayscaleAlpha, BitDepth::Eight) => {
            PilImage::new_u8(w, h, Mode::La, high_bytes(2))
        }
        // 16-bit grey+alpha opens as RGBA in Pillow ("LA;16B" rawmode).
        (ColorType::GrayscaleAlpha, _) => {
            let la = high_bytes(2);
            let rgba = la
                .chunks_exact(2)
                .flat_map(|p| [p[0], p[0], p[0], p[1]])
                .collect();
            PilImage::new_u8(w, h, Mode::Rgba, rgba)
        }
        (ColorType::Rgba, _) => PilImage::new_u8(w, h, Mode::Rgba, high_bytes(4)),
    };
    Ok(image)
}

// ---------------------------------------------------------------------------------------------
// GIF

fn gif(bytes: &[u8], max_pixels: u64) -> Result<PilImage, ImageError> {
    let err = |e: gif::DecodingError| ImageError::Decode(format!("GIF: {e}"));
    let mut options = gif::DecodeOptions::new();
    options.set_color_output(gif::ColorOutput::Indexed);
    // Our own pixel limit is checked below; the crate's byte limit guards the frame buffer.
    options.set_memory_limit(match std::num::NonZeroU64::new(max_pixels) {
        Some(n) => gif::MemoryLimit::Bytes(n),
        None => gif::MemoryLimit::Bytes(std::num::NonZeroU64::MIN),
    });
    let mut dec = options.read_info(Cursor::new(bytes)).map_err(err)?;
    let (screen_w, screen_h) = (usize::from(dec.width()), usize::from(dec.height()));
    let global = dec.global_palette().map(<[u8]>::to_vec);
    let frame = dec
        .next_frame_info()
        .map_err(err)?
        .ok_or_else(|| ImageError::Decode("GIF: no image in file".to_owned()))?;
    let (left, top) = (usize::from(frame.left), usize::from(frame.top));
    let (fw, fh) = (usize::from(frame.width), usize::from(frame.height));
    let local = frame.palette.clone();
    let transparent = frame.transparent;
    // Pillow grows the canvas when frame 0 extends past the logical screen.
    let (w, h) = (screen_w.max(left + fw), screen_h.max(top + fh));
    check_pixels(w, h, max_pixels)?;
    let mut pixels = zeroed::<u8>(fw * fh)?;
    dec.read_into_buffer(&mut pixels).map_err(err)?;

    // Pillow's frame-0 canvas: filled with the transparency index when there is one, else 0.
    let mut canvas = zeroed::<u8>(w * h)?;
    if let Some(t) = transparent {
        canvas.fill(t);
    }
    if fw > 0 {
        for (y, row) in pixels.chunks_exact(fw).enumerate() {
            let start = (top + y) * w + left;
            canvas[start..start + fw].copy_from_slice(row);
        }
    }
    // A palette that maps every index i to (i, i, i) is dropped by Pillow (mode L); a local
    // identity palette hides the global one.
    let is_identity = |p: &[u8]| {
        p.chunks_exact(3)
            .enumerate()
            .all(|(i, c)| c.iter().all(|&v| usize::from(v) == i))
    };
    let palette = match (&local, &global) {
        (Some(p), _) if !is_identity(p) => Some(p.as_slice()),
        (Some(_), _) => None,
        (None, Some(g)) if !is_identity(g) => Some(g.as_slice()),
        (None, _) => None,
    };
    Ok(match palette {
        Some(p) => PilImage::new_p(w, h, canvas, p),
        None => PilImage::new_u8(w, h, Mode::L, canvas),
    })
}

// ---------------------------------------------------------------------------------------------
// BMP

/// The header fields Pillow's `BmpImagePlugin` uses to pick the mode of a palette image.
struct BmpPalette {
    /// `1`, `L` or `P`.
    mode: Mode,
}

/// Pillow's palette-mode rule: a palette of `colors` entries equal to (i, i, i) (or black and
/// white for 2 colours) opens as `L` (or `1`), any other palette as `P`. `None` for images with
/// more than 8 bits per pixel.
fn bmp_palette_mode(b: &[u8]) -> Option<BmpPalette> {
    let u16_at = |o: usize| b.get(o..o + 2).map(|s| u16::from_le_bytes([s[0], s[1]]));
    let u32_at = |o: usize| {
        b.get(o..o + 4)
            .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    };
    let header_size = u32_at(14)? as usize;
    let (bits, colors, padding) = if header_size == 12 {
        let bits = u16_at(24)?;
        (bits, 1u64 << bits.min(16), 3usize)
    } else {
        let bits = u16_at(28)?;
        let colors = match u32_at(46)? {
            0 => 1u64 << bits.min(16),
            n => u64::from(n),
        };
        (bits, colors, 4usize)
    };
    if bits > 8 {
        return None;
    }
    let start = 14 + header_size;
    let colors = usize::try_from(colors).ok()?;
    let grey = if colors == 2 {
        [0u8, 255].iter().enumerate().all(|(i, &v)| {
            b.get(start + i * padding..start + i * padding + 3) == Some(&[v, v, v][..])
        })
    } else {
        (0..colors).all(|i| {
            let v = (i % 256) as u8;
            i < 256 && b.get(start + i * padding..start + i * padding + 3) == Some(&[v, v, v][..])
        })
    };
    let mode = match (grey, colors <= 2) {
        (true, true) => Mode::One,
        (true, false) => Mode::L,
        (false, _) => Mode::PRgb,
    };
    Some(BmpPalette { mode })
}

fn bmp(bytes: &[u8], max_pixels: u64) -> Result<PilImage, ImageError> {
    let err = decode_err("BMP");
    let mut dec =
        image::codecs::bmp::BmpDecoder::new(Cursor::new(bytes)).map_err(|e| image_err("BMP", e))?;
    let (w, h) = dec.dimensions();
    let (w, h) = (w as usize, h as usize);
    check_pixels(w, h, max_pixels)?;
    dec.set_limits(image::Limits::no_limits())
        .map_err(|e| image_err("BMP", e))?;
    let color = dec.color_type();
    let palette = bmp_palette_mode(bytes);
    let data = read_image(dec, "BMP")?;
    let image = match (color, palette) {
        (image::ColorType::Rgb8, Some(BmpPalette { mode })) => match mode {
            // Grey palettes: the decoder applied the palette, so R = G = B = index.
            Mode::One | Mode::L => {
                PilImage::new_u8(w, h, mode, data.chunks_exact(3).map(|p| p[0]).collect())
            }
            _ => PilImage::new_u8(w, h, Mode::PRgb, data),
        },
        (image::ColorType::Rgb8, None) => PilImage::new_u8(w, h, Mode::Rgb, data),
        (image::ColorType::Rgba8, _) => PilImage::new_u8(w, h, Mode::Rgba, data),
        (other, _) => return Err(err(format!("unexpected colour type {other:?}"))),
    };
    Ok(image)
}

fn image_err(format: &str, e: image::ImageError) -> ImageError {
    match e {
        image::ImageError::Unsupported(u) => ImageError::Unsupported(format!("{format}: {u}")),
        other => ImageError::Decode(format!("{format}: {other}")),
    }
}

fn read_image<D: ImageDecoder>(dec: D, format: &str) -> Result<Vec<u8>, ImageError> {
    let len = usize::try_from(dec.total_bytes())
        .map_err(|_| ImageError::Decode(format!("{format}: image too large")))?;
    let mut data = zeroed::<u8>(len)?;
    dec.read_image(&mut data)
        .map_err(|e| image_err(format, e))?;
    Ok(data)
}

// ---------------------------------------------------------------------------------------------
// WebP

fn webp(bytes: &[u8], max_pixels: u64) -> Result<PilImage, ImageError> {
    let err = decode_err("WebP");
    let mut dec = image::codecs::webp::WebPDecoder::new(Cursor::new(bytes))
        .map_err(|e| image_err("WebP", e))?;
    let (w, h) = dec.dimensions();
    let (w, h) = (w as usize, h as usize);
    check_pixels(w, h, max_pixels)?;
    dec.set_limits(image::Limits::no_limits())
        .map_err(|e| image_err("WebP", e))?;
    let mode = match dec.color_type() {
        image::ColorType::Rgb8 => Mode::Rgb,
        image::ColorType::Rgba8 => Mode::Rgba,
        other => return Err(err(format!("unexpected colour type {other:?}"))),
    };
    let data = read_image(dec, "WebP")?;
    Ok(PilImage::new_u8(w, h, mode, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffing() {
        assert_eq!(sniff(b"\xFF\xD8\xFF\xE0"), Format::Jpeg);
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n...."), Format::Png);
        assert_eq!(sniff(b"GIF89a"), Format::Gif);
        assert_eq!(sniff(b"BM\0\0"), Format::Bmp);
        assert_eq!(sniff(b"II*\0"), Format::Tiff);
        assert_eq!(sniff(b"MM\0*"), Format::Tiff);
        assert_eq!(sniff(b"RIFF\0\0\0\0WEBPVP8 "), Format::WebP);
        assert_eq!(sniff(b"\0\0\0\x1cftypavif\0\0\0\0avifmif1"), Format::Avif);
        assert_eq!(
            sniff(b"\0\0\0\x1cftypmif1\0\0\0\0mif1avifmiaf"),
            Format::Avif
        );
        assert_eq!(
            sniff(b"\0\0\0\x1cftypheic"),
            Format::Unsupported("HEIF/HEIC")
        );
        assert_eq!(sniff(b"\0\0\x01\0\x01\0"), Format::Ico);
        assert_eq!(sniff(b"P6\n1 1\n255\n"), Format::Pnm);
        assert_eq!(sniff(b"Pf\n"), Format::Pnm);
        assert_eq!(sniff(b"P7\n"), Format::Unknown);
        let mut tga = [0u8; 18];
        tga[2] = 2;
        tga[12] = 1;
        tga[14] = 1;
        tga[16] = 24;
        assert_eq!(sniff(&tga), Format::Tga);
        assert_eq!(sniff(b""), Format::Unknown);
        assert_eq!(sniff(b"hello world"), Format::Unknown);
        assert_eq!(sniff(b"RIFF\0\0\0\0WAVE"), Format::Unknown);
    }

    #[test]
    fn unsupported_and_unknown() {
        // A bare AVIF `ftyp` with nothing after it is a broken AVIF, not an unsupported one.
        let avif = b"\0\0\0\x1cftypavif\0\0\0\0avifmif1miaf";
        match decode(avif, u64::MAX) {
            Err(ImageError::Decode(m)) => assert!(m.contains("AVIF"), "{m}"),
            other => panic!("{other:?}"),
        }
        let heic = b"\0\0\0\x18ftypheic\0\0\0\0mif1heic";
        assert!(matches!(
            decode(heic, u64::MAX),
            Err(ImageError::Unsupported(_))
        ));
        assert!(matches!(
            decode(b"not an image", u64::MAX),
            Err(ImageError::Decode(_))
        ));
    }

    /// A tiny PNG (via the png crate's encoder) used to build broken inputs.
    fn tiny_png() -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut enc = png::Encoder::new(&mut out, 3, 2);
            enc.set_color(png::ColorType::Rgb);
            enc.set_depth(png::BitDepth::Eight);
            let mut writer = enc.write_header().unwrap();
            writer.write_image_data(&[7u8; 18]).unwrap();
        }
        out
    }

    fn encode_with_image(format: image::ImageFormat) -> Vec<u8> {
        let img =
            image::RgbImage::from_fn(19, 11, |x, y| image::Rgb([x as u8 * 13, y as u8 * 23, 77]));
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, format).unwrap();
        out.into_inner()
    }

    fn tiny_gif() -> Vec<u8> {
        let mut out = Vec::new();
        {
            let palette: Vec<u8> = (0..16u8).flat_map(|i| [i * 16, 255 - i * 16, i]).collect();
            let mut enc = gif::Encoder::new(&mut out, 9, 5, &palette).unwrap();
            let pixels: Vec<u8> = (0..45u8).map(|i| i % 16).collect();
            let frame = gif::Frame {
                width: 9,
                height: 5,
                buffer: std::borrow::Cow::Borrowed(&pixels),
                ..gif::Frame::default()
            };
            enc.write_frame(&frame).unwrap();
        }
        out
    }

    #[test]
    fn garbage_and_truncated_inputs_error_without_panicking() {
        let mut samples: Vec<(&str, Vec<u8>)> = vec![
            ("png", tiny_png()),
            ("gif", tiny_gif()),
            ("bmp", encode_with_image(image::ImageFormat::Bmp)),
            ("tiff", encode_with_image(image::ImageFormat::Tiff)),
            ("jpeg", encode_with_image(image::ImageFormat::Jpeg)),
        ];
        samples.push(("webp", encode_with_image(image::ImageFormat::WebP)));
        for (name, good) in &samples {
            assert!(decode(good, u64::MAX).is_ok(), "{name} should decode");
            // Truncations keeping the magic bytes.
            for cut in [
                4usize,
                8,
                12,
                16,
                24,
                32,
                good.len() / 2,
                good.len().saturating_sub(12),
            ] {
                if cut >= good.len() {
                    continue;
                }
                let r = decode(&good[..cut], u64::MAX);
                assert!(
                    matches!(r, Err(ImageError::Decode(_))),
                    "{name} cut at {cut}: {r:?}"
                );
            }
            // The magic bytes followed by garbage.
            let mut rng = 0x2545F4914F6CDD1Du64;
            for len in [16usize, 64, 300] {
                let mut bad = good[..good.len().min(8)].to_vec();
                while bad.len() < len {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    bad.push(rng as u8);
                }
                let r = decode(&bad, u64::MAX);
                assert!(r.is_err(), "{name} garbage {len}: decoded");
            }
            // Byte flips in the body must not panic (results may be Ok).
            for i in (0..good.len()).step_by(7) {
                let mut bad = good.clone();
                bad[i] ^= 0x5A;
                let _ = decode(&bad, u64::MAX);
            }
        }
    }

    #[test]
    fn pixel_limit_is_checked_from_the_header() {
        let png = tiny_png();
        assert!(matches!(
            decode(&png, 5),
            Err(ImageError::TooLarge {
                width: 3,
                height: 2,
                max_pixels: 5
            })
        ));
        assert!(decode(&png, 6).is_ok());
        // A GIF header claiming 65535×65535 with no data.
        let mut big = tiny_gif();
        big[6..10].copy_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(
            decode(&big, DEFAULT_MAX),
            Err(ImageError::TooLarge { .. })
        ));
        // Headers claiming huge sizes, with no pixel data.
        let mut tga = vec![0u8; 18];
        tga[2] = 2;
        tga[12..16].copy_from_slice(&[0xff; 4]);
        tga[16] = 24;
        let mut ico = vec![
            0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 1, 0, 32, 0, 0, 0, 0, 0, 22, 0, 0, 0,
        ];
        ico.extend_from_slice(&40u32.to_le_bytes());
        ico.extend_from_slice(&60000i32.to_le_bytes());
        ico.extend_from_slice(&120000i32.to_le_bytes());
        ico.extend_from_slice(&[1, 0, 32, 0]);
        ico.extend_from_slice(&[0; 24]);
        for bomb in [
            &b"P5 100000 100000 255\n"[..],
            b"P1 100000 100000\n",
            &tga,
            &ico,
        ] {
            assert!(
                matches!(decode(bomb, DEFAULT_MAX), Err(ImageError::TooLarge { .. })),
                "{:?}",
                decode(bomb, DEFAULT_MAX)
            );
        }
        for format in [
            image::ImageFormat::Bmp,
            image::ImageFormat::Tiff,
            image::ImageFormat::Jpeg,
            image::ImageFormat::WebP,
        ] {
            let bytes = encode_with_image(format);
            assert!(
                matches!(
                    decode(&bytes, 100),
                    Err(ImageError::TooLarge {
                        width: 19,
                        height: 11,
                        ..
                    })
                ),
                "{format:?}"
            );
        }
    }

    const DEFAULT_MAX: u64 = super::super::DEFAULT_MAX_PIXELS;
}
