"""Prints half of the median msgs/s of the closed-loop result files given:
the constant rate at which scripts compare servers at "half of their
maximum". The median of the rounds, not the first round, so that one lucky
or unlucky round does not set the load. Exits 1 when no file can be read.
Usage: python3 scripts/lib/half-max.py ROUND1.json ROUND2.json …
"""
import json
import statistics
import sys

rates = []
for path in sys.argv[1:]:
    try:
        with open(path) as f:
            rates.append(json.load(f)["summary"]["msgs_per_sec"])
    except (OSError, ValueError, KeyError):
        pass
if not rates:
    sys.exit(1)
print(int(statistics.median(rates) / 2))
