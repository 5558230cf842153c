#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ (cargo-fuzz, libFuzzer) for SECONDS each (default 20), on
# stable Rust: `-s none` builds with libFuzzer's coverage instrumentation but no sanitizer,
# which needs no nightly flags. Installs cargo-fuzz if it is missing. Each target starts from
# its committed seeds (fuzz/seeds/TARGET) plus what earlier runs found (fuzz/corpus/TARGET,
# not committed). Exits non-zero on the first crash, panic, leak or timeout, leaving the input
# in fuzz/artifacts/TARGET/ and printing the end of the fuzzer's log.
#   scripts/fuzz.sh          # what CI runs: about a minute in all
#   scripts/fuzz.sh 3600     # a long run: an hour per target
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${1:-20}"

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz (cargo install cargo-fuzz)" >&2
  cargo install cargo-fuzz --locked --version 0.13.2
fi

mkdir -p target
for target in $(cargo fuzz list); do
  mkdir -p "corpus/$target"
  log="target/fuzz-$target.log"
  echo "fuzzing $target for ${seconds}s" >&2
  if ! cargo fuzz run -s none "$target" "corpus/$target" "seeds/$target" -- \
      -max_total_time="$seconds" -timeout=10 -print_final_stats=1 >"$log" 2>&1; then
    tail -n 60 "$log" >&2
    echo "fuzz target $target FAILED; the input is in fuzz/artifacts/$target/" >&2
    exit 1
  fi
  grep -E '^Done [0-9]+ runs' "$log" >&2 || true
done
