#!/usr/bin/env python3
"""Reads results/handshake-rate/*.json (scripts/handshake-rate.sh) and prints
each engine's server CPU per connection (open, upgrade, close) at a constant
connection rate, and its ratio to the epoll backend per round, as median
(min-max)."""
import os
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from compare import in_order, runs_by_engine_and_round, span  # noqa: E402

out, rate = sys.argv[1], int(sys.argv[2])
runs = runs_by_engine_and_round(out)
engines = in_order({k[0] for k in runs})
rounds = sorted({k[1] for k in runs})



print("# Server CPU per connection at a constant connection rate\n")
print("Produced by `scripts/handshake-rate.sh`. Each engine ran with `--threads 1` pinned to core 0;")
print(f"`loadgen soak` on core 1 held 200 connections and churned them at {rate} per second: each")
print("churned connection is closed with the closing handshake and a new one opened and upgraded.")
print("The engine's CPU time was read from /proc over the churn window. Rounds interleave the")
print(f"engines; {len(rounds)} rounds, median (min-max), ratios taken within a round.\n")
print("One core's connection rate at saturation would be about 1 000 000 / (µs per connection).")
if "io-uring-before" in engines:
    print("\nio-uring-before: the io-uring backend before the completion-driven loop (hyper and")
    print("tokio on the ring's eventfd, a task per connection).")
if "monoio" in engines:
    print("\nmonoio: fastwebsockets on monoio (peers/monoio), one thread on its own io_uring.")
print()
print("| engine | server CPU µs per connection | connections/s achieved | failures | vs epoll | one core's rate at that cost |")
print("|---|---:|---:|---:|---:|---:|")
for engine in engines:
    rows = [runs[(engine, r)] for r in rounds if (engine, r) in runs]
    cpu = [r["server_cpu_us_per_churned"] for r in rows]
    achieved = [r["churn_rate_achieved"] for r in rows]
    fails = sum(r["connect_failures"] + r["errors"] for r in rows)
    ratios = [runs[(engine, r)]["server_cpu_us_per_churned"] / runs[("epoll", r)]["server_cpu_us_per_churned"]
              for r in rounds if (engine, r) in runs and ("epoll", r) in runs]
    per_core = 1e6 / statistics.median(cpu)
    print(f"| {engine} | {span(cpu, '{:.1f}')} | {span(achieved, '{:.0f}')} | {fails} | {span(ratios, '{:.2f}')}x | {per_core:,.0f}/s |")
