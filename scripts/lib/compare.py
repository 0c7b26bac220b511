"""Shared by the reports of the scripts that compare engines side by side
(constant-rate, handshake-rate, idle-memory): the engines' order, the
median (min-max) of a figure over rounds, and reading one file per engine
and round."""
import glob
import json
import os
import statistics

ORDER = ["io-uring-before", "io-uring", "epoll", "monoio"]


def in_order(engines):
    return sorted(engines, key=lambda e: ORDER.index(e) if e in ORDER else len(ORDER))


def span(values, fmt="{:.2f}"):
    values = sorted(values)
    return f"{fmt.format(statistics.median(values))} ({fmt.format(values[0])}-{fmt.format(values[-1])})"


def runs_by_engine_and_round(out):
    """{(engine, "roundN"): result} from OUT/ENGINE-roundN.json."""
    runs = {}
    for path in sorted(glob.glob(os.path.join(out, "*.json"))):
        engine, round_ = os.path.basename(path)[:-5].rsplit("-", 1)
        runs[(engine, round_)] = json.load(open(path))
    return runs
