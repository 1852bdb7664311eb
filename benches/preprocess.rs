//! Image preprocessing per core, exact and fast mode, on the same JPEG files the Pillow baseline
//! (`scripts/bench_pillow_preprocess.py`) reads; see docs/benchmarks.md.
//!
//! `cargo bench --bench preprocess` writes photo-like JPEGs (small web images of 320 to 640 px
//! and 2 to 12 Mpx photos) to `target/bench-images/` unless they exist, then prints per size
//! class the images per second of one thread (decode, resize, centre crop, normalise into a
//! batch slot), the same on two threads, and what fast mode costs against exact mode (pixel
//! tensor error and cosine), and writes `target/bench-images/results.json`.
//!
//! Rates are per CPU-second of the preparing threads (Linux `schedstat`; wall-clock elsewhere),
//! so that a busy machine shares its cores without skewing the per-core figure; the two-thread
//! wall-clock rate is printed as well and equals twice the one-thread rate only on idle cores.
//!
//! `BENCH_IMAGES=DIR` adds the JPEGs of `DIR` as a third class (`own`); `BENCH_MILLIS` sets the
//! time per measurement (default 3000).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use clip_worker::preprocess::image::{
    normalize_into, preprocess_bytes_with, ImageMode, DEFAULT_MAX_PIXELS,
};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const SIZE: u32 = 224;

/// Size classes and the generated files in each (width, height).
const CLASSES: [(&str, &[(usize, usize)]); 2] = [
    (
        "small",
        &[(320, 240), (500, 375), (640, 480), (427, 640), (640, 427)],
    ),
    ("photo", &[(1920, 1080), (2592, 1944), (3000, 4000)]),
];

fn main() {
    let budget = Duration::from_millis(
        std::env::var("BENCH_MILLIS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(3000),
    );
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-images");
    let mut classes = generate(&dir);
    if let Ok(own) = std::env::var("BENCH_IMAGES") {
        classes.push(("own".to_owned(), jpegs_in(Path::new(&own))));
    }

    println!(
        "{:<6} {:>5} {:>10} {:>10} {:>12} {:>12} {:>12} {:>9} {:>9}",
        "class",
        "files",
        "exact/s",
        "fast/s",
        "exact 2thr/s",
        "fast 2thr/s",
        "exact 2thr wall/s",
        "min cos",
        "mean cos"
    );
    let mut json = Vec::new();
    for (class, files) in &classes {
        let data: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
        let (exact, exact_wall) = rate(&data, ImageMode::Exact, 1, budget);
        let (fast, _) = rate(&data, ImageMode::Fast, 1, budget);
        let (exact2, exact2_wall) = rate(&data, ImageMode::Exact, 2, budget);
        let (fast2, _) = rate(&data, ImageMode::Fast, 2, budget);
        let cost = fast_mode_cost(&data);
        println!(
            "{class:<6} {:>5} {exact:>10.1} {fast:>10.1} {exact2:>12.1} {fast2:>12.1} {exact2_wall:>17.1} {:>9.6} {:>9.6}",
            data.len(),
            cost.min_cosine,
            cost.mean_cosine
        );
        println!(
            "       fast mode changes {} of {} files; on those: max |diff| {:.4}, mean |diff| \
             {:.5} (normalised units), values differing {:.1} %",
            cost.changed,
            data.len(),
            cost.max_abs,
            cost.mean_abs,
            cost.differing_percent
        );
        json.push(format!(
            "{{\"class\":\"{class}\",\"files\":{},\"exact_per_s\":{exact:.2},\
             \"fast_per_s\":{fast:.2},\"exact_2_threads_per_s\":{exact2:.2},\
             \"fast_2_threads_per_s\":{fast2:.2},\"exact_wall_per_s\":{exact_wall:.2},\
             \"exact_2_threads_wall_per_s\":{exact2_wall:.2},\"fast_changed_files\":{},\
             \"fast_min_cosine\":{:.8},\"fast_mean_cosine\":{:.8},\"fast_max_abs\":{:.6},\
             \"fast_mean_abs\":{:.6}}}",
            data.len(),
            cost.changed,
            cost.min_cosine,
            cost.mean_cosine,
            cost.max_abs,
            cost.mean_abs
        ));
    }
    let out = dir.join("results.json");
    std::fs::write(&out, format!("[{}]\n", json.join(",\n"))).unwrap();
    println!("wrote {}", out.display());
}

/// Writes the generated files (once) and lists them per class.
fn generate(dir: &Path) -> Vec<(String, Vec<PathBuf>)> {
    std::fs::create_dir_all(dir).unwrap();
    let mut seed = 1;
    CLASSES
        .iter()
        .map(|(class, sizes)| {
            let files = sizes
                .iter()
                .map(|&(w, h)| {
                    let path = dir.join(format!("{class}_{w}x{h}.jpg"));
                    if !path.exists() {
                        std::fs::write(&path, photo_like(w, h, seed)).unwrap();
                    }
                    seed += 1;
                    path
                })
                .collect();
            ((*class).to_owned(), files)
        })
        .collect()
}

fn jpegs_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let ext = p.extension().and_then(|e| e.to_str()).unwrap_or_default();
            ext.eq_ignore_ascii_case("jpg") || ext.eq_ignore_ascii_case("jpeg")
        })
        .collect();
    files.sort();
    files
}

/// Seconds this thread has run on a CPU (Linux `schedstat`), or `None` where unavailable. On a
/// shared machine this is what "per core" means: time the thread waited for a CPU is not counted.
fn thread_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: f64 = stat.split_whitespace().next()?.parse().ok()?;
    Some(ns * 1e-9)
}

/// Images per second over `threads` threads, each preparing the files round-robin into its own
/// batch slot: (per CPU-second of each thread, summed over threads; per wall-clock second).
fn rate(data: &[Vec<u8>], mode: ImageMode, threads: usize, budget: Duration) -> (f64, f64) {
    let s = SIZE as usize;
    let prepare = |bytes: &[u8], slot: &mut [f32]| {
        let crop = preprocess_bytes_with(bytes, SIZE, DEFAULT_MAX_PIXELS, mode).unwrap();
        normalize_into(&crop, slot);
    };
    let mut slot = vec![0f32; 3 * s * s];
    for bytes in data {
        prepare(bytes, &mut slot); // warm-up
    }
    let start = Instant::now();
    let per_thread: Vec<(usize, f64)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    let mut slot = vec![0f32; 3 * s * s];
                    let cpu0 = thread_cpu_seconds();
                    let wall0 = Instant::now();
                    let mut n = 0;
                    // Each thread starts at another file so that threads are not in lockstep.
                    while start.elapsed() < budget || n < data.len() {
                        prepare(&data[(n + t) % data.len()], &mut slot);
                        n += 1;
                    }
                    let busy = match (cpu0, thread_cpu_seconds()) {
                        (Some(a), Some(b)) => b - a,
                        _ => wall0.elapsed().as_secs_f64(),
                    };
                    (n, busy)
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let wall = start.elapsed().as_secs_f64();
    let per_cpu = per_thread.iter().map(|&(n, busy)| n as f64 / busy).sum();
    let done: usize = per_thread.iter().map(|&(n, _)| n).sum();
    (per_cpu, done as f64 / wall)
}

/// Over the files fast mode changes (JPEGs with a short side of at least twice 224).
struct Cost {
    changed: usize,
    min_cosine: f64,
    mean_cosine: f64,
    max_abs: f32,
    mean_abs: f64,
    differing_percent: f64,
}

/// Fast mode's normalised tensors against exact mode's, per file.
fn fast_mode_cost(data: &[Vec<u8>]) -> Cost {
    let s = SIZE as usize;
    let tensor = |bytes: &[u8], mode| {
        let crop = preprocess_bytes_with(bytes, SIZE, DEFAULT_MAX_PIXELS, mode).unwrap();
        let mut t = vec![0f32; 3 * s * s];
        normalize_into(&crop, &mut t);
        t
    };
    let mut cost = Cost {
        changed: 0,
        min_cosine: 1.0,
        mean_cosine: 0.0,
        max_abs: 0.0,
        mean_abs: 0.0,
        differing_percent: 0.0,
    };
    let pairs: Vec<(Vec<f32>, Vec<f32>)> = data
        .iter()
        .map(|bytes| {
            (
                tensor(bytes, ImageMode::Exact),
                tensor(bytes, ImageMode::Fast),
            )
        })
        .filter(|(a, b)| a != b)
        .collect();
    cost.changed = pairs.len();
    let values = (pairs.len() * 3 * s * s).max(1) as f64;
    for (a, b) in &pairs {
        let dot: f64 = a.iter().zip(b).map(|(x, y)| f64::from(x * y)).sum();
        let na: f64 = a.iter().map(|x| f64::from(x * x)).sum::<f64>().sqrt();
        let nb: f64 = b.iter().map(|x| f64::from(x * x)).sum::<f64>().sqrt();
        let cosine = dot / (na * nb);
        cost.min_cosine = cost.min_cosine.min(cosine);
        cost.mean_cosine += cosine / pairs.len() as f64;
        for (x, y) in a.iter().zip(b) {
            let d = (x - y).abs();
            cost.max_abs = cost.max_abs.max(d);
            cost.mean_abs += f64::from(d) / values;
            if d != 0.0 {
                cost.differing_percent += 100.0 / values;
            }
        }
    }
    if pairs.is_empty() {
        cost.mean_cosine = 1.0;
    }
    cost
}

/// A photo-like JPEG: fractal value noise (texture at every scale, amplitude falling slower
/// than 1/f as in photos with fine detail), smooth colour, sharp-edged regions and a little
/// sensor noise, encoded as 4:2:0 at quality 90 like a camera. Deterministic.
fn photo_like(width: usize, height: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut uniform = move || (next() >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
    // Value noise: a random lattice `cell` pixels apart, bilinearly interpolated, added to `out`.
    let mut add_noise = |cell: usize, amp: f32, out: &mut [f32]| {
        let gw = width / cell + 2;
        let gh = height / cell + 2;
        let grid: Vec<f32> = (0..gw * gh).map(|_| uniform()).collect();
        let inv = 1.0 / cell as f32;
        for (y, row) in out.chunks_exact_mut(width).enumerate() {
            let (gy, fy) = (y / cell, (y % cell) as f32 * inv);
            let (r0, r1) = (&grid[gy * gw..], &grid[(gy + 1) * gw..]);
            for (x, o) in row.iter_mut().enumerate() {
                let (gx, fx) = (x / cell, (x % cell) as f32 * inv);
                let top = r0[gx] + (r0[gx + 1] - r0[gx]) * fx;
                let bottom = r1[gx] + (r1[gx + 1] - r1[gx]) * fx;
                *o += amp * (top + (bottom - top) * fy);
            }
        }
    };
    let n = width * height;
    let (mut luma, mut cb, mut cr, mut regions) =
        (vec![0f32; n], vec![0f32; n], vec![0f32; n], vec![0f32; n]);
    let base = (width.min(height) / 3).max(8);
    let mut cell = base;
    while cell >= 1 {
        add_noise(
            cell,
            170.0 * (cell as f32 / base as f32).powf(0.4),
            &mut luma,
        );
        if cell * 8 >= base {
            add_noise(cell, 60.0, &mut cb);
            add_noise(cell, 60.0, &mut cr);
        }
        cell /= 2;
    }
    add_noise(base, 1.0, &mut regions);
    add_noise(base / 4 + 1, 0.5, &mut regions);
    let mut grain = seed as u32 | 1;
    let mut rgb = vec![0u8; n * 3];
    for (i, px) in rgb.chunks_exact_mut(3).enumerate() {
        grain ^= grain << 13;
        grain ^= grain >> 17;
        grain ^= grain << 5;
        let noise = (grain % 7) as f32 - 3.0;
        let y = 128.0 + luma[i] + noise + if regions[i] > 0.05 { 45.0 } else { -25.0 };
        let clamp = |v: f32| v.round().clamp(0.0, 255.0) as u8;
        px[0] = clamp(y + 1.402 * cr[i]);
        px[1] = clamp(y - 0.344 * cb[i] - 0.714 * cr[i]);
        px[2] = clamp(y + 1.772 * cb[i]);
    }
    let mut c = turbojpeg::Compressor::new().unwrap();
    c.set_quality(90).unwrap();
    c.set_subsamp(turbojpeg::Subsamp::Sub2x2).unwrap();
    c.compress_to_vec(turbojpeg::Image {
        pixels: &rgb[..],
        width,
        pitch: width * 3,
        height,
        format: turbojpeg::PixelFormat::RGB,
    })
    .unwrap()
}
