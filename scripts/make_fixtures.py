#!/usr/bin/env python3
"""Regenerate ALL test fixtures under tests/fixtures/.  Single entry point.

What it writes (relative to the repository root):

* ``tests/fixtures/model/{textual,visual}.onnx`` + ``README.md``: a tiny CLIP with the real
  open_clip architecture and seeded random weights, exported with the CLIP-as-service ONNX I/O
  contract; served as ``ViT-B-32::openai`` (image size 224).  See scripts/fixtures/tiny_model.py.
* ``tests/fixtures/model-failing/visual.onnx``: a visual tower that fails inside ONNX Runtime for
  a white image, for the inference-error tests (scripts/fixtures/failing_model.py).
* ``tests/fixtures/text/tokens.json``: reference CLIP BPE token ids (scripts/fixtures/ref_text.py).
* ``tests/fixtures/images/`` + ``images/reference.json``: test images and their reference
  preprocessing (scripts/fixtures/ref_image.py, then scripts/fixtures/ref_formats.py for ICO,
  PNM, TGA and TIFF variants).
* ``tests/fixtures/reference/embeddings.json``: raw (not normalised) embeddings computed with
  onnxruntime in Python exactly as the original CLIPOnnxEncoder runs the graphs (CPU execution
  provider, ORT_ENABLE_ALL, minibatches of 32, int32 ids zero-padded to 77 with a 1/0 mask),
  for a text corpus and for every reference image Pillow can open.
* ``tests/fixtures/reference/rank.json``: /rank cases computed with the original maths
  (docarray cosine with eps 1e-7, logit_scale = exp(4.60517), per-query softmax, stable sort).
* ``tests/fixtures/mclip/`` (tiny M-CLIP: XLM-R text tower with a Hugging Face tokenizer, see
  scripts/fixtures/tiny_mclip.py), ``tests/fixtures/mclip-fp16/`` (the same converted by
  scripts/convert_fp16.py) and ``tests/fixtures/reference/mclip.json`` (their embeddings and rank
  cases, tokenised with ``transformers.AutoTokenizer`` as the original's M-CLIP path does).
* ``--only fp16-cost`` writes nothing: it prints the float16 vs float32 cosine on the main fixture
  corpus (the figure in docs/fidelity.md).

Environment.  Only this script needs Python, torch and friends; the Rust build and CI never do
(the generated files are committed).  Create a venv and run from anywhere:

    python3.11 -m venv .venv-fixtures
    .venv-fixtures/bin/pip install -r scripts/requirements-fixtures.txt
    .venv-fixtures/bin/python scripts/make_fixtures.py

Options: ``--only model|failing-model|text|images|reference|mclip|fp16-cost`` (repeatable) to run a subset; the reference
step reads the model, text and image fixtures from disk, so run them first.

The script is deterministic: re-running it with the pinned versions reproduces byte-identical
JSON (and ONNX) files.  Floats are written with Python's ``repr(float(x))`` of the float32
value, i.e. the shortest decimal that round-trips to the exact float32.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import importlib.metadata
import json
import os
import platform
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures"
MODEL_DIR = FIXTURES / "model"
TEXT_DIR = FIXTURES / "text"
IMAGES_DIR = FIXTURES / "images"
REFERENCE_DIR = FIXTURES / "reference"

sys.path.insert(0, str(REPO / "scripts" / "fixtures"))
sys.path.insert(0, str(REPO / "scripts"))

MODEL_NAME = "ViT-B-32::openai"
IMAGE_SIZE = 224
CONTEXT_LENGTH = 77
MINIBATCH_SIZE = 32
LOGIT_SCALE_EXPR = "np.exp(4.60517)"
COSINE_EPS = 1e-7
MIN_SCORE = 1e-30  # every rank fixture score must be at least this (normal float32, no underflow)

# Text corpus embedded into embeddings.json.  Order matters (it decides the minibatches).
RANK_TEXTS = ["hello, world!", "goodbye, world!", "goodbye,!", "good world!", "good!", "world!"]
CORPUS = RANK_TEXTS + [
    # golden tokenizer strings of the behaviour spec (section 4.2)
    "hello, world",
    "goodbye, world",
    "hello world",
    "Hello   WORLD!!",
    "a photo of a television studio",
    "she smiled, with pain",
    "it's 2023 &amp; I'm here",
    "café naïve 東京",
    "a <|endoftext|> b",
    " ".join(["hello"] * 100),  # truncated to 77 ids, last id forced to 49407
    # README rerank example
    "a photo of a conference room",
    "a photo of a lecture room",
    "a photo of a control room",
    "a photo of a podium indoor",
    # upstream test strings
    "hello",
    "jina",
    "A",
    "B",
    "C",
    # assorted
    "a photo of a cat",
    "a photo of a dog",
    "a diagram of a rocket engine",
    "the quick brown fox jumps over the lazy dog",
    "  leading and trailing   spaces  ",
    "tabs\tand\nnewlines\r\nmixed",
    "HTML &lt;b&gt;bold&lt;/b&gt; &amp;amp; twice",
    "Ünïcödé ÅÄÖ straße ﬁ",  # accents, ligature (ftfy NFC only; no mojibake repair needed)
    "emoji 🙂👍🏽 and ✔ marks",
    "Привет, мир",
    "こんにちは世界",
    "don't stop, we'll see; they're here",
    "1234567890 3.14159 -42",
    "x",
    " ",  # whitespace only: still a text doc upstream; cleans to "" -> [sot, eot]
    "supercalifragilisticexpialidocious" * 4,
    "A man is sitting on a bench in a park while pigeons gather around him, and the sun sets "
    "behind the tall buildings of the city skyline as people walk home after a long day at "
    "work, tired but happy.",
]


# ----------------------------------------------------------------------------------------------
# JSON helpers
# ----------------------------------------------------------------------------------------------


def f32(x) -> float:
    """The exact float32 value as a Python float (repr gives the shortest round-trip form)."""
    import numpy as np

    return float(np.float32(x))


def _dump(obj, indent: int = 0) -> str:
    """JSON with 2-space indentation; lists of scalars and short flat objects on one line."""
    pad = "  " * indent
    pad1 = "  " * (indent + 1)
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        if all(not isinstance(v, (dict, list, tuple)) for v in obj.values()):
            flat = "{" + ", ".join(f"{json.dumps(str(k), ensure_ascii=False)}: {_dump(v)}" for k, v in obj.items()) + "}"
            if len(flat) <= 80:
                return flat
        items = [f"{pad1}{json.dumps(str(k), ensure_ascii=False)}: {_dump(v, indent + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, (list, tuple)):
        if not obj:
            return "[]"
        if all(not isinstance(v, (dict, list, tuple)) for v in obj):
            return "[" + ", ".join(_dump(v) for v in obj) + "]"
        return "[\n" + ",\n".join(pad1 + _dump(v, indent + 1) for v in obj) + "\n" + pad + "]"
    if isinstance(obj, float):
        if obj != obj or obj in (float("inf"), float("-inf")):
            raise ValueError("non-finite float in fixture JSON")
        return repr(obj)
    return json.dumps(obj, ensure_ascii=False)


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_dump(obj) + "\n", encoding="utf-8")
    print(f"wrote {path.relative_to(REPO)} ({path.stat().st_size} bytes)")


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def versions() -> dict:
    out = {"python": platform.python_version()}
    for dist in ("torch", "open_clip_torch", "onnx", "onnxruntime", "Pillow", "numpy", "ftfy", "regex", "scikit-image"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    return out


# ----------------------------------------------------------------------------------------------
# (a) model
# ----------------------------------------------------------------------------------------------


def step_model() -> None:
    import torch

    import tiny_model

    torch.set_num_threads(1)
    model = tiny_model.build_model()
    report = tiny_model.export(model, MODEL_DIR)
    arch = tiny_model.architecture()
    t_md5, v_md5 = md5(MODEL_DIR / "textual.onnx"), md5(MODEL_DIR / "visual.onnx")
    t_size = (MODEL_DIR / "textual.onnx").stat().st_size
    v_size = (MODEL_DIR / "visual.onnx").stat().st_size
    agr = report["agreement"]
    readme = f"""# Tiny CLIP test model

**Random weights. Not a trained model.** The embeddings are meaningless but deterministic and
well spread (different inputs give clearly different vectors), which is what the tests need to
check tokenisation, preprocessing, batching, the ONNX session plumbing and the /rank maths.

Generated by `scripts/make_fixtures.py` (via `scripts/fixtures/tiny_model.py`); do not edit by hand.

| | |
|---|---|
| architecture | real `open_clip.model.CLIP` (ViT image tower with class-token pooling; causal text transformer with argmax/EOT pooling; projections), toy widths |
| embed dim D | {arch["embed_dim"]} |
| vision | {arch["vision_cfg"]["layers"]} layers, width {arch["vision_cfg"]["width"]}, head width {arch["vision_cfg"]["head_width"]}, patch {arch["vision_cfg"]["patch_size"]}, image size {arch["vision_cfg"]["image_size"]} |
| text | {arch["text_cfg"]["layers"]} layers, width {arch["text_cfg"]["width"]}, {arch["text_cfg"]["heads"]} heads, context {arch["text_cfg"]["context_length"]}, vocab {arch["text_cfg"]["vocab_size"]} (real CLIP BPE ids; sot 49406, eot 49407) |
| weights | `torch.manual_seed({arch["seed"]})`, then re-initialised: matrices {arch["init"]["matrix_std"]}; embeddings std {arch["init"]["embedding_std"]}; layernorm weight {arch["init"]["layernorm_weight"]}, bias std {arch["init"]["layernorm_bias_std"]} |
| export | `torch.onnx.export(dynamo=False, opset_version={arch["onnx_opset"]})`, dynamic batch axis |
| serve as | `{MODEL_NAME}` (image size {IMAGE_SIZE}, CLIP BPE tokenizer), e.g. as a custom model folder |

## Graph contract (CLIP-as-service ONNX executor)

| file | inputs | output 0 |
|---|---|---|
| `textual.onnx` ({t_size} bytes, md5 `{t_md5}`) | `input_ids` int32 `[B,77]`, `attention_mask` int32 `[B,77]` | float32 `[B,{arch["embed_dim"]}]` = `encode_text(input_ids)`, not normalised |
| `visual.onnx` ({v_size} bytes, md5 `{v_md5}`) | `pixel_values` float32 `[B,3,{IMAGE_SIZE},{IMAGE_SIZE}]` | float32 `[B,{arch["embed_dim"]}]` = `encode_image(pixel_values)`, not normalised |

`attention_mask` is a real graph input (it must be fed) but does not affect the output, as in
the original CLIP-BPE graphs.

## Checks done at generation time

- onnx checker passes; input names/dtypes as above; batch dimension symbolic on every input and output.
- torch vs onnxruntime (CPU, ORT_ENABLE_ALL), max abs diff: batch 1 text {agr["batch1"]["text_max_abs_diff"]:.2e}, image {agr["batch1"]["image_max_abs_diff"]:.2e}; batch 5 text {agr["batch5"]["text_max_abs_diff"]:.2e}, image {agr["batch5"]["image_max_abs_diff"]:.2e} (largest |value| in those outputs: text {max(agr["batch1"]["text_abs_max"], agr["batch5"]["text_abs_max"]):.2f}, image {max(agr["batch1"]["image_abs_max"], agr["batch5"]["image_abs_max"]):.2f}).
- onnxruntime row 0 at batch 1 vs batch 5: text {agr["ort_batch1_vs_batch5_row0"]["text_max_abs_diff"]}, image {agr["ort_batch1_vs_batch5_row0"]["image_max_abs_diff"]}.
- an all-zero `attention_mask` gives exactly the same text output.
"""
    (MODEL_DIR / "README.md").write_text(readme, encoding="utf-8")
    print(json.dumps(report, indent=2))
    print(f"wrote {MODEL_DIR.relative_to(REPO)}/{{textual.onnx,visual.onnx,README.md}}")


# ----------------------------------------------------------------------------------------------
# (b) colleagues' text and image fixture writers
# ----------------------------------------------------------------------------------------------


def step_text() -> None:
    import ref_text

    # ref_text.main(argv): argv[1] is the output file.
    ref_text.main([ref_text.__file__, str(TEXT_DIR / "tokens.json")])


def step_images() -> None:
    import ref_formats
    import ref_image

    # ref_image.main(argv): argv[1] is the output folder; returns an exit status.
    rc = ref_image.main([ref_image.__file__, str(IMAGES_DIR)])
    if rc:
        raise SystemExit(f"ref_image.main returned {rc}")
    # ICO, PNM, TGA and TIFF variants, made from the fixtures ref_image.py just wrote; they
    # append their entries to images/reference.json.
    rc = ref_formats.main([ref_formats.__file__, str(IMAGES_DIR)])
    if rc:
        raise SystemExit(f"ref_formats.main returned {rc}")


# ----------------------------------------------------------------------------------------------
# (c) embeddings, (d) rank
# ----------------------------------------------------------------------------------------------


def _sessions():
    import onnxruntime as ort

    def make(name):
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # One intra-op thread: results do not depend on the machine's core count.
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        return ort.InferenceSession(str(MODEL_DIR / name), so, providers=["CPUExecutionProvider"])

    # The original creates the visual session first, then the textual one.
    visual = make("visual.onnx")
    textual = make("textual.onnx")
    return textual, visual


def _pad_ids(token_lists):
    import numpy as np

    ids = np.zeros((len(token_lists), CONTEXT_LENGTH), dtype=np.int64)
    mask = np.zeros((len(token_lists), CONTEXT_LENGTH), dtype=np.int64)
    for i, toks in enumerate(token_lists):
        if len(toks) > CONTEXT_LENGTH:
            raise SystemExit(f"tokenize() returned {len(toks)} > {CONTEXT_LENGTH} ids")
        ids[i, : len(toks)] = toks
        mask[i, : len(toks)] = 1
    # Built as int64 then cast to int32, like the original.
    return ids.astype(np.int32), mask.astype(np.int32)


def _image_entries(ref: dict) -> list[dict]:
    """The S=224 rows of images/reference.json, one per file, in file order."""
    out, seen = [], set()
    for e in ref["images"]:
        if e.get("size", IMAGE_SIZE) != IMAGE_SIZE or e["file"] in seen:
            continue
        seen.add(e["file"])
        out.append(e)
    return out


def _load_crop(ref_image, blob: bytes, size: int):
    import numpy as np

    crop = ref_image.load_crop(blob, size)
    crop = np.asarray(crop)
    if crop.shape != (size, size, 3) or crop.dtype != np.uint8:
        raise SystemExit(f"ref_image.load_crop returned {crop.shape} {crop.dtype}, expected ({size},{size},3) uint8")
    return crop


def compute_embeddings() -> dict:
    import numpy as np

    import ref_image
    import ref_text

    textual, visual = _sessions()

    # ---- text
    if len(set(CORPUS)) != len(CORPUS):
        raise SystemExit("duplicate strings in CORPUS")
    # ftfy's mojibake repair is not replicated by the Rust tokenizer: keep such strings out.
    neutral = getattr(ref_text, "fix_encoding_is_neutral", None)
    if neutral is not None:
        bad = [t for t in CORPUS if not neutral(t)]
        if bad:
            raise SystemExit(f"CORPUS strings that trigger ftfy's mojibake repair: {bad!r}")
    token_lists = [list(map(int, ref_text.tokenize(t))) for t in CORPUS]
    text_rows = []
    for start in range(0, len(CORPUS), MINIBATCH_SIZE):
        ids, mask = _pad_ids(token_lists[start : start + MINIBATCH_SIZE])
        out = textual.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        assert out.dtype == np.float32 and out.shape == (len(ids), out.shape[1])
        text_rows.append(out)
    text_emb = np.concatenate(text_rows)
    dim = int(text_emb.shape[1])

    # ---- images (files) and tensor documents, from images/reference.json
    ref = json.loads((IMAGES_DIR / "reference.json").read_text(encoding="utf-8"))
    image_meta, pixels, skipped = [], [], []
    for e in _image_entries(ref):
        name = e["file"]
        path = IMAGES_DIR / name
        if not path.is_file():
            raise SystemExit(f"images/reference.json lists {name}, which is not in {IMAGES_DIR}")
        try:
            crop = _load_crop(ref_image, path.read_bytes(), IMAGE_SIZE)
        except SystemExit:
            raise
        except Exception as exc:  # not an image Pillow can open: the original fails the request
            # exception type only: messages can hold object addresses (non-deterministic)
            skipped.append({"file": name, "reason": type(exc).__name__})
            continue
        pixels.append(_normalized(ref_image, crop))
        image_meta.append({"file": name, "format": e.get("format"), "expect": e.get("expect")})
    image_emb = _run_visual(visual, pixels, dim)

    tensor_meta, tensor_pixels = [], []
    for t in ref.get("tensors", []):
        if t.get("size", IMAGE_SIZE) != IMAGE_SIZE:
            continue
        arr = np.frombuffer(base64.b64decode(t["data_b64"]), dtype=np.uint8).reshape(t["shape"])
        crop = np.asarray(ref_image.tensor_crop(arr, IMAGE_SIZE))
        tensor_pixels.append(_normalized(ref_image, crop))
        tensor_meta.append({"name": t["name"], "shape": list(t["shape"])})
    tensor_emb = _run_visual(visual, tensor_pixels, dim)

    return {
        "dim": dim,
        "texts": CORPUS,
        "token_lists": token_lists,
        "text_emb": text_emb,
        "image_meta": image_meta,
        "images": [m["file"] for m in image_meta],
        "image_emb": image_emb,
        "tensor_meta": tensor_meta,
        "tensor_emb": tensor_emb,
        "skipped_images": skipped,
    }


def _normalized(ref_image, crop):
    import numpy as np

    x = np.asarray(ref_image.normalize(crop))
    if x.shape != (3, IMAGE_SIZE, IMAGE_SIZE) or x.dtype != np.float32:
        raise SystemExit(f"ref_image.normalize returned {x.shape} {x.dtype}")
    return x


def _run_visual(visual, pixels, dim):
    """Feed [3,S,S] float32 arrays to the visual graph in minibatches of 32, in order."""
    import numpy as np

    rows = []
    for start in range(0, len(pixels), MINIBATCH_SIZE):
        px = np.stack(pixels[start : start + MINIBATCH_SIZE]).astype(np.float32)
        out = visual.run(None, {"pixel_values": px})[0]
        assert out.dtype == np.float32 and out.shape == (len(px), dim)
        rows.append(out)
    return np.concatenate(rows) if rows else np.zeros((0, dim), np.float32)


def embeddings_json(emb: dict) -> dict:
    return {
        "description": (
            "Raw (not L2-normalised) float32 embeddings of the tiny test model in tests/fixtures/model, "
            "computed with onnxruntime in Python the way CLIP-as-service's ONNX executor runs the graphs. "
            "Generated by scripts/make_fixtures.py; do not edit."
        ),
        "model": MODEL_NAME,
        "model_dir": "tests/fixtures/model",
        "model_md5": {"textual.onnx": md5(MODEL_DIR / "textual.onnx"), "visual.onnx": md5(MODEL_DIR / "visual.onnx")},
        "dim": emb["dim"],
        "dtype": "float32",
        "normalized": False,
        "image_size": IMAGE_SIZE,
        "context_length": CONTEXT_LENGTH,
        "minibatch_size": MINIBATCH_SIZE,
        "onnxruntime": {
            "providers": ["CPUExecutionProvider"],
            "graph_optimization_level": "ORT_ENABLE_ALL",
            "intra_op_num_threads": 1,
        },
        "text_inputs": (
            "ids from scripts/fixtures/ref_text.py tokenize(); zero-padded to 77; attention_mask 1 over the "
            "real ids, 0 on padding; both int32; texts fed in list order in minibatches of 32"
        ),
        "image_inputs": (
            "every file of tests/fixtures/images/reference.json (S=224 rows) that Pillow opens: file bytes -> "
            "scripts/fixtures/ref_image.py load_crop(bytes, 224) -> normalize() -> float32 NCHW; fed in list "
            "order in minibatches of 32. 'expect' is copied from reference.json (e.g. 'unsupported' for AVIF "
            "if the worker does not decode it)"
        ),
        "tensor_inputs": (
            "the 'tensors' cases of images/reference.json (uint8 arrays, data_b64 + shape): ref_image.py "
            "tensor_crop(arr, 224) -> normalize(); fed as their own minibatch(es)"
        ),
        "generated_with": versions(),
        "text": [
            {"text": t, "ids": ids, "embedding": [f32(v) for v in row]}
            for t, ids, row in zip(emb["texts"], emb["token_lists"], emb["text_emb"])
        ],
        "image": [dict(m, embedding=[f32(v) for v in row]) for m, row in zip(emb["image_meta"], emb["image_emb"])],
        "tensor": [dict(m, embedding=[f32(v) for v in row]) for m, row in zip(emb["tensor_meta"], emb["tensor_emb"])],
        "skipped_images": emb["skipped_images"],
    }


def set_rank(query_emb, match_emb_per_query):
    """The original's rank maths, written from its description (docarray 0.21 cosine, numpy 1.x casting).

    Returns, per query: (cosine[float32 per match, input order], softmax[...], order[list of
    input indices after the stable descending sort by softmax]).
    """
    import numpy as np

    q = np.asarray(query_emb, dtype=np.float32)
    c = np.concatenate([np.asarray(m, dtype=np.float32) for m in match_emb_per_query])
    # docarray.math.distance.numpy.cosine(x, y, eps=1e-7), all float32 (the Python-float eps is
    # a weak scalar under both legacy and NEP 50 casting).  One deviation: upstream's
    # np.dot(x, y.T) is a BLAS matrix product whose rounding can depend on a column's position,
    # so duplicate matches may differ by an ulp there; here each q.c is its own float32 dot
    # product, so identical embeddings always score identically (what the tie case checks).
    dots = np.array([[np.dot(qi, cj) for cj in c] for qi in q], dtype=np.float32).reshape(len(q), len(c))
    dist = 1 - np.clip(
        (dots + COSINE_EPS) / (np.outer(np.linalg.norm(q, axis=1), np.linalg.norm(c, axis=1)) + COSINE_EPS),
        -1,
        1,
    )
    cos_all = 1 - dist  # set_rank: cosine_scores = 1 - cosine(...)
    assert cos_all.dtype == np.float32
    # np.exp(4.60517) is a float64 numpy scalar; with numpy 1.x value-based casting,
    # scalar * float32 array stays float32, i.e. the scale is rounded to float32 first.
    logit_scale = np.float32(np.exp(4.60517))
    out = []
    start = 0
    for qi, matches in enumerate(match_emb_per_query):
        end = start + len(matches)
        cos = cos_all[qi, start:end]
        x = logit_scale * cos
        assert x.dtype == np.float32
        # max-subtracted softmax over this query's own matches
        e_x = np.exp(x - np.max(x, axis=-1, keepdims=True))
        soft = e_x / np.sum(e_x, axis=-1, keepdims=True)
        assert soft.dtype == np.float32
        order = sorted(range(len(matches)), key=lambda i: soft[i], reverse=True)  # stable
        out.append((cos, soft, order))
        start = end
    return out


def rank_json(emb: dict) -> dict:
    import numpy as np

    text_index = {t: i for i, t in enumerate(emb["texts"])}
    image_index = {n: i for i, n in enumerate(emb["images"])}

    def vec(item):
        kind, key = item
        if kind == "text":
            return emb["text_emb"][text_index[key]]
        return emb["image_emb"][image_index[key]]

    def doc(item):
        kind, key = item
        return {"text": key} if kind == "text" else {"image": key}

    images = emb["images"]
    if len(images) < 5:
        raise SystemExit("need at least 5 embeddable reference images for the rank cases")

    def pick(preferred: list[str], n: int) -> list[str]:
        chosen = [p for p in preferred if p in images]
        chosen += [p for p in images if p not in chosen]
        return chosen[:n]

    # Lossless formats only (their preprocessing is bit-exact, so an end-to-end test can reuse
    # these cases); fall back to whatever exists.
    img_roots = pick(["png_rgb.png", "tiff_rgb.tif"], 2)
    img_matches = pick(["png_rgb.png", "webp_lossless_rgb.webp", "tiff_rgb.tif", "png_l.png", "png_palette.png"], 5)

    def unit(item):
        v = np.asarray(vec(item), dtype=np.float64)
        return v / np.linalg.norm(v)

    def ranked(root, kind: str) -> list:
        """Corpus items of ``kind`` (excluding ``root`` and AVIF) with their cosine to ``root``,
        most similar first (stable)."""
        pool = [("text", t) for t in emb["texts"]] if kind == "text" else [("image", f) for f in images]
        pool = [p for p in pool if p != root and not p[1].endswith(".avif")]
        r = unit(root)
        return sorted(((float(unit(p) @ r), p) for p in pool), key=lambda cp: -cp[0])

    def nearest(root, kind: str, n: int) -> list:
        return [p for _, p in ranked(root, kind)[:n]]

    def around(root, kind: str, target: float, n: int) -> list:
        """The n items of ``kind`` whose cosine to ``root`` is closest to ``target``."""
        return [p for _, p in sorted(ranked(root, kind), key=lambda cp: abs(cp[0] - target))[:n]]

    def mixed(root, n: int = 2) -> list:
        """Best cross-modal matches interleaved with same-modality ones a little above them (the
        two towers are independent, so cross-modal cosines are small)."""
        other = "image" if root[0] == "text" else "text"
        cross = ranked(root, other)[:n]
        same = around(root, root[0], cross[0][0] + 0.2, n)
        return [p for pair in zip([p for _, p in cross], same) for p in pair]

    T = lambda s: ("text", s)  # noqa: E731
    I = lambda s: ("image", s)  # noqa: E731
    specs = [
        (
            "image_to_texts",
            "Image roots, each with the 6 texts of upstream test_ranker (one request, two roots).",
            [(I(r), [T(t) for t in RANK_TEXTS]) for r in img_roots],
        ),
        (
            "text_to_images",
            f"Text roots, each matched against {len(img_matches)} images (one request).",
            [(T("a photo of a cat"), [I(n) for n in img_matches]), (T("hello, world!"), [I(n) for n in img_matches])],
        ),
        (
            "text_to_texts",
            "Text roots with text matches; no modality check upstream (test_client ranks 'hello' vs 'jina').",
            [
                (T("hello"), [T("jina")]),
                (T("A"), [T("B"), T("C")]),
                (
                    T("a photo of a television studio"),
                    [
                        T("a photo of a conference room"),
                        T("a photo of a television studio"),
                        T("a photo of a lecture room"),
                        T("a photo of a control room"),
                        T("a photo of a podium indoor"),
                    ],
                ),
            ],
        ),
        (
            "ties_stable_order",
            "Duplicate match texts give bit-identical scores; the stable sort must keep their input order.",
            [
                (
                    T("hello, world!"),
                    [T("good!"), T("world!"), T("good!"), T("goodbye, world!"), T("world!"), T("good!"), T("goodbye, world!")],
                ),
                (I(img_roots[0]), [T("jina"), T("jina"), T("hello"), T("jina")]),
            ],
        ),
        (
            "self_match",
            "Each root is also one of its own matches (its cosine clips to exactly 1.0), among its nearest neighbours.",
            [
                (I(img_roots[0]), [nearest(I(img_roots[0]), "image", 1)[0], I(img_roots[0]), nearest(I(img_roots[0]), "image", 2)[1]]),
                (T("a photo of a cat"), [*nearest(T("a photo of a cat"), "text", 2), T("a photo of a cat")]),
            ],
        ),
        (
            "mixed_modalities",
            "Matches alternating texts and images (each doc's modality is decided independently upstream).",
            [
                (I(img_roots[1]), mixed(I(img_roots[1]))),
                (T("good world!"), mixed(T("good world!"))),
            ],
        ),
    ]

    cases = []
    for name, desc, queries in specs:
        results = set_rank([vec(r) for r, _ in queries], [[vec(m) for m in ms] for _, ms in queries])
        qs = []
        for (root, matches), (cos, soft, order) in zip(queries, results):
            # Keep every score a normal float32 far from underflow: exp() of large negative
            # arguments (and flush-to-zero) differs between platforms, even in numpy.
            if float(np.min(soft)) < MIN_SCORE:
                raise SystemExit(f"rank case {name}: a clip_score < {MIN_SCORE} ({np.min(soft)}); spread too wide")
            # sanity: duplicates must score identically (the tie case relies on it)
            seen = {}
            for i, m in enumerate(matches):
                if m in seen:
                    j = seen[m]
                    assert soft[i] == soft[j] and cos[i] == cos[j], (name, m)
                seen[m] = i
            qs.append(
                {
                    "root": doc(root),
                    "matches": [doc(m) for m in matches],
                    "expected_order": order,
                    "clip_score": [f32(v) for v in soft],
                    "clip_score_cosine": [f32(v) for v in cos],
                    "clip_score_sum": f32(np.sum(soft, dtype=np.float32)),
                }
            )
        cases.append({"name": name, "description": desc, "queries": qs})

    return {
        "description": (
            "/rank reference cases for the tiny test model, computed from tests/fixtures/reference/embeddings.json "
            "with the original CLIP-as-service maths. Generated by scripts/make_fixtures.py; do not edit."
        ),
        "model": MODEL_NAME,
        "embeddings": "tests/fixtures/reference/embeddings.json",
        "maths": {
            "cosine": (
                "float32: cos = 1 - (1 - clip((q.c + 1e-7) / (|q| |c| + 1e-7), -1, 1)) "
                "(docarray cosine distance, then set_rank's 1 - distance); Q = all roots of the request, "
                "C = all their matches concatenated; q.c is a per-pair float32 dot product (upstream's BLAS "
                "matrix product may round a duplicate differently by an ulp)"
            ),
            "logit_scale": f"{LOGIT_SCALE_EXPR}, rounded to float32 (numpy 1.x scalar casting)",
            "logit_scale_f64": float(np.exp(4.60517)),
            "logit_scale_f32": f32(np.exp(4.60517)),
            "clip_score": "float32 softmax of logit_scale * cos over the query's own matches, max-subtracted",
            "order": "matches sorted by clip_score descending with a stable sort (ties keep input order)",
            "range": (
                f"every clip_score is >= {MIN_SCORE} (no float32 underflow); tiny scores carry the cosine error "
                "amplified by the logit scale, so compare clip_score with a relative tolerance"
            ),
            "fields": (
                "per query: matches in input order; expected_order = input indices in output order; "
                "clip_score and clip_score_cosine are per match in INPUT order"
            ),
        },
        "cases": cases,
    }


def step_reference() -> None:
    emb = compute_embeddings()
    write_json(REFERENCE_DIR / "embeddings.json", embeddings_json(emb))
    write_json(REFERENCE_DIR / "rank.json", rank_json(emb))
    if emb["skipped_images"]:
        print("skipped images:", json.dumps(emb["skipped_images"], indent=2))


# ----------------------------------------------------------------------------------------------
# (e) M-CLIP: tiny XLM-R text tower + Hugging Face tokenizer, fp32 and fp16 folders, references
# ----------------------------------------------------------------------------------------------

MCLIP_DIR = FIXTURES / "mclip"
MCLIP_FP16_DIR = FIXTURES / "mclip-fp16"
MCLIP_CORPUS = [
    "a photo of a cat",
    "a photo of a dog",
    "ein Foto einer Katze",
    "une photo d'un chat",
    "una foto de un gato",
    "фотография кошки",
    "猫の写真",
    "一只猫的照片",
    "صورة قطة",
    "hello world",
    "Hello   WORLD!!",  # runs of spaces collapse
    "café naïve ﬁ ①",  # NFKC folds the ligature and the circled digit
    "emoji 🙂 and ✔ are unknown pieces",
    "x",
    " ",  # whitespace only: still a text document upstream
    "numbers 1234567890; punctuation!?",
    " ".join(["hello world"] * 60),  # truncated to 77 ids, </s> kept last
]
MCLIP_IMAGES = ["png_rgb.png", "tiff_rgb.tif", "webp_lossless_rgb.webp", "png_l.png", "png_palette.png"]


def _mclip_readme(info: dict) -> str:
    import tiny_mclip

    arch = tiny_mclip.architecture()
    files = sorted(p.name for p in MCLIP_DIR.iterdir() if p.name != "README.md")
    sizes = ", ".join(f"`{n}` {(MCLIP_DIR / n).stat().st_size} B" for n in files)
    agr = ", ".join(f"{k} {v:.1e}" for k, v in info["agreement"].items())
    return f"""# Tiny M-CLIP test model

**Random weights. Not a trained model.** Served as `{tiny_mclip.MODEL_NAME}` (image size
{tiny_mclip.IMAGE_SIZE}, Hugging Face tokenizer). Generated by `scripts/make_fixtures.py --only mclip`
(via `scripts/fixtures/tiny_mclip.py`); do not edit by hand. `../mclip-fp16` is the same folder
converted by `scripts/convert_fp16.py`.

| | |
|---|---|
| text tower | `transformers.XLMRobertaModel` ({arch["text"]["num_hidden_layers"]} layers, hidden {arch["text"]["hidden_size"]}, {arch["text"]["num_attention_heads"]} heads, vocab {info["vocab_size"]}), attention-mask mean pooling, `Linear({arch["text"]["hidden_size"]}, {arch["embed_dim"]})`: Multilingual-CLIP's `forward` |
| tokenizer | XLM-R layout: SentencePiece Unigram trained on a few multilingual sentences, `<s>`=0 `<pad>`=1 `</s>`=2 `<unk>`=3, `<mask>` last; NFKC, collapsed spaces, Metaspace, RoBERTa post-processor |
| image tower | open_clip ViT ({arch["vision"]["layers"]} layer, width {arch["vision"]["width"]}, patch {arch["vision"]["patch_size"]}) projecting to {arch["embed_dim"]} |
| layout | the layout of the original's extracted `textual.zip`: `textual.onnx` with its weights in `textual.onnx.data` (ONNX external data), beside `visual.onnx` and `tokenizer.json` (`tokenizer_config.json` lets `transformers.AutoTokenizer` load the folder as the original does) |
| inputs | `input_ids`, `attention_mask` int32 `[B, L]`, dynamic B and L (L = longest item of the minibatch, at most 77); `pixel_values` float32 `[B, 3, 224, 224]` |
| files | {sizes} |
| torch vs onnxruntime | {agr} |
"""


def step_mclip() -> None:
    import numpy as np
    import onnxruntime as ort

    import convert_fp16
    import ref_image
    import tiny_mclip

    info = tiny_mclip.make(MCLIP_DIR)
    (MCLIP_DIR / "README.md").write_text(_mclip_readme(info), encoding="utf-8")
    if MCLIP_FP16_DIR.exists():
        for f in MCLIP_FP16_DIR.iterdir():
            f.unlink()
    convert_fp16.main([str(MCLIP_DIR), str(MCLIP_FP16_DIR)])
    (MCLIP_FP16_DIR / "README.md").write_text(
        "# Tiny M-CLIP test model, float16\n\n`../mclip` converted by `scripts/convert_fp16.py` (inputs and outputs "
        "float16 except the int32 ids); serve with `--dtype fp16`. Generated by `scripts/make_fixtures.py --only mclip`.\n",
        encoding="utf-8",
    )

    def sessions(folder: Path):
        so = ort.SessionOptions()
        # As clip-worker: ORT_ENABLE_ALL, but ORT_ENABLE_LAYOUT for float16 graphs (ONNX Runtime
        # 1.31/1.32 crash applying the rest to some converted graphs).
        so.graph_optimization_level = (
            ort.GraphOptimizationLevel.ORT_ENABLE_LAYOUT if folder == MCLIP_FP16_DIR else ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        )
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        make = lambda n: ort.InferenceSession(str(folder / n), so, providers=["CPUExecutionProvider"])  # noqa: E731
        visual = make("visual.onnx")
        return make("textual.onnx"), visual

    tokenizer = tiny_mclip.hf_tokenizer(MCLIP_DIR)
    pixels = []
    for name in MCLIP_IMAGES:
        crop = _load_crop(ref_image, (IMAGES_DIR / name).read_bytes(), tiny_mclip.IMAGE_SIZE)
        pixels.append(_normalized(ref_image, crop))
    pixels = np.stack(pixels).astype(np.float32)

    out = {}
    for dtype, folder in (("float32", MCLIP_DIR), ("float16", MCLIP_FP16_DIR)):
        textual, visual = sessions(folder)
        ids_rows, text_rows = [], []
        for start in range(0, len(MCLIP_CORPUS), MINIBATCH_SIZE):
            ids, mask = tiny_mclip.tokenize(tokenizer, MCLIP_CORPUS[start : start + MINIBATCH_SIZE])
            emb = textual.run(None, {"input_ids": ids, "attention_mask": mask})[0]
            assert emb.dtype == np.dtype(dtype), emb.dtype
            text_rows.append(emb)
            ids_rows += [[int(i) for i, m in zip(r, mr) if m] for r, mr in zip(ids, mask)]
        feed = pixels.astype(np.float16) if dtype == "float16" else pixels
        image_emb = visual.run(None, {"pixel_values": feed})[0]
        assert image_emb.dtype == np.dtype(dtype), image_emb.dtype
        out[dtype] = {"ids": ids_rows, "text": np.concatenate(text_rows), "image": image_emb}
    if out["float32"]["ids"] != out["float16"]["ids"]:
        raise SystemExit("tokenisation differs between the two runs")

    def cosines(a, b):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))

    fp16_cost = {
        kind: {"min_cosine": float(cosines(out["float32"][kind], out["float16"][kind]).min()),
               "mean_cosine": float(cosines(out["float32"][kind], out["float16"][kind]).mean())}
        for kind in ("text", "image")
    }
    print("M-CLIP fixture, float16 vs float32 cosine:", json.dumps(fp16_cost))

    emb32 = out["float32"]
    vec = {("text", t): emb32["text"][i] for i, t in enumerate(MCLIP_CORPUS)}
    vec.update({("image", n): emb32["image"][i] for i, n in enumerate(MCLIP_IMAGES)})
    doc = lambda item: {"text": item[1]} if item[0] == "text" else {"image": item[1]}  # noqa: E731
    T = lambda s: ("text", s)  # noqa: E731
    I = lambda s: ("image", s)  # noqa: E731
    specs = [
        ("cross_lingual_texts", "One text root against its translations and a distractor.",
         [(T("a photo of a cat"), [T(t) for t in MCLIP_CORPUS[1:9]])]),
        ("text_to_images", "A German text root against five images.",
         [(T("ein Foto einer Katze"), [I(n) for n in MCLIP_IMAGES])]),
        ("image_to_texts", "Two image roots against six texts in one request.",
         [(I(MCLIP_IMAGES[0]), [T(t) for t in MCLIP_CORPUS[2:8]]), (I(MCLIP_IMAGES[1]), [T(t) for t in MCLIP_CORPUS[9:15]])]),
    ]
    cases = []
    for name, desc, queries in specs:
        results = set_rank([vec[r] for r, _ in queries], [[vec[m] for m in ms] for _, ms in queries])
        qs = []
        for (root, matches), (cos, soft, order) in zip(queries, results):
            if float(np.min(soft)) < MIN_SCORE:
                raise SystemExit(f"M-CLIP rank case {name}: a clip_score < {MIN_SCORE}; pick closer matches")
            qs.append({
                "root": doc(root),
                "matches": [doc(m) for m in matches],
                "expected_order": order,
                "clip_score": [f32(v) for v in soft],
                "clip_score_cosine": [f32(v) for v in cos],
            })
        cases.append({"name": name, "description": desc, "queries": qs})

    write_json(REFERENCE_DIR / "mclip.json", {
        "description": (
            "Raw embeddings and /rank cases of the tiny M-CLIP model in tests/fixtures/mclip (float32) and "
            "tests/fixtures/mclip-fp16 (float16), computed with transformers.AutoTokenizer and onnxruntime the way "
            "CLIP-as-service's M-CLIP path runs them. Generated by scripts/make_fixtures.py --only mclip; do not edit."
        ),
        "model": tiny_mclip.MODEL_NAME,
        "model_dir": "tests/fixtures/mclip",
        "model_dir_fp16": "tests/fixtures/mclip-fp16",
        "dim": int(emb32["text"].shape[1]),
        "minibatch_size": MINIBATCH_SIZE,
        "text_inputs": (
            "AutoTokenizer.from_pretrained(model_dir)(texts, max_length=77, truncation=True, padding=True, "
            "return_attention_mask=True) per minibatch of 32 in list order, cast to int32; 'ids' are the unpadded ids"
        ),
        "image_inputs": "ref_image.py load_crop(bytes, 224) -> normalize(); float16 folder: cast to float16 after normalising",
        "onnxruntime": {"providers": ["CPUExecutionProvider"], "graph_optimization_level": "ORT_ENABLE_ALL (float16: ORT_ENABLE_LAYOUT)", "intra_op_num_threads": 1},
        "generated_with": {**versions(), "transformers": importlib.metadata.version("transformers"),
                           "tokenizers": importlib.metadata.version("tokenizers"),
                           "onnxconverter-common": importlib.metadata.version("onnxconverter-common")},
        "fp16_vs_fp32": fp16_cost,
        "text": [
            {"text": t, "ids": ids, "embedding": [f32(v) for v in r32], "embedding_fp16": [float(v) for v in r16]}
            for t, ids, r32, r16 in zip(MCLIP_CORPUS, emb32["ids"], emb32["text"], out["float16"]["text"])
        ],
        "image": [
            {"file": n, "embedding": [f32(v) for v in r32], "embedding_fp16": [float(v) for v in r16]}
            for n, r32, r16 in zip(MCLIP_IMAGES, emb32["image"], out["float16"]["image"])
        ],
        "cases": cases,
    })


def step_fp16_cost() -> None:
    """The fidelity cost of fp16 on the main fixture: the tiny CLIP converted as the original converts
    it, run on the reference corpus, cosine against the float32 reference (printed, for docs/fidelity.md)."""
    import tempfile

    import numpy as np
    import onnxruntime as ort

    import convert_fp16
    import ref_image
    import ref_text

    ref = json.loads((REFERENCE_DIR / "embeddings.json").read_text(encoding="utf-8"))
    with tempfile.TemporaryDirectory() as tmp:
        convert_fp16.main([str(MODEL_DIR), tmp, "--no-check"])
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_LAYOUT  # as clip-worker for float16
        textual = ort.InferenceSession(str(Path(tmp) / "textual.onnx"), so, providers=["CPUExecutionProvider"])
        visual = ort.InferenceSession(str(Path(tmp) / "visual.onnx"), so, providers=["CPUExecutionProvider"])
        texts = [e["text"] for e in ref["text"]]
        ids, mask = _pad_ids([list(map(int, ref_text.tokenize(t))) for t in texts])
        t16 = textual.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        px = [_normalized(ref_image, _load_crop(ref_image, (IMAGES_DIR / e["file"]).read_bytes(), IMAGE_SIZE)) for e in ref["image"]]
        i16 = np.concatenate([visual.run(None, {"pixel_values": np.stack(px[s : s + 32]).astype(np.float16)})[0] for s in range(0, len(px), 32)])

    def cos(a, b):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))

    for kind, got, entries in (("text", t16, ref["text"]), ("image", i16, ref["image"])):
        c = cos(got, [e["embedding"] for e in entries])
        print(f"{kind}: {len(c)} documents, float16 vs float32 cosine min {c.min():.6f} mean {c.mean():.6f}")



def step_failing_model() -> None:
    import failing_model

    failing_model.write(FIXTURES / "model-failing")


STEPS = {
    "model": step_model,
    "failing-model": step_failing_model,
    "text": step_text,
    "images": step_images,
    "reference": step_reference,
    "mclip": step_mclip,
    "fp16-cost": step_fp16_cost,
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Regenerate all test fixtures under tests/fixtures/.")
    ap.add_argument("--only", action="append", choices=list(STEPS), help="run only these steps (repeatable)")
    args = ap.parse_args(argv)
    os.chdir(REPO)
    for name in args.only or list(STEPS):
        print(f"== {name}", flush=True)
        STEPS[name]()
    return 0


if __name__ == "__main__":
    sys.exit(main())
