#!/usr/bin/env python3
"""Reads results/loadgen-saturation/*.json (scripts/loadgen-saturation.sh)
and prints, per case and server: msgs/s, how busy the server's core and
loadgen's were, and each one's CPU per message, for loadgen's io_uring client
and its tokio client; then the constant-rate runs at half of each server's
maximum."""
import glob
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from compare import span  # noqa: E402

out = sys.argv[1]
ORDER = ["io-uring", "epoll", "monoio", "fastwebsockets", "tokio-tungstenite", "bun", "node-ws"]
CASES = {"small": "100 x 20 B", "fanin": "500 x 16 KiB"}
closed, rate = {}, {}
machine = None
for path in sorted(glob.glob(os.path.join(out, "*.json"))):
    name = os.path.basename(path)[:-5]
    doc = json.load(open(path))
    machine = doc.get("machine", machine)
    s = doc["summary"]
    d = s["duration_secs"]
    srv, own = s.get("server_process"), s.get("loadgen_process")
    cpu = lambda p: p["user_secs"] + p["system_secs"]
    row = {
        "rate": s["msgs_per_sec"],
        "server_busy": cpu(srv) / d * 100 if srv else float("nan"),
        "loadgen_busy": cpu(own) / d * 100 if own else float("nan"),
        "server_us": cpu(srv) / s["messages"] * 1e6 if srv and s["messages"] else float("nan"),
        "loadgen_us": cpu(own) / s["messages"] * 1e6 if own and s["messages"] else float("nan"),
        "lag_p99": (s.get("send_lag_us") or {}).get("p99"),
        "p99": s["latency_us"]["p99"],
        "errors": sum(s["errors"].values()),
        "warning": s.get("bottleneck"),
        "asked": doc["load"].get("rate"),
    }
    if name.endswith("-rate"):
        engine, case = name[: -len("-io-uring-rate")].rsplit("-", 1)
        rate[(engine, case)] = row
    else:
        stem, round_ = name.rsplit("-", 1)
        for client in ("io-uring", "epoll"):
            if stem.endswith("-" + client):
                engine, case = stem[: -len(client) - 1].rsplit("-", 1)
                closed.setdefault((engine, case, client), []).append(row)
engines = sorted({k[0] for k in closed}, key=lambda e: ORDER.index(e) if e in ORDER else 99)
rounds = max((len(v) for v in closed.values()), default=0)

print("# Does loadgen out-run the servers it measures?\n")
print("Produced by `scripts/loadgen-saturation.sh`. Each server on core 0; loadgen, one thread on")
print("core 1, closed loop, one message in flight per connection, with each of its two clients:")
print("`--io io-uring` (its connections on the completion-driven io_uring loop) and `--io epoll`")
print(f"(tokio, the client before). {rounds} rounds, clients interleaved within each server and round;")
print("median (min-max). Busy: CPU seconds over the window per second, of one core (from /proc).")
print("A server's maximum counts only where it was at 95 % of its core or more.")
if machine:
    print(f"\nMachine: {machine.get('cpu_model')}, {machine.get('cores')} cores, kernel {machine.get('kernel')}.")
for case, shape in CASES.items():
    print(f"\n## {case}: {shape}, closed loop\n")
    print("| server | loadgen client | msgs/s | server busy | loadgen busy | server CPU µs/msg | loadgen CPU µs/msg | errors | flagged |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for engine in engines:
        for client in ("io-uring", "epoll"):
            rows = closed.get((engine, case, client))
            if not rows:
                continue
            flagged = sum(1 for r in rows if r["warning"])
            print(f"| {engine} | {client} | {span([r['rate'] for r in rows], '{:.0f}')} | "
                  f"{span([r['server_busy'] for r in rows], '{:.0f}')} % | {span([r['loadgen_busy'] for r in rows], '{:.0f}')} % | "
                  f"{span([r['server_us'] for r in rows])} | {span([r['loadgen_us'] for r in rows])} | "
                  f"{sum(r['errors'] for r in rows)} | {flagged} of {len(rows)} |")
    print()
    for engine in engines:
        a, b = closed.get((engine, case, "io-uring")), closed.get((engine, case, "epoll"))
        if a and b:
            ratios = [x["rate"] / y["rate"] for x, y in zip(a, b)]
            print(f"- {engine}: the io_uring client drives it at {span(ratios)}x the tokio client's msgs/s")
if rate:
    print("\n## Constant rate at half of each server's closed-loop maximum (io_uring client)\n")
    print("| case | server | rate asked | msgs/s | loadgen busy | send lag p99 µs | echo p99 µs | errors |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for case in CASES:
        for engine in engines:
            r = rate.get((engine, case))
            if not r:
                continue
            asked = r["asked"] or float("nan")
            print(f"| {case} | {engine} | {asked:.0f} | {r['rate']:.0f} | {r['loadgen_busy']:.0f} % | {r['lag_p99']} | {r['p99']} | {r['errors']} |")
