#!/usr/bin/env python3
"""Make a float16 copy of a clip-worker model folder (serve it with `--dtype fp16`).

    python scripts/convert_fp16.py SRC_FOLDER DST_FOLDER

SRC_FOLDER holds `textual.onnx` and `visual.onnx` (and, for M-CLIP, `tokenizer.json`), as in
`~/.cache/clip/<name>`; graphs stored with external weight files (the extracted `.zip` models)
are read with their data.  Each graph is converted the way CLIP-as-service converts it at start-up
when it runs in fp16: onnxconverter-common's `convert_float_to_float16_model_path` with its
defaults (version 1.13.0, as the original pins; inputs and outputs become float16, initialisers clamped to [1e-7, 1e4] in magnitude,
the default op block list kept in float32).  Every other file is copied.  A graph over 2 GB is
written with its weights in `<graph>.data` beside it.

After writing, each pair of graphs is run once with onnxruntime on the same random input and
the cosine between the float32 and float16 outputs is printed (a quick sanity check; the
measured fidelity cost is in docs/fidelity.md).

Needs only Python packages (not needed at run time):
    pip install onnx onnxconverter-common==1.13.0 onnxruntime numpy
"""

from __future__ import annotations

import argparse
import shutil
import sys
import types
from pathlib import Path

GRAPHS = ("textual.onnx", "visual.onnx")
TWO_GB = 2**31 - 1


def float16_converter():
    """onnxconverter-common's `float16` module, loaded from its file.

    1.13.0 is the version CLIP-as-service runs (later releases leave `Cast(to=float)` nodes as they
    are while turning their outputs' types to float16, which breaks graphs that contain them, such
    as Hugging Face text towers).  Its package `__init__` imports `onnx.mapping`, which recent onnx
    releases removed; `float16.py` itself needs only onnx and numpy, so it is loaded on its own.
    """
    import importlib.metadata
    import importlib.util

    version = importlib.metadata.version("onnxconverter-common")
    if version != "1.13.0":
        print(f"warning: onnxconverter-common {version}; the original converts with 1.13.0", file=sys.stderr)
    spec = importlib.util.find_spec("onnxconverter_common")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("onnxconverter-common is not installed (pip install onnxconverter-common==1.13.0)")
    path = Path(list(spec.submodule_search_locations)[0]) / "float16.py"
    source = path.read_text(encoding="utf-8")
    # numpy 2 removed the binary `fromstring` and `ndarray.tostring`; their replacements return
    # the same bytes.
    source = source.replace("np.fromstring(", "np.frombuffer(").replace(".tostring()", ".tobytes()")
    module = types.ModuleType("onnxconverter_common_float16")
    module.__file__ = str(path)
    exec(compile(source, str(path), "exec"), module.__dict__)
    return module


def save_graph(model, dst: Path) -> None:
    """Writes a graph, with its weights in `<name>.data` beside it when it is over 2 GB."""
    import onnx

    for stale in (dst, dst.with_name(dst.name + ".data")):
        stale.unlink(missing_ok=True)
    if model.ByteSize() > TWO_GB:
        onnx.save_model(model, str(dst), save_as_external_data=True, all_tensors_to_one_file=True, location=dst.name + ".data")
    else:
        onnx.save_model(model, str(dst))


def convert_graph(src: Path, dst: Path) -> None:
    save_graph(float16_converter().convert_float_to_float16_model_path(str(src)), dst)


def external_files(graph: Path) -> set[str]:
    """Names of the external weight files a graph refers to (copied with the graph, not as is)."""
    import onnx
    from onnx.external_data_helper import uses_external_data

    model = onnx.load(str(graph), load_external_data=False)
    names = set()
    for t in model.graph.initializer:
        if uses_external_data(t):
            names.update(e.value for e in t.external_data if e.key == "location")
    return names


def compare(src: Path, dst: Path, seed: int = 0) -> dict[str, float]:
    """Cosine of float32 vs float16 outputs for one random batch per graph."""
    import numpy as np
    import onnxruntime as ort

    rng = np.random.default_rng(seed)
    out = {}
    for name in GRAPHS:
        # ORT_ENABLE_ALL crashes ONNX Runtime 1.31/1.32 on some float16 graphs; the layout level does not.
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_LAYOUT
        s32 = ort.InferenceSession(str(src / name), so, providers=["CPUExecutionProvider"])
        s16 = ort.InferenceSession(str(dst / name), so, providers=["CPUExecutionProvider"])
        feed32, feed16 = {}, {}
        for i16, i32 in zip(s16.get_inputs(), s32.get_inputs()):
            dims = [d if isinstance(d, int) else (4 if k == 0 else 12) for k, d in enumerate(i32.shape)]
            if "float" in i32.type:
                x = rng.standard_normal(dims).astype(np.float32)
                feed32[i32.name] = x
                feed16[i16.name] = x.astype(np.float16) if "float16" in i16.type else x
            else:
                kind = np.int32 if "int32" in i32.type else np.int64
                # token ids from the low range every vocabulary has; a mask of ones
                ids = np.ones(dims, kind) if "mask" in i32.name else rng.integers(4, 100, size=dims).astype(kind)
                feed32[i32.name] = feed16[i16.name] = ids
        a = s32.run(None, feed32)[0].astype(np.float64)
        b = s16.run(None, feed16)[0].astype(np.float64)
        cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        out[name] = float(cos.min())
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Convert a clip-worker model folder to float16.")
    ap.add_argument("src", type=Path, help="folder with textual.onnx and visual.onnx (float32)")
    ap.add_argument("dst", type=Path, help="folder to write (created; files in it are replaced)")
    ap.add_argument("--no-check", action="store_true", help="skip the onnxruntime comparison")
    args = ap.parse_args(argv)
    for name in GRAPHS:
        if not (args.src / name).is_file():
            raise SystemExit(f"{args.src} has no {name}")
    if args.src.resolve() == args.dst.resolve():
        raise SystemExit("SRC and DST must differ")
    args.dst.mkdir(parents=True, exist_ok=True)
    skip = set(GRAPHS)
    for name in GRAPHS:
        skip |= external_files(args.src / name)
    for f in sorted(args.src.iterdir()):
        if f.is_file() and f.name not in skip:
            shutil.copy2(f, args.dst / f.name)
    for name in GRAPHS:
        convert_graph(args.src / name, args.dst / name)
        print(f"wrote {args.dst / name}")
    if not args.no_check:
        for name, cos in compare(args.src, args.dst).items():
            print(f"{name}: worst cosine float16 vs float32 on a random batch: {cos:.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
