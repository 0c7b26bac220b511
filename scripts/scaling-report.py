"""Writes results/scaling.md and results/scaling.svg from the result files of
scripts/scaling.sh (`ringecho bench` runs named BACKEND-bufB-tN-CASE[-roundR]).

Per case and backend: msgs/s and the engine's CPU seconds per million messages
by engine thread count (median over the rounds, with min and max), the speed-up
against one thread, and the speed-up per thread (1.00 is linear scaling).
Usage: python3 scripts/scaling-report.py results/scaling results/scaling.md ["BACKENDS ASKED FOR"]
"""
import glob
import json
import os
import re
import statistics
import sys

src, dst = sys.argv[1], sys.argv[2]
SHAPES = {"small": "100 × 20 B", "medium": "10 × 1 KiB", "large": "10 × 16 KiB", "fanin": "500 × 16 KiB"}
NAME = re.compile(r"^(?P<backend>.+)-buf(?P<buf>\d+)-t(?P<threads>\d+)-(?P<case>[a-z]+)(-round(?P<round>\d+))?$")

runs = {}  # (case, backend, threads) -> [result]
for path in sorted(glob.glob(os.path.join(src, "*.json"))):
    m = NAME.match(os.path.basename(path)[:-5])
    if not m:
        continue
    with open(path) as f:
        result = json.load(f)
    runs.setdefault((m["case"], m["backend"], int(m["threads"])), []).append(result)
if not runs:
    sys.exit(f"scaling-report.py: no result files in {src}")


def cpu(result):
    s = result["summary"]
    p = s.get("server_process")
    if not p or not s["messages"]:
        return None
    return (p["user_secs"] + p["system_secs"]) * 1e6 / s["messages"]


def med(values):
    return statistics.median(values) if values else None


def span(values, fmt):
    if not values:
        return "—"
    m = statistics.median(values)
    if len(values) == 1:
        return format(m, fmt)
    return f"{format(m, fmt)} ({format(min(values), fmt)}–{format(max(values), fmt)})"


any_result = next(iter(runs.values()))[0]
machine = any_result["machine"]
rounds = max(len(r) for r in runs.values())
order = ["io-uring", "tokio-uring", "epoll"]
backends = sorted({b for _, b, _ in runs}, key=lambda b: order.index(b) if b in order else len(order))
cases = [c for c in SHAPES if any(k[0] == c for k in runs)]
lines = [
    "# Scaling with the engine's thread count",
    "",
    f"- date: {any_result['date']}; commit {any_result['server'].get('commit', '?')}",
    f"- machine: {machine['cpu_model']} ({machine['cores']} cores), kernel {machine['kernel']}",
    "- engine: `--threads N`, workers pinned to cores 0…N−1; loadgen: one thread on each of the other cores; loopback",
    f"- closed loop, binary messages, one in flight per connection, every echo checked; {rounds} round(s) of"
    f" {any_result['load']['duration']:g} s after {any_result['load']['warmup']:g} s warm-up; median (min–max)",
    "- CPU: the engine process's user + system seconds (from /proc/PID/stat) per million messages",
    "- speed-up: msgs/s against the same backend with one thread; per thread: speed-up ÷ threads (1.00 is linear)",
    "- reproduce: `scripts/scaling.sh` on a machine with at least 9 cores",
    "",
]
asked = sys.argv[3].split() if len(sys.argv) > 3 else backends
missing = [b for b in asked if b not in backends]
if missing:
    lines += [f"Not measured: {', '.join(missing)}: asked for, but could not start on this machine.", ""]

series = {}  # (case, backend) -> [(threads, msgs/s)]
for case in cases:
    lines += [f"## {case}: {SHAPES[case]}", ""]
    lines += ["| backend | threads | msgs/s | speed-up | per thread | CPU s / M msgs | p99 µs | errors |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for backend in backends:
        base = med([r["summary"]["msgs_per_sec"] for r in runs.get((case, backend, 1), [])])
        for threads in sorted(t for c, b, t in runs if c == case and b == backend):
            results = runs[(case, backend, threads)]
            rates = [r["summary"]["msgs_per_sec"] for r in results]
            cpus = [c for c in map(cpu, results) if c is not None]
            p99 = [r["summary"]["latency_us"]["p99"] for r in results]
            errors = sum(sum(r["summary"]["errors"].values()) + r["summary"].get("unanswered", 0) for r in results)
            up = med(rates) / base if base else None
            series.setdefault((case, backend), []).append((threads, med(rates)))
            lines.append(
                f"| {backend} | {threads} | {span(rates, '.0f')} | "
                + (f"{up:.2f}×" if up else "—") + " | "
                + (f"{up / threads:.2f}" if up else "—") + " | "
                + f"{span(cpus, '.2f')} | {span(p99, '.0f')} | {errors} |"
            )
    lines += ["", f"![msgs/s by engine threads, {case}](scaling.svg)" if case == cases[0] else "", ""]


def svg(series, cases, path):
    """msgs/s against threads, one panel per case, one line per backend."""
    w, h, pad = 360, 260, 50
    colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"]
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w * len(cases)}" height="{h + 40}" font-family="sans-serif" font-size="12">',
           '<rect width="100%" height="100%" fill="white"/>']
    for i, case in enumerate(cases):
        x0 = i * w
        lines_ = {b: pts for (c, b), pts in series.items() if c == case}
        tmax = max(t for pts in lines_.values() for t, _ in pts)
        ymax = max(v for pts in lines_.values() for _, v in pts) * 1.1

        def px(t):
            return x0 + pad + (w - pad - 20) * (t / tmax)

        def py(v):
            return 20 + (h - pad) * (1 - v / ymax)

        out.append(f'<text x="{x0 + w / 2}" y="14" text-anchor="middle" font-weight="bold">{case}: {SHAPES[case]}</text>')
        out.append(f'<line x1="{px(0)}" y1="{py(0)}" x2="{px(tmax)}" y2="{py(0)}" stroke="black"/>')
        out.append(f'<line x1="{px(0)}" y1="{py(0)}" x2="{px(0)}" y2="{py(ymax)}" stroke="black"/>')
        for k in range(5):
            v = ymax * k / 4
            out.append(f'<text x="{px(0) - 4}" y="{py(v) + 4}" text-anchor="end">{v / 1000:.0f}k</text>')
        for t in sorted({t for pts in lines_.values() for t, _ in pts}):
            out.append(f'<text x="{px(t)}" y="{py(0) + 16}" text-anchor="middle">{t}</text>')
        out.append(f'<text x="{x0 + w / 2}" y="{h + 10}" text-anchor="middle">engine threads</text>')
        for j, (backend, pts) in enumerate(sorted(lines_.items(), key=lambda kv: backends.index(kv[0]))):
            color = colors[j % len(colors)]
            path_ = " ".join(f"{px(t):.1f},{py(v):.1f}" for t, v in sorted(pts))
            out.append(f'<polyline points="{path_}" fill="none" stroke="{color}" stroke-width="2"/>')
            for t, v in pts:
                out.append(f'<circle cx="{px(t):.1f}" cy="{py(v):.1f}" r="3" fill="{color}"/>')
            out.append(f'<text x="{px(0) + 10}" y="{34 + 14 * j}" fill="{color}">{backend}</text>')
        out.append(f'<text x="{x0 + 12}" y="{20 + (h - pad) / 2}" transform="rotate(-90 {x0 + 12} {20 + (h - pad) / 2})"'
                   ' text-anchor="middle">msgs/s</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


svg(series, cases, os.path.join(os.path.dirname(dst) or ".", "scaling.svg"))
with open(dst, "w") as f:
    f.write("\n".join(lines).rstrip() + "\n")
