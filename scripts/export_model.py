#!/usr/bin/env python3
"""Export an open_clip model to a clip-worker model folder (`textual.onnx` + `visual.onnx`).

    python scripts/export_model.py --model ViT-B-32 --pretrained laion2b_s34b_b79k OUT_DIR
    python scripts/export_model.py --model ViT-B-32 --checkpoint my-finetune.pt OUT_DIR
    python scripts/export_model.py --model ViT-B-32 --pretrained none OUT_DIR   # random weights

then serve it with a name of the same architecture (the name decides the image size and the
tokenizer):

    clip-worker serve --model ViT-B-32::openai --model-dir OUT_DIR

The folder follows the contract of CLIP-as-service's ONNX graphs:

* `textual.onnx`: `input_ids` int32 [B, 77], `attention_mask` int32 [B, 77] -> output 0
  `encode_text(input_ids)` float32 [B, D], not normalised (the mask is a graph input, unused
  by the CLIP text tower, as in the original graphs);
* `visual.onnx`: `pixel_values` float32 [B, 3, S, S] -> output 0 `encode_image` float32 [B, D].

The batch axis B is dynamic.  After export, both graphs are run with onnxruntime on the same
inputs as torch (batches of 1 and 3) and the largest absolute difference is printed; the script
fails if it exceeds `--tolerance`.  Graphs over 2 GB keep their weights in `<graph>.data`
beside them.  For float16, convert the folder afterwards with scripts/convert_fp16.py.

Only for exporting: clip-worker does not need Python at run time.
    pip install torch open_clip_torch onnx onnxruntime numpy
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from convert_fp16 import save_graph  # noqa: E402  (same folder)

CONTEXT_LENGTH = 77


class TextualGraph(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.model.encode_text(input_ids.long())
        # Keep `attention_mask` a real input (the contract feeds it) without changing the result.
        return out + attention_mask.to(out.dtype).sum(dim=1, keepdim=True) * 0.0


class VisualGraph(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixel_values)


def load_model(name: str, pretrained: str | None, checkpoint: Path | None, seed: int) -> nn.Module:
    import open_clip

    torch.manual_seed(seed)
    weights = str(checkpoint) if checkpoint else (None if pretrained in (None, "none") else pretrained)
    # open_clip accepts a pretrained tag or a local checkpoint file here.
    model = open_clip.create_model(name, pretrained=weights, device="cpu")
    model.eval()
    return model


def image_size(model: nn.Module) -> int:
    size = getattr(model.visual, "image_size", None)
    if isinstance(size, (tuple, list)):
        if size[0] != size[1]:
            raise SystemExit(f"non-square image size {size} is not supported by the folder contract")
        size = size[0]
    if not isinstance(size, int):
        raise SystemExit("cannot read the image size from model.visual.image_size")
    return size


def check_tokenizer(name: str) -> None:
    """clip-worker tokenizes open_clip models with CLIP's BPE at context 77."""
    import open_clip

    tok = open_clip.get_tokenizer(name)
    if type(tok).__name__ != "SimpleTokenizer" or getattr(tok, "context_length", CONTEXT_LENGTH) != CONTEXT_LENGTH:
        warnings.warn(f"{name} uses {type(tok).__name__} (context {getattr(tok, 'context_length', '?')}); "
                      "clip-worker feeds CLIP BPE ids of length 77, so its text embeddings would be wrong")


def example_text(batch: int, vocab: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random CLIP-like rows: start token, random ids, end token (the highest id), zero padding."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.zeros(batch, CONTEXT_LENGTH, dtype=torch.int32)
    mask = torch.zeros(batch, CONTEXT_LENGTH, dtype=torch.int32)
    for b in range(batch):
        n = int(torch.randint(0, CONTEXT_LENGTH - 2, (1,), generator=g))
        body = torch.randint(1, vocab - 2, (n,), generator=g, dtype=torch.int32)
        row = torch.cat([torch.tensor([vocab - 2], dtype=torch.int32), body, torch.tensor([vocab - 1], dtype=torch.int32)])
        ids[b, : len(row)] = row
        mask[b, : len(row)] = 1
    return ids, mask


def export(model: nn.Module, out_dir: Path, opset: int, seed: int) -> None:
    import onnx

    size = image_size(model)
    vocab = int(model.vocab_size) if hasattr(model, "vocab_size") else 49408
    out_dir.mkdir(parents=True, exist_ok=True)
    ids, mask = example_text(2, vocab, seed)
    px = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(seed))
    torch.backends.mha.set_fastpath_enabled(False)  # the fast path has no ONNX export
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        jobs = [
            ("textual.onnx", TextualGraph(model), (ids, mask), ["input_ids", "attention_mask"], "text_embeds"),
            ("visual.onnx", VisualGraph(model), (px,), ["pixel_values"], "image_embeds"),
        ]
        for fname, graph, args, inputs, output in jobs:
            tmp_path = Path(tmp) / fname
            torch.onnx.export(
                graph.eval(), args, str(tmp_path), dynamo=False, opset_version=opset,
                input_names=inputs, output_names=[output],
                dynamic_axes={**{i: {0: "batch"} for i in inputs}, output: {0: "batch"}},
                do_constant_folding=True,
            )
            proto = onnx.load(str(tmp_path))
            save_graph(proto, out_dir / fname)
            onnx.checker.check_model(str(out_dir / fname))
            print(f"wrote {out_dir / fname}")


def verify(model: nn.Module, out_dir: Path, seed: int, tolerance: float) -> float:
    """Max abs difference between torch and onnxruntime on batches of 1 and 3."""
    import onnxruntime as ort

    size = image_size(model)
    vocab = int(model.vocab_size) if hasattr(model, "vocab_size") else 49408
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    text = ort.InferenceSession(str(out_dir / "textual.onnx"), so, providers=["CPUExecutionProvider"])
    visual = ort.InferenceSession(str(out_dir / "visual.onnx"), so, providers=["CPUExecutionProvider"])
    worst = 0.0
    for batch in (1, 3):
        ids, mask = example_text(batch, vocab, seed + batch)
        px = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed + batch))
        with torch.no_grad():
            t_ref = model.encode_text(ids.long()).numpy()
            v_ref = model.encode_image(px).numpy()
        t = text.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
        v = visual.run(None, {"pixel_values": px.numpy()})[0]
        for kind, got, ref in (("text", t, t_ref), ("image", v, v_ref)):
            if got.shape != ref.shape or got.dtype != np.float32:
                raise SystemExit(f"{kind} batch {batch}: onnxruntime gave {got.shape} {got.dtype}, torch {ref.shape}")
            diff = float(np.abs(got - ref).max())
            scale = float(np.abs(ref).max())
            print(f"{kind:5s} batch {batch}: max abs diff torch vs onnxruntime {diff:.3e} (largest |value| {scale:.3f})")
            worst = max(worst, diff)
    if worst > tolerance:
        raise SystemExit(f"torch and onnxruntime disagree by {worst:.3e} > {tolerance:.1e}")
    print(f"dim {t.shape[1]}, image size {size}: serve with --model-dir {out_dir} and a --model name of the same architecture")
    return worst


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Export an open_clip model to a clip-worker model folder.")
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--model", required=True, help="open_clip architecture, e.g. ViT-B-32")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--pretrained", help="open_clip pretrained tag (e.g. laion2b_s34b_b79k), or 'none' for random weights")
    src.add_argument("--checkpoint", type=Path, help="local (fine-tuned) open_clip checkpoint file")
    ap.add_argument("--opset", type=int, default=17)
    ap.add_argument("--seed", type=int, default=0, help="seed for random weights and the check inputs")
    ap.add_argument("--tolerance", type=float, default=1e-3, help="largest accepted torch vs onnxruntime difference")
    args = ap.parse_args(argv)
    if args.checkpoint and not args.checkpoint.is_file():
        raise SystemExit(f"no checkpoint file {args.checkpoint}")
    check_tokenizer(args.model)
    model = load_model(args.model, args.pretrained, args.checkpoint, args.seed)
    export(model, args.out_dir, args.opset, args.seed)
    verify(model, args.out_dir, args.seed, args.tolerance)
    return 0


if __name__ == "__main__":
    sys.exit(main())
