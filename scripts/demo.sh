#!/usr/bin/env bash
# The main job, end to end on one machine: a local NATS server (JetStream on), one clip-worker
# serving the bundled fixture model, then a demo encode and rank through NATS, both as
# request/reply and as a durable job. Everything stops when the script ends.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
cargo build --locked --bin clip-worker
BIN=target/debug/clip-worker

work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
url="nats://127.0.0.1:$port"
cleanup() {
  [ -n "${worker_pid:-}" ] && kill -TERM "$worker_pid" 2>/dev/null && wait "$worker_pid" 2>/dev/null || true
  [ -n "${nats_pid:-}" ] && kill "$nats_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

.venv/bin/nats-server -a 127.0.0.1 -p "$port" -js -sd "$work/js" >"$work/nats.log" 2>&1 &
nats_pid=$!
# Metrics and probes on a free port (the default 9090 may be taken on a workstation).
"$BIN" serve --nats-url "$url" --model-dir tests/fixtures/model --device cpu --metrics-addr 127.0.0.1:0 \
  2>"$work/worker.log" &
worker_pid=$!
for _ in $(seq 1 200); do grep -q "clip-worker ready" "$work/worker.log" 2>/dev/null && break; sleep 0.1; done
grep -q "clip-worker ready" "$work/worker.log" || { cat "$work/worker.log"; exit 1; }

img=tests/fixtures/images/png_rgb.png
echo "== encode (request/reply): a sentence and $img"
"$BIN" submit encode --nats-url "$url" "a photo of a cat" "$img" \
  | python3 -c 'import json,sys
for l in sys.stdin:
    d=json.loads(l); e=d.get("embedding")
    print(d["id"], d.get("modality"), f"dim={len(e)}" if e else d.get("error"), (e or [])[:3])'
echo "== encode (durable JetStream job)"
"$BIN" submit encode --durable --nats-url "$url" "a diagram of a neural network" \
  | python3 -c 'import json,sys
for l in sys.stdin:
    d=json.loads(l); print(d["id"], d.get("modality"), "dim=%d" % len(d["embedding"]))'
echo "== rank: which caption fits $img best?"
captions=("a photo of a cat" "a photo of a dog" "a city at night" "a bowl of soup")
"$BIN" submit rank --nats-url "$url" --query "$img" "${captions[@]}" \
  | python3 -c '
import json, sys
captions = sys.argv[1:]
for line in sys.stdin:
    for m in json.loads(line)["matches"]:
        s = m.get("scores", {})
        print("  %-18s clip_score=%.4f  cosine=%+.4f" % (captions[int(m["id"])], s.get("clip_score", 0), s.get("clip_score_cosine", 0)))
' "${captions[@]}"
echo "(the bundled model has random weights: the numbers are real CLIP maths, the ranking means nothing)"
metrics=$(sed -n 's|.*metrics on \(http://[^ ]*\)/metrics.*|\1|p' "$work/worker.log" | head -n 1)
echo "== operator's view ($metrics): /readyz and a few series of /metrics"
python3 - "$metrics" <<'PY'
import sys, urllib.request
base = sys.argv[1]
print(" ", urllib.request.urlopen(base + "/readyz").read().decode().strip())
for line in urllib.request.urlopen(base + "/metrics").read().decode().splitlines():
    if line.startswith(("clip_worker_requests_total", "clip_worker_inferences_total", "clip_worker_model_info")):
        print(" ", line)
PY
