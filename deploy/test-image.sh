#!/usr/bin/env bash
# Builds the CPU image (deploy/Dockerfile) on a machine that cannot pull base images, then runs it
# against a NATS server on loopback and encodes through NATS with it.
#
#   deploy/test-image.sh            # as root, with podman and debootstrap (apt-get install podman debootstrap)
#
# The base images come from the Debian archive instead of a registry: debootstrap makes a bookworm
# root filesystem that is imported as localhost/debian:bookworm-slim; a Python stage and a Rust
# builder are built on it (the builder carries this machine's Rust toolchain, since rustup cannot
# download one here). They stand in for the Dockerfile's RUNTIME_IMAGE, PYTHON_IMAGE and RUST_IMAGE
# build arguments; the Dockerfile itself is the production one. Everything is cached in $WORK, so a
# second run rebuilds only what changed. Prints the image size at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

WORK=${WORK:-/var/tmp/clip-worker-image}
TAG=${TAG:-localhost/clip-worker:test}
SUITE=${SUITE:-bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
TOOLCHAIN=${TOOLCHAIN:-$(rustc --print sysroot)}
BASE=localhost/debian:$SUITE-slim
PYTHON_BASE=localhost/clip-worker-python:$SUITE
BUILDER=localhost/clip-worker-builder:$SUITE
ENGINE=${ENGINE:-podman}

log() { printf '== %s\n' "$*" >&2; }
have_image() { "$ENGINE" image exists "$1"; }
mkdir -p "$WORK"
# Options for sandboxes where the default OCI runtime cannot start containers (see "Where the
# default runtime fails" below); empty on an ordinary machine.
run_opts=()
build_opts=()

# 1. A Debian base image from the archive.
if ! have_image "$BASE"; then
  if [ ! -f "$WORK/rootfs/etc/debian_version" ]; then
    log "debootstrap $SUITE (minbase) from $MIRROR"
    rm -rf "$WORK/rootfs"
    debootstrap --variant=minbase "$SUITE" "$WORK/rootfs" "$MIRROR" >"$WORK/debootstrap.log"
  fi
  log "import $BASE"
  rm -rf "$WORK/rootfs/var/cache/apt/archives/"*.deb "$WORK/rootfs/var/cache/apt/"*.bin "$WORK/rootfs/var/lib/apt/lists/"*
  tar --numeric-owner -C "$WORK/rootfs" -c . | "$ENGINE" import --change 'CMD ["/bin/bash"]' - "$BASE" >/dev/null
fi

# Where the default runtime fails: a sandbox without CAP_SYS_RESOURCE cannot raise the rlimits podman
# asks for, and crun refuses a hybrid cgroup v1/v2 layout. Then run containers with runc and limits
# no higher than this shell's, and build with chroot isolation (RUN steps need no OCI runtime).
if ! probe=$("$ENGINE" run --rm "$BASE" true 2>&1); then
  log "the default runtime cannot start a container here: $probe"
  command -v runc >/dev/null || { echo "install runc (apt-get install runc) for the fallback" >&2; exit 1; }
  run_opts=(--runtime runc --ulimit "nofile=$(ulimit -Sn):$(ulimit -Hn)" --ulimit nproc=4096:4096)
  build_opts=(--isolation chroot)
  "$ENGINE" run --rm "${run_opts[@]}" "$BASE" true
  log "fallback works: runc with the shell's limits, chroot isolation for builds"
fi

# 2. The Python stage (pip fetches ONNX Runtime's wheel) and the Rust builder (cargo fetches crates).
# Both trust this machine's locally added CA certificates too (a TLS-intercepting proxy's, say).
stage_context() { # a build context holding the local CA certificates under ca/
  rm -rf "$1" && mkdir -p "$1/ca"
  cp /usr/local/share/ca-certificates/*.crt "$1/ca/" 2>/dev/null || true
}
trust_local_cas='COPY ca/ /usr/local/share/ca-certificates/
RUN update-ca-certificates'
if ! have_image "$PYTHON_BASE"; then
  log "build $PYTHON_BASE"
  ctx="$WORK/python"
  stage_context "$ctx"
  cat >"$ctx/Containerfile" <<EOF
FROM $BASE
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-pip ca-certificates && rm -rf /var/lib/apt/lists/*
$trust_local_cas
EOF
  "$ENGINE" build "${build_opts[@]}" --network host -t "$PYTHON_BASE" -f "$ctx/Containerfile" "$ctx" >"$WORK/python-build.log"
  rm -rf "$ctx"
fi
if ! have_image "$BUILDER"; then
  log "build $BUILDER with the toolchain in $TOOLCHAIN"
  ctx="$WORK/builder"
  stage_context "$ctx"
  tar -C "$TOOLCHAIN" --exclude=./share/doc -c . | tar -C "$ctx" --one-top-level=rust -x
  cat >"$ctx/Containerfile" <<EOF
FROM $BASE
RUN apt-get update && apt-get install -y --no-install-recommends gcc g++ libc6-dev cmake nasm make ca-certificates && rm -rf /var/lib/apt/lists/*
$trust_local_cas
COPY rust /usr/local/rust
ENV CARGO_HOME=/usr/local/cargo PATH=/usr/local/rust/bin:/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
EOF
  "$ENGINE" build "${build_opts[@]}" --network host -t "$BUILDER" -f "$ctx/Containerfile" "$ctx" >"$WORK/builder-build.log"
  rm -rf "$ctx"
fi

# 3. The CPU image, from the production Dockerfile.
log "build $TAG from deploy/Dockerfile (log: $WORK/image-build.log)"
start=$(date +%s)
cache=()
# Reuse this machine's crate downloads when there are some.
[ -d "$HOME/.cargo/registry" ] && cache=(--volume "$HOME/.cargo/registry:/usr/local/cargo/registry")
# Docker image format: OCI images would drop SHELL and HEALTHCHECK.
"$ENGINE" build "${build_opts[@]}" --format docker --network host "${cache[@]}" \
  --build-arg RUST_IMAGE="$BUILDER" --build-arg PYTHON_IMAGE="$PYTHON_BASE" --build-arg RUNTIME_IMAGE="$BASE" \
  --build-arg REVISION="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
  --build-arg CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
  -f deploy/Dockerfile -t "$TAG" . >"$WORK/image-build.log" 2>&1 || { tail -n 40 "$WORK/image-build.log"; exit 1; }
log "built in $(($(date +%s) - start)) s"

# 4. Run it against nats-server on loopback (host network) and encode through NATS.
scripts/bootstrap.sh >/dev/null
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
nats_port=$(free_port)
metrics_port=$(free_port)
url="nats://127.0.0.1:$nats_port"
run=$(mktemp -d)
container=clip-worker-test-$$
cleanup() {
  "$ENGINE" rm -f "$container" >/dev/null 2>&1 || true
  [ -n "${nats_pid:-}" ] && kill "$nats_pid" 2>/dev/null || true
  rm -rf "$run"
}
trap cleanup EXIT
.venv/bin/nats-server -a 127.0.0.1 -p "$nats_port" -js -sd "$run/js" >"$run/nats.log" 2>&1 &
nats_pid=$!

log "run $TAG: serve (read-only root, non-root user, fixture model mounted)"
"$ENGINE" run "${run_opts[@]}" -d --name "$container" --network host --read-only --tmpfs /tmp \
  -v "$PWD/tests/fixtures/model:/models/fixture:ro" \
  -e CLIP_WORKER_METRICS_ADDR="127.0.0.1:$metrics_port" \
  "$TAG" serve --nats-url "$url" --model-dir /models/fixture >/dev/null
for _ in $(seq 1 300); do
  "$ENGINE" logs "$container" 2>&1 | grep -q "clip-worker ready" && break
  [ "$("$ENGINE" inspect -f '{{.State.Running}}' "$container")" = true ] || break
  sleep 0.2
done
"$ENGINE" logs "$container" 2>&1 | grep -q "clip-worker ready" || { "$ENGINE" logs "$container"; exit 1; }
user=$("$ENGINE" exec "$container" id -u)
[ "$user" = 10001 ] || { echo "runs as uid $user, not 10001" >&2; exit 1; }

log "submit encode through NATS (request/reply and a durable job), from the image itself"
img=tests/fixtures/images/png_rgb.png
"$ENGINE" run "${run_opts[@]}" --rm --network host --read-only -v "$PWD/$img:/data/cat.png:ro" "$TAG" \
  submit encode --nats-url "$url" "a photo of a cat" /data/cat.png >"$run/encode.jsonl"
"$ENGINE" run "${run_opts[@]}" --rm --network host --read-only "$TAG" \
  submit encode --durable --nats-url "$url" "a diagram of a neural network" >"$run/job.jsonl"
python3 - "$run/encode.jsonl" "$run/job.jsonl" <<'PY'
import json, sys
lines = [json.loads(l) for path in sys.argv[1:] for l in open(path)]
assert len(lines) == 3, lines
dims = {len(d["embedding"]) for d in lines}
assert len(dims) == 1 and dims.pop() > 0, "missing or uneven embeddings"
print("encoded:", ", ".join(f'{d["id"]} {d["modality"]} dim={len(d["embedding"])}' for d in lines))
PY

if "$ENGINE" run "${run_opts[@]}" --rm "$TAG" serve --help | grep -q -- --metrics-addr; then
  log "HEALTHCHECK"
  "$ENGINE" healthcheck run "$container" && echo "healthcheck: healthy"
fi

log "SIGTERM: the worker drains and exits 0"
"$ENGINE" stop -t 40 "$container" >/dev/null
code=$("$ENGINE" inspect -f '{{.State.ExitCode}}' "$container")
[ "$code" = 0 ] || { echo "exit code $code after SIGTERM" >&2; "$ENGINE" logs "$container" | tail -n 20; exit 1; }

size=$("$ENGINE" image inspect -f '{{.Size}}' "$TAG")
echo "image $TAG: $size bytes ($((size / 1024 / 1024)) MiB); ok"
