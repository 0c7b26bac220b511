"""Writes results/peers.md from the result files of scripts/peers.sh.

Per case: each server's closed-loop msgs/s and CPU seconds per million
messages (median over the rounds, with its ratio to the io-uring backend of
the same round: median, min and max), its latency at a constant rate of half
its own maximum, and its resident memory per idle connection.
Usage: python3 scripts/peers-report.py results/peers results/peers.md
"""
import glob
import json
import os
import statistics
import sys

src, dst = sys.argv[1], sys.argv[2]
BASE = "io-uring"
CASES = ["small", "medium", "large", "fanin"]
SHAPES = {"small": "100 × 20 B", "medium": "10 × 1 KiB", "large": "10 × 16 KiB", "fanin": "500 × 16 KiB"}


def load(path):
    with open(path) as f:
        return json.load(f)


runs = {}  # (server, case) -> {round: result}
rates = {}  # (server, case) -> result
idle = {}  # server -> soak report
servers = []
for path in sorted(glob.glob(os.path.join(src, "*.json"))):
    name = os.path.basename(path)[:-5]
    if name.endswith("-idle"):
        idle[name[:-5]] = load(path)
        continue
    for case in CASES:
        if f"-{case}-" in name:
            server, rest = name.split(f"-{case}-", 1)
            break
    else:
        continue
    if server not in servers:
        servers.append(server)
    if rest == "rate":
        rates[(server, case)] = load(path)
    elif rest.startswith("round"):
        runs.setdefault((server, case), {})[int(rest[5:])] = load(path)

order = ["io-uring", "io-uring-64k", "tokio-uring", "epoll", "node-ws", "bun", "python-websockets", "tokio-tungstenite", "fastwebsockets", "monoio"]
servers.sort(key=lambda s: order.index(s) if s in order else len(order))


def cpu(result):
    s = result["summary"]
    p = s.get("server_process")
    if not p or not s["messages"]:
        return None
    per = 1e6 / s["messages"]
    return p["user_secs"] * per, p["system_secs"] * per, (p["user_secs"] + p["system_secs"]) * per


def busy(result, field):
    """Percent of one core that a process used over the measured window."""
    s = result["summary"]
    p = s.get(field)
    if not p or not s["duration_secs"]:
        return None
    return (p["user_secs"] + p["system_secs"]) / s["duration_secs"] * 100


def spread(values):
    if not values:
        return "—"
    return f"{statistics.median(values):.2f}× ({min(values):.2f}–{max(values):.2f})"


any_result = next(iter(next(iter(runs.values())).values()))
machine = any_result["machine"]
engine_commit = next(
    (r["server"]["commit"] for (server, _), rounds_ in runs.items() if server == BASE
     for r in rounds_.values() if r.get("server", {}).get("commit")),
    "?",
)
rounds = max(len(r) for r in runs.values())
lines = [
    "# ringecho against the servers people use",
    "",
    f"- date: {any_result['date']}; ringecho commit {engine_commit}, loadgen commit {any_result['tool']['commit']}",
    f"- machine: {machine['cpu_model']} ({os.cpu_count()} cores), kernel {machine['kernel']}",
    "- every server pinned to core 0 (`taskset -c 0`; ringecho with `--threads 1`), loadgen to core 1; loopback",
    f"- closed loop: {rounds} rounds, servers interleaved round by round; binary messages, one in flight per connection,"
    " every echo checked; 1 s warm-up, then the measured window",
    "- CPU: the server process's user + system seconds (from /proc/PID/stat) over the measured window, per million messages",
    "- busy: the server's and loadgen's CPU over the window, in % of one core (median of the rounds). A server's"
    " maximum is a maximum only where the server was at 95 % or more; `flagged` counts the rounds loadgen itself"
    " reported as the bottleneck",
    "- ratios: against the io-uring backend of the same round (median, min–max); msgs/s above 1 is faster than io-uring,"
    " CPU above 1 costs more than io-uring",
    "- reproduce: `scripts/peers.sh` (installs the peers; every run's JSON is in results/peers/)",
    "",
]
for case in CASES:
    if not any((s, case) in runs for s in servers):
        continue
    lines += [f"## {case}: {SHAPES[case]}", "",
              "| server | msgs/s (median) | vs io-uring | server / loadgen busy | flagged | CPU s / M msgs (user + system) | CPU vs io-uring | p50 / p99 / p99.9 µs at half max | errors |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    base = runs.get((BASE, case), {})
    for server in servers:
        rs = runs.get((server, case))
        if not rs:
            continue
        msgs = [r["summary"]["msgs_per_sec"] for r in rs.values()]
        cpus = [c for c in (cpu(r) for r in rs.values()) if c]
        ratio = [rs[k]["summary"]["msgs_per_sec"] / base[k]["summary"]["msgs_per_sec"] for k in rs if k in base]
        cpu_ratio = [cpu(rs[k])[2] / cpu(base[k])[2] for k in rs if k in base and cpu(rs[k]) and cpu(base[k])]
        cpu_text = "—"
        if cpus:
            u = statistics.median(c[0] for c in cpus)
            sy = statistics.median(c[1] for c in cpus)
            cpu_text = f"{u + sy:.2f} ({u:.2f} + {sy:.2f})"
        rate = rates.get((server, case))
        rate_text = "—"
        if rate:
            lat = rate["summary"]["latency_us"]
            rate_text = f"{lat['p50']} / {lat['p99']} / {lat['p999']} at {rate['load']['rate']:.0f}/s"
        errors = sum(sum(v for v in r["summary"]["errors"].values()) for r in rs.values())
        srv = [b for b in (busy(r, "server_process") for r in rs.values()) if b is not None]
        own = [b for b in (busy(r, "loadgen_process") for r in rs.values()) if b is not None]
        busy_text = (f"{statistics.median(srv):.0f} % / {statistics.median(own):.0f} %" if srv and own else "—")
        flagged = sum(1 for r in rs.values() if r["summary"].get("bottleneck"))
        lines.append(f"| {server} | {statistics.median(msgs):.0f} | {spread(ratio)} | {busy_text} | {flagged} of {len(rs)} | "
                     f"{cpu_text} | {spread(cpu_ratio)} | {rate_text} | {errors} |")
    lines += ["", f"![latency at a constant rate, {case}](peers-{case}.svg)", ""]

if idle:
    lines += ["## idle: resident memory per connection", "",
              "10 000 connections held open for 10 s (a tenth echoing), loadgen's soak; "
              "(resident memory with all open − before) / connections.", "",
              "| server | bytes per idle connection | resident before → all open |", "|---|---:|---:|"]
    for server in servers:
        r = idle.get(server)
        if not r:
            continue
        stages = r["stages"]
        rss = [s["server_rss_kib"] for s in stages if s.get("server_rss_kib")]
        per = r.get("bytes_per_idle_connection")
        per_text = f"{per:.0f}" if per else "—"
        rss_text = f"{rss[0] / 1024:.1f} → {max(rss) / 1024:.1f} MiB" if rss else "—"
        lines.append(f"| {server} | {per_text} | {rss_text} |")
    lines.append("")

# The targets, each stated as measured.
def median_ratio(server, case, value):
    rs, base = runs.get((server, case), {}), runs.get((BASE, case), {})
    pairs = [value(base[k]) / value(rs[k]) for k in rs if k in base and value(rs[k]) and value(base[k])]
    return (statistics.median(pairs), min(pairs), max(pairs)) if pairs else None


def verdict(ok):
    return "met" if ok else "**missed**"


lines += ["## Targets", ""]
cpu_total = lambda r: cpu(r)[2] if cpu(r) else None
msgs = lambda r: r["summary"]["msgs_per_sec"]
for case in CASES:
    r = median_ratio("epoll", case, cpu_total)
    if r:
        need = 0.90 if case == "fanin" else 1.0
        lines.append(f"- {case}: io-uring CPU per message / epoll's = {r[0]:.2f} ({r[1]:.2f}–{r[2]:.2f}); "
                     f"target below {need:.2f}: {verdict(r[0] < need)}")
small = [cpu(r) for r in runs.get((BASE, "small"), {}).values() if cpu(r)]
if small:
    share = statistics.median(c[0] / c[2] for c in small)
    lines.append(f"- small: engine user-space CPU is {share:.1%} of its total (the rest is the kernel's); "
                 f"target at most 10%: {verdict(share <= 0.10)}")
peers = [p for p in servers if p not in ("io-uring", "io-uring-64k", "tokio-uring", "epoll")]
for case in CASES:
    behind = []
    for peer in peers:
        t = median_ratio(peer, case, msgs)  # io-uring / peer, msgs/s: above 1 is ahead
        c = median_ratio(peer, case, cpu_total)  # io-uring / peer, CPU: below 1 is ahead
        if t and t[0] <= 1.0:
            behind.append(f"{peer} in msgs/s ({1 / t[0]:.2f}× ours)")
        if c and c[0] >= 1.0:
            behind.append(f"{peer} in CPU per message ({c[0]:.2f}× theirs)")
    lines.append(f"- {case}: ahead of every peer in msgs/s and CPU per message: "
                 + ("met" if not behind else "**missed**, behind " + ", ".join(behind)))
for case in CASES:
    p99 = {s: rates[(s, case)]["summary"]["latency_us"]["p99"] for s in peers if (s, case) in rates}
    if (BASE, case) in rates and p99:
        ours = rates[(BASE, case)]["summary"]["latency_us"]["p99"]
        best = min(p99, key=p99.get)
        lines.append(f"- {case}: p99 at half max {ours} µs against the best peer's {p99[best]} µs ({best}); "
                     f"target no worse: {verdict(ours <= p99[best])}")
for server in ("io-uring", "io-uring-64k"):
    r = idle.get(server)
    if r and r.get("bytes_per_idle_connection"):
        per = r["bytes_per_idle_connection"]
        lines.append(f"- {server}: {per:.0f} bytes per idle connection at {r['connections']} connections; "
                     f"target at most 2048: {verdict(per <= 2048)}")
profile = os.path.join(os.path.dirname(dst), "profile-io-uring.md")
if os.path.exists(profile):
    lines += ["", "Where the time goes, for the targets missed: [profile-io-uring.md](profile-io-uring.md)."]
lines.append("")

with open(dst, "w") as f:
    f.write("\n".join(lines))
print("\n".join(lines))
