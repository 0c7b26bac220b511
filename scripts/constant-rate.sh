#!/usr/bin/env bash
# Server CPU per message at a constant rate: the io-uring backend against the
# epoll backend and fastwebsockets on monoio (and, when OLD_ENGINE names a
# ringecho binary built from an earlier commit, that build's io-uring backend
# too), side by side, interleaved round by round. At a constant rate nothing batches, so every
# wake-up's cost shows; this is the efficiency figure (throughput at
# saturation is a different question).
#
# Each engine runs with --threads 1 (pinned to core 0), loadgen on core 1 with
# --server-pid, which reads the engine's CPU time from /proc over the measured
# window. Cases: 100 x 20 B at 40 000 msgs/s, 500 x 16 KiB at 15 000 msgs/s.
#
# Writes results/constant-rate/*.json and results/constant-rate.md.
# Usage: scripts/constant-rate.sh
#   ROUNDS=3 DURATION=5 OLD_ENGINE=path ENGINES="io-uring epoll monoio"
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/engines.sh
rounds=${ROUNDS:-3}
duration=${DURATION:-5}
out=results/constant-rate
prepare_run "$out"
engines=$(engines_or io-uring epoll monoio)

for round in $(seq 1 "$rounds"); do
  for case in small fanin; do
    case $case in
      small) shape="--connections 100 --size 20 --rate 40000" ;;
      fanin) shape="--connections 500 --size 16384 --rate 15000" ;;
    esac
    for engine in $engines; do
      start_engine "$engine" || continue
      echo "constant-rate.sh: round $round, $case, $engine ($addr)"
      taskset -c 1 target/release/loadgen run --url "ws://$addr/ws" $shape --duration "$duration" \
        --cores 1 --server-pid "$pid" --quiet --label "$engine" \
        --out "$out/$engine-$case-round$round.json" >/dev/null
      stop_engine
    done
  done
done
python3 scripts/constant-rate-report.py "$out" > results/constant-rate.md
cat results/constant-rate.md
