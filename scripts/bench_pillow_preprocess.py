#!/usr/bin/env python3
"""Pillow + numpy baseline for image preprocessing per core (docs/benchmarks.md).

Runs CLIP-as-service's image pipeline on one thread: decode (PIL.Image.open + load), bicubic
resize of the short side to 224 in the image's own mode, centre crop, convert('RGB'), then
ToTensor + Normalize as float32 numpy written into a preallocated CHW batch slot. It reads the
files `cargo bench --bench preprocess` wrote (small_*.jpg, photo_*.jpg in DIR, plus --own DIR),
prints images per CPU-second of its thread per size class, and, when DIR/results.json (written by that bench)
exists, the Rust/Pillow ratios as a Markdown table.

    python scripts/bench_pillow_preprocess.py target/bench-images [--own DIR] [--seconds 3]

Needs Pillow and numpy only (the fixture venv has Pillow 13).
"""

import argparse
import glob
import io
import json
import os
import platform
import time

import numpy as np
import PIL
from PIL import Image

SIZE = 224
MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32).reshape(3, 1, 1)
STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32).reshape(3, 1, 1)


def resized_size(w, h, s):
    """torchvision Resize(int): short side to s, long side int(s * long / short)."""
    if w <= h:
        return s, int(s * h / w)
    return int(s * w / h), s


def prepare(blob, slot):
    img = Image.open(io.BytesIO(blob))
    w, h = img.size
    nw, nh = resized_size(w, h, SIZE)
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), Image.BICUBIC)
    left = int(round((nw - SIZE) / 2.0))
    top = int(round((nh - SIZE) / 2.0))
    img = img.crop((left, top, left + SIZE, top + SIZE)).convert("RGB")
    chw = np.asarray(img, dtype=np.uint8).transpose(2, 0, 1).astype(np.float32) / 255.0
    np.subtract(chw, MEAN, out=chw)
    np.divide(chw, STD, out=slot)


def rate(blobs, seconds):
    """Images per CPU-second of this thread (as the Rust bench counts them)."""
    slot = np.empty((3, SIZE, SIZE), dtype=np.float32)
    for b in blobs:  # warm-up
        prepare(b, slot)
    n = 0
    start = time.perf_counter()
    cpu = time.thread_time()
    while time.perf_counter() - start < seconds or n < len(blobs):
        prepare(blobs[n % len(blobs)], slot)
        n += 1
    return n / (time.thread_time() - cpu)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir", help="folder written by `cargo bench --bench preprocess`")
    ap.add_argument("--own", help="a folder of your own JPEGs (the bench's BENCH_IMAGES)")
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()

    classes = [(c, sorted(glob.glob(os.path.join(args.dir, f"{c}_*.jpg")))) for c in ("small", "photo")]
    if args.own:
        own = sorted(
            p for p in glob.glob(os.path.join(args.own, "*")) if p.lower().endswith((".jpg", ".jpeg"))
        )
        classes.append(("own", own))
    print(f"Pillow {PIL.__version__}, numpy {np.__version__}, Python {platform.python_version()}, one thread")
    pillow = {}
    for name, files in classes:
        if not files:
            continue
        blobs = [open(f, "rb").read() for f in files]
        pillow[name] = rate(blobs, args.seconds)
        print(f"{name:<6} {len(files):>3} files  {pillow[name]:8.1f} images per CPU-second")

    results = os.path.join(args.dir, "results.json")
    if not os.path.exists(results):
        return
    rust = {r["class"]: r for r in json.load(open(results))}
    print()
    print("| class | Pillow /s | exact /s | exact ÷ Pillow | fast /s | fast ÷ Pillow | exact, 2 threads ÷ 1 (CPU) |")
    print("|---|---|---|---|---|---|---|")
    for name, per_s in pillow.items():
        r = rust.get(name)
        if r is None:
            continue
        print(
            f"| {name} | {per_s:.1f} | {r['exact_per_s']:.1f} | **{r['exact_per_s'] / per_s:.2f}x** "
            f"| {r['fast_per_s']:.1f} | **{r['fast_per_s'] / per_s:.2f}x** "
            f"| {r['exact_2_threads_per_s'] / r['exact_per_s']:.2f}x |"
        )


if __name__ == "__main__":
    main()
