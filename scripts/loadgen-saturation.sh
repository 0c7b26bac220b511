#!/usr/bin/env bash
# Does loadgen out-run the servers it measures? Each server runs on core 0;
# loadgen, one thread on core 1, loads it in a closed loop with each of its
# two clients (--io io-uring, the loop; --io epoll, tokio), clients
# interleaved within each server and round. A server's maximum counts only
# where the server was at 95 % of its core or more. Then, once per server and
# case, a constant-rate run at half the server's closed-loop maximum on the
# io_uring client: is loadgen's core at most 60 % busy, and are its sends on
# time (p99 send lag under 50 µs)?
#
# Cases: small 100 x 20 B, fanin 500 x 16 KiB. Servers: this build's io-uring
# and epoll backends and the peers of scripts/peers.sh (monoio,
# fastwebsockets, tokio-tungstenite, Bun, Node ws; Bun and Node need npm).
#
# Writes results/loadgen-saturation/*.json and results/loadgen-saturation.md.
# Usage: scripts/loadgen-saturation.sh
#   ROUNDS=3 DURATION=5 ENGINES="io-uring epoll monoio fastwebsockets tokio-tungstenite bun node-ws"
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/engines.sh
rounds=${ROUNDS:-3}
duration=${DURATION:-5}
out=results/loadgen-saturation
prepare_run "$out"
engines=$(engines_or io-uring epoll monoio fastwebsockets tokio-tungstenite bun node-ws)
declare -A shape=([small]="100 20" [fanin]="500 16384")

load() { # engine case client file [extra…]
  local engine=$1 case=$2 client=$3 file=$4; shift 4
  read -r connections size <<<"${shape[$case]}"
  taskset -c 1 target/release/loadgen run --url "ws://$addr/ws" --connections "$connections" \
    --size "$size" --binary --warmup 1 --threads 1 --cores 1 --io "$client" \
    --server-pid "$pid" --quiet --label "$engine · $case · $client" \
    --out "$out/$file.json" "$@" >/dev/null || echo "loadgen-saturation.sh: $file failed"
}

for round in $(seq 1 "$rounds"); do
  for case in small fanin; do
    for engine in $engines; do
      start_engine "$engine" || continue
      for client in io-uring epoll; do
        echo "loadgen-saturation.sh: round $round, $case, $engine, loadgen --io $client"
        load "$engine" "$case" "$client" "$engine-$case-$client-round$round" --duration "$duration"
      done
      stop_engine
    done
  done
done

for case in small fanin; do
  for engine in $engines; do
    max=$(python3 scripts/lib/half-max.py "$out/$engine-$case-io-uring"-round*.json) || continue
    start_engine "$engine" || continue
    echo "loadgen-saturation.sh: $case, $engine at $max msgs/s (half its maximum), loadgen --io io-uring"
    load "$engine" "$case" io-uring "$engine-$case-io-uring-rate" --rate "$max" --duration "$duration"
    stop_engine
  done
done
python3 scripts/loadgen-saturation-report.py "$out" > results/loadgen-saturation.md
cat results/loadgen-saturation.md
