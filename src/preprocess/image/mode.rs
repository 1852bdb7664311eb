//! Pillow image modes, premultiplied alpha and `convert('RGB')`.

/// The Pillow mode of a decoded image: it decides how Pillow resizes the image and how
/// `convert('RGB')` maps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// `1`: bilevel, stored one byte per pixel as 0 or 255; nearest resampling.
    One,
    /// `L`: 8-bit grey.
    L,
    /// `LA`: grey + alpha, resized premultiplied (Pillow's `La`).
    La,
    /// `P`: palette indices (one byte per pixel) with a 256-entry RGB palette; nearest resampling.
    P,
    /// `P` whose palette was already applied by the decoder (3 bytes per pixel). Nearest
    /// resampling commutes with the palette lookup, so this is resized and converted exactly
    /// like `P`.
    PRgb,
    /// `RGB`.
    Rgb,
    /// `RGBA`, resized premultiplied (Pillow's `RGBa`); `convert('RGB')` drops alpha.
    Rgba,
    /// `CMYK` with Pillow's (non-inverted) ink values.
    Cmyk,
    /// `I;16`: 16-bit grey, resized with Pillow's 16-bit resampler.
    I16,
    /// `I`: 32-bit signed grey. Only 16-bit PGM opens as `I` here, so the samples (0..=65535)
    /// are kept in `data16`; the resampler keeps the pass between its two passes unclamped, as
    /// Pillow's 32-bit resampler does.
    I,
}

impl Mode {
    /// Interleaved samples per pixel.
    pub(crate) fn channels(self) -> usize {
        match self {
            Mode::One | Mode::L | Mode::P | Mode::I16 | Mode::I => 1,
            Mode::La => 2,
            Mode::PRgb | Mode::Rgb => 3,
            Mode::Rgba | Mode::Cmyk => 4,
        }
    }

    /// `I;16` or `I`: samples live in `PilImage::data16`.
    pub(crate) fn is_wide(self) -> bool {
        matches!(self, Mode::I16 | Mode::I)
    }
}

/// A decoded image in a Pillow mode.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct PilImage {
    pub width: usize,
    pub height: usize,
    pub mode: Mode,
    /// Interleaved 8-bit samples, `width*height*channels` (empty for `I;16` and `I`).
    pub data: Vec<u8>,
    /// `I;16` and `I` samples, `width*height` (empty otherwise).
    pub data16: Vec<u16>,
    /// `P` only: 256 RGB entries (768 bytes); entries missing from the file are black, as in
    /// Pillow.
    pub palette: Vec<u8>,
}

impl PilImage {
    pub(crate) fn new_u8(width: usize, height: usize, mode: Mode, data: Vec<u8>) -> Self {
        debug_assert!(!mode.is_wide() && mode != Mode::P);
        debug_assert_eq!(data.len(), width * height * mode.channels());
        PilImage {
            width,
            height,
            mode,
            data,
            data16: Vec::new(),
            palette: Vec::new(),
        }
    }

    /// A `P` image; `palette` holds RGB triplets and is padded (or cut) to 256 entries.
    pub(crate) fn new_p(width: usize, height: usize, indices: Vec<u8>, palette: &[u8]) -> Self {
        debug_assert_eq!(indices.len(), width * height);
        let mut pal = vec![0u8; 768];
        let n = palette.len().min(768);
        pal[..n].copy_from_slice(&palette[..n]);
        PilImage {
            width,
            height,
            mode: Mode::P,
            data: indices,
            data16: Vec::new(),
            palette: pal,
        }
    }

    pub(crate) fn new_i16(width: usize, height: usize, data16: Vec<u16>) -> Self {
        Self::new_wide(width, height, Mode::I16, data16)
    }

    /// An `I;16` or `I` image from its samples.
    pub(crate) fn new_wide(width: usize, height: usize, mode: Mode, data16: Vec<u16>) -> Self {
        debug_assert!(mode.is_wide());
        debug_assert_eq!(data16.len(), width * height);
        PilImage {
            width,
            height,
            mode,
            data: Vec::new(),
            data16,
            palette: Vec::new(),
        }
    }

    /// An empty image of the same mode (and palette) with the given size, zero-filled.
    pub(crate) fn blank_like(&self, width: usize, height: usize) -> Self {
        let n = width * height;
        PilImage {
            width,
            height,
            mode: self.mode,
            data: if self.mode.is_wide() {
                Vec::new()
            } else {
                vec![0; n * self.mode.channels()]
            },
            data16: if self.mode.is_wide() {
                vec![0; n]
            } else {
                Vec::new()
            },
            palette: self.palette.clone(),
        }
    }

    /// Pillow's `convert('RGB')`, as interleaved RGB bytes.
    pub(crate) fn to_rgb(&self) -> Vec<u8> {
        let n = self.width * self.height;
        let mut out = Vec::with_capacity(n * 3);
        match self.mode {
            // bit2rgb: any non-zero value is white.
            Mode::One => {
                for &v in &self.data {
                    let v = if v != 0 { 255 } else { 0 };
                    out.extend_from_slice(&[v, v, v]);
                }
            }
            Mode::L => {
                for &v in &self.data {
                    out.extend_from_slice(&[v, v, v]);
                }
            }
            Mode::La => {
                for p in self.data.chunks_exact(2) {
                    out.extend_from_slice(&[p[0], p[0], p[0]]);
                }
            }
            Mode::P => {
                for &i in &self.data {
                    let i = usize::from(i) * 3;
                    out.extend_from_slice(&self.palette[i..i + 3]);
                }
            }
            Mode::PRgb | Mode::Rgb => out.extend_from_slice(&self.data),
            Mode::Rgba => {
                for p in self.data.chunks_exact(4) {
                    out.extend_from_slice(&p[..3]);
                }
            }
            // Pillow ≥ 10.1 cmyk2rgb: MULDIV255(255 - ink, 255 - black).
            Mode::Cmyk => {
                for p in self.data.chunks_exact(4) {
                    let k = 255 - p[3];
                    out.extend_from_slice(&[
                        muldiv255(255 - p[0], k),
                        muldiv255(255 - p[1], k),
                        muldiv255(255 - p[2], k),
                    ]);
                }
            }
            // I;16 and I → RGB clip to 255 (Pillow 13), they do not scale.
            Mode::I16 | Mode::I => {
                for &v in &self.data16 {
                    let v = v.min(255) as u8;
                    out.extend_from_slice(&[v, v, v]);
                }
            }
        }
        out
    }
}

/// Pillow's `MULDIV255`: `a*b/255`, rounded.
#[inline]
pub(crate) fn muldiv255(a: u8, b: u8) -> u8 {
    let t = u32::from(a) * u32::from(b) + 128;
    (((t >> 8) + t) >> 8) as u8
}

/// `RGBA → RGBa` / `LA → La` (Pillow's `rgbA2rgba`): colour channels times alpha, in place.
/// `channels` is 2 or 4; the last sample of each pixel is alpha.
pub(crate) fn premultiply(data: &mut [u8], channels: usize) {
    for px in data.chunks_exact_mut(channels) {
        if let Some((&mut a, colour)) = px.split_last_mut() {
            for c in colour {
                *c = muldiv255(*c, a);
            }
        }
    }
}

/// `RGBa → RGBA` / `La → LA` (Pillow's `rgba2rgbA`): `CLIP8(255*c/alpha)` in integers, pixels
/// with alpha 0 or 255 untouched. In place; the last sample of each pixel is alpha.
pub(crate) fn unpremultiply(data: &mut [u8], channels: usize) {
    for px in data.chunks_exact_mut(channels) {
        if let Some((&mut a, colour)) = px.split_last_mut() {
            if a == 0 || a == 255 {
                continue;
            }
            let a = u32::from(a);
            for c in colour {
                *c = ((255 * u32::from(*c)) / a).min(255) as u8;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn muldiv255_matches_exact_rounding() {
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                let exact = (f64::from(a) * f64::from(b) / 255.0).round() as u8;
                assert_eq!(muldiv255(a, b), exact, "{a} {b}");
            }
        }
    }

    #[test]
    fn premultiply_round_trip() {
        // Opaque and fully transparent pixels: alpha 255 keeps the colour exactly, alpha 0
        // turns it black (and unpremultiplying leaves it black).
        let mut px = vec![10, 200, 255, 255, 10, 200, 255, 0, 200, 100, 50, 128];
        premultiply(&mut px, 4);
        assert_eq!(&px[..8], &[10, 200, 255, 255, 0, 0, 0, 0]);
        assert_eq!(&px[8..], &[100, 50, 25, 128]);
        unpremultiply(&mut px, 4);
        assert_eq!(&px[..8], &[10, 200, 255, 255, 0, 0, 0, 0]);
        // 255*100/128 = 199 (integer division), 255*50/128 = 99, 255*25/128 = 49.
        assert_eq!(&px[8..], &[199, 99, 49, 128]);

        // The round trip never moves a value by more than 255/alpha.
        for a in 1..=255u8 {
            for c in 0..=255u8 {
                let mut p = [c, a];
                premultiply(&mut p, 2);
                unpremultiply(&mut p, 2);
                let tol = 255 / u32::from(a) + 1;
                assert!(u32::from(p[0].abs_diff(c)) <= tol, "{c} {a} -> {}", p[0]);
                assert_eq!(p[1], a);
            }
        }
        // A premultiplied value above alpha saturates at 255.
        let mut p = [200, 100];
        unpremultiply(&mut p, 2);
        assert_eq!(p, [255, 100]);
    }

    #[test]
    fn rgb_conversions() {
        let one = PilImage::new_u8(2, 1, Mode::One, vec![0, 255]);
        assert_eq!(one.to_rgb(), vec![0, 0, 0, 255, 255, 255]);
        let p = PilImage::new_p(3, 1, vec![0, 1, 200], &[1, 2, 3, 4, 5, 6]);
        assert_eq!(p.to_rgb(), vec![1, 2, 3, 4, 5, 6, 0, 0, 0]);
        let cmyk = PilImage::new_u8(1, 1, Mode::Cmyk, vec![0, 255, 100, 51]);
        // (255-0)*(255-51)/255 = 204; (0)*… = 0; 155*204/255 = 124.
        assert_eq!(cmyk.to_rgb(), vec![204, 0, 124]);
        let i16 = PilImage::new_i16(3, 1, vec![7, 255, 4000]);
        assert_eq!(i16.to_rgb(), vec![7, 7, 7, 255, 255, 255, 255, 255, 255]);
        let la = PilImage::new_u8(1, 1, Mode::La, vec![9, 0]);
        assert_eq!(la.to_rgb(), vec![9, 9, 9]);
        let rgba = PilImage::new_u8(1, 1, Mode::Rgba, vec![9, 8, 7, 0]);
        assert_eq!(rgba.to_rgb(), vec![9, 8, 7]);
    }
}
