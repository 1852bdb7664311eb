//! The documents a benchmark sends: captions of realistic length and photo-like JPEGs of
//! realistic sizes, generated deterministically (the same bytes on every machine and run), or
//! image files taken from a folder.

use super::BenchError;
use crate::preprocess::input::{Document, Modality};
use std::path::{Path, PathBuf};

/// Which documents a run sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Workload {
    /// Captions only.
    Text,
    /// Images only.
    Image,
    /// Texts and images alternating.
    Mixed,
}

impl Workload {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Workload::Text => "text",
            Workload::Image => "image",
            Workload::Mixed => "mixed",
        }
    }
}

/// Width and height of a generated image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageSize {
    pub width: u16,
    pub height: u16,
}

impl std::str::FromStr for ImageSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (w, h) = s
            .split_once(['x', 'X'])
            .ok_or_else(|| format!("`{s}` is not WIDTHxHEIGHT"))?;
        let parse = |v: &str| {
            v.trim()
                .parse::<u16>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("`{s}`: sides are 1 to 65535 pixels"))
        };
        Ok(ImageSize {
            width: parse(w)?,
            height: parse(h)?,
        })
    }
}

impl std::fmt::Display for ImageSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}", self.width, self.height)
    }
}

/// A fixed pool of documents that requests take from in turn.
#[derive(Debug, Clone)]
pub(crate) struct Pool {
    docs: Vec<Document>,
}

/// Generated images per size: enough variety that no cache sees the same bytes twice in a row.
const IMAGES_PER_SIZE: usize = 8;
/// Generated captions.
const CAPTIONS: usize = 256;

impl Pool {
    /// Generated documents for `workload`: captions, and `IMAGES_PER_SIZE` JPEGs of each size
    /// (or the given image files instead).
    pub(crate) fn build(
        workload: Workload,
        sizes: &[ImageSize],
        image_files: Option<&[PathBuf]>,
    ) -> Result<Pool, BenchError> {
        let texts: Vec<Document> = match workload {
            Workload::Image => Vec::new(),
            _ => captions(CAPTIONS).into_iter().map(Document::text).collect(),
        };
        let images: Vec<Document> = match (workload, image_files) {
            (Workload::Text, _) => Vec::new(),
            (_, Some(files)) => read_images(files)?,
            (_, None) => {
                let mut out = Vec::new();
                // Sizes interleaved, so any run of requests sees all of them.
                for i in 0..IMAGES_PER_SIZE {
                    for size in sizes {
                        out.push(Document::blob(photo_jpeg(*size, i as u32)?));
                    }
                }
                out
            }
        };
        let docs = match workload {
            Workload::Text => texts,
            Workload::Image => images,
            Workload::Mixed => interleave(texts, images),
        };
        if docs.is_empty() {
            return Err(BenchError::Inputs("no documents to send".into()));
        }
        Ok(Pool { docs })
    }

    /// The documents of request number `n`, `batch` of them, continuing where request `n - 1`
    /// stopped.
    pub(crate) fn request(&self, n: u64, batch: usize) -> Vec<Document> {
        let len = self.docs.len() as u64;
        (0..batch as u64)
            .filter_map(|i| {
                let at = (n.wrapping_mul(batch as u64).wrapping_add(i)) % len;
                self.docs.get(at as usize).cloned()
            })
            .collect()
    }

    /// Writes the pool to `dir`: `texts.txt` (one caption per line) and `images/NNN.jpg` (or
    /// `.png`, ...), for other clients to send the same inputs.
    pub(crate) fn save(&self, dir: &Path) -> Result<(), BenchError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| BenchError::Io { path, source }
        };
        let images = dir.join("images");
        std::fs::create_dir_all(&images).map_err(io(&images))?;
        let mut texts = String::new();
        let mut n = 0;
        for d in &self.docs {
            if let Some(t) = &d.text {
                texts.push_str(&t.replace('\n', " "));
                texts.push('\n');
            }
            if let Some(bytes) = &d.blob {
                let ext = extension(bytes);
                let path = images.join(format!("{n:03}.{ext}"));
                std::fs::write(&path, bytes).map_err(io(&path))?;
                n += 1;
            }
        }
        let path = dir.join("texts.txt");
        std::fs::write(&path, texts).map_err(io(&path))
    }

    pub(crate) fn docs(&self) -> &[Document] {
        &self.docs
    }

    /// How many documents of each modality, and the mean bytes of the images.
    pub(crate) fn describe(&self) -> PoolSummary {
        let mut s = PoolSummary::default();
        for d in &self.docs {
            match modality(d) {
                Modality::Text => s.texts += 1,
                Modality::Image => {
                    s.images += 1;
                    s.image_bytes += d.blob.as_ref().map_or(0, Vec::len);
                }
            }
        }
        s.image_bytes = s.image_bytes.checked_div(s.images).unwrap_or(0);
        s
    }
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub(crate) struct PoolSummary {
    pub texts: usize,
    pub images: usize,
    /// Mean encoded size of the images.
    pub image_bytes: usize,
}

fn modality(d: &Document) -> Modality {
    if d.text.is_some() {
        Modality::Text
    } else {
        Modality::Image
    }
}

/// A file name extension for image bytes (the files are only read back by clients).
fn extension(bytes: &[u8]) -> &'static str {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        "jpg"
    } else if bytes.starts_with(b"\x89PNG") {
        "png"
    } else {
        "img"
    }
}

fn interleave(a: Vec<Document>, b: Vec<Document>) -> Vec<Document> {
    let n = a.len().max(b.len());
    let (mut a, mut b) = (a.into_iter().cycle(), b.into_iter().cycle());
    let mut out = Vec::with_capacity(2 * n);
    for _ in 0..n {
        out.extend(a.next());
        out.extend(b.next());
    }
    out
}

/// The given image files, read into memory.
pub(crate) fn read_images(files: &[PathBuf]) -> Result<Vec<Document>, BenchError> {
    if files.is_empty() {
        return Err(BenchError::Inputs("no image files given".into()));
    }
    files
        .iter()
        .map(|p| {
            std::fs::read(p)
                .map(Document::blob)
                .map_err(|source| BenchError::Io {
                    path: p.clone(),
                    source,
                })
        })
        .collect()
}

/// A small deterministic generator (xorshift32): the same inputs on every run.
struct Rng(u32);

impl Rng {
    fn next_u32(&mut self) -> u32 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.0 = x;
        x
    }

    fn pick<'a>(&mut self, words: &[&'a str]) -> &'a str {
        words
            .get(self.next_u32() as usize % words.len().max(1))
            .copied()
            .unwrap_or("")
    }
}

const ADJECTIVES: [&str; 16] = [
    "small", "red", "old", "wooden", "busy", "quiet", "bright", "wet", "golden", "striped",
    "empty", "crowded", "snowy", "tall", "blue", "rusty",
];
const SUBJECTS: [&str; 16] = [
    "dog",
    "bicycle",
    "kitchen",
    "train",
    "woman",
    "boat",
    "market stall",
    "bridge",
    "cat",
    "street",
    "mountain lake",
    "child",
    "bus",
    "garden",
    "lighthouse",
    "coffee cup",
];
const PLACES: [&str; 12] = [
    "next to a window",
    "on a city street at night",
    "in the middle of a field",
    "under a cloudy sky",
    "near the harbour",
    "on a wooden table",
    "in front of a brick wall",
    "at the edge of the forest",
    "beside a parked car",
    "in warm evening light",
    "during a summer festival",
    "covered in fresh snow",
];
const EXTRAS: [&str; 8] = [
    "",
    "",
    " with people walking past",
    " and a few birds overhead",
    ", seen from above",
    ", shot with a wide lens",
    " while it is raining",
    " and reflections in the water",
];

/// Captions like those of photo datasets: about 8 to 20 tokens.
pub(crate) fn captions(n: usize) -> Vec<String> {
    let mut rng = Rng(0x9E37_79B9);
    (0..n)
        .map(|_| {
            format!(
                "a photo of a {} {} {}{}",
                rng.pick(&ADJECTIVES),
                rng.pick(&SUBJECTS),
                rng.pick(&PLACES),
                rng.pick(&EXTRAS)
            )
        })
        .collect()
}

/// A photo-like JPEG (quality 85): smooth colour fields, soft shapes and fine grain, so it
/// compresses about as well as a camera picture of its size.
pub(crate) fn photo_jpeg(size: ImageSize, seed: u32) -> Result<Vec<u8>, BenchError> {
    let (w, h) = (usize::from(size.width), usize::from(size.height));
    let mut rng = Rng(0x2545_F491 ^ seed.wrapping_mul(0x0100_0193) ^ 1);
    // A few soft discs over a two-colour gradient.
    let discs: Vec<(f32, f32, f32, [f32; 3])> = (0..6)
        .map(|_| {
            let x = (rng.next_u32() % 1000) as f32 / 1000.0 * w as f32;
            let y = (rng.next_u32() % 1000) as f32 / 1000.0 * h as f32;
            let r = (0.05 + (rng.next_u32() % 1000) as f32 / 4000.0) * w.max(h) as f32;
            let c = [0, 1, 2].map(|_| (rng.next_u32() % 256) as f32);
            (x, y, r, c)
        })
        .collect();
    let top = [0, 1, 2].map(|_| (rng.next_u32() % 256) as f32);
    let bottom = [0, 1, 2].map(|_| (rng.next_u32() % 256) as f32);
    let mut pixels = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        let t = y as f32 / h.max(1) as f32;
        for x in 0..w {
            let mut px = [0usize, 1, 2].map(|c| top[c] * (1.0 - t) + bottom[c] * t);
            for (dx, dy, r, colour) in &discs {
                let d2 = (x as f32 - dx).powi(2) + (y as f32 - dy).powi(2);
                let a = (1.0 - d2 / (r * r)).clamp(0.0, 1.0) * 0.8;
                for c in 0..3 {
                    px[c] = px[c] * (1.0 - a) + colour[c] * a;
                }
            }
            let grain = (rng.next_u32() % 17) as f32 - 8.0;
            pixels.extend(px.map(|v| (v + grain).clamp(0.0, 255.0) as u8));
        }
    }
    let mut out = Vec::new();
    jpeg_encoder::Encoder::new(&mut out, 85)
        .encode(
            &pixels,
            size.width,
            size.height,
            jpeg_encoder::ColorType::Rgb,
        )
        .map_err(|e| BenchError::Inputs(format!("encoding a {size} JPEG: {e}")))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_inputs_are_deterministic_and_decodable() {
        let size: ImageSize = "64x48".parse().unwrap();
        let a = photo_jpeg(size, 1).unwrap();
        assert_eq!(a, photo_jpeg(size, 1).unwrap());
        assert_ne!(a, photo_jpeg(size, 2).unwrap());
        assert!(crate::preprocess::image::preprocess_bytes(&a, 32, 1 << 20).is_ok());
        assert_eq!(captions(3), captions(3));
        assert!("0x5".parse::<ImageSize>().is_err());
    }

    #[test]
    fn requests_take_documents_in_turn() {
        let pool = Pool::build(Workload::Mixed, &["16x16".parse().unwrap()], None).unwrap();
        let s = pool.describe();
        assert_eq!((s.texts, s.images), (CAPTIONS, CAPTIONS));
        let first = pool.request(0, 3);
        assert_eq!(first.len(), 3);
        assert_eq!(modality(&first[0]), Modality::Text);
        assert_eq!(modality(&first[1]), Modality::Image);
        assert_eq!(pool.request(1, 3)[0], pool.docs()[3]);
    }
}
