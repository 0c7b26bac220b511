"""Reads an HdrHistogram interval log with HdrHistogram's own Python port
(hdrh) and prints each interval as JSON: its start (ms since the epoch),
its count and its 99th percentile."""
import json
import sys

from hdrh.histogram import HdrHistogram
from hdrh.log import HistogramLogReader

reader = HistogramLogReader(sys.argv[1], HdrHistogram(1, 60_000_000, 3))
intervals = []
while True:
    h = reader.get_next_interval_histogram()
    if h is None:
        break
    intervals.append({
        "start_ms": h.get_start_time_stamp(),
        "count": h.get_total_count(),
        "p99": h.get_value_at_percentile(99),
    })
print(json.dumps(intervals))
