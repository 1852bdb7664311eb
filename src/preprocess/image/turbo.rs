//! Partial JPEG decompression through TurboJPEG's C API (`tj3SetCroppingRegion`), which the
//! `turbojpeg` crate does not expose: exact mode decodes only the rectangle of the image that
//! the resize window reads, so the inverse DCT, chroma upsampling and colour conversion of the
//! rest are skipped (entropy decoding still reads the whole file, as it must).
//!
//! libjpeg-turbo widens the left edge to an iMCU boundary and treats the rectangle's edges as
//! image edges when it upsamples chroma; the caller asks for one iMCU of margin on every side,
//! so every pixel it reads is computed exactly as in a full decode.

#![allow(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

use std::ffi::{c_int, CStr};
use turbojpeg_sys as raw;

/// A rectangle of the image, in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Region {
    pub x: usize,
    pub y: usize,
    pub width: usize,
    pub height: usize,
}

/// The sampling of a JPEG's components, as TurboJPEG classifies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Sampling {
    /// Pixels per iMCU (the unit of the left crop boundary and of the margins).
    pub imcu_width: usize,
    pub imcu_height: usize,
}

impl Sampling {
    fn of(subsamp: c_int) -> Option<Sampling> {
        let (w, h) = match subsamp {
            raw::TJSAMP_TJSAMP_444 | raw::TJSAMP_TJSAMP_GRAY => (8, 8),
            raw::TJSAMP_TJSAMP_422 => (16, 8),
            raw::TJSAMP_TJSAMP_420 => (16, 16),
            raw::TJSAMP_TJSAMP_440 => (8, 16),
            raw::TJSAMP_TJSAMP_411 => (32, 8),
            raw::TJSAMP_TJSAMP_441 => (8, 32),
            _ => return None,
        };
        Some(Sampling {
            imcu_width: w,
            imcu_height: h,
        })
    }

    /// `needed` widened by one iMCU on every side (clamped to the image), with its left edge
    /// on an iMCU boundary as TurboJPEG requires.
    pub(super) fn widen(&self, needed: Region, image_width: usize, image_height: usize) -> Region {
        let x0 = needed.x.saturating_sub(self.imcu_width) / self.imcu_width * self.imcu_width;
        let y0 = needed.y.saturating_sub(self.imcu_height);
        let x1 = (needed.x + needed.width + self.imcu_width).min(image_width);
        let y1 = (needed.y + needed.height + self.imcu_height).min(image_height);
        Region {
            x: x0,
            y: y0,
            width: x1.saturating_sub(x0),
            height: y1.saturating_sub(y0),
        }
    }
}

/// Where a decoded region goes: its top-left pixel at `pixels[0]`, rows `pitch` bytes apart,
/// pixels of TurboJPEG's `format` (`channels` bytes each).
pub(super) struct Output<'a> {
    pub pixels: &'a mut [u8],
    pub pitch: usize,
    pub format: c_int,
    pub channels: usize,
}

/// A TurboJPEG decompression instance.
pub(super) struct PartialDecoder {
    handle: raw::tjhandle,
}

impl PartialDecoder {
    pub(super) fn new() -> Result<PartialDecoder, String> {
        // SAFETY: `tj3Init` has no preconditions; a null result is checked below.
        let handle = unsafe { raw::tj3Init(raw::TJINIT_TJINIT_DECOMPRESS as c_int) };
        if handle.is_null() {
            return Err("cannot create a TurboJPEG instance".to_owned());
        }
        Ok(PartialDecoder { handle })
    }

    /// The message of the instance's last error or warning.
    fn error(&self) -> String {
        // SAFETY: the handle is valid; TurboJPEG returns a pointer to a NUL-terminated string
        // it owns (the instance's message buffer), valid until the next call on the instance,
        // and it is copied out at once.
        unsafe { CStr::from_ptr(raw::tj3GetErrorStr(self.handle)) }
            .to_string_lossy()
            .into_owned()
    }

    fn check(&self, status: c_int) -> Result<(), String> {
        if status == 0 {
            Ok(())
        } else {
            Err(self.error())
        }
    }

    /// Reads the header of `jpeg` and returns its sampling, or `None` when TurboJPEG cannot
    /// crop it (unusual sampling factors, lossless JPEG).
    pub(super) fn sampling(&mut self, jpeg: &[u8]) -> Result<Option<Sampling>, String> {
        let len = byte_len(jpeg)?;
        // SAFETY: the handle is valid and `jpeg` is a live slice of `len` bytes, which
        // TurboJPEG only reads.
        self.check(unsafe { raw::tj3DecompressHeader(self.handle, jpeg.as_ptr(), len) })?;
        // SAFETY: the handle is valid; `tj3Get` only reads the instance's parameters.
        let (subsamp, lossless) = unsafe {
            (
                raw::tj3Get(self.handle, raw::TJPARAM_TJPARAM_SUBSAMP as c_int),
                raw::tj3Get(self.handle, raw::TJPARAM_TJPARAM_LOSSLESS as c_int),
            )
        };
        Ok(if lossless != 0 {
            None
        } else {
            Sampling::of(subsamp)
        })
    }

    /// Decodes `region` of `jpeg` (whose header [`Self::sampling`] read) into `out`. At most
    /// `scan_limit` progressive scans are accepted. Errors and warnings come back as
    /// TurboJPEG's message (after a warning the region is complete).
    pub(super) fn decode(
        &mut self,
        jpeg: &[u8],
        region: Region,
        scan_limit: u32,
        out: Output<'_>,
    ) -> Result<(), String> {
        let Output {
            pixels: out,
            pitch,
            format: pixel_format,
            channels,
        } = out;
        let fits = region.width > 0
            && region.height > 0
            && pitch >= region.width * channels
            && (region.height - 1)
                .checked_mul(pitch)
                .and_then(|rows| rows.checked_add(region.width * channels))
                .is_some_and(|need| need <= out.len());
        let as_int = |v: usize| c_int::try_from(v).map_err(|_| format!("{v} is out of range"));
        if !fits {
            return Err(format!("output buffer too small for {region:?}"));
        }
        let crop = raw::tjregion {
            x: as_int(region.x)?,
            y: as_int(region.y)?,
            w: as_int(region.width)?,
            h: as_int(region.height)?,
        };
        let (pitch, scan_limit) = (as_int(pitch)?, as_int(scan_limit as usize)?);
        let len = byte_len(jpeg)?;
        // SAFETY: the handle is valid; these calls only set parameters of the instance (the
        // cropping region is checked against the header read by `sampling`).
        unsafe {
            self.check(raw::tj3Set(
                self.handle,
                raw::TJPARAM_TJPARAM_SCANLIMIT as c_int,
                scan_limit,
            ))?;
            self.check(raw::tj3SetCroppingRegion(self.handle, crop))?;
        }
        // SAFETY: `jpeg` is read-only input of `len` bytes. TurboJPEG writes
        // `region.height` rows of `region.width * channels` bytes, `pitch` bytes apart, from
        // `out`'s start: `fits` checked that this lies within `out`, and `channels` is the
        // size of `pixel_format`'s pixels (the caller's contract).
        let status = unsafe {
            raw::tj3Decompress8(
                self.handle,
                jpeg.as_ptr(),
                len,
                out.as_mut_ptr(),
                pitch,
                pixel_format,
            )
        };
        self.check(status)
    }
}

fn byte_len(jpeg: &[u8]) -> Result<raw::size_t, String> {
    raw::size_t::try_from(jpeg.len()).map_err(|_| "JPEG data too large".to_owned())
}

impl Drop for PartialDecoder {
    fn drop(&mut self) {
        // SAFETY: the handle came from `tj3Init` and is destroyed exactly once, here.
        unsafe { raw::tj3Destroy(self.handle) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_widen_by_one_imcu_from_an_imcu_boundary() {
        let s = Sampling::of(raw::TJSAMP_TJSAMP_420 as c_int).unwrap();
        let needed = Region {
            x: 421,
            y: 40,
            width: 1078,
            height: 1000,
        };
        let r = s.widen(needed, 1920, 1080);
        assert_eq!(r.x % 16, 0);
        assert!(r.x + 16 <= needed.x, "{r:?}");
        assert_eq!((r.y, r.x + r.width, r.y + r.height), (24, 1515, 1056));
        // At the image's edges the margin is cut off.
        let all = Region {
            x: 3,
            y: 0,
            width: 100,
            height: 50,
        };
        assert_eq!(
            s.widen(all, 100, 50),
            Region {
                x: 0,
                y: 0,
                width: 100,
                height: 50
            }
        );
        assert_eq!(Sampling::of(raw::TJSAMP_TJSAMP_UNKNOWN as c_int), None);
    }
}
