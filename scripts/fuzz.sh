#!/usr/bin/env bash
# Runs each fuzz target (cargo-fuzz, libFuzzer) for a bounded time, starting
# from the committed seeds in fuzz/corpus/TARGET and growing a working corpus
# under target/fuzz-corpus/. Usage: scripts/fuzz.sh [SECONDS per target] (default 20)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-20}
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "fuzz.sh: installing cargo-fuzz"
  cargo install cargo-fuzz --locked --quiet
fi
# cargo-fuzz needs nightly-only flags; the stable toolchain accepts them so.
export RUSTC_BOOTSTRAP=1
cd fuzz
for target in frames hub upgrade; do
  mkdir -p "../target/fuzz-corpus/$target"
  cargo fuzz run -O "$target" "../target/fuzz-corpus/$target" "corpus/$target" \
    -- -max_total_time="$seconds" -print_final_stats=1 2>&1 \
    | grep -E "stat::number_of_executed_units|ERROR|panicked|SUMMARY" \
    | sed "s/^/fuzz.sh: $target: /"
done
