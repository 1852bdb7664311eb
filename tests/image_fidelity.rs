//! Image preprocessing fidelity against the Pillow reference.
//!
//! `tests/fixtures/images/reference.json` and `crops/*.png` are produced by
//! `scripts/fixtures/ref_image.py` with Pillow 13 (the CLIP-as-service pipeline: open, bicubic
//! resize in the image's own mode, centre crop, `convert('RGB')`); `scripts/fixtures/ref_formats.py`
//! adds ICO, PNM, TGA and TIFF variants, recorded by crop hash only. Every crop must match bit for
//! bit, lossy formats included (JPEG through the libjpeg-turbo-exact decoder, lossy WebP, AVIF
//! through rav1d + libyuv's conversion): no tolerance, and every reference case must say
//! `expect: "exact"`, so a decoder off by one level fails.
//!
//! Run with `cargo test --test image_fidelity -- --nocapture` to see the per-image report.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use clip_worker::preprocess::image::{
    normalize_into, preprocess_bytes, preprocess_bytes_with, preprocess_tensor, ImageError,
    ImageMode, RgbCrop, DEFAULT_MAX_PIXELS,
};
use serde::Deserialize;

#[derive(Deserialize)]
struct Reference {
    images: Vec<ImageCase>,
    tensors: Vec<TensorCase>,
    normalization: Vec<NormCase>,
}

#[derive(Deserialize)]
struct ImageCase {
    file: String,
    format: String,
    pil_mode: String,
    width: u32,
    height: u32,
    expect: String,
    size: u32,
    crop_sha256: String,
    crop_png: Option<String>,
}

#[derive(Deserialize)]
struct TensorCase {
    name: String,
    shape: Vec<usize>,
    data_b64: String,
    size: u32,
    crop_sha256: String,
}

#[derive(Deserialize)]
struct NormCase {
    crop_png: String,
    size: u32,
    mean: [f64; 3],
    std: [f64; 3],
    samples: Vec<(usize, usize, usize, f64)>,
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/images")
}

fn reference() -> Reference {
    let text = std::fs::read_to_string(fixtures().join("reference.json"))
        .expect("tests/fixtures/images/reference.json (run scripts/fixtures/ref_image.py)");
    serde_json::from_str(&text).expect("valid reference.json")
}

/// Decode a reference crop PNG (8-bit RGB) into an `RgbCrop`.
fn read_crop(rel: &str) -> RgbCrop {
    let bytes = std::fs::read(fixtures().join(rel)).expect("crop png");
    let mut dec = png::Decoder::new(std::io::Cursor::new(bytes));
    dec.set_transformations(png::Transformations::EXPAND);
    let mut reader = dec.read_info().expect("png header");
    let mut buf = vec![0; reader.output_buffer_size().expect("size")];
    let info = reader.next_frame(&mut buf).expect("png data");
    assert_eq!(info.color_type, png::ColorType::Rgb, "{rel}");
    assert_eq!(info.bit_depth, png::BitDepth::Eight, "{rel}");
    assert_eq!(info.width, info.height, "{rel}");
    buf.truncate(info.buffer_size());
    RgbCrop {
        size: info.width,
        data: buf,
    }
}

/// Per-format tally for the report.
#[derive(Default)]
struct Tally {
    cases: usize,
    exact: usize,
    max_diff: u8,
    differing_values: usize,
}

#[test]
fn crops_match_pillow() {
    let reference = reference();
    let mut tally: BTreeMap<String, Tally> = BTreeMap::new();
    let mut failures = Vec::new();
    println!(
        "{:<34} {:>4} {:<6} {:<5} {:>9}  result",
        "file", "S", "format", "mode", "size"
    );
    for case in &reference.images {
        let bytes = std::fs::read(fixtures().join(&case.file)).expect("fixture image");
        let label = format!(
            "{:<34} {:>4} {:<6} {:<5} {:>9}",
            case.file,
            case.size,
            case.format,
            case.pil_mode,
            format!("{}x{}", case.width, case.height)
        );
        let t = tally.entry(case.format.clone()).or_default();
        t.cases += 1;
        let result = preprocess_bytes(&bytes, case.size, DEFAULT_MAX_PIXELS);
        if case.expect == "unsupported" {
            match result {
                Err(ImageError::Unsupported(msg)) if msg.contains(&case.format) => {
                    println!("{label}  unsupported as expected ({msg})");
                    t.exact += 1;
                }
                other => {
                    println!("{label}  FAIL: expected Unsupported, got {other:?}");
                    failures.push(format!("{}: expected Unsupported", case.file));
                }
            }
            continue;
        }
        let crop = match result {
            Ok(c) => c,
            Err(e) => {
                println!("{label}  FAIL: {e}");
                failures.push(format!("{} (S={}): {e}", case.file, case.size));
                continue;
            }
        };
        assert_eq!(crop.size, case.size);
        assert_eq!(crop.data.len(), (case.size * case.size * 3) as usize);
        let hash_ok = sha256_hex(&crop.data) == case.crop_sha256;
        let expected = case.crop_png.as_deref().map(read_crop);
        if let Some(exp) = &expected {
            assert_eq!(
                sha256_hex(&exp.data),
                case.crop_sha256,
                "{} does not match its hash",
                case.crop_png.as_deref().unwrap_or_default()
            );
        }
        let (max_diff, count, first) = match &expected {
            Some(exp) => diff(&crop.data, &exp.data, case.size as usize),
            None => (u8::from(!hash_ok), usize::from(!hash_ok), None),
        };
        t.max_diff = t.max_diff.max(max_diff);
        t.differing_values += count;
        if hash_ok {
            t.exact += 1;
        }
        // What docs/fidelity.md claims: every supported image, lossy or not, is bit-identical.
        assert_eq!(
            case.expect, "exact",
            "{}: the reference must expect an exact match",
            case.file
        );
        let verdict = if max_diff == 0 { "ok" } else { "FAIL" };
        println!(
            "{label}  {verdict}: {} (max diff {max_diff}, {count} values differ{})",
            if hash_ok { "bit-identical" } else { "differs" },
            first
                .map(|(x, y, c)| format!(", first at x={x} y={y} c={c}"))
                .unwrap_or_default()
        );
        if max_diff > 0 {
            failures.push(format!(
                "{} (S={}): max diff {max_diff}, {count} values differ",
                case.file, case.size
            ));
        }
    }

    println!("\nper format: cases, bit-identical, max diff, differing values");
    for (format, t) in &tally {
        println!(
            "  {format:<6} {:>3} {:>3} {:>3} {:>7}",
            t.cases, t.exact, t.max_diff, t.differing_values
        );
    }
    assert!(failures.is_empty(), "mismatches:\n{}", failures.join("\n"));
}

/// Fast mode changes only JPEGs large enough for a reduced DCT scale, and stays close to exact.
#[test]
fn fast_mode_scales_only_large_jpegs() {
    assert_eq!(ImageMode::default(), ImageMode::Exact);
    // Too small for any DCT scale at S=224 (short side < 448), or not a JPEG: same bytes.
    for file in [
        "jpeg_rgb_420.jpg",
        "jpeg_progressive_411x336.jpg",
        "png_rgb.png",
    ] {
        let bytes = std::fs::read(fixtures().join(file)).unwrap();
        let exact = preprocess_bytes(&bytes, 224, DEFAULT_MAX_PIXELS).unwrap();
        let fast = preprocess_bytes_with(&bytes, 224, DEFAULT_MAX_PIXELS, ImageMode::Fast).unwrap();
        assert_eq!(exact, fast, "{file}");
    }
    // At S=96 the 411x336 JPEG decodes at half size (168 rows): close to exact, not equal.
    let bytes = std::fs::read(fixtures().join("jpeg_progressive_411x336.jpg")).unwrap();
    let exact = preprocess_bytes(&bytes, 96, DEFAULT_MAX_PIXELS).unwrap();
    let fast = preprocess_bytes_with(&bytes, 96, DEFAULT_MAX_PIXELS, ImageMode::Fast).unwrap();
    assert_eq!(fast.data.len(), exact.data.len());
    let (max_diff, count, _) = diff(&fast.data, &exact.data, 96);
    assert!(count > 0, "fast mode should not be bit-identical here");
    let mean: f64 = fast
        .data
        .iter()
        .zip(&exact.data)
        .map(|(a, b)| f64::from(a.abs_diff(*b)))
        .sum::<f64>()
        / fast.data.len() as f64;
    assert!(mean < 3.0, "mean difference {mean} (max {max_diff})");
}

/// (max abs difference, number of differing values, first differing (x, y, channel)).
fn diff(a: &[u8], b: &[u8], size: usize) -> (u8, usize, Option<(usize, usize, usize)>) {
    let mut max = 0u8;
    let mut count = 0;
    let mut first = None;
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let d = x.abs_diff(*y);
        if d > 0 {
            count += 1;
            max = max.max(d);
            first.get_or_insert(((i / 3) % size, i / 3 / size, i % 3));
        }
    }
    (max, count, first)
}

#[test]
fn tensors_match_pillow() {
    let reference = reference();
    let engine = base64::engine::general_purpose::STANDARD;
    let mut failures = Vec::new();
    for case in &reference.tensors {
        let data = engine.decode(&case.data_b64).expect("base64");
        let crop = preprocess_tensor(&data, &case.shape, case.size, DEFAULT_MAX_PIXELS)
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let ok = sha256_hex(&crop.data) == case.crop_sha256;
        println!(
            "tensor {:<20} {:?}: {}",
            case.name,
            case.shape,
            if ok { "bit-identical" } else { "DIFFERS" }
        );
        if !ok {
            failures.push(case.name.clone());
        }
    }
    assert!(failures.is_empty(), "tensor mismatches: {failures:?}");
}

#[test]
fn normalization_matches_numpy_float32() {
    let reference = reference();
    for case in &reference.normalization {
        let crop = read_crop(&case.crop_png);
        assert_eq!(crop.size, case.size);
        let plane = (case.size * case.size) as usize;
        let mut out = vec![0f32; 3 * plane];
        normalize_into(&crop, &mut out);
        for c in 0..3 {
            let ch = &out[c * plane..(c + 1) * plane];
            let mean = ch.iter().map(|&v| f64::from(v)).sum::<f64>() / plane as f64;
            let var = ch
                .iter()
                .map(|&v| (f64::from(v) - mean).powi(2))
                .sum::<f64>()
                / plane as f64;
            println!(
                "{} channel {c}: mean {mean:.7} (ref {:.7}), std {:.7} (ref {:.7})",
                case.crop_png,
                case.mean[c],
                var.sqrt(),
                case.std[c]
            );
            assert!(
                (mean - case.mean[c]).abs() < 1e-6,
                "{} mean {c}",
                case.crop_png
            );
            assert!(
                (var.sqrt() - case.std[c]).abs() < 1e-6,
                "{} std {c}",
                case.crop_png
            );
        }
        for &(c, y, x, v) in &case.samples {
            let got = out[c * plane + y * case.size as usize + x];
            assert!(
                (f64::from(got) - v).abs() < 1e-6,
                "{} [{c},{y},{x}]: {got} vs {v}",
                case.crop_png
            );
        }
    }
}

/// Mutated fixtures (bit flips, truncations, inserted markers, deletions) must give an image or
/// an error, and no decoder may panic, not even one that the library's `catch_unwind` guard
/// would contain. Panics are detected with a panic hook, counted for this thread only.
#[test]
fn mutated_fixtures_never_panic() {
    use std::sync::{Arc, Mutex};
    let panics: Arc<Mutex<Vec<String>>> = Arc::default();
    let me = std::thread::current().id();
    let seen = Arc::clone(&panics);
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().id() == me {
            if let Ok(mut v) = seen.lock() {
                v.push(info.to_string());
            }
        }
    }));
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .expect("fixture folder")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file() && !matches!(p.extension().and_then(|e| e.to_str()), Some("json" | "md"))
        })
        .collect();
    files.sort();
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut rnd = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state as usize
    };
    let (mut decoded, mut rejected) = (0, 0);
    for file in &files {
        let good = std::fs::read(file).expect("fixture");
        for round in 0..30 {
            let mut b = good.clone();
            let len = b.len();
            match round % 4 {
                0 => {
                    for _ in 0..1 + rnd() % 6 {
                        b[rnd() % len] ^= (rnd() as u8) | 1;
                    }
                }
                1 => b.truncate(1 + rnd() % len),
                2 => {
                    let p = rnd() % len;
                    b.splice(p..p, [0xFF, rnd() as u8]);
                }
                _ => {
                    let p = rnd() % len;
                    let n = (rnd() % 64).min(len - p);
                    b.drain(p..p + n);
                }
            }
            match preprocess_bytes(&b, [7, 224][round % 2], 50_000_000) {
                Ok(_) => decoded += 1,
                Err(_) => rejected += 1,
            }
        }
    }
    std::panic::set_hook(previous);
    println!("mutated inputs: {decoded} decoded, {rejected} rejected");
    let panics = panics.lock().map(|v| v.clone()).unwrap_or_default();
    assert!(panics.is_empty(), "decoder panics: {panics:#?}");
}

/// SHA-256, hex encoded, as the reference file records crop hashes.
fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
