//! Image preprocessing, bit-identical to CLIP-as-service's Pillow pipeline.
//!
//! CLIP-as-service (`_transform_blob`) does, per image:
//!
//! 1. `PIL.Image.open(BytesIO(blob))`: frame 0, no EXIF rotation, full-resolution JPEG decode;
//! 2. torchvision `Resize(S, BICUBIC)` on the PIL image **in its own mode**: short side → `S`,
//!    long side → `int(S*long/short)`, no-op when the size already matches; Pillow's convolution
//!    resampler (`P`/`1` use nearest, `RGBA`/`LA` are resized premultiplied). As in Pillow 13
//!    (the reference used by the fixtures), the vertical pass runs first when the height shrinks
//!    by more than twice as many pixels as the width; Pillow ≤ 11 always went horizontal first,
//!    which differs by at most one level on some pixels of such (tall, downscaled) images;
//! 3. `CenterCrop(S)` with offsets `round((dim − S)/2)` (round half to even);
//! 4. `.convert('RGB')` with Pillow's per-mode rules;
//! 5. `ToTensor` + `Normalize(CLIP_MEAN, CLIP_STD)` in float32, CHW.
//!
//! [`preprocess_bytes`] and [`preprocess_tensor`] do steps 1–4 and return the `S×S` RGB crop;
//! [`normalize_into`] does step 5. The pieces:
//!
//! - `decode`: format sniffing and decoders producing a Pillow-mode image;
//! - `ico`, `pnm`, `tga`, `tiff`: the decoders of those formats;
//! - `avif`: the AVIF decoder (AV1 via rav1d, libyuv-exact YUV→RGB);
//! - `buffer`: the pixel-count guard and fallible allocation all decoders share;
//! - `jpeg`: JPEG through libjpeg-turbo, decoded as Pillow decodes it (exact mode: only the
//!   pixels the resize reads) or with DCT-domain downscaling (fast mode, [`ImageMode::Fast`]);
//! - `turbo`: TurboJPEG's partial decompression, which the `turbojpeg` crate lacks;
//! - `mode`: Pillow modes, premultiplication and `convert('RGB')`;
//! - `resample`: Pillow's bicubic convolution and affine nearest resamplers;
//! - `crop`: output size and centre-crop offsets;
//! - `normalize`: the float32 normalisation.
//!
//! Only the `S×S` window that survives the centre crop is ever resampled: every output pixel of
//! Pillow's two-pass resampler depends only on its own coefficients, so computing the window is
//! bit-identical to resizing the whole image and cropping afterwards, and much cheaper.

mod avif;
mod buffer;
mod convolve;
mod crop;
mod decode;
mod ico;
mod jpeg;
mod mode;
mod normalize;
mod pnm;
mod resample;
mod tga;
mod tiff;
mod turbo;

pub use normalize::normalize_into;

use mode::{Mode, PilImage};

/// Pillow's decompression-bomb error threshold (`2 * Image.MAX_IMAGE_PIXELS`).
pub const DEFAULT_MAX_PIXELS: u64 = 178_956_970;

/// CLIP normalisation mean, per RGB channel.
pub(crate) const CLIP_MEAN: [f32; 3] = [0.48145466, 0.4578275, 0.40821073];

/// CLIP normalisation standard deviation, per RGB channel.
///
/// Written as in CLIP / CLIP-as-service; like torch, the decimal literals are rounded to f32.
#[allow(clippy::excessive_precision)]
pub(crate) const CLIP_STD: [f32; 3] = [0.26862954, 0.26130258, 0.27577711];

/// Why an image could not be preprocessed.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The bytes are not a decodable image (unknown format, corrupt or truncated data).
    #[error("cannot decode image: {0}")]
    Decode(String),
    /// A recognised format or format feature that this build cannot decode.
    #[error("unsupported image: {0}")]
    Unsupported(String),
    /// The image has more pixels than allowed (decompression-bomb guard).
    #[error("image of {width}x{height} pixels exceeds the limit of {max_pixels} pixels")]
    TooLarge {
        width: u64,
        height: u64,
        max_pixels: u64,
    },
    /// A tensor input with a shape or length that cannot be an image.
    #[error("invalid image tensor: {0}")]
    InvalidTensor(String),
}

/// S×S RGB, HWC uint8: the image after resize, centre crop and RGB conversion.
#[derive(Debug, Clone, PartialEq)]
pub struct RgbCrop {
    pub size: u32,
    pub data: Vec<u8>,
}

/// Decode an encoded image (JPEG, PNG, GIF, BMP, TIFF, WebP, AVIF, ICO, PNM, TGA) and return its `size×size` RGB crop,
/// exactly as CLIP-as-service's Pillow pipeline produces it.
///
/// Images with more than `max_pixels` pixels are rejected with [`ImageError::TooLarge`] before
/// any pixel buffer is allocated. Variants Pillow reads but this pipeline cannot reproduce exactly
/// (arithmetic-coded JPEG, 10/12-bit AVIF, premultiplied-alpha TIFF, ...) are [`ImageError::Unsupported`].
pub fn preprocess_bytes(bytes: &[u8], size: u32, max_pixels: u64) -> Result<RgbCrop, ImageError> {
    preprocess_bytes_with(bytes, size, max_pixels, ImageMode::Exact)
}

/// How encoded images are decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ImageMode {
    /// Bit-identical to CLIP-as-service's Pillow pipeline.
    #[default]
    Exact,
    /// JPEGs are decoded at the smallest DCT scale (1/2, 1/4 or 1/8) whose short side is still
    /// at least the crop size, then resized exactly: several times faster on photos, close to
    /// but not bit-identical with Pillow. Other formats decode as in exact mode.
    Fast,
}

impl std::str::FromStr for ImageMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "exact" => Ok(ImageMode::Exact),
            "fast" => Ok(ImageMode::Fast),
            other => Err(format!(
                "invalid image mode `{other}`: expected exact or fast"
            )),
        }
    }
}

impl std::fmt::Display for ImageMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ImageMode::Exact => "exact",
            ImageMode::Fast => "fast",
        })
    }
}

/// [`preprocess_bytes`] in the given [`ImageMode`].
pub fn preprocess_bytes_with(
    bytes: &[u8],
    size: u32,
    max_pixels: u64,
    mode: ImageMode,
) -> Result<RgbCrop, ImageError> {
    check_size(size)?;
    let image = match mode {
        ImageMode::Fast if decode::sniff(bytes) == decode::Format::Jpeg => {
            jpeg::decode_scaled(bytes, max_pixels, size as usize)?
        }
        // Only the pixels the resize below reads are decoded.
        ImageMode::Exact if decode::sniff(bytes) == decode::Format::Jpeg => {
            jpeg::decode_window(bytes, max_pixels, size as usize)?
        }
        _ => decode::decode(bytes, max_pixels)?,
    };
    let crop = crop_image(&image, size);
    buffer::recycle(image.data);
    Ok(crop)
}

/// Preprocess a uint8 HWC tensor the way CLIP-as-service does for `Document.tensor`.
///
/// The original casts to uint8, squeezes all length-1 axes, builds a PIL image (`[H,W]` → `L`,
/// `[H,W,2]` → `LA`, `[H,W,3]` → `RGB`, `[H,W,4]` → `RGBA`), converts 3-D tensors to `RGB`
/// (dropping alpha without premultiplying), round-trips through a lossless PNG and then runs the
/// blob pipeline. A 1-D tensor (after squeezing) goes through docarray's 28×28 MNIST PNG writer.
/// The PNG round trip is lossless and reopens as the same mode, so it is skipped here.
///
/// `shape` is the tensor shape (`[H,W]`, `[H,W,1]`, `[H,W,3]` or `[H,W,4]`, plus any shape that
/// squeezes to one of those) and `data` its row-major bytes.
pub fn preprocess_tensor(
    data: &[u8],
    shape: &[usize],
    size: u32,
    max_pixels: u64,
) -> Result<RgbCrop, ImageError> {
    check_size(size)?;
    let image = tensor_image(data, shape, max_pixels)?;
    Ok(crop_image(&image, size))
}

/// The model input size is a configuration value (224, 240, 336, ...), not user input; absurd
/// values are refused instead of attempting multi-gigabyte crops.
const MAX_CROP_SIZE: u32 = 8192;

fn check_size(size: u32) -> Result<(), ImageError> {
    if size == 0 || size > MAX_CROP_SIZE {
        return Err(ImageError::Unsupported(format!(
            "a crop size of {size} (supported: 1..={MAX_CROP_SIZE})"
        )));
    }
    Ok(())
}

/// Steps 2–4: resize (only the window that survives the crop), crop, convert to RGB.
fn crop_image(image: &PilImage, size: u32) -> RgbCrop {
    let s = size as usize;
    let (new_w, new_h) = crop::resized_size(image.width, image.height, s);
    let left = crop::crop_offset(new_w, s);
    let top = crop::crop_offset(new_h, s);
    let window = if (new_w, new_h) == (image.width, image.height) {
        // torchvision and Pillow both return the image unchanged (no premultiplication).
        crop::crop(image, left, top, s)
    } else {
        resample::resize_window(image, new_w, new_h, left, top, s)
    };
    RgbCrop {
        size,
        data: window.to_rgb(),
    }
}

/// Build the PIL image that CLIP-as-service's tensor → PNG → `Image.open` path ends up with.
fn tensor_image(data: &[u8], shape: &[usize], max_pixels: u64) -> Result<PilImage, ImageError> {
    let total = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| ImageError::InvalidTensor(format!("shape {shape:?} overflows")))?;
    if total != data.len() {
        return Err(ImageError::InvalidTensor(format!(
            "shape {shape:?} needs {total} bytes, got {}",
            data.len()
        )));
    }
    if total == 0 {
        return Err(ImageError::InvalidTensor(format!(
            "shape {shape:?} is empty"
        )));
    }
    // numpy `squeeze()`: drop every length-1 axis.
    let squeezed: Vec<usize> = shape.iter().copied().filter(|&d| d != 1).collect();
    let check = |w: usize, h: usize| -> Result<(), ImageError> {
        let pixels = (w as u64).saturating_mul(h as u64);
        if pixels > max_pixels {
            return Err(ImageError::TooLarge {
                width: w as u64,
                height: h as u64,
                max_pixels,
            });
        }
        Ok(())
    };
    match squeezed.as_slice() {
        // A single pixel squeezes to 0-D, which no docarray branch handles.
        [] => Err(ImageError::InvalidTensor(format!(
            "shape {shape:?} squeezes to a scalar"
        ))),
        [n] => {
            // docarray `_png_to_buffer_1d(arr, 28, 28)`: an opaque grey RGBA PNG whose pixel
            // (r, c) is arr[len-1-((27-r)*28+c)]; shorter arrays give a broken PNG.
            const SIDE: usize = 28;
            if *n < SIDE * SIDE {
                return Err(ImageError::InvalidTensor(format!(
                    "1-D tensor of {n} values: the MNIST path needs at least 784"
                )));
            }
            let mut rgba = Vec::with_capacity(SIDE * SIDE * 4);
            for r in 0..SIDE {
                for c in 0..SIDE {
                    let v = data[n - 1 - ((SIDE - 1 - r) * SIDE + c)];
                    rgba.extend_from_slice(&[v, v, v, 255]);
                }
            }
            Ok(PilImage::new_u8(SIDE, SIDE, Mode::Rgba, rgba))
        }
        [h, w] => {
            check(*w, *h)?;
            Ok(PilImage::new_u8(*w, *h, Mode::L, data.to_vec()))
        }
        [h, w, c] => {
            check(*w, *h)?;
            let (w, h, c) = (*w, *h, *c);
            let rgb = match c {
                3 => data.to_vec(),
                // fromarray → RGBA/LA, then convert('RGB'): alpha dropped, not premultiplied.
                4 => data
                    .chunks_exact(4)
                    .flat_map(|p| [p[0], p[1], p[2]])
                    .collect(),
                2 => data
                    .chunks_exact(2)
                    .flat_map(|p| [p[0], p[0], p[0]])
                    .collect(),
                _ => {
                    return Err(ImageError::InvalidTensor(format!(
                        "shape {shape:?}: {c} channels (need 2, 3 or 4)"
                    )))
                }
            };
            Ok(PilImage::new_u8(w, h, Mode::Rgb, rgb))
        }
        _ => Err(ImageError::InvalidTensor(format!(
            "shape {shape:?} has more than 3 non-trivial axes"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensor_shapes() {
        let s = 8;
        let m = DEFAULT_MAX_PIXELS;
        let rgb: Vec<u8> = (0..5 * 7 * 3).map(|i| (i * 7 % 256) as u8).collect();
        let a = preprocess_tensor(&rgb, &[5, 7, 3], s, m).unwrap();
        let b = preprocess_tensor(&rgb, &[1, 5, 7, 3], s, m).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.data.len(), 8 * 8 * 3);

        // [H,W] and [H,W,1] are the same L image; an L image replicated to RGB resizes the same.
        let grey: Vec<u8> = (0..5 * 7).map(|i| (i * 11 % 256) as u8).collect();
        let l = preprocess_tensor(&grey, &[5, 7], s, m).unwrap();
        let l1 = preprocess_tensor(&grey, &[5, 7, 1], s, m).unwrap();
        assert_eq!(l, l1);
        let grey_rgb: Vec<u8> = grey.iter().flat_map(|&v| [v, v, v]).collect();
        assert_eq!(l, preprocess_tensor(&grey_rgb, &[5, 7, 3], s, m).unwrap());

        // 4 channels: alpha is dropped without premultiplication.
        let rgba: Vec<u8> = rgb
            .chunks_exact(3)
            .flat_map(|p| [p[0], p[1], p[2], 0])
            .collect();
        assert_eq!(a, preprocess_tensor(&rgba, &[5, 7, 4], s, m).unwrap());

        assert!(matches!(
            preprocess_tensor(&[0; 5 * 7 * 5], &[5, 7, 5], s, m),
            Err(ImageError::InvalidTensor(_))
        ));
        let la: Vec<u8> = grey.iter().flat_map(|&v| [v, 9]).collect();
        assert_eq!(l, preprocess_tensor(&la, &[5, 7, 2], s, m).unwrap());
        assert!(matches!(
            preprocess_tensor(&rgb[..10], &[5, 3], s, m),
            Err(ImageError::InvalidTensor(_))
        ));
        assert!(matches!(
            preprocess_tensor(&[], &[0, 3, 3], s, m),
            Err(ImageError::InvalidTensor(_))
        ));
        assert!(matches!(
            preprocess_tensor(&[1], &[1, 1, 1], s, m),
            Err(ImageError::InvalidTensor(_))
        ));
        assert!(matches!(
            preprocess_tensor(&rgb, &[5, 7, 3], s, 34),
            Err(ImageError::TooLarge { .. })
        ));
        let mnist: Vec<u8> = (0..784).map(|i| (i % 256) as u8).collect();
        assert!(preprocess_tensor(&mnist, &[784], s, m).is_ok());
        assert!(matches!(
            preprocess_tensor(&mnist[..700], &[700], s, m),
            Err(ImageError::InvalidTensor(_))
        ));
    }

    #[test]
    fn zero_size_is_rejected() {
        assert!(preprocess_tensor(&[0; 12], &[2, 2, 3], 0, DEFAULT_MAX_PIXELS).is_err());
    }
}
