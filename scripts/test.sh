#!/usr/bin/env bash
# The test command: installs the test prerequisites into the project (idempotent), then runs
# formatting, lint and the whole test suite (unit, fidelity and NATS integration tests).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --locked -- --test-threads 2
