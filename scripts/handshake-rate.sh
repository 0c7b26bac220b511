#!/usr/bin/env bash
# Server CPU per connection at a constant connection rate: each connection is
# opened, upgraded to a WebSocket and closed with the closing handshake
# (loadgen soak's churn). The io-uring backend against the epoll backend (and,
# when OLD_ENGINE names a ringecho binary built from an earlier commit,
# against that build's io-uring backend), interleaved round by round.
#
# At a constant rate the server is not saturated, so the figure is its CPU per
# connection; 1 000 000 / (µs per connection) is how many connections per
# second one core could take. Each engine runs with --threads 1 (pinned to
# core 0); loadgen runs on core 1 and reads the engine's CPU from /proc over
# the churn window.
#
# Writes results/handshake-rate/*.json and results/handshake-rate.md.
# Usage: scripts/handshake-rate.sh   (ROUNDS=3 RATE=3000 SECONDS_EACH=5 OLD_ENGINE=path)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${ROUNDS:-3}
rate=${RATE:-3000}
seconds=${SECONDS_EACH:-5}
out=results/handshake-rate
mkdir -p "$out"
rm -f "$out"/*.json
cargo build --release --quiet --workspace --bins
engines="io-uring epoll"
if [ -n "${OLD_ENGINE:-}" ]; then engines="io-uring-before $engines"; fi

for round in $(seq 1 "$rounds"); do
  for engine in $engines; do
    binary=target/release/ringecho backend=$engine
    if [ "$engine" = io-uring-before ]; then binary=$OLD_ENGINE backend=io-uring; fi
    log=$(mktemp)
    "$binary" --listen 127.0.0.1:0 --backend "$backend" --threads 1 >"$log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do grep -q "listening on" "$log" && break; sleep 0.05; done
    addr=$(sed -n 's/.*listening on \([^ ]*\) .*/\1/p' "$log" | head -n 1)
    echo "handshake-rate.sh: round $round, $engine ($addr)"
    taskset -c 1 target/release/loadgen soak --url "ws://$addr/ws" --connections 200 \
      --hold 1 --churn "$seconds" --churn-rate "$rate" \
      --source-addr 127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5 \
      --server-pid "$pid" --out "$out/$engine-round$round.json" 2>/dev/null >/dev/null
    kill "$pid"; wait "$pid" 2>/dev/null || true
    rm -f "$log"
  done
done
python3 scripts/handshake-rate-report.py "$out" "$rate" > results/handshake-rate.md
cat results/handshake-rate.md
