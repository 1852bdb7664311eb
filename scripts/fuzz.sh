#!/usr/bin/env bash
# A fuzz campaign on one target of fuzz/ (cargo fuzz, libFuzzer, nightly toolchain).
#
#   scripts/fuzz.sh TARGET [SECONDS] [-- LIBFUZZER_ARGS...]
#
# TARGET is one of: request, jpeg, avif, image_pipeline (`cargo +nightly fuzz list`). SECONDS
# defaults to 600. New inputs go to fuzz/corpus/TARGET (kept between runs, not committed), the
# committed seeds in fuzz/seeds/TARGET are read too, and a crashing input is written to
# fuzz/artifacts/TARGET/. Environment: FUZZ_SANITIZER (none|address, default none),
# FUZZ_RSS_LIMIT_MB (default 2048), FUZZ_MAX_LEN (default 16384 bytes), FUZZ_JOBS (parallel
# fuzzing processes, default 1).
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}
[[ $# -ge 1 ]] || usage
target=$1
shift
seconds=600
if [[ $# -ge 1 && $1 != -- ]]; then
  seconds=$1
  shift
fi
[[ ${1:-} == -- ]] && shift
[[ -d fuzz/seeds/$target ]] || { echo "fuzz: no target '$target' (no fuzz/seeds/$target)" >&2; usage; }

if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz: needs the nightly toolchain (rustup toolchain install nightly)" >&2
  exit 1
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked
fi

mkdir -p "fuzz/corpus/$target"
exec cargo +nightly fuzz run --release --sanitizer "${FUZZ_SANITIZER:-none}" --jobs "${FUZZ_JOBS:-1}" \
  "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
  -max_total_time="$seconds" -rss_limit_mb="${FUZZ_RSS_LIMIT_MB:-2048}" \
  -max_len="${FUZZ_MAX_LEN:-16384}" -timeout=10 -print_final_stats=1 "$@"
