"""Benchmark the sample-data generator: events/s and peak memory at a few scales.

Usage: .venv/bin/python benchmarks/bench_generate.py [--users 20000 --days 10 ...]
Writes into a temporary folder and prints one JSON line per scale.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import tempfile
import time
from pathlib import Path

from jobs.generate import generate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", default="2000x10,20000x10,100000x10",
                        help="comma-separated USERSxDAYS pairs")
    args = parser.parse_args()
    for scale in args.scales.split(","):
        users, days = (int(x) for x in scale.split("x"))
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            summary = generate(Path(tmp) / "landing", Path(tmp) / "gt", users=users, days=days, seed=1,
                               start_date=dt.date(2026, 11, 1))
            seconds = time.perf_counter() - started
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps({"users": users, "days": days, "events": summary.events, "seconds": round(seconds, 2),
                          "events_per_s": round(summary.events / seconds), "peak_rss_mib_so_far": round(peak_mib)}))


if __name__ == "__main__":
    main()
