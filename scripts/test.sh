#!/usr/bin/env bash
# The test command: installs the test prerequisites into the project (idempotent), then runs
# formatting, lint and the whole test suite (unit, fidelity and NATS integration tests).
# Formatting and lint are part of the test: without rustfmt or clippy it installs them, and
# fails when it cannot, rather than passing unlinted.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  if command -v rustup >/dev/null 2>&1; then
    echo "test: installing rustfmt and clippy"
    rustup component add rustfmt clippy || echo "test: rustup could not install them" >&2
  fi
  for tool in fmt clippy; do
    if ! cargo "$tool" --version >/dev/null 2>&1; then
      echo "test: cargo $tool is not installed and could not be installed (rustup component add rustfmt clippy)" >&2
      exit 1
    fi
  done
fi
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --locked -- --test-threads 2
