#!/usr/bin/env bash
# Resident memory per idle WebSocket connection: 10 000 connections opened
# and held (a tenth echoing a 20-byte message a second, keep-alive pings
# answered) on one core. The io-uring backend against the epoll backend and
# fastwebsockets on monoio (and, when OLD_ENGINE names a ringecho binary built
# from an earlier commit, that build's io-uring backend), interleaved round
# by round. The figure is (RSS with every connection open - RSS before) /
# connections, read from /proc by loadgen soak.
#
# Writes results/idle-memory/*.json and results/idle-memory.md.
# Usage: scripts/idle-memory.sh
#   ROUNDS=3 CONNECTIONS=10000 OLD_ENGINE=path ENGINES="io-uring epoll monoio"
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/engines.sh
rounds=${ROUNDS:-3}
connections=${CONNECTIONS:-10000}
out=results/idle-memory
prepare_run "$out"
engines=$(engines_or io-uring epoll monoio)

for round in $(seq 1 "$rounds"); do
  for engine in $engines; do
    start_engine "$engine" || continue
    echo "idle-memory.sh: round $round, $engine ($addr)"
    taskset -c 1 target/release/loadgen soak --url "ws://$addr/ws" --connections "$connections" \
      --hold 2 --churn 0 --source-addr 127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5 \
      --server-pid "$pid" --out "$out/$engine-round$round.json" >/dev/null 2>&1
    stop_engine
  done
done
python3 scripts/idle-memory-report.py "$out" > results/idle-memory.md
cat results/idle-memory.md
