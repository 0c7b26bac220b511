#!/usr/bin/env python3
"""Reads results/constant-rate/*.json (scripts/constant-rate.sh) and prints
the server CPU per message of each engine, and each engine's ratio to the
epoll backend per round, as median (min-max)."""
import glob
import json
import os
import platform
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from compare import in_order, span  # noqa: E402

out = sys.argv[1]
runs = {}
machine = None
for path in sorted(glob.glob(os.path.join(out, "*.json"))):
    name = os.path.basename(path)[:-5]
    engine, case, round_ = name.rsplit("-", 2)
    doc = json.load(open(path))
    s = doc["summary"]
    proc = s["server_process"]
    cpu = proc["user_secs"] + proc["system_secs"]
    runs[(engine, case, round_)] = {
        "us": cpu / s["messages"] * 1e6,
        "user": proc["user_secs"] / s["messages"] * 1e6,
        "rate": s["msgs_per_sec"],
        "p99": s["latency_us"]["p99"],
        "errors": sum(s["errors"].values()),
        "server": doc.get("server", {}),
    }
    machine = doc.get("machine")

engines = in_order({k[0] for k in runs})
cases = [c for c in ["small", "fanin"] if any(k[1] == c for k in runs)]
rounds = sorted({k[2] for k in runs})



print("# Server CPU per message at a constant rate\n")
print("Produced by `scripts/constant-rate.sh`. Each engine ran with `--threads 1` pinned to core 0;")
print("loadgen (constant rate, one thread) on core 1 read the engine's CPU time from /proc over")
print(f"the measured window. {len(rounds)} rounds, engines interleaved within each round. Figures are")
print("median (min-max) over the rounds; ratios are taken within a round, then summarised.\n")
print("- small: 100 connections x 20 B at 40 000 msgs/s")
print("- fanin: 500 connections x 16 KiB at 15 000 msgs/s")
if "io-uring-before" in engines:
    print("- io-uring-before: the io-uring backend before the completion-driven loop (tokio's")
    print("  reactor polling the ring's eventfd, a task per connection)")
if "monoio" in engines:
    print("- monoio: fastwebsockets on monoio (peers/monoio), one thread on its own io_uring")
if machine:
    print(f"\nMachine: {machine.get('cpu_model')}, {machine.get('cores')} cores, kernel {machine.get('kernel')}.")
print()
print("| case | engine | server CPU us/msg | of which user | msgs/s | p99 us | errors | CPU vs epoll |")
print("|---|---|---:|---:|---:|---:|---:|---:|")
for case in cases:
    for engine in engines:
        rows = [runs[(engine, case, r)] for r in rounds if (engine, case, r) in runs]
        if not rows:
            continue
        ratios = [runs[(engine, case, r)]["us"] / runs[("epoll", case, r)]["us"]
                  for r in rounds if (engine, case, r) in runs and ("epoll", case, r) in runs]
        print(f"| {case} | {engine} | {span([x['us'] for x in rows])} | {span([x['user'] for x in rows])} | "
              f"{span([x['rate'] for x in rows], '{:.0f}')} | {span([x['p99'] for x in rows], '{:.0f}')} | "
              f"{sum(x['errors'] for x in rows)} | {span(ratios)}x |")
