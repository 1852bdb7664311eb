#!/usr/bin/env bash
# GPU throughput: the towers alone at minibatches of 1, 32 and 128 (texts and images), the GPU's
# utilisation while they run, whether image preprocessing on this host's cores keeps up with the
# image tower, and the whole in-process pipeline at saturation. Prints one Markdown table.
#
#   scripts/gpu_bench.sh MODEL_DIR
#
# MODEL_DIR   a model folder (textual.onnx, visual.onnx), e.g. a full-size ViT-B-32 with random
#             weights from scripts/export_model.py --pretrained none.
#
# Environment (defaults in brackets):
#   DEVICE          the worker's --device [cuda]; `cpu` runs the same script on a machine without GPUs
#   BATCHES         minibatch sizes ["1 32 128"]
#   SECONDS_EACH    seconds per measurement [15]
#   PREPROCESS      preprocess threads for the pipeline run [the number of cores]
#   CLIP_WORKER_BIN [target/release/clip-worker, built if missing]
# The ONNX Runtime library must be a GPU build (ORT_DYLIB_PATH) for DEVICE=cuda; nvidia-smi, when
# present, is sampled twice a second for utilisation and memory.
set -euo pipefail

MODEL=${1:?usage: scripts/gpu_bench.sh MODEL_DIR}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEVICE=${DEVICE:-cuda}
BATCHES=${BATCHES:-"1 32 128"}
SECONDS_EACH=${SECONDS_EACH:-15}
PREPROCESS=${PREPROCESS:-$(nproc)}
CW=${CLIP_WORKER_BIN:-$ROOT/target/release/clip-worker}
[ -x "$CW" ] || (cd "$ROOT" && cargo build --release --quiet --bin clip-worker)
OUT=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$OUT"' EXIT

# Runs `clip-worker bench --in-process ...` with utilisation sampling; prints
# "docs/s gpu_mean% gpu_max% mem_max_MiB" (the GPU fields are "-" without nvidia-smi).
measure() {
    local name=$1
    shift
    local smi=$OUT/$name.smi
    : >"$smi"
    local sampler=""
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits -lms 500 >"$smi" &
        sampler=$!
    fi
    "$CW" bench --model-dir "$MODEL" --device "$DEVICE" --duration "${SECONDS_EACH}s" --json --quiet \
        "$@" >"$OUT/$name.json"
    [ -n "$sampler" ] && kill "$sampler" 2>/dev/null || true
    python3 - "$OUT/$name.json" "$smi" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
rows = [l.replace(" ", "").split(",") for l in open(sys.argv[2]) if l.strip()]
# One line per GPU per sample; the busiest GPU of each sample counts.
util = [float(u) for u, _ in rows if u.replace(".", "").isdigit()]
mem = [float(m) for _, m in rows if m.replace(".", "").isdigit()]
if util:
    print(f"{r['docs_per_s']:.1f} {sum(util) / len(util):.0f} {max(util):.0f} {max(mem):.0f}")
else:
    print(f"{r['docs_per_s']:.1f} - - -")
PY
}

echo "| run | documents | minibatch | docs/s | GPU util mean / max | GPU memory max |"
echo "|---|---|---:|---:|---:|---:|"
for w in text image; do
    for b in $BATCHES; do
        read -r rate mean max mem < <(measure "model-$w-$b" --in-process model --workload "$w" --batch-size "$b")
        echo "| model only | ${w}s | $b | $rate | $mean / $max % | $mem MiB |"
        [ "$w" = image ] && [ "$b" = "${BATCHES##* }" ] && TOWER=$rate
    done
done
read -r per_core _ < <(measure prep-image --in-process preprocess --workload image --batch-size 1)
echo "| preprocessing, one thread | images | — | $per_core | — | — |"
read -r rate mean max mem < <(measure pipeline-image --in-process engine --workload image --batch-size 32 \
    --concurrency 8 --num-worker-preprocess "$PREPROCESS")
echo "| pipeline, $PREPROCESS preprocess threads | images | 32 | $rate | $mean / $max % | $mem MiB |"
python3 - "$per_core" "$PREPROCESS" "$TOWER" <<'PY'
import sys
per_core, threads, tower = float(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
print(f"\npreprocessing: {per_core:.1f} images/s per thread x {threads} threads = {per_core * threads:.0f}/s "
      f"against the image tower's {tower:.0f}/s at its largest minibatch: "
      + ("keeps up" if per_core * threads >= tower else f"falls short ({per_core * threads / tower:.2f}x)"))
PY
