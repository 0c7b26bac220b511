#!/usr/bin/env bash
# ringecho against the servers a user would otherwise pick, side by side in
# one run: the three ringecho backends (io-uring, tokio-uring, epoll), Node.js
# with ws, Bun's built-in server, Python websockets, tokio-tungstenite and
# fastwebsockets (the last two as workspace examples, examples/peer_*.rs), and
# fastwebsockets on monoio, a thread-per-core io_uring runtime (peers/monoio,
# a crate of its own so that the test command never builds monoio).
#
# Every server runs pinned to core 0 and loadgen to core 1. Per server and
# round: the closed-loop standard cases (small 100 × 20 B, medium 10 × 1 KiB,
# large 10 × 16 KiB, fanin 500 × 16 KiB), servers interleaved round by round;
# then, once, a constant-rate run per case at half that server's closed-loop
# maximum (the median of its rounds), and 10 000 idle connections for resident memory. loadgen reads each
# server's CPU time from /proc (--server-pid).
#
# Writes results/peers/*.json (every run, with its configuration),
# results/peers.md (tables, ratios against io-uring) and results/peers*.svg.
# Installs what it needs (npm: ws, bun; pip: websockets) under peers/ and
# target/peers/. Bounded: about 25 minutes with the defaults.
#
# Usage: scripts/peers.sh
#   PEERS_ROUNDS=3  PEERS_DURATION=5  PEERS_RATE_DURATION=10  PEERS_IDLE=10000
#   PEERS_PHASES="closed rate idle" (a subset reruns those phases only; the
#   others' files are kept, and the report is made from everything there)
#   PEERS_SERVERS="io-uring io-uring-64k tokio-uring epoll node-ws bun python-websockets tokio-tungstenite fastwebsockets monoio"
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${PEERS_ROUNDS:-3}
duration=${PEERS_DURATION:-5}
rate_duration=${PEERS_RATE_DURATION:-10}
idle=${PEERS_IDLE:-10000}
phases=${PEERS_PHASES:-closed rate idle}
servers=${PEERS_SERVERS:-io-uring io-uring-64k tokio-uring epoll node-ws bun python-websockets tokio-tungstenite fastwebsockets monoio}
out=results/peers
mkdir -p "$out"
if [ "$phases" = "closed rate idle" ]; then rm -f "$out"/*.json; fi

echo "peers.sh: building ringecho, loadgen and the Rust peers"
cargo build --release --quiet --workspace --bins
cargo build --release --quiet --example peer_tungstenite --example peer_fastwebsockets
. scripts/lib/engines.sh
build_monoio
if [ ! -d peers/node_modules/ws ]; then
  echo "peers.sh: installing ws and bun (npm) into peers/"
  (cd peers && npm install --no-audit --no-fund --silent) || echo "peers.sh: npm install failed; the Node and Bun peers will be skipped"
fi
venv=target/peers/venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import websockets' 2>/dev/null; then
  echo "peers.sh: installing websockets (pip) into $venv"
  python3 -m venv "$venv" && "$venv/bin/pip" install --quiet --disable-pip-version-check -r peers/requirements.txt \
    || echo "peers.sh: pip install failed; the Python peer will be skipped"
fi
bun=peers/node_modules/.bin/bun

# The command that serves WebSockets on $addr for each server.
server_command() {
  case $1 in
    io-uring|tokio-uring|epoll) echo "target/release/ringecho --listen $2 --backend $1 --threads 1" ;;
    # The same io-uring engine with 64 KiB provided buffers: 16 KiB messages
    # arrive whole and are echoed in place; the pool's size does not change.
    io-uring-64k) echo "target/release/ringecho --listen $2 --backend io-uring --threads 1 --receive-buffer-size 65536" ;;
    node-ws) [ -d peers/node_modules/ws ] && echo "node peers/ws-echo.js $2" ;;
    bun) [ -x "$bun" ] && "$bun" --version >/dev/null 2>&1 && echo "$bun peers/bun-echo.js $2" ;;
    python-websockets) [ -x "$venv/bin/python" ] && echo "$venv/bin/python peers/websockets-echo.py $2" ;;
    tokio-tungstenite) echo "target/release/examples/peer_tungstenite $2" ;;
    fastwebsockets) echo "target/release/examples/peer_fastwebsockets $2" ;;
    monoio) [ -x "$monoio_peer" ] && echo "$monoio_peer $2" ;;
  esac
}

port=19100
pid=
start_server() {
  port=$((port + 1))
  addr=127.0.0.1:$port
  local command
  command=$(server_command "$1" "$addr") || return 1
  [ -n "$command" ] || return 1
  # shellcheck disable=SC2086
  taskset -c 0 $command >/dev/null 2>&1 &
  pid=$!
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "peers.sh: $1 did not start"; kill "$pid" 2>/dev/null || true; return 1
}
stop_server() {
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  pid=
}
trap 'stop_server' EXIT

declare -A shape=([small]="100 20" [medium]="10 1024" [large]="10 16384" [fanin]="500 16384")
cases="small medium large fanin"
load() { # server case file [extra loadgen args…]
  local server=$1 case=$2 file=$3; shift 3
  read -r connections size <<<"${shape[$case]}"
  taskset -c 1 target/release/loadgen run --url "ws://$addr/" --connections "$connections" --size "$size" \
    --binary --warmup 1 --threads 1 --cores 1 --server-pid "$pid" --quiet \
    --label "$server · $case" --out "$out/$file.json" "$@" | sed -n 's/^│ *\([0-9]*\) ┆.*/    \1 msgs\/s/p'
}

has() { [[ " $phases " == *" $1 "* ]]; }
has closed || rounds=0
for round in $(seq "$rounds"); do
  for server in $servers; do
    start_server "$server" || continue
    for case in $cases; do
      echo "peers.sh: round $round/$rounds · $server · $case, closed loop, $duration s"
      load "$server" "$case" "$server-$case-round$round" --duration "$duration" || echo "peers.sh: $server $case failed"
    done
    stop_server
  done
done

for server in $servers; do
  has rate || has idle || break
  start_server "$server" || continue
  for case in $cases; do
    has rate || break
    max=$(python3 scripts/lib/half-max.py "$out/$server-$case"-round*.json) || continue
    echo "peers.sh: $server · $case at $max msgs/s (half its closed-loop maximum), $rate_duration s"
    load "$server" "$case" "$server-$case-rate" --rate "$max" --duration "$rate_duration" || echo "peers.sh: $server $case rate failed"
  done
  has idle || { stop_server; continue; }
  echo "peers.sh: $server · $idle idle connections"
  taskset -c 1 target/release/loadgen soak --url "ws://$addr/" --connections "$idle" --hold 10 --churn 0 \
    --source-addr 127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5 --server-pid "$pid" \
    --out "$out/$server-idle.json" >/dev/null 2>&1 || echo "peers.sh: $server idle run failed"
  stop_server
done

python3 scripts/peers-report.py "$out" results/peers.md
for case in $cases; do
  files=$(for s in $servers; do f="$out/$s-$case-rate.json"; [ -f "$f" ] && echo "$f"; done)
  # shellcheck disable=SC2086
  [ -n "$files" ] && target/release/loadgen plot -o "results/peers-$case.svg" $files >/dev/null
done
echo "peers.sh: wrote results/peers.md and results/peers-*.svg"
