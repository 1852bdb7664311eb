#!/usr/bin/env bash
# The test command: installs the test prerequisites into the project (idempotent), then runs
# formatting, lint and the whole test suite (unit, fidelity and NATS integration tests).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
if cargo fmt --version >/dev/null 2>&1; then cargo fmt --all -- --check; else echo "test: rustfmt not installed, format check skipped"; fi
if cargo clippy --version >/dev/null 2>&1; then
  cargo clippy --all-targets --locked -- -D warnings
else
  echo "test: clippy not installed, lint skipped"
fi
cargo test --locked -- --test-threads 2
