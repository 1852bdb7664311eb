//! JPEG decoding through libjpeg-turbo (the `turbojpeg` crate), the library Pillow bundles.
//!
//! Exact mode decodes the way Pillow does: the accurate integer IDCT (`JDCT_ISLOW`), "fancy"
//! (triangle-filter) chroma upsampling, 1 component → `L`, 3 → `RGB` (YCbCr or RGB colour space,
//! chosen by libjpeg from the JFIF/Adobe markers), 4 → `CMYK` read as Pillow's `CMYK;I`
//! (inverted, "Adobe polarity"; YCCK converted to CMYK by libjpeg first). No EXIF orientation.
//! Fast upsampling would change subsampled images by up to 10 levels, so it stays off.
//!
//! Corrupt-data warnings (extraneous bytes, bad Huffman codes, a marker inside entropy data)
//! are not errors in Pillow, which decodes such files with libjpeg's best effort; they are
//! accepted here too. Running out of data is an error, as Pillow's "image file is truncated".
//! One difference remains there: a sequential file missing only its final EOI marker is
//! always truncated here, while Pillow reads some of them (those whose last entropy-coded
//! bytes need no lookahead).
//!
//! The fast mode ([`decode_scaled`]) lets libjpeg-turbo scale in the DCT domain (1/2, 1/4, 1/8),
//! which skips most of the IDCT and colour conversion work but is not what Pillow computes.

use std::cell::RefCell;

use turbojpeg::{Colorspace, DecompressHeader, Decompressor, PixelFormat, ScalingFactor};

use super::buffer::{check_pixels, overwritten_bytes};
use super::mode::{Mode, PilImage};
use super::resample::source_window;
use super::turbo::{Output, PartialDecoder, Region};
use super::ImageError;

/// Progressive files with more scans than this are refused: real encoders write at most a few
/// dozen, while thousands of tiny scans make a small file cost minutes of CPU (libjpeg-turbo's
/// own recommendation for untrusted input).
const MAX_SCANS: u32 = 500;

/// libjpeg's warning that the data ended before the image did.
const PREMATURE_END: &str = "Premature end of JPEG file";

/// Warnings libjpeg-turbo reports after decoding the whole image with its best effort
/// (`jerror.h`'s `JWRN_*`); anything else is a fatal error and leaves the output incomplete.
const WARNINGS: [&str; 7] = [
    "Corrupt JPEG data",
    "Unknown Adobe color transform code",
    "Inconsistent progression sequence",
    "Warning: unknown JFIF revision number",
    "Invalid SOS parameters for sequential JPEG",
    "Application transferred too many scanlines",
    PREMATURE_END,
];

thread_local! {
    /// One decompressor per thread: creating a libjpeg-turbo handle costs more than decoding a
    /// thumbnail.
    static DECOMPRESSOR: RefCell<Option<Decompressor>> = const { RefCell::new(None) };
}

/// What a decode produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// Every pixel, as Pillow decodes it.
    Full,
    /// DCT-scaled so that the short side stays at least this long (fast mode).
    Scaled(usize),
    /// Only the pixels the resize to this crop size reads, each as in a full decode; the
    /// image keeps its size, and its other pixels are unspecified.
    Window(usize),
}

/// Decode at full resolution, bit-identical to Pillow.
pub(super) fn decode(bytes: &[u8], max_pixels: u64) -> Result<PilImage, ImageError> {
    decode_with(bytes, max_pixels, Target::Full)
}

/// Decode, bit-identical to Pillow, the pixels that resizing to `crop_size` and centre-cropping
/// read ([`super::resample::source_window`]); the rest of the image is not decoded and holds
/// unspecified bytes. Only for [`super::crop_image`] with the same size.
pub(super) fn decode_window(
    bytes: &[u8],
    max_pixels: u64,
    crop_size: usize,
) -> Result<PilImage, ImageError> {
    decode_with(bytes, max_pixels, Target::Window(crop_size))
}

/// Decode with DCT-domain downscaling: the smallest of 1/8, 1/4 and 1/2 that keeps the short
/// side at least `min_short_side` (full size when none does). Not Pillow-exact. The pixel limit
/// applies to the full-size image, as in exact mode.
pub(super) fn decode_scaled(
    bytes: &[u8],
    max_pixels: u64,
    min_short_side: usize,
) -> Result<PilImage, ImageError> {
    decode_with(bytes, max_pixels, Target::Scaled(min_short_side))
}

fn decode_with(bytes: &[u8], max_pixels: u64, target: Target) -> Result<PilImage, ImageError> {
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        let dec = match &mut *slot {
            Some(dec) => dec,
            empty => empty.insert(Decompressor::new().map_err(|e| bad(e.to_string()))?),
        };
        decode_into(dec, bytes, max_pixels, target)
    })
}

fn decode_into(
    dec: &mut Decompressor,
    bytes: &[u8],
    max_pixels: u64,
    target: Target,
) -> Result<PilImage, ImageError> {
    let header = match dec.read_header(bytes) {
        Ok(header) => header,
        // TurboJPEG refuses the header on any warning, even though libjpeg (and Pillow) read
        // past junk between header segments; decode a copy without it instead.
        Err(e) if is_warning(&e.to_string()) => {
            let clean = without_header_junk(bytes);
            if clean.len() == bytes.len() {
                return Err(classify(&e.to_string()));
            }
            return decode_into(dec, &clean, max_pixels, target);
        }
        Err(e) => return Err(classify(&e.to_string())),
    };
    check_pixels(header.width, header.height, max_pixels)?;
    let (mode, format) = match header.colorspace {
        Colorspace::Gray => (Mode::L, PixelFormat::GRAY),
        Colorspace::CMYK | Colorspace::YCCK => (Mode::Cmyk, PixelFormat::CMYK),
        Colorspace::RGB | Colorspace::YCbCr => (Mode::Rgb, PixelFormat::RGB),
    };
    if let Target::Window(size) = target {
        if let Some(image) = decode_part(bytes, &header, mode, format, size)? {
            return Ok(image);
        }
    }
    let scale = match target {
        Target::Scaled(min) if !header.is_lossless => scale_for(&header, min),
        _ => ScalingFactor::ONE,
    };
    dec.set_scaling_factor(scale)
        .map_err(|e| bad(e.to_string()))?;
    dec.set_scan_limit(MAX_SCANS)
        .map_err(|e| bad(e.to_string()))?;
    let scaled = header.scaled(scale);
    let (width, height) = (scaled.width, scaled.height);
    let pitch = width * format.size();
    // libjpeg-turbo writes every output row or fails (see `overwritten_bytes`).
    let mut data = overwritten_bytes(pitch * height)?;
    let image = turbojpeg::Image {
        pixels: &mut data[..],
        width,
        pitch,
        height,
        format,
    };
    if let Err(e) = dec.decompress(bytes, image) {
        decode_failure(&e.to_string())?;
    }
    if mode == Mode::Cmyk {
        invert(&mut data);
    }
    Ok(PilImage::new_u8(width, height, mode, data))
}

/// What a failed decompression means: after a warning the image is complete (libjpeg's best
/// effort, as Pillow reads it); running out of data and fatal errors fail the document.
fn decode_failure(msg: &str) -> Result<(), ImageError> {
    if message(msg).starts_with(PREMATURE_END) {
        return Err(ImageError::Decode(
            "JPEG: image file is truncated".to_owned(),
        ));
    }
    if is_warning(msg) {
        Ok(())
    } else {
        Err(classify(msg))
    }
}

/// Pillow's `CMYK;I` rawmode: libjpeg returns Adobe's inverted inks.
fn invert(samples: &mut [u8]) {
    for v in samples {
        *v = 255 - *v;
    }
}

thread_local! {
    /// The instance for partial decodes, one per thread like [`DECOMPRESSOR`].
    static PARTIAL: RefCell<Option<PartialDecoder>> = const { RefCell::new(None) };
}

/// [`Target::Window`]: decodes the window's source rectangle (plus a margin) into an image of
/// full size, or `None` when the window needs (nearly) the whole image or TurboJPEG cannot
/// crop this file, and a full decode follows instead.
fn decode_part(
    bytes: &[u8],
    header: &DecompressHeader,
    mode: Mode,
    format: PixelFormat,
    crop_size: usize,
) -> Result<Option<PilImage>, ImageError> {
    let (width, height) = (header.width, header.height);
    let ((c0, c1), (r0, r1)) = source_window(width, height, crop_size);
    let needed = Region {
        x: c0,
        y: r0,
        width: c1 - c0,
        height: r1 - r0,
    };
    // Skipping less than a tenth of the pixels does not pay for a second header read.
    if needed.width * needed.height * 10 > width * height * 9 {
        return Ok(None);
    }
    PARTIAL.with(|cell| {
        let mut slot = cell.borrow_mut();
        let dec = match &mut *slot {
            Some(dec) => dec,
            empty => empty.insert(PartialDecoder::new().map_err(bad)?),
        };
        let Some(sampling) = dec.sampling(bytes).map_err(|e| classify(&e))? else {
            return Ok(None);
        };
        let region = sampling.widen(needed, width, height);
        let channels = format.size();
        let pitch = width * channels;
        // Only the region is written: the resize reads nothing else (see `decode_window`).
        let mut data = overwritten_bytes(pitch * height)?;
        let start = region.y * pitch + region.x * channels;
        let out = data
            .get_mut(start..)
            .ok_or_else(|| bad(format!("region {region:?} outside the image")))?;
        let out = Output {
            pixels: out,
            pitch,
            format: format as i32,
            channels,
        };
        if let Err(msg) = dec.decode(bytes, region, MAX_SCANS, out) {
            decode_failure(&msg)?;
        }
        if mode == Mode::Cmyk {
            for row in data[start..].chunks_mut(pitch).take(region.height) {
                let row_len = row.len().min(region.width * channels);
                invert(&mut row[..row_len]);
            }
        }
        Ok(Some(PilImage::new_u8(width, height, mode, data)))
    })
}

/// The smallest DCT scale (1/8, 1/4, 1/2, else 1) whose short side is still `min` or more.
fn scale_for(header: &DecompressHeader, min: usize) -> ScalingFactor {
    [
        ScalingFactor::ONE_EIGHTH,
        ScalingFactor::ONE_QUARTER,
        ScalingFactor::ONE_HALF,
    ]
    .into_iter()
    .find(|&f| {
        let s = header.scaled(f);
        s.width.min(s.height) >= min
    })
    .unwrap_or(ScalingFactor::ONE)
}

/// libjpeg's message without the crate's prefix.
fn message(msg: &str) -> &str {
    msg.strip_prefix("TurboJPEG error: ").unwrap_or(msg)
}

fn is_warning(msg: &str) -> bool {
    let msg = message(msg);
    WARNINGS.iter().any(|w| msg.starts_with(w))
}

/// A copy of `bytes` without the stray bytes libjpeg skips (with a warning) between the
/// segments before the first scan; everything from the first SOS on is copied unchanged.
fn without_header_junk(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut pos = 0;
    while pos < bytes.len() {
        if bytes[pos] != 0xFF {
            pos += 1; // junk
            continue;
        }
        let Some(&marker) = bytes.get(pos + 1) else {
            break;
        };
        match marker {
            0xFF => pos += 1, // fill byte
            0xD8 | 0x01 | 0xD0..=0xD7 => {
                out.extend_from_slice(&bytes[pos..pos + 2]);
                pos += 2;
            }
            0xDA => {
                out.extend_from_slice(&bytes[pos..]);
                break;
            }
            _ => {
                let len = bytes
                    .get(pos + 2..pos + 4)
                    .map_or(0, |l| usize::from(u16::from_be_bytes([l[0], l[1]])));
                let end = (pos + 2 + len).min(bytes.len());
                out.extend_from_slice(&bytes[pos..end]);
                pos = end.max(pos + 2);
            }
        }
    }
    out
}

fn bad(msg: String) -> ImageError {
    ImageError::Decode(format!("JPEG: {msg}"))
}

/// Fatal libjpeg errors: features Pillow can read but an 8-bit decode cannot reproduce are
/// `Unsupported`, the rest is corrupt data.
fn classify(msg: &str) -> ImageError {
    let msg = message(msg);
    if msg.contains("data precision") {
        ImageError::Unsupported(format!("JPEG: {msg}"))
    } else {
        bad(msg.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(width: usize, height: usize, format: PixelFormat, progressive: bool) -> Vec<u8> {
        let subsamp = match format {
            PixelFormat::GRAY => turbojpeg::Subsamp::Gray,
            _ => turbojpeg::Subsamp::Sub2x2,
        };
        encode_with(width, height, format, progressive, subsamp)
    }

    fn encode_with(
        width: usize,
        height: usize,
        format: PixelFormat,
        progressive: bool,
        subsamp: turbojpeg::Subsamp,
    ) -> Vec<u8> {
        let ch = format.size();
        let pixels: Vec<u8> = (0..width * height * ch)
            .map(|i| ((i * 7 + i / (width * ch) * 13) % 251) as u8)
            .collect();
        let mut c = turbojpeg::Compressor::new().unwrap();
        c.set_quality(90).unwrap();
        c.set_progressive(progressive).unwrap();
        c.set_subsamp(subsamp).unwrap();
        c.compress_to_vec(turbojpeg::Image {
            pixels: &pixels[..],
            width,
            pitch: width * ch,
            height,
            format,
        })
        .unwrap()
    }

    #[test]
    fn modes_and_sizes() {
        let rgb = decode(&encode(33, 17, PixelFormat::RGB, false), u64::MAX).unwrap();
        assert_eq!((rgb.width, rgb.height, rgb.mode), (33, 17, Mode::Rgb));
        assert_eq!(rgb.data.len(), 33 * 17 * 3);
        let grey = decode(&encode(9, 12, PixelFormat::GRAY, true), u64::MAX).unwrap();
        assert_eq!((grey.width, grey.height, grey.mode), (9, 12, Mode::L));
        let cmyk = decode(&encode(8, 8, PixelFormat::CMYK, false), u64::MAX).unwrap();
        assert_eq!(cmyk.mode, Mode::Cmyk);
    }

    /// The window decode gives exactly the full decode's pixels wherever the resize reads, for
    /// every sampling TurboJPEG crops, progressive files, greyscale and CMYK, and windows at
    /// every position (wide, tall and nearly square images).
    #[test]
    fn window_decodes_match_full_decodes_where_the_resize_reads() {
        use turbojpeg::Subsamp::*;
        let cases = [
            (PixelFormat::RGB, Sub2x2, false),
            (PixelFormat::RGB, Sub2x1, false),
            (PixelFormat::RGB, None, true),
            (PixelFormat::RGB, Sub1x2, false),
            (PixelFormat::RGB, Sub4x1, false),
            (PixelFormat::RGB, Sub2x2, true),
            (PixelFormat::GRAY, Gray, false),
            (PixelFormat::CMYK, Sub2x2, false),
        ];
        let mut partial = 0;
        for (format, subsamp, progressive) in cases {
            for (w, h) in [(403, 130), (97, 389), (260, 231), (1000, 81)] {
                let jpeg = encode_with(w, h, format, progressive, subsamp);
                let full = decode(&jpeg, u64::MAX).unwrap();
                // TurboJPEG can crop every one of these files.
                let mut turbo = PartialDecoder::new().unwrap();
                assert!(turbo.sampling(&jpeg).unwrap().is_some(), "{subsamp:?}");
                for size in [24, 64] {
                    let part = decode_window(&jpeg, u64::MAX, size).unwrap();
                    assert_eq!((part.width, part.height, part.mode), (w, h, full.mode));
                    let ((c0, c1), (r0, r1)) = source_window(w, h, size);
                    let ch = format.size();
                    for y in r0..r1 {
                        let span = y * w * ch + c0 * ch..y * w * ch + c1 * ch;
                        assert_eq!(
                            part.data[span.clone()],
                            full.data[span],
                            "{format:?} {subsamp:?} progressive {progressive}, {w}x{h} \
                             to {size}, row {y}"
                        );
                    }
                    partial += usize::from((c1 - c0) * (r1 - r0) * 10 <= w * h * 9);
                }
            }
        }
        assert!(
            partial > 40,
            "most windows took the partial path: {partial}"
        );
    }

    #[test]
    fn pixel_limit_applies_before_decoding() {
        let jpeg = encode(40, 30, PixelFormat::RGB, false);
        assert!(matches!(
            decode(&jpeg, 40 * 30 - 1),
            Err(ImageError::TooLarge {
                width: 40,
                height: 30,
                ..
            })
        ));
        assert!(matches!(
            decode_scaled(&jpeg, 40 * 30 - 1, 1),
            Err(ImageError::TooLarge { .. })
        ));
    }

    #[test]
    fn truncated_and_garbage_data_are_errors() {
        let jpeg = encode(64, 48, PixelFormat::RGB, false);
        let cut = &jpeg[..jpeg.len() / 2];
        assert!(
            matches!(decode(cut, u64::MAX), Err(ImageError::Decode(m)) if m.contains("truncated"))
        );
        let progressive = encode(64, 48, PixelFormat::RGB, true);
        assert!(decode(&progressive[..progressive.len() - 40], u64::MAX).is_err());
        // Without its EOI marker, as Pillow says for most such files.
        assert!(decode(&jpeg[..jpeg.len() - 2], u64::MAX).is_err());
        assert!(decode(b"\xFF\xD8\xFF\xE0garbage", u64::MAX).is_err());
        assert!(decode(&jpeg[..2], u64::MAX).is_err());
    }

    #[test]
    fn extraneous_bytes_are_a_warning_not_an_error() {
        let jpeg = encode(16, 16, PixelFormat::RGB, false);
        let clean = decode(&jpeg, u64::MAX).unwrap();
        // Junk between the entropy data and EOI: libjpeg warns and decodes, like Pillow.
        let mut junk = jpeg[..jpeg.len() - 2].to_vec();
        junk.extend_from_slice(b"\x00\x01\x02\xFF\xD9");
        let tolerant = decode(&junk, u64::MAX).unwrap();
        assert_eq!(tolerant.width, clean.width);
        // Junk between header segments: TurboJPEG's header call refuses it, libjpeg skips it.
        let mut header_junk = jpeg[..2].to_vec();
        header_junk.extend_from_slice(b"junk");
        header_junk.extend_from_slice(&jpeg[2..]);
        assert_eq!(decode(&header_junk, u64::MAX).unwrap(), clean);
    }

    #[test]
    fn dct_scaling_keeps_the_short_side() {
        let jpeg = encode(800, 500, PixelFormat::RGB, false);
        let at = |min| {
            let img = decode_scaled(&jpeg, u64::MAX, min).unwrap();
            (img.width, img.height)
        };
        assert_eq!(at(60), (100, 63));
        assert_eq!(at(100), (200, 125));
        assert_eq!(at(224), (400, 250));
        assert_eq!(at(251), (800, 500));
        // Exact decoding afterwards on the same thread is unaffected by the last scale.
        assert_eq!(decode(&jpeg, u64::MAX).unwrap().width, 800);
    }
}
