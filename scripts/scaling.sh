#!/usr/bin/env bash
# How the engine scales with its thread count: the small (100 × 20 B) and
# fanin (500 × 16 KiB) cases, closed loop, with 1, 2, 4 and 8 engine threads.
# The engine takes the first cores and loadgen every other core (`ringecho
# bench` places them so), so run it on a machine with at least 9 cores; thread
# counts that leave loadgen no core of its own are skipped.
#
# Writes results/scaling/*.json (every run with its configuration) and
# results/scaling.md (msgs/s and CPU per message by thread count, speed-up
# against one thread). A backend that cannot start here (io_uring blocked) is
# skipped with a line saying so. Bounded: about 5 minutes with the defaults.
#
# Usage: scripts/scaling.sh
#   SCALING_THREADS="1 2 4 8"  SCALING_BACKENDS="io-uring tokio-uring epoll"
#   SCALING_CASES=small,fanin  SCALING_REPEAT=2  SCALING_DURATION=4
#   SCALING_OUT=results/scaling
#   RINGECHO=path/to/ringecho: use that build as it is instead of building one
#   (for a machine that only runs the binaries)
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${SCALING_THREADS:-1 2 4 8}
backends=${SCALING_BACKENDS:-io-uring tokio-uring epoll}
cases=${SCALING_CASES:-small,fanin}
repeat=${SCALING_REPEAT:-2}
duration=${SCALING_DURATION:-4}
out=${SCALING_OUT:-results/scaling}
ringecho=${RINGECHO:-}
if [ -z "$ringecho" ]; then
  echo "scaling.sh: building ringecho"
  cargo build --release --quiet --bin ringecho
  ringecho=target/release/ringecho
fi
cores=$(nproc)
usable=""
for n in $threads; do
  if [ "$n" -lt "$cores" ]; then usable="$usable,$n"; else echo "scaling.sh: skipping $n threads: $cores cores leave loadgen none"; fi
done
usable=${usable#,}
[ -n "$usable" ] || { echo "scaling.sh: no thread count fits on $cores cores" >&2; exit 2; }

mkdir -p "$out"
rm -f "$out"/*.json "$out"/*.hgrm
for backend in $backends; do
  echo "scaling.sh: $backend with $usable engine threads on $cores cores"
  "$ringecho" bench --backend "$backend" --threads "$usable" --cases "$cases" --protocol raw \
    --repeat "$repeat" --duration "$duration" --rate-duration 0 --quiet --out "$out" \
    || echo "scaling.sh: $backend did not run here (see above); skipped"
done
rm -f "$out"/*.hgrm "$out"/*.svg "$out"/summary.md
python3 scripts/scaling-report.py "$out" results/scaling.md "$backends"
echo "scaling.sh: wrote results/scaling.md"
