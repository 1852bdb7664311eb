//! JPEG decoding that reproduces Pillow's libjpeg-turbo output bit for bit.
//!
//! Pillow decodes with libjpeg-turbo's defaults: the accurate integer IDCT (`JDCT_ISLOW`),
//! "fancy" (triangle-filter) chroma upsampling and 16-bit fixed-point YCbCr → RGB tables.
//! zune-jpeg differs in all three (up to ±5 levels on 4:2:0 images), so this module implements
//! the same arithmetic: the IDCT as libjpeg-turbo's x86-64 SIMD code computes it (identical to
//! `jidctint.c` for valid data, and also matching on overflowing garbage), `jdsample.c`'s
//! upsamplers and `jdcolor.c`'s tables, on top of a Huffman decoder for baseline, extended and
//! progressive frames with `jdhuff.c` / `jdphuff.c` / `jdmarker.c` semantics, including
//! libjpeg's handling of corrupt data (a marker inside entropy data zero-fills the rest of the
//! segment, restart resynchronisation, bad codes decode as 0, per-MCU data exhaustion).
//!
//! Pillow-level behaviour:
//! - 1 component → `L`, 3 → `RGB` (YCbCr or RGB colour space, chosen like libjpeg from the
//!   JFIF/Adobe markers and component ids), 4 → `CMYK` read with Pillow's `CMYK;I` rawmode
//!   (inverted, "Adobe polarity"); YCCK is converted to CMYK first like libjpeg.
//! - No EXIF orientation, no DCT scaling.
//! - Running out of data before the image is complete is an error ("image file is
//!   truncated"); a single-scan sequential image is complete after its scan.
//!
//! Not supported: arithmetic coding, lossless (SOF3/SOF11) and 12-bit JPEGs (libjpeg-turbo
//! decodes the first two), hierarchical JPEGs (libjpeg refuses them too), and libjpeg's
//! inter-block smoothing, which it applies only to progressive files whose final scans are
//! missing (corrupt or cut-short files).

use super::buffer::{check_pixels, filled};
use super::mode::{Mode, PilImage};
use super::ImageError;

/// Zigzag index → natural (row-major) index, with libjpeg's 16 extra entries for corrupt runs.
const NATURAL: [usize; 80] = [
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20,
    13, 6, 7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59,
    52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63,
    63, 63, 63, 63, 63, 63,
];

/// libjpeg's `JPEG_MAX_DIMENSION`.
const MAX_DIMENSION: usize = 65500;
/// libjpeg's `D_MAX_BLOCKS_IN_MCU`.
const MAX_BLOCKS_IN_MCU: usize = 10;

fn bad(msg: impl Into<String>) -> ImageError {
    ImageError::Decode(format!("JPEG: {}", msg.into()))
}

fn unsupported(msg: &str) -> ImageError {
    ImageError::Unsupported(format!("JPEG: {msg}"))
}

const TRUNCATED: &str = "JPEG: image file is truncated";

fn truncated() -> ImageError {
    ImageError::Decode(TRUNCATED.to_owned())
}

fn is_truncated(e: &ImageError) -> bool {
    matches!(e, ImageError::Decode(m) if m == TRUNCATED)
}

// ---------------------------------------------------------------------------------------------
// Huffman tables

/// A derived decoding table (`jpeg_make_d_derived_tbl`).
#[derive(Clone)]
struct Huffman {
    /// 8-bit lookahead: (code length, symbol); length 0 means "longer than 8 bits".
    look: [(u8, u8); 256],
    /// Largest code of each length (index 1..=16); -1 if none; `maxcode[17]` is a sentinel.
    maxcode: [i32; 18],
    /// `symbol index = code + valoffset[len]`.
    valoffset: [i32; 18],
    values: Vec<u8>,
}

impl Huffman {
    fn new(counts: &[u8; 16], values: Vec<u8>, is_dc: bool) -> Result<Huffman, ImageError> {
        let total: usize = counts.iter().map(|&c| usize::from(c)).sum();
        if total > 256 || values.len() < total {
            return Err(bad("bad Huffman table"));
        }
        if is_dc && values[..total].iter().any(|&v| v > 15) {
            return Err(bad("bad Huffman table"));
        }
        // Canonical codes.
        let mut sizes = Vec::with_capacity(total);
        for (len, &count) in counts.iter().enumerate() {
            sizes.extend(std::iter::repeat_n(len as u8 + 1, usize::from(count)));
        }
        let mut codes = Vec::with_capacity(total);
        let mut code: u32 = 0;
        let mut si = sizes.first().copied().unwrap_or(0);
        let mut p = 0;
        while p < sizes.len() {
            while p < sizes.len() && sizes[p] == si {
                codes.push(code);
                code += 1;
                p += 1;
            }
            if u64::from(code) >= 1u64 << si {
                return Err(bad("bad Huffman table"));
            }
            code <<= 1;
            si += 1;
        }
        let mut maxcode = [-1i32; 18];
        let mut valoffset = [0i32; 18];
        let mut p = 0usize;
        for len in 1..=16 {
            let count = usize::from(counts[len - 1]);
            if count > 0 {
                valoffset[len] = p as i32 - codes[p] as i32;
                p += count;
                maxcode[len] = codes[p - 1] as i32;
            }
        }
        maxcode[17] = 0xFFFFF;
        let mut look = [(0u8, 0u8); 256];
        let mut p = 0usize;
        for len in 1..=8usize {
            for _ in 0..counts[len - 1] {
                let base = (codes[p] as usize) << (8 - len);
                for entry in look.iter_mut().skip(base).take(1 << (8 - len)) {
                    *entry = (len as u8, values[p]);
                }
                p += 1;
            }
        }
        Ok(Huffman {
            look,
            maxcode,
            valoffset,
            values: values[..total].to_vec(),
        })
    }
}

/// A Huffman table as defined by DHT.
#[derive(Clone)]
struct RawTable {
    counts: [u8; 16],
    values: Vec<u8>,
}

impl RawTable {
    fn derive(&self, is_dc: bool) -> Result<Huffman, ImageError> {
        Huffman::new(&self.counts, self.values.clone(), is_dc)
    }
}

/// The JPEG standard (Annex K.3) Huffman tables, which libjpeg-turbo substitutes for tables 0 and
/// 1 when a scan uses a table no DHT defined (Motion-JPEG frames omit them).
const STD_DC_LUMA: ([u8; 16], &[u8]) = (
    [0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0],
    &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],
);
const STD_DC_CHROMA: ([u8; 16], &[u8]) = (
    [0, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0],
    &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],
);
const STD_AC_LUMA: ([u8; 16], &[u8]) = (
    [0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 125],
    &[
        0x01, 0x02, 0x03, 0x00, 0x04, 0x11, 0x05, 0x12, 0x21, 0x31, 0x41, 0x06, 0x13, 0x51, 0x61,
        0x07, 0x22, 0x71, 0x14, 0x32, 0x81, 0x91, 0xa1, 0x08, 0x23, 0x42, 0xb1, 0xc1, 0x15, 0x52,
        0xd1, 0xf0, 0x24, 0x33, 0x62, 0x72, 0x82, 0x09, 0x0a, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x25,
        0x26, 0x27, 0x28, 0x29, 0x2a, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x43, 0x44, 0x45,
        0x46, 0x47, 0x48, 0x49, 0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x63, 0x64,
        0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x83,
        0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99,
        0x9a, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6,
        0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xd2, 0xd3,
        0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda, 0xe1, 0xe2, 0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8,
        0xe9, 0xea, 0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8, 0xf9, 0xfa,
    ],
);
const STD_AC_CHROMA: ([u8; 16], &[u8]) = (
    [0, 2, 1, 2, 4, 4, 3, 4, 7, 5, 4, 4, 0, 1, 2, 119],
    &[
        0x00, 0x01, 0x02, 0x03, 0x11, 0x04, 0x05, 0x21, 0x31, 0x06, 0x12, 0x41, 0x51, 0x07, 0x61,
        0x71, 0x13, 0x22, 0x32, 0x81, 0x08, 0x14, 0x42, 0x91, 0xa1, 0xb1, 0xc1, 0x09, 0x23, 0x33,
        0x52, 0xf0, 0x15, 0x62, 0x72, 0xd1, 0x0a, 0x16, 0x24, 0x34, 0xe1, 0x25, 0xf1, 0x17, 0x18,
        0x19, 0x1a, 0x26, 0x27, 0x28, 0x29, 0x2a, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x43, 0x44,
        0x45, 0x46, 0x47, 0x48, 0x49, 0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x63,
        0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a,
        0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97,
        0x98, 0x99, 0x9a, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4,
        0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xca,
        0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda, 0xe2, 0xe3, 0xe4, 0xe5, 0xe6, 0xe7,
        0xe8, 0xe9, 0xea, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8, 0xf9, 0xfa,
    ],
);

/// The derived table for a scan (`jpeg_make_d_derived_tbl`): the DHT-defined one, or the
/// standard table for indices 0 and 1.
fn derived_table(
    tables: &[Option<RawTable>; 4],
    index: usize,
    is_dc: bool,
) -> Result<Huffman, ImageError> {
    if let Some(Some(t)) = tables.get(index) {
        return t.derive(is_dc);
    }
    let (counts, values) = match (is_dc, index) {
        (true, 0) => STD_DC_LUMA,
        (true, 1) => STD_DC_CHROMA,
        (false, 0) => STD_AC_LUMA,
        (false, 1) => STD_AC_CHROMA,
        _ => return Err(bad("Huffman table not defined")),
    };
    Huffman::new(&counts, values.to_vec(), is_dc)
}

// ---------------------------------------------------------------------------------------------
// Entropy-coded data reader

/// Bit reader over entropy-coded data with libjpeg's marker semantics.
struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
    /// MSB-aligned bit buffer.
    buf: u64,
    /// Valid bits in `buf`.
    count: u32,
    /// A marker met inside the data (libjpeg's `unread_marker`); the reader is past it.
    marker: Option<u8>,
    /// The data ended without a marker.
    eof: bool,
    /// libjpeg's `insufficient_data`: bits were needed past a marker in this segment.
    insufficient: bool,
}

impl<'a> Bits<'a> {
    fn new(data: &'a [u8], pos: usize) -> Self {
        Bits {
            data,
            pos,
            buf: 0,
            count: 0,
            marker: None,
            eof: false,
            insufficient: false,
        }
    }

    /// `fill_bit_buffer`: load whole bytes, un-stuffing `FF 00` and stopping at markers.
    fn fill(&mut self) {
        while self.count <= 56 && self.marker.is_none() && !self.eof {
            let Some(&b) = self.data.get(self.pos) else {
                self.eof = true;
                break;
            };
            self.pos += 1;
            let mut byte = b;
            if b == 0xFF {
                // Skip fill bytes; FF 00 is a data FF, anything else a marker.
                loop {
                    let Some(&c) = self.data.get(self.pos) else {
                        self.eof = true;
                        return;
                    };
                    self.pos += 1;
                    if c != 0xFF {
                        if c == 0 {
                            byte = 0xFF;
                        } else {
                            self.marker = Some(c);
                        }
                        break;
                    }
                }
                if self.marker.is_some() {
                    break;
                }
            }
            self.buf |= u64::from(byte) << (56 - self.count);
            self.count += 8;
        }
    }

    /// Make `n` (≤ 25) bits available; past a marker, zero bits are supplied and the segment
    /// is flagged as insufficient.
    #[inline]
    fn ensure(&mut self, n: u32) {
        if self.count < n {
            self.fill();
            if self.count < n {
                self.insufficient = true;
                self.count = 57;
            }
        }
    }

    #[inline]
    fn peek(&mut self, n: u32) -> u32 {
        self.ensure(n);
        (self.buf >> (64 - n)) as u32
    }

    #[inline]
    fn skip(&mut self, n: u32) {
        self.buf <<= n;
        self.count -= n;
    }

    #[inline]
    fn get(&mut self, n: u32) -> i32 {
        if n == 0 {
            return 0;
        }
        let v = self.peek(n);
        self.skip(n);
        v as i32
    }

    #[inline]
    fn bit(&mut self) -> bool {
        self.get(1) != 0
    }

    /// Decode one Huffman symbol (`HUFF_DECODE` / `jpeg_huff_decode`); a code longer than 16
    /// bits yields 0, as in libjpeg.
    #[inline]
    fn decode(&mut self, t: &Huffman) -> u8 {
        if self.count < 8 {
            self.fill();
        }
        let (mut l, mut code) = if self.count >= 8 {
            let (len, sym) = t.look[self.peek(8) as usize];
            if len != 0 {
                self.skip(u32::from(len));
                return sym;
            }
            (9usize, self.get(9))
        } else {
            // Near a marker: bit by bit, so that only bits really needed count as missing.
            (1usize, self.get(1))
        };
        while l <= 16 && code > t.maxcode[l] {
            code = (code << 1) | self.get(1);
            l += 1;
        }
        if l > 16 {
            return 0;
        }
        let idx = code + t.valoffset[l];
        usize::try_from(idx)
            .ok()
            .and_then(|i| t.values.get(i))
            .copied()
            .unwrap_or(0)
    }

    /// Drop buffered bits (at a restart marker or the end of a scan).
    fn discard(&mut self) {
        self.buf = 0;
        self.count = 0;
    }
}

/// `HUFF_EXTEND`.
#[inline]
fn extend(v: i32, s: u32) -> i32 {
    if s == 0 {
        0
    } else if v < (1 << (s - 1)) {
        v + ((-1i32) << s) + 1
    } else {
        v
    }
}

// ---------------------------------------------------------------------------------------------
// Frame and decoder state

#[derive(Clone)]
struct Component {
    id: u8,
    h: usize,
    v: usize,
    tq: usize,
    /// Quantisation table latched at the component's first scan.
    qt: Option<[u16; 64]>,
    /// Blocks per row / column, padded to whole MCUs.
    bw: usize,
    bh: usize,
    /// Real blocks per row / column (non-interleaved scans).
    wib: usize,
    hib: usize,
    /// `downsampled_width` / `downsampled_height`.
    dw: usize,
    dh: usize,
}

struct Frame {
    width: usize,
    height: usize,
    progressive: bool,
    comps: Vec<Component>,
    max_h: usize,
    max_v: usize,
    mcux: usize,
    mcuy: usize,
}

struct Decoder<'a> {
    data: &'a [u8],
    pos: usize,
    qt: [Option<[u16; 64]>; 4],
    /// Huffman tables as defined (counts, symbols); libjpeg validates and derives them when a
    /// scan starts using them.
    dc: [Option<RawTable>; 4],
    ac: [Option<RawTable>; 4],
    restart_interval: usize,
    jfif: bool,
    adobe: Option<u8>,
    frame: Option<Frame>,
    /// Sample planes (`bw*8 × bh*8`), one per component.
    planes: Vec<Vec<u8>>,
    /// Progressive coefficients, one `bw*bh*64` array per component.
    coefs: Vec<Vec<i16>>,
    eoi: bool,
    /// The last scan was a sequential scan of every component.
    single_scan_done: bool,
    /// At least one scan was read.
    saw_scan: bool,
}

/// Decode a JPEG into its Pillow mode (`L`, `RGB` or `CMYK`).
pub(crate) fn decode(bytes: &[u8], max_pixels: u64) -> Result<PilImage, ImageError> {
    let mut d = Decoder {
        data: bytes,
        pos: 0,
        qt: [None; 4],
        dc: [None, None, None, None],
        ac: [None, None, None, None],
        restart_interval: 0,
        jfif: false,
        adobe: None,
        frame: None,
        planes: Vec::new(),
        coefs: Vec::new(),
        eoi: false,
        single_scan_done: false,
        saw_scan: false,
    };
    if bytes.get(..2) != Some(&[0xFF, 0xD8][..]) {
        return Err(bad("not a JPEG file"));
    }
    d.pos = 2;
    let mut pending: Option<u8> = None;
    // A sequential image whose first scan holds every component is complete after that scan:
    // Pillow has all its scanlines, and libjpeg's search for EOI may then run out of data
    // harmlessly (but still fails on a second SOS or a broken marker segment).
    let mut complete = false;
    while !d.eoi {
        let marker = match pending.take() {
            Some(m) => m,
            None => match d.next_marker() {
                Ok(m) => m,
                Err(_) if complete => break,
                Err(e) => return Err(e),
            },
        };
        if complete && marker == 0xDA {
            return Err(bad("expected EOI after the only scan"));
        }
        match d.marker(marker, max_pixels) {
            Ok(next) => pending = next,
            Err(e) if complete && is_truncated(&e) => break,
            Err(e) => return Err(e),
        }
        if marker == 0xDA && !complete {
            complete = d.single_scan_done;
        }
    }
    d.finish()
}

/// libjpeg's `next_marker`: from `pos`, skip garbage to `FF`, skip fill bytes, and return the
/// marker code with the position after it.
fn find_marker(data: &[u8], mut pos: usize) -> Result<(u8, usize), ImageError> {
    loop {
        while *data.get(pos).ok_or_else(truncated)? != 0xFF {
            pos += 1;
        }
        while *data.get(pos).ok_or_else(truncated)? == 0xFF {
            pos += 1;
        }
        let c = data[pos];
        pos += 1;
        if c != 0 {
            return Ok((c, pos));
        }
    }
}

/// Restart handling at an interval boundary (`process_restart` + `read_restart_marker` +
/// `jpeg_resync_to_restart`): drop buffered bits, find the marker, accept the expected `RSTn`
/// or resynchronise like libjpeg, and reset the insufficient-data flag when the next segment
/// is readable.
fn restart(bits: &mut Bits, next_rst: &mut u8) {
    bits.discard();
    let mut marker = match bits.marker.take() {
        Some(m) => Some(m),
        None => match find_marker(bits.data, bits.pos) {
            Ok((m, pos)) => {
                bits.pos = pos;
                Some(m)
            }
            Err(_) => {
                bits.eof = true;
                None
            }
        },
    };
    if let Some(m) = marker {
        if m == 0xD0 + *next_rst {
            marker = None;
        } else {
            let desired = *next_rst;
            let rst = |k: u8| 0xD0 + (k & 7);
            let mut cur = m;
            loop {
                let is_rst = (0xD0..=0xD7).contains(&cur);
                let ahead =
                    cur == rst(desired.wrapping_add(1)) || cur == rst(desired.wrapping_add(2));
                let behind =
                    cur == rst(desired.wrapping_sub(1)) || cur == rst(desired.wrapping_sub(2));
                // 1: desired or too far away; 2: invalid or an earlier RST, so look further;
                // 3: a valid non-RST marker or one of the next two RSTs, so stop here.
                let action = if cur < 0xC0 {
                    2
                } else if !is_rst || ahead {
                    3
                } else if behind {
                    2
                } else {
                    1
                };
                match action {
                    // Discard the marker and resume decoding.
                    1 => {
                        marker = None;
                        break;
                    }
                    // Leave the marker: the next segment decodes as empty.
                    3 => {
                        marker = Some(cur);
                        break;
                    }
                    // Skip to the following marker and decide again.
                    _ => match find_marker(bits.data, bits.pos) {
                        Ok((next, pos)) => {
                            bits.pos = pos;
                            cur = next;
                        }
                        Err(_) => {
                            bits.eof = true;
                            marker = None;
                            break;
                        }
                    },
                }
            }
        }
    }
    bits.marker = marker;
    *next_rst = (*next_rst + 1) & 7;
    if bits.marker.is_none() && !bits.eof {
        bits.insufficient = false;
    }
}

impl Decoder<'_> {
    fn next_marker(&mut self) -> Result<u8, ImageError> {
        let (m, pos) = find_marker(self.data, self.pos)?;
        self.pos = pos;
        Ok(m)
    }

    /// Big-endian 16-bit value of a marker segment.
    fn u16be(&mut self) -> Result<u16, ImageError> {
        let hi = self.byte()?;
        let lo = self.byte()?;
        Ok(u16::from_be_bytes([hi, lo]))
    }

    /// The next `n` bytes of a marker segment. Running out of data leaves the position at the
    /// end of the input (libjpeg would suspend there).
    fn take(&mut self, n: usize) -> Result<Vec<u8>, ImageError> {
        let end = self.pos.saturating_add(n);
        match self.data.get(self.pos..end) {
            Some(bytes) => {
                self.pos = end;
                Ok(bytes.to_vec())
            }
            None => {
                self.pos = self.data.len();
                Err(truncated())
            }
        }
    }

    /// `skip_variable`: a length word, then that many bytes (less the word) skipped.
    fn skip_segment(&mut self) -> Result<(), ImageError> {
        let len = usize::from(self.u16be()?);
        self.take(len.saturating_sub(2)).map(|_| ())
    }

    /// Handle one marker; returns a marker already read by a scan.
    fn marker(&mut self, m: u8, max_pixels: u64) -> Result<Option<u8>, ImageError> {
        match m {
            0xD8 => Err(bad("duplicate SOI marker")),
            0xD9 => {
                self.eoi = true;
                Ok(None)
            }
            0xC0..=0xC2 => {
                // get_sof (libjpeg-turbo 3): duplicate check first, then the fixed part and
                // the empty / length checks.
                if self.frame.is_some() {
                    return Err(bad("duplicate SOF marker"));
                }
                let len = usize::from(self.u16be()?);
                let head = self.take(6)?;
                let n = usize::from(head[5]);
                let height = u16::from_be_bytes([head[1], head[2]]);
                let width = u16::from_be_bytes([head[3], head[4]]);
                if height == 0 || width == 0 || n == 0 {
                    return Err(bad("empty JPEG image (DNL not supported)"));
                }
                if len.checked_sub(8) != Some(3 * n) {
                    return Err(bad("bogus SOF length"));
                }
                let mut seg = head;
                seg.extend(self.take(3 * n)?);
                self.sof(&seg, m == 0xC2, max_pixels)?;
                Ok(None)
            }
            // libjpeg-turbo (and so Pillow) decodes these two; this decoder does not.
            0xC3 | 0xCB => Err(unsupported("lossless JPEG is not supported")),
            0xC9 | 0xCA => Err(unsupported("arithmetic-coded JPEG is not supported")),
            // Hierarchical and JPG-extension frames: libjpeg refuses them too.
            0xC5..=0xC8 | 0xCD..=0xCF => Err(unsupported("hierarchical JPEG is not supported")),
            0xC4 => {
                self.dht()?;
                Ok(None)
            }
            0xCC => {
                self.dac()?;
                Ok(None)
            }
            0xDB => {
                self.dqt()?;
                Ok(None)
            }
            0xDD => {
                if self.u16be()? != 4 {
                    return Err(bad("bogus DRI length"));
                }
                self.restart_interval = usize::from(self.u16be()?);
                Ok(None)
            }
            0xDA => {
                if self.frame.is_none() {
                    return Err(bad("SOS before SOF"));
                }
                let len = usize::from(self.u16be()?);
                let n = self.byte()?;
                let n_ = usize::from(n);
                if len != 2 * n_ + 6 || !(1..=4).contains(&n_) {
                    return Err(bad("bogus SOS length"));
                }
                let mut seg = vec![n];
                seg.extend(self.take(2 * n_ + 3)?);
                self.sos(&seg)
            }
            0xE0 | 0xEE => {
                // get_interesting_appn: up to 14 bytes examined, the rest skipped.
                let len = i64::from(self.u16be()?) - 2;
                let head = self.take(len.clamp(0, 14) as usize)?;
                if m == 0xE0 && head.len() >= 14 && head.starts_with(b"JFIF\0") {
                    self.jfif = true;
                }
                if m == 0xEE && head.len() >= 12 && head.starts_with(b"Adobe") {
                    self.adobe = Some(head[11]);
                }
                if len > 14 {
                    self.take((len - 14) as usize)?;
                }
                Ok(None)
            }
            // Other APPn, COM and DNL segments are skipped.
            0xDC | 0xE1..=0xED | 0xEF | 0xFE => {
                self.skip_segment()?;
                Ok(None)
            }
            // RSTn and TEM carry no length; libjpeg ignores stray ones.
            0xD0..=0xD7 | 0x01 => Ok(None),
            // Anything else (JPGn, RESn, ...) is an error for libjpeg.
            _ => Err(bad(format!("unsupported marker type 0x{m:02x}"))),
        }
    }

    /// `get_dqt`: 64 values per table (8- or 16-bit), zigzag order.
    fn dqt(&mut self) -> Result<(), ImageError> {
        let mut length = i64::from(self.u16be()?) - 2;
        while length > 0 {
            let n = self.byte()?;
            let (precision, index) = (n >> 4, usize::from(n & 15));
            if index >= 4 {
                return Err(bad("bogus DQT index"));
            }
            let mut table = [0u16; 64];
            for &pos in &NATURAL[..64] {
                table[pos] = if precision != 0 {
                    self.u16be()?
                } else {
                    u16::from(self.byte()?)
                };
            }
            self.qt[index] = Some(table);
            length -= 65;
            if precision != 0 {
                length -= 64;
            }
        }
        if length != 0 {
            return Err(bad("bogus DQT length"));
        }
        Ok(())
    }

    /// `get_dac`: arithmetic conditioning values are validated and otherwise unused.
    fn dac(&mut self) -> Result<(), ImageError> {
        let mut length = i64::from(self.u16be()?) - 2;
        while length > 0 {
            let index = self.byte()?;
            let val = self.byte()?;
            length -= 2;
            if index >= 32 || (index < 16 && (val & 15) > (val >> 4)) {
                return Err(bad("bogus DAC value"));
            }
        }
        if length != 0 {
            return Err(bad("bogus DAC length"));
        }
        Ok(())
    }

    /// One byte of a marker segment; running out of data leaves the position at the end.
    fn byte(&mut self) -> Result<u8, ImageError> {
        match self.data.get(self.pos) {
            Some(&b) => {
                self.pos += 1;
                Ok(b)
            }
            None => {
                self.pos = self.data.len();
                Err(truncated())
            }
        }
    }

    /// `get_dht`, reading incrementally with libjpeg's checks in libjpeg's order.
    fn dht(&mut self) -> Result<(), ImageError> {
        let hi = self.byte()?;
        let lo = self.byte()?;
        let mut length = i64::from(u16::from_be_bytes([hi, lo])) - 2;
        while length > 16 {
            let index = self.byte()?;
            let mut counts = [0u8; 16];
            for c in &mut counts {
                *c = self.byte()?;
            }
            let count: i64 = counts.iter().map(|&c| i64::from(c)).sum();
            length -= 17;
            if count > 256 || count > length {
                return Err(bad("bogus Huffman table definition"));
            }
            let mut values = Vec::with_capacity(count as usize);
            for _ in 0..count {
                values.push(self.byte()?);
            }
            length -= count;
            let (slot, index) = if index & 0x10 != 0 {
                (&mut self.ac, usize::from(index - 0x10))
            } else {
                (&mut self.dc, usize::from(index))
            };
            let entry = slot.get_mut(index).ok_or_else(|| bad("bogus DHT index"))?;
            *entry = Some(RawTable { counts, values });
        }
        if length != 0 {
            return Err(bad("bogus marker length"));
        }
        Ok(())
    }

    fn sof(&mut self, seg: &[u8], progressive: bool, max_pixels: u64) -> Result<(), ImageError> {
        if self.frame.is_some() {
            return Err(bad("duplicate SOF marker"));
        }
        if seg.len() < 6 {
            return Err(bad("bogus SOF length"));
        }
        if seg[0] != 8 {
            return Err(unsupported(&format!(
                "{}-bit samples are not supported",
                seg[0]
            )));
        }
        let height = usize::from(u16::from_be_bytes([seg[1], seg[2]]));
        let width = usize::from(u16::from_be_bytes([seg[3], seg[4]]));
        let n = usize::from(seg[5]);
        if height == 0 || width == 0 {
            return Err(bad("empty JPEG image (DNL not supported)"));
        }
        if width > MAX_DIMENSION || height > MAX_DIMENSION {
            return Err(bad("maximum supported image dimension is 65500 pixels"));
        }
        if !matches!(n, 1 | 3 | 4) {
            return Err(bad(format!("cannot handle {n}-layer images")));
        }
        if seg.len() != 6 + 3 * n {
            return Err(bad("bogus SOF length"));
        }
        check_pixels(width, height, max_pixels)?;
        let mut comps = Vec::with_capacity(n);
        for c in seg[6..].chunks_exact(3) {
            let (h, v) = (usize::from(c[1] >> 4), usize::from(c[1] & 15));
            if !(1..=4).contains(&h) || !(1..=4).contains(&v) {
                return Err(bad("bogus sampling factors"));
            }
            comps.push(Component {
                id: c[0],
                h,
                v,
                tq: usize::from(c[2]),
                qt: None,
                bw: 0,
                bh: 0,
                wib: 0,
                hib: 0,
                dw: 0,
                dh: 0,
            });
        }
        let max_h = comps.iter().map(|c| c.h).max().unwrap_or(1);
        let max_v = comps.iter().map(|c| c.v).max().unwrap_or(1);
        let mcux = width.div_ceil(8 * max_h);
        let mcuy = height.div_ceil(8 * max_v);
        for c in &mut comps {
            c.dw = (width * c.h).div_ceil(max_h);
            c.dh = (height * c.v).div_ceil(max_v);
            c.wib = c.dw.div_ceil(8);
            c.hib = c.dh.div_ceil(8);
            c.bw = mcux * c.h;
            c.bh = mcuy * c.v;
        }
        let frame = Frame {
            width,
            height,
            progressive,
            comps,
            max_h,
            max_v,
            mcux,
            mcuy,
        };
        // Unscanned components read as mid grey, like libjpeg's zeroed coefficient buffers.
        for c in &frame.comps {
            let samples = c.bw * 8 * c.bh * 8;
            if progressive {
                self.coefs.push(filled(samples, 0i16)?);
            } else {
                self.planes.push(filled(samples, 128u8)?);
            }
        }
        self.frame = Some(frame);
        Ok(())
    }

    /// Parse a scan header and decode its entropy-coded data. Returns the marker that ended it.
    fn sos(&mut self, seg: &[u8]) -> Result<Option<u8>, ImageError> {
        let frame = self.frame.as_mut().ok_or_else(|| bad("SOS before SOF"))?;
        let n = usize::from(*seg.first().ok_or_else(|| bad("bogus SOS length"))?);
        if !(1..=4).contains(&n) || seg.len() != 4 + 2 * n {
            return Err(bad("bogus SOS length"));
        }
        let mut scan = Vec::with_capacity(n);
        for c in seg[1..1 + 2 * n].chunks_exact(2) {
            let ci = frame
                .comps
                .iter()
                .position(|comp| comp.id == c[0])
                .ok_or_else(|| bad("invalid component id in SOS"))?;
            if scan.iter().any(|s: &ScanComp| s.ci == ci) {
                return Err(bad("duplicate component in SOS"));
            }
            scan.push(ScanComp {
                ci,
                td: usize::from(c[1] >> 4),
                ta: usize::from(c[1] & 15),
            });
        }
        let p = &seg[1 + 2 * n..];
        let (ss, se, ah, al) = (
            usize::from(p[0]),
            usize::from(p[1]),
            u32::from(p[2] >> 4),
            u32::from(p[2] & 15),
        );
        if n > 1 {
            let blocks: usize = scan
                .iter()
                .map(|s| frame.comps[s.ci].h * frame.comps[s.ci].v)
                .sum();
            if blocks > MAX_BLOCKS_IN_MCU {
                return Err(bad("sampling factors too large for interleaved scan"));
            }
        }
        if frame.progressive {
            let is_dc = ss == 0;
            let mut wrong = if is_dc {
                se != 0
            } else {
                ss > se || se >= 64 || n != 1
            };
            if ah != 0 && al != ah - 1 {
                wrong = true;
            }
            if al > 13 {
                wrong = true;
            }
            if wrong {
                return Err(bad("invalid progressive parameters"));
            }
        }
        // Latch quantisation tables at each component's first scan.
        for s in &scan {
            let comp = &mut frame.comps[s.ci];
            if comp.qt.is_none() {
                let table = self.qt.get(comp.tq).copied().flatten();
                comp.qt = Some(table.ok_or_else(|| bad("quantisation table not defined"))?);
            }
        }
        let params = ScanParams { ss, se, ah, al };
        self.single_scan_done = !frame.progressive && n == frame.comps.len();
        self.saw_scan = true;
        let start = self.pos;
        let mut bits = Bits::new(self.data, start);
        if self.frame.as_ref().is_some_and(|f| f.progressive) {
            self.decode_progressive(&scan, params, &mut bits)?;
        } else {
            self.decode_sequential(&scan, &mut bits)?;
        }
        bits.discard();
        self.pos = bits.pos;
        if bits.eof && bits.marker.is_none() {
            return Err(truncated());
        }
        Ok(bits.marker)
    }

    /// The MCU layout of a scan: per MCU, the component blocks to visit.
    fn scan_geometry(&self, scan: &[ScanComp]) -> (usize, usize) {
        let Some(frame) = &self.frame else {
            return (0, 0);
        };
        if scan.len() == 1 {
            let c = &frame.comps[scan[0].ci];
            (c.wib, c.hib)
        } else {
            (frame.mcux, frame.mcuy)
        }
    }

    fn decode_sequential(&mut self, scan: &[ScanComp], bits: &mut Bits) -> Result<(), ImageError> {
        let (mx, my) = self.scan_geometry(scan);
        let frame = self.frame.as_ref().ok_or_else(|| bad("no frame"))?;
        let mut tables = Vec::with_capacity(scan.len());
        for s in scan {
            tables.push((
                derived_table(&self.dc, s.td, true)?,
                derived_table(&self.ac, s.ta, false)?,
            ));
        }
        let single = scan.len() == 1;
        let mut last_dc = [0i32; 4];
        let mut restarts_to_go = self.restart_interval;
        let mut next_rst = 0u8;
        let mut block = [0i16; 64];
        for my_ in 0..my {
            for mx_ in 0..mx {
                if self.restart_interval > 0 {
                    if restarts_to_go == 0 {
                        restart(bits, &mut next_rst);
                        last_dc = [0; 4];
                        restarts_to_go = self.restart_interval;
                    }
                    restarts_to_go -= 1;
                }
                // libjpeg checks for exhausted data once per MCU: the blocks after the one
                // that ran into a marker still decode (from zero bits).
                let skip = bits.insufficient;
                for (si, s) in scan.iter().enumerate() {
                    let comp = &frame.comps[s.ci];
                    let (bh, bv) = if single { (1, 1) } else { (comp.h, comp.v) };
                    let qt = comp
                        .qt
                        .as_ref()
                        .ok_or_else(|| bad("no quantisation table"))?;
                    let stride = comp.bw * 8;
                    for by in 0..bv {
                        for bx in 0..bh {
                            block.fill(0);
                            if !skip {
                                let (dc, ac) = (&tables[si].0, &tables[si].1);
                                let t = bits.decode(dc);
                                let s_ = u32::from(t);
                                let diff = extend(bits.get(s_), s_);
                                last_dc[si] = last_dc[si].wrapping_add(diff);
                                block[0] = last_dc[si] as i16;
                                let mut k = 1usize;
                                while k < 64 {
                                    let rs = bits.decode(ac);
                                    let r = usize::from(rs >> 4);
                                    let s_ = u32::from(rs & 15);
                                    if s_ != 0 {
                                        k += r;
                                        let v = extend(bits.get(s_), s_);
                                        block[NATURAL[k]] = v as i16;
                                    } else if r != 15 {
                                        break;
                                    } else {
                                        k += 15;
                                    }
                                    k += 1;
                                }
                            }
                            let (col, row) = if single {
                                (mx_, my_)
                            } else {
                                (mx_ * comp.h + bx, my_ * comp.v + by)
                            };
                            let plane = &mut self.planes[s.ci];
                            idct_islow(&block, qt, plane, row * 8 * stride + col * 8, stride);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn decode_progressive(
        &mut self,
        scan: &[ScanComp],
        p: ScanParams,
        bits: &mut Bits,
    ) -> Result<(), ImageError> {
        let (mx, my) = self.scan_geometry(scan);
        let frame = self.frame.as_ref().ok_or_else(|| bad("no frame"))?;
        let single = scan.len() == 1;
        let is_dc = p.ss == 0;
        // DC first scans need DC tables, AC scans AC tables; DC refinement needs none.
        let mut tables: Vec<Option<Huffman>> = Vec::with_capacity(scan.len());
        for s in scan {
            tables.push(if is_dc && p.ah != 0 {
                None
            } else if is_dc {
                Some(derived_table(&self.dc, s.td, true)?)
            } else {
                Some(derived_table(&self.ac, s.ta, false)?)
            });
        }
        let mut last_dc = [0i32; 4];
        let mut eobrun = 0u32;
        let mut restarts_to_go = self.restart_interval;
        let mut next_rst = 0u8;
        for my_ in 0..my {
            for mx_ in 0..mx {
                if self.restart_interval > 0 {
                    if restarts_to_go == 0 {
                        restart(bits, &mut next_rst);
                        last_dc = [0; 4];
                        eobrun = 0;
                        restarts_to_go = self.restart_interval;
                    }
                    restarts_to_go -= 1;
                }
                if bits.insufficient {
                    continue;
                }
                for (si, s) in scan.iter().enumerate() {
                    let comp = &frame.comps[s.ci];
                    let (bh, bv) = if single { (1, 1) } else { (comp.h, comp.v) };
                    for by in 0..bv {
                        for bx in 0..bh {
                            let (col, row) = if single {
                                (mx_, my_)
                            } else {
                                (mx_ * comp.h + bx, my_ * comp.v + by)
                            };
                            let off = (row * comp.bw + col) * 64;
                            let coefs = &mut self.coefs[s.ci];
                            let Some(block) = coefs.get_mut(off..off + 64) else {
                                continue;
                            };
                            match (is_dc, p.ah == 0) {
                                (true, true) => {
                                    if let Some(t) = &tables[si] {
                                        let s_ = u32::from(bits.decode(t));
                                        let diff = extend(bits.get(s_), s_);
                                        last_dc[si] = last_dc[si].wrapping_add(diff);
                                        block[0] = (last_dc[si] << p.al) as i16;
                                    }
                                }
                                (true, false) => {
                                    if bits.bit() {
                                        block[0] |= (1i32 << p.al) as i16;
                                    }
                                }
                                (false, true) => {
                                    if let Some(t) = &tables[si] {
                                        ac_first(bits, t, block, p, &mut eobrun);
                                    }
                                }
                                (false, false) => {
                                    if let Some(t) = &tables[si] {
                                        ac_refine(bits, t, block, p, &mut eobrun);
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// After EOI: IDCT progressive coefficients, upsample and colour-convert.
    fn finish(mut self) -> Result<PilImage, ImageError> {
        let frame = self.frame.take().ok_or_else(|| bad("no image in file"))?;
        if !self.saw_scan {
            return Err(bad("no scan before EOI"));
        }
        if frame.progressive {
            for (ci, comp) in frame.comps.iter().enumerate() {
                let qt = comp.qt.unwrap_or([0; 64]);
                let stride = comp.bw * 8;
                let mut plane = filled(stride * comp.bh * 8, 128u8)?;
                let coefs = &self.coefs[ci];
                for (b, block) in coefs.chunks_exact(64).enumerate() {
                    let (row, col) = (b / comp.bw, b % comp.bw);
                    let mut blk = [0i16; 64];
                    blk.copy_from_slice(block);
                    idct_islow(&blk, &qt, &mut plane, row * 8 * stride + col * 8, stride);
                }
                self.planes.push(plane);
            }
            self.coefs.clear();
        }
        let (w, h) = (frame.width, frame.height);
        let mut ups = Vec::with_capacity(frame.comps.len());
        for (comp, plane) in frame.comps.iter().zip(&self.planes) {
            ups.push(Upsampler::new(&frame, comp, plane)?);
        }
        let n = w * h;
        let image = match frame.comps.len() {
            1 => {
                let mut out = filled(n, 0u8)?;
                for (y, row) in out.chunks_exact_mut(w).enumerate() {
                    ups[0].fill(y);
                    row.copy_from_slice(&ups[0].out[..w]);
                }
                PilImage::new_u8(w, h, Mode::L, out)
            }
            3 => {
                let ycc = if self.jfif {
                    true
                } else if let Some(t) = self.adobe {
                    t != 0
                } else {
                    let ids: Vec<u8> = frame.comps.iter().map(|c| c.id).collect();
                    ids != [b'R', b'G', b'B']
                };
                let mut out = filled(n * 3, 0u8)?;
                let conv = YccTables::new();
                for (y, dst) in out.chunks_exact_mut(w * 3).enumerate() {
                    ups.iter_mut().for_each(|u| u.fill(y));
                    let (c0, c1, c2) = (&ups[0].out, &ups[1].out, &ups[2].out);
                    for (x, px) in dst.chunks_exact_mut(3).enumerate() {
                        let (a, b, c) = (c0[x], c1[x], c2[x]);
                        if ycc {
                            px.copy_from_slice(&conv.rgb(a, b, c));
                        } else {
                            px.copy_from_slice(&[a, b, c]);
                        }
                    }
                }
                PilImage::new_u8(w, h, Mode::Rgb, out)
            }
            _ => {
                // CMYK, or YCCK (Adobe transform 2 and anything but 0).
                let ycck = self.adobe.is_some_and(|t| t != 0);
                let mut out = filled(n * 4, 0u8)?;
                let conv = YccTables::new();
                for (y, dst) in out.chunks_exact_mut(w * 4).enumerate() {
                    ups.iter_mut().for_each(|u| u.fill(y));
                    let (c0, c1, c2, c3) = (&ups[0].out, &ups[1].out, &ups[2].out, &ups[3].out);
                    for (x, px) in dst.chunks_exact_mut(4).enumerate() {
                        let (c, m, yy) = if ycck {
                            // libjpeg's ycck_cmyk_convert: 255 - RGB.
                            let [r, g, b] = conv.rgb(c0[x], c1[x], c2[x]);
                            (255 - r, 255 - g, 255 - b)
                        } else {
                            (c0[x], c1[x], c2[x])
                        };
                        // Pillow's "CMYK;I" rawmode inverts every channel.
                        px.copy_from_slice(&[255 - c, 255 - m, 255 - yy, 255 - c3[x]]);
                    }
                }
                PilImage::new_u8(w, h, Mode::Cmyk, out)
            }
        };
        Ok(image)
    }
}

#[derive(Clone, Copy)]
struct ScanComp {
    ci: usize,
    td: usize,
    ta: usize,
}

#[derive(Clone, Copy)]
struct ScanParams {
    ss: usize,
    se: usize,
    ah: u32,
    al: u32,
}

/// `decode_mcu_AC_first`.
fn ac_first(bits: &mut Bits, t: &Huffman, block: &mut [i16], p: ScanParams, eobrun: &mut u32) {
    if *eobrun > 0 {
        *eobrun -= 1;
        return;
    }
    let mut k = p.ss;
    while k <= p.se {
        let rs = bits.decode(t);
        let r = u32::from(rs >> 4);
        let s = u32::from(rs & 15);
        if s != 0 {
            k += r as usize;
            let v = extend(bits.get(s), s);
            block[NATURAL[k.min(79)]] = (v << p.al) as i16;
        } else if r == 15 {
            k += 15;
        } else {
            *eobrun = 1 << r;
            if r != 0 {
                *eobrun += bits.get(r) as u32;
            }
            *eobrun -= 1;
            break;
        }
        k += 1;
    }
}

/// `decode_mcu_AC_refine`.
fn ac_refine(bits: &mut Bits, t: &Huffman, block: &mut [i16], p: ScanParams, eobrun: &mut u32) {
    let p1: i32 = 1 << p.al;
    let m1: i32 = -1 << p.al;
    let mut k = p.ss;
    // Applies a correction bit to an already non-zero coefficient.
    let correct = |bits: &mut Bits, c: &mut i16| {
        if bits.bit() && (i32::from(*c) & p1) == 0 {
            *c = if *c >= 0 {
                (i32::from(*c) + p1) as i16
            } else {
                (i32::from(*c) + m1) as i16
            };
        }
    };
    if *eobrun == 0 {
        while k <= p.se {
            let rs = bits.decode(t);
            let mut r = i32::from(rs >> 4);
            let s = rs & 15;
            let mut newval = 0i32;
            if s != 0 {
                newval = if bits.bit() { p1 } else { m1 };
            } else if r != 15 {
                *eobrun = 1u32 << r;
                if r != 0 {
                    *eobrun += bits.get(r as u32) as u32;
                }
                break;
            }
            loop {
                let pos = NATURAL[k.min(79)];
                if block[pos] != 0 {
                    correct(bits, &mut block[pos]);
                } else {
                    r -= 1;
                    if r < 0 {
                        break;
                    }
                }
                k += 1;
                if k > p.se {
                    break;
                }
            }
            if s != 0 {
                block[NATURAL[k.min(79)]] = newval as i16;
            }
            k += 1;
        }
    }
    if *eobrun > 0 {
        while k <= p.se {
            let pos = NATURAL[k];
            if block[pos] != 0 {
                correct(bits, &mut block[pos]);
            }
            k += 1;
        }
        *eobrun -= 1;
    }
}

// ---------------------------------------------------------------------------------------------
// IDCT: libjpeg-turbo's accurate integer IDCT as its AVX2 code computes it

// FIX(x) constants with CONST_BITS = 13 (jidctint.c / jidctint-avx2.asm).
const F_0_298: i32 = 2446;
const F_0_390: i32 = 3196;
const F_0_541: i32 = 4433;
const F_0_765: i32 = 6270;
const F_0_899: i32 = 7373;
const F_1_175: i32 = 9633;
const F_1_501: i32 = 12299;
const F_1_847: i32 = 15137;
const F_1_961: i32 = 16069;
const F_2_053: i32 = 16819;
const F_2_562: i32 = 20995;
const F_3_072: i32 = 25172;
const CONST_BITS: u32 = 13;
const PASS1_BITS: u32 = 2;

/// Wrap to 16 bits (`vpaddw`, `vpmullw`, `vpsllw`).
#[inline]
fn w16(x: i32) -> i32 {
    x as i16 as i32
}

/// One 1-D pass of `jsimd_idct_islow_avx2`'s `dodct` on 16-bit inputs: the even/odd butterfly
/// of `jidctint.c` rearranged into `vpmaddwd` pairs, 16-bit sums where the assembly uses
/// `vpaddw`, 32-bit wrapping arithmetic elsewhere, and a saturating pack (`vpackssdw`) of the
/// descaled outputs. For any input a valid stream produces this equals the C `jpeg_idct_islow`;
/// it also reproduces the x86-64 build (which Pillow's wheels use) on overflowing garbage.
#[inline]
fn dodct(v: [i32; 8], shift: u32) -> [i32; 8] {
    let [in0, in1, in2, in3, in4, in5, in6, in7] = v;
    let mad = |a: i32, ca: i32, b: i32, cb: i32| (a * ca).wrapping_add(b * cb);
    // Even part.
    let tmp3 = mad(in2, F_0_541 + F_0_765, in6, F_0_541);
    let tmp2 = mad(in6, F_0_541 - F_1_847, in2, F_0_541);
    let tmp0 = w16(in0 + in4) << CONST_BITS;
    let tmp1 = w16(in0 + w16(-in4)) << CONST_BITS;
    let tmp10 = tmp0.wrapping_add(tmp3);
    let tmp13 = tmp0.wrapping_sub(tmp3);
    let tmp11 = tmp1.wrapping_add(tmp2);
    let tmp12 = tmp1.wrapping_sub(tmp2);
    // Odd part.
    let z3 = w16(in7 + in3);
    let z4 = w16(in5 + in1);
    let z3p = mad(z3, F_1_175 - F_1_961, z4, F_1_175);
    let z4p = mad(z3, F_1_175, z4, F_1_175 - F_0_390);
    let t0 = mad(in7, F_0_298 - F_0_899, in1, -F_0_899).wrapping_add(z3p);
    let t1 = mad(in5, F_2_053 - F_2_562, in3, -F_2_562).wrapping_add(z4p);
    let t3 = mad(in7, -F_0_899, in1, F_1_501 - F_0_899).wrapping_add(z4p);
    let t2 = mad(in5, -F_2_562, in3, F_3_072 - F_2_562).wrapping_add(z3p);
    let d = |x: i32| (x.wrapping_add(1 << (shift - 1)) >> shift).clamp(-32768, 32767);
    [
        d(tmp10.wrapping_add(t3)),
        d(tmp11.wrapping_add(t2)),
        d(tmp12.wrapping_add(t1)),
        d(tmp13.wrapping_add(t0)),
        d(tmp13.wrapping_sub(t0)),
        d(tmp12.wrapping_sub(t1)),
        d(tmp11.wrapping_sub(t2)),
        d(tmp10.wrapping_sub(t3)),
    ]
}

/// Dequantise and inverse-transform one block into `out[off..]` (row stride `stride`), bit for
/// bit as libjpeg-turbo's `JDCT_ISLOW` on x86-64 (`jsimd_idct_islow_avx2`; its quantisation
/// table is 16-bit).
pub(crate) fn idct_islow(
    block: &[i16; 64],
    qt: &[u16; 64],
    out: &mut [u8],
    off: usize,
    stride: usize,
) {
    let deq = |i: usize| w16(i32::from(block[i]) * i32::from(qt[i] as i16));
    let mut ws = [0i32; 64];
    if block[8..].iter().all(|&c| c == 0) {
        // "AC terms all zero" for the whole block: the DC row, shifted in 16 bits.
        for col in 0..8 {
            let v = w16(deq(col) << PASS1_BITS);
            for row in 0..8 {
                ws[row * 8 + col] = v;
            }
        }
    } else {
        for col in 0..8 {
            let o = dodct(
                [
                    deq(col),
                    deq(8 + col),
                    deq(16 + col),
                    deq(24 + col),
                    deq(32 + col),
                    deq(40 + col),
                    deq(48 + col),
                    deq(56 + col),
                ],
                CONST_BITS - PASS1_BITS,
            );
            for (row, &v) in o.iter().enumerate() {
                ws[row * 8 + col] = v;
            }
        }
    }
    for row in 0..8 {
        let Some(dst) = out.get_mut(off + row * stride..off + row * stride + 8) else {
            continue;
        };
        let mut r = [0i32; 8];
        r.copy_from_slice(&ws[row * 8..row * 8 + 8]);
        let o = dodct(r, CONST_BITS + PASS1_BITS + 3);
        for (d, &x) in dst.iter_mut().zip(&o) {
            // vpacksswb + vpaddb CENTERJSAMPLE
            *d = (x.clamp(-128, 127) + 128) as u8;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Upsampling (jdsample.c) and colour conversion (jdcolor.c)

/// Row-by-row full-resolution samples of one component, computed the way libjpeg-turbo's
/// upsampler does (fancy h2v1 / h1v2 / h2v2 triangle filters, replication otherwise), with
/// libjpeg's edge handling: the rows above the first and below the last real row repeat them.
struct Upsampler<'a> {
    plane: &'a [u8],
    stride: usize,
    hf: usize,
    vf: usize,
    /// Real (downsampled) width and height.
    dw: usize,
    dh: usize,
    width: usize,
    line: Vec<i32>,
    /// The last row filled, `width` samples.
    out: Vec<u8>,
}

impl<'a> Upsampler<'a> {
    fn new(frame: &Frame, comp: &Component, plane: &'a [u8]) -> Result<Self, ImageError> {
        if !frame.max_h.is_multiple_of(comp.h) || !frame.max_v.is_multiple_of(comp.v) {
            return Err(unsupported("fractional sampling ratios are not supported"));
        }
        let hf = frame.max_h / comp.h;
        Ok(Upsampler {
            plane,
            stride: comp.bw * 8,
            hf,
            vf: frame.max_v / comp.v,
            dw: comp.dw,
            dh: comp.dh,
            width: frame.width,
            line: vec![0; comp.dw * hf.max(2)],
            out: vec![0; comp.dw * hf.max(1)],
        })
    }

    #[inline]
    fn row(&self, y: usize) -> &'a [u8] {
        let y = y.min(self.dh - 1);
        &self.plane[y * self.stride..y * self.stride + self.dw]
    }

    /// Compute output row `oy` into `self.out[..width]`.
    fn fill(&mut self, oy: usize) {
        let (hf, vf, dw) = (self.hf, self.vf, self.dw);
        let iy = oy / vf;
        let fancy_h2 = hf == 2 && dw > 2;
        if (hf, vf) == (1, 1) {
            let src = self.row(iy);
            self.out[..self.width].copy_from_slice(&src[..self.width]);
            return;
        }
        let mut line = std::mem::take(&mut self.line);
        match (hf, vf) {
            (2, 2) if fancy_h2 => {
                // h2v2_fancy_upsample: column sums 3*nearer row + further row, then
                // horizontal weights 3:1 with biases 8 and 7, all in one rounding.
                let near = self.row(iy);
                let far = if oy.is_multiple_of(2) {
                    self.row(iy.saturating_sub(1))
                } else {
                    self.row(iy + 1)
                };
                let sum = |x: usize| i32::from(near[x]) * 3 + i32::from(far[x]);
                line[0] = (sum(0) * 4 + 8) >> 4;
                line[1] = (sum(0) * 3 + sum(1) + 7) >> 4;
                for x in 1..dw - 1 {
                    let this = sum(x) * 3;
                    line[2 * x] = (this + sum(x - 1) + 8) >> 4;
                    line[2 * x + 1] = (this + sum(x + 1) + 7) >> 4;
                }
                let l = dw - 1;
                line[2 * l] = (sum(l) * 3 + sum(l - 1) + 8) >> 4;
                line[2 * l + 1] = (sum(l) * 4 + 7) >> 4;
            }
            (2, 1) if fancy_h2 => {
                // h2v1_fancy_upsample: biases 1 (left) and 2 (right).
                let src = self.row(iy);
                let s = |x: usize| i32::from(src[x]);
                line[0] = s(0);
                line[1] = (s(0) * 3 + s(1) + 2) >> 2;
                for x in 1..dw - 1 {
                    let this = s(x) * 3;
                    line[2 * x] = (this + s(x - 1) + 1) >> 2;
                    line[2 * x + 1] = (this + s(x + 1) + 2) >> 2;
                }
                let l = dw - 1;
                line[2 * l] = (s(l) * 3 + s(l - 1) + 1) >> 2;
                line[2 * l + 1] = s(l);
            }
            (1, 2) => {
                // h1v2_fancy_upsample: bias 1 towards the row above, 2 towards the row below.
                let near = self.row(iy);
                let (far, bias) = if oy.is_multiple_of(2) {
                    (self.row(iy.saturating_sub(1)), 1)
                } else {
                    (self.row(iy + 1), 2)
                };
                for x in 0..dw {
                    line[x] = (i32::from(near[x]) * 3 + i32::from(far[x]) + bias) >> 2;
                }
            }
            _ => {
                // int_upsample / h2v1_upsample / h2v2_upsample: replication.
                let src = self.row(iy);
                for x in 0..dw * hf {
                    line[x] = i32::from(src[x / hf]);
                }
            }
        }
        for (d, &v) in self.out.iter_mut().zip(line.iter()).take(self.width) {
            *d = v as u8;
        }
        self.line = line;
    }
}

/// libjpeg's `build_ycc_rgb_table` (16-bit fixed point).
struct YccTables {
    cr_r: [i32; 256],
    cb_b: [i32; 256],
    cr_g: [i32; 256],
    cb_g: [i32; 256],
}

impl YccTables {
    fn new() -> Self {
        const SCALEBITS: i32 = 16;
        const ONE_HALF: i64 = 1 << (SCALEBITS - 1);
        let fix = |x: f64| (x * f64::from(1 << SCALEBITS) + 0.5) as i64;
        let mut t = YccTables {
            cr_r: [0; 256],
            cb_b: [0; 256],
            cr_g: [0; 256],
            cb_g: [0; 256],
        };
        for i in 0..256 {
            let x = i as i64 - 128;
            t.cr_r[i] = ((fix(1.40200) * x + ONE_HALF) >> SCALEBITS) as i32;
            t.cb_b[i] = ((fix(1.77200) * x + ONE_HALF) >> SCALEBITS) as i32;
            t.cr_g[i] = (-fix(0.71414) * x) as i32;
            t.cb_g[i] = (-fix(0.34414) * x + ONE_HALF) as i32;
        }
        t
    }

    /// `ycc_rgb_convert` for one pixel.
    #[inline]
    fn rgb(&self, y: u8, cb: u8, cr: u8) -> [u8; 3] {
        let y = i32::from(y);
        let (cb, cr) = (usize::from(cb), usize::from(cr));
        let clamp = |v: i32| v.clamp(0, 255) as u8;
        [
            clamp(y + self.cr_r[cr]),
            clamp(y + ((self.cb_g[cb] + self.cr_g[cr]) >> 16)),
            clamp(y + self.cb_b[cb]),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ycc_tables_match_libjpeg() {
        let t = YccTables::new();
        // FIX(1.402) = 91881, FIX(1.772) = 116130, FIX(0.71414) = 46802, FIX(0.34414) = 22554.
        assert_eq!(t.cr_r[255], (91881 * 127 + 32768) >> 16);
        assert_eq!(t.cb_b[0], (116130 * -128 + 32768) >> 16);
        assert_eq!(t.cr_g[200], -46802 * 72);
        assert_eq!(t.cb_g[10], -22554 * -118 + 32768);
        assert_eq!(t.rgb(128, 128, 128), [128, 128, 128]);
        assert_eq!(t.rgb(0, 128, 255), [178, 0, 0]);
    }

    #[test]
    fn idct_of_dc_only_block_is_flat() {
        let mut block = [0i16; 64];
        block[0] = 10;
        let qt = [8u16; 64];
        let mut out = vec![0u8; 64];
        idct_islow(&block, &qt, &mut out, 0, 8);
        // DC 80 → 80/8 = 10 above mid grey.
        assert!(out.iter().all(|&v| v == 138));
        // The same block through the full two-pass path gives the same value.
        let full = dodct(
            [80 << PASS1_BITS, 0, 0, 0, 0, 0, 0, 0],
            CONST_BITS + PASS1_BITS + 3,
        );
        assert!(full.iter().all(|&v| v == 10));
    }

    #[test]
    fn idct_matches_the_c_reference_without_overflow() {
        // jidctint.c in 64-bit arithmetic, for comparison on in-range blocks.
        fn c_idct(block: &[i16; 64], qt: &[u16; 64]) -> [u8; 64] {
            fn pass(v: [i64; 8]) -> [i64; 8] {
                let (z2, z3) = (v[2], v[6]);
                let z1 = (z2 + z3) * 4433;
                let tmp2 = z1 + z3 * -15137;
                let tmp3 = z1 + z2 * 6270;
                let tmp0 = (v[0] + v[4]) << 13;
                let tmp1 = (v[0] - v[4]) << 13;
                let (tmp10, tmp13, tmp11, tmp12) =
                    (tmp0 + tmp3, tmp0 - tmp3, tmp1 + tmp2, tmp1 - tmp2);
                let (mut t0, mut t1, mut t2, mut t3) = (v[7], v[5], v[3], v[1]);
                let (z1, z2, z3, z4) = (t0 + t3, t1 + t2, t0 + t2, t1 + t3);
                let z5 = (z3 + z4) * 9633;
                t0 *= 2446;
                t1 *= 16819;
                t2 *= 25172;
                t3 *= 12299;
                let (z1, z2) = (z1 * -7373, z2 * -20995);
                let (z3, z4) = (z3 * -16069 + z5, z4 * -3196 + z5);
                t0 += z1 + z3;
                t1 += z2 + z4;
                t2 += z2 + z3;
                t3 += z1 + z4;
                [
                    tmp10 + t3,
                    tmp11 + t2,
                    tmp12 + t1,
                    tmp13 + t0,
                    tmp13 - t0,
                    tmp12 - t1,
                    tmp11 - t2,
                    tmp10 - t3,
                ]
            }
            let mut ws = [0i64; 64];
            for c in 0..8 {
                let o = pass(std::array::from_fn(|r| {
                    i64::from(block[r * 8 + c]) * i64::from(qt[r * 8 + c])
                }));
                for r in 0..8 {
                    ws[r * 8 + c] = (o[r] + (1 << 10)) >> 11;
                }
            }
            let mut out = [0u8; 64];
            for r in 0..8 {
                let o = pass(std::array::from_fn(|c| ws[r * 8 + c]));
                for c in 0..8 {
                    out[r * 8 + c] = (((o[c] + (1 << 17)) >> 18) + 128).clamp(0, 255) as u8;
                }
            }
            out
        }
        let mut seed = 0x9E3779B97F4A7C15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..2000 {
            let mut block = [0i16; 64];
            let mut qt = [0u16; 64];
            for i in 0..64 {
                qt[i] = 1 + (next() % 40) as u16;
                if next() % 3 == 0 {
                    let range = if i == 0 { 1024 } else { 200 };
                    block[i] = ((next() % (2 * range)) as i64 - range as i64) as i16 / qt[i] as i16;
                }
            }
            let mut out = vec![0u8; 64];
            idct_islow(&block, &qt, &mut out, 0, 8);
            assert_eq!(out, c_idct(&block, &qt).to_vec());
        }
    }

    #[test]
    fn huffman_table_rejects_overfull_codes() {
        let mut counts = [0u8; 16];
        counts[0] = 3; // three 1-bit codes cannot exist
        assert!(Huffman::new(&counts, vec![0, 1, 2], false).is_err());
        // DC symbols above 15 are rejected.
        let mut counts = [0u8; 16];
        counts[1] = 1;
        assert!(Huffman::new(&counts, vec![16], true).is_err());
        assert!(Huffman::new(&counts, vec![16], false).is_ok());
    }

    #[test]
    fn extend_matches_libjpeg() {
        assert_eq!(extend(0, 1), -1);
        assert_eq!(extend(1, 1), 1);
        assert_eq!(extend(0, 3), -7);
        assert_eq!(extend(3, 3), -4);
        assert_eq!(extend(4, 3), 4);
    }
}
