#!/usr/bin/env bash
# What permessage-deflate costs the engine per message: the io-uring backend
# with --deflate off, dedicated and shared, side by side, interleaved round
# by round, at 20 B, 1 KiB and 16 KiB, for payloads DEFLATE shrinks (words)
# and payloads it cannot (random). loadgen offers deflate (--deflate) to the
# engines that have it on, and compresses and inflates every message itself.
#
# First a closed-loop run of each variant finds its maximum; every variant
# of a case and payload then runs at half the smallest of those maxima (one
# constant rate for all, so CPU per message compares like with like).
# Engine on core 0 (--threads 1), loadgen on core 1 with --server-pid.
#
# Writes results/deflate-cost/*.json and results/deflate-cost.md.
# Usage: scripts/deflate-cost.sh     ROUNDS=3 DURATION=4 (about 10 minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/engines.sh
rounds=${ROUNDS:-3}
duration=${DURATION:-4}
out=results/deflate-cost
prepare_run "$out"
variants="off dedicated shared"

# run VARIANT CASE PAYLOAD FILE [--rate R]
run() {
  local variant=$1 case=$2 payload=$3 file=$4
  shift 4
  local shape deflate=""
  case $case in
    small) shape="--connections 100 --size 20" ;;
    medium) shape="--connections 10 --size 1024" ;;
    large) shape="--connections 10 --size 16384" ;;
  esac
  [ "$variant" = off ] || deflate=--deflate
  ENGINE_ARGS="--deflate $variant" start_engine io-uring
  # shellcheck disable=SC2086
  taskset -c 1 target/release/loadgen run --url "ws://$addr/ws" $shape $deflate \
    --payload "$payload" --duration "$duration" --cores 1 --server-pid "$pid" \
    --quiet --label "$variant" --out "$file" "$@" >/dev/null
  stop_engine
}

declare -A rate
for case in small medium large; do
  for payload in words random; do
    for variant in $variants; do
      echo "deflate-cost.sh: maximum, $case, $payload, deflate $variant"
      run "$variant" "$case" "$payload" "$out/max-$variant-$case-$payload.json"
    done
    # Half the smallest maximum of the three.
    rate[$case-$payload]=$(for variant in $variants; do
      python3 scripts/lib/half-max.py "$out/max-$variant-$case-$payload.json"
    done | sort -n | head -n 1)
  done
done

for round in $(seq 1 "$rounds"); do
  for case in small medium large; do
    for payload in words random; do
      for variant in $variants; do
        r=${rate[$case-$payload]}
        echo "deflate-cost.sh: round $round, $case, $payload, deflate $variant, $r msgs/s"
        run "$variant" "$case" "$payload" "$out/$variant-$case-$payload-round$round.json" --rate "$r"
      done
    done
  done
done
python3 scripts/deflate-cost-report.py "$out" > results/deflate-cost.md
cat results/deflate-cost.md
