#!/usr/bin/env python3
"""Reads results/deflate-cost/*.json (scripts/deflate-cost.sh) and prints the
engine's CPU per message with permessage-deflate off, dedicated and shared,
at one constant rate per case and payload, with each mode's ratio to off per
round as median (min-max), and both processes' utilisation."""
import glob
import json
import os
import platform
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from compare import span  # noqa: E402

out = sys.argv[1]
runs = {}
maxima = {}
machine = None
for path in sorted(glob.glob(os.path.join(out, "*.json"))):
    name = os.path.basename(path)[:-5]
    doc = json.load(open(path))
    s = doc["summary"]
    machine = doc.get("machine")
    if name.startswith("max-"):
        _, variant, case, payload = name.split("-")
        maxima[(variant, case, payload)] = s
        continue
    variant, case, payload, round_ = name.split("-")
    proc, own = s["server_process"], s.get("loadgen_process")
    secs = s["duration_secs"]
    runs[(variant, case, payload, round_)] = {
        "us": (proc["user_secs"] + proc["system_secs"]) / s["messages"] * 1e6,
        "busy": (proc["user_secs"] + proc["system_secs"]) / secs * 100,
        "loadgen": (own["user_secs"] + own["system_secs"]) / secs * 100 if own else None,
        "rate": s["msgs_per_sec"],
        "p99": s["latency_us"]["p99"],
        "errors": sum(s["errors"].values()) + s["unanswered"],
    }

variants = ["off", "dedicated", "shared"]
cases = [("small", "100 × 20 B"), ("medium", "10 × 1 KiB"), ("large", "10 × 16 KiB")]
payloads = ["words", "random"]
rounds = sorted({k[3] for k in runs})

print("# What permessage-deflate costs the engine per message\n")
if machine:
    print(f"Machine: {machine['cpu_model']} ({machine['cores']} cores), kernel {machine['kernel']}; "
          f"python {platform.python_version()} for this report.\n")
print("Made by `scripts/deflate-cost.sh`: the io-uring backend (`--threads 1`, core 0) with "
      "`--deflate off`, `dedicated` and `shared`, loadgen on core 1 (offering deflate to the "
      "engines that have it on, compressing and inflating every message itself). Each case and "
      "payload runs every mode at one constant rate: half the smallest closed-loop maximum of "
      f"the three. {len(rounds)} rounds, interleaved; figures are medians (min-max) over rounds. "
      "`words` is English-like text that DEFLATE (level 1) shrinks to under half; `random` cannot be "
      "shrunk. CPU is the engine process's (user + system) per echoed message.\n")
print("| case | payload | rate | mode | closed-loop max | engine µs/msg | ×off | engine busy | loadgen busy | p99 µs | errors |")
print("|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|")
for case, shape in cases:
    for payload in payloads:
        for variant in variants:
            mine = [runs[(variant, case, payload, r)] for r in rounds if (variant, case, payload, r) in runs]
            if not mine:
                continue
            ratios = [runs[(variant, case, payload, r)]["us"] / runs[("off", case, payload, r)]["us"]
                      for r in rounds
                      if (variant, case, payload, r) in runs and ("off", case, payload, r) in runs]
            top = maxima.get((variant, case, payload))
            loadgen = [m["loadgen"] for m in mine if m["loadgen"] is not None]
            print(f"| {shape} | {payload} | {statistics.median(m['rate'] for m in mine):.0f} | {variant} "
                  f"| {top['msgs_per_sec']:.0f} | {span([m['us'] for m in mine])} "
                  f"| {span(ratios) if ratios else '-'} "
                  f"| {span([m['busy'] for m in mine], '{:.0f}')} % "
                  f"| {span(loadgen, '{:.0f}') + ' %' if loadgen else '-'} "
                  f"| {statistics.median(m['p99'] for m in mine):.0f} "
                  f"| {sum(m['errors'] for m in mine)} |")
