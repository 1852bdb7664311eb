#!/usr/bin/env bash
# Sustained overload: a worker with its shipped defaults gets twice the load it can carry for a
# minute, once as request/reply and once as durable jobs, while its resident memory is sampled
# every second. Prints the capacity, throughput per second, peak RSS, how fast the excess is
# refused, and how many jobs waited in the stream.
#
#   scripts/bench/overload.sh MODEL_DIR [OUT_DIR]
#
# Environment: WORKLOAD [text], BATCH [1], CAPACITY_CONCURRENCY [64], LOAD_FACTOR [2],
# OVERLOAD_SECONDS [60], CAPACITY_SECONDS [30], SERVE_FLAGS [none], CLIP_WORKER_BIN, NATS_SERVER_BIN.
set -euo pipefail

MODEL=${1:?usage: scripts/bench/overload.sh MODEL_DIR [OUT_DIR]}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${2:-$(mktemp -d)}
mkdir -p "$OUT"
WORKLOAD=${WORKLOAD:-text}
BATCH=${BATCH:-1}
CAPACITY_CONCURRENCY=${CAPACITY_CONCURRENCY:-64}
LOAD_FACTOR=${LOAD_FACTOR:-2}
OVERLOAD_SECONDS=${OVERLOAD_SECONDS:-60}
CAPACITY_SECONDS=${CAPACITY_SECONDS:-30}
SERVE_FLAGS=${SERVE_FLAGS:-}
# shellcheck source=scripts/bench/common.sh
. "$ROOT/scripts/bench/common.sh"
log() { echo "[overload] $*" >&2; }

start_nats
# shellcheck disable=SC2086
start_worker "$OUT/worker.log" "$MODEL" $SERVE_FLAGS
WORKER=$WORKER_PID

bench() { # $1: output name, rest: flags
    local name=$1; shift
    "$CW" bench --nats-url "nats://127.0.0.1:$NATS_PORT" --workload "$WORKLOAD" \
        --batch-size "$BATCH" --metrics-url "http://127.0.0.1:$METRICS_PORT/metrics" \
        --json "$@" >"$OUT/$name.json"
}

rss_sampler() { # $1: output file; one line per second: seconds, RSS in MB
    local start=$SECONDS
    while kill -0 "$WORKER" 2>/dev/null; do
        awk -v t=$((SECONDS - start)) '/VmRSS/ {printf "%d %.0f\n", t, $2/1024}' "/proc/$WORKER/status" >>"$1"
        sleep 1
    done
}

log "capacity: $CAPACITY_CONCURRENCY requests of $BATCH in flight, ${CAPACITY_SECONDS}s"
bench capacity --concurrency "$CAPACITY_CONCURRENCY" --duration "${CAPACITY_SECONDS}s" --quiet
CAP=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["requests_per_s"])' "$OUT/capacity.json")
RATE=$(python3 -c "print(round($CAP * $LOAD_FACTOR, 2))")
log "capacity $CAP requests/s; overload at $RATE requests/s for ${OVERLOAD_SECONDS}s"
RSS_BEFORE=$(awk '/VmRSS/ {printf "%.0f", $2/1024}' "/proc/$WORKER/status")

idle() { # until the worker has nothing in flight (answers nobody waits for any more included)
    until curl -sf "http://127.0.0.1:$METRICS_PORT/metrics" | grep -q '^clip_worker_inflight_documents 0$'; do sleep 1; done
}

for transport in request jobs; do
    idle
    flags=()
    [ "$transport" = jobs ] && flags=(--durable)
    rss_sampler "$OUT/rss-$transport.txt" &
    SAMPLER=$!
    bench "overload-$transport" --rate "$RATE" --duration "${OVERLOAD_SECONDS}s" "${flags[@]}"
    kill "$SAMPLER" 2>/dev/null || true
    wait "$SAMPLER" 2>/dev/null || true
done
HWM=$(awk '/VmHWM/ {printf "%.0f", $2/1024}' "/proc/$WORKER/status")

python3 - "$OUT" "$RSS_BEFORE" "$HWM" <<'PY'
import json, sys
out, before, hwm = sys.argv[1], sys.argv[2], sys.argv[3]
cap = json.load(open(f"{out}/capacity.json"))
print(f"capacity: {cap['docs_per_s']:.1f} docs/s, {cap['requests_per_s']:.1f} requests/s "
      f"(p50 {cap['latency_ok']['p50_ms']:.0f} ms, p99 {cap['latency_ok']['p99_ms']:.0f} ms)")
print(f"worker RSS before the overload: {before} MB; peak over the whole run (VmHWM): {hwm} MB")
for t in ["request", "jobs"]:
    r = json.load(open(f"{out}/overload-{t}.json"))
    rss = [int(l.split()[1]) for l in open(f"{out}/rss-{t}.txt") if l.strip()]
    print(f"\n{t}: {r['requests']['total']} requests at {r['rate']} /s; ok {r['requests']['ok']}, "
          f"failed {r['requests']['failed']} {r['requests']['by_error']}; {r['docs_per_s']:.1f} docs/s over {r['wall_s']:.0f} s")
    l = r["latency_ok"]
    print(f"  answered: p50 {l['p50_ms']:.0f} ms, p90 {l['p90_ms']:.0f}, p99 {l['p99_ms']:.0f}, max {l['max_ms']:.0f}")
    for code, l in r["latency_failed"].items():
        print(f"  {code}: {l['count']} requests, p50 {l['p50_ms']:.1f} ms, p99 {l['p99_ms']:.1f}, max {l['max_ms']:.1f}")
    print(f"  RSS during the run: min {min(rss)} MB, max {max(rss)} MB" if rss else "  RSS: no samples")
    if r.get("stream_max_messages") is not None:
        print(f"  jobs waiting in the stream: at most {r['stream_max_messages']}")
    print("  docs ok per second: " + " ".join(str(s["docs_ok"]) for s in r["timeline"]))
    if t == "jobs":
        print("  stream messages per second: " + " ".join(str(s.get("stream_messages", "-")) for s in r["timeline"]))
PY
log "raw JSON in $OUT"
