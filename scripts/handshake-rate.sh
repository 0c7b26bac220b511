#!/usr/bin/env bash
# Server CPU per connection at a constant connection rate: each connection is
# opened, upgraded to a WebSocket and closed with the closing handshake
# (loadgen soak's churn). The io-uring backend against the epoll backend and
# fastwebsockets on monoio (and, when OLD_ENGINE names a ringecho binary built
# from an earlier commit, that build's io-uring backend), interleaved round by
# round.
#
# At a constant rate the server is not saturated, so the figure is its CPU per
# connection; 1 000 000 / (µs per connection) is how many connections per
# second one core could take. Each engine runs with --threads 1 (pinned to
# core 0); loadgen runs on core 1 and reads the engine's CPU from /proc over
# the churn window.
#
# Writes results/handshake-rate/*.json and results/handshake-rate.md.
# Usage: scripts/handshake-rate.sh
#   ROUNDS=3 RATE=3000 SECONDS_EACH=5 OLD_ENGINE=path ENGINES="io-uring epoll monoio"
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/engines.sh
rounds=${ROUNDS:-3}
rate=${RATE:-3000}
seconds=${SECONDS_EACH:-5}
out=results/handshake-rate
prepare_run "$out"
engines=$(engines_or io-uring epoll monoio)

for round in $(seq 1 "$rounds"); do
  for engine in $engines; do
    start_engine "$engine" || continue
    echo "handshake-rate.sh: round $round, $engine ($addr)"
    taskset -c 1 target/release/loadgen soak --url "ws://$addr/ws" --connections 200 \
      --hold 1 --churn "$seconds" --churn-rate "$rate" \
      --source-addr 127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5 \
      --server-pid "$pid" --out "$out/$engine-round$round.json" >/dev/null 2>&1
    stop_engine
  done
done
python3 scripts/handshake-rate-report.py "$out" "$rate" > results/handshake-rate.md
cat results/handshake-rate.md
