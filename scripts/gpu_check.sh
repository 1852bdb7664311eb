#!/usr/bin/env bash
# GPU acceptance check: CUDA, fp16 and multi-session dispatch, in one run on a machine with NVIDIA GPUs.
#
#   scripts/gpu_check.sh            # prints one PASS/FAIL/SKIP line per check, exits 1 on any FAIL
#
# Needs: the clip-worker binary (CLIP_WORKER_BIN, default target/release/clip-worker, built with cargo if
# missing), an ONNX Runtime *GPU* build (ORT_DYLIB_PATH, else the onnxruntime-gpu wheel in ./.venv-gpu or
# ./.venv) with the CUDA libraries it needs, nvidia-smi, and python3 (standard library only). Uses only the
# committed fixtures (tests/fixtures/model, tests/fixtures/mclip, tests/fixtures/mclip-fp16).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
FAILED=0
pass() { echo "PASS  $*"; }
fail() { echo "FAIL  $*"; FAILED=1; }
skip() { echo "SKIP  $*"; }

BIN=${CLIP_WORKER_BIN:-$ROOT/target/release/clip-worker}
if [[ ! -x $BIN ]]; then
  cargo build --release --locked >/dev/null 2>&1 || { echo "FAIL  cannot build $BIN"; exit 1; }
fi

if [[ -z ${ORT_DYLIB_PATH:-} ]]; then
  for venv in .venv-gpu .venv; do
    lib=$(ls "$venv"/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so* 2>/dev/null | head -n1)
    if [[ -n $lib && -e $(dirname "$lib")/libonnxruntime_providers_cuda.so ]]; then
      export ORT_DYLIB_PATH=$ROOT/$lib
      break
    fi
  done
fi
if [[ -z ${ORT_DYLIB_PATH:-} ]]; then
  echo "FAIL  no ONNX Runtime GPU build: set ORT_DYLIB_PATH, or pip install onnxruntime-gpu into ./.venv-gpu"
  exit 1
fi
CAPI=$(dirname "$ORT_DYLIB_PATH")
echo "ONNX Runtime: $ORT_DYLIB_PATH"

GPUS=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ' || true)
echo "GPUs: ${GPUS:-0}"
nvidia-smi -L 2>/dev/null
[[ ${GPUS:-0} -ge 1 ]] || { echo "FAIL  nvidia-smi lists no GPU"; exit 1; }

CLIP=tests/fixtures/model
MCLIP=tests/fixtures/mclip
MCLIP16=tests/fixtures/mclip-fp16
MCLIP_NAME=M-CLIP/XLM-Roberta-Large-Vit-B-32

# A small corpus: the reference texts and lossless images.
python3 - "$WORK/docs.jsonl" <<'EOF'
import json, sys
texts = [e["text"] for e in json.load(open("tests/fixtures/reference/mclip.json"))["text"]]
texts += [f"a photo of thing number {i}" for i in range(64)]
images = ["png_rgb.png", "tiff_rgb.tif", "webp_lossless_rgb.webp", "png_l.png", "png_palette.png"]
with open(sys.argv[1], "w") as f:
    for i, t in enumerate(texts):
        f.write(json.dumps({"id": f"t{i}", "text": t}) + "\n")
    for n in images:
        f.write(json.dumps({"id": n, "uri": f"tests/fixtures/images/{n}"}) + "\n")
EOF

encode() { # OUT ARGS... ; stderr goes to OUT.log
  local out=$1; shift
  local start=$SECONDS
  CLIP_WORKER_LOG=clip_worker=info "$BIN" encode --input "$WORK/docs.jsonl" --output "$out" "$@" 2>"$out.log"
  local rc=$?
  echo "      ($((SECONDS - start)) s, exit $rc: $*)"
  return $rc
}

# Worst cosine between two encode outputs (same ids); prints the number.
compare() {
  python3 - "$1" "$2" <<'EOF'
import json, math, sys
def load(p):
    return {d["id"]: d["embedding"] for d in map(json.loads, open(p)) if "embedding" in d}
a, b = load(sys.argv[1]), load(sys.argv[2])
assert a.keys() == b.keys() and a, "different documents"
def cos(x, y):
    return sum(p * q for p, q in zip(x, y)) / math.sqrt(sum(p * p for p in x) * sum(q * q for q in y))
print(f"{min(cos(a[k], b[k]) for k in a):.6f}")
EOF
}
at_least() { python3 -c "import sys; sys.exit(0 if float('$1') >= float('$2') else 1)"; }

echo "== references on CPU"
encode "$WORK/cpu.jsonl" --device cpu --model-dir "$CLIP" || fail "CPU reference run"
encode "$WORK/mclip-cpu.jsonl" --device cpu --model "$MCLIP_NAME" --model-dir "$MCLIP" || fail "M-CLIP CPU reference run"

echo "== CUDA, fp32"
if encode "$WORK/cuda.jsonl" --device cuda:0 --model-dir "$CLIP"; then
  c=$(compare "$WORK/cpu.jsonl" "$WORK/cuda.jsonl")
  at_least "$c" 0.9999 && pass "cuda:0 fp32 matches CPU (worst cosine $c)" || fail "cuda:0 fp32 vs CPU: worst cosine $c"
else
  fail "cuda:0 fp32: $(tail -n 3 "$WORK/cuda.jsonl.log")"
fi
if encode "$WORK/mclip-cuda.jsonl" --device cuda:0 --model "$MCLIP_NAME" --model-dir "$MCLIP"; then
  c=$(compare "$WORK/mclip-cpu.jsonl" "$WORK/mclip-cuda.jsonl")
  at_least "$c" 0.9999 && pass "M-CLIP on cuda:0 matches CPU (worst cosine $c)" || fail "M-CLIP cuda:0 vs CPU: $c"
else
  fail "M-CLIP cuda:0: $(tail -n 3 "$WORK/mclip-cuda.jsonl.log")"
fi
last=$((GPUS - 1))
if encode "$WORK/ordinal.jsonl" --device "cuda:$last" --model-dir "$CLIP"; then
  pass "cuda:$last (last GPU) runs"
else
  fail "cuda:$last: $(tail -n 3 "$WORK/ordinal.jsonl.log")"
fi
if encode "$WORK/bad.jsonl" --device "cuda:$GPUS" --model-dir "$CLIP"; then
  fail "cuda:$GPUS (no such GPU) did not fail"
else
  pass "cuda:$GPUS (no such GPU) fails: $(grep -m1 -o 'failed to create.*' "$WORK/bad.jsonl.log" | cut -c1-160)"
fi

echo "== fp16"
if encode "$WORK/mclip16-cuda.jsonl" --device cuda:0 --dtype fp16 --model "$MCLIP_NAME" --model-dir "$MCLIP16"; then
  c=$(compare "$WORK/mclip-cpu.jsonl" "$WORK/mclip16-cuda.jsonl")
  at_least "$c" 0.99 && pass "fp16 on cuda:0: worst cosine vs fp32 CPU $c" || fail "fp16 on cuda:0 vs fp32: $c"
else
  fail "fp16 on cuda:0: $(tail -n 3 "$WORK/mclip16-cuda.jsonl.log")"
fi
if [[ -x .venv-fixtures/bin/python ]] && .venv-fixtures/bin/python scripts/convert_fp16.py --no-check "$CLIP" "$WORK/clip16" >/dev/null 2>&1; then
  if encode "$WORK/clip16-cuda.jsonl" --device cuda:0 --dtype fp16 --model-dir "$WORK/clip16"; then
    c=$(compare "$WORK/cpu.jsonl" "$WORK/clip16-cuda.jsonl")
    pass "CLIP fixture fp16 on cuda:0: worst cosine vs fp32 CPU $c"
  else
    fail "CLIP fixture fp16 on cuda:0: $(tail -n 3 "$WORK/clip16-cuda.jsonl.log")"
  fi
else
  skip "CLIP fixture fp16 (needs .venv-fixtures with onnx and onnxconverter-common to convert)"
fi

echo "== several session sets"
if [[ $GPUS -ge 2 ]]; then DEVICES=cuda:0,cuda:1; else DEVICES=cuda:0,cuda:0; fi
if encode "$WORK/multi.jsonl" --device "$DEVICES" --minibatch-size 4 --model-dir "$CLIP"; then
  spread=$(grep -o 'minibatches per session set: .*' "$WORK/multi.jsonl.log" | tail -n1)
  c=$(compare "$WORK/cuda.jsonl" "$WORK/multi.jsonl")
  if [[ $spread =~ =([1-9][0-9]*)\ .*=([1-9][0-9]*) ]] && at_least "$c" 0.9999; then
    pass "$DEVICES: $spread; worst cosine vs one device $c"
  else
    fail "$DEVICES: '$spread', worst cosine $c"
  fi
else
  fail "$DEVICES: $(tail -n 3 "$WORK/multi.jsonl.log")"
fi

echo "== TensorRT (opt-in)"
if [[ -e $CAPI/libonnxruntime_providers_tensorrt.so ]]; then
  cp -r "$CLIP" "$WORK/trt-model"
  if encode "$WORK/trt1.jsonl" --device cuda:0 --tensorrt --model-dir "$WORK/trt-model" \
    && encode "$WORK/trt2.jsonl" --device cuda:0 --tensorrt --model-dir "$WORK/trt-model"; then
    files=$(ls "$WORK/trt-model/tensorrt" 2>/dev/null | tr '\n' ' ')
    c=$(compare "$WORK/cpu.jsonl" "$WORK/trt2.jsonl")
    [[ -n $files ]] && pass "TensorRT: caches in <model>/tensorrt: $files; worst cosine vs CPU $c" \
      || fail "TensorRT ran but left no cache in <model>/tensorrt"
  else
    fail "TensorRT: $(tail -n 3 "$WORK/trt1.jsonl.log")"
  fi
else
  skip "TensorRT (no libonnxruntime_providers_tensorrt.so beside $ORT_DYLIB_PATH)"
fi

[[ $FAILED == 0 ]] && echo "gpu_check: all checks passed" || echo "gpu_check: some checks FAILED"
exit $FAILED
