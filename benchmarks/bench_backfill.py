"""Benchmark a long history loaded in one run: collect and clean over two years as one Spark job each.

Usage:
  .venv/bin/python benchmarks/bench_backfill.py                          # 100k and 300k events, 730 days
  .venv/bin/python benchmarks/bench_backfill.py --events 1000000 --out bench_backfill.json
  .venv/bin/python benchmarks/bench_backfill.py --events 100000 --days 730 --loop-days 5

For each size, jobs.generate writes `--days` day folders of events (seed 1, users = events / (days x 9.2),
the generator's ~9.2 events per user per active day), then one child process runs what
`portrait backfill --from FIRST --to LAST` runs for its loading steps, in one Spark session:

- collect over every day (collect_days = --days): landing -> bronze, one job;
- clean over the same days: bronze -> silver, one job;
- features for LAST in full mode (the 90-day window recomputed from silver);
- with --loop-days K: collect + clean of the last K days one day at a time (collect_days 1) into a second
  lakehouse, the cost per day of a loop of daily runs, for comparison.

The parent samples the resident memory of the child and all its children (the Python driver and its
JVM, Spark's Python workers) every 0.2 s; the peak is reported per step (the child reports when each
step ran) and for the whole run. Seconds are each step's run() alone, without Spark's start.
Prints one table and, with --out, writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from _harness import child_environment, each_size, peak_mib, run_sampled, write_figures

START = dt.date(2024, 11, 1)
EVENTS_PER_USER_DAY = 9.2  # what the generator draws on average (bench_generate.py)
DEFAULT_SIZES = "100000,300000"
DEFAULT_DAYS = 730


# --------------------------------------------------------------------------------------------------
# The child: the steps, in one Spark session.


def child(workdir: Path, days: int, loop_days: int) -> dict[str, Any]:
    from jobs import clean, collect, features
    from jobs.common.config import load_config
    from jobs.common.spark import build_spark

    cfg = load_config(environ=child_environment(workdir))
    started = time.perf_counter()
    spark = build_spark(cfg, app_suffix="bench-backfill")
    answer: dict[str, Any] = {"spark_start_seconds": round(time.perf_counter() - started, 1), "steps": {}}
    last = START + dt.timedelta(days=days - 1)

    def timed(name: str, call, table: str) -> None:
        began = time.monotonic()
        result = call()
        ended = time.monotonic()
        counts = next(t for t in result.tables if t.table == table)
        answer["steps"][name] = {"seconds": round(ended - began, 1), "rows_in": counts.rows_in,
                                 "rows_out": counts.rows_out, "began": began, "ended": ended}

    timed("collect", lambda: collect.run(spark, cfg, last, collect_days=days), "bronze.events")
    timed("clean", lambda: clean.run(spark, cfg, last, collect_days=days), "silver.events")
    timed("features", lambda: features.run(spark, cfg, last, mode="full"), "gold.user_features")
    answer["files"] = _file_counts(spark, cfg)
    if loop_days:
        loop_cfg = load_config(environ=child_environment(workdir, "lakehouse_loop"))
        began = time.monotonic()
        for offset in range(loop_days - 1, -1, -1):
            day = last - dt.timedelta(days=offset)
            collect.run(spark, loop_cfg, day, collect_days=1)
            clean.run(spark, loop_cfg, day, collect_days=1)
        ended = time.monotonic()
        answer["steps"]["daily_loop"] = {"seconds": round(ended - began, 1), "days": loop_days,
                                         "seconds_per_day": round((ended - began) / loop_days, 1),
                                         "began": began, "ended": ended}
    spark.stop()
    return answer


def _file_counts(spark, cfg) -> dict[str, int]:
    """Data files of each table the range was written to: partitioned by day, a table has one per day at best."""
    from delta.tables import DeltaTable

    from jobs.common.catalog import table_path
    from jobs.common.delta import table_exists

    names = ("bronze.events", "bronze.quarantine", "silver.events", "silver.held_events", "silver.user_flags")
    return {name: int(DeltaTable.forPath(spark, table_path(cfg, name)).detail().collect()[0]["numFiles"])
            for name in names if table_exists(spark, cfg, name)}


# --------------------------------------------------------------------------------------------------
# The parent: generate, run the child, sample its memory.


def _run_child(workdir: Path, days: int, loop_days: int) -> dict[str, Any]:
    """Run the steps in a child process; its answer plus the peak RSS of its process tree, per step."""
    command = [sys.executable, __file__, "--child", str(workdir), str(days), str(loop_days)]
    answer, samples = run_sampled(command, child_environment(workdir), "the backfill child failed")
    answer["peak_rss_mib"] = peak_mib(samples)
    for figures in answer["steps"].values():
        figures["peak_rss_mib"] = peak_mib(samples, figures["began"], figures["ended"])
        del figures["began"], figures["ended"]
    return answer


def bench_size(events: int, days: int, loop_days: int, workdir: Path) -> dict[str, Any]:
    from jobs.generate import generate

    users = max(1, math.ceil(events / (days * EVENTS_PER_USER_DAY)))
    started = time.perf_counter()
    summary = generate(workdir / "landing", workdir / "ground_truth", users=users, days=days, seed=1,
                       start_date=START)
    row: dict[str, Any] = {
        "events_target": events, "events": summary.events, "users": users, "days": days,
        "days_with_events": sum(1 for n in summary.events_per_day.values() if n),
        "generate_seconds": round(time.perf_counter() - started, 1),
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
    }
    print(f"  generated {summary.events:,} events of {users} users over {days} days; running the steps ...",
          file=sys.stderr, flush=True)
    row.update(_run_child(workdir, days, loop_days))
    row["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    for name in ("collect", "clean"):
        step = row["steps"][name]
        step["events_per_s"] = round(step["rows_in"] / step["seconds"]) if step["seconds"] else None
    return row


def _table(rows: list[dict[str, Any]]) -> str:
    lines = ["| events | days | users | step | seconds | events/s | peak RSS (MiB) | note |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        for name, figures in row["steps"].items():
            if name == "daily_loop":
                note = (f"{figures['days']} days one at a time: {figures['seconds_per_day']} s/day, "
                        f"x{row['days']} = {figures['seconds_per_day'] * row['days'] / 60:.0f} min")
                rate = "–"
            else:
                note = f"{figures['rows_in']:,} in, {figures['rows_out']:,} out"
                rate = f"{figures['events_per_s']:,}" if figures.get("events_per_s") else "–"
            lines.append(f"| {row['events']:,} | {row['days']} | {row['users']} | {name} | {figures['seconds']} | "
                         f"{rate} | {figures['peak_rss_mib']:,} | {note} |")
        lines.append(f"| {row['events']:,} | {row['days']} | {row['users']} | whole child | – | – | "
                     f"{row['peak_rss_mib']:,} | Spark start {row['spark_start_seconds']} s; load "
                     f"{row['load_average_before'][0]} → {row['load_average_after'][0]}; files "
                     + ", ".join(f"{name} {n:,}" for name, n in row["files"].items()) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        print(json.dumps(child(Path(argv[1]), int(argv[2]), int(argv[3]))), flush=True)
        return

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", default=DEFAULT_SIZES, help=f"comma-separated sizes (default {DEFAULT_SIZES})")
    parser.add_argument("--days", type=int, default=DEFAULT_DAYS, help=f"days of history (default {DEFAULT_DAYS})")
    parser.add_argument("--loop-days", type=int, default=0,
                        help="also load the last K days one day at a time, for the cost per daily run (default 0)")
    parser.add_argument("--workdir", default=None, help="where to put the data (default: a temporary folder)")
    parser.add_argument("--out", default=None, help="also write the figures as JSON here")
    args = parser.parse_args(argv)

    rows = each_size(args.events, args.workdir, "bench_backfill_",
                     lambda size, workdir: bench_size(size, args.days, args.loop_days, workdir))
    print(f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs")
    print(_table(rows))
    write_figures(args.out, rows)


if __name__ == "__main__":
    main()
