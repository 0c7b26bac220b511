#!/usr/bin/env python3
"""Reads results/idle-memory/*.json (scripts/idle-memory.sh) and prints each
engine's resident memory per idle connection, median (min-max) over rounds."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from compare import in_order, runs_by_engine_and_round, span  # noqa: E402

out = sys.argv[1]
runs = runs_by_engine_and_round(out)
engines = in_order({k[0] for k in runs})
rounds = sorted({k[1] for k in runs})
connections = next(iter(runs.values()))["connections"] if runs else 0



print("# Resident memory per idle connection\n")
print(f"Produced by `scripts/idle-memory.sh`. Each engine served on core 0 (one thread); `loadgen soak`")
print(f"on core 1 opened {connections} connections and held them for 2 s, a tenth echoing a 20-byte")
print("message a second, keep-alive pings answered. Bytes per connection = (engine RSS with every")
print("connection open, 2 s after the last one opened - RSS before) / connections, from /proc.")
print("Rounds interleave the engines;")
print(f"{len(rounds)} rounds, median (min-max).\n")
if "io-uring-before" in engines:
    print("io-uring-before: the io-uring backend before the completion-driven loop.\n")
if "monoio" in engines:
    print("monoio: fastwebsockets on monoio (peers/monoio), one thread on its own io_uring.\n")
print("| engine | bytes per idle connection | RSS before | RSS with all open | failed connections |")
print("|---|---:|---:|---:|---:|")
for engine in engines:
    rows = [runs[(engine, r)] for r in rounds if (engine, r) in runs]
    per = [r["bytes_per_idle_connection"] for r in rows if r["bytes_per_idle_connection"] is not None]
    before = [r["stages"][0]["server_rss_kib"] / 1024 for r in rows]
    opened = [r["stages"][1]["server_rss_kib"] / 1024 for r in rows]
    fails = sum(r["connect_failures"] + r["errors"] for r in rows)
    print(f"| {engine} | {span(per, '{:.0f}')} | {span(before, '{:.1f}')} MiB | {span(opened, '{:.1f}')} MiB | {fails} |")
