#!/usr/bin/env bash
# What a timer costs on this machine (a sleep, arming a near and a far timer,
# a timer firing), the price a loop pays for each wake-up it schedules. On a
# virtual machine each reprogramming of the timer device exits to the
# hypervisor; results/loadgen-pacing.md shows why that shapes loadgen's pacing.
# Needs a C compiler (cc). Usage: scripts/timer-cost.sh [CORE] (default 1)
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p target
cc -O2 -o target/timer-cost scripts/lib/timer-cost.c
taskset -c "${1:-1}" target/timer-cost
